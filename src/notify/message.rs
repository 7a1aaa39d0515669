//! What a notification says: the JSON body, with a one-paragraph `text` a chat tool shows as is
//! (a Slack incoming webhook takes the body unchanged).

use serde_json::{Value, json};

use super::config::{Event, NotificationsConfig};
use crate::store::{EventRecord, Result, Run, Store};

/// The body of `event` of `run`, about event row `about`, with `reason` (why it paused, why writes
/// count as failing).
pub(super) async fn payload(
    store: &Store,
    config: &NotificationsConfig,
    run: &Run,
    event: Event,
    about: &EventRecord,
    reason: Option<String>,
) -> Result<Value> {
    let url = config.public_url.as_ref().map(|base| format!("{}/runs/{}", base.trim_end_matches('/'), run.id));
    let subject = format!("Run {} of {}", run.id, run.pipeline);
    let mut body = json!({
        "id": format!("run-{}-{}-{}", run.id, event.as_str(), about.id),
        "event": event.as_str(),
        "at": utc(about.at),
        "run": {
            "id": run.id,
            "pipeline": run.pipeline,
            "status": run.status.as_str(),
            "status_reason": run.status_reason,
            "trigger": run.trigger_kind,
            "created_at": utc(run.created_at),
            "finished_at": run.finished_at.map(utc),
            "spent_usd": run.spent_usd(),
        },
        "url": url,
    });
    let text = match event {
        Event::SampleWaiting => {
            let stats = store.sample_stats(run.id).await?;
            body["sample"] = json!({ "size": stats.sample_size, "proposed": stats.total, "reviewed": stats.reviewed });
            format!(
                "{subject}: its sample of {} proposal{} waits for review; the rest of the run is held until a reviewer releases it.",
                stats.total,
                if stats.total == 1 { "" } else { "s" }
            )
        }
        Event::RunPaused => {
            let why = reason.clone().unwrap_or_else(|| "no reason was given".into());
            format!("{subject} paused: {why}. Resume it on the run page once the cause is dealt with.")
        }
        Event::RunFinished => {
            let report = store.report(run.id).await?;
            let ended = match about.to_state.as_deref() {
                Some("failed") => "failed",
                Some("cancelled") => "was cancelled",
                _ => "finished",
            };
            let text = format!(
                "{subject} {ended}: {} item{}, {} written, {} rejected, {} failed, {} still waiting for review; spend {}.",
                report.total,
                if report.total == 1 { "" } else { "s" },
                report.written,
                report.rejected,
                report.dead,
                report.awaiting_review,
                report.run.spent_text()
            );
            body["report"] = serde_json::to_value(&report).expect("a report serialises");
            text
        }
        Event::WritesFailing => {
            let why = reason.clone().unwrap_or_default();
            format!("{subject}: writes are failing: {why}.")
        }
    };
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    body["text"] = json!(match &url {
        Some(url) => format!("{text} {url}"),
        None => text,
    });
    Ok(body)
}

/// Unix ms as `2026-12-06T13:05:00Z`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// A span of milliseconds in words: `40 seconds`, `3 minutes`.
pub(super) fn duration_words(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    match s {
        0..=1 => "a second".into(),
        2..=119 => format!("{s} seconds"),
        _ => format!("{} minutes", (s + 59) / 60),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_words() {
        assert_eq!(super::duration_words(300), "a second");
        assert_eq!(super::duration_words(40_000), "40 seconds");
        assert_eq!(super::duration_words(600_000), "10 minutes");
    }
}
