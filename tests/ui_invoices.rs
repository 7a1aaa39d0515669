//! Reviewing extracted bills in a real browser (headless Chromium), on SQLite and Postgres: a Xero
//! organisation (the sandbox, a Custom Connection) whose draft bills carry generated PDFs and scans,
//! the shipped `invoice_extract` task and the simulated model. The item page shows the bill's own
//! document beside what was read from it (served from our database, as a PDF), the line items as a
//! table a reviewer edits cell by cell, each check's outcome and the supplier the look-up matched; a
//! duplicate says why it is never written and offers no approval; an approved edit lands on the draft
//! bill in Xero, which stays DRAFT.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::browser::{browser, chromedriver, click_and_load, sign_in, text_of, wait_for};
use common::harness::{start_named, work_named};
use common::{PROVIDER_KEY, ProviderSandbox, set_secret_env};
use enrichd::config::{Config, Secret, ServerAuthConfig};
use enrichd::engine::Engine;
use enrichd::server::{Access, Site, serve};
use enrichd::store::{ItemState, RunStatus};
use enrichd_xero::sandbox::{CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET, Limits, XeroSandbox};
use fantoccini::Locator;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "bill review password";

on_both_backends! {
    bills_are_reviewed_beside_their_documents => bills_are_reviewed_beside_their_documents;
}

fn config(dir: &std::path::Path, db: &TestDb, books: &str, provider: &str) -> Config {
    std::fs::create_dir(dir.join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/invoice_extract.toml"),
        dir.join("tasks/invoice_extract.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("xero-id"), CUSTOM_CLIENT_ID).unwrap();
    std::fs::write(dir.join("xero-secret"), CUSTOM_CLIENT_SECRET).unwrap();
    let path = dir.join("enrichd.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[database]
url = "{db}"

[daemon]
lease_seconds = 5
poll_interval_ms = 50
retry_base_ms = 100
retry_max_seconds = 2

[connections.books]
kind = "xero"
base_url = "{books}"
custom_connection = true
client_id = "file:{dir}/xero-id"
client_secret = "file:{dir}/xero-secret"
timeout_secs = 10

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{TEST_PROVIDER_KEY}}"

[pipelines.bills]
connection = "books"
entity = "bills"
task = "invoice_extract"
provider = "sim"
model = "sim-model"
concurrency = 4
select = {{ missing = ["invoice_number"], fill_all_missing = true, add = ["supplier.name", "date", "currency", "amounts_are", "line_items", "sub_total", "total_tax", "total"] }}
review = {{ policy = "all" }}
"#,
            db = db.url,
            dir = dir.display(),
        ),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

/// Equal as JSON, numbers compared by value (a browser writes 10.0 as 10).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The cells of the item page's line-item editor, row by row.
async fn editor_rows(client: &fantoccini::Client) -> Vec<Vec<String>> {
    let rows = client
        .execute(
            "return Array.from(document.querySelectorAll('#field-line_items table.rows-editor tbody tr')).map(tr => \
               Array.from(tr.querySelectorAll('input[data-column]')).map(i => i.getAttribute('data-column') + '=' + i.value));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(rows).unwrap()
}

async fn bills_are_reviewed_beside_their_documents(db: &TestDb) {
    let Some(driver) = chromedriver().await else { return };
    set_secret_env();
    let books = XeroSandbox::new(60, 5);
    // Xero's 60 calls a minute would make this test wait on the minute window; the connector paces
    // itself by what the sandbox reports either way.
    books.set_limits(Limits { per_minute: 10_000, ..Limits::default() });
    let books_addr = books.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let provider_addr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), db, &format!("http://{books_addr}"), &format!("http://{provider_addr}/v1"));
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    let run = start_named(&engine, "bills").await;
    let run = work_named(&engine, "bills", run.id, Duration::from_secs(120), true).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let waiting = db.store.items(run.id, Some(ItemState::Proposed), 1000).await.unwrap();
    assert_eq!(waiting.len(), books.candidates().len(), "every draft bill with a document waits for review");

    // A bill read from a text-layer PDF, with several lines and a matched supplier; a duplicate; a scan.
    let text_bill = waiting
        .iter()
        .find(|i| {
            let bill = books.bill(&i.external_id).unwrap();
            let truth = books.printed(&i.external_id).unwrap();
            !truth.scanned
                && bill.duplicate_of.is_none()
                && books.truth(&i.external_id).unwrap()["line_items"].as_array().unwrap().len() >= 2
                && i.proposal.as_ref().unwrap().findings.look_up.as_ref().is_some_and(|l| l.supplier.is_some())
        })
        .expect("a clean text-layer bill with a known supplier");
    let held = waiting.iter().find(|i| i.proposal.as_ref().unwrap().held.is_some()).expect("a duplicate is held");
    let scan = waiting.iter().find(|i| books.printed(&i.external_id).unwrap().scanned).expect("a scanned bill");

    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let site = Site { access: Access::new(Some(&auth)), ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let client = browser(&driver).await;
    sign_in(&client, &base, "Bea Bookkeeper", PASSWORD).await;

    // The document beside the proposal: the very PDF attached in Xero, served as a PDF.
    client.goto(&format!("{base}/items/{}", text_bill.id)).await.unwrap();
    wait_for(&client, "#documents iframe.pdf").await;
    let src = client.find(Locator::Css("#documents iframe.pdf")).await.unwrap().attr("src").await.unwrap().unwrap();
    let served = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0]).then(async r => done({ type: r.headers.get('content-type'), \
               nosniff: r.headers.get('x-content-type-options'), bytes: Array.from(new Uint8Array(await r.arrayBuffer())) }));",
            vec![Value::from(src.clone())],
        )
        .await
        .unwrap();
    assert_eq!(served["type"], "application/pdf");
    assert_eq!(served["nosniff"], "nosniff");
    let bytes: Vec<u8> = serde_json::from_value(served["bytes"].clone()).unwrap();
    let attached = books.bill(&text_bill.external_id).unwrap().attachment.unwrap().bytes;
    assert_eq!(bytes, attached, "the page shows the bill's own document");
    assert!(text_of(&client, "#documents figcaption").await.contains("page"));

    // Checks and the matched supplier are on the page.
    let proposal = text_bill.proposal.as_ref().unwrap();
    let supplier = proposal.findings.look_up.as_ref().unwrap().supplier.as_ref().unwrap();
    let matched = text_of(&client, "#supplier-match").await;
    assert!(matched.contains(&supplier.name) && matched.contains("existing supplier"), "{matched}");
    let rules = client
        .execute("return Array.from(document.querySelectorAll('#checks tr')).map(tr => tr.className);", vec![])
        .await
        .unwrap();
    assert_eq!(rules.as_array().unwrap().len(), proposal.findings.checks.len(), "one row per check");

    // Line items as a table: one row per line read, and an edit of one cell saves the whole list.
    let lines = proposal.fields["line_items"].proposed.as_array().unwrap().clone();
    let rows = editor_rows(&client).await;
    assert_eq!(rows.len(), lines.len());
    assert!(rows[0].contains(&format!("description={}", lines[0]["description"].as_str().unwrap())), "{rows:?}");
    client.find(Locator::Css("#field-line_items details.edit summary")).await.unwrap().click().await.unwrap();
    let cell = client
        .find(Locator::Css("#field-line_items tbody tr:first-child input[data-column=description]"))
        .await
        .unwrap();
    cell.clear().await.unwrap();
    cell.send_keys("Edited by the reviewer").await.unwrap();
    click_and_load(&client, "#field-line_items .edit-form button[type=submit]").await;
    let edited = db.store.item(text_bill.id).await.unwrap();
    let value = edited.proposal.as_ref().unwrap().fields["line_items"].value().clone();
    let mut expected = lines.clone();
    expected[0]["description"] = json!("Edited by the reviewer");
    assert!(same(&value, &Value::Array(expected)), "only the edited cell changed; numbers stay numbers: {value}");

    // Approving writes the reviewed bill onto the draft in Xero, which stays DRAFT.
    click_and_load(&client, "#approve-form button").await;
    let run = work_named(&engine, "bills", run.id, Duration::from_secs(60), false).await;
    let written = db.store.item(text_bill.id).await.unwrap();
    assert_eq!(written.state, ItemState::Written, "{:?} (run {:?})", written.last_error, run.status);
    let bill = books.bill(&text_bill.external_id).unwrap();
    assert_eq!(bill.status, "DRAFT");
    assert_eq!(bill.lines[0].description, "Edited by the reviewer");
    assert_eq!(bill.invoice_number, books.truth(&text_bill.external_id).unwrap()["invoice_number"].as_str().unwrap());

    // A duplicate: why it is never written, and no approve button.
    client.goto(&format!("{base}/items/{}", held.id)).await.unwrap();
    wait_for(&client, "#item-held").await;
    assert!(text_of(&client, "#item-held").await.contains("duplicate of bill"));
    assert!(client.find(Locator::Css("#approve-form")).await.is_err(), "a held bill cannot be approved");
    assert!(client.find(Locator::Css("#reject-form")).await.is_ok(), "it can be rejected");

    // A scan: shown, and said to have no text layer.
    client.goto(&format!("{base}/items/{}", scan.id)).await.unwrap();
    wait_for(&client, "#documents").await;
    assert!(text_of(&client, "#documents figcaption").await.contains("no text layer"));

    if let Ok(dir) = std::env::var("ENRICHD_SCREENSHOTS") {
        client.set_window_size(1400, 1000).await.unwrap();
        client.goto(&format!("{base}/items/{}", text_bill.id)).await.unwrap();
        wait_for(&client, "#documents").await;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/bill-item.png"), client.screenshot().await.unwrap()).unwrap();
    }
    client.close().await.unwrap();
    stop.cancel();
}

/// `enrichd demo invoices` as a person runs it: it prints where everything is, the bills whose checks
/// pass are written onto their drafts at once, and the rest wait in the review queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_invoices_writes_the_clean_bills_and_holds_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (printed, report) =
        common::process::demo_report(&["invoices", "--bills", "40"], dir.path(), Duration::from_secs(90)).await;
    assert!(printed.contains("Xero sandbox at http://127.0.0.1:"), "{printed}");
    assert!(printed.contains("review    http://127.0.0.1:"), "{printed}");
    let (written, waiting) = (report["written"].as_i64().unwrap_or(0), report["awaiting_review"].as_i64().unwrap_or(0));
    assert!(written > 0, "clean bills are written at once: {report}");
    assert!(waiting > 0, "bills with a failed check, a new supplier or a duplicate wait: {report}");
}
