//! The bill vocabulary and the look-ups, against the sandbox over HTTP: what the company uses,
//! vendors matched by tax number before name, duplicates whatever their state (never the bill
//! itself), the account a vendor's bills use, a document's answer written and read back, and the
//! ground truth every generated PDF carries.

mod common;

use enrichd_connector::lookup::BillQuery;
use enrichd_connector::{Connector, PageRequest, Record, WriteResult, WriteSubmission};
use enrichd_quickbooks::BILLS;
use enrichd_quickbooks::sandbox::{ACCOUNT_NUMBERS, Layout, NEW_SUPPLIER, QuickBooksSandbox, TRUTH_KEY, Truth};
use serde_json::{Value, json};

use common::*;

fn query_of(id: &str, t: &Truth) -> BillQuery {
    BillQuery {
        record_id: id.to_owned(),
        supplier_name: Some(t.vendor.clone()),
        supplier_tax_number: t.vendor_tax_number.clone(),
        invoice_number: Some(t.doc_number.clone()),
        total: Some(t.total),
        date: Some(t.txn_date.clone()),
    }
}

fn by_name(name: &str) -> BillQuery {
    BillQuery { record_id: "none".into(), supplier_name: Some(name.into()), ..Default::default() }
}

/// The account number a line booked to `account` (by name) has.
fn number_of(account: &str) -> &'static str {
    let names = [
        "Office Expenses",
        "Shipping and Delivery",
        "Utilities",
        "Computer and Internet",
        "Meals",
        "Legal & Professional Fees",
    ];
    ACCOUNT_NUMBERS[names.iter().position(|n| *n == account).expect("a known account")]
}

/// The `EnrichdTruth` JSON in a PDF's Info dictionary.
fn embedded_truth(pdf: &[u8]) -> Value {
    let doc = lopdf::Document::load_mem(pdf).expect("a parseable PDF");
    let info = doc.trailer.get(b"Info").and_then(|o| o.as_reference()).expect("an Info dictionary");
    let raw = doc.get_dictionary(info).unwrap().get(TRUTH_KEY.as_bytes()).unwrap().as_str().unwrap().to_vec();
    serde_json::from_slice(&raw).expect("EnrichdTruth is JSON")
}

#[tokio::test]
async fn the_company_lists_its_currencies_purchase_tax_codes_and_accounts_once() {
    let (sandbox, qbo) = setup(3).await;
    let org = qbo.organisation().await.unwrap().expect("QuickBooks has a company");
    assert_eq!(org.currencies, ["USD", "EUR", "GBP", "CAD"], "home currency first, multi-currency on");
    let rates: Vec<(&str, f64)> = org.tax_rates.iter().map(|t| (t.code.as_str(), t.rate)).collect();
    assert_eq!(rates, [("2", 20.0), ("3", 10.0), ("4", 5.0), ("5", 0.0)], "NON has no purchase rate");
    assert!(org.accounts.iter().any(|a| a.code == "6100" && a.name == "Office Expenses"));
    let requests = sandbox.stats().requests;
    qbo.organisation().await.unwrap();
    assert_eq!(sandbox.stats().requests, requests, "read once per connector");
}

#[tokio::test]
async fn a_tax_number_match_beats_a_name_match() {
    let (_sandbox, qbo) = setup(3).await;
    let query = BillQuery { supplier_tax_number: Some("gb1234567 89".into()), ..by_name("Brightline Office Supply") };
    let supplier = qbo.look_up(BILLS, &query).await.unwrap().unwrap().supplier.expect("a match");
    assert_eq!((supplier.name.as_str(), supplier.matched_by.as_str()), ("Northwind Paper Co.", "tax_number"));
}

#[tokio::test]
async fn a_name_match_ignores_case_and_spaces_and_a_stranger_matches_nothing() {
    let (_sandbox, qbo) = setup(3).await;
    // Lumen's documents print a tax number the company never recorded: the name decides.
    let query = BillQuery { supplier_tax_number: Some("45-6789012".into()), ..by_name("  lumen ELECTRIC   utility ") };
    let supplier = qbo.look_up(BILLS, &query).await.unwrap().unwrap().supplier.unwrap();
    assert_eq!((supplier.id.as_str(), supplier.matched_by.as_str()), ("60", "name"));
    let stranger = BillQuery {
        supplier_tax_number: Some("NO 999 888 777 MVA".into()),
        invoice_number: Some("FJ-1".into()),
        total: Some(10.0),
        date: Some("2025-11-03".into()),
        ..by_name(NEW_SUPPLIER)
    };
    assert_eq!(qbo.look_up(BILLS, &stranger).await.unwrap().unwrap(), Default::default());
}

#[tokio::test]
async fn duplicates_by_number_or_total_and_date_whatever_their_state_but_never_the_bill_itself() {
    let (sandbox, qbo) = setup(40).await;
    // A repeated document whose first copy is a complete (and paid) bill.
    let (id, t, original) = sandbox
        .bill_ids()
        .into_iter()
        .filter_map(|id| {
            let t = sandbox.printed(&id)?;
            let original = t.duplicate_of.clone()?;
            sandbox.bill(&original)?.get("DocNumber")?;
            Some((id, t, original))
        })
        .next()
        .expect("a repeated invoice of a complete bill");
    assert_eq!(sandbox.bill(&original).unwrap()["Balance"], json!(0), "the first copy is paid");

    let found = qbo.look_up(BILLS, &query_of(&id, &t)).await.unwrap().unwrap();
    assert_eq!(found.duplicates.len(), 1, "{found:?}");
    let d = &found.duplicates[0];
    assert_eq!((d.id.as_str(), d.status.as_str()), (original.as_str(), "PAID"));
    assert!(d.reason.contains("invoice number") && d.reason.contains(&t.doc_number), "{}", d.reason);

    let mut renumbered = query_of(&id, &t);
    renumbered.invoice_number = Some("RENUMBERED-1".into());
    let found = qbo.look_up(BILLS, &renumbered).await.unwrap().unwrap();
    assert_eq!(found.duplicates.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [original.as_str()]);
    assert!(found.duplicates[0].reason.contains("total"), "{}", found.duplicates[0].reason);
    renumbered.total = Some(t.total + 1.0);
    assert!(qbo.look_up(BILLS, &renumbered).await.unwrap().unwrap().duplicates.is_empty());

    let itself = qbo.look_up(BILLS, &query_of(&original, &t)).await.unwrap().unwrap();
    assert!(itself.duplicates.iter().all(|d| d.id != original), "{:?}", itself.duplicates);
}

#[tokio::test]
async fn the_account_suggested_is_the_one_the_vendors_bills_use_most() {
    let (sandbox, qbo) = setup(60).await;
    let complete: Vec<Value> =
        sandbox.bill_ids().iter().filter_map(|id| sandbox.bill(id)).filter(|b| b.get("DocNumber").is_some()).collect();
    let bill = &complete[0];
    let vendor = bill["VendorRef"]["name"].as_str().unwrap();
    let account = bill["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"]["name"].as_str().unwrap();
    let found = qbo.look_up(BILLS, &by_name(vendor)).await.unwrap().unwrap();
    assert_eq!(found.account_code.as_deref(), Some(number_of(account)), "{vendor}");
    // The vendor's bills are read once: the second look-up asks nothing (no number, no total).
    let before = sandbox.stats().requests;
    qbo.look_up(BILLS, &by_name(vendor)).await.unwrap();
    assert_eq!(sandbox.stats().requests, before);
    // A vendor whose bills are all uncategorised inbox drafts has no suggestion.
    let vendors_with_complete: Vec<&str> = complete.iter().filter_map(|b| b["VendorRef"]["name"].as_str()).collect();
    let bare = sandbox
        .vendors()
        .into_iter()
        .filter_map(|v| v["DisplayName"].as_str().map(str::to_owned))
        .find(|n| !vendors_with_complete.contains(&n.as_str()));
    if let Some(bare) = bare {
        assert_eq!(qbo.look_up(BILLS, &by_name(&bare)).await.unwrap().unwrap().account_code, None, "{bare}");
    }
}

#[tokio::test]
async fn a_documents_answer_is_written_and_read_back_in_the_bill_vocabulary() {
    let (sandbox, qbo) = setup(30).await;
    let page = qbo.list(BILLS, &PageRequest { per_page: 100, ..Default::default() }).await.unwrap();
    let chosen: Vec<&Record> = page
        .records
        .iter()
        .filter(|r| r.field("invoice_number").is_none())
        .filter(|r| sandbox.printed(&r.id).is_some_and(|t| t.vendor != NEW_SUPPLIER && t.duplicate_of.is_none()))
        .take(6)
        .collect();
    assert!(chosen.iter().any(|r| sandbox.printed(&r.id).unwrap().amounts_are == "inclusive"));
    let mut changes = Vec::new();
    for record in &chosen {
        let t = sandbox.printed(&record.id).unwrap();
        let answer = sandbox.truth(&record.id).unwrap();
        let found = qbo.look_up(BILLS, &query_of(&record.id, &t)).await.unwrap().unwrap();
        let mut lines = answer["line_items"].clone();
        for (line, printed) in lines.as_array_mut().unwrap().iter_mut().zip(&t.lines) {
            line["account_code"] = json!(number_of(&printed.account));
        }
        changes.push(change(
            &record.id,
            &record.version.0,
            json!({
                "supplier.id": found.supplier.expect("a known vendor").id,
                "supplier.tax_number": answer["supplier_tax_number"],
                "invoice_number": answer["invoice_number"],
                "date": answer["issue_date"],
                "due_date": answer["due_date"],
                "currency": answer["currency"],
                "amounts_are": answer["amounts_are"],
                "line_items": lines,
                "sub_total": answer["subtotal"],
                "total_tax": answer["total_tax"],
                "total": answer["total"],
                "payment_note": answer["payment_details"],
            }),
        ));
    }
    let WriteSubmission::Done(outcomes) = qbo.write(BILLS, &changes).await.unwrap() else { panic!("pending") };
    assert!(outcomes.iter().all(|o| matches!(o.result, WriteResult::Written { .. })), "{outcomes:?}");
    let ids: Vec<String> = chosen.iter().map(|r| r.id.clone()).collect();
    let read = qbo.fetch(BILLS, &ids).await.unwrap();
    for change in &changes {
        let record = read.iter().find(|r| r.id == change.id).unwrap();
        for (field, value) in &change.fields {
            assert!(
                qbo.holds(field, value, record.field(field)),
                "bill {}: {field}: wrote {value}, read {:?}",
                change.id,
                record.field(field)
            );
        }
        let t = sandbox.printed(&change.id).unwrap();
        assert_eq!(record.field("payment_note"), Some(&json!(t.payment_details)));
        assert_eq!(record.field("amounts_are"), Some(&json!(t.amounts_are)));
        assert_eq!(sandbox.bill(&change.id).unwrap()["PrivateNote"], json!(t.payment_details));
    }
}

#[tokio::test]
async fn every_document_carries_its_answer_in_every_layout_and_scan() {
    let (sandbox, qbo) = setup(40).await;
    let page = qbo.list(BILLS, &PageRequest { per_page: 100, ..Default::default() }).await.unwrap();
    let mut layouts = Vec::new();
    let (mut credit_notes, mut inclusive, mut multi_page) = (0, 0, 0);
    for record in &page.records {
        let t = sandbox.printed(&record.id).unwrap();
        let bytes = qbo.fetch_attachment(&record.attachments[0]).await.unwrap();
        assert_eq!(embedded_truth(&bytes), sandbox.truth(&record.id).unwrap(), "bill {}", record.id);
        layouts.push(t.layout);
        credit_notes += usize::from(t.credit_note);
        inclusive += usize::from(t.amounts_are == "inclusive");
        multi_page += usize::from(t.pages > 1);
    }
    for layout in [Layout::Classic, Layout::Modern, Layout::Compact, Layout::Scan] {
        assert!(layouts.contains(&layout), "{layout:?}");
    }
    assert!(credit_notes > 0 && inclusive > 0 && multi_page > 0, "{credit_notes} {inclusive} {multi_page}");
    let answer = sandbox.truth(&page.records[0].id).unwrap();
    let credit = page.records.iter().find(|r| sandbox.printed(&r.id).unwrap().credit_note).unwrap();
    assert_eq!(sandbox.truth(&credit.id).unwrap()["document_type"], "credit_note");
    assert_eq!(answer["document_type"], "invoice");
    assert!(answer["line_items"].as_array().unwrap().iter().all(|l| l["account_code"].is_null()));
    assert!(answer.get("confidence").is_none());
}

#[test]
fn a_supplier_not_yet_a_vendor_sends_bills_to_the_placeholder() {
    let sandbox = QuickBooksSandbox::new(60, 7);
    let strangers: Vec<String> =
        sandbox.bill_ids().into_iter().filter(|id| sandbox.printed(id).unwrap().vendor == NEW_SUPPLIER).collect();
    assert!(!strangers.is_empty());
    for id in strangers {
        assert_eq!(sandbox.bill(&id).unwrap()["VendorRef"]["value"], "99", "bill {id}");
        assert!(sandbox.truth(&id).unwrap()["supplier_tax_number"].is_string());
    }
}

#[tokio::test]
async fn a_new_supplier_by_name_alone_becomes_a_vendor_once() {
    let (sandbox, qbo) = setup(30).await;
    let stranger =
        sandbox.bill_ids().into_iter().find(|id| sandbox.printed(id).unwrap().vendor == NEW_SUPPLIER).unwrap();
    let bill = qbo.fetch(BILLS, std::slice::from_ref(&stranger)).await.unwrap().remove(0);
    // A reviewer chose "create a new supplier": the name alone (and the tax number read).
    let fields = json!({"supplier.name": NEW_SUPPLIER, "supplier.tax_number": "NO 999 888 777 MVA"});
    let result = qbo.write(BILLS, &[change(&stranger, &bill.version.0, fields.clone())]).await.unwrap();
    let WriteSubmission::Done(outcomes) = result else { panic!("pending") };
    assert!(matches!(outcomes[0].result, WriteResult::Written { .. }), "{outcomes:?}");
    let created: Vec<Value> = sandbox.vendors().into_iter().filter(|v| v["DisplayName"] == NEW_SUPPLIER).collect();
    assert_eq!(created.len(), 1);
    assert_eq!(sandbox.bill(&stranger).unwrap()["VendorRef"]["value"], created[0]["Id"]);
    // Found from now on, by its tax number; writing the name again makes no second vendor.
    let query = BillQuery {
        record_id: "none".into(),
        supplier_tax_number: Some("no999888777mva".into()),
        ..Default::default()
    };
    let found = qbo.look_up(BILLS, &query).await.unwrap().unwrap().supplier.unwrap();
    assert_eq!((found.id.as_str(), found.matched_by.as_str()), (created[0]["Id"].as_str().unwrap(), "tax_number"));
    let again = qbo.fetch(BILLS, std::slice::from_ref(&stranger)).await.unwrap().remove(0);
    qbo.write(BILLS, &[change(&stranger, &again.version.0, fields)]).await.unwrap();
    assert_eq!(sandbox.vendors().into_iter().filter(|v| v["DisplayName"] == NEW_SUPPLIER).count(), 1);
    let reread = qbo.fetch(BILLS, std::slice::from_ref(&stranger)).await.unwrap().remove(0);
    assert!(qbo.holds("supplier.name", &json!(NEW_SUPPLIER), reread.field("supplier.name")));
}
