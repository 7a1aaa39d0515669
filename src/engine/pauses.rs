//! Platform errors that pause a run instead of failing its items or being retried: a used-up daily
//! allowance (Xero's `day_limit`, until the allowance resets) and a connection whose refresh token
//! was refused (until `enrichd connect` authorises it again). Retrying either would only spend
//! requests the platform is sure to refuse.

use enrichd_connector::ConnectorError;

use super::{Engine, Pipeline};
use crate::store::{Item, PlatformPause, now_ms};

/// The code of a connector error for a used-up daily allowance (`retry_after`: until it resets).
pub const DAY_LIMIT: &str = "day_limit";
/// How long items wait before they are looked at again when their connection needs `enrichd
/// connect` and their run cannot pause (it waits for review): the token store answers at once,
/// without a token request, until the connection is authorised again.
const NEEDS_CONNECT_RETRY_MS: i64 = 5 * 60 * 1000;

/// Whether `e` pauses the run, and what resumes it.
pub fn platform_pause(e: &ConnectorError, connection: &str) -> Option<PlatformPause> {
    if crate::oauth::needs_connect(e) {
        return Some(PlatformPause {
            reason: format!("waiting for `enrichd connect {connection}`: {}", e.message),
            resume_at: None,
            waits_for_connection: Some(connection.to_owned()),
        });
    }
    if e.code.as_deref() == Some(DAY_LIMIT) {
        let wait = e.retry_after.map_or(3_600_000, |d| d.as_millis() as i64).max(1000);
        let resume_at = now_ms() + wait;
        let at = chrono::DateTime::from_timestamp_millis(resume_at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        return Some(PlatformPause {
            reason: format!(
                "connection {connection}: daily request limit reached; resumes by itself at {at}: {}",
                e.message
            ),
            resume_at: Some(resume_at),
            waits_for_connection: None,
        });
    }
    None
}

/// Pauses run `run_id` of `pipeline` for `pause` (a no-op when the run is no longer discovering or
/// running) and logs it.
pub(super) async fn pause_run(engine: &Engine, pipeline: &Pipeline, run_id: i64, pause: &PlatformPause) {
    match engine.store.pause_for_platform(run_id, pause, &engine.owner).await {
        Ok(Some(_)) => {
            crate::telemetry::run_paused(&pipeline.name);
            tracing::warn!(run = run_id, pipeline = %pipeline.name, reason = %pause.reason, "run paused for its platform");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(run = run_id, error = %e, "pausing the run failed"),
    }
}

/// `items` met `pause`: they go back without counting an attempt, not to be taken again before
/// the run can resume, and their runs pause.
pub(super) async fn pause_items(engine: &Engine, pipeline: &Pipeline, items: &[&Item], pause: &PlatformPause) {
    let not_before = pause.resume_at.unwrap_or_else(|| now_ms() + NEEDS_CONNECT_RETRY_MS);
    let owned: Vec<Item> = items.iter().map(|i| (*i).clone()).collect();
    if let Err(e) = engine.store.give_back(&owned, &engine.owner, &pause.reason, not_before).await {
        tracing::warn!(pipeline = %pipeline.name, error = %e, "giving items back failed; their leases will expire");
    }
    let mut runs: Vec<i64> = items.iter().map(|i| i.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    for run in runs {
        pause_run(engine, pipeline, run, pause).await;
    }
}
