//! The watcher: turns run events in the event log into notifications in the outbox.
//!
//! It reads events after a cursor kept in the database (`notification_watch`) and records a
//! notification per event and endpoint with a unique key, so every daemon may read the same events
//! and a restart may read them again. The cursor trails the log by [`COMMIT_LAG_MS`]: event ids are
//! handed out before their transactions commit, so an event with a lower id can appear after a
//! higher one; events that recent are read again on the next pass instead of being stepped over.

use std::collections::BTreeSet;

use super::config::Event;
use super::{Notifier, message};
use crate::store::{EventRecord, NewNotification, Result, StoreError, now_ms};

/// How far behind the newest events the cursor stays (ms): longer than any transaction that
/// writes a run event.
const COMMIT_LAG_MS: i64 = 60_000;
/// Events read per pass and kind.
const BATCH: i64 = 500;
/// The failed writes of a run looked at to find its episodes.
const FAILURES_LOOKED_AT: i64 = 10_000;

impl Notifier {
    /// One pass: records the notifications for the run events since the cursor. Returns how many
    /// it recorded.
    pub async fn watch(&self) -> Result<usize> {
        if self.config.webhooks.is_empty() {
            // Nobody to tell: keep the cursor at the end, so endpoints configured later do not hear
            // about history.
            let last = self.store.last_event_id().await?;
            self.store.advance_notification_cursor(last).await?;
            return Ok(0);
        }
        let cursor = self.store.notification_cursor().await?;
        let events = self.store.notifiable_events(cursor, BATCH).await?;
        let mut recorded = 0;
        let mut failing = BTreeSet::new();
        for e in &events {
            let Some(run_id) = e.run_id else { continue };
            recorded += match (e.kind.as_str(), e.to_state.as_deref()) {
                ("run", Some("paused")) => self.record(run_id, Event::RunPaused, e, reason(e)).await?,
                ("run", Some("done" | "failed" | "cancelled")) => {
                    self.record(run_id, Event::RunFinished, e, reason(e)).await?
                }
                ("review_phase", Some("sample_review")) => self.record(run_id, Event::SampleWaiting, e, None).await?,
                ("transition", _) => {
                    failing.insert(run_id);
                    0
                }
                _ => 0,
            };
        }
        for run_id in failing {
            recorded += self.writes_failing(run_id).await?;
        }
        let settled = now_ms() - COMMIT_LAG_MS;
        if let Some(last) = events.iter().take_while(|e| e.at < settled).map(|e| e.id).last() {
            self.store.advance_notification_cursor(last).await?;
        }
        Ok(recorded)
    }

    /// Records `event` of run `run_id` about event row `about` for each endpoint that hears it and
    /// has not got it yet.
    async fn record(&self, run_id: i64, event: Event, about: &EventRecord, reason: Option<String>) -> Result<usize> {
        let run = match self.store.run(run_id).await {
            Ok(run) => run,
            // Discarded since (an empty run): nothing to tell.
            Err(StoreError::NotFound(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        let chosen = self.pipelines.get(&run.pipeline);
        let endpoints: Vec<_> = self.config.endpoints_for(event, chosen).collect();
        if endpoints.is_empty() {
            return Ok(0);
        }
        let have = self.store.notification_endpoints(run_id, event.as_str(), about.id).await?;
        if endpoints.iter().all(|(name, _)| have.contains(*name)) {
            return Ok(0);
        }
        if event == Event::SampleWaiting && !self.still_waits(&run).await? {
            return Ok(0);
        }
        let payload = message::payload(&self.store, &self.config, &run, event, about, reason).await?.to_string();
        let mut recorded = 0;
        for (name, hook) in endpoints {
            let target = super::masked(hook.url.value());
            let new = NewNotification {
                run_id,
                pipeline: &run.pipeline,
                event: event.as_str(),
                occurrence: about.id,
                endpoint: name,
                target: &target,
                payload: &payload,
            };
            if self.store.record_notification(&new).await? {
                recorded += 1;
                tracing::info!(run = run_id, event = %event, endpoint = %name, "notification recorded");
            }
        }
        Ok(recorded)
    }

    /// Whether a run whose sample went to review still waits for it: a sample its auto-release
    /// rule released at once never waited for anyone.
    async fn still_waits(&self, run: &crate::store::Run) -> Result<bool> {
        Ok(run.review_phase == Some(crate::store::ReviewPhase::SampleReview)
            || !run.released_by.as_deref().is_some_and(|by| by.starts_with("policy:")))
    }

    /// Records a `writes_failing` notification for each episode of run `run_id`'s failed writes
    /// that reached the threshold: `failures` failed writes, none more than `window_seconds` after
    /// the one before. An episode is named by its first failure, so it is told once.
    async fn writes_failing(&self, run_id: i64) -> Result<usize> {
        let rule = &self.config.writes_failing;
        let window = rule.window_seconds as i64 * 1000;
        let failures = self.store.write_failures(run_id, FAILURES_LOOKED_AT).await?;
        let mut recorded = 0;
        for episode in episodes(&failures, window) {
            let Some(nth) = episode.get(rule.failures as usize - 1) else { continue };
            let first = &episode[0];
            let last_error = match nth.item_id {
                Some(item) => self.store.item(item).await.ok().and_then(|i| i.last_error),
                None => None,
            };
            let mut why = format!(
                "{} writes to the platform failed within {}",
                rule.failures,
                message::duration_words(nth.at - first.at)
            );
            if let Some(e) = last_error {
                let short: String = e.chars().take(300).collect();
                why.push_str(&format!("; last error: {short}"));
            }
            recorded += self.record(run_id, Event::WritesFailing, first, Some(why)).await?;
        }
        Ok(recorded)
    }
}

/// `failures` (oldest first) split where more than `window` ms pass without one.
fn episodes(failures: &[EventRecord], window: i64) -> Vec<&[EventRecord]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=failures.len() {
        if i == failures.len() || failures[i].at - failures[i - 1].at > window {
            if start < i {
                out.push(&failures[start..i]);
            }
            start = i;
        }
    }
    out
}

/// The reason an event's detail gives (`{"reason": ...}`).
fn reason(e: &EventRecord) -> Option<String> {
    e.detail.as_ref()?.get("reason")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(id: i64, at: i64) -> EventRecord {
        EventRecord {
            id,
            run_id: Some(1),
            item_id: Some(id),
            at,
            kind: "transition".into(),
            from_state: Some("writing".into()),
            to_state: Some("write_failed".into()),
            actor: "t".into(),
            detail: None,
        }
    }

    #[test]
    fn a_quiet_window_ends_an_episode() {
        let f = [failure(1, 0), failure(2, 500), failure(3, 900), failure(4, 5_000), failure(5, 5_100)];
        let eps = episodes(&f, 1_000);
        let ids: Vec<Vec<i64>> = eps.iter().map(|e| e.iter().map(|x| x.id).collect()).collect();
        assert_eq!(ids, vec![vec![1, 2, 3], vec![4, 5]]);
        assert!(episodes(&[], 1_000).is_empty());
    }
}
