//! The notification outbox (migration 0020): run events worth telling someone about, one row per
//! notification and endpoint, delivered from the table under a lease, with every attempt kept.
//!
//! Recording is idempotent (a unique key per run, event, occurrence and endpoint), so every daemon
//! on a database may look at the same events; claiming takes a lease (`FOR UPDATE SKIP LOCKED` on
//! Postgres) so one daemon delivers each due notification; an attempt is recorded only by the
//! lease's holder. No transaction is held across the HTTP call.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::items::event_from_row;
use super::{Backend, EventRecord, Result, Store, now_ms};

/// A notification to record: about `event` of run `run_id`, for one endpoint.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub run_id: i64,
    pub pipeline: &'a str,
    pub event: &'a str,
    /// The id of the event row it is about.
    pub occurrence: i64,
    pub endpoint: &'a str,
    /// The endpoint's URL, masked.
    pub target: &'a str,
    pub payload: &'a str,
}

/// A due notification claimed for delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub run_id: i64,
    pub event: String,
    pub endpoint: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    /// Why it failed, without the URL or any secret.
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

/// Where a notification stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Tried again at this time (Unix ms).
    Retrying(i64),
    /// Given up: attempts used up, or an answer that trying again cannot change.
    Failed,
}

impl AttemptOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retrying(_) => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// A recorded notification with its attempts, for the run page and the API.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationRecord {
    pub id: i64,
    pub run_id: i64,
    pub event: String,
    pub endpoint: String,
    /// The endpoint's URL, masked (scheme and host).
    pub target: String,
    pub created_at: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    pub tries: Vec<AttemptRecord>,
}

/// One delivery attempt as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    /// `delivered`, `retrying` or `failed`.
    pub outcome: String,
    pub retry_at: Option<i64>,
}

impl Store {
    /// How far the event log has been looked through for notifications (an event id).
    pub async fn notification_cursor(&self) -> Result<i64> {
        let at: Option<i64> = sqlx::query_scalar("SELECT event_id FROM notification_watch WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(at.unwrap_or(0))
    }

    /// Moves the cursor forward to `event_id` (never back: another daemon may be further).
    pub async fn advance_notification_cursor(&self, event_id: i64) -> Result<()> {
        sqlx::query("UPDATE notification_watch SET event_id = $1 WHERE id = 1 AND event_id < $1")
            .bind(event_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The newest event's id (0 for none).
    pub async fn last_event_id(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(&self.pool).await?;
        Ok(id.unwrap_or(0))
    }

    /// Run events after `after` that notifications are about, oldest first: runs pausing or
    /// finishing, samples waiting for review, and failed writes.
    pub async fn notifiable_events(&self, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        // Three lookups on the (kind, to_state, id) index rather than one OR the planners may scan for.
        let mut out = Vec::new();
        // A lookup that filled its limit may have more after its last id: the answer stops there,
        // so the caller never steps over events it has not seen.
        let mut horizon = i64::MAX;
        for (kind, states, from) in [
            ("run", &["paused", "done", "failed", "cancelled"][..], None),
            ("review_phase", &["sample_review"][..], None),
            ("transition", &["write_failed", "dead"][..], Some("writing")),
        ] {
            let list = states.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT id, run_id, item_id, at, kind, from_state, to_state, actor, detail FROM events \
                 WHERE kind = $1 AND to_state IN ({list}) AND id > $2 AND run_id IS NOT NULL{} ORDER BY id LIMIT $3",
                if from.is_some() { " AND from_state = $4" } else { "" }
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(kind).bind(after).bind(limit);
            if let Some(from) = from {
                q = q.bind(from);
            }
            let rows = q.fetch_all(&self.pool).await?;
            if rows.len() as i64 >= limit
                && let Some(last) = rows.last()
            {
                horizon = horizon.min(last.try_get("id")?);
            }
            for row in &rows {
                out.push(event_from_row(row)?);
            }
        }
        out.retain(|e| e.id <= horizon);
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// Run `run_id`'s failed writes (events from `writing` to `write_failed` or `dead`), oldest
    /// first, at most the newest `limit`.
    pub async fn write_failures(&self, run_id: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT id, run_id, item_id, at, kind, from_state, to_state, actor, detail FROM events \
             WHERE kind = 'transition' AND to_state IN ('write_failed', 'dead') AND run_id = $1 \
               AND from_state = 'writing' ORDER BY id DESC LIMIT $2",
        )
        .bind(run_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The endpoints notification `event` of run `run_id` about `occurrence` is recorded for.
    pub async fn notification_endpoints(
        &self,
        run_id: i64,
        event: &str,
        occurrence: i64,
    ) -> Result<std::collections::BTreeSet<String>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT endpoint FROM notifications WHERE run_id = $1 AND event = $2 AND occurrence = $3",
        )
        .bind(run_id)
        .bind(event)
        .bind(occurrence)
        .fetch_all(&self.pool)
        .await?;
        Ok(names.into_iter().collect())
    }

    /// Records a notification, due at once, unless it is recorded already. Returns whether this
    /// call recorded it.
    pub async fn record_notification(&self, new: &NewNotification<'_>) -> Result<bool> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO notifications (run_id, pipeline, event, occurrence, endpoint, target, payload, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (run_id, event, occurrence, endpoint) DO NOTHING",
        )
        .bind(new.run_id)
        .bind(new.pipeline)
        .bind(new.event)
        .bind(new.occurrence)
        .bind(new.endpoint)
        .bind(new.target)
        .bind(new.payload)
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    /// Claims up to `limit` due notifications for `owner` for `lease_ms`: pending ones whose next
    /// attempt is due and that no live lease holds.
    pub async fn claim_notifications(&self, owner: &str, lease_ms: i64, limit: i64) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE notifications SET lease_owner = $1, lease_expires_at = $2 WHERE id IN (\
               SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= $3 \
                 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
               ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             RETURNING id, run_id, event, endpoint, payload, attempts"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    event: r.try_get("event")?,
                    endpoint: r.try_get("endpoint")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Records an attempt at notification `id` and where it now stands, if `owner` still holds its
    /// lease. Returns whether it was recorded (`false`: the lease was lost, another daemon has it).
    pub async fn record_attempt(&self, id: i64, owner: &str, attempt: &Attempt) -> Result<bool> {
        let now = now_ms();
        let (status, next, finished) = match attempt.outcome {
            AttemptOutcome::Delivered => ("delivered", None, Some(now)),
            AttemptOutcome::Retrying(at) => ("pending", Some(at), None),
            AttemptOutcome::Failed => ("failed", None, Some(now)),
        };
        let mut tx = self.writer.begin().await?;
        let number: Option<i64> = sqlx::query_scalar(
            "UPDATE notifications SET status = $1, attempts = attempts + 1, \
               next_attempt_at = COALESCE($2, next_attempt_at), finished_at = $3, last_error = $4, \
               lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $5 AND lease_owner = $6 AND status = 'pending' RETURNING attempts",
        )
        .bind(status)
        .bind(next)
        .bind(finished)
        .bind(attempt.error.as_deref())
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(number) = number else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, attempt, at, duration_ms, http_status, error, outcome, retry_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(number)
        .bind(attempt.started_at)
        .bind(attempt.duration_ms)
        .bind(attempt.http_status)
        .bind(attempt.error.as_deref())
        .bind(attempt.outcome.as_str())
        .bind(next)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Run `run_id`'s notifications with their attempts, oldest first.
    pub async fn run_notifications(&self, run_id: i64) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query(
            "SELECT id, run_id, event, endpoint, target, created_at, status, attempts, next_attempt_at, finished_at, \
               last_error, payload FROM notifications WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(notification_from_row).collect::<Result<Vec<_>>>()?;
        let attempts = sqlx::query(
            "SELECT a.notification_id, a.attempt, a.at, a.duration_ms, a.http_status, a.error, a.outcome, a.retry_at \
             FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id \
             WHERE n.run_id = $1 ORDER BY a.notification_id, a.attempt",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        for row in &attempts {
            let id: i64 = row.try_get("notification_id")?;
            if let Some(n) = out.iter_mut().find(|n| n.id == id) {
                n.tries.push(AttemptRecord {
                    attempt: row.try_get("attempt")?,
                    at: row.try_get("at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    http_status: row.try_get("http_status")?,
                    error: row.try_get("error")?,
                    outcome: row.try_get("outcome")?,
                    retry_at: row.try_get("retry_at")?,
                });
            }
        }
        Ok(out)
    }
}

fn notification_from_row(row: &AnyRow) -> Result<NotificationRecord> {
    let status: String = row.try_get("status")?;
    let payload: String = row.try_get("payload")?;
    Ok(NotificationRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        event: row.try_get("event")?,
        endpoint: row.try_get("endpoint")?,
        target: row.try_get("target")?,
        created_at: row.try_get("created_at")?,
        next_attempt_at: if status == "pending" { Some(row.try_get("next_attempt_at")?) } else { None },
        status,
        attempts: row.try_get("attempts")?,
        finished_at: row.try_get("finished_at")?,
        last_error: row.try_get("last_error")?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        tries: Vec::new(),
    })
}
