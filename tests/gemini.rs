//! The Gemini provider over real HTTP against the provider sandbox: the request as Google wants it
//! (schema as `responseJsonSchema`, key in a header), usage and cost, the error classes (429 with
//! `RetryInfo`, a used-up daily quota, 5xx, truncation, safety refusal, bad key), and pipelines in
//! realtime and batch mode (inline and uploaded-file batches, out-of-order results, expiry, a
//! restart while polling, finding a batch again by its display name).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::harness::{Harness, harness, start_run, work};
use common::{ConfigOptions, TestDb, expected_description};
use enrichd::config::{Config, ProviderConfig};
use enrichd::engine::Engine;
use enrichd::provider::{CompletionRequest, Provider, ProviderErrorKind};
use enrichd::sandbox::provider::{Faults, ProviderSandbox, answer_for};
use enrichd::store::{ItemState, RunStatus};
use enrichd::task::Prompt;
use serde_json::json;

const MODEL: &str = "gemini-2.5-flash";

async fn provider(key: &str, extra: &str) -> (Provider, ProviderSandbox) {
    let sandbox = ProviderSandbox::new(Some("right-key"));
    let addr = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let var = format!("GEMINI_KEY_{}", key.replace('-', "_"));
    // SAFETY: test-local variable, set before the config that reads it is parsed.
    unsafe { std::env::set_var(&var, key) };
    let text = format!(
        "[providers.gem]\nkind = \"gemini\"\nbase_url = \"http://{addr}\"\napi_key = \"${{{var}}}\"\ntimeout_seconds = 5\n{extra}\n"
    );
    let config = Config::parse(Path::new("test.toml"), &text, None).unwrap();
    let ProviderConfig::Gemini(_) = &config.providers["gem"] else { panic!("wrong kind") };
    (Provider::build("gem", &config.providers["gem"]), sandbox)
}

fn schema() -> serde_json::Value {
    json!({"type": "object", "additionalProperties": false, "required": ["description", "tags"],
           "properties": {"description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}})
}

async fn ask(p: &Provider) -> Result<enrichd::provider::Completion, enrichd::provider::ProviderError> {
    let prompt = Prompt {
        system: Some("Be factual.".into()),
        user: "Product 12: describe it.\n<record>...</record>".into(),
        documents: Vec::new(),
    };
    let schema = schema();
    let request = CompletionRequest {
        model: MODEL,
        prompt: &prompt,
        schema_name: "product copy",
        schema: &schema,
        max_output_tokens: 500,
        temperature: Some(0.5),
    };
    p.complete(&request).await
}

#[tokio::test]
async fn answers_in_the_schema_sent_as_response_json_schema() {
    let (p, sandbox) = provider("right-key", "").await;
    p.check().await.unwrap();
    sandbox.record_requests(true);
    let c = ask(&p).await.unwrap();
    assert_eq!(c.answer, answer_for(&schema(), "Product 12: describe it.", "answer"));
    assert_eq!(c.answer["description"], "description for Product 12: describe it.");

    let received = sandbox.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, format!("/v1beta/models/{MODEL}:generateContent"), "no key in the URL");
    let body = &received[0].body;
    assert_eq!(body["generationConfig"]["responseJsonSchema"], schema());
    assert_eq!(body["generationConfig"]["responseMimeType"], "application/json");
    assert!(body["generationConfig"].get("responseSchema").is_none(), "only one schema form may be sent");
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 500);
    assert_eq!(body["generationConfig"]["temperature"], 0.5);
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "Be factual.");
    assert_eq!(body["contents"][0]["role"], "user");

    // The sandbox's thinking model thinks 3 tokens: billed as output.
    let visible = (c.raw.len() as i64 + 3) / 4;
    assert_eq!(c.usage.output, visible + 3, "thoughts count as output");
    assert!(c.usage.input > 0);
    // Built-in price of gemini-2.5-flash: $0.30/M in, $2.50/M out.
    let cost = p.cost_micros(MODEL, c.usage).unwrap();
    assert_eq!(cost, (c.usage.input as f64 * 0.30 + c.usage.output as f64 * 2.50).round() as i64);
}

#[tokio::test]
async fn a_429_closes_the_gate_for_its_retry_delay() {
    let (p, sandbox) = provider("right-key", "").await;
    sandbox.set_faults(Faults { rate_limit_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(2)), "RetryInfo.retryDelay from the body");
    assert!(e.message.contains("HTTP 429 RESOURCE_EXHAUSTED"), "{}", e.message);
    assert_eq!(p.gate().rate_limited(), 1);
    sandbox.set_faults(Faults::default());
    let start = Instant::now();
    ask(&p).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1800), "the gate held the next request: {:?}", start.elapsed());
}

#[tokio::test]
async fn a_used_up_daily_quota_is_permanent_and_does_not_hold_the_gate() {
    let (p, sandbox) = provider("right-key", "").await;
    sandbox.set_faults(Faults { quota_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent, "{}", e.message);
    assert!(e.message.contains("daily quota GenerateRequestsPerDayPerProjectPerModel used up"), "{}", e.message);
    assert_eq!(p.gate().rate_limited(), 0, "not a rate limit");
}

#[tokio::test]
async fn server_errors_are_transient_and_bad_keys_permanent() {
    let (p, sandbox) = provider("right-key", "").await;
    sandbox.set_faults(Faults { server_error_rate: 1.0, ..Default::default() });
    for _ in 0..4 {
        let e = ask(&p).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Transient);
        assert!(e.message.contains("HTTP 503 UNAVAILABLE") || e.message.contains("HTTP 500 INTERNAL"), "{}", e.message);
    }
    let (p, _sandbox) = provider("wrong-key-654", "").await;
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Permanent);
    assert!(e.message.contains("HTTP 400 INVALID_ARGUMENT: API key not valid"), "{}", e.message);
    assert!(!e.message.contains("wrong-key-654"));
}

#[tokio::test]
async fn truncated_and_refused_answers_are_bad_answers() {
    let (p, sandbox) = provider("right-key", "").await;
    sandbox.set_faults(Faults { truncated_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::BadAnswer);
    assert!(e.message.contains("cut off at max_output_tokens (500)"), "{}", e.message);
    assert!(e.raw.as_deref().is_some_and(|r| r.starts_with("{\"description\"")), "raw output kept: {:?}", e.raw);
    assert!(e.usage.output > 0, "a truncated answer is still billed");

    sandbox.set_faults(Faults { refusal_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::BadAnswer);
    assert!(e.message.contains("the model refused: the answer was withheld (SAFETY)"), "{}", e.message);

    sandbox.set_faults(Faults { invalid_json_rate: 1.0, ..Default::default() });
    let e = ask(&p).await.unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
    assert!(e.raw.unwrap().starts_with("Sure!"));
}

#[tokio::test]
async fn a_batch_is_found_again_by_its_display_name() {
    let (p, sandbox) = provider("right-key", "").await;
    let prompt = Prompt { system: None, user: "Product 3: describe it.".into(), documents: Vec::new() };
    let schema = schema();
    let request = CompletionRequest {
        model: MODEL,
        prompt: &prompt,
        schema_name: "copy",
        schema: &schema,
        max_output_tokens: 100,
        temperature: None,
    };
    let line = p.batch_line("item-3", &request);
    let mut ids = Vec::new();
    for tag in ["enrichd-1-aaa", "enrichd-1-bbb", "enrichd-1-ccc"] {
        ids.push(p.submit_batch(tag, MODEL, std::slice::from_ref(&line)).await.unwrap());
    }
    assert!(ids.iter().all(|id| id.starts_with("batches/")), "{ids:?}");
    assert_eq!(p.find_batch("enrichd-1-bbb").await.unwrap().as_deref(), Some(ids[1].as_str()));
    assert_eq!(p.find_batch("enrichd-1-zzz").await.unwrap(), None);
    assert_eq!(sandbox.stats().batches, 3, "looking did not submit anything");
}

/// The test harness with its provider switched to Gemini (`gemini_only`: lines for its section that
/// only Gemini takes).
async fn gemini_harness(
    db: &TestDb,
    products: u64,
    missing_every: u64,
    options: ConfigOptions,
    gemini_only: &str,
) -> Harness {
    let mut h = harness(db, products, missing_every, options).await;
    let path = h._dir.path().join("enrichd.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("kind = \"openai\"", &format!("kind = \"gemini\"\n{gemini_only}"))
        .replace(&h.sb.provider_url, h.sb.provider_url.trim_end_matches("/v1"))
        .replace("model = \"gpt-4o-mini\"", &format!("model = \"{MODEL}\""));
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    h.engine = Arc::new(Engine::build(&config, db.store.clone()));
    h
}

fn assert_all_written(h: &Harness, products: u64, missing_every: u64) {
    for id in (1..=products).filter(|id| id % missing_every == 0) {
        let (version, fields) = h.sb.store.record("product", id).unwrap();
        assert_eq!(fields["description"], json!(expected_description(id)), "product {id} got another record's answer");
        assert_eq!(version, 2, "product {id} written exactly once");
    }
}

async fn server_errors_are_retried_until_written(db: &TestDb) {
    let h = gemini_harness(db, 6, 1, ConfigOptions { max_attempts: 50, ..Default::default() }, "").await;
    // Every request fails for a while; the items go back to the queue with an attempt used.
    h.sb.provider.set_faults(Faults { server_error_rate: 1.0, ..Default::default() });
    let run = start_run(&h.engine).await;
    let first = work(&h.engine, run.id, Duration::from_millis(800)).await;
    assert_eq!(first.status, RunStatus::Running);
    let tried = h.sb.provider.stats().requests;
    assert!(tried >= 6, "every item was tried: {tried}");
    h.sb.provider.set_faults(Faults::default());
    let run = work(&h.engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    assert_all_written(&h, 6, 1);
    let items = db.store.items(run.id, None, 100).await.unwrap();
    assert!(items.iter().all(|i| i.attempts >= 1), "the 5xx attempts were counted");
}

async fn a_used_up_quota_is_dead_after_one_attempt(db: &TestDb) {
    let h = gemini_harness(db, 3, 1, ConfigOptions::default(), "").await;
    h.sb.provider.set_faults(Faults { quota_rate: 1.0, ..Default::default() });
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let dead = db.store.items(run.id, Some(ItemState::Dead), 10).await.unwrap();
    assert_eq!(dead.len(), 3);
    for item in dead {
        assert_eq!(item.attempts, 1, "not retried");
        assert!(item.last_error.unwrap().contains("RESOURCE_EXHAUSTED"));
    }
    assert_eq!(h.sb.provider.stats().requests, 3);
}

async fn schema_invalid_answers_are_dead_with_the_raw_output(db: &TestDb) {
    let h = gemini_harness(db, 3, 1, ConfigOptions { max_attempts: 2, ..Default::default() }, "").await;
    let path = h._dir.path().join("enrichd.toml");
    // The sandbox answers prose; this schema wants digits only (Gemini's schema subset has no
    // `pattern`, so the local check is what catches it).
    let text = std::fs::read_to_string(&path).unwrap().replace("minLength = 10", "pattern = \"^[0-9]+$\"");
    std::fs::write(&path, text).unwrap();
    let engine = Arc::new(Engine::build(&Config::load(&path).unwrap(), db.store.clone()));
    let run = start_run(&engine).await;
    let run = work(&engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let dead = db.store.items(run.id, Some(ItemState::Dead), 10).await.unwrap();
    assert_eq!(dead.len(), 3);
    for item in dead {
        assert_eq!(item.attempts, 2, "retried up to max_attempts");
        let error = item.last_error.unwrap();
        assert!(error.contains("/description") && error.contains("schema"), "{error}");
        assert!(item.raw_output.unwrap().contains("description for Product"), "the unusable answer is kept");
    }
    assert!(h.sb.store.writes().is_empty(), "nothing invalid was written");
}

const BATCH: &str = "mode = \"batch\"";
const FAST_POLLS: &str = "batch_poll_seconds = 0.05";

async fn batch_results_out_of_order_find_their_records(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = gemini_harness(db, 40, 2, options, "").await;
    h.sb.provider.record_requests(true);
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    assert_eq!((stats.batches, stats.batch_lines, stats.requests), (1, 20, 0));
    assert_all_written(&h, 40, 2);

    let batches = db.store.run_batches(run.id).await.unwrap();
    assert_eq!((batches[0].state.as_str(), batches[0].items), ("ended", 20));
    assert!(batches[0].provider_batch_id.as_deref().unwrap().starts_with("batches/"));
    let created = h.sb.provider.received();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].path, format!("/v1beta/models/{MODEL}:batchGenerateContent"));
    let batch = &created[0].body["batch"];
    assert_eq!(batch["displayName"], json!(batches[0].tag), "the tag names the batch");
    let requests = batch["inputConfig"]["requests"]["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 20, "inline: well under 20 MB");
    assert!(requests[0]["metadata"]["key"].as_str().unwrap().starts_with("item-"));
    assert!(requests[0]["request"]["generationConfig"]["responseJsonSchema"].is_object());
    let item = &db.store.items(run.id, Some(ItemState::Written), 1).await.unwrap()[0];
    assert!(item.tokens_in > 0 && item.cost_micros > 0, "batch usage is counted per item");
}

async fn large_batches_go_through_an_uploaded_file(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = gemini_harness(db, 10, 1, options, "batch_inline_max_bytes = 1000").await;
    h.sb.provider.record_requests(true);
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    assert_eq!((h.sb.provider.stats().batches, h.sb.provider.stats().batch_lines), (1, 10));
    let batch = &h.sb.provider.received()[0].body["batch"];
    assert!(batch["inputConfig"]["fileName"].as_str().unwrap().starts_with("files/"), "{batch}");
    assert!(batch["inputConfig"].get("requests").is_none());
    assert_all_written(&h, 10, 1);
}

async fn an_expired_batch_requeues_without_using_attempts(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = gemini_harness(db, 6, 1, options, "").await;
    // Batches expire: Google keeps no results of an expired batch.
    h.sb.provider.set_faults(Faults { batch_expire_after: Some(0), ..Default::default() });
    let run = start_run(&h.engine).await;
    let first = work(&h.engine, run.id, Duration::from_millis(700)).await;
    assert_eq!(first.status, RunStatus::Running);
    let expired = db.store.run_batches(run.id).await.unwrap();
    assert!(!expired.is_empty());
    let detail = expired[0].detail.as_deref().unwrap_or_default();
    assert!(detail.starts_with("expired: 0 lines answered"), "{expired:?}");
    h.sb.provider.set_faults(Faults::default());
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    assert_all_written(&h, 6, 1);
    for item in db.store.items(run.id, None, 100).await.unwrap() {
        assert_eq!(item.attempts, 0, "item {}: an expired batch is not a failed attempt", item.id);
    }
}

async fn a_restart_while_polling_does_not_resubmit(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = gemini_harness(db, 8, 1, options, "").await;
    h.sb.provider.set_faults(Faults { batch_polls: u32::MAX, ..Default::default() });
    let run = start_run(&h.engine).await;
    let first = work(&h.engine, run.id, Duration::from_secs(2)).await;
    assert_eq!(first.status, RunStatus::Running);
    let batches = db.store.run_batches(run.id).await.unwrap();
    assert_eq!((batches.len(), batches[0].state.as_str()), (1, "submitted"));
    assert!(batches[0].polls >= 2, "the batch was polled: {}", batches[0].polls);

    h.sb.provider.set_faults(Faults::default());
    let config = Config::load(&h._dir.path().join("enrichd.toml")).unwrap();
    let second = Arc::new(Engine::build(&config, db.store.clone()));
    assert_ne!(second.owner, h.engine.owner);
    let run = work(&second, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    assert_eq!((h.sb.provider.stats().batches, h.sb.provider.stats().batch_lines), (1, 8), "not submitted again");
    assert_all_written(&h, 8, 1);
}

on_both_backends! {
    server_errors_retried => server_errors_are_retried_until_written;
    quota_dead => a_used_up_quota_is_dead_after_one_attempt;
    schema_invalid => schema_invalid_answers_are_dead_with_the_raw_output;
    batch_out_of_order => batch_results_out_of_order_find_their_records;
    batch_file => large_batches_go_through_an_uploaded_file;
    batch_expiry => an_expired_batch_requeues_without_using_attempts;
    batch_restart => a_restart_while_polling_does_not_resubmit;
}
