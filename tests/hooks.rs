//! Webhook intake, `POST /hooks/{pipeline}`: the real daemon (child process) over HTTP, the
//! WooCommerce sandbox over HTTPS and the simulated model, on SQLite and Postgres.
//!
//! - a product created in the store and announced by a correctly signed webhook is enriched and
//!   written within seconds, while the pipeline's schedule is a year away;
//! - a bad signature, a missing one, and a signed body without a product id queue nothing
//!   (401 / 400, no run, nothing asked of the model); WooCommerce's ping is answered and queues nothing;
//! - a product arriving by webhook and by a schedule ticking every second is enriched and written
//!   once (the model sandbox's and the store's counters);
//! - the route needs no session (and no loopback Host) while the API still wants the bearer token;
//! - Zendesk: the sandbox account delivers its own signed `ticket.created` webhook when a ticket is
//!   created, and the ticket is triaged and written within seconds; a stale timestamp, a bad or
//!   missing signature queue nothing; the other documented body shapes are taken.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::process::{Enrichd, Env};
use common::woo::{WooSandboxes, woo_env, woo_sandboxes, write_woo_config};
use common::zendesk::{Helpdesk, helpdesk, write_zendesk_config, zendesk_env};
use enrichd::sandbox::provider::Faults;
use enrichd::store::{ItemState, RunStatus};
use enrichd_woocommerce::sandbox::{WooSandbox, generate_catalogue};
use enrichd_zendesk::sandbox::{CATEGORY_FIELD_ID, Delivery, ZendeskSandbox, sign_webhook};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "wc-hook-secret-for-tests";
const API_TOKEN: &str = "hooks-test-api-token";

fn env_vars() -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = woo_env().to_vec();
    vars.extend(zendesk_env());
    vars.push(("HOOKS_TEST_SECRET", SECRET));
    vars.push(("HOOKS_TEST_API_TOKEN", API_TOKEN));
    vars
}

/// A store whose products all have their copy, so only what a test adds needs the model. Yoast's
/// meta on them tells the connector where SEO fields go.
fn complete_store() -> WooSandbox {
    WooSandbox::with_products(generate_catalogue(6, 3, 0.0).into_iter().map(|mut p| {
        p["meta_data"] = json!([{ "key": "_yoast_wpseo_focuskw", "value": "fixings" }]);
        p
    }))
}

/// The pipeline's webhook section, a schedule, and `[server.auth]` with an API token.
fn hook_config(schedule: &str) -> String {
    format!(
        "schedule = \"{schedule}\"\n\
         [pipelines.catalogue.webhook]\n\
         secret = \"${{HOOKS_TEST_SECRET}}\"\n\
         [server.auth]\n\
         token = \"${{HOOKS_TEST_API_TOKEN}}\"\n"
    )
}

struct Setup {
    sb: WooSandboxes,
    daemon: Enrichd,
    _dir: tempfile::TempDir,
}

async fn start(db: &common::TestDb, schedule: &str) -> Setup {
    start_polling(db, schedule, 20).await
}

/// [`start`] with the daemon's `poll_interval_ms`.
async fn start_polling(db: &common::TestDb, schedule: &str, poll_ms: u64) -> Setup {
    let sb = woo_sandboxes(complete_store()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_woo_config(dir.path(), &db.url, &sb, "none", 3, 10.0, &hook_config(schedule));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("poll_interval_ms = 20", &format!("poll_interval_ms = {poll_ms}"))).unwrap();
    let vars = env_vars();
    let env = Env { log_level: "info", vars: &vars, ..Env::default() };
    let daemon = Enrichd::daemon_with(&config, dir.path().join("daemon.log"), &env);
    Setup { sb, daemon, _dir: dir }
}

/// A new product without a description, as a shop manager would add it; returns its id.
fn add_bare_product(shop: &WooSandbox, name: &str) -> u64 {
    let mut body = generate_catalogue(1, 99, 1.0).remove(0);
    body["name"] = json!(name);
    body["sku"] = json!(format!("HOOK-{}", name.len()));
    body["description"] = json!("");
    shop.seed_product(&body).unwrap()
}

fn http() -> reqwest::Client {
    enrichd_connector::http::client(Duration::from_secs(10))
}

fn wc_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Delivers `body` to `/hooks/catalogue` as WooCommerce does, with `signature` (none: unsigned).
async fn deliver(base: &str, topic: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut request = http()
        .post(format!("{base}/hooks/catalogue"))
        // Webhooks come through whatever proxy reaches the daemon, not from this machine's name.
        .header("host", "hooks.shop.example")
        .header("content-type", "application/json")
        .header("x-wc-webhook-topic", topic)
        .header("x-wc-webhook-resource", "product")
        .header("x-wc-webhook-source", "https://shop.example/")
        .header("user-agent", "WooCommerce/9.9.5 Hookshot (WordPress/6.8.1)")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-wc-webhook-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn description(shop: &WooSandbox, id: u64) -> String {
    shop.product(id).and_then(|p| p["description"].as_str().map(str::to_owned)).unwrap_or_default()
}

async fn a_signed_webhook_is_enriched_within_seconds(db: &common::TestDb) {
    signed_webhook_written_within(db, 20, Duration::from_secs(5)).await
}

/// At the default `poll_interval_ms` (500): each of discovery, enrichment and write-back may wait
/// one poll.
async fn a_signed_webhook_at_the_default_poll_interval(db: &common::TestDb) {
    signed_webhook_written_within(db, 500, Duration::from_secs(5)).await
}

async fn signed_webhook_written_within(db: &common::TestDb, poll_ms: u64, limit: Duration) {
    // The schedule is a year away: only the webhook can bring the product in.
    let s = start_polling(db, "0 3 1 1 *", poll_ms).await;
    let shop = &s.sb.shop;
    let id = add_bare_product(shop, "Webhook Anchor Bolt M10");
    let payload = serde_json::to_vec(&shop.product(id).unwrap()).unwrap();
    let sent = Instant::now();
    let (status, answer) =
        deliver(&s.daemon.base(), "product.created", &payload, Some(&wc_signature(SECRET, &payload))).await;
    assert_eq!(status, 202, "{answer} {}", s.daemon.output());
    assert_eq!(answer["queued"], json!(id.to_string()), "{answer}");
    let written = loop {
        if !description(shop, id).is_empty() {
            break sent.elapsed();
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let runs = db.store.runs(&[], 10).await.unwrap();
            let items = db.store.items(runs[0].id, None, 10).await.unwrap();
            panic!("not written within 20 s: {runs:?}\n{items:?}\n{}", s.daemon.output());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "woocommerce ({:?}, poll_interval_ms = {poll_ms}): webhook received -> value written: {} ms",
        db.store.backend(),
        written.as_millis()
    );
    assert!(written < limit, "written after {written:?}");
    let writes: Vec<_> = shop.writes().into_iter().filter(|w| w.product_id == id).collect();
    assert_eq!(writes.len(), 1, "one write: {writes:?}");
    assert_eq!(s.sb.provider.stats().answered, 1, "one model call, for the new product only");
    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger_kind, "webhook");
    // The run finishes as any run does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.store.run(runs[0].id).await.unwrap().status != RunStatus::Done {
        assert!(Instant::now() < deadline, "{:?}", db.store.run(runs[0].id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn unsigned_or_badly_signed_webhooks_queue_nothing(db: &common::TestDb) {
    let s = start(db, "0 3 1 1 *").await;
    let shop = &s.sb.shop;
    let base = s.daemon.base();
    let id = add_bare_product(shop, "Unsigned Hinge");
    let payload = serde_json::to_vec(&shop.product(id).unwrap()).unwrap();

    let (status, answer) = deliver(&base, "product.created", &payload, None).await;
    assert_eq!(status, 401, "missing signature: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("missing x-wc-webhook-signature"), "{answer}");

    let (status, answer) =
        deliver(&base, "product.created", &payload, Some(&wc_signature("not-the-secret", &payload))).await;
    assert_eq!(status, 401, "wrong secret: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("pipelines.catalogue.webhook.secret"), "{answer}");

    // Signed for another body: the payload was tampered with on the way.
    let other = serde_json::to_vec(&json!({ "id": id + 1 })).unwrap();
    let (status, _) = deliver(&base, "product.updated", &payload, Some(&wc_signature(SECRET, &other))).await;
    assert_eq!(status, 401, "a signature of another body");

    let (status, _) = deliver(&base, "product.created", &payload, Some("%%%not base64")).await;
    assert_eq!(status, 401);

    // Signed, but no product in it.
    let junk = br#"{"name": "no id here"}"#;
    let (status, answer) = deliver(&base, "product.created", junk, Some(&wc_signature(SECRET, junk))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("\"id\""), "{answer}");

    // Another resource's webhook pointed here by mistake.
    let (status, answer) = deliver(&base, "order.created", &payload, Some(&wc_signature(SECRET, &payload))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("order.created"), "{answer}");

    // WooCommerce's ping when the webhook is saved: answered, nothing queued.
    let ping = b"webhook_id=15";
    let (status, answer) = deliver(&base, "", ping, None).await;
    assert_eq!((status, answer["ping"].clone()), (200, json!(15)));

    // A pipeline without a webhook section (or none at all) takes nothing.
    let response = http()
        .post(format!("{base}/hooks/nosuch"))
        .header("x-wc-webhook-signature", wc_signature(SECRET, &payload))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(db.store.runs(&[], 10).await.unwrap().is_empty(), "no run was made");
    assert_eq!(s.sb.provider.stats().requests, 0, "nothing was asked of the model");
    assert!(description(shop, id).is_empty());
    let output = s.daemon.output();
    assert!(!output.contains(SECRET), "the secret never reaches the log");
}

async fn a_record_by_webhook_and_by_schedule_is_enriched_once(db: &common::TestDb) {
    // A schedule every second: the product is found by listing as well as announced.
    let s = start(db, "* * * * * *").await;
    let shop = &s.sb.shop;
    // A slow model keeps the record in progress while later ticks list it.
    s.sb.provider.set_faults(Faults { latency: Duration::from_millis(1500), ..Default::default() });
    let id = add_bare_product(shop, "Twice Announced Bracket");
    let payload = serde_json::to_vec(&shop.product(id).unwrap()).unwrap();
    let base = s.daemon.base();
    // Repeated deliveries, as WooCommerce's product.created and product.updated both fire.
    for topic in ["product.created", "product.updated", "product.updated"] {
        let (status, answer) = deliver(&base, topic, &payload, Some(&wc_signature(SECRET, &payload))).await;
        assert_eq!(status, 202, "{answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while description(shop, id).is_empty() {
        assert!(Instant::now() < deadline, "not written: {}", s.daemon.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let a few more ticks and deliveries see the product after its write.
    let (status, _) = deliver(&base, "product.updated", &payload, Some(&wc_signature(SECRET, &payload))).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let writes: Vec<_> = shop.writes().into_iter().filter(|w| w.product_id == id).collect();
    assert_eq!(writes.len(), 1, "written once: {writes:?}");
    assert_eq!(s.sb.provider.stats().answered, 1, "one model call");
    // Both paths saw the product: it has items in webhook runs and in scheduled runs, exactly one
    // of them enriched and written, the others skipped with the reason.
    let runs = db.store.runs(&[], 1000).await.unwrap();
    let mut seen_by = std::collections::BTreeMap::<String, Vec<(ItemState, Option<String>)>>::new();
    for run in &runs {
        for item in db.store.items(run.id, None, 100).await.unwrap() {
            if item.external_id == id.to_string() {
                seen_by.entry(run.trigger_kind.clone()).or_default().push((item.state, item.last_error.clone()));
            }
        }
    }
    assert!(seen_by.contains_key("webhook") && seen_by.contains_key("schedule"), "{seen_by:?}");
    let all: Vec<_> = seen_by.values().flatten().collect();
    assert_eq!(all.iter().filter(|(s, _)| *s == ItemState::Written).count(), 1, "{seen_by:?}");
    for (state, reason) in all.iter().filter(|(s, _)| *s != ItemState::Written) {
        assert_eq!(*state, ItemState::Skipped, "{seen_by:?}");
        let reason = reason.as_deref().unwrap_or_default();
        assert!(reason.contains("already in progress") || reason.contains("nothing is missing"), "{reason}");
    }
}

async fn the_hook_needs_no_session_but_the_api_does(db: &common::TestDb) {
    let s = start(db, "0 3 1 1 *").await;
    let base = s.daemon.base();
    let client = http();
    let api = client.get(format!("{base}/api/runs")).send().await.unwrap();
    assert_eq!(api.status().as_u16(), 401, "the API wants the token");
    let id = add_bare_product(&s.sb.shop, "Sessionless Clamp");
    let payload = serde_json::to_vec(&s.sb.shop.product(id).unwrap()).unwrap();
    let (status, _) = deliver(&base, "product.created", &payload, Some(&wc_signature(SECRET, &payload))).await;
    assert_eq!(status, 202, "no cookie, no token, a foreign Host: taken on its signature");
    let api = client.get(format!("{base}/api/runs")).bearer_auth(API_TOKEN).send().await.unwrap();
    assert_eq!(api.status().as_u16(), 200);
    let runs: Value = api.json().await.unwrap();
    assert!(runs.to_string().contains("webhook"), "{runs}");
    // The API's token is no webhook signature, and a webhook signature opens no API.
    let api = client
        .get(format!("{base}/api/runs"))
        .header("x-wc-webhook-signature", wc_signature(SECRET, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 401);
}

// ---------------------------------------------------------------------------------------------
// Zendesk

fn hook_config_for(pipeline: &str, schedule: &str) -> String {
    hook_config(schedule).replace("pipelines.catalogue.webhook", &format!("pipelines.{pipeline}.webhook"))
}

struct Support {
    hd: Helpdesk,
    daemon: Enrichd,
    _dir: tempfile::TempDir,
}

/// A Zendesk account whose tickets are all triaged already, the daemon on pipeline `triage` with
/// its webhook, and a schedule a year away.
async fn start_support(db: &common::TestDb) -> Support {
    let hd = helpdesk(ZendeskSandbox::with_triaged_share(8, 5, 1.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_zendesk_config(dir.path(), &db.url, &hd, "", &hook_config_for("triage", "0 3 1 1 *"));
    let vars = env_vars();
    let env = Env { log_level: "info", vars: &vars, ..Env::default() };
    let daemon = Enrichd::daemon_with(&config, dir.path().join("daemon.log"), &env);
    Support { hd, daemon, _dir: dir }
}

fn category(account: &ZendeskSandbox, id: u64) -> Option<String> {
    let ticket = account.ticket(id)?;
    ticket["custom_fields"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == json!(CATEGORY_FIELD_ID))
        .and_then(|f| f["value"].as_str().map(str::to_owned))
}

async fn wait_for_category(s: &Support, id: u64, since: Instant, within: Duration) -> Duration {
    loop {
        if category(&s.hd.account, id).is_some() {
            return since.elapsed();
        }
        assert!(since.elapsed() < within, "ticket {id} not triaged within {within:?}: {}", s.daemon.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_new_ticket_is_triaged_within_seconds_of_its_webhook(db: &common::TestDb) {
    let s = start_support(db).await;
    let account = &s.hd.account;
    account.set_webhook(&format!("{}/hooks/triage", s.daemon.base()), SECRET);
    let created = Instant::now();
    let id =
        account.create_ticket("Charged twice for order 1182", "Hello, my card was charged twice. Please refund one.");
    let took = wait_for_category(&s, id, created, Duration::from_secs(20)).await;
    eprintln!(
        "zendesk ({:?}): ticket created -> webhook -> category written: {} ms",
        db.store.backend(),
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(account.deliveries(), vec![Delivery { ticket_id: id, status: 202 }]);
    assert_eq!(s.hd.provider.stats().answered, 1, "only the new ticket went to the model");
    assert_eq!(account.received_writes().len(), 1, "written once: {:?}", account.received_writes());
    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.trigger_kind.as_str()).collect::<Vec<_>>(), ["webhook"], "{runs:?}");
    // The model saw what a listing shows of a ticket, its conversation included.
    let items = db.store.items(runs[0].id, None, 10).await.unwrap();
    let input: Value = serde_json::from_str(&items[0].input).unwrap();
    let conversation = input["conversation"].as_str().unwrap_or_default();
    assert!(conversation.contains("my card was charged twice"), "{input}");
    assert!(input.get("organization").is_some(), "{input}");
}

/// Delivers `body` to `/hooks/triage` as Zendesk does: signed at `timestamp` with `secret` (or not).
async fn deliver_zendesk(base: &str, body: &[u8], timestamp: Option<&str>, secret: Option<&str>) -> (u16, Value) {
    let mut request = http()
        .post(format!("{base}/hooks/triage"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(ts) = timestamp {
        request = request.header("x-zendesk-webhook-signature-timestamp", ts);
    }
    if let Some(secret) = secret {
        request = request.header("x-zendesk-webhook-signature", sign_webhook(secret, timestamp.unwrap_or(""), body));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn zendesk_refusals_queue_nothing_and_other_shapes_are_taken(db: &common::TestDb) {
    let s = start_support(db).await;
    let base = s.daemon.base();
    let account = &s.hd.account;
    // Created without a webhook subscribed: only the deliveries below can bring it in.
    let id = account.create_ticket("Login fails", "I cannot log in since this morning.");
    let body = serde_json::to_vec(&json!({ "ticket_id": id.to_string() })).unwrap();
    let now = rfc3339(chrono::Utc::now());

    let stale = rfc3339(chrono::Utc::now() - chrono::Duration::minutes(10));
    let (status, answer) = deliver_zendesk(&base, &body, Some(&stale), Some(SECRET)).await;
    assert_eq!(status, 401, "a correctly signed but stale delivery: {answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("the window is 300 s") && error.contains("max_age_seconds"), "{error}");

    let (status, answer) = deliver_zendesk(&base, &body, Some(&now), Some("another secret")).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = deliver_zendesk(&base, &body, Some(&now), None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("missing x-zendesk-webhook-signature"), "{answer}");
    let (status, answer) = deliver_zendesk(&base, &body, None, Some(SECRET)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("x-zendesk-webhook-signature-timestamp"), "{answer}");
    // Signed over another timestamp than the one sent.
    let mut request = http()
        .post(format!("{base}/hooks/triage"))
        .header("x-zendesk-webhook-signature-timestamp", &now)
        .header("x-zendesk-webhook-signature", sign_webhook(SECRET, &stale, &body))
        .body(body.clone());
    request = request.header("content-type", "application/json");
    assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    // Signed, but naming no ticket.
    let junk = br#"{"subject": "no id"}"#;
    let (status, answer) = deliver_zendesk(&base, junk, Some(&now), Some(SECRET)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("ticket_id"), "{answer}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(db.store.runs(&[], 10).await.unwrap().is_empty(), "nothing was queued");
    assert_eq!(s.hd.provider.stats().requests, 0);
    assert!(category(account, id).is_none());

    // The body shapes a Zendesk webhook may be configured with are all taken.
    let second = account.create_ticket("Parcel lost", "My parcel never arrived.");
    let third = account.create_ticket("Invoice copy", "Please send a copy of my invoice.");
    for body in [
        json!({ "ticket_id": id.to_string() }),
        json!({ "id": second }),
        json!({ "ticket": { "id": third, "subject": "Invoice copy" } }),
    ] {
        let body = serde_json::to_vec(&body).unwrap();
        let now = rfc3339(chrono::Utc::now());
        let (status, answer) = deliver_zendesk(&base, &body, Some(&now), Some(SECRET)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let since = Instant::now();
    for ticket in [id, second, third] {
        wait_for_category(&s, ticket, since, Duration::from_secs(20)).await;
    }
    assert_eq!(s.hd.provider.subjects().len(), 3, "each ticket triaged once: {:?}", s.hd.provider.subjects());
    assert!(!s.daemon.output().contains(SECRET), "the secret never reaches the log");
}

on_both_backends! {
    zendesk_webhook => a_new_ticket_is_triaged_within_seconds_of_its_webhook;
    zendesk_refusals => zendesk_refusals_queue_nothing_and_other_shapes_are_taken;
    signed_webhook => a_signed_webhook_is_enriched_within_seconds;
    signed_webhook_default_poll => a_signed_webhook_at_the_default_poll_interval;
    refused_webhooks => unsigned_or_badly_signed_webhooks_queue_nothing;
    webhook_and_schedule => a_record_by_webhook_and_by_schedule_is_enriched_once;
    no_session => the_hook_needs_no_session_but_the_api_does;
}

// ---------------------------------------------------------------------------------------------
// Config

/// Loads the WooCommerce test config with `extra` in the pipeline block; the error's text.
async fn config_error(extra: &str) -> String {
    common::woo::set_woo_env();
    // SAFETY: set before configs load; the value never changes within the process.
    unsafe { std::env::set_var("HOOKS_TEST_SECRET", SECRET) };
    let sb = woo_sandboxes(complete_store()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_woo_config(dir.path(), "sqlite://unused.db", &sb, "none", 3, 10.0, extra);
    enrichd::config::Config::load(&path).map(|_| ()).unwrap_err().to_string()
}

#[tokio::test]
async fn webhook_config_errors_name_the_key() {
    let e = config_error("[pipelines.catalogue.webhook]\nsecret = \"s3cret-in-the-file\"\n").await;
    assert!(e.contains("pipelines.catalogue.webhook.secret") && e.contains("${ENV_VAR}"), "{e}");
    assert!(!e.contains("s3cret-in-the-file"), "the value is not repeated: {e}");
    let e = config_error("[pipelines.catalogue.webhook]\nsecret = \"${HOOKS_TEST_SECRET}\"\nmax_age = 5\n").await;
    assert!(e.contains("pipelines.catalogue.webhook") && e.contains("max_age"), "{e}");
    let e =
        config_error("[pipelines.catalogue.webhook]\nsecret = \"${HOOKS_TEST_SECRET}\"\nmax_age_seconds = 0\n").await;
    assert!(e.contains("pipelines.catalogue.webhook.max_age_seconds"), "{e}");
    let e = config_error("[pipelines.catalogue.webhook]\nsecret = \"${HOOKS_TEST_UNSET_SECRET}\"\n").await;
    assert!(e.contains("pipelines.catalogue.webhook.secret") && e.contains("HOOKS_TEST_UNSET_SECRET"), "{e}");
}

#[tokio::test]
async fn a_webhook_on_a_platform_without_signed_webhooks_is_refused() {
    common::set_secret_env();
    // SAFETY: set before configs load; the value never changes within the process.
    unsafe { std::env::set_var("HOOKS_TEST_SECRET", SECRET) };
    let sb = common::sandboxes(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let options = common::ConfigOptions {
        extra_pipeline: "[pipelines.catalogue.webhook]\nsecret = \"${HOOKS_TEST_SECRET}\"\n",
        ..Default::default()
    };
    let path = common::write_config(dir.path(), "sqlite://unused.db", &sb, &options);
    let e = enrichd::config::Config::load(&path).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("pipelines.catalogue.webhook") && e.contains("woocommerce and zendesk"), "{e}");
}
