//! Batch mode and packing end to end over real HTTP (teststore + provider sandbox), on SQLite and
//! Postgres: batches submitted once and matched back by line, split at the provider's limits,
//! expired batches re-queue only the lines they did not answer, a daemon restarted while a batch is
//! being polled picks the batch up without submitting it again, and packed answers that drop an id
//! send only that item back, alone.

mod common;

use std::time::Duration;

use common::harness::{harness, start_run, work};
use common::{ConfigOptions, TestDb, expected_description};
use enrichd::sandbox::provider::Faults;
use enrichd::store::{ItemState, RunStatus};
use serde_json::json;

const BATCH: &str = "mode = \"batch\"";
const FAST_POLLS: &str = "batch_poll_seconds = 0.05";

fn assert_all_written(h: &common::harness::Harness, products: u64, missing_every: u64) {
    for id in (1..=products).filter(|id| id % missing_every == 0) {
        let (version, fields) = h.sb.store.record("product", id).unwrap();
        assert_eq!(fields["description"], json!(expected_description(id)), "product {id} got another record's answer");
        assert_eq!(version, 2, "product {id} written exactly once");
    }
}

async fn batch_happy_path(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = harness(db, 40, 2, options).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    assert_eq!((stats.batches, stats.batch_lines), (1, 20), "one batch holding every candidate");
    assert_eq!(stats.requests, 0, "no realtime requests in batch mode");
    assert_all_written(&h, 40, 2);
    let batches = db.store.run_batches(run.id).await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].state.as_str(), batches[0].items), ("ended", 20));
    assert!(batches[0].provider_batch_id.as_deref().unwrap().starts_with("batch_"));
    let item = &db.store.items(run.id, Some(ItemState::Written), 1).await.unwrap()[0];
    assert!(item.tokens_in > 0 && item.cost_micros > 0, "batch usage is counted per item");
    let usage = enrichd::provider::TokenUsage { input: item.tokens_in, output: item.tokens_out, ..Default::default() };
    let realtime = h.engine.providers["sim"].cost_micros("gpt-4o-mini", usage).unwrap();
    assert_eq!(item.cost_micros, (realtime as f64 * 0.5).round() as i64, "batch lines cost half the realtime price");
}

async fn anthropic_batches_split_at_the_limit(db: &TestDb) {
    // The Anthropic provider, with a 4-request limit per batch: 10 candidates make 3 batches.
    let options = ConfigOptions { extra_pipeline: BATCH, ..Default::default() };
    let h = harness(db, 10, 1, options).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(h._dir.path().join("enrichd.toml"))
        .unwrap()
        .replace("kind = \"openai\"", "kind = \"anthropic\"\nbatch_max_requests = 4\nbatch_poll_seconds = 0.05");
    let text = text.replace(&h.sb.provider_url, h.sb.provider_url.trim_end_matches("/v1"));
    std::fs::write(dir.path().join("enrichd.toml"), text).unwrap();
    let config = enrichd::config::Config::load(&dir.path().join("enrichd.toml")).unwrap();
    let engine = std::sync::Arc::new(enrichd::engine::Engine::build(&config, db.store.clone()));
    let run = start_run(&engine).await;
    let run = work(&engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    assert_eq!((stats.batches, stats.batch_lines), (3, 10));
    assert_all_written(&h, 10, 1);
}

async fn expired_batches_requeue_only_what_they_did_not_answer(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = harness(db, 10, 1, options).await;
    // Every batch expires after answering 4 of its lines (results come back out of order).
    h.sb.provider.set_faults(Faults { batch_expire_after: Some(4), ..Default::default() });
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    // 10 → 4 answered, 6 re-queued → 4 answered, 2 re-queued → 2 answered.
    assert_eq!((stats.batches, stats.batch_lines), (3, 18));
    assert_eq!(stats.answered, 10, "each record answered once");
    assert_all_written(&h, 10, 1);
    for item in db.store.items(run.id, None, 100).await.unwrap() {
        assert_eq!(item.attempts, 0, "item {}: an expired line is not a failed attempt", item.id);
    }
    let batches = db.store.run_batches(run.id).await.unwrap();
    assert!(
        batches[0].detail.as_deref().unwrap().starts_with("expired: 4 lines answered, 0 failed, 6 not run"),
        "{batches:?}"
    );
}

async fn a_restart_while_polling_does_not_resubmit(db: &TestDb) {
    let options = ConfigOptions { extra_pipeline: BATCH, extra_provider: FAST_POLLS, ..Default::default() };
    let h = harness(db, 12, 1, options).await;
    // The batch stays in progress: the first daemon submits it and polls in vain until it stops.
    h.sb.provider.set_faults(Faults { batch_polls: u32::MAX, ..Default::default() });
    let run = start_run(&h.engine).await;
    let first = work(&h.engine, run.id, Duration::from_secs(2)).await;
    assert_eq!(first.status, RunStatus::Running);
    let batches = db.store.run_batches(run.id).await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].state, "submitted");
    assert!(batches[0].polls >= 2, "the batch was polled: {}", batches[0].polls);
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Batched), 12);

    // A new daemon (another engine, another owner) on the same database finishes the run.
    h.sb.provider.set_faults(Faults::default());
    let config = enrichd::config::Config::load(&h._dir.path().join("enrichd.toml")).unwrap();
    let second = std::sync::Arc::new(enrichd::engine::Engine::build(&config, db.store.clone()));
    assert_ne!(second.owner, h.engine.owner);
    let run = work(&second, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    assert_eq!((stats.batches, stats.batch_lines), (1, 12), "the batch was not submitted again");
    assert_all_written(&h, 12, 1);
}

async fn packing_sends_dropped_items_back_alone(db: &TestDb) {
    let options = ConfigOptions { concurrency: 1, extra_task: "items_per_request = 5", ..Default::default() };
    let h = harness(db, 10, 1, options).await;
    // Every packed answer leaves one record out.
    h.sb.provider.set_faults(Faults { packed_drop_rate: 1.0, ..Default::default() });
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    // Claims take the lowest ids: [1-5] drops 5; then [5 alone] and [6-9], which drops 9; then
    // [9 alone] and [10] (a lone record is sent unpacked).
    assert_eq!(h.sb.provider.stats().requests, 5);
    let mut subjects = h.sb.provider.subjects();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 10, "every record answered exactly once: {subjects:?}");
    assert_all_written(&h, 10, 1);
    let items = db.store.items(run.id, None, 100).await.unwrap();
    let solo: Vec<_> = items.iter().filter(|i| i.solo).collect();
    assert_eq!(solo.len(), 2, "only the dropped items were sent back");
    for item in items {
        assert_eq!(item.attempts, 0, "a dropped id is not the item's failure");
    }
}

async fn packing_works_in_batches_too(db: &TestDb) {
    let options = ConfigOptions {
        extra_pipeline: BATCH,
        extra_provider: FAST_POLLS,
        extra_task: "items_per_request = 4",
        ..Default::default()
    };
    let h = harness(db, 10, 1, options).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let stats = h.sb.provider.stats();
    assert_eq!((stats.batches, stats.batch_lines), (1, 3), "10 records in lines of 4, 4 and 2");
    assert_all_written(&h, 10, 1);
}

on_both_backends! {
    batch_happy => batch_happy_path;
    anthropic_split => anthropic_batches_split_at_the_limit;
    batch_expiry => expired_batches_requeue_only_what_they_did_not_answer;
    batch_restart => a_restart_while_polling_does_not_resubmit;
    packing_drop => packing_sends_dropped_items_back_alone;
    packing_batch => packing_works_in_batches_too;
}
