//! `enrichd daemon` from outside: `/healthz`, JSON logs, graceful shutdown on SIGTERM in the middle
//! of work, and cron ticks that create exactly one run even with two daemons on one Postgres.

mod common;

use std::time::{Duration, Instant};

use common::process::{Enrichd, Env};
use common::{ConfigOptions, sandboxes, write_config};
use enrichd::store::{ItemState, NewRun, RunStart, RunStatus};

/// The daemon, logging JSON at info level.
fn start_daemon(config: &std::path::Path, log: std::path::PathBuf) -> Enrichd {
    Enrichd::daemon_with(config, log, &Env { log_level: "info", json_logs: true, ..Env::default() })
}

fn http() -> reqwest::Client {
    enrichd_connector::http::client(Duration::from_secs(10))
}

async fn sigterm_finishes_or_releases_work(db: &common::TestDb) {
    let sb = sandboxes(200, 1).await;
    sb.provider
        .set_faults(enrichd::sandbox::provider::Faults { latency: Duration::from_millis(300), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url,
        &sb,
        &ConfigOptions { concurrency: 4, lease_seconds: 30.0, ..Default::default() },
    );
    let daemon = start_daemon(&config, dir.path().join("daemon.log"));

    let health: serde_json::Value =
        http().get(format!("{}/healthz", daemon.base())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 5,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!() };
    // Wait until the daemon is in the middle of the run.
    let start = Instant::now();
    while db.store.counts(run.id).await.unwrap().get(ItemState::Written) < 4 {
        assert!(start.elapsed() < Duration::from_secs(60), "daemon made no progress: {}", daemon.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let api: serde_json::Value =
        http().get(format!("{}/api/runs/{}", daemon.base(), run.id)).send().await.unwrap().json().await.unwrap();
    assert_eq!(api["run"]["pipeline"], "catalogue");

    daemon.sigterm();
    let (status, log) = daemon.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "daemon exit {status:?}: {log}");
    // No lease survives a graceful shutdown: work in flight finished or was given back.
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!(counts.sum(&[ItemState::Enriching, ItemState::Writing]), 0, "{counts:?}");
    assert!(counts.get(ItemState::Queued) > 0, "the run was interrupted mid-way: {counts:?}");
    assert_eq!(db.store.run(run.id).await.unwrap().discovery_owner, None);
    // Logs are JSON lines, and say what happened.
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"SIGTERM received; shutting down"), "{messages:?}");
    assert!(messages.contains(&"enrichd daemon stopped"), "{messages:?}");
    // The status endpoint and the database agree, and the run resumes from where it stopped.
    let before = sb.store.writes().len();
    let daemon = start_daemon(&config, dir.path().join("daemon2.log"));
    let start = Instant::now();
    while db.store.run(run.id).await.unwrap().status != RunStatus::Done {
        assert!(start.elapsed() < Duration::from_secs(120), "the resumed run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.sigterm();
    let (status, log) = daemon.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "daemon exit {status:?}: {log}");
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Written), 200);
    assert_eq!(sb.store.writes().len(), 200, "each record written once across the restart (was {before} before it)");
}

async fn two_daemons_one_run_per_tick(db: &common::TestDb) {
    let sb = sandboxes(30, 1).await;
    sb.provider
        .set_faults(enrichd::sandbox::provider::Faults { latency: Duration::from_millis(150), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions { concurrency: 2, extra_pipeline: "schedule = \"* * * * * *\"", ..Default::default() };
    let config = write_config(dir.path(), &db.url, &sb, &options);
    let a = start_daemon(&config, dir.path().join("a.log"));
    let b = start_daemon(&config, dir.path().join("b.log"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.sigterm();
    b.sigterm();
    for daemon in [a, b] {
        let (status, log) = daemon.wait(Duration::from_secs(15)).await;
        assert!(status.success(), "daemon exit {status:?}: {log}");
    }

    let mut runs = db.store.runs(&[], 100).await.unwrap();
    runs.sort_by_key(|r| r.id);
    assert!(runs.len() >= 2, "ticks every second for 6 s should create several runs: {}", runs.len());
    assert!(runs.len() <= 6, "one run per tick at most: {}", runs.len());
    let mut ticks: Vec<_> = runs.iter().map(|r| r.scheduled_for.expect("scheduled runs carry their tick")).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len(), "two runs for one tick");
    // The first run takes several ticks (30 items at 150 ms, 2+2 in flight); no run starts while it goes on.
    for pair in runs.windows(2) {
        let finished = pair[0].finished_at.unwrap_or(i64::MAX);
        assert!(pair[1].created_at >= finished, "run {} started while run {} was still going", pair[1].id, pair[0].id);
    }
    assert_eq!(db.store.counts(runs[0].id).await.unwrap().get(ItemState::Written), 30);
    assert_eq!(sb.provider.stats().answered, 30, "the two daemons shared the work without doing it twice");
}

on_both_backends! {
    graceful_shutdown => sigterm_finishes_or_releases_work;
}

mod scheduler {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(db) = crate::common::postgres().await else {
            return;
        };
        super::two_daemons_one_run_per_tick(&db).await;
        db.cleanup().await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let db = crate::common::sqlite().await;
        super::two_daemons_one_run_per_tick(&db).await;
        db.cleanup().await;
    }
}
