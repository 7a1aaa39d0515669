//! Support-ticket triage end to end over HTTP: the Freshdesk sandbox, the simulated model, the
//! shipped `ticket_triage_freshdesk` task, and a real database (SQLite and Postgres).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestDb;
use common::freshdesk::*;
use common::harness::work_named;
use enrichd::store::{Item, ItemState};
use enrichd_freshdesk::sandbox::{
    CATEGORIES, CATEGORY_FIELD, Faults, FreshdeskSandbox, LANGUAGE_FIELD, SENTIMENT_FIELD, SENTIMENTS,
};
use serde_json::{Value, json};

on_both_backends! {
    thousand_tickets => thousand_tickets;
    bulk_jobs => bulk_jobs;
}

/// 1,000 tickets, about 60% untriaged: exactly the untriaged ones are triaged and written (one
/// `PUT` each: their merged tag sets differ); every tag an agent set stays; a ticket an agent edits
/// after the listing and before the pre-write re-read ends `conflict` with the agent's values
/// intact; tickets whose `PUT` failed (503) are retried on their own while the rest of their batch
/// is written.
async fn thousand_tickets(db: &TestDb) {
    let account = FreshdeskSandbox::with_triaged_share(1000, 11, 0.4);
    let before = tickets(&account);
    let untriaged: BTreeSet<u64> = untriaged(&before).into_iter().collect();
    assert!((500..700).contains(&untriaged.len()), "about 60% untriaged: {}", untriaged.len());
    account.set_faults(Faults { agent_edit_rate: 0.03, server_error_rate: 0.02, ..Faults::default() });

    let t = triage(db, account.clone(), &TriageSetup::default()).await;
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(180), true).await;
    let store = &t.engine.store;
    let counts = store.counts(run.id).await.unwrap();

    // Exactly the untriaged tickets became candidates; the triaged ones were skipped.
    let items = store.items(run.id, None, 5000).await.unwrap();
    let candidates: BTreeSet<u64> =
        items.iter().filter(|i| i.state != ItemState::Skipped).map(|i| i.external_id.parse().unwrap()).collect();
    assert_eq!(candidates, untriaged, "the candidates are exactly the tickets without a category");

    let after = tickets(&account);
    let edited: BTreeSet<u64> = account.agent_edited().into_iter().collect();
    let (mut written, mut conflicts, mut retried) = (0, 0, 0);
    for item in &items {
        let id: u64 = item.external_id.parse().unwrap();
        let (was, now) = (&before[&id], &after[&id]);
        // Every tag anyone set before is still there.
        for tag in tags(was) {
            assert!(tags(now).contains(&tag), "ticket {id} lost tag {tag:?}: {:?}", tags(now));
        }
        match item.state {
            ItemState::Skipped => {
                assert_eq!(was, now, "triaged ticket {id} must be untouched");
                assert_eq!(account.submissions(id), 0, "triaged ticket {id} was never part of a write");
            }
            ItemState::Written => {
                written += 1;
                assert_triaged(id, now);
                assert!(tags(now).iter().any(|t| TAGS.contains(&t.as_str())), "ticket {id} got an allowed tag");
                assert!(item.verified_at.is_some(), "ticket {id} written and read back");
                assert!(!edited.contains(&id), "ticket {id} was edited by an agent yet written over");
                if item.write_attempts > 0 {
                    retried += 1;
                    assert!(failures(store, item).await.iter().any(|e| e.contains(&format!("tickets/{id}"))));
                }
                // `write_attempts` counts the failed attempts; the last one wrote it.
                assert!(account.submissions(id) as i64 <= item.write_attempts + 1, "ticket {id} sent once per attempt");
            }
            ItemState::Conflict => {
                conflicts += 1;
                assert!(edited.contains(&id), "ticket {id} ended conflict but no agent edited it");
                // The agent's values, not ours.
                assert_eq!(now["priority"], json!(4), "ticket {id}: the agent's priority stays");
                assert!(tags(now).contains(&"agent_edited".to_owned()));
                assert!(custom(now, CATEGORY_FIELD).is_null(), "ticket {id}: nothing of ours was written");
                assert_eq!(account.submissions(id), 0, "ticket {id}: no write was sent");
                let error = item.last_error.as_deref().unwrap_or_default();
                assert!(error.contains("changed upstream"), "ticket {id}: {error}");
            }
            other => panic!("ticket {id} ended {other}: {:?}", item.last_error),
        }
    }
    assert!(conflicts > 0, "the agents' edits happened");
    assert_eq!(conflicts, edited.len(), "every agent edit was caught");
    assert!(retried > 0, "some PUTs failed (503) and were retried alone");
    assert_eq!(written + conflicts, untriaged.len(), "{counts:?}");
    // A bulk update only ever groups tickets whose changes are identical (tags included): tickets
    // the model answered alike may share one, any difference is a ticket's own PUT.
    for bulk in account.received_writes().iter().filter(|w| w.path.ends_with("/bulk_update")) {
        let ids: Vec<String> = bulk.body["bulk_action"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap().to_string())
            .collect();
        let changes: BTreeSet<String> = items
            .iter()
            .filter(|i| ids.contains(&i.external_id))
            .map(|i| serde_json::to_string(&i.proposal.as_ref().unwrap().values()).unwrap())
            .collect();
        assert_eq!(changes.len(), 1, "bulk update of {ids:?} grouped different changes: {changes:?}");
    }
}

/// Every field the shipped task fills holds a value the account allows.
fn assert_triaged(id: u64, ticket: &Value) {
    let category = custom(ticket, CATEGORY_FIELD);
    assert!(CATEGORIES.iter().any(|c| category == json!(c)), "ticket {id}: category {category} is a live choice");
    let sentiment = custom(ticket, SENTIMENT_FIELD);
    assert!(SENTIMENTS.iter().any(|s| sentiment == json!(s)), "ticket {id}: sentiment {sentiment} is a choice");
    let language = custom(ticket, LANGUAGE_FIELD);
    assert!(["en", "de", "fr", "es"].iter().any(|l| language == json!(l)), "ticket {id}: language {language}");
    assert!(ticket["type"].is_string(), "ticket {id}: type {}", ticket["type"]);
    assert!((1..=4).contains(&ticket["priority"].as_u64().unwrap_or(0)), "ticket {id}: {}", ticket["priority"]);
}

/// The errors of an item's failed write attempts, from its audit trail.
async fn failures(store: &enrichd::store::Store, item: &Item) -> Vec<String> {
    store
        .item_events(item.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_state.as_deref() == Some("write_failed"))
        .map(|e| e.detail.map(|d| d.to_string()).unwrap_or_default())
        .collect()
}

/// Dropdown-only triage: tickets given the same answers are written as `bulk_update` jobs, polled
/// to completion. Tickets that fail inside a job are per-item outcomes: retried on their own and
/// written, while the rest of their job was written at once; tickets agents edited before the
/// re-read are conflicts and never part of a job.
async fn bulk_jobs(db: &TestDb) {
    let account = FreshdeskSandbox::with_triaged_share(250, 12, 0.4);
    let before = tickets(&account);
    let untriaged: BTreeSet<u64> = untriaged(&before).into_iter().collect();
    account.set_faults(Faults { agent_edit_rate: 0.05, bulk_failure_rate: 0.1, ..Faults::default() });
    let setup = TriageSetup {
        task_file: "tests/fixtures/freshdesk/category_triage.toml",
        select: r#"{ missing = ["custom.Category"], fill_all_missing = true }"#,
        extra_pipeline: "",
    };
    let t = triage(db, account.clone(), &setup).await;
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(120), true).await;
    let store = &t.engine.store;
    let items = store.items(run.id, None, 1000).await.unwrap();
    let after = tickets(&account);
    let edited: BTreeSet<u64> = account.agent_edited().into_iter().collect();
    let (mut written, mut conflicts, mut failed_in_job, mut first_time, mut exhausted) = (0, 0, 0, 0, 0);
    for item in items.iter().filter(|i| i.state != ItemState::Skipped) {
        let id: u64 = item.external_id.parse().unwrap();
        let now = &after[&id];
        for tag in tags(&before[&id]) {
            assert!(tags(now).contains(&tag), "ticket {id} lost tag {tag:?}: {:?}", tags(now));
        }
        match item.state {
            ItemState::Written => {
                written += 1;
                assert_eq!(tags(now), tags(&before[&id]), "ticket {id}: this task writes no tags");
                assert_eq!(custom(now, CATEGORY_FIELD), json!(CATEGORIES[0]), "ticket {id}");
                assert_eq!(custom(now, SENTIMENT_FIELD), json!(SENTIMENTS[0]), "ticket {id}");
                assert_eq!(now["type"], json!("Question"), "ticket {id}");
                let errors = failures(store, item).await;
                if errors.is_empty() {
                    first_time += 1;
                } else {
                    failed_in_job += 1;
                    assert!(
                        errors.iter().any(|e| e.contains("freshdesk: job") && e.contains(&format!("ticket {id}"))),
                        "ticket {id}: the job's per-ticket error is on the item: {errors:?}"
                    );
                }
                assert!(account.submissions(id) as i64 <= item.write_attempts + 1, "ticket {id} sent once per attempt");
            }
            ItemState::Conflict => {
                conflicts += 1;
                assert!(edited.contains(&id), "ticket {id}");
                assert_eq!(now["priority"], json!(4));
                assert!(custom(now, CATEGORY_FIELD).is_null(), "ticket {id}: the agent's ticket is untouched");
                assert_eq!(account.submissions(id), 0, "ticket {id} was in no job");
            }
            // A ticket that failed inside a job on every attempt (10% a time, so now and then one
            // of them): dead with the job's own error, untouched.
            ItemState::Dead => {
                exhausted += 1;
                assert_eq!(item.write_attempts, item.max_attempts, "ticket {id}: {:?}", item.last_error);
                let error = item.last_error.as_deref().unwrap_or_default();
                assert!(error.contains("freshdesk: job") && error.contains(&format!("ticket {id}")), "{error}");
                assert!(custom(now, CATEGORY_FIELD).is_null(), "ticket {id}: the failed ticket is untouched");
            }
            other => panic!("ticket {id} ended {other}: {:?}", item.last_error),
        }
    }
    assert_eq!(written + conflicts + exhausted, untriaged.len());
    assert!(exhausted * 20 <= untriaged.len(), "few tickets fail three jobs in a row: {exhausted}");
    assert!(conflicts > 0 && failed_in_job > 0 && first_time > 0, "{conflicts} {failed_in_job} {first_time}");
    let stats = account.stats();
    assert!(stats.bulk_updates >= 2, "jobs were used: {stats:?}");
    assert!(stats.bulk_updates < written as u64 / 10, "tickets went in jobs, not one by one: {stats:?}");
    assert!(stats.job_polls >= stats.bulk_updates * 3, "each job polled to completion: {stats:?}");
}

/// Tickets per second end to end at zero model latency (simulated model) and requests per 100
/// tickets written, printed for the README:
/// `ENRICHD_FRESHDESK_TICKETS=1000 cargo nextest run --test helpdesk_freshdesk --no-capture -E 'test(throughput)'`
/// (300 tickets unless set; SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let count: u64 = std::env::var("ENRICHD_FRESHDESK_TICKETS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let db = common::sqlite().await;
    let account = FreshdeskSandbox::with_triaged_share(count, 21, 0.4);
    let untriaged = untriaged(&tickets(&account)).len();
    let t = triage(&db, account.clone(), &TriageSetup::default()).await;
    let started = Instant::now();
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(600), true).await;
    let elapsed = started.elapsed().as_secs_f64();
    let counts = t.engine.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written) as usize, untriaged, "{counts:?}");
    let stats = account.stats();
    let per_100 = |n: u64| n as f64 * 100.0 / counts.get(ItemState::Written) as f64;
    println!(
        "freshdesk triage: {count} tickets ({untriaged} untriaged) listed, triaged and written in {elapsed:.1} s: \
         {:.0} tickets listed/s, {:.0} tickets written/s",
        count as f64 / elapsed,
        counts.get(ItemState::Written) as f64 / elapsed,
    );
    println!(
        "requests per 100 tickets written: {:.0} in all ({:.0} listing pages, {:.0} conversation reads, {:.0} ticket reads, \
         {:.0} updates, {:.0} field reads, {:.0} other); model requests: {}",
        per_100(stats.requests),
        per_100(stats.list_pages),
        per_100(stats.conversation_reads),
        per_100(stats.ticket_reads),
        per_100(stats.single_updates + stats.bulk_updates),
        per_100(stats.field_reads),
        per_100(
            stats.requests
                - stats.list_pages
                - stats.conversation_reads
                - stats.ticket_reads
                - stats.single_updates
                - stats.bulk_updates
                - stats.field_reads
        ),
        t.hd.provider.stats().requests,
    );
    db.cleanup().await;
}
