//! Support-ticket triage end to end over HTTP: the Zendesk sandbox, the simulated model, the shipped
//! `ticket_triage` task, and a real database (SQLite and Postgres).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestDb;
use common::harness::work_named;
use common::zendesk::*;
use enrichd::store::ItemState;
use enrichd_zendesk::sandbox::{
    CATEGORIES, CATEGORY_FIELD_ID, Faults, LANGUAGE_FIELD_ID, SENTIMENT_FIELD_ID, ZendeskSandbox,
};
use serde_json::json;

on_both_backends! {
    thousand_tickets => thousand_tickets;
    deleted_option => deleted_option;
}

/// 1,000 tickets, about 60% untriaged: exactly the untriaged ones are triaged and written through
/// `update_many` jobs; every tag an agent set stays; a ticket an agent edits between the pre-write
/// read and the job ends `conflict` with the agent's values intact; tickets that fail inside a job
/// are per-item outcomes while the rest of the job is written.
async fn thousand_tickets(db: &TestDb) {
    let account = ZendeskSandbox::with_triaged_share(1000, 11, 0.4);
    account.set_faults(Faults { agent_edit_rate: 0.03, job_item_failure_rate: 0.03, ..Faults::default() });
    // The export's one-minute horizon: every generated ticket is older than that.
    account.advance(120);
    let before = tickets(&account);
    let untriaged: BTreeSet<u64> = untriaged(&before).into_iter().collect();
    assert!((500..700).contains(&untriaged.len()), "about 60% untriaged: {}", untriaged.len());

    let t = triage(db, account.clone(), "").await;
    let run = start_triage(&t.engine).await;
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(120), true).await;
    let store = &t.engine.store;
    let counts = store.counts(run.id).await.unwrap();

    // Exactly the untriaged tickets became candidates; the triaged ones were skipped.
    let items = store.items(run.id, None, 5000).await.unwrap();
    let candidates: BTreeSet<u64> =
        items.iter().filter(|i| i.state != ItemState::Skipped).map(|i| i.external_id.parse().unwrap()).collect();
    assert_eq!(candidates, untriaged, "the candidates are exactly the tickets without a category");

    let after = tickets(&account);
    let edited: BTreeSet<u64> = account.agent_edited().into_iter().collect();
    let mut written = 0;
    let mut conflicts = 0;
    let mut failed = 0;
    for item in &items {
        let id: u64 = item.external_id.parse().unwrap();
        let (was, now) = (&before[&id], &after[&id]);
        // Every tag anyone set before is still there.
        for tag in tags(was) {
            assert!(tags(now).contains(&tag), "ticket {id} lost tag {tag:?}: {:?}", tags(now));
        }
        match item.state {
            ItemState::Skipped => assert_eq!(was, now, "triaged ticket {id} must be untouched"),
            ItemState::Written => {
                written += 1;
                // (An agent may edit it after the read-back that followed our write: that is theirs.)
                let category = custom(now, CATEGORY_FIELD_ID);
                assert!(
                    CATEGORIES.iter().any(|(_, v)| category == json!(v)),
                    "ticket {id} got a category that is a live option: {category}"
                );
                assert!(custom(now, SENTIMENT_FIELD_ID).is_string(), "ticket {id} sentiment");
                assert!(custom(now, LANGUAGE_FIELD_ID).is_string(), "ticket {id} language");
                assert!(now["priority"].is_string() && now["type"].is_string(), "ticket {id}: {now}");
                assert!(tags(now).iter().any(|t| TAGS.contains(&t.as_str())), "ticket {id} got an allowed tag");
                assert!(item.verified_at.is_some(), "ticket {id} written and read back");
            }
            ItemState::Conflict => {
                conflicts += 1;
                assert!(edited.contains(&id), "ticket {id} ended conflict but no agent edited it");
                // The agent's values, not ours.
                assert_eq!(now["priority"], json!("urgent"), "ticket {id}: the agent's priority stays");
                assert!(tags(now).contains(&"agent_edited".to_owned()));
                assert!(custom(now, CATEGORY_FIELD_ID).is_null(), "ticket {id}: nothing of ours was written");
            }
            ItemState::Dead | ItemState::WriteFailed => {
                failed += 1;
                let error = item.last_error.as_deref().unwrap_or_default();
                assert!(error.contains("TicketUpdateFailed"), "ticket {id}: {error}");
                assert!(custom(now, CATEGORY_FIELD_ID).is_null(), "ticket {id}: the failed ticket is unchanged");
            }
            other => panic!("ticket {id} ended {other}: {:?}", item.last_error),
        }
    }
    assert!(conflicts > 0 && failed > 0, "the faults happened: {conflicts} conflicts, {failed} failures");
    assert_eq!(written + conflicts + failed, untriaged.len(), "{counts:?}");
    // Tickets went through update_many jobs, each ticket submitted once per write attempt.
    let stats = account.stats();
    assert!(stats.update_many >= (written / 100) as u64, "{stats:?}");
    for id in &untriaged {
        assert!(account.submissions(*id) <= 1, "ticket {id} submitted {} times", account.submissions(*id));
    }
}

/// An option deleted from the Category dropdown after the run read the options: the tickets given
/// that category fail with a clear, permanent per-item error (no retries), the others are written.
async fn deleted_option(db: &TestDb) {
    let account = ZendeskSandbox::with_triaged_share(60, 5, 0.0);
    account.advance(120);
    let t = triage(db, account.clone(), "write_linger_ms = 0").await;
    let run = start_triage(&t.engine).await;
    // The simulated model answers the first allowed value: billing. Delete it once the run has
    // read the options and before anything is written.
    let engine = t.engine.clone();
    let watcher = {
        let account = account.clone();
        let store = engine.store.clone();
        let run_id = run.id;
        tokio::spawn(async move {
            loop {
                let counts = store.counts(run_id).await.unwrap();
                if counts.total() > 0 {
                    account.delete_category_option("billing");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let run = work_named(&t.engine, "triage", run.id, Duration::from_secs(60), true).await;
    watcher.await.unwrap();
    let items = t.engine.store.items(run.id, None, 100).await.unwrap();
    assert_eq!(items.len(), 60);
    for item in &items {
        assert_eq!(item.state, ItemState::Dead, "ticket {}: {:?}", item.external_id, item.last_error);
        let error = item.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("billing") || error.contains("Category"), "the error names the option: {error}");
        assert_eq!(item.write_attempts, 1, "a deleted option is not retried: {error}");
    }
}
