//! The pipelines page from outside, over HTTP and in a real browser (headless Chromium), on SQLite
//! and Postgres: a WooCommerce catalogue pipeline scheduled every 15 minutes, its first run waiting
//! for review. The page lists the pipeline with its schedule in words, the next tick, the last run,
//! what waits for review and this month's spend; "Dry run" counts the sandbox shop's candidates
//! without asking the model or creating an item; "Run now" creates a run the way the scheduler does
//! and refuses a second while it is going. The server is open (loopback, no `[server.auth]`):
//! a visitor signs in with a name and acts as the top role.

mod common;

use std::time::Duration;

use common::TestDb;
use common::browser::{browser, chromedriver, click, click_and_load, text_of, wait_for};
use common::session::sign_in;
use common::woo::{Woo, catalogue_waiting_for_review, serve_ui};
use enrichd::server::Access;
use enrichd::store::{ItemState, Run, RunStatus};
use serde_json::Value;

const SCHEDULE: &str = r#"schedule = "*/15 * * * *""#;

/// The catalogue's first run waiting for review, and the UI over it (open, loopback).
async fn scheduled_shop(db: &TestDb) -> (Woo, Run, Vec<Value>, String, tokio_util::sync::CancellationToken) {
    let (w, run, catalogue) = catalogue_waiting_for_review(db, 30, 11, "all", SCHEDULE).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let (base, stop) = serve_ui(&w, Access::new(None)).await;
    (w, run, catalogue, base, stop)
}

/// Records of the catalogue a run would enrich: those without a description (the pipeline selects
/// `missing = ["description"]`).
fn without_description(catalogue: &[Value]) -> i64 {
    catalogue.iter().filter(|p| p["description"].as_str().is_none_or(|d| d.trim().is_empty())).count() as i64
}

fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The pipeline's card on the pipelines page.
fn card(page: &str) -> &str {
    let at = page.find("data-pipeline=\"catalogue\"").expect("the catalogue pipeline is listed");
    let end = page[at..].find("</article>").map_or(page.len(), |e| at + e);
    &page[at..end]
}

async fn the_page_lists_runs_and_dry_runs_over_http(db: &TestDb) {
    let (w, run, catalogue, base, stop) = scheduled_shop(db).await;
    let client = http();
    let olga = sign_in(&client, &base, "Olga", None).await;
    let proposals = db.store.counts(run.id).await.unwrap().awaiting_review();
    assert!(proposals > 0);

    // The landing page is the pipelines page.
    let r = olga.get(&client, &format!("{base}/")).await;
    assert_eq!(r.headers()["location"], "/pipelines");

    let before = chrono::Utc::now();
    let page = olga.get(&client, &format!("{base}/pipelines")).await.text().await.unwrap();
    let after = chrono::Utc::now();
    let shown = card(&page);
    // The expression beside the words (escaped as all text is: `/` is `&#x2f;`).
    assert!(shown.contains("every 15 minutes <code>*&#x2f;15 * * * *</code>"), "{shown}");
    // The next tick, in UTC, as the scheduler computes it (the page was rendered in between).
    let next: Vec<String> = [before, after]
        .iter()
        .map(|t| enrichd::scheduler::next_tick("*/15 * * * *", *t).unwrap().format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .collect();
    assert!(next.iter().any(|n| shown.contains(n.as_str())), "next run {next:?} in {shown}");
    assert!(shown.contains(&format!("href=\"/runs/{}\"", run.id)), "{shown}");
    assert!(shown.contains(">waiting for review</span>"), "the last run's state in plain words: {shown}");
    assert!(shown.contains(&format!("{proposals} for review</a>")), "{shown}");
    let spent = format!("${:.4}", run.cost_micros as f64 / 1e6);
    assert!(run.cost_micros > 0 && shown.contains(&format!("{spent} <span")), "spend {spent} in {shown}");
    assert!(shown.contains("woocommerce") && shown.contains("gpt-4o-mini"), "{shown}");
    assert!(shown.contains("not counted yet"), "no dry run yet: {shown}");

    // Dry run: the shop's candidates counted, nothing stored, the model not asked.
    let items_before = db.store.items(run.id, None, 1000).await.unwrap().len();
    let asked_before = w.provider.stats().requests;
    let r = olga.post(&client, &format!("{base}/pipelines/catalogue/dry-run")).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let expected = without_description(&catalogue);
    assert!(expected > 0);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!(counts.total() - counts.get(ItemState::Skipped), expected, "the first run found as many");
    assert!(page.contains(&format!("id=\"dry-run-count\">{expected}</strong>")), "{page}");
    assert!(page.contains(&format!("of {} records read miss a field", catalogue.len())), "{page}");
    assert!(page.contains("Estimated cost: about $"), "priced by the first run's proposals: {page}");
    assert_eq!(db.store.items(run.id, None, 1000).await.unwrap().len(), items_before, "no item was created");
    assert_eq!(db.store.runs(&[], 10).await.unwrap().len(), 1, "no run was created");
    assert_eq!(w.provider.stats().requests, asked_before, "the model was not asked");
    // The count stays on the page.
    let page = olga.get(&client, &format!("{base}/pipelines")).await.text().await.unwrap();
    assert!(card(&page).contains(&format!("{expected} of {} records at the last dry run", catalogue.len())), "{page}");

    // Run now: a manual run, as the scheduler makes one, that the workers then take.
    let r = olga.post(&client, &format!("{base}/pipelines/catalogue/run")).await;
    assert_eq!(r.status(), 303);
    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    let started = &runs[0];
    assert_eq!(r.headers()["location"], format!("/runs/{}", started.id).as_str());
    assert_eq!((started.trigger_kind.as_str(), started.status), ("manual", RunStatus::Discovering));
    let events = db.store.run_events(started.id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "run_requested" && e.actor == "reviewer:Olga"), "{events:?}");
    // A second one while it is going is refused, in words.
    let r = olga.post(&client, &format!("{base}/pipelines/catalogue/run")).await;
    assert_eq!(r.status(), 409);
    let refusal = r.text().await.unwrap();
    assert!(refusal.contains(&format!("already has run #{} going", started.id)), "{refusal}");
    assert_eq!(db.store.runs(&[], 10).await.unwrap().len(), 2);
    let r = olga.post(&client, &format!("{base}/pipelines/nosuch/run")).await;
    assert_eq!(r.status(), 404);
    stop.cancel();
}

async fn dry_run_and_run_now_in_the_browser(db: &TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let (w, run, catalogue, base, stop) = scheduled_shop(db).await;
    let client = browser(&driver).await;
    // Signing in from the landing page lands on the pipelines page.
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, "form.login").await;
    client.find(fantoccini::Locator::Css("input[name=name]")).await.unwrap().send_keys("Olga").await.unwrap();
    click(&client, "form.login button").await;
    wait_for(&client, "article[data-pipeline=catalogue]").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/pipelines");
    let card = "article[data-pipeline=catalogue]";
    assert!(text_of(&client, &format!("{card} .schedule")).await.starts_with("every 15 minutes"));
    assert!(text_of(&client, &format!("{card} .last-run")).await.contains(&format!("#{} waiting for review", run.id)));
    let spend = text_of(&client, &format!("{card} .spend")).await;
    assert!(spend.starts_with(&format!("${:.4}", run.cost_micros as f64 / 1e6)), "{spend}");

    let asked = w.provider.stats().requests;
    click_and_load(&client, &format!("{card} .dry-run-button")).await;
    wait_for(&client, "#dry-run-count").await;
    assert_eq!(text_of(&client, "#dry-run-count").await, without_description(&catalogue).to_string());
    let listed = client
        .execute("return document.querySelectorAll('table.dry-run-records tbody tr').length;", vec![])
        .await
        .unwrap();
    assert_eq!(listed.as_i64(), Some(without_description(&catalogue).min(10)));
    assert_eq!(w.provider.stats().requests, asked, "the model was not asked");
    assert_eq!(db.store.runs(&[], 10).await.unwrap().len(), 1, "nothing was started");

    click_and_load(&client, &format!("{card} .run-now")).await;
    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 2, "Run now made a run");
    assert_eq!(client.current_url().await.unwrap().path(), format!("/runs/{}", runs[0].id));
    wait_for(&client, "#run-state").await;
    assert_eq!(text_of(&client, "#run-state").await, "finding records");
    // Back on the pipelines page the button waits for that run.
    client.goto(&format!("{base}/pipelines")).await.unwrap();
    wait_for(&client, card).await;
    let disabled =
        client.execute(&format!("return document.querySelector('{card} .run-now').disabled;"), vec![]).await.unwrap();
    assert_eq!(disabled, Value::Bool(true));
    client.close().await.unwrap();
    stop.cancel();
}

on_both_backends! {
    page_over_http => the_page_lists_runs_and_dry_runs_over_http;
    page_in_the_browser => dry_run_and_run_now_in_the_browser;
}
