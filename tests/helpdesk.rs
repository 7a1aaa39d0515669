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
    let store = db.connect_again(2).await;
    let dead: Vec<String> = store
        .items(1, Some(ItemState::Dead), 200)
        .await
        .unwrap()
        .iter()
        .map(|i| format!("ticket {}: {:?}", i.external_id, i.last_error))
        .collect();
    assert!(status.success() && dead.is_empty(), "the restarted run failed: {output}\ndead: {dead:#?}");
    for id in 1..=150u64 {
        assert_eq!(account.submissions(id), 1, "ticket {id} was submitted {} times", account.submissions(id));
        let ticket = account.ticket(id).unwrap();
        assert!(!custom(&ticket, CATEGORY_FIELD_ID).is_null(), "ticket {id} was not written");
    }
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

    let mut all = Vec::new();
    for run in runs(store.clone()).await {
        // A tick whose run the final SIGTERM stopped before it listed anything: it stays discovering,
        // for the next daemon to resume (and discard, when nothing is new). Not a run left behind.
        if run.status == RunStatus::Discovering && store.counts(run.id).await.unwrap().total() == 0 {
            continue;
        }
        all.push(run);
    }
    assert!((2..=4).contains(&all.len()), "one run per tick with new tickets, none for empty ticks: {all:?}");
    let mut candidates = 0;
    for run in &all {
        let counts = store.counts(run.id).await.unwrap();
        let items = counts.total() - counts.get(ItemState::Skipped);
        assert!(items > 0, "run {} ({:?}) has no candidate: it should not exist ({counts:?})", run.id, run.status);
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

/// Figures for the README (printed; run with `--no-capture`): tickets triaged and written per second
/// at zero model latency, Zendesk requests per 100 tickets written, and model input tokens per ticket
/// with the shipped packing (10 tickets a request) and without (1). `ENRICHD_ZENDESK_FIGURES` sets the
/// account's size (default 300).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures() {
    let tickets: u64 = std::env::var("ENRICHD_ZENDESK_FIGURES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for per_request in [10u32, 1] {
        let db = common::sqlite().await;
        let account = ZendeskSandbox::with_triaged_share(tickets, 21, 0.4);
        account.advance(120);
        let t = triage(&db, account.clone(), "").await;
        if per_request != 10 {
            let path = t.dir.path().join("tasks/ticket_triage.toml");
            let task = std::fs::read_to_string(&path).unwrap();
            std::fs::write(
                &path,
                task.replace("items_per_request = 10", &format!("items_per_request = {per_request}")),
            )
            .unwrap();
        }
        let config = enrichd::config::Config::load(&t.config).unwrap();
        assert_eq!(config.tasks["ticket_triage"].items_per_request, per_request);
        let engine = std::sync::Arc::new(enrichd::engine::Engine::build(&config, db.store.clone()));
        let started = std::time::Instant::now();
        let run = start_triage(&engine).await;
        let run = work_named(&engine, "triage", run.id, Duration::from_secs(300), true).await;
        let elapsed = started.elapsed().as_secs_f64();
        let counts = db.store.counts(run.id).await.unwrap();
        let written = counts.get(ItemState::Written);
        let candidates = counts.total() - counts.get(ItemState::Skipped);
        assert_eq!(written, candidates, "{counts:?}");
        let requests = account.stats().requests;
        println!(
            "zendesk figures: {tickets} tickets, {written} written, items_per_request {per_request}: {elapsed:.1} s, {:.0} tickets written/s, {:.0} Zendesk requests per 100 written, {:.0} input tokens per ticket, {:.0} output tokens per ticket",
            written as f64 / elapsed,
            requests as f64 * 100.0 / written as f64,
            run.tokens_in as f64 / written as f64,
            run.tokens_out as f64 / written as f64,
        );
        db.cleanup().await;
    }
}

/// Triage latency (ticket created → values written) of a daemon on a one-minute schedule, measured
/// in real time over several tickets; only when `ENRICHD_TRIAGE_LATENCY=1` (it takes about five
/// minutes). Prints each ticket's latency and the mean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_latency_on_a_one_minute_schedule() {
    if std::env::var("ENRICHD_TRIAGE_LATENCY").as_deref() != Ok("1") {
        return;
    }
    let db = common::sqlite().await;
    let live = enrichd::cli::start_zendesk_sandbox(50, 0.4, 3, "127.0.0.1:0".parse().unwrap(), 0.0, 0).await.unwrap();
    live.sandbox.advance(120);
    set_zendesk_env();
    let provider = enrichd::sandbox::provider::ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let hd = Helpdesk {
        account: live.sandbox.clone(),
        account_url: live.base_url.clone(),
        provider,
        provider_url: format!("http://{paddr}/v1"),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_zendesk_config(dir.path(), &db.url, &hd, "", "schedule = \"* * * * *\"\nincremental = true");
    let env = Env { vars: &zendesk_env(), ..Env::default() };
    let daemon = Enrichd::daemon_with(&config, dir.path().join("daemon.log"), &env);
    // Let the first tick take the existing backlog.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let mut pending = Vec::new();
    for n in 0..6u64 {
        let (subject, body) = enrichd_zendesk::sandbox::sample(n);
        pending.push((live.sandbox.create_ticket(subject, body), std::time::Instant::now()));
        tokio::time::sleep(Duration::from_secs(23)).await;
    }
    let mut latencies = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while !pending.is_empty() {
        assert!(std::time::Instant::now() < deadline, "not triaged: {pending:?} {}", daemon.output());
        pending.retain(|(id, at)| {
            if custom(&live.sandbox.ticket(*id).unwrap(), CATEGORY_FIELD_ID).is_null() {
                return true;
            }
            latencies.push(at.elapsed().as_secs_f64());
            false
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    println!("triage latency on a one-minute schedule: {latencies:.0?} s, mean {mean:.0} s");
    db.cleanup().await;
}

/// `enrichd demo helpdesk`: the Zendesk sandbox, the simulated model and a triage pipeline with
/// auto-approve; the first run writes the confident answers to the tickets at once and leaves the
/// unsure ones (about one in five) waiting for review, below the printed confidence bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_helpdesk_triages_and_holds_the_unsure() {
    let dir = tempfile::tempdir().unwrap();
    let (printed, report) =
        common::process::demo_report(&["helpdesk", "--tickets", "60"], dir.path(), Duration::from_secs(60)).await;
    assert!(printed.contains("Zendesk sandbox at http://127.0.0.1:"), "{printed}");
    assert!(printed.contains("every minute"), "{printed}");
    let (written, waiting) = (report["written"].as_i64().unwrap_or(0), report["awaiting_review"].as_i64().unwrap_or(0));
    assert!(written > 0 && waiting > 0, "confident answers written, unsure ones waiting: {report}");
    assert!(waiting * 2 < written, "most are confident: {report}");
}
