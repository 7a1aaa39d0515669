//! Documents to the model end to end over real HTTP (teststore serving attachments, provider
//! sandbox reading them), on SQLite and Postgres: a record's attachment is fetched once per item —
//! through provider faults and retries, and in batch mode — kept in our database, sent in the
//! provider's native form and read by the simulated model; a document the provider cannot take
//! fails only its own item, before any request; a text-only server gets the PDF's text layer and
//! refuses a scan for its item without a request; document tokens are counted.

mod common;

use std::time::Duration;

use common::harness::{Harness, harness, start_run, work};
use common::{ConfigOptions, TestDb};
use enrichd::sandbox::provider::Faults;
use enrichd::sandbox::provider::documents::{scanned_pdf, text_pdf};
use enrichd::store::{ItemState, RunStatus};
use serde_json::json;

const READS_DOCUMENTS: &str = "documents = \"attachments\"";

/// What the PDF of product `id` says its description is (its ground truth).
fn truth(id: u64) -> String {
    format!("Read from the datasheet of product {id}")
}

/// A one-page datasheet for product `id`, with its ground truth.
fn datasheet(id: u64, pages: usize) -> Vec<u8> {
    let page = vec![format!("Datasheet for product {id}"), "Zinc plated steel, M8 thread, 40 mm.".to_owned()];
    text_pdf(&vec![page; pages], Some(&json!({ "description": truth(id) })))
}

fn attach(h: &Harness, id: u64, name: &str, content_type: &str, bytes: Vec<u8>) {
    h.sb.store.attach("product", id, name, content_type, bytes).expect("the product exists");
}

async fn item_of(db: &TestDb, run: i64, external_id: &str) -> enrichd::store::Item {
    db.store.items(run, None, 1000).await.unwrap().into_iter().find(|i| i.external_id == external_id).unwrap()
}

async fn fetched_once_through_retries(db: &TestDb) {
    let options = ConfigOptions { extra_task: READS_DOCUMENTS, max_attempts: 10, ..Default::default() };
    let h = harness(db, 6, 1, options).await;
    for id in 1..=6 {
        attach(&h, id, &format!("datasheet-{id}.pdf"), "application/pdf", datasheet(id, 1));
    }
    // Half the model requests fail: items are retried, their documents are not fetched again.
    h.sb.provider.set_seed(7);
    h.sb.provider.set_faults(Faults { server_error_rate: 0.5, ..Default::default() });
    h.sb.provider.record_requests(true);
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let provider = h.sb.provider.stats();
    assert!(provider.requests > 6, "some requests failed and were retried: {provider:?}");
    assert_eq!(h.sb.store.stats().attachment_requests, 6, "each item's attachment fetched exactly once");
    for id in 1..=6 {
        let (_, fields) = h.sb.store.record("product", id).unwrap();
        assert_eq!(fields["description"], json!(truth(id)), "product {id}: the model read its own document");
    }
    // Sent as an OpenAI `file` part, with the listing that says whose document it is.
    let body = &h.sb.provider.received()[0].body;
    let parts = body["messages"][0]["content"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(parts[1]["type"], "file", "{body}");
    assert!(parts[0]["text"].as_str().unwrap().contains("1. record "), "{body}");
    // Kept in our database, text layer included; the run's tokens count the page.
    let item = item_of(db, run.id, "3").await;
    let kept = db.store.documents_of(item.id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].document.name, "datasheet-3.pdf");
    assert_eq!(kept[0].document.pages, Some(1));
    assert!(kept[0].document.text.as_deref().unwrap().contains("Datasheet for product 3"));
    assert_eq!(kept[0].sha256.len(), 64);
    assert!(item.tokens_in > 765, "the document's tokens are counted: {}", item.tokens_in);
}

async fn fetched_once_in_batch_mode(db: &TestDb) {
    let options = ConfigOptions {
        extra_task: READS_DOCUMENTS,
        extra_pipeline: "mode = \"batch\"",
        extra_provider: "batch_poll_seconds = 0.05",
        ..Default::default()
    };
    let h = harness(db, 5, 1, options).await;
    for id in 1..=5 {
        attach(&h, id, &format!("datasheet-{id}.pdf"), "application/pdf", datasheet(id, 2));
    }
    // Every batch expires after one line: the rest go back to the queue and into later batches.
    h.sb.provider.set_faults(Faults { batch_expire_after: Some(1), ..Default::default() });
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    assert!(h.sb.provider.stats().batches > 1, "items were resubmitted");
    assert_eq!(h.sb.store.stats().attachment_requests, 5, "resubmitted items use the kept documents");
    for id in 1..=5 {
        let (_, fields) = h.sb.store.record("product", id).unwrap();
        assert_eq!(fields["description"], json!(truth(id)), "product {id}");
    }
}

async fn a_document_the_provider_cannot_take_fails_only_its_item(db: &TestDb) {
    let options = ConfigOptions { extra_task: READS_DOCUMENTS, ..Default::default() };
    let h = harness(db, 4, 1, options).await;
    attach(&h, 1, "manual.pdf", "application/pdf", datasheet(1, 101));
    // Product 2 has only a spreadsheet: nothing the task reads.
    attach(&h, 2, "prices.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", b"PK".to_vec());
    attach(&h, 3, "datasheet-3.pdf", "application/pdf", datasheet(3, 1));
    attach(&h, 4, "broken.pdf", "application/pdf", b"%PDF-1.4 truncated".to_vec());
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let failed = |id: &str| {
        let id = id.to_owned();
        async move {
            let item = item_of(db, run.id, &id).await;
            assert_eq!(item.state, ItemState::Dead, "record {id}: {:?}", item.last_error);
            assert_eq!(item.attempts, 1, "record {id}: a permanent failure is not retried");
            item.last_error.unwrap()
        }
    };
    let e = failed("1").await;
    assert!(e.contains("record 1") && e.contains("manual.pdf") && e.contains("100 pages per request"), "{e}");
    let e = failed("2").await;
    assert!(e.contains("record 2: no attachment the task reads") && e.contains("prices.xlsx"), "{e}");
    let e = failed("4").await;
    assert!(e.contains("record 4: document broken.pdf"), "{e}");
    assert_eq!(item_of(db, run.id, "3").await.state, ItemState::Written);
    assert_eq!(h.sb.provider.stats().requests, 1, "only the readable document went to the model");
}

async fn a_text_only_server_gets_the_text_layer_and_never_a_scan(db: &TestDb) {
    let options =
        ConfigOptions { extra_task: READS_DOCUMENTS, extra_provider: "documents = \"text\"", ..Default::default() };
    let h = harness(db, 3, 1, options).await;
    attach(&h, 1, "datasheet-1.pdf", "application/pdf", datasheet(1, 1));
    attach(&h, 2, "scan-2.pdf", "application/pdf", scanned_pdf(1, Some(&json!({"description": truth(2)}))));
    attach(&h, 3, "photo-3.png", "image/png", include_bytes!("fixtures/documents/receipt.png").to_vec());
    h.sb.provider.record_requests(true);
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let received = h.sb.provider.received();
    assert_eq!(received.len(), 1, "neither the scan nor the photo was sent");
    let user = received[0].body["messages"][0]["content"].as_str().expect("plain text content");
    assert!(user.contains("<document n=\"1\" name=\"datasheet-1.pdf\" pages=\"1\">"), "{user}");
    assert!(user.contains("Zinc plated steel, M8 thread, 40 mm."), "the text layer went with the prompt: {user}");
    assert_eq!(item_of(db, run.id, "1").await.state, ItemState::Written);
    for (id, name) in [("2", "scan-2.pdf"), ("3", "photo-3.png")] {
        let item = item_of(db, run.id, id).await;
        assert_eq!(item.state, ItemState::Dead);
        let e = item.last_error.unwrap();
        assert!(e.contains(name) && e.contains("needs a model that reads images"), "{e}");
    }
}

async fn packed_requests_carry_every_records_documents(db: &TestDb) {
    let options = ConfigOptions {
        extra_task: "documents = \"attachments\"\nmax_documents = 2\nitems_per_request = 3",
        concurrency: 1,
        ..Default::default()
    };
    let h = harness(db, 6, 1, options).await;
    for id in 1..=6 {
        // A photo first, then the datasheet: both go, in the platform's order.
        attach(
            &h,
            id,
            &format!("photo-{id}.png"),
            "image/png",
            include_bytes!("fixtures/documents/receipt.png").to_vec(),
        );
        attach(&h, id, &format!("datasheet-{id}.pdf"), "application/pdf", datasheet(id, 1));
    }
    h.sb.provider.record_requests(true);
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let received = h.sb.provider.received();
    assert!(received.len() < 6, "records were packed: {} requests", received.len());
    let parts = received[0].body["messages"][0]["content"].as_array().unwrap();
    let files = parts.iter().filter(|p| p["type"] == "file").count();
    let images = parts.iter().filter(|p| p["type"] == "image_url").count();
    assert_eq!(files, images, "each record's photo and datasheet");
    assert!(files > 1, "documents of several records in one request");
    let text = parts[0]["text"].as_str().unwrap();
    assert!(text.contains("2. record ") && text.contains(": datasheet-"), "{text}");
    for id in 1..=6 {
        let (_, fields) = h.sb.store.record("product", id).unwrap();
        assert_eq!(fields["description"], json!(truth(id)), "product {id}: answered from its own document");
    }
    assert_eq!(h.sb.store.stats().attachment_requests, 12);
}

on_both_backends! {
    packed => packed_requests_carry_every_records_documents;
    fetched_once_through_retries_case => fetched_once_through_retries;
    fetched_once_in_batch_mode_case => fetched_once_in_batch_mode;
    provider_limits_per_item => a_document_the_provider_cannot_take_fails_only_its_item;
    text_only_server => a_text_only_server_gets_the_text_layer_and_never_a_scan;
}
