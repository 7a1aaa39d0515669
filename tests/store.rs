//! The store's behaviour, run on SQLite and Postgres alike: the item's life (every legal and illegal
//! transition, with events), leases (claim, heartbeat, expiry, reclaim, release), retry scheduling,
//! runs, discovery, concurrent claimers, and encrypted credentials.

mod common;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use common::TestDb;
use enrichd::store::{
    Claim, CredentialVault, EnrichFailure, FieldChange, Item, ItemState, NewItem, NewRun, Proposal, RetryPolicy,
    RunStart, RunStatus, SampleGate, Store, StoreError, Usage, Work, now_ms,
};
use serde_json::json;

const OWNER: &str = "worker-a";
const FAST: RetryPolicy = RetryPolicy { base: Duration::from_millis(200), max: Duration::from_secs(2) };

fn new_items(range: std::ops::Range<u32>) -> Vec<NewItem> {
    range
        .map(|i| NewItem {
            entity: "product".into(),
            external_id: i.to_string(),
            record_version: "v1".into(),
            input: json!({"name": format!("thing {i}"), "description": ""}).to_string(),
            input_hash: format!("hash-{i}"),
            skip: None,
        })
        .collect()
}

async fn run_with_items(store: &Store, pipeline: &str, n: u32, max_attempts: i64) -> i64 {
    let RunStart::Created(run) = store
        .create_run(&NewRun {
            pipeline: pipeline.into(),
            scheduled_for: None,
            item_limit: None,
            max_attempts,
            budget_micros: None,
            sample: None,
        })
        .await
        .unwrap()
    else {
        panic!("run not created")
    };
    store.claim_discovery(run.id, "discoverer", Duration::from_secs(60)).await.unwrap().expect("discovery lease");
    for chunk in new_items(0..n).chunks(500) {
        store.add_discovered(run.id, pipeline, "t1", "discoverer", chunk, Some("next")).await.unwrap();
    }
    run.id
}

fn claim(pipeline: &'static str, work: Work, owner: &'static str, limit: usize, lease: Duration) -> Claim<'static> {
    Claim { pipeline, run_id: None, work, owner, limit, lease }
}

/// The shortest chain of legal transitions from `queued` to `target`.
fn path_to(target: ItemState) -> Vec<ItemState> {
    let mut queue = VecDeque::from([vec![ItemState::Queued]]);
    while let Some(path) = queue.pop_front() {
        let last = *path.last().unwrap();
        if last == target {
            return path;
        }
        for &next in last.successors() {
            if !path.contains(&next) {
                let mut p = path.clone();
                p.push(next);
                queue.push_back(p);
            }
        }
    }
    panic!("{target} unreachable from queued")
}

async fn walk(store: &Store, id: i64, path: &[ItemState]) {
    for pair in path.windows(2) {
        store
            .force_transition(id, pair[0], pair[1], "test")
            .await
            .unwrap_or_else(|e| panic!("{} → {}: {e}", pair[0], pair[1]));
    }
}

async fn transition_table_matches_database(db: &TestDb) {
    let mut in_db = db.store.transition_table().await.unwrap();
    in_db.sort();
    let mut in_code: Vec<_> =
        ItemState::ALL.iter().flat_map(|&from| from.successors().iter().map(move |&to| (from, to))).collect();
    in_code.sort();
    assert_eq!(in_db, in_code);
}

async fn every_legal_transition_is_applied_with_one_event(db: &TestDb) {
    let store = &db.store;
    let pairs: Vec<_> = ItemState::ALL
        .iter()
        .filter(|s| **s != ItemState::Discovered)
        .flat_map(|&from| from.successors().iter().map(move |&to| (from, to)))
        .collect();
    let run = run_with_items(store, "p", pairs.len() as u32, 5).await;
    let items = store.items(run, None, 1000).await.unwrap();
    for ((from, to), item) in pairs.iter().zip(&items) {
        walk(store, item.id, &path_to(*from)).await;
        let before = store.item_events(item.id).await.unwrap().len();
        let moved = store.force_transition(item.id, *from, *to, "test").await.unwrap();
        assert_eq!(moved.state, *to);
        assert_eq!(moved.prev_state, Some(*from));
        assert_eq!(
            moved.lease_owner.is_some(),
            to.is_leased(),
            "{from} → {to}: lease must be held exactly in leased states"
        );
        let events = store.item_events(item.id).await.unwrap();
        assert_eq!(events.len(), before + 1, "{from} → {to} must write exactly one event");
        let last = events.last().unwrap();
        assert_eq!((last.from_state.as_deref(), last.to_state.as_deref()), (Some(from.as_str()), Some(to.as_str())));
    }
    // Discovery itself: created as discovered, then queued, two events.
    let events = store.item_events(items[0].id).await.unwrap();
    assert_eq!((events[0].from_state.as_deref(), events[0].to_state.as_deref()), (None, Some("discovered")));
    assert_eq!((events[1].from_state.as_deref(), events[1].to_state.as_deref()), (Some("discovered"), Some("queued")));
}

async fn every_illegal_transition_is_refused_and_leaves_no_trace(db: &TestDb) {
    let store = &db.store;
    let pairs: Vec<_> = ItemState::ALL
        .iter()
        .filter(|s| **s != ItemState::Discovered)
        .flat_map(|&from| ItemState::ALL.iter().filter(move |to| !from.can_become(**to)).map(move |&to| (from, to)))
        .collect();
    let run = run_with_items(store, "p", pairs.len() as u32, 5).await;
    let items = store.items(run, None, 1000).await.unwrap();
    for ((from, to), item) in pairs.iter().zip(&items) {
        walk(store, item.id, &path_to(*from)).await;
        let before = store.item_events(item.id).await.unwrap();
        let err = store.force_transition(item.id, *from, *to, "test").await.unwrap_err();
        assert!(matches!(err, StoreError::IllegalTransition { .. }), "{from} → {to}: {err}");
        assert_eq!(store.item(item.id).await.unwrap().state, *from);
        assert_eq!(store.item_events(item.id).await.unwrap(), before, "{from} → {to} left an event");
    }
    // A transition from a state the item is not in is refused too, naming the item and its state.
    let item = &items[0];
    let state = store.item(item.id).await.unwrap().state;
    let wrong_from = if state == ItemState::Proposed { ItemState::Edited } else { ItemState::Proposed };
    let err = store.force_transition(item.id, wrong_from, ItemState::Approved, "test").await.unwrap_err();
    assert_eq!(err.to_string(), format!("item {}: illegal transition {state} → approved", item.id));
}

async fn the_database_refuses_illegal_transitions_and_event_edits(db: &TestDb) {
    let store = &db.store;
    let run = run_with_items(store, "p", 1, 5).await;
    let item = &store.items(run, None, 1).await.unwrap()[0];
    let direct =
        sqlx::query("UPDATE items SET state = 'written' WHERE id = $1").bind(item.id).execute(store.write_pool()).await;
    assert!(direct.unwrap_err().to_string().contains("illegal item transition"));
    assert_eq!(store.item(item.id).await.unwrap().state, ItemState::Queued);
    let edit = sqlx::query("UPDATE events SET actor = 'mallory' WHERE item_id = $1")
        .bind(item.id)
        .execute(store.write_pool())
        .await;
    assert!(edit.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM events WHERE item_id = $1").bind(item.id).execute(store.write_pool()).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    // A leased state without a lease is refused by a CHECK constraint.
    let unleased = sqlx::query("UPDATE items SET state = 'enriching' WHERE id = $1")
        .bind(item.id)
        .execute(store.write_pool())
        .await;
    assert!(unleased.is_err());
    // An item is born discovered, queued or skipped: never straight into a later state.
    let born_written = sqlx::query(
        "INSERT INTO items (run_id, pipeline, entity, external_id, state, max_attempts, record_version, input, \
         input_hash, task_version, created_at, updated_at) \
         VALUES ($1, 'p', 'product', 'forged', 'written', 5, '1', '{}', 'h', 'v1', 0, 0)",
    )
    .bind(run)
    .execute(store.write_pool())
    .await;
    assert!(born_written.unwrap_err().to_string().contains("illegal initial item state"));
    assert_eq!(store.items(run, None, 10).await.unwrap().len(), 1, "nothing was inserted");
}

async fn claims_lease_and_only_the_holder_finishes(db: &TestDb) {
    let store = &db.store;
    run_with_items(store, "p", 10, 5).await;
    let lease = Duration::from_secs(30);
    let mine = store.claim(&claim("p", Work::Enrich, OWNER, 4, lease)).await.unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine.iter().all(|i| i.state == ItemState::Enriching && i.lease_owner.as_deref() == Some(OWNER)));
    let theirs = store.claim(&claim("p", Work::Enrich, "worker-b", 100, lease)).await.unwrap();
    assert_eq!(theirs.len(), 6, "the rest, and none of mine");
    assert!(store.claim(&claim("p", Work::Enrich, "worker-c", 100, lease)).await.unwrap().is_empty());
    assert!(store.claim(&claim("other", Work::Enrich, "worker-c", 100, lease)).await.unwrap().is_empty());

    let proposal = Proposal {
        fields: [(
            "description".into(),
            FieldChange { before: json!(""), proposed: json!("<p>New</p>"), edited: None },
        )]
        .into(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: vec![],
        ..Default::default()
    };
    let usage = Usage { input_tokens: 100, output_tokens: 20, cost_micros: 150, unpriced: false };
    let err = store.propose(&mine[0], "worker-b", &proposal, "{}", usage, None).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    let proposed = store.propose(&mine[0], OWNER, &proposal, "{}", usage, None).await.unwrap();
    assert_eq!(proposed.state, ItemState::Proposed);
    assert_eq!(proposed.lease_owner, None);
    assert_eq!(proposed.proposal.as_ref(), Some(&proposal));
    assert_eq!((proposed.cost_micros, proposed.tokens_in, proposed.tokens_out), (150, 100, 20));
    let run = store.run(proposed.run_id).await.unwrap();
    assert_eq!((run.cost_micros, run.tokens_in, run.tokens_out), (150, 100, 20));

    // A policy that approves without a human does it in the same transaction: two transitions, two events.
    let approved = store.propose(&mine[3], OWNER, &proposal, "{}", usage, Some("policy:none")).await.unwrap();
    assert_eq!((approved.state, approved.prev_state), (ItemState::Approved, Some(ItemState::Proposed)));
    let tail: Vec<_> = store.item_events(mine[3].id).await.unwrap().into_iter().rev().take(2).collect();
    assert_eq!(
        (tail[1].to_state.as_deref(), tail[0].to_state.as_deref(), tail[0].actor.as_str()),
        (Some("proposed"), Some("approved"), "policy:none")
    );

    // Heartbeat extends only my leases.
    let before = store.item(mine[1].id).await.unwrap().lease_expires_at.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.heartbeat(OWNER, Duration::from_secs(120)).await.unwrap(), 2);
    let after = store.item(mine[1].id).await.unwrap().lease_expires_at.unwrap();
    assert!(after > before + 80_000, "lease not extended: {before} → {after}");
}

async fn expired_leases_are_reclaimed_until_attempts_run_out(db: &TestDb) {
    let store = &db.store;
    let run = run_with_items(store, "p", 3, 2).await;
    let short = Duration::from_millis(50);
    let claimed = store.claim(&claim("p", Work::Enrich, OWNER, 3, short)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // A live holder keeps its lease by heartbeating; a dead one does not.
    assert!(store.reclaim_expired("reaper").await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(80)).await;
    let reclaimed = store.reclaim_expired("reaper").await.unwrap();
    assert_eq!(reclaimed.len(), 3);
    for item in store.items(run, None, 10).await.unwrap() {
        assert_eq!(item.state, ItemState::Queued);
        assert_eq!(item.attempts, 1);
        assert_eq!(item.lease_owner, None);
        assert_eq!(item.last_error.as_deref(), Some("lease held by worker-a expired"));
        let last = store.item_events(item.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.from_state.as_deref(), last.to_state.as_deref(), last.actor.as_str()),
            (Some("enriching"), Some("queued"), "reaper")
        );
    }
    // The holder that was presumed dead cannot finish the work now.
    let err = store.skip_leased(&claimed[0], OWNER, "late").await.unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }), "{err}");
    // Second expiry reaches max_attempts = 2: dead, with the reason.
    store.claim(&claim("p", Work::Enrich, OWNER, 3, short)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    store.reclaim_expired("reaper").await.unwrap();
    let counts = store.counts(run).await.unwrap();
    assert_eq!(counts.get(ItemState::Dead), 3);

    // Writing leases: reclaimed to write_failed, which is claimed for writing again.
    let run2 = run_with_items(store, "w", 1, 3).await;
    let item = &store.items(run2, None, 1).await.unwrap()[0];
    walk(store, item.id, &[ItemState::Queued, ItemState::Enriching, ItemState::Proposed, ItemState::Approved]).await;
    store.claim(&claim("w", Work::Write, OWNER, 10, short)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    store.reclaim_expired("reaper").await.unwrap();
    let item = store.item(item.id).await.unwrap();
    assert_eq!((item.state, item.write_attempts), (ItemState::WriteFailed, 1));
    let again = store.claim(&claim("w", Work::Write, "worker-b", 10, Duration::from_secs(30))).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].prev_state, Some(ItemState::WriteFailed));
}

async fn failures_are_retried_with_backoff_then_dead(db: &TestDb) {
    let store = &db.store;
    let run = run_with_items(store, "p", 2, 3).await;
    let lease = Duration::from_secs(30);
    let items = store.claim(&claim("p", Work::Enrich, OWNER, 2, lease)).await.unwrap();
    let t0 = now_ms();
    let retried = store
        .fail_enrichment(
            &items[0],
            OWNER,
            EnrichFailure {
                error: "HTTP 503",
                retryable: true,
                retry_after: None,
                raw_output: None,
                usage: Usage::default(),
            },
            FAST,
        )
        .await
        .unwrap();
    assert_eq!((retried.state, retried.attempts), (ItemState::Queued, 1));
    assert!(
        retried.next_attempt_at >= t0 + 100 && retried.next_attempt_at <= now_ms() + 200,
        "first backoff in [base/2, base]"
    );
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    // Not claimable before its time...
    assert!(store.claim(&claim("p", Work::Enrich, OWNER, 10, lease)).await.unwrap().is_empty());
    // ...and claimable after, honouring a Retry-After longer than the backoff.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = store.claim(&claim("p", Work::Enrich, OWNER, 10, lease)).await.unwrap();
    assert_eq!(again.len(), 1);
    let waited = store
        .fail_enrichment(
            &again[0],
            OWNER,
            EnrichFailure {
                error: "HTTP 429",
                retryable: true,
                retry_after: Some(Duration::from_secs(7)),
                raw_output: None,
                usage: Usage::default(),
            },
            FAST,
        )
        .await
        .unwrap();
    assert!(waited.next_attempt_at >= now_ms() + 6_500, "Retry-After of 7 s must be honoured");

    // A non-retryable error is dead at once, with the reason and the raw output kept, and its cost counted.
    let cost = Usage { input_tokens: 10, output_tokens: 5, cost_micros: 42, unpriced: false };
    let dead = store
        .fail_enrichment(
            &items[1],
            OWNER,
            EnrichFailure {
                error: "HTTP 400 invalid_request",
                retryable: false,
                retry_after: None,
                raw_output: Some("{\"bad\""),
                usage: cost,
            },
            FAST,
        )
        .await
        .unwrap();
    assert_eq!(dead.state, ItemState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 400 invalid_request"));
    assert_eq!(dead.raw_output.as_deref(), Some("{\"bad\""));
    assert_eq!(dead.cost_micros, 42);
    assert_eq!(store.run(run).await.unwrap().cost_micros, 42);
    let last = store.item_events(dead.id).await.unwrap().pop().unwrap();
    assert_eq!(last.detail.unwrap()["error"], "HTTP 400 invalid_request");

    // Write failures: retry as write_failed, dead after max_attempts.
    let run2 = run_with_items(store, "w", 1, 2).await;
    let item = &store.items(run2, None, 1).await.unwrap()[0];
    walk(store, item.id, &[ItemState::Queued, ItemState::Enriching, ItemState::Proposed, ItemState::Approved]).await;
    let w = store.claim(&claim("w", Work::Write, OWNER, 1, lease)).await.unwrap().remove(0);
    let failed = store.fail_write(&w, OWNER, "HTTP 502", true, None, FAST).await.unwrap();
    assert_eq!(failed.state, ItemState::WriteFailed);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let w = store.claim(&claim("w", Work::Write, OWNER, 1, lease)).await.unwrap().remove(0);
    let dead = store.fail_write(&w, OWNER, "HTTP 502", true, None, FAST).await.unwrap();
    assert_eq!((dead.state, dead.write_attempts), (ItemState::Dead, 2));
}

async fn review_edit_approve_and_write_outcomes(db: &TestDb) {
    let store = &db.store;
    let run = run_with_items(store, "p", 3, 5).await;
    let lease = Duration::from_secs(30);
    let items = store.claim(&claim("p", Work::Enrich, OWNER, 3, lease)).await.unwrap();
    let proposal = Proposal {
        fields: [(
            "description".into(),
            FieldChange { before: json!(""), proposed: json!("model text"), edited: None },
        )]
        .into(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: vec![],
        ..Default::default()
    };
    for i in &items {
        store.propose(i, OWNER, &proposal, "{}", Usage::default(), None).await.unwrap();
    }
    let task: enrichd::config::TaskConfig = toml::from_str(
        r#"
        prompt = "x"
        output_schema = { type = "object", properties = { description = { type = "string" } } }
        fields = { description = "description" }
        "#,
    )
    .unwrap();
    let task = enrichd::task::Task::build("t", &task).unwrap();
    let edited = store.edit(items[0].id, "reviewer:ann", &task, "description", json!("human text")).await.unwrap();
    assert_eq!(edited.state, ItemState::Edited);
    assert_eq!(edited.proposal.unwrap().values()["description"], "human text");
    let err = store.edit(items[0].id, "reviewer:ann", &task, "price", json!("1")).await.unwrap_err();
    assert!(err.to_string().contains("\"price\""), "{err}");
    store.approve(items[0].id, "reviewer:ann").await.unwrap();
    store.approve(items[1].id, "policy:none").await.unwrap();
    let rejected = store.reject(items[2].id, "reviewer:bob", Some("tone")).await.unwrap();
    assert_eq!(rejected.last_error.as_deref(), Some("tone"));
    assert!(store.approve(items[2].id, "reviewer:bob").await.is_err(), "a rejected item cannot be approved");

    let writing = store.claim(&claim("p", Work::Write, OWNER, 10, lease)).await.unwrap();
    assert_eq!(writing.len(), 2);
    let written = store.mark_written(&writing[0], OWNER, Some("v2"), None).await.unwrap();
    assert_eq!((written.state, written.written_version.as_deref()), (ItemState::Written, Some("v2")));
    let conflict = store.mark_conflict(&writing[1], OWNER, Some("v9"), "changed upstream").await.unwrap();
    assert_eq!(conflict.state, ItemState::Conflict);
    let actors: Vec<_> = store.item_events(items[0].id).await.unwrap().into_iter().map(|e| e.actor).collect();
    assert!(actors.contains(&"reviewer:ann".to_string()));
    let run = store.settle_run(run, "test").await.unwrap();
    assert_eq!(run.status, RunStatus::Discovering, "a run still discovering is not settled");
}

async fn runs_are_created_once_per_tick_and_once_while_active(db: &TestDb) {
    let store = &db.store;
    let tick = NewRun {
        pipeline: "p".into(),
        scheduled_for: Some(1_000),
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(first) = store.create_run(&tick).await.unwrap() else { panic!() };
    // The same tick from another daemon while the run is active: the active run.
    assert_eq!(store.create_run(&tick).await.unwrap(), RunStart::AlreadyActive(store.run(first.id).await.unwrap()));
    // A manual run while one is active: the active run.
    let manual = NewRun { scheduled_for: None, ..tick.clone() };
    assert!(matches!(store.create_run(&manual).await.unwrap(), RunStart::AlreadyActive(r) if r.id == first.id));
    store.set_run_status(first.id, &[RunStatus::Discovering], RunStatus::Done, None, "test").await.unwrap().unwrap();
    // The same tick again after the run finished: still not a second run.
    assert_eq!(store.create_run(&tick).await.unwrap(), RunStart::TickTaken);
    let next = NewRun { scheduled_for: Some(2_000), ..tick };
    assert!(matches!(store.create_run(&next).await.unwrap(), RunStart::Created(_)));
    // Another pipeline is independent.
    let other = NewRun {
        pipeline: "q".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: None,
    };
    assert!(matches!(store.create_run(&other).await.unwrap(), RunStart::Created(_)));
}

async fn discovery_is_leased_idempotent_and_settles(db: &TestDb) {
    let store = &db.store;
    let RunStart::Created(run) = store
        .create_run(&NewRun {
            pipeline: "p".into(),
            scheduled_for: None,
            item_limit: None,
            max_attempts: 3,
            budget_micros: None,
            sample: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let lease = Duration::from_secs(60);
    assert!(store.claim_discovery(run.id, "a", lease).await.unwrap().is_some());
    assert!(
        store.claim_discovery(run.id, "b", lease).await.unwrap().is_none(),
        "b must not discover while a holds the lease"
    );
    let err = store.add_discovered(run.id, "p", "t1", "b", &new_items(0..2), Some("2")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    let mut page = new_items(0..3);
    page[2].skip = Some("nothing is missing".into());
    assert_eq!(store.add_discovered(run.id, "p", "t1", "a", &page, Some("2")).await.unwrap(), 3);
    // The same page again (a restart before the cursor was saved elsewhere): nothing new.
    assert_eq!(store.add_discovered(run.id, "p", "t1", "a", &page, Some("2")).await.unwrap(), 0);
    let run_now = store.run(run.id).await.unwrap();
    assert_eq!(run_now.discovery_cursor.as_deref(), Some("2"));
    let counts = store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Queued), counts.get(ItemState::Skipped)), (2, 1));
    let skipped = store.items(run.id, Some(ItemState::Skipped), 10).await.unwrap();
    assert_eq!(skipped[0].last_error.as_deref(), Some("nothing is missing"));

    store.set_run_status(run.id, &[RunStatus::Discovering], RunStatus::Running, None, "a").await.unwrap().unwrap();
    let lease = Duration::from_secs(30);
    let items = store.claim(&claim("p", Work::Enrich, OWNER, 10, lease)).await.unwrap();
    let proposal = Proposal {
        fields: Default::default(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: vec![],
        ..Default::default()
    };
    store.propose(&items[0], OWNER, &proposal, "{}", Usage::default(), None).await.unwrap();
    assert_eq!(store.settle_run(run.id, "t").await.unwrap().status, RunStatus::Running, "an item is still enriching");
    store.skip_leased(&items[1], OWNER, "model had nothing to add").await.unwrap();
    assert_eq!(store.settle_run(run.id, "t").await.unwrap().status, RunStatus::AwaitingReview);
    store.reject(items[0].id, "reviewer", None).await.unwrap();
    let done = store.settle_run(run.id, "t").await.unwrap();
    assert_eq!(done.status, RunStatus::Done);
    assert!(done.finished_at.is_some());
    let run_events: Vec<_> = store.run_events(run.id).await.unwrap().into_iter().filter(|e| e.kind == "run").collect();
    let statuses: Vec<_> = run_events.iter().map(|e| e.to_state.clone().unwrap()).collect();
    assert_eq!(statuses, ["discovering", "running", "awaiting_review", "done"]);
}

async fn budget_stops_claiming_and_pauses_the_run(db: &TestDb) {
    let store = &db.store;
    let RunStart::Created(run) = store
        .create_run(&NewRun {
            pipeline: "p".into(),
            scheduled_for: None,
            item_limit: None,
            max_attempts: 3,
            budget_micros: Some(1_000),
            sample: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    store.claim_discovery(run.id, "a", Duration::from_secs(60)).await.unwrap();
    store.add_discovered(run.id, "p", "t1", "a", &new_items(0..5), None).await.unwrap();
    store.set_run_status(run.id, &[RunStatus::Discovering], RunStatus::Running, None, "a").await.unwrap();
    let lease = Duration::from_secs(30);
    let first = store.claim(&claim("p", Work::Enrich, OWNER, 1, lease)).await.unwrap();
    let proposal = Proposal {
        fields: Default::default(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: vec![],
        ..Default::default()
    };
    store
        .propose(
            &first[0],
            OWNER,
            &proposal,
            "{}",
            Usage { input_tokens: 1, output_tokens: 1, cost_micros: 1_200, unpriced: false },
            None,
        )
        .await
        .unwrap();
    assert!(
        store.claim(&claim("p", Work::Enrich, OWNER, 10, lease)).await.unwrap().is_empty(),
        "budget spent: no new claims"
    );
    let paused = store.settle_run(run.id, "t").await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    assert!(
        paused.status_reason.unwrap().starts_with("budget reached: $0.0012 spent of $0.0010; 4 items not enriched")
    );
}

async fn release_gives_back_leases_without_charging_attempts(db: &TestDb) {
    let store = &db.store;
    let run = run_with_items(store, "p", 4, 3).await;
    let lease = Duration::from_secs(30);
    let items = store.claim(&claim("p", Work::Enrich, OWNER, 2, lease)).await.unwrap();
    walk(store, items[0].id, &[ItemState::Enriching, ItemState::Proposed, ItemState::Approved]).await;
    store.claim(&claim("p", Work::Write, OWNER, 2, lease)).await.unwrap();
    store.claim(&claim("p", Work::Enrich, "worker-b", 1, lease)).await.unwrap();
    assert_eq!(store.release(OWNER).await.unwrap(), 2);
    let counts = store.counts(run).await.unwrap();
    assert_eq!(counts.get(ItemState::WriteFailed), 1, "a write in flight is re-checked, not assumed");
    assert_eq!(counts.get(ItemState::Enriching), 1, "worker-b keeps its lease");
    for item in store.items(run, None, 10).await.unwrap() {
        assert_eq!((item.attempts, item.write_attempts), (0, 0));
    }
}

/// Four claimers with their own connection pools drain 3,000 items; none is ever held twice.
async fn concurrent_claimers_never_share_an_item(db: &TestDb) {
    let n = 3_000;
    run_with_items(&db.store, "p", n, 5).await;
    let owners = ["c1", "c2", "c3", "c4"];
    let mut tasks = Vec::new();
    for owner in owners {
        let store = db.connect_again(2).await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = Claim {
                    pipeline: "p",
                    run_id: None,
                    work: Work::Enrich,
                    owner,
                    limit: 25,
                    lease: Duration::from_secs(60),
                };
                let items = store.claim(&c).await.unwrap();
                if items.is_empty() {
                    break;
                }
                for item in &items {
                    assert_eq!(item.lease_owner.as_deref(), Some(owner));
                    store.skip_leased(item, owner, "done").await.unwrap();
                }
                got.extend(items.into_iter().map(|i| i.id));
            }
            store.close().await;
            got
        }));
    }
    let mut all = Vec::new();
    let mut per_owner = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_owner.push(got.len());
        all.extend(got);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an item was claimed twice");
    assert_eq!(all.len(), n as usize, "every item claimed exactly once");
    assert!(per_owner.iter().filter(|c| **c > 0).count() >= 2, "claimers did not interleave: {per_owner:?}");
}

/// Four claimers with their own pools race for a sampling run's enrichment: together they take
/// exactly the sample, and none after it until the gate is released.
async fn concurrent_claimers_never_exceed_the_sample(db: &TestDb) {
    let new = NewRun {
        pipeline: "p".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: Some(SampleGate { size: 7, auto_release_max_reject_rate: None }),
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!() };
    db.store.claim_discovery(run.id, OWNER, Duration::from_secs(60)).await.unwrap();
    db.store.add_discovered(run.id, "p", "t1", OWNER, &new_items(0..60), None).await.unwrap();
    let mut tasks = Vec::new();
    for owner in ["s1", "s2", "s3", "s4"] {
        let store = db.connect_again(2).await;
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..5 {
                got += store.claim(&claim("p", Work::Enrich, owner, 3, Duration::from_secs(60))).await.unwrap().len();
            }
            store.close().await;
            got
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 7, "the sample is the cap");
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Enriching), 7);
    db.store.release_sample(run.id, "ann", Some("the sample is still being made; release it anyway")).await.unwrap();
    let more = db.store.claim(&claim("p", Work::Enrich, OWNER, 10, Duration::from_secs(60))).await.unwrap();
    assert_eq!(more.len(), 10, "released: the rest of the run flows");
}

async fn credentials_are_encrypted_at_rest(db: &TestDb) {
    let store = &db.store;
    let key: secrecy::SecretString = "correct horse battery staple".into();
    let vault = CredentialVault::new(store.clone(), Some(&key));
    vault.put("xero", b"refresh-token-123").await.unwrap();
    assert_eq!(vault.get("xero").await.unwrap().as_deref(), Some(&b"refresh-token-123"[..]));
    let raw: String = sqlx::query_scalar("SELECT ciphertext FROM credentials WHERE connection = 'xero'")
        .fetch_one(store.write_pool())
        .await
        .unwrap();
    assert!(!raw.contains(&hex::encode("refresh-token")), "stored in plain text");
    let wrong: secrecy::SecretString = "another key".into();
    let err = CredentialVault::new(store.clone(), Some(&wrong)).get("xero").await.unwrap_err();
    assert!(err.to_string().contains("connection xero") && err.to_string().contains("secret_key"), "{err}");
    let err = CredentialVault::new(store.clone(), None).put("qbo", b"x").await.unwrap_err();
    assert!(err.to_string().contains("database.secret_key is not set"), "{err}");
    vault.put("xero", b"rotated").await.unwrap();
    assert_eq!(vault.get("xero").await.unwrap().as_deref(), Some(&b"rotated"[..]));
}

/// Many proposals at once are committed together (group commit): each item gets its own answer and
/// events, an item whose lease was taken fails alone with `LeaseLost`, and the run's totals are the
/// sum of exactly the proposals that landed.
async fn concurrent_proposals_land_together_and_fail_alone(db: &TestDb) {
    let store = &db.store;
    let run_id = run_with_items(store, "p", 120, 5).await;
    let lease = Duration::from_secs(30);
    let mine = store.claim(&claim("p", Work::Enrich, OWNER, 120, lease)).await.unwrap();
    assert_eq!(mine.len(), 120);
    // Every tenth item's lease expires and another worker takes it.
    let stolen: HashSet<i64> = mine.iter().step_by(10).map(|i| i.id).collect();
    for id in &stolen {
        walk(store, *id, &[ItemState::Enriching, ItemState::Queued]).await;
    }
    let theirs = store.claim(&claim("p", Work::Enrich, "worker-b", 100, lease)).await.unwrap();
    assert_eq!(theirs.iter().map(|i| i.id).collect::<HashSet<_>>(), stolen);

    let usage = Usage { input_tokens: 10, output_tokens: 2, cost_micros: 7, unpriced: false };
    let proposals = mine.iter().map(|item| {
        let proposal = description_proposal(format!("for {}", item.external_id));
        let approve = (item.id % 2 == 0).then_some("policy:none");
        async move { (item.id, store.propose(item, OWNER, &proposal, "{}", usage, approve).await) }
    });
    // Every fifteenth item is also proposed a second time at once (a duplicated call, never
    // approving): both calls land in the same group commit, and exactly one may take effect.
    let twice: Vec<&Item> = mine.iter().filter(|i| !stolen.contains(&i.id)).step_by(15).collect();
    let duplicates = twice.iter().map(|item| {
        let proposal = description_proposal(format!("again {}", item.external_id));
        async move { (item.id, store.propose(item, OWNER, &proposal, "{}", usage, None).await) }
    });
    let (outcomes, duplicated) =
        futures::future::join(futures::future::join_all(proposals), futures::future::join_all(duplicates)).await;
    let twice: HashSet<i64> = twice.iter().map(|i| i.id).collect();
    for (id, second) in &duplicated {
        let first = &outcomes.iter().find(|(i, _)| i == id).unwrap().1;
        let landed = [first.is_ok(), second.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(landed, 1, "item {id} proposed twice at once: {first:?} / {second:?}");
        // The call told it landed is the one whose answer is stored.
        let stored = store.item(*id).await.unwrap().proposal.unwrap().fields["description"].proposed.clone();
        let external = &mine.iter().find(|i| i.id == *id).unwrap().external_id;
        let want = if first.is_ok() { format!("for {external}") } else { format!("again {external}") };
        assert_eq!(stored, json!(want), "item {id}: the stored proposal is not the one reported as landed");
        let events = store.item_events(*id).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.to_state.as_deref() == Some("proposed")).count(), 1, "item {id}");
    }
    let approved_twice = outcomes
        .iter()
        .filter(|(id, o)| twice.contains(id) && matches!(o, Ok(item) if item.state == ItemState::Approved))
        .count() as i64;
    for (id, outcome) in outcomes.iter().filter(|(id, _)| !twice.contains(id)) {
        match outcome {
            Err(StoreError::LeaseLost { holder, .. }) if stolen.contains(id) => assert_eq!(holder, "worker-b"),
            Ok(item) if !stolen.contains(id) => {
                let want = if id % 2 == 0 { ItemState::Approved } else { ItemState::Proposed };
                assert_eq!(item.state, want, "item {id}");
                let proposed = &item.proposal.as_ref().unwrap().fields["description"].proposed;
                assert_eq!(proposed, &json!(format!("for {}", item.external_id)), "item {id} got another's answer");
            }
            other => panic!("item {id} (stolen: {}): {other:?}", stolen.contains(id)),
        }
    }
    for id in &stolen {
        let item = store.item(*id).await.unwrap();
        assert_eq!((item.state, item.lease_owner.as_deref()), (ItemState::Enriching, Some("worker-b")));
        assert_eq!(item.proposal, None);
    }
    let landed = (mine.len() - stolen.len()) as i64;
    let run = store.run(run_id).await.unwrap();
    assert_eq!((run.cost_micros, run.tokens_in, run.tokens_out), (7 * landed, 10 * landed, 2 * landed));
    let events = store.run_events(run_id).await.unwrap();
    let to = |s: &str| events.iter().filter(|e| e.to_state.as_deref() == Some(s)).count() as i64;
    assert_eq!(to("proposed"), landed);
    let approved = mine.iter().filter(|i| i.id % 2 == 0 && !stolen.contains(&i.id) && !twice.contains(&i.id)).count();
    assert_eq!(to("approved"), approved as i64 + approved_twice);
}

/// A proposal of `description` for an empty one.
fn description_proposal(description: String) -> Proposal {
    Proposal {
        fields: [("description".into(), FieldChange { before: json!(""), proposed: json!(description), edited: None })]
            .into(),
        model: "m".into(),
        task_version: "t1".into(),
        warnings: vec![],
        ..Default::default()
    }
}

/// The run report's time per item (average and 95th percentile) over the items that ended.
async fn report_times_items_from_discovery_to_their_end(db: &TestDb) {
    let store = &db.store;
    let run_id = run_with_items(store, "p", 40, 5).await;
    let items = store.items(run_id, None, 100).await.unwrap();
    assert_eq!(items.len(), 40);
    // Twenty items end (written) after 20, 19, ..., 1 seconds; the other twenty stay queued.
    for (n, item) in items.iter().take(20).enumerate() {
        walk(store, item.id, &path_to(ItemState::Written)).await;
        sqlx::query("UPDATE items SET created_at = 1000, updated_at = $1 WHERE id = $2")
            .bind(1000 + (20 - n as i64) * 1000)
            .bind(item.id)
            .execute(store.write_pool())
            .await
            .unwrap();
    }
    let report = store.report(run_id).await.unwrap();
    assert_eq!(report.item_ms_avg, Some(10_500.0), "mean of 1..=20 s");
    assert_eq!(report.item_ms_p95, Some(19_000), "the 19th of 20 by time (ceil(0.95 × 20))");
    assert_eq!((report.written, report.total), (20, 40));
}

on_both_backends! {
    transition_table => transition_table_matches_database;
    legal_transitions => every_legal_transition_is_applied_with_one_event;
    illegal_transitions => every_illegal_transition_is_refused_and_leaves_no_trace;
    database_guards => the_database_refuses_illegal_transitions_and_event_edits;
    leases => claims_lease_and_only_the_holder_finishes;
    reclaim => expired_leases_are_reclaimed_until_attempts_run_out;
    retries => failures_are_retried_with_backoff_then_dead;
    review_and_write => review_edit_approve_and_write_outcomes;
    run_creation => runs_are_created_once_per_tick_and_once_while_active;
    discovery => discovery_is_leased_idempotent_and_settles;
    budget => budget_stops_claiming_and_pauses_the_run;
    release => release_gives_back_leases_without_charging_attempts;
    concurrent_claims => concurrent_claimers_never_share_an_item;
    sample_cap => concurrent_claimers_never_exceed_the_sample;
    credentials => credentials_are_encrypted_at_rest;
    group_commit => concurrent_proposals_land_together_and_fail_alone;
    report_times => report_times_items_from_discovery_to_their_end;
}
