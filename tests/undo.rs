//! Undo and the run report from outside, over the WooCommerce sandbox (HTTPS, behaving as the real
//! store does: lists replaced wholesale, a null meta value deleting the key, an empty image `alt`
//! ignored) on SQLite and Postgres:
//! - `enrichd revert --run` puts back exactly what our write replaced (the tags it added are gone,
//!   the SEO meta it added is absent again), reads it back, and says which item it could only
//!   partly revert (alt text WooCommerce keys cannot clear) and why, exiting 1;
//! - the HTTP API and the revert page say the same (`partially_reverted`);
//! - the run report keeps counting written items after they are reverted, counts the reverts, and
//!   its time per item does not change because of an undo;
//! - a sample run's reason follows the review of its sample;
//! - `status --watch` ends on the report read after the last writes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::harness::start_run;
use common::process::{self, Enrichd, Env};
use common::web::{csrf_of, set_cookie};
use common::woo::{Woo, woo, woo_env, work_until_idle};
use enrichd::config::{Config, Secret, ServerAuthConfig};
use enrichd::server::{Access, Site, serve};
use enrichd::store::{Item, ItemState, RunStatus};
use enrichd_woocommerce::sandbox::{Faults, WooSandbox};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn products() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/undo/products.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What a person sees of a product: tag names, meta keys and values, image alt texts, description.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    tags: BTreeSet<String>,
    meta: BTreeMap<String, Value>,
    alts: Vec<String>,
    description: String,
}

fn seen(shop: &WooSandbox, id: u64) -> Seen {
    let p = shop.product(id).unwrap();
    let list = |key: &str| p[key].as_array().cloned().unwrap_or_default();
    Seen {
        tags: list("tags").iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect(),
        meta: list("meta_data").iter().map(|m| (m["key"].as_str().unwrap().to_owned(), m["value"].clone())).collect(),
        alts: list("images").iter().map(|i| i["alt"].as_str().unwrap().to_owned()).collect(),
        description: p["description"].as_str().unwrap_or_default().trim().to_owned(),
    }
}

/// The fixture catalogue written through pipeline `catalogue` (no review): the product with an
/// image (alt text, tags, SEO title and description filled) and the one without (tags and SEO
/// description filled); the third has everything and is skipped.
async fn written_shop(db: &common::TestDb) -> (Woo, i64, BTreeMap<u64, Seen>) {
    let w = woo(db, WooSandbox::with_products(products()), "none", 3).await;
    let before: BTreeMap<u64, Seen> = w.shop.product_ids().into_iter().map(|id| (id, seen(&w.shop, id))).collect();
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let written = db.store.items(run.id, Some(ItemState::Written), 10).await.unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    let (alt, plain) = the_two(&written);
    let fields = |i: &Item| i.proposal.as_ref().unwrap().fields.keys().cloned().collect::<BTreeSet<_>>();
    assert!(
        fields(alt).is_superset(&["images[].alt", "tags", "seo_title", "seo_description"].map(String::from).into())
    );
    assert!(fields(plain).is_superset(&["tags", "seo_description"].map(String::from).into()));
    // Our write added tags, alt text and the SEO meta.
    let now = seen(&w.shop, id_of(alt));
    assert!(!now.tags.is_empty() && now.alts.iter().all(|a| !a.is_empty()), "{now:?}");
    assert!(now.meta.contains_key("_yoast_wpseo_title") && now.meta.contains_key("_yoast_wpseo_metadesc"));
    (w, run.id, before)
}

/// The written item whose product has an image, and the one whose product has none.
fn the_two(written: &[Item]) -> (&Item, &Item) {
    let has_alt = |i: &&Item| i.proposal.as_ref().unwrap().fields.contains_key("images[].alt");
    (written.iter().find(has_alt).unwrap(), written.iter().find(|i| !has_alt(i)).unwrap())
}

fn id_of(item: &Item) -> u64 {
    item.external_id.parse().unwrap()
}

fn env() -> Env<'static> {
    static VARS: std::sync::LazyLock<[(&str, &str); 3]> = std::sync::LazyLock::new(woo_env);
    Env { vars: &*VARS, ..Env::default() }
}

async fn cli(w: &Woo, args: &[&str]) -> std::process::Output {
    process::output_async(&w.config, args, &env()).await
}

async fn report_json(w: &Woo, run_id: i64) -> Value {
    let out = cli(w, &["status", &run_id.to_string(), "--json"]).await;
    assert!(out.status.success(), "{}", process::text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `enrichd revert --run`: exactly the old tags and meta are back, alt text our write added stays
/// (WooCommerce ignores an empty alt) and that item is `partially_reverted` with why; the command
/// exits 1 and says so. The report still counts both as written, counts the reverts, and keeps its
/// time per item.
async fn the_cli_reverts_exactly_and_says_what_it_could_not(db: &common::TestDb) {
    let (w, run_id, before) = written_shop(db).await;
    let written = db.store.items(run_id, Some(ItemState::Written), 10).await.unwrap();
    let (alt, plain) = the_two(&written);
    let report_before = report_json(&w, run_id).await;
    assert_eq!(report_before["written"], 2, "{report_before}");

    let out = cli(&w, &["revert", "--run", &run_id.to_string(), "--as", "dee"]).await;
    assert!(out.status.success() && process::text(&out).contains("2 written item(s)"), "{}", process::text(&out));
    let out = cli(&w, &["revert", "--run", &run_id.to_string(), "--confirm", "2", "--as", "dee"]).await;
    let text = process::text(&out);
    assert_eq!(out.status.code(), Some(1), "not everything could be reverted: {text}");
    assert!(text.contains(&format!("item {} (record {}): reverted", plain.id, plain.external_id)), "{text}");
    assert!(text.contains(&format!("item {} (record {}): partially reverted", alt.id, alt.external_id)), "{text}");
    assert!(text.contains("1 of 2 item(s) reverted · 1 partially reverted"), "{text}");
    assert!(text.contains("wp/v2/media") && text.contains("application password"), "says why: {text}");

    // Exactly what our write replaced is back: no tag of ours, no SEO meta of ours, the old description.
    for item in [alt, plain] {
        let (was, now) = (&before[&id_of(item)], seen(&w.shop, id_of(item)));
        assert_eq!(now.tags, was.tags, "product {}: the tags our write added are gone", item.external_id);
        assert_eq!(now.meta, was.meta, "product {}: the SEO meta our write added is absent again", item.external_id);
        assert_eq!(now.description, was.description, "product {}", item.external_id);
    }
    // What the store could not take back is still there, and said on the item.
    assert!(seen(&w.shop, id_of(alt)).alts.iter().all(|a| !a.is_empty()), "WooCommerce ignores an empty alt");
    let alt_now = db.store.item(alt.id).await.unwrap();
    assert_eq!(alt_now.state, ItemState::PartiallyReverted);
    let left = alt_now.last_error.unwrap_or_default();
    assert!(left.contains("images[].alt") && left.contains("wp/v2/media"), "{left}");
    assert_eq!(db.store.item(plain.id).await.unwrap().state, ItemState::Reverted);
    let event = db.store.item_events(alt.id).await.unwrap().pop().unwrap();
    assert_eq!((event.to_state.as_deref(), event.actor.as_str()), (Some("partially_reverted"), "dee"));
    assert_eq!(event.detail.as_ref().unwrap()["left"][0]["field"], "images[].alt", "{event:?}");

    // The report: still two written, one reverted, one partially; the same time per item.
    let report = report_json(&w, run_id).await;
    assert_eq!(report["written"], 2, "written means was written: {report}");
    assert_eq!((report["reverted"].as_i64(), report["partially_reverted"].as_i64()), (Some(1), Some(1)));
    assert_eq!(report["revert_conflicts"], 0);
    assert_eq!(report["item_ms_avg"], report_before["item_ms_avg"], "an undo does not change how long items took");
    assert_eq!(report["item_ms_p95"], report_before["item_ms_p95"]);
    assert!(report["item_ms_p95"].as_f64().unwrap() >= report["item_ms_avg"].as_f64().unwrap(), "{report}");
    let out = cli(&w, &["status", &run_id.to_string()]).await;
    let text = process::text(&out);
    assert!(text.contains("written 2"), "{text}");
    assert!(text.contains("reverted 1 · partially reverted 1 · revert conflicts 0 (of 2 written)"), "{text}");
}

/// The HTTP API: one item's revert answers 207 with what is left; the run's revert counts it as
/// `partially_reverted`; the report counts it.
async fn the_api_says_partially_reverted(db: &common::TestDb) {
    let (w, run_id, before) = written_shop(db).await;
    let written = db.store.items(run_id, Some(ItemState::Written), 10).await.unwrap();
    let (alt, plain) = the_two(&written);
    let stop = CancellationToken::new();
    let site = Site { access: Access::new(None), html_fields: Default::default() };
    let (addr, _) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let http = enrichd_connector::http::client(Duration::from_secs(30));
    let post = |path: String, body: Value| {
        let request = http.post(format!("http://{addr}{path}")).json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = post(format!("/api/items/{}/revert", alt.id), json!({"reviewer": "dee"})).await;
    assert_eq!(status, 207, "{body}");
    let result = &body["result"];
    assert_eq!(result["outcome"], "partially_reverted", "{body}");
    assert_eq!(result["left"][0]["field"], "images[].alt", "{body}");
    assert!(result["left"][0]["reason"].as_str().unwrap().contains("wp/v2/media"), "{body}");
    assert_eq!(seen(&w.shop, id_of(alt)).tags, before[&id_of(alt)].tags);

    let (status, body) = post(format!("/api/runs/{run_id}/revert"), json!({"reviewer": "dee"})).await;
    assert_eq!((status, body["matching"].as_i64()), (200, Some(1)), "{body}");
    let (status, body) = post(format!("/api/runs/{run_id}/revert"), json!({"reviewer": "dee", "confirm": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["reverted"].as_i64(), body["partially_reverted"].as_i64(), body["conflicts"].as_i64()),
        (Some(1), Some(0), Some(0)),
        "{body}"
    );
    assert_eq!(seen(&w.shop, id_of(plain)), before[&id_of(plain)], "the plain product is as it was");

    let r = http.get(format!("http://{addr}/api/runs/{run_id}/report")).send().await.unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (report["written"].as_i64(), report["reverted"].as_i64(), report["partially_reverted"].as_i64()),
        (Some(2), Some(1), Some(1)),
        "{report}"
    );
    stop.cancel();
}

const PASSWORD: &str = "correct horse battery staple";

/// The revert page, after "Revert this write": the item counts as partially reverted, its row says
/// what is left and why, and the item page says it too.
async fn the_revert_page_says_partially_reverted(db: &common::TestDb) {
    let (w, run_id, _) = written_shop(db).await;
    let written = db.store.items(run_id, Some(ItemState::Written), 10).await.unwrap();
    let (alt, _) = the_two(&written);
    let config = Config::load(&w.config).unwrap();
    let auth = ServerAuthConfig { password: Some(Secret(PASSWORD.to_owned().into())), token: None, session_hours: 1 };
    let site = Site { access: Access::new(Some(&auth)), ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let http = enrichd_connector::http::builder(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = set_cookie(&r).unwrap();
    let csrf = csrf_of(&r.text().await.unwrap());
    let form = [("csrf", csrf.as_str()), ("name", "Dee"), ("password", PASSWORD)];
    let r = http.post(format!("{base}/login")).header("cookie", &anonymous).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r).unwrap();
    let page = http.get(format!("{base}/items/{}", alt.id)).header("cookie", &session).send().await.unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());

    let r = http
        .post(format!("{base}/items/{}/revert", alt.id))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("0 reverted · 0 conflicts (edited since our write, left alone) · 1 partially reverted"),
        "{html}"
    );
    assert!(html.contains("id=\"revert-partial\""), "{html}");
    assert!(html.contains("partially reverted: part of our write is still there"), "{html}");
    assert!(html.contains("media endpoint") && html.contains("application password"), "the row says why: {html}");
    let page = http.get(format!("{base}/items/{}", alt.id)).header("cookie", &session).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("partially_reverted") && html.contains("Partially reverted: "), "{html}");
    stop.cancel();
}

/// A sample run's reason says how much of the sample is reviewed, after each review.
async fn the_sample_reason_follows_the_review(db: &common::TestDb) {
    let catalogue = enrichd_woocommerce::sandbox::generate_catalogue(30, 5, 0.6);
    let w = woo(db, WooSandbox::with_products(catalogue), r#"policy = "sample_first", sample = 3"#, 3).await;
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    assert!(run.status_reason.as_deref().unwrap().contains("0 of 3 sample proposals reviewed"), "{run:?}");
    let sample = db.store.items(run.id, Some(ItemState::Proposed), 10).await.unwrap();
    assert_eq!(sample.len(), 3);
    for (n, item) in sample.iter().take(2).enumerate() {
        let out = cli(&w, &["review", "approve", &item.id.to_string(), "--as", "dee"]).await;
        assert!(out.status.success(), "{}", process::text(&out));
        let out = cli(&w, &["status", &run.id.to_string()]).await;
        let text = process::text(&out);
        assert!(text.contains(&format!("{} of 3 sample proposals reviewed", n + 1)), "{text}");
    }
    let out = cli(&w, &["review", "reject", &sample[2].id.to_string(), "--as", "dee"]).await;
    assert!(out.status.success(), "{}", process::text(&out));
    let report = report_json(&w, run.id).await;
    let reason = report["run"]["status_reason"].as_str().unwrap();
    assert!(reason.contains("3 of 3 sample proposals reviewed"), "{report}");
}

/// `status --watch` on a run awaiting review whose approved items a daemon is writing (slowly:
/// the store answers after a delay) follows the writes and ends on the report read after them.
async fn watch_ends_on_the_report_after_the_last_writes(db: &common::TestDb) {
    // The fixture's products carry Yoast meta, so the SEO plugin is detected.
    let catalogue = products().into_iter().chain(enrichd_woocommerce::sandbox::generate_catalogue(12, 9, 0.5));
    let w = woo(db, WooSandbox::with_products(catalogue), "all", 3).await;
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let proposed = db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap();
    assert!(proposed.len() >= 3, "{proposed:?}");

    let dir = tempfile::tempdir().unwrap();
    let daemon = Enrichd::daemon_with(&w.config, dir.path().join("daemon.log"), &env());
    w.shop.set_faults(Faults { latency: Duration::from_millis(700), ..Default::default() });
    let count = proposed.len().to_string();
    let out = cli(&w, &["review", "approve", "--run", &run.id.to_string(), "--confirm", &count, "--as", "dee"]).await;
    assert!(out.status.success(), "{}", process::text(&out));
    let watch = cli(&w, &["status", &run.id.to_string(), "--watch"]).await;
    let text = process::text(&watch);
    assert!(watch.status.success(), "{text}");
    let dead = db.store.items(run.id, Some(ItemState::Dead), 100).await.unwrap();
    assert!(dead.is_empty(), "{:?}", dead.iter().map(|i| i.last_error.clone()).collect::<Vec<_>>());
    let written = db.store.counts(run.id).await.unwrap().get(ItemState::Written);
    assert_eq!(written as usize, proposed.len(), "the daemon wrote every approved item: {text}\n{}", daemon.output());
    let last_lines: Vec<&str> = text.lines().rev().take(8).collect();
    assert!(
        last_lines.iter().any(|l| l.contains(&format!("run {} finished", run.id))),
        "the report is of the finished run: {text}"
    );
    assert!(
        last_lines.iter().any(|l| l.contains(&format!("written {written} ·"))),
        "the report counts the last writes: {text}"
    );
    assert!(
        last_lines.iter().any(|l| l.contains(&format!("written values verified {written}, flagged 0"))),
        "and their read-back: {text}"
    );
    drop(daemon);
}

on_both_backends! {
    cli_revert => the_cli_reverts_exactly_and_says_what_it_could_not;
    api_revert => the_api_says_partially_reverted;
    revert_page => the_revert_page_says_partially_reverted;
    sample_reason => the_sample_reason_follows_the_review;
    watch_after_writes => watch_ends_on_the_report_after_the_last_writes;
}
