//! Support-ticket triage end to end over HTTP: the Zendesk sandbox, the simulated model, the shipped
//! `ticket_triage` task, and a real database (SQLite and Postgres).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestDb;
use common::harness::work_named;
use common::process::{Enrichd, Env};
use common::zendesk::*;
use enrichd::store::{ItemState, RunStatus};
use enrichd_zendesk::sandbox::{
    CATEGORIES, CATEGORY_FIELD_ID, Faults, LANGUAGE_FIELD_ID, SENTIMENT_FIELD_ID, ZendeskSandbox,
};
use serde_json::json;

on_both_backends! {
    thousand_tickets => thousand_tickets;
    deleted_option => deleted_option;
    killed_while_polling => killed_while_polling;
    micro_batches => micro_batches;
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

/// A daemon killed (SIGKILL) while it polls an `update_many` job: the job was stored before the first
/// poll, so the restarted process polls the same job instead of submitting the tickets again. The
/// sandbox saw every ticket submitted once, and every ticket ends written.
async fn killed_while_polling(db: &TestDb) {
    let account = ZendeskSandbox::with_triaged_share(150, 3, 0.0);
    account.set_faults(Faults { job_queued_polls: 3, job_working_polls: 1, ..Faults::default() });
    account.advance(120);
    let hd = helpdesk(account.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_zendesk_config(dir.path(), &db.url, &hd, "", "");
    let env = Env { vars: &zendesk_env(), ..Env::default() };
    let mut first = Enrichd::run_with(&config, "triage", dir.path().join("first.log"), &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while account.stats().job_polls == 0 {
        assert!(first.alive(), "the first process ended before polling a job: {}", first.output());
        assert!(std::time::Instant::now() < deadline, "no job was polled: {}", first.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    assert!(account.stats().update_many >= 1);
    let job_tickets: Vec<u64> = (1..=150).filter(|id| account.submissions(*id) == 1).collect();
    assert!(!job_tickets.is_empty(), "the killed process had submitted a job");

    let (status, output) =
        Enrichd::run_with(&config, "triage", dir.path().join("second.log"), &env).wait(Duration::from_secs(120)).await;
    assert!(status.success(), "the restarted run failed: {output}");
    for id in 1..=150u64 {
        assert_eq!(account.submissions(id), 1, "ticket {id} was submitted {} times", account.submissions(id));
        let ticket = account.ticket(id).unwrap();
        assert!(!custom(&ticket, CATEGORY_FIELD_ID).is_null(), "ticket {id} was not written");
    }
    let store = db.connect_again(2).await;
    let run = store.run(1).await.unwrap();
    let counts = store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written), 150, "{counts:?}");
    store.close().await;
}

/// A daemon on a short schedule with `incremental = true`: tickets arriving over three ticks are each
/// triaged once, a tick with nothing new leaves no run behind, and the Zendesk export's cursor is kept
/// per pipeline (a restarted daemon resumes from it).
async fn micro_batches(db: &TestDb) {
    // Every ticket already triaged: the first tick finds nothing to do.
    let account = ZendeskSandbox::with_triaged_share(30, 9, 1.0);
    account.set_faults(Faults { incremental_per_minute: None, ..Faults::default() });
    account.advance(120);
    let hd = helpdesk(account.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_zendesk_config(
        dir.path(),
        &db.url,
        &hd,
        "",
        "schedule = \"*/2 * * * * *\"\nincremental = true\nwrite_linger_ms = 0",
    );
    let env = Env { vars: &zendesk_env(), ..Env::default() };
    let store = db.connect_again(2).await;
    let runs = |store: enrichd::store::Store| async move { store.runs(&RunStatus::ALL, 100).await.unwrap() };

    let mut daemon = Enrichd::daemon_with(&config, dir.path().join("daemon.log"), &env);
    // Two empty ticks at least.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(runs(store.clone()).await.is_empty(), "empty ticks left runs: {}", daemon.output());

    let mut created = Vec::new();
    for round in 0..3u64 {
        for n in 0..4u64 {
            let (subject, body) = enrichd_zendesk::sandbox::sample(round * 4 + n);
            created.push(account.create_ticket(subject, body));
        }
        // Past the export's one-minute horizon.
        account.advance(61);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let done = created.iter().all(|id| !custom(&account.ticket(*id).unwrap(), CATEGORY_FIELD_ID).is_null());
            if done {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "round {round} not triaged: {}", daemon.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if round == 1 {
            // A restart between ticks: the pipeline's cursor is in the database, not in the process.
            daemon.sigterm();
            let _ = daemon.wait(Duration::from_secs(30)).await;
            daemon = Enrichd::daemon_with(&config, dir.path().join("daemon2.log"), &env);
        }
    }
    // More empty ticks after the last round.
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.sigterm();
    let _ = daemon.wait(Duration::from_secs(30)).await;

    let all = runs(store.clone()).await;
    assert!((2..=4).contains(&all.len()), "one run per tick with new tickets, none for empty ticks: {all:?}");
    let mut candidates = 0;
    for run in &all {
        let counts = store.counts(run.id).await.unwrap();
        let items = counts.total() - counts.get(ItemState::Skipped);
        assert!(items > 0, "run {} has no candidate: it should not exist ({counts:?})", run.id);
        candidates += items;
        assert_eq!(counts.get(ItemState::Written) + counts.get(ItemState::Skipped), counts.total(), "{counts:?}");
    }
    assert_eq!(candidates as usize, created.len(), "each new ticket triaged once across ticks and the restart");
    for id in &created {
        assert_eq!(account.submissions(*id) + single_writes(&account, *id), 1, "ticket {id} written once");
    }
    let state = store.pipeline_state("triage").await.unwrap();
    assert!(state.feed_cursor.is_some(), "the export cursor is kept for the pipeline: {state:?}");
    store.close().await;
}

/// Single-ticket `PUT`s the sandbox received for ticket `id`.
fn single_writes(account: &ZendeskSandbox, id: u64) -> u32 {
    let path = format!("/api/v2/tickets/{id}.json");
    account.received_writes().iter().filter(|w| w.method == "PUT" && w.path == path).count() as u32
}
