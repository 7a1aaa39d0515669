//! The engine end to end over real HTTP (teststore and provider sandboxes) on SQLite and Postgres:
//! the right records are enriched and written, review holds proposals, upstream edits become
//! conflicts and are never clobbered, faults on both sides lose nothing, permanent errors are dead
//! with their reason.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::harness::{harness, start_run, work};
use common::{ConfigOptions, Sandboxes, TestDb, expected_description, write_config};
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::store::{ItemState, RunStatus};
use serde_json::json;

async fn enriches_exactly_the_records_missing_fields(db: &TestDb) {
    let h = harness(db, 250, 5, ConfigOptions::default()).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Skipped), counts.total()), (50, 200, 250));
    for id in 1..=250u64 {
        let (version, fields) = h.sb.store.record("product", id).unwrap();
        if id % 5 == 0 {
            assert_eq!(
                fields["description"],
                json!(expected_description(id)),
                "product {id} got another record's answer"
            );
            assert_eq!(version, 2, "product {id} written once");
        } else {
            assert!(
                fields["description"].as_str().unwrap().starts_with("<p>"),
                "product {id} had a description and must be untouched"
            );
            assert_eq!(version, 1);
        }
    }
    assert_eq!(h.sb.store.writes().len(), 50);
    assert_eq!(h.sb.provider.stats().answered, 50, "one model call per candidate");
    let run = db.store.run(run.id).await.unwrap();
    assert!(run.cost_micros > 0 && run.tokens_in > 0 && run.tokens_out > 0, "{run:?}");
    // A second run finds nothing missing and pays for nothing.
    let again = start_run(&h.engine).await;
    let again = work(&h.engine, again.id, Duration::from_secs(30)).await;
    assert_eq!(again.status, RunStatus::Done);
    assert_eq!(db.store.counts(again.id).await.unwrap().get(ItemState::Skipped), 250);
    assert_eq!(h.sb.provider.stats().answered, 50);
}

async fn review_holds_proposals_until_approved(db: &TestDb) {
    let h = harness(db, 20, 2, ConfigOptions { policy: "all", ..Default::default() }).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview);
    assert!(h.sb.store.writes().is_empty(), "nothing is written before review");
    let proposed = db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(proposed.len(), 10);
    let first = &proposed[0];
    let change = &first.proposal.as_ref().unwrap().fields["description"];
    assert_eq!(change.before, json!(""));
    let task = &h.engine.pipelines["catalogue"].task();
    db.store.edit(first.id, "reviewer:ann", task, "description", json!("Edited by Ann, carefully.")).await.unwrap();
    for item in &proposed {
        if item.id == proposed[1].id {
            db.store.reject(item.id, "reviewer:ann", Some("off-brand")).await.unwrap();
        } else {
            db.store.approve(item.id, "reviewer:ann").await.unwrap();
        }
    }
    // The daemon-style loop (any run of the pipeline) writes the approved items.
    let run = work(&h.engine, run.id, Duration::from_secs(1)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut run = run;
    while run.status != RunStatus::Done && std::time::Instant::now() < deadline {
        run = work(&h.engine, run.id, Duration::from_millis(500)).await;
        run = db.store.settle_run(run.id, "test").await.unwrap();
    }
    assert_eq!(run.status, RunStatus::Done);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Rejected)), (9, 1));
    let edited_id: u64 = first.external_id.parse().unwrap();
    assert_eq!(h.sb.store.record("product", edited_id).unwrap().1["description"], "Edited by Ann, carefully.");
    let rejected_id: u64 = proposed[1].external_id.parse().unwrap();
    assert_eq!(
        h.sb.store.record("product", rejected_id).unwrap().1["description"],
        "",
        "a rejected proposal is never written"
    );
}

async fn upstream_edits_become_conflicts_and_are_never_clobbered(db: &TestDb) {
    let h = harness(db, 10, 1, ConfigOptions { policy: "all", ..Default::default() }).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview);
    // Someone edits products 3 and 7 in the shop after they were pulled.
    h.sb.store.edit("product", 3, "description", json!("Written by the shop owner"));
    h.sb.store.edit("product", 7, "name", json!("Renamed upstream"));
    for item in db.store.items(run.id, Some(ItemState::Proposed), 100).await.unwrap() {
        db.store.approve(item.id, "reviewer:ann").await.unwrap();
    }
    let mut run = run;
    for _ in 0..20 {
        run = work(&h.engine, run.id, Duration::from_millis(300)).await;
        run = db.store.settle_run(run.id, "test").await.unwrap();
        if run.status == RunStatus::Done {
            break;
        }
    }
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Conflict)), (8, 2));
    assert_eq!(h.sb.store.record("product", 3).unwrap().1["description"], "Written by the shop owner");
    assert_eq!(
        h.sb.store.record("product", 7).unwrap().1["description"],
        "",
        "a conflicting record is not written at all"
    );
    let conflicts = db.store.items(run.id, Some(ItemState::Conflict), 10).await.unwrap();
    assert!(
        conflicts[0].last_error.as_ref().unwrap().contains("changed upstream since it was pulled (version 1 → 2)"),
        "{:?}",
        conflicts[0].last_error
    );
    let event = db.store.item_events(conflicts[0].id).await.unwrap().pop().unwrap();
    assert_eq!(event.detail.unwrap()["upstream_version"], "2");
}

async fn faults_on_both_sides_lose_nothing(db: &TestDb) {
    let h = harness(db, 200, 2, ConfigOptions { max_attempts: 30, ..Default::default() }).await;
    h.sb.store.set_faults(enrichd_teststore::sandbox::Faults {
        server_error_rate: 0.15,
        rate_limit_rate: 0.1,
        ..Default::default()
    });
    h.sb.provider.set_faults(enrichd::sandbox::provider::Faults {
        server_error_rate: 0.15,
        rate_limit_rate: 0.1,
        truncated_rate: 0.1,
        ..Default::default()
    });
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(120)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", db.store.counts(run.id).await.unwrap());
    let counts = db.store.counts(run.id).await.unwrap();
    let dead: Vec<_> =
        db.store.items(run.id, Some(ItemState::Dead), 10).await.unwrap().into_iter().map(|i| i.last_error).collect();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Skipped)), (100, 100), "{counts:?} {dead:?}");
    assert!(h.sb.provider.stats().faults > 0 && h.sb.store.stats().rejected_by_faults > 0, "faults were injected");
    let mut written_ids: Vec<_> = h.sb.store.writes().into_iter().map(|w| w.id).collect();
    written_ids.sort();
    let before = written_ids.len();
    written_ids.dedup();
    assert_eq!(before, written_ids.len(), "a record was written twice");
    for id in (2..=200u64).step_by(2) {
        assert_eq!(h.sb.store.record("product", id).unwrap().1["description"], json!(expected_description(id)));
    }
    // Retries are in the audit trail.
    let retried = db
        .store
        .run_events(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_state.as_deref() == Some("queued") && e.from_state.as_deref() == Some("enriching"))
        .count();
    assert!(retried > 0);
}

async fn permanent_errors_are_dead_with_their_reason(db: &TestDb) {
    let h = harness(db, 4, 1, ConfigOptions::default()).await;
    // The provider rejects our key: nothing can succeed, and retrying will not help.
    h.engine.providers["sim"].check().await.unwrap();
    let bad = enrichd::sandbox::provider::ProviderSandbox::new(Some("another-key"));
    let addr = bad.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandboxes {
        provider_url: format!("http://{addr}/v1"),
        store: h.sb.store.clone(),
        store_url: h.sb.store_url.clone(),
        provider: bad,
    };
    let config = Config::load(&write_config(dir.path(), &db.url, &sb, &ConfigOptions::default())).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    let run = start_run(&engine).await;
    let run = work(&engine, run.id, Duration::from_secs(30)).await;
    assert_eq!(run.status, RunStatus::Done);
    let dead = db.store.items(run.id, Some(ItemState::Dead), 10).await.unwrap();
    assert_eq!(dead.len(), 4);
    assert_eq!(dead[0].attempts, 1, "a permanent error is not retried");
    let reason = dead[0].last_error.as_ref().unwrap();
    assert!(
        reason.contains("record 1") && reason.contains("HTTP 401") && reason.contains("invalid_api_key"),
        "{reason}"
    );
    assert!(!reason.contains(common::PROVIDER_KEY), "the key must not leak into errors");
    assert!(sb.store.writes().is_empty());
}

async fn schema_invalid_answers_are_retried_then_dead_with_the_raw_output(db: &TestDb) {
    let h = harness(db, 3, 1, ConfigOptions { max_attempts: 2, ..Default::default() }).await;
    let path = h._dir.path().join("enrichd.toml");
    // The sandbox answers prose; this schema wants digits only.
    let text = std::fs::read_to_string(&path).unwrap().replace("minLength = 10", "pattern = \"^[0-9]+$\"");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
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
    assert_eq!(h.sb.provider.stats().answered, 6);
    assert!(h.sb.store.writes().is_empty(), "nothing invalid was written");
}

on_both_backends! {
    schema_invalid => schema_invalid_answers_are_retried_then_dead_with_the_raw_output;
    enriches_missing => enriches_exactly_the_records_missing_fields;
    review_holds => review_holds_proposals_until_approved;
    conflicts => upstream_edits_become_conflicts_and_are_never_clobbered;
    faults => faults_on_both_sides_lose_nothing;
    permanent_errors => permanent_errors_are_dead_with_their_reason;
}
