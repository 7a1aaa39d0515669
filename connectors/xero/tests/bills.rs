//! The bill vocabulary and the look-ups, against the sandbox over HTTP: what the organisation
//! uses, suppliers matched by tax number before name, duplicates in any status (never the bill
//! itself), the account a supplier's bills use, a document's answer written and read back, and
//! the ground truth every generated PDF carries.

mod common;

use enrichd_connector::lookup::BillQuery;
use enrichd_connector::{Change, Connector, PageRequest, Record, WriteMode, WriteResult, WriteSubmission};
use enrichd_xero::BILLS;
use enrichd_xero::sandbox::{GroundTruth, LAYOUTS, TRUTH_KEY};
use serde_json::{Map, Value, json};

async fn candidates(s: &common::Setup) -> Vec<Record> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let request = PageRequest { cursor: cursor.clone(), per_page: 100, modified_after: None };
        let page = s.xero.list(BILLS, &request).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return records,
        }
    }
}

fn query_of(id: &str, t: &GroundTruth) -> BillQuery {
    BillQuery {
        record_id: id.to_owned(),
        supplier_name: Some(t.supplier_name.clone()),
        supplier_tax_number: t.supplier_tax_number.clone(),
        invoice_number: Some(t.invoice_number.clone()),
        total: Some(t.total),
        date: Some(t.issue_date.clone()),
    }
}

/// The `EnrichdTruth` JSON in a PDF's Info dictionary.
fn embedded_truth(pdf: &[u8]) -> Value {
    let doc = lopdf::Document::load_mem(pdf).expect("a parseable PDF");
    let info = doc.trailer.get(b"Info").and_then(|o| o.as_reference()).expect("an Info dictionary");
    let raw = doc.get_dictionary(info).unwrap().get(TRUTH_KEY.as_bytes()).unwrap().as_str().unwrap().to_vec();
    serde_json::from_slice(&raw).expect("EnrichdTruth is JSON")
}

#[tokio::test]
async fn the_organisation_lists_currencies_tax_rates_for_bills_and_accounts_once() {
    let s = common::setup(5, true).await;
    let org = s.xero.organisation().await.unwrap().expect("Xero has an organisation");
    assert_eq!(org.currencies, ["GBP", "EUR", "USD"], "the base currency first");
    let input2 = org.tax_rates.iter().find(|t| t.code == "INPUT2").expect("INPUT2");
    assert_eq!((input2.rate, input2.name.as_str()), (20.0, "20% (VAT on Expenses)"));
    assert!(!org.tax_rates.iter().any(|t| t.code == "OUTPUT2"), "a sales rate cannot go on a bill");
    assert!(org.accounts.iter().any(|a| a.code == "453" && a.name == "Office Expenses"));
    let requests = s.sandbox.counters().api_requests;
    s.xero.organisation().await.unwrap();
    assert_eq!(s.sandbox.counters().api_requests, requests, "read once per connector");
}

#[tokio::test]
async fn a_tax_number_match_beats_a_name_match() {
    let s = common::setup(20, true).await;
    // The document names Brightline but prints Northwind's VAT number (spaced): the number wins.
    let found = s
        .xero
        .look_up(
            BILLS,
            &BillQuery {
                record_id: "none".into(),
                supplier_name: Some("Brightline Telecom plc".into()),
                supplier_tax_number: Some("gb 123 456 789".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    let supplier = found.supplier.expect("a match");
    assert_eq!((supplier.name.as_str(), supplier.matched_by.as_str()), ("Northwind Paper Limited", "tax_number"));
}

#[tokio::test]
async fn a_name_match_ignores_case_and_spaces_and_a_stranger_matches_nothing() {
    let s = common::setup(20, true).await;
    let hudson = s.sandbox.contacts().into_iter().find(|c| c.name == "Hudson Cloud Inc").unwrap();
    let query = BillQuery {
        record_id: "none".into(),
        supplier_name: Some("  hudson   CLOUD inc ".into()),
        // The contact records no tax number: the name decides.
        supplier_tax_number: Some("US-EIN-12-3456789".into()),
        ..Default::default()
    };
    let found = s.xero.look_up(BILLS, &query).await.unwrap().unwrap().supplier.unwrap();
    assert_eq!((found.id.as_str(), found.matched_by.as_str()), (hudson.id.as_str(), "name"));

    let stranger = BillQuery {
        record_id: "none".into(),
        supplier_name: Some("Fjord Design AS".into()),
        supplier_tax_number: Some("NO999888777MVA".into()),
        invoice_number: Some("FJ-1".into()),
        total: Some(100.0),
        date: Some("2026-01-01".into()),
    };
    let none = s.xero.look_up(BILLS, &stranger).await.unwrap().unwrap();
    assert_eq!(none, Default::default(), "no supplier, so no duplicates and no account either");
}

#[tokio::test]
async fn duplicates_in_any_status_by_number_or_total_and_date_but_never_the_bill_itself() {
    let s = common::setup(40, true).await;
    let duplicate = s.sandbox.bills().into_iter().find(|b| b.duplicate_of.is_some()).unwrap();
    let original = s.sandbox.bill(duplicate.duplicate_of.as_ref().unwrap()).unwrap();
    assert_eq!(original.status, "AUTHORISED");
    let t = duplicate.truth.clone().unwrap();

    let found = s.xero.look_up(BILLS, &query_of(&duplicate.id, &t)).await.unwrap().unwrap();
    assert_eq!(found.duplicates.len(), 1, "{found:?}");
    let d = &found.duplicates[0];
    assert_eq!((d.id.as_str(), d.status.as_str()), (original.id.as_str(), "AUTHORISED"));
    assert_eq!(d.invoice_number.as_deref(), Some(t.invoice_number.as_str()));
    assert!(d.reason.contains("invoice number") && d.reason.contains(&t.invoice_number), "{}", d.reason);

    // Another number, but the same supplier, total and date.
    let mut renumbered = query_of(&duplicate.id, &t);
    renumbered.invoice_number = Some("RENUMBERED-1".into());
    let found = s.xero.look_up(BILLS, &renumbered).await.unwrap().unwrap();
    assert_eq!(found.duplicates.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [original.id.as_str()]);
    assert!(found.duplicates[0].reason.contains("total"), "{}", found.duplicates[0].reason);

    // Another total and date as well: nothing.
    renumbered.total = Some(t.total + 1.0);
    assert!(s.xero.look_up(BILLS, &renumbered).await.unwrap().unwrap().duplicates.is_empty());

    // The approved bill looked up as itself is not its own duplicate.
    let itself = s.xero.look_up(BILLS, &query_of(&original.id, &t)).await.unwrap().unwrap();
    assert!(itself.duplicates.is_empty(), "{:?}", itself.duplicates);
}

#[tokio::test]
async fn the_account_suggested_is_the_one_the_suppliers_bills_use_most() {
    let s = common::setup(60, true).await;
    let query =
        |name: &str| BillQuery { record_id: "none".into(), supplier_name: Some(name.into()), ..Default::default() };
    let northwind = s.xero.look_up(BILLS, &query("Northwind Paper Limited")).await.unwrap().unwrap();
    assert_eq!(northwind.account_code.as_deref(), Some("453"));
    let brightline = s.xero.look_up(BILLS, &query("Brightline Telecom plc")).await.unwrap().unwrap();
    assert_eq!(brightline.account_code.as_deref(), Some("489"));
    // The supplier's bills are read once: a second look-up costs only the duplicate query (none
    // here: no number, no total).
    let before = s.sandbox.counters().api_requests;
    s.xero.look_up(BILLS, &query("Brightline Telecom plc")).await.unwrap();
    assert_eq!(s.sandbox.counters().api_requests, before);
}

/// The invoice task's answer mapped onto the bill vocabulary, as the engine does.
fn answer_change(record: &Record, answer: &Value, supplier_id: &str, accounts: &[&str]) -> Change {
    let mut fields = Map::new();
    // A matched supplier goes by id (its name is the contact's, not the document's spelling).
    fields.insert("supplier.id".into(), json!(supplier_id));
    fields.insert("supplier.tax_number".into(), answer["supplier_tax_number"].clone());
    for (from, to) in [
        ("invoice_number", "invoice_number"),
        ("issue_date", "date"),
        ("due_date", "due_date"),
        ("currency", "currency"),
        ("amounts_are", "amounts_are"),
        ("subtotal", "sub_total"),
        ("total_tax", "total_tax"),
        ("total", "total"),
        ("payment_details", "payment_note"),
    ] {
        fields.insert(to.into(), answer[from].clone());
    }
    let mut lines = answer["line_items"].clone();
    for (line, account) in lines.as_array_mut().unwrap().iter_mut().zip(accounts) {
        line["account_code"] = json!(account);
    }
    fields.insert("line_items".into(), lines);
    Change {
        id: record.id.clone(),
        base_version: record.version.clone(),
        fields,
        native: record.native.clone(),
        mode: WriteMode::Merge,
    }
}

#[tokio::test]
async fn a_documents_answer_is_written_and_read_back_in_the_bill_vocabulary() {
    let s = common::setup(20, true).await;
    let records = candidates(&s).await;
    // Northwind (its contact is spelt differently: matched by tax number), an inclusive-tax
    // Brightline bill, and a EUR bill.
    let chosen: Vec<&Record> =
        records.iter().take(4).filter(|r| s.sandbox.printed(&r.id).unwrap().currency != "USD").collect();
    assert!(chosen.len() >= 3);
    let mut changes = Vec::new();
    for record in &chosen {
        let printed = s.sandbox.printed(&record.id).unwrap();
        let answer = s.sandbox.truth(&record.id).unwrap();
        let found = s.xero.look_up(BILLS, &query_of(&record.id, &printed)).await.unwrap().unwrap();
        let supplier = found.supplier.expect("a known supplier");
        let accounts: Vec<&str> = printed.line_items.iter().map(|l| l.account_code.as_str()).collect();
        changes.push(answer_change(record, &answer, &supplier.id, &accounts));
    }
    let WriteSubmission::Done(outcomes) = s.xero.write(BILLS, &changes).await.unwrap() else { panic!("pending") };
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })), "{outcomes:?}");
    let sent = &s.sandbox.writes()[0].body["Invoices"];
    assert!(sent.as_array().unwrap().iter().all(|i| i.get("SubTotal").is_none() && i.get("Total").is_none()));

    let ids: Vec<String> = chosen.iter().map(|r| r.id.clone()).collect();
    let read = s.xero.fetch(BILLS, &ids).await.unwrap();
    for change in &changes {
        let record = read.iter().find(|r| r.id == change.id).unwrap();
        for (field, value) in &change.fields {
            assert!(
                s.xero.holds(field, value, record.field(field)),
                "bill {}: {field}: wrote {value}, read {:?}",
                change.id,
                record.field(field)
            );
        }
        let printed = s.sandbox.printed(&change.id).unwrap();
        assert_eq!(record.field("status"), Some(&json!("DRAFT")));
        assert_eq!(record.field("amounts_are"), Some(&json!(printed.amounts_are)));
        assert_eq!(record.field("supplier.tax_number").and_then(Value::as_str), printed.supplier_tax_number.as_deref());
        assert_eq!(record.field("line_items").unwrap()[0]["tax_rate"], json!(printed.line_items[0].tax_rate));
        assert_eq!(record.field("total"), Some(&json!(printed.total)));
        // The payment details went into the bill's history, once.
        assert_eq!(s.sandbox.bill(&change.id).unwrap().history, std::slice::from_ref(&printed.payment_details));
    }
    assert_eq!(s.sandbox.bill(&chosen[0].id).unwrap().contact_id.as_deref(), changes[0].fields["supplier.id"].as_str());
}

#[tokio::test]
async fn every_document_carries_its_answer_in_every_layout_and_scan() {
    let s = common::setup(80, true).await;
    let records = candidates(&s).await;
    let (mut layouts, mut scans, mut credit_notes, mut two_pages) = (std::collections::BTreeSet::new(), 0, 0, 0);
    for record in &records {
        let printed = s.sandbox.printed(&record.id).unwrap();
        let bytes = s.xero.fetch_attachment(&record.attachments[0]).await.unwrap();
        assert_eq!(embedded_truth(&bytes), s.sandbox.truth(&record.id).unwrap(), "bill {}", record.id);
        layouts.insert(printed.layout);
        scans += usize::from(printed.scanned);
        credit_notes += usize::from(printed.document_type == "credit_note");
        two_pages += usize::from(printed.pages == 2 && !printed.scanned);
    }
    assert_eq!(layouts.len(), LAYOUTS.len());
    assert!(
        scans > 0 && credit_notes > 0 && two_pages > 0,
        "scans {scans}, credit notes {credit_notes}, two pages {two_pages}"
    );
    // The answer's shape: what the invoice task asks for, account codes left to the look-up.
    let answer = s.sandbox.truth(&records[0].id).unwrap();
    let keys: Vec<&str> = answer.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "supplier_name",
        "supplier_tax_number",
        "supplier_address",
        "invoice_number",
        "issue_date",
        "due_date",
        "currency",
        "amounts_are",
        "line_items",
        "subtotal",
        "total_tax",
        "total",
        "payment_details",
        "document_type",
    ] {
        assert!(keys.contains(&key), "{key} missing from {answer}");
    }
    assert!(answer.get("confidence").is_none());
    assert!(answer["line_items"].as_array().unwrap().iter().all(|l| l["account_code"].is_null()));
}
