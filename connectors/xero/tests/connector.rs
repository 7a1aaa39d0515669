//! The Xero connector against the sandbox over HTTP: what it lists, pages and downloads, how it
//! writes (per-bill validation errors, Idempotency-Key, bills left in DRAFT), how it reads limits
//! and refuses to retry a spent day, and how it keeps a rotating OAuth2 connection alive.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use enrichd_connector::{Change, Connector, PageRequest, Record, Version, WriteMode, WriteResult, WriteSubmission};
use enrichd_xero::sandbox::{CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET, GRACE_SECS, GroundTruth, Limits, XeroSandbox};
use enrichd_xero::{BILLS, DAY_LIMIT, Xero, XeroConfig};
use serde_json::{Map, Value, json};

use common::{now, setup};

async fn list_all(xero: &Xero, modified_after: Option<String>) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let request = PageRequest { cursor: cursor.clone(), per_page: 100, modified_after: modified_after.clone() };
        let page = xero.list(BILLS, &request).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (records, pages),
        }
    }
}

fn truth_change(record: &Record, t: &GroundTruth) -> Change {
    let mut fields = Map::new();
    fields.insert("supplier.name".into(), json!(t.supplier_name));
    fields.insert("invoice_number".into(), json!(t.invoice_number));
    fields.insert("date".into(), json!(t.issue_date));
    fields.insert("due_date".into(), json!(t.due_date));
    fields.insert("currency".into(), json!(t.currency));
    fields.insert("amounts_are".into(), json!(t.amounts_are));
    let lines: Vec<Value> = t
        .line_items
        .iter()
        .map(|l| {
            json!({"description": l.description, "quantity": l.quantity, "unit_price": l.unit_price,
                "tax_rate": l.tax_rate, "tax_amount": l.tax_amount, "line_amount": l.line_amount,
                "account_code": l.account_code})
        })
        .collect();
    fields.insert("line_items".into(), Value::Array(lines));
    fields.insert("total".into(), json!(t.total));
    Change {
        id: record.id.clone(),
        base_version: record.version.clone(),
        fields,
        native: record.native.clone(),
        mode: WriteMode::Merge,
    }
}

#[tokio::test]
async fn lists_exactly_the_draft_bills_with_documents_page_by_page() {
    let s = setup(250, true).await;
    let (records, pages) = list_all(&s.xero, None).await;
    assert_eq!(pages, 2, "200 DRAFT bills (of 250 invoices) at 100 per page");
    let listed: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let expected: BTreeSet<String> = s.sandbox.candidates().into_iter().collect();
    assert_eq!(listed.len(), records.len(), "no bill listed twice");
    assert_eq!(listed, expected);
    assert_eq!(expected.len(), 175, "7 of every 10 invoices are inbox drafts with a PDF");
    for r in &records {
        assert_eq!(r.attachments.len(), 1, "bill {}", r.id);
        assert_eq!(r.attachments[0].content_type, "application/pdf");
        assert!(r.version.0.starts_with("/Date("), "UpdatedDateUTC is the version: {}", r.version);
        assert_eq!(r.field("status"), Some(&json!("DRAFT")));
        assert_eq!(r.field("invoice_number"), None, "an inbox draft has nothing filled in");
        assert_eq!(r.field("total"), None, "a draft without lines has no total yet");
    }
}

#[tokio::test]
async fn if_modified_since_lists_only_bills_changed_since() {
    let s = setup(40, true).await;
    let since = chrono::DateTime::from_timestamp(now() - 1, 0).unwrap().to_rfc3339();
    let (before, _) = list_all(&s.xero, Some(since.clone())).await;
    assert!(before.is_empty(), "nothing changed in the last second: {} listed", before.len());
    let target = s.sandbox.candidates()[3].clone();
    assert!(s.sandbox.edit_as_bookkeeper(&target, |b| b.reference = "checked by Ann".into()));
    let (after, _) = list_all(&s.xero, Some(since)).await;
    assert_eq!(after.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![target]);
}

#[tokio::test]
async fn attachment_download_is_the_invoice_pdf() {
    let s = setup(12, true).await;
    let (records, _) = list_all(&s.xero, None).await;
    for record in records.iter().take(3) {
        let bytes = s.xero.fetch_attachment(&record.attachments[0]).await.unwrap();
        assert!(bytes.starts_with(b"%PDF-"), "bill {}: not a PDF", record.id);
        assert_eq!(Some(bytes.len() as u64), record.attachments[0].size);
        let doc = lopdf::Document::load_mem(&bytes).expect("a parseable PDF");
        let text = doc.extract_text(&[1]).unwrap();
        let truth = s.sandbox.printed(&record.id).unwrap();
        if truth.scanned {
            assert!(text.trim().is_empty(), "bill {}: a scan has no text layer", record.id);
            continue;
        }
        assert!(text.contains(&truth.invoice_number), "bill {}: {text}", record.id);
        assert!(text.contains(&format!("{:.2}", truth.total)), "bill {}: total missing from {text}", record.id);
    }
}

#[tokio::test]
async fn writes_several_bills_in_one_call_with_per_bill_validation_errors() {
    let s = setup(12, true).await;
    let (records, _) = list_all(&s.xero, None).await;
    let good = truth_change(&records[0], &s.sandbox.printed(&records[0].id).unwrap());
    let mut bad_currency = truth_change(&records[1], &s.sandbox.printed(&records[1].id).unwrap());
    bad_currency.fields["currency"] = json!("NOK");
    let mut bad_tax = truth_change(&records[2], &s.sandbox.printed(&records[2].id).unwrap());
    bad_tax.fields["line_items"][0]["tax_rate"] = json!(7.5);
    let mut bad_account = truth_change(&records[3], &s.sandbox.printed(&records[3].id).unwrap());
    bad_account.fields["line_items"][0]["account_code"] = json!("999");
    let changes = vec![good.clone(), bad_currency.clone(), bad_tax, bad_account];
    let WriteSubmission::Done(outcomes) = s.xero.write(BILLS, &changes).await.unwrap() else { panic!("pending") };
    assert_eq!(s.sandbox.counters().writes, 1, "two bills sent, in one POST");
    let id_of = |n: usize| outcomes.iter().find(|o| o.id == records[n].id).unwrap().result.clone();
    let WriteResult::Written { version: Some(version) } = id_of(0) else { panic!("{:?}", outcomes) };
    let WriteResult::Failed(e) = id_of(1) else { panic!("{:?}", outcomes) };
    assert!(!e.retryable);
    assert!(e.message.contains(&records[1].id) && e.message.contains("currency code 'NOK'"), "{e}");
    // An unknown tax rate or account fails that bill before sending, naming the field.
    let WriteResult::Failed(e) = id_of(2) else { panic!("{:?}", outcomes) };
    assert!(e.message.contains(&records[2].id) && e.message.contains("line_items[0].tax_rate"), "{e}");
    let WriteResult::Failed(e) = id_of(3) else { panic!("{:?}", outcomes) };
    assert!(e.message.contains("line_items[0].account_code") && e.message.contains("999"), "{e}");
    assert_eq!(s.sandbox.writes()[0].body["Invoices"].as_array().unwrap().len(), 2);

    let written = s.sandbox.writes();
    let key = written[0].idempotency_key.clone().expect("Idempotency-Key sent");
    assert!(key.starts_with("enrichd-") && key.len() <= 128);
    assert!(!written[0].summarize_errors, "summarizeErrors=false");
    assert!(written[0].body["Invoices"].as_array().unwrap().iter().all(|i| i.get("Status").is_none()));

    let truth = s.sandbox.printed(&records[0].id).unwrap();
    let bill = s.sandbox.bill(&records[0].id).unwrap();
    assert_eq!(bill.status, "DRAFT", "the bill stays a draft");
    assert_eq!((bill.sub_total, bill.total_tax, bill.total), (truth.subtotal, truth.total_tax, truth.total));
    assert_eq!(bill.invoice_number, truth.invoice_number);
    assert!(s.sandbox.bill(&records[1].id).unwrap().lines.is_empty(), "a failed bill is untouched");

    let fetched = s.xero.fetch(BILLS, &[records[0].id.clone(), records[1].id.clone()]).await.unwrap();
    assert_eq!(fetched.len(), 2);
    let again = fetched.iter().find(|r| r.id == records[0].id).unwrap();
    assert_eq!(again.version, version, "fetch re-reads UpdatedDateUTC");
    for (field, value) in &good.fields {
        assert!(s.xero.holds(field, value, again.field(field)), "{field}: {value} vs {:?}", again.field(field));
    }

    // The same write sent again (a lost answer) carries the same key and is not applied twice.
    s.xero.write(BILLS, &[good]).await.unwrap();
    s.xero.write(BILLS, &[truth_change(&records[0], &truth)]).await.unwrap();
    let written = s.sandbox.writes();
    assert_eq!(written[1].idempotency_key, written[2].idempotency_key);
    assert!(written[2].replayed);
    // The same values at a later version (after a bookkeeper's edit or an undo) are a new write.
    let later = s.xero.fetch(BILLS, std::slice::from_ref(&records[0].id)).await.unwrap().remove(0);
    s.xero.write(BILLS, &[truth_change(&later, &truth)]).await.unwrap();
    let written = s.sandbox.writes();
    assert_ne!(written[3].idempotency_key, written[2].idempotency_key);
    assert!(!written[3].replayed);
}

#[tokio::test]
async fn never_moves_a_bill_out_of_draft() {
    let s = setup(12, true).await;
    let (records, _) = list_all(&s.xero, None).await;
    let mut fields = Map::new();
    fields.insert("status".into(), json!("AUTHORISED"));
    let change = Change {
        id: records[0].id.clone(),
        base_version: records[0].version.clone(),
        fields,
        native: records[0].native.clone(),
        mode: WriteMode::Merge,
    };
    let WriteSubmission::Done(outcomes) = s.xero.write(BILLS, &[change]).await.unwrap() else { panic!() };
    let WriteResult::Failed(e) = &outcomes[0].result else { panic!("{:?}", outcomes[0]) };
    assert!(e.message.contains("DRAFT") && e.message.contains(&records[0].id), "{e}");
    // A bill a person approved in Xero since the pull is not written either.
    let approved = s.sandbox.bills().into_iter().find(|b| b.status == "AUTHORISED").unwrap();
    let current = s.xero.fetch(BILLS, std::slice::from_ref(&approved.id)).await.unwrap().remove(0);
    let change = Change {
        id: current.id.clone(),
        base_version: Version("old".into()),
        fields: Map::from_iter([("reference".to_owned(), json!("x"))]),
        native: current.native.clone(),
        mode: WriteMode::Merge,
    };
    let WriteSubmission::Done(outcomes) = s.xero.write(BILLS, &[change]).await.unwrap() else { panic!() };
    assert!(matches!(&outcomes[0].result, WriteResult::Failed(e) if e.message.contains("AUTHORISED")));
    assert_eq!(s.sandbox.counters().writes, 0, "nothing was sent");
}

#[tokio::test]
async fn a_spent_day_is_a_day_limit_error_not_a_retry() {
    let s = setup(5, true).await;
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 2, ..Limits::default() });
    s.xero.check(BILLS).await.unwrap();
    assert_eq!(s.xero.limits().day_remaining, Some(1));
    assert_eq!(s.xero.limits().minute_remaining, Some(999));
    s.xero.check(BILLS).await.unwrap();
    let e = s.xero.check(BILLS).await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some(DAY_LIMIT), "{e}");
    assert!(!e.retryable);
    let wait = e.retry_after.expect("seconds until the day resets");
    assert!(wait.as_secs() >= 1 && wait.as_secs() <= 86_400, "{wait:?}");
    assert_eq!(s.sandbox.counters().rate_limited, 1, "no retry storm");
}

#[tokio::test]
async fn never_more_than_five_requests_in_flight() {
    let s = setup(20, true).await;
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, latency_ms: 150, ..Limits::default() });
    let ids = s.sandbox.candidates();
    let mut tasks = Vec::new();
    for id in ids.into_iter().take(12) {
        let xero = Arc::clone(&s.xero);
        tasks.push(tokio::spawn(async move { xero.fetch(BILLS, &[id]).await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().len(), 1);
    }
    let c = s.sandbox.counters();
    assert!(c.max_in_flight <= 5 && c.max_in_flight >= 2, "{c:?}");
    assert_eq!(c.rate_limited, 0);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_saved_before_its_access_token_is_used() {
    let s = setup(5, false).await;
    s.xero.check(BILLS).await.unwrap();
    let saves = s.store.saves.lock().unwrap().clone();
    assert_eq!(saves.len(), 1, "one refresh, saved once");
    let (access, uses_at_save, refresh) = &saves[0];
    assert_eq!(*uses_at_save, 0, "saved before the access token was used");
    assert!(s.sandbox.uses_of(access) >= 1, "and then used");
    assert_ne!(refresh, &s.first_refresh, "the refresh token rotated");
    assert!(s.sandbox.refresh_token_alive(refresh));
    s.sandbox.advance(GRACE_SECS + 60);
    assert!(!s.sandbox.refresh_token_alive(&s.first_refresh), "the old one dies after the grace");
}

#[tokio::test]
async fn a_lost_refresh_response_is_recovered_within_the_grace() {
    let s = setup(5, false).await;
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, lose_refresh_responses: 1, ..Limits::default() });
    // The first refresh rotates the token and its answer is lost (a 504); the read is retried and
    // the refresh made again with the old refresh token, which Xero still accepts in its grace.
    s.xero.check(BILLS).await.unwrap();
    let c = s.sandbox.counters();
    assert_eq!((c.refreshes, c.grace_refreshes), (2, 1), "{c:?}");
    let saves = s.store.saves.lock().unwrap().clone();
    assert_eq!(saves.len(), 1, "only the answer that arrived is saved");
    assert_eq!(saves[0].1, 0, "saved before use");
    assert!(s.sandbox.refresh_token_alive(&saves[0].2));
}

#[tokio::test]
async fn an_old_refresh_token_past_the_grace_is_invalid_grant() {
    let s = setup(5, false).await;
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, lose_refresh_responses: 100, ..Limits::default() });
    let e = s.xero.check(BILLS).await.unwrap_err();
    assert!(e.retryable, "lost answers are worth trying again: {e}");
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, ..Limits::default() });
    s.sandbox.advance(GRACE_SECS + 1);
    let e = s.xero.check(BILLS).await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("invalid_grant"), "{e}");
    assert!(!e.retryable);
    let refreshes = s.sandbox.counters().refreshes;
    s.xero.check(BILLS).await.unwrap_err();
    assert_eq!(s.sandbox.counters().refreshes, refreshes + 1, "one token request per call, no storm");
}

#[tokio::test]
async fn a_custom_connection_uses_client_credentials_without_a_tenant() {
    let sandbox = XeroSandbox::new(12, 7);
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config: XeroConfig = serde_json::from_value(json!({
        "client_id": CUSTOM_CLIENT_ID, "client_secret": CUSTOM_CLIENT_SECRET,
        "base_url": format!("http://{addr}"), "custom_connection": true,
    }))
    .unwrap();
    let store = Arc::new(common::MemoryStore {
        sandbox: sandbox.clone(),
        tokens: Default::default(),
        saves: Default::default(),
    });
    let xero = Xero::new(config.validate("connections.books").unwrap(), "books", store.clone()).unwrap();
    let (records, _) = list_all(&xero, None).await;
    assert_eq!(records.len(), sandbox.candidates().len());
    assert_eq!(sandbox.counters().token_requests, 1, "one token for every call");
    assert!(store.saves.lock().unwrap().is_empty(), "nothing to persist");
}

#[tokio::test]
async fn tenants_and_settings_lists() {
    let s = setup(3, true).await;
    let tenants = s.xero.tenants().await.unwrap();
    assert_eq!(tenants[0].tenant_id, enrichd_xero::sandbox::TENANT_ID);
    assert_eq!(tenants[0].tenant_type, "ORGANISATION");
    let rates = s.xero.settings_list("TaxRates").await.unwrap();
    assert!(rates.iter().any(|r| r["TaxType"] == "INPUT2"));
    let e = s.xero.settings_list("Payments").await.unwrap_err();
    assert!(e.message.contains("Payments"));
}

#[tokio::test]
async fn an_access_token_the_platform_refuses_is_refreshed_once() {
    let s = setup(5, true).await;
    // The sandbox's clock moves past the token's life while ours thinks it is still good: a 401.
    s.sandbox.advance(enrichd_xero::sandbox::ACCESS_TOKEN_SECS + 1);
    s.xero.check(BILLS).await.unwrap();
    assert_eq!(s.sandbox.counters().refreshes, 1);
    assert_eq!(s.store.saves.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_bookkeepers_edit_moves_the_version_and_is_kept() {
    let s = setup(12, true).await;
    let (records, _) = list_all(&s.xero, None).await;
    let target = &records[2];
    assert!(s.sandbox.edit_as_bookkeeper(&target.id, |b| b.invoice_number = "TYPED-BY-ANN".into()));
    let now = s.xero.fetch(BILLS, std::slice::from_ref(&target.id)).await.unwrap().remove(0);
    assert_ne!(now.version, target.version, "UpdatedDateUTC moved: the engine sees a conflict");
    assert_eq!(now.field("invoice_number"), Some(&json!("TYPED-BY-ANN")));
}

#[tokio::test]
async fn reads_are_retried_through_5xx_and_writes_are_not() {
    let s = setup(12, true).await;
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, fail_next: 2, ..Limits::default() });
    let page = s.xero.list(BILLS, &PageRequest { per_page: 100, ..Default::default() }).await.unwrap();
    assert!(!page.records.is_empty());
    s.sandbox.set_limits(Limits { per_minute: 1000, per_day: 1000, fail_next: 1, ..Limits::default() });
    let change = truth_change(&page.records[0], &s.sandbox.printed(&page.records[0].id).unwrap());
    let e = s.xero.write(BILLS, &[change]).await.unwrap_err();
    assert!(e.retryable && e.status == Some(503), "{e}");
    assert_eq!(s.sandbox.counters().writes, 0, "the engine owns write retries");
}
