//! Reviewers' edits and the sample gate's release from outside, on SQLite and Postgres.
//!
//! Edits: every path — `enrichd review edit`, `POST /api/items/{id}/edit` and the item page's form —
//! holds a reviewer's value to what the task holds a model's answer to: HTML fields cleaned (no
//! `<script>`, no `javascript:` link is stored), the value validated against the task's schema for
//! that field (a string for `tags` is refused at edit time, with the expected type, and changes
//! nothing), per-element fields limited to the blank elements, and the task's check warnings
//! recomputed so the queue's warnings filter stays true. A task property name maps to its field.
//!
//! Release: a sample gate opens only when the whole sample is reviewed, or with an explicit override
//! and its reason (CLI `--force --reason`, API `force` + `reason`, the UI's "release anyway" with a
//! second confirmation), which the audit trail and the run page keep.
//!
//! And `enrichd review show` names the record and prints its values whole.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::harness::{Harness, harness, start_run, work};
use common::process::{self, Env, text};
use common::web::csrf_of;
use common::woo::{woo, woo_env, work_until_idle};
use common::{ConfigOptions, TestDb};
use enrichd::config::Config;
use enrichd::server::{Access, Site, serve};
use enrichd::store::{Item, ItemState, ReviewFilter, ReviewPhase, RunStatus};
use enrichd_woocommerce::sandbox::WooSandbox;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A description a reviewer pastes from somewhere hostile: a script and a `javascript:` link.
const HOSTILE: &str = "<p onclick=\"steal()\">Zinc plated hex bolt with an M8 thread, sold in packs of one hundred for trade use.</p><script>alert(1)</script><a href=\"javascript:alert(2)\">more</a>";
/// [`HOSTILE`] as the task's HTML cleaning leaves it.
const CLEANED: &str = "<p>Zinc plated hex bolt with an M8 thread, sold in packs of one hundred for trade use.</p><a rel=\"noopener noreferrer\">more</a>";

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/ui/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn enrichd(config: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    process::output_async(config, args, &Env { vars, ..Env::default() }).await
}

fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The session cookie a response sets (`enrichd_session=…`).
fn set_cookie(response: &reqwest::Response) -> String {
    common::web::set_cookie(response).expect("a session cookie")
}

/// Signs `name` in on an open (loopback, no `[server.auth]`) server; returns the session cookie and
/// its CSRF token.
async fn sign_in(client: &reqwest::Client, base: &str, name: &str) -> (String, String) {
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = set_cookie(&r);
    let csrf = csrf_of(&r.text().await.unwrap());
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&[("csrf", csrf.as_str()), ("name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r);
    let page = client.get(format!("{base}/runs")).header("cookie", &session).send().await.unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    (session, csrf)
}

async fn get_page(client: &reqwest::Client, session: &str, url: &str) -> String {
    let r = client.get(url).header("cookie", session).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

/// The value a field of `item`'s proposal will write, and whether a reviewer edited it.
fn field(item: &Item, name: &str) -> (Value, bool) {
    let change = &item.proposal.as_ref().unwrap().fields[name];
    (change.value().clone(), change.edited.is_some())
}

fn warnings(item: &Item) -> Vec<String> {
    item.proposal.as_ref().unwrap().warnings.clone()
}

/// Whether the queue's `warnings` filter finds `item` among the proposals with warnings.
async fn listed_with_warnings(db: &TestDb, item: i64) -> bool {
    let filter = ReviewFilter { warnings: Some(true), ..Default::default() };
    let with = db.store.review_ids(&filter).await.unwrap().contains(&item);
    let filter = ReviewFilter { warnings: Some(false), ..Default::default() };
    let without = db.store.review_ids(&filter).await.unwrap().contains(&item);
    assert_ne!(with, without, "item {item} is listed under exactly one of the warnings filters");
    with
}

/// The UI fixture catalogue (the second product with two images, one already described) through
/// the shipped product copy task with review policy `all`, served open on loopback.
async fn reviewed_woo(db: &TestDb) -> (common::woo::Woo, Vec<Item>, String, CancellationToken) {
    let mut products = fixture("products.json");
    products[1]["images"] = json!([
        {"src": "https://images.example.com/ui-plain-2-front.jpg", "alt": ""},
        {"src": "https://images.example.com/ui-plain-2-box.jpg", "alt": "Box of wood screws, written by hand"},
    ]);
    let w = woo(db, WooSandbox::with_products(products), "all", 3).await;
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let items = db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let config = Config::load(&w.config).unwrap();
    let site = Site { access: Access::new(None), ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    (w, items, format!("http://{addr}"), stop)
}

async fn edits_are_cleaned_validated_and_rechecked_on_every_path(db: &TestDb) {
    let (w, items, base, stop) = reviewed_woo(db).await;
    let cfg = w.config.as_path();
    let vars = woo_env();
    let (a, b) = (items[0].id, items[1].id);
    let with_images = if items[0].proposal.as_ref().unwrap().fields.contains_key("images[].alt") { a } else { b };
    for item in &items {
        assert!(
            warnings(item).iter().any(|w| w.starts_with("tags: 1 items, at least 3")),
            "the model's one tag is flagged: {:?}",
            warnings(item)
        );
    }

    // The CLI: HTML cleaned; a string for `tags` refused with the expected type (exit 2) and nothing
    // changed; a good list clears the check's warning.
    let id = a.to_string();
    let out = enrichd(cfg, &["review", "edit", &id, "description", HOSTILE, "--as", "eve"], &vars).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let item = db.store.item(a).await.unwrap();
    assert_eq!(field(&item, "description"), (json!(CLEANED), true));
    let history = db.store.item_events(a).await.unwrap();
    assert_eq!(
        history.last().unwrap().detail.as_ref().unwrap()["value"],
        CLEANED,
        "the audit trail holds what is stored"
    );
    let out = enrichd(cfg, &["review", "edit", &id, "tags", "hex bolt", "--as", "eve"], &vars).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("item {a}")) && said.contains("tags") && said.contains("\"array\""), "{said}");
    assert_eq!(db.store.item(a).await.unwrap(), item, "a refused edit changes nothing");
    let out = enrichd(cfg, &["review", "edit", &id, "tags", "--json-value", "[\"x\"]", "--as", "eve"], &vars).await;
    assert_eq!(out.status.code(), Some(2), "a tag shorter than the schema's minLength: {}", text(&out));
    let tags = r#"["hex bolt", "zinc plated", "m8"]"#;
    let out = enrichd(cfg, &["review", "edit", &id, "tags", "--json-value", tags, "--as", "eve"], &vars).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let item = db.store.item(a).await.unwrap();
    assert_eq!(field(&item, "tags"), (json!(["hex bolt", "zinc plated", "m8"]), true));
    assert!(!warnings(&item).iter().any(|w| w.starts_with("tags:")), "{:?}", warnings(&item));
    assert_eq!(listed_with_warnings(db, a).await, !warnings(&item).is_empty());

    // The JSON API: the same cleaning and the same refusal, as a 422 with the message.
    let client = http();
    let edit = format!("{base}/api/items/{b}/edit");
    let (status, body) =
        post(&client, &edit, json!({"reviewer": "ann", "field": "description", "value": HOSTILE})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["item"]["proposal"]["fields"]["description"]["edited"], CLEANED);
    let before = db.store.item(b).await.unwrap();
    let (status, body) = post(&client, &edit, json!({"reviewer": "ann", "field": "tags", "value": "hex bolt"})).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("item {b}")) && message.contains("tags") && message.contains("\"array\""),
        "{message}"
    );
    assert_eq!(db.store.item(b).await.unwrap(), before, "a refused edit changes nothing");
    // An edit that misses a check raises its warning, and the queue's filter follows.
    let long_title = "Wood screw 4x40 zinc, pack of 100: for soft and hard wood, pre-drilled or not";
    let (status, body) =
        post(&client, &edit, json!({"reviewer": "ann", "field": "seo_title", "value": long_title})).await;
    let item = db.store.item(b).await.unwrap();
    if item.proposal.as_ref().unwrap().fields.contains_key("seo_title") {
        assert_eq!(status, 200, "{body}");
        let expected = format!("seo_title: {} characters, at most 60", long_title.chars().count());
        assert!(warnings(&item).contains(&expected), "{:?}", warnings(&item));
        assert!(listed_with_warnings(db, b).await);
    } else {
        assert_eq!(status, 404, "a field not in the proposal: {body}");
    }
    let (status, body) = post(&client, &edit, json!({"reviewer": "ann", "field": "price", "value": "1"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&format!("item {b}: field \"price\" (the proposal has ")),
        "{body}"
    );

    // A task property name maps to its record field (`image_alts` → `images[].alt`); only images
    // that were blank when pulled can get a value, not the one a person described.
    let images = &db.store.item(with_images).await.unwrap().proposal.unwrap().fields["images[].alt"];
    let blank = images.before.as_array().unwrap().iter().find(|e| e["alt"] == "").unwrap()["id"].clone();
    let described = images.before.as_array().unwrap().iter().find(|e| e["alt"] != "").unwrap()["id"].clone();
    let edit = format!("{base}/api/items/{with_images}/edit");
    let alts = json!([{"id": described, "alt": "Box of screws"}]);
    let (status, body) = post(&client, &edit, json!({"reviewer": "ann", "field": "image_alts", "value": alts})).await;
    assert_eq!(status, 422, "{body}");
    let alts = json!([{"id": blank, "alt": "Wood screws, front view"}]);
    let (status, body) = post(&client, &edit, json!({"reviewer": "ann", "field": "image_alts", "value": alts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&db.store.item(with_images).await.unwrap(), "images[].alt"), (alts, true));

    // The item page's form: the same function — cleaned, and a refusal shown on the page at the
    // field, with the value as typed, changing nothing.
    let (session, csrf) = sign_in(&client, &base, "Grace").await;
    let form = format!("{base}/items/{a}/edit");
    let hostile_short = "<p>Zinc plated hex bolt, M8.</p><script>alert(1)</script><a href=\"javascript:x()\">x</a>";
    let r = client
        .post(&form)
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("field", "short_description"), ("kind", "text"), ("value", hostile_short)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let item = db.store.item(a).await.unwrap();
    assert_eq!(
        field(&item, "short_description"),
        (json!("<p>Zinc plated hex bolt, M8.</p><a rel=\"noopener noreferrer\">x</a>"), true)
    );
    let r = client
        .post(&form)
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("field", "tags"), ("kind", "json"), ("value", "\"hex bolt\"")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("Not saved:") && page.contains("tags") && page.contains("&quot;array&quot;"), "{page}");
    assert!(page.contains("&quot;hex bolt&quot;</textarea>"), "the refused value stays in the editor: {page}");
    assert_eq!(db.store.item(a).await.unwrap(), item, "a refused edit changes nothing");

    // What was approved is what reaches the store: cleaned.
    for id in [a, b] {
        db.store.approve(id, "reviewer:eve").await.unwrap();
    }
    let run = work_until_idle(&w.engine, item.run_id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let product: u64 = item.external_id.parse().unwrap();
    let stored = w.shop.product(product).unwrap();
    assert!(!stored["description"].as_str().unwrap().contains("script"), "{stored}");
    assert!(!stored["description"].as_str().unwrap().contains("javascript:"), "{stored}");
    stop.cancel();
}

/// A `sample_first` run (12 products, a sample of 5) held after its sample, with the config's path.
async fn held_sample(db: &TestDb) -> (Harness, i64, PathBuf) {
    let options = ConfigOptions { policy: "sample_first", review_extra: ", sample = 5", ..Default::default() };
    let h = harness(db, 12, 1, options).await;
    let config = h._dir.path().join("enrichd.toml");
    let run = start_run(&h.engine).await;
    let held = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(held.review_phase, Some(ReviewPhase::SampleReview));
    (h, run.id, config)
}

/// [`held_sample`] with the daemon's HTTP server (open, loopback) in front of it: the harness (keep
/// it alive), the run, the server's address and what stops it.
async fn serve_held_sample(db: &TestDb) -> (Harness, i64, std::net::SocketAddr, CancellationToken) {
    let (h, run, config) = held_sample(db).await;
    let loaded = Config::load(&config).unwrap();
    let site = Site { access: Access::new(None), ..Site::from_config(&loaded) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(h.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    (h, run, addr, stop)
}

async fn sample_ids(db: &TestDb, run: i64) -> Vec<i64> {
    db.store.items(run, Some(ItemState::Proposed), 100).await.unwrap().iter().map(|i| i.id).collect()
}

/// The release as the audit trail has it: the run's `review_phase` → `released` event.
async fn release_event(db: &TestDb, run: i64) -> enrichd::store::EventRecord {
    let events = db.store.run_events(run).await.unwrap();
    events.into_iter().rfind(|e| e.kind == "review_phase" && e.to_state.as_deref() == Some("released")).unwrap()
}

async fn the_cli_releases_an_unreviewed_sample_only_with_force_and_a_reason(db: &TestDb) {
    let (_h, run, config) = held_sample(db).await;
    let cfg = config.as_path();
    let r = run.to_string();
    let sample = sample_ids(db, run).await;
    assert_eq!(sample.len(), 5);
    let out = enrichd(cfg, &["review", "approve", &sample[0].to_string(), "--as", "eve"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = enrichd(cfg, &["review", "release", "--run", &r, "--as", "eve"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("run {run}: 1 of 5 sample proposals are reviewed")), "{said}");
    assert!(said.contains("--force --reason"), "{said}");
    assert_eq!(db.store.run(run).await.unwrap().review_phase, Some(ReviewPhase::SampleReview), "nothing released");
    let out = enrichd(cfg, &["review", "release", "--run", &r, "--as", "eve", "--force"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "--force without a reason is a usage error: {}", text(&out));
    let out = enrichd(cfg, &["review", "release", "--run", &r, "--as", "eve", "--force", "--reason", " "], &[]).await;
    assert_eq!(out.status.code(), Some(2), "a blank reason: {}", text(&out));
    assert_eq!(db.store.run(run).await.unwrap().review_phase, Some(ReviewPhase::SampleReview), "nothing released");

    let reason = "the supplier data is the same for all of them; one is enough";
    let out =
        enrichd(cfg, &["review", "release", "--run", &r, "--as", "eve", "--force", "--reason", reason], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    let expected = format!("released by eve before the sample was reviewed (1 of 5): {reason}");
    assert!(said.contains(&expected), "{said}");
    let released = db.store.run(run).await.unwrap();
    assert_eq!((released.review_phase, released.released_by.as_deref()), (Some(ReviewPhase::Released), Some("eve")));
    let event = release_event(db, run).await;
    assert_eq!(event.actor, "eve");
    let kept = &event.detail.unwrap()["released_unreviewed"];
    assert_eq!(*kept, json!({"by": "eve", "reviewed": 1, "of": 5, "reason": reason}));
    let listing =
        String::from_utf8_lossy(&enrichd(cfg, &["review", "list", "--run", &r], &[]).await.stdout).into_owned();
    assert!(listing.contains(&expected), "the sample line keeps it: {listing}");
    let json: Value =
        serde_json::from_slice(&enrichd(cfg, &["review", "list", "--run", &r, "--json"], &[]).await.stdout).unwrap();
    assert_eq!(json["sample"]["released_unreviewed"]["reason"], reason);
}

async fn the_api_releases_an_unreviewed_sample_only_with_force_and_a_reason(db: &TestDb) {
    let (_h, run, addr, stop) = serve_held_sample(db).await;
    let client = http();
    let release = format!("http://{addr}/api/runs/{run}/release");

    let (status, body) = post(&client, &release, json!({"reviewer": "ann"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&format!("run {run}: 0 of 5 sample proposals are reviewed")),
        "{body}"
    );
    let (status, body) = post(&client, &release, json!({"reviewer": "ann", "force": true})).await;
    assert_eq!(status, 400, "force without a reason: {body}");
    assert!(body["error"].as_str().unwrap().contains("reason"), "{body}");
    assert_eq!(db.store.run(run).await.unwrap().review_phase, Some(ReviewPhase::SampleReview), "nothing released");

    for id in &sample_ids(db, run).await[..2] {
        db.store.approve(*id, "ann").await.unwrap();
    }
    let (status, body) = post(&client, &release, json!({"reviewer": "ann"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("2 of 5 sample proposals are reviewed"), "{body}");
    assert_eq!((body["reviewed"].as_i64(), body["of"].as_i64()), (Some(2), Some(5)), "{body}");
    let reason = "launch tomorrow; the rest is reviewed after the write";
    let (status, body) = post(&client, &release, json!({"reviewer": "ann", "force": true, "reason": reason})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["review_phase"], "released");
    let expected = json!({"by": "ann", "reviewed": 2, "of": 5, "reason": reason});
    assert_eq!(body["sample"]["released_unreviewed"], expected);
    assert_eq!(release_event(db, run).await.detail.unwrap()["released_unreviewed"], expected);
    stop.cancel();
}

async fn the_ui_offers_release_only_for_a_reviewed_sample_else_release_anyway_confirmed(db: &TestDb) {
    let (_h, run, addr, stop) = serve_held_sample(db).await;
    let base = format!("http://{addr}");
    let client = http();
    let (session, csrf) = sign_in(&client, &base, "Grace").await;
    let sample = sample_ids(db, run).await;
    db.store.approve(sample[0], "reviewer:Grace").await.unwrap();

    // 1 of 5 reviewed: no release button, a "release anyway" form with a reason.
    let run_page = get_page(&client, &session, &format!("{base}/runs/{run}")).await;
    assert!(!run_page.contains("id=\"release\""), "{run_page}");
    assert!(run_page.contains("id=\"release-anyway-form\"") && run_page.contains("name=\"reason\""), "{run_page}");
    assert!(run_page.contains("1 of 5 sample proposals are"), "{run_page}");

    // A plain release without a reason is refused; a reason asks a second time and changes nothing.
    let release = format!("{base}/runs/{run}/release");
    let r = client.post(&release).header("cookie", &session).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let reason = "a trusted supplier feed; the sample looked right";
    let r = client
        .post(&release)
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("reason", reason)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let confirm = r.text().await.unwrap();
    assert!(confirm.contains(&format!("Release run #{run} before its sample is reviewed?")), "{confirm}");
    assert!(confirm.contains("1 of 5 sample proposals are reviewed.") && confirm.contains(reason), "{confirm}");
    assert!(confirm.contains("name=\"confirm\" value=\"yes\""), "{confirm}");
    assert_eq!(
        db.store.run(run).await.unwrap().review_phase,
        Some(ReviewPhase::SampleReview),
        "asking changes nothing"
    );

    let r = client
        .post(&release)
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("reason", reason), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let released = db.store.run(run).await.unwrap();
    assert_eq!(released.review_phase, Some(ReviewPhase::Released));
    let run_page = get_page(&client, &session, &format!("{base}/runs/{run}")).await;
    let expected = format!("released by Grace before the sample was reviewed (1 of 5): {reason}");
    assert!(run_page.contains(&expected), "{run_page}");
    assert_eq!(release_event(db, run).await.detail.unwrap()["released_unreviewed"]["reason"], reason);
    stop.cancel();
}

async fn the_ui_release_button_appears_once_the_sample_is_reviewed(db: &TestDb) {
    let (_h, run, addr, stop) = serve_held_sample(db).await;
    let base = format!("http://{addr}");
    let client = http();
    let (session, csrf) = sign_in(&client, &base, "Grace").await;
    let run_page = client.get(format!("{base}/runs/{run}")).header("cookie", &session).send().await.unwrap();
    let run_page = run_page.text().await.unwrap();
    assert!(!run_page.contains("id=\"release\""), "0 of 5 reviewed: {run_page}");
    for id in sample_ids(db, run).await {
        db.store.approve(id, "reviewer:Grace").await.unwrap();
    }
    let run_page = client.get(format!("{base}/runs/{run}")).header("cookie", &session).send().await.unwrap();
    let run_page = run_page.text().await.unwrap();
    assert!(run_page.contains("id=\"release\"") && !run_page.contains("release-anyway"), "{run_page}");
    let r = client
        .post(format!("{base}/runs/{run}/release"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let stats = db.store.sample_stats(run).await.unwrap();
    assert_eq!(stats.phase, Some(ReviewPhase::Released));
    assert!(serde_json::to_value(&stats).unwrap()["released_unreviewed"].is_null(), "{stats:?}");
    assert!(release_event(db, run).await.detail.unwrap()["released_unreviewed"].is_null());
    stop.cancel();
}

async fn review_show_names_the_record_and_prints_values_whole(db: &TestDb) {
    let h = harness(db, 4, 1, ConfigOptions { policy: "all", ..Default::default() }).await;
    let config = h._dir.path().join("enrichd.toml");
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{:?}", run.status_reason);
    let item = db.store.items(run.id, Some(ItemState::Proposed), 1).await.unwrap().remove(0);
    let name = item.input_fields().unwrap()["name"].as_str().unwrap().to_owned();
    let long =
        format!("{} Every word of this description matters to the reviewer who reads it.", "Long text. ".repeat(20));
    let id = item.id.to_string();
    let out = enrichd(&config, &["review", "edit", &id, "description", &long, "--as", "eve"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = enrichd(&config, &["review", "show", &id], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("record name: {name}")), "{shown}");
    assert!(shown.contains(&format!("edited:   {long}")), "the whole value: {shown}");
    let proposed = field(&item, "description").0;
    assert!(shown.contains(&format!("proposed: {}", proposed.as_str().unwrap())), "{shown}");
}

on_both_backends! {
    edits_on_every_path => edits_are_cleaned_validated_and_rechecked_on_every_path;
    release_cli => the_cli_releases_an_unreviewed_sample_only_with_force_and_a_reason;
    release_api => the_api_releases_an_unreviewed_sample_only_with_force_and_a_reason;
    release_ui_anyway => the_ui_offers_release_only_for_a_reviewed_sample_else_release_anyway_confirmed;
    release_ui_reviewed => the_ui_release_button_appears_once_the_sample_is_reviewed;
    review_show => review_show_names_the_record_and_prints_values_whole;
}
