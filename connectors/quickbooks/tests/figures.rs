//! The connector's side of the README's figures, measured against the sandbox at zero latency:
//! 300 bills listed, every candidate's PDF downloaded, re-read and written from its ground truth
//! in batches of 30. Asserts the request budget (so a regression that adds calls per bill fails)
//! and prints the figures: `cargo nextest run -p enrichd-quickbooks --test figures --no-capture`.

mod common;

use std::time::Instant;

use common::*;
use enrichd_connector::{Connector, PageRequest, WriteResult, WriteSubmission};
use enrichd_quickbooks::{BILLS, MAX_BATCH};
use serde_json::json;

#[tokio::test]
async fn three_hundred_bills_pulled_downloaded_and_written() {
    let (sandbox, qbo) = setup(300).await;
    let started = Instant::now();
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let page = qbo.list(BILLS, &PageRequest { cursor, per_page: 100, modified_after: None }).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let listed = sandbox.stats().requests;
    let candidates: Vec<_> = records.into_iter().filter(|r| r.field("invoice_number").is_none()).collect();
    let mut document_bytes = 0;
    for r in &candidates {
        document_bytes += qbo.fetch_attachment(&r.attachments[0]).await.unwrap().len();
    }
    let before_writes = sandbox.stats().requests;
    let mut written = 0;
    for chunk in candidates.chunks(MAX_BATCH) {
        let ids: Vec<String> = chunk.iter().map(|r| r.id.clone()).collect();
        let current = qbo.fetch(BILLS, &ids).await.unwrap();
        let changes: Vec<_> = current
            .iter()
            .map(|r| {
                let t = sandbox.printed(&r.id).unwrap();
                let lines: Vec<_> = t
                    .lines
                    .iter()
                    .map(|l| {
                        json!({"description": l.description, "quantity": l.quantity, "unit_price": l.unit_price,
                            "tax_rate": t.tax_rate_percent, "tax_amount": l.tax, "line_amount": l.amount,
                            "account_code": l.account})
                    })
                    .collect();
                change(
                    &r.id,
                    &r.version.0,
                    json!({"invoice_number": t.doc_number, "due_date": t.due_date, "amounts_are": t.amounts_are,
                        "line_items": lines, "total": t.total}),
                )
            })
            .collect();
        let WriteSubmission::Done(outcomes) = qbo.write(BILLS, &changes).await.unwrap() else { panic!("synchronous") };
        written += outcomes.iter().filter(|o| matches!(o.result, WriteResult::Written { .. })).count();
    }
    let elapsed = started.elapsed();
    let stats = sandbox.stats();
    assert_eq!(written, candidates.len());
    for r in &candidates {
        let bill = sandbox.bill(&r.id).unwrap();
        let t = sandbox.printed(&r.id).unwrap();
        assert_eq!(bill["DocNumber"], json!(t.doc_number));
        assert!((bill["TotalAmt"].as_f64().unwrap() - t.total).abs() < 0.005, "QuickBooks' total is the document's");
    }
    let write_requests = stats.requests - before_writes;
    let per_hundred = write_requests as f64 * 100.0 / written as f64;
    println!(
        "quickbooks figures: {} bills listed in {listed} requests; {} candidates; {document_bytes} PDF bytes \
         ({} downloads, 2 requests each); written with {write_requests} requests ({per_hundred:.1} per 100 bills, \
         re-read included); {:.0} bills/s end to end at zero latency",
        300,
        candidates.len(),
        stats.downloads,
        candidates.len() as f64 / elapsed.as_secs_f64()
    );
    // Three full pages (a Bill query and an Attachable query each), then an empty fourth: QuickBooks
    // gives no total, so only a short page ends a listing. Once per connector: the company's lists
    // (Preferences, CompanyCurrency, TaxCode, TaxRate, Account) and the vendors.
    assert_eq!(listed, 7 + 5 + 1);
    assert!(per_hundred <= 20.0, "{per_hundred} requests per 100 bills written");
    assert_eq!(stats.without_minor_version, 0);
}
