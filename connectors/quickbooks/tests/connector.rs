//! The QuickBooks connector against the sandbox over real HTTP: config validation, query paging,
//! attachments downloaded as real PDFs, sparse updates with the SyncToken, stale tokens as
//! conflicts, batches with per-bId faults, Faults inside HTTP 200, 429s, minorversion, and rotating
//! OAuth2 tokens persisted before use.

mod common;

use std::time::{Duration, Instant};

use common::*;
use enrichd_connector::{Connector, PageRequest, Record, WriteResult, WriteSubmission};
use enrichd_quickbooks::sandbox::{
    ACCESS_TOKEN, Faults, Layout, NEW_SUPPLIER, PLACEHOLDER_VENDOR, QuickBooksSandbox, REFRESH_TOKEN,
};
use enrichd_quickbooks::{BILLS, QuickBooksConfig};
use serde_json::{Value, json};

async fn list_all(qbo: &impl Connector, per_page: u32, modified_after: Option<String>) -> Vec<Record> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            qbo.list(BILLS, &PageRequest { cursor, per_page, modified_after: modified_after.clone() }).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return records,
        }
    }
}

fn outcomes(submission: WriteSubmission) -> Vec<(String, WriteResult)> {
    match submission {
        WriteSubmission::Done(o) => o.into_iter().map(|o| (o.id, o.result)).collect(),
        WriteSubmission::Pending(p) => panic!("QuickBooks writes are synchronous, got {p:?}"),
    }
}

#[test]
fn config_errors_name_the_key() {
    let error = |config: Value| -> String {
        match serde_json::from_value::<QuickBooksConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate("connections.books").unwrap_err().to_string(),
        }
    };
    let base = json!({"client_id": "id", "client_secret": "s"});
    let with = |extra: Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    assert!(error(with(json!({"realm": "1"}))).contains("unknown field `realm`"));
    assert_eq!(
        error(json!({"client_secret": "s"})),
        "connections.books.client_id: missing: the app's OAuth2 credentials from the Intuit developer portal"
    );
    assert!(
        error(with(json!({"realm_id": "acme"})))
            .starts_with("connections.books.realm_id: \"acme\" is not a QuickBooks company id")
    );
    assert!(
        error(with(json!({"environment": "sandbox", "base_url": "https://x"})))
            .starts_with("connections.books.base_url:")
    );
    assert!(error(with(json!({"environment": "staging"}))).contains("unknown variant `staging`"));
    assert!(
        error(with(json!({"base_url": "http://books.example.com"})))
            .starts_with("connections.books.base_url: \"http://books.example.com\" is plain http://")
    );
    assert!(
        error(with(json!({"minor_version": 65})))
            .starts_with("connections.books.minor_version: 65: Intuit discontinued")
    );
    assert!(error(with(json!({"timeout_secs": 0}))).starts_with("connections.books.timeout_secs:"));
    let ok: QuickBooksConfig = serde_json::from_value(with(json!({"environment": "sandbox"}))).unwrap();
    let options = ok.validate("connections.books").unwrap();
    assert_eq!(options.base_url, "https://sandbox-quickbooks.api.intuit.com");
    assert_eq!(options.token_url, "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer");
    assert_eq!(options.minor_version, 75);
    assert_eq!(options.realm_id, None);
    // Secrets never show in the Debug output of the settings.
    assert!(!format!("{options:?}").contains("\"s\""));
    let mut config: QuickBooksConfig = serde_json::from_value(base.clone()).unwrap();
    let names: Vec<&str> =
        enrichd_connector::ConnectionSettings::secrets_mut(&mut config).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["client_id", "client_secret"]);
}

#[tokio::test]
async fn lists_bills_page_by_page_with_their_attachments() {
    let (sandbox, qbo) = setup(25).await;
    let records = list_all(&qbo, 10, None).await;
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, sandbox.bill_ids(), "every bill once, in Id order");
    let queries: Vec<String> = sandbox
        .received()
        .iter()
        .filter(|r| r.path.ends_with("/query"))
        .map(|r| percent_encoding::percent_decode_str(&r.query.replace('+', " ")).decode_utf8_lossy().into_owned())
        .filter(|q| q.contains("FROM Bill"))
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
    for (query, start) in queries.iter().zip([1, 11, 21]) {
        assert!(query.contains(&format!("STARTPOSITION {start} MAXRESULTS 10")), "{query}");
    }
    for record in &records {
        let truth = sandbox.printed(&record.id).unwrap();
        let vendor = if truth.vendor == NEW_SUPPLIER { PLACEHOLDER_VENDOR } else { truth.vendor.as_str() };
        assert_eq!(record.field("supplier.name"), Some(&json!(vendor)));
        assert_eq!(record.field("date"), Some(&json!(truth.txn_date)));
        assert_eq!(record.field("currency"), Some(&json!(truth.currency)));
        assert_eq!(record.version.0, "0");
        assert_eq!(record.attachments.len(), 1, "bill {} has its PDF", record.id);
        assert_eq!(record.attachments[0].content_type, "application/pdf");
        assert_eq!(record.attachments[0].name, format!("{}.pdf", truth.doc_number));
    }
    let candidates = records.iter().filter(|r| r.field("invoice_number").is_none()).count();
    assert!(candidates > 15 && candidates < 25, "about three quarters lack a number: {candidates}");
    let complete = records.iter().find(|r| r.field("invoice_number").is_some()).unwrap();
    let printed = sandbox.printed(&complete.id).unwrap();
    let lines = complete.field("line_items").unwrap().as_array().unwrap();
    assert_eq!(lines.len(), printed.lines.len());
    assert!(lines[0]["account_code"].as_str().is_some_and(|c| c.starts_with("61")), "{lines:?}");
    assert_eq!(lines[0]["line_amount"], json!(printed.lines[0].amount));
    assert_eq!(lines[0]["tax_rate"], json!(printed.tax_rate_percent));
    assert_eq!(complete.field("total_tax"), Some(&json!(printed.tax)));
    assert_eq!(complete.field("amounts_are"), Some(&json!(printed.amounts_are)));
}

#[tokio::test]
async fn incremental_listing_sees_only_bills_changed_since() {
    let (sandbox, qbo) = setup(12).await;
    sandbox.edit_as_bookkeeper("150", "checked by Dana");
    // The sandbox clock starts at 2026-01-05T09:00:00-08:00; the edit is one second later.
    let changed = list_all(&qbo, 100, Some("2026-01-05T17:00:00Z".into())).await;
    assert_eq!(changed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["150"]);
    assert_eq!(changed[0].version.0, "1");
    assert_eq!(changed[0].field("payment_note"), Some(&json!("checked by Dana")));
}

#[tokio::test]
async fn attachments_download_as_valid_pdfs_that_say_what_the_truth_says() {
    let (sandbox, qbo) = setup(9).await;
    let records = list_all(&qbo, 100, None).await;
    let mut layouts = Vec::new();
    for record in &records {
        let truth = sandbox.printed(&record.id).unwrap();
        let bytes = qbo.fetch_attachment(&record.attachments[0]).await.unwrap();
        assert!(bytes.starts_with(b"%PDF-"), "bill {}", record.id);
        let doc = lopdf::Document::load_mem(&bytes).expect("a parseable PDF");
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        assert_eq!(pages.len() as u32, truth.pages);
        let text = doc.extract_text(&pages).unwrap();
        if !truth.text_layer {
            continue;
        }
        assert!(text.contains(&truth.doc_number), "bill {}: {text}", record.id);
        assert!(text.contains(&format!("{:.2}", truth.total)), "bill {}: {text}", record.id);
        assert!(text.contains(&truth.vendor), "bill {}: {text}", record.id);
        assert_eq!(text.contains("CREDIT NOTE"), truth.credit_note);
        layouts.push(truth.layout);
    }
    for layout in [Layout::Classic, Layout::Modern, Layout::Compact] {
        assert!(layouts.contains(&layout), "{layout:?} among the documents");
    }
    assert_eq!(sandbox.stats().downloads, 9);
    // The file host gets no bearer token: the presigned link is its own authority.
    assert!(sandbox.received().iter().filter(|r| r.path.starts_with("/files/")).all(|r| r.token.is_empty()));
}

#[tokio::test]
async fn a_sparse_update_carries_the_sync_token_read_and_leaves_the_rest() {
    let (sandbox, qbo) = setup(4).await;
    let bill = qbo.fetch(BILLS, &["145".into()]).await.unwrap().remove(0);
    let before = sandbox.bill("145").unwrap();
    let change = change(
        "145",
        &bill.version.0,
        json!({
            "invoice_number": "INV-20000",
            "due_date": "2025-12-31",
            "amounts_are": "exclusive",
            "line_items": [
                {"description": "Toner", "quantity": 2, "unit_price": 60.25, "line_amount": 120.5, "account_code": "6100", "tax_rate": 20},
                {"description": "Courier", "line_amount": 30, "account_code": "Shipping and Delivery", "tax_rate": 0}
            ]
        }),
    );
    let result = outcomes(qbo.write(BILLS, &[change]).await.unwrap());
    assert_eq!(
        result,
        [("145".to_owned(), WriteResult::Written { version: Some(enrichd_connector::Version("1".into())) })]
    );
    let sent = sandbox.received().into_iter().rev().find(|r| r.path.ends_with("/bill")).unwrap();
    assert_eq!(sent.body["sparse"], json!(true));
    assert_eq!(sent.body["SyncToken"], json!("0"));
    assert_eq!(sent.body["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"]["value"], json!("7"));
    let after = sandbox.bill("145").unwrap();
    assert_eq!(after["DocNumber"], "INV-20000");
    assert_eq!(after["TotalAmt"], json!(174.6), "150.50 and 20 % tax on 120.50, computed by QuickBooks");
    assert_eq!(after["VendorRef"], before["VendorRef"], "fields not sent are untouched");
    assert_eq!(after["TxnDate"], before["TxnDate"]);
    let reread = qbo.fetch(BILLS, &["145".into()]).await.unwrap().remove(0);
    assert!(qbo.holds(
        "line_items",
        &json!([{"description": "Toner", "line_amount": 120.5, "account_code": "6100", "tax_rate": 20},
            {"description": "Courier", "line_amount": 30}]),
        reread.field("line_items")
    ));
    assert!(!qbo.holds(
        "line_items",
        &json!([{"description": "Toner", "line_amount": 120.5}]),
        reread.field("line_items")
    ));
    assert!(qbo.holds("total_tax", &json!(24.1), reread.field("total_tax")));
    assert!(qbo.holds("total", &json!(174.6), reread.field("total")));
    // Unknown vendor ids, accounts and tax rates are refused per item, naming the field.
    let refused = outcomes(qbo.write(BILLS, &[change_of("145", "1", json!({"supplier.id": "4040"}))]).await.unwrap());
    let WriteResult::Failed(e) = &refused[0].1 else { panic!("{refused:?}") };
    assert!(e.message.starts_with("bill 145: supplier.id: no vendor with id \"4040\""), "{}", e.message);
    for (line, field) in [
        (json!({"line_amount": 1, "account_code": "0000"}), "line_items[0].account_code"),
        (json!({"line_amount": 1, "account_code": "6100", "tax_rate": 7.5}), "line_items[0].tax_rate"),
        (json!({"line_amount": 1}), "line_items[0].account_code: missing"),
    ] {
        let refused =
            outcomes(qbo.write(BILLS, &[change_of("145", "1", json!({"line_items": [line]}))]).await.unwrap());
        let WriteResult::Failed(e) = &refused[0].1 else { panic!("{refused:?}") };
        assert!(e.message.contains(field), "{}", e.message);
    }
}

fn change_of(id: &str, version: &str, fields: Value) -> enrichd_connector::Change {
    change(id, version, fields)
}

#[tokio::test]
async fn a_stale_sync_token_is_a_conflict_and_the_bookkeepers_edit_stays() {
    let (sandbox, qbo) = setup(4).await;
    let bill = qbo.fetch(BILLS, &["146".into()]).await.unwrap().remove(0);
    sandbox.edit_as_bookkeeper("146", "do not pay before the credit note");
    let result =
        outcomes(qbo.write(BILLS, &[change("146", &bill.version.0, json!({"invoice_number": "X-1"}))]).await.unwrap());
    assert_eq!(result, [("146".to_owned(), WriteResult::Conflict { current: None })]);
    let after = sandbox.bill("146").unwrap();
    assert_eq!(after["PrivateNote"], "do not pay before the credit note");
    assert!(after.get("DocNumber").is_none());
    assert_eq!(after["SyncToken"], "1");
    let stats = sandbox.stats();
    assert_eq!((stats.bill_updates, stats.stale), (1, 1), "a conflict is never retried");
}

#[tokio::test]
async fn a_batch_of_thirty_reports_each_bill_by_bid() {
    let (sandbox, qbo) = setup(32).await;
    let records = list_all(&qbo, 100, None).await;
    sandbox.edit_as_bookkeeper(&records[3].id, "edited");
    sandbox.refuse_writes_of(&records[7].id);
    let changes: Vec<_> = records[..30]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let account = if i == 11 { "Nope Account" } else { "Utilities" };
            change(
                &r.id,
                &r.version.0,
                json!({"invoice_number": format!("B-{i}"), "line_items": [{"line_amount": 10 + i, "account_code": account}]}),
            )
        })
        .collect();
    let result = outcomes(qbo.write(BILLS, &changes).await.unwrap());
    assert_eq!(result.len(), 30);
    for (i, (id, outcome)) in result.iter().enumerate() {
        assert_eq!(id, &records[i].id);
        match i {
            3 => assert_eq!(outcome, &WriteResult::Conflict { current: None }),
            7 => {
                let WriteResult::Failed(e) = outcome else { panic!("{outcome:?}") };
                assert_eq!(e.code.as_deref(), Some("6000"));
                assert!(!e.retryable);
                assert!(
                    e.message.contains(&format!("update bill {}", records[7].id))
                        && e.message.contains("closed period"),
                    "{}",
                    e.message
                );
            }
            11 => {
                let WriteResult::Failed(e) = outcome else { panic!("{outcome:?}") };
                assert!(e.message.contains("line_items[0].account_code: no account \"Nope Account\""), "{}", e.message);
            }
            _ => {
                assert_eq!(outcome, &WriteResult::Written { version: Some(enrichd_connector::Version("1".into())) });
                assert_eq!(sandbox.bill(id).unwrap()["DocNumber"], json!(format!("B-{i}")));
            }
        }
    }
    let stats = sandbox.stats();
    assert_eq!(
        (stats.batches, stats.batch_items, stats.bill_updates),
        (1, 29, 0),
        "one batch of the 29 sendable bills"
    );
    assert_eq!(sandbox.bill(&records[3].id).unwrap()["PrivateNote"], "edited");
    let too_many: Vec<_> =
        records.iter().take(31).map(|r| change(&r.id, "1", json!({"invoice_number": "x"}))).collect();
    assert!(qbo.write(BILLS, &too_many).await.unwrap_err().message.contains("at most 30"));
}

#[tokio::test]
async fn a_fault_inside_http_200_is_an_error_with_code_and_detail() {
    let (sandbox, qbo) = setup(3).await;
    // The company's lists are read once, before the fault.
    qbo.organisation().await.unwrap();
    sandbox.set_faults(Faults { faults_in_200: 1, ..Default::default() });
    let result = outcomes(qbo.write(BILLS, &[change("145", "0", json!({"invoice_number": "A"}))]).await.unwrap());
    let WriteResult::Failed(e) = &result[0].1 else { panic!("{result:?}") };
    assert_eq!(e.code.as_deref(), Some("10000"));
    assert!(
        e.message.starts_with("update bill 145: HTTP 200 QuickBooks fault 10000 (SystemFault): An application error"),
        "{}",
        e.message
    );
    assert!(e.message.contains("System Failure Error"), "detail included: {}", e.message);
    assert!(sandbox.bill("145").unwrap().get("DocNumber").is_none());
    // A read meeting one is retried, and succeeds.
    sandbox.set_faults(Faults { faults_in_200: 1, ..Default::default() });
    assert_eq!(list_all(&qbo, 100, None).await.len(), 3);
}

#[tokio::test]
async fn a_429_waits_its_retry_after_and_otherwise_sixty_seconds() {
    let (sandbox, qbo) = setup(3).await;
    sandbox.set_faults(Faults { throttled_requests: 1, retry_after_secs: Some(1), ..Default::default() });
    let started = Instant::now();
    assert_eq!(list_all(&qbo, 100, None).await.len(), 3);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!(sandbox.stats().throttled, 1);
    // Without Retry-After a write is not retried here; the error asks the engine for 60 s.
    sandbox.set_faults(Faults { throttled_requests: 1, retry_after_secs: None, ..Default::default() });
    let result = outcomes(qbo.write(BILLS, &[change("145", "0", json!({"invoice_number": "A"}))]).await.unwrap());
    let WriteResult::Failed(e) = &result[0].1 else { panic!("{result:?}") };
    assert!(e.retryable);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(60)));
    assert!(e.message.contains("003001"), "{}", e.message);
    assert!(e.message.contains("(intuit_tid 1-"), "the trace id for Intuit's support: {}", e.message);
}

#[tokio::test]
async fn at_most_ten_requests_are_in_flight_per_company() {
    let (sandbox, qbo) = setup(30).await;
    let records = list_all(&qbo, 100, None).await;
    sandbox.set_faults(Faults { latency_ms: 100, ..Default::default() });
    let downloads = records.iter().map(|r| qbo.fetch_attachment(&r.attachments[0]));
    for result in futures_join(downloads).await {
        assert!(result.unwrap().starts_with(b"%PDF-"));
    }
    let stats = sandbox.stats();
    assert_eq!(stats.throttled, 0);
    assert!(stats.max_in_flight <= 10 && stats.max_in_flight >= 5, "{}", stats.max_in_flight);
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(f);
    }
    // Poll all at once on this task.
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn every_call_carries_minorversion_75() {
    let (sandbox, qbo) = setup(5).await;
    let records = list_all(&qbo, 2, None).await;
    qbo.fetch_attachment(&records[0].attachments[0]).await.unwrap();
    qbo.check(BILLS).await.unwrap();
    let changes: Vec<_> = records.iter().map(|r| change(&r.id, "0", json!({"invoice_number": "M"}))).collect();
    qbo.write(BILLS, &changes[..1]).await.unwrap();
    qbo.write(BILLS, &changes[1..]).await.unwrap();
    let stats = sandbox.stats();
    assert!(stats.requests >= 10, "{stats:?}");
    assert_eq!(stats.without_minor_version, 0);
    let api: Vec<_> = sandbox.received().into_iter().filter(|r| r.path.starts_with("/v3/")).collect();
    assert!(api.iter().all(|r| r.query.contains("minorversion=75")), "{api:?}");
}

#[tokio::test]
async fn a_rotated_refresh_token_is_saved_before_its_access_token_is_used() {
    let sandbox = QuickBooksSandbox::new(3, 7);
    let base = start(&sandbox).await;
    // The stored access token has expired: the first call refreshes.
    let store = MemoryStore::new(&sandbox, "expired_access", REFRESH_TOKEN, 0);
    let qbo = connector_with(config(&base), store.clone());
    assert_eq!(list_all(&qbo, 100, None).await.len(), 3);
    let saves = store.saves();
    assert_eq!(saves.len(), 1, "one refresh");
    let (access, refresh, used_before_save) = saves[0].clone();
    assert_eq!(used_before_save, 0, "the new access token was used only after the set was saved");
    assert_ne!(refresh, REFRESH_TOKEN, "the refresh token rotated");
    assert!(!sandbox.refresh_token_valid(REFRESH_TOKEN), "the old refresh token is spent");
    assert!(sandbox.refresh_token_valid(&refresh));
    let api: Vec<_> = sandbox.received().into_iter().filter(|r| r.path.starts_with("/v3/")).collect();
    assert!(!api.is_empty() && api.iter().all(|r| r.token == access));
    assert_eq!(sandbox.stats().token_requests, 1);

    // An access token the company refuses (401) is refreshed once, from the stored refresh token.
    let store = MemoryStore::new(&sandbox, "revoked_access", &refresh, common::far_future());
    let qbo = connector_with(config(&base), store.clone());
    assert_eq!(list_all(&qbo, 100, None).await.len(), 3);
    assert_eq!(store.saves().len(), 1);
    assert_eq!(sandbox.stats().unauthorized, 1);

    // A spent refresh token is `invalid_grant`: a clear, permanent error without any token in it.
    let store = MemoryStore::new(&sandbox, "expired_access", REFRESH_TOKEN, 0);
    let qbo = connector_with(config(&base), store.clone());
    let err = qbo.list(BILLS, &PageRequest { cursor: None, per_page: 10, modified_after: None }).await.unwrap_err();
    assert!(!err.retryable);
    assert!(!err.message.contains(enrichd_quickbooks::sandbox::CLIENT_SECRET));
    assert!(err.message.contains("invalid_grant") && err.message.contains("connection books"), "{}", err.message);
    assert!(!err.message.contains(REFRESH_TOKEN));
    assert_eq!(sandbox.stats().invalid_grants, 1, "no retry storm");
    assert!(store.saves().is_empty());
}

#[tokio::test]
async fn a_connection_without_a_realm_says_to_connect_it() {
    let sandbox = QuickBooksSandbox::new(1, 7);
    let base = start(&sandbox).await;
    let mut config = config(&base);
    config.as_object_mut().unwrap().remove("realm_id");
    let qbo = connector_with(config, MemoryStore::new(&sandbox, ACCESS_TOKEN, REFRESH_TOKEN, common::far_future()));
    let err = qbo.check(BILLS).await.unwrap_err();
    assert!(err.message.contains("no realm_id") && err.message.contains("enrichd connect"), "{}", err.message);
    assert_eq!(sandbox.stats().requests, 0);
}

#[tokio::test]
async fn bills_a_bookkeeper_edits_after_the_read_end_in_conflict_and_keep_the_edit() {
    let (sandbox, qbo) = setup(60).await;
    let records = list_all(&qbo, 100, None).await;
    sandbox.set_faults(Faults { bookkeeper_edit_rate: 0.3, ..Default::default() });
    let ids: Vec<String> = records.iter().take(30).map(|r| r.id.clone()).collect();
    let current = qbo.fetch(BILLS, &ids).await.unwrap();
    let changes: Vec<_> =
        current.iter().map(|r| change(&r.id, &r.version.0, json!({"invoice_number": "RUN-1"}))).collect();
    let result = outcomes(qbo.write(BILLS, &changes).await.unwrap());
    let edited = sandbox.edited_by_bookkeeper();
    assert!(!edited.is_empty() && edited.len() < 30, "{edited:?}");
    for (id, outcome) in result {
        let bill = sandbox.bill(&id).unwrap();
        if edited.contains(&id) {
            assert_eq!(outcome, WriteResult::Conflict { current: None }, "bill {id}");
            assert_eq!(bill["PrivateNote"], "Checked by the bookkeeper");
            assert!(bill.get("DocNumber").is_none_or(|d| d != "RUN-1"));
        } else {
            assert!(matches!(outcome, WriteResult::Written { .. }), "bill {id}: {outcome:?}");
            assert_eq!(bill["DocNumber"], "RUN-1");
        }
    }
}
