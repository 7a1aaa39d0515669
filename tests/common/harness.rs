//! The engine in-process over both sandboxes: build it from a test config, start a run, work it.

use std::sync::Arc;
use std::time::Duration;

use super::{ConfigOptions, Sandboxes, TestDb, sandboxes, set_secret_env, write_config};
use enrichd::config::Config;
use enrichd::engine::{Engine, drain};
use enrichd::store::{ItemState, NewRun, ReviewPhase, Run, RunCounts, RunStart, RunStatus};
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
    start_named(engine, "catalogue").await
}

/// A new manual run of the pipeline named `pipeline` (or its unfinished one), with its attempts and
/// sample gate.
pub async fn start_named(engine: &Engine, pipeline: &str) -> Run {
    let config = &engine.pipelines[pipeline].config;
    let new = NewRun {
        pipeline: pipeline.into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: config.max_attempts as i64,
        budget_micros: None,
        sample: config.review.sample_gate(),
    };
    match engine.store.create_run(&new).await.unwrap() {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    }
}

/// Works run `run_id` of pipeline `catalogue` until it is settled (or `timeout`), then drains.
pub async fn work(engine: &Arc<Engine>, run_id: i64, timeout: Duration) -> Run {
    work_run(engine, run_id, timeout, false).await
}

/// Whether a run has machine work left: discovering or running, or — waiting for review — items
/// still to enrich or write. Items held behind a sample gate are not machine work.
fn busy(run: &Run, counts: &RunCounts) -> bool {
    use ItemState::*;
    match run.status {
        RunStatus::Discovering | RunStatus::Running => true,
        RunStatus::AwaitingReview => {
            counts.sum(&[Discovered, Enriching, Batched, Approved, Writing, WriteFailed]) > 0
                || (counts.get(Queued) > 0 && run.review_phase != Some(ReviewPhase::SampleReview))
        }
        _ => false,
    }
}

/// Works run `run_id` of pipeline `catalogue` until it has no machine work left, then drains and
/// returns the run. The run is settled here before each look, as the daemon's settle loop would,
/// so a run whose last item was just written is seen `done`, not still `awaiting_review`. Past
/// `timeout` it panics when `must_settle`, else returns the run as it is.
pub async fn work_run(engine: &Arc<Engine>, run_id: i64, timeout: Duration, must_settle: bool) -> Run {
    work_named(engine, "catalogue", run_id, timeout, must_settle).await
}

/// [`work_run`] for the pipeline named `pipeline`.
pub async fn work_named(
    engine: &Arc<Engine>,
    pipeline: &str,
    run_id: i64,
    timeout: Duration,
    must_settle: bool,
) -> Run {
    let stop = CancellationToken::new();
    let upkeep_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let upkeep = engine.spawn_upkeep(upkeep_stop.clone());
    let pipeline = engine.pipelines[pipeline].clone();
    let worker = {
        let (e, s, t) = (engine.clone(), stop.clone(), tracker.clone());
        tokio::spawn(async move { e.work_pipeline(pipeline, Some(run_id), s, t).await })
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let run = engine.store.settle_run(run_id, &engine.owner).await.unwrap();
        let counts = engine.store.counts(run_id).await.unwrap();
        if !busy(&run, &counts) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            assert!(!must_settle, "run {run_id} still busy after {timeout:?}: {run:?} {counts:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    drain(engine, &tracker, Duration::from_secs(5)).await;
    worker.await.unwrap();
    upkeep_stop.cancel();
    upkeep.await.unwrap();
    engine.store.settle_run(run_id, &engine.owner).await.unwrap()
}
