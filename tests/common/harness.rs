//! The engine in-process over both sandboxes: build it from a test config, start a run, work it.

use std::sync::Arc;
use std::time::Duration;

use super::{ConfigOptions, Sandboxes, TestDb, sandboxes, set_secret_env, write_config};
use enrichd::config::Config;
use enrichd::engine::{Engine, drain};
use enrichd::store::{NewRun, Run, RunStart, RunStatus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Harness {
    pub sb: Sandboxes,
    pub engine: Arc<Engine>,
    pub _dir: tempfile::TempDir,
}

pub async fn harness(db: &TestDb, products: u64, missing_every: u64, options: ConfigOptions) -> Harness {
    set_secret_env();
    let sb = sandboxes(products, missing_every).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &db.url, &sb, &options);
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Harness { sb, engine, _dir: dir }
}

pub async fn start_run(engine: &Engine) -> Run {
    let store = &engine.store;
    let max_attempts = engine.pipelines["catalogue"].config.max_attempts as i64;
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts,
        budget_micros: None,
        sample: engine.pipelines["catalogue"].config.review.sample_gate(),
    };
    match store.create_run(&new).await.unwrap() {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    }
}

/// Works the run until it leaves discovering/running and, waiting for review, has nothing approved
/// left to write (or `timeout`), then drains.
pub async fn work(engine: &Arc<Engine>, run_id: i64, timeout: Duration) -> Run {
    let stop = CancellationToken::new();
    let upkeep_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let upkeep = engine.spawn_upkeep(upkeep_stop.clone());
    let pipeline = engine.pipelines["catalogue"].clone();
    let worker = {
        let (e, s, t) = (engine.clone(), stop.clone(), tracker.clone());
        tokio::spawn(async move { e.work_pipeline(pipeline, Some(run_id), s, t).await })
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let run = loop {
        let run = engine.store.run(run_id).await.unwrap();
        // A run waiting for review may still have approved items to write.
        let writing =
            run.status == RunStatus::AwaitingReview && engine.store.counts(run_id).await.unwrap().machine_pending() > 0;
        let busy = matches!(run.status, RunStatus::Discovering | RunStatus::Running) || writing;
        if !busy || tokio::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    drain(engine, &tracker, Duration::from_secs(5)).await;
    worker.await.unwrap();
    upkeep_stop.cancel();
    upkeep.await.unwrap();
    run
}
