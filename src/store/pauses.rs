//! Runs that pause for their platform rather than fail: a used-up daily allowance (Xero's 5,000
//! calls) pauses a run until the allowance resets, and a connection whose refresh token was
//! refused pauses it until `enrichd connect` authorises the connection again. The items that met
//! the limit go back to where they were without counting an attempt (migration 0017).

use sqlx::{AssertSqlSafe, Row};

use super::items::{NewEvent, insert_events};
use super::runs::RUN_COLUMNS;
use super::{Item, Result, Run, RunStatus, Store, now_ms};

/// Why a run pauses for its platform, and what resumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPause {
    /// Shown as the run's status reason.
    pub reason: String,
    /// Resumes by itself at this time (Unix ms): the platform's allowance resets.
    pub resume_at: Option<i64>,
    /// Resumes when this connection is authorised again (`enrichd connect`).
    pub waits_for_connection: Option<String>,
}

impl Store {
    /// Pauses run `id` (discovering or running) for its platform. `None` when it is not
    /// discovering or running (already paused by another worker, finished, waiting for review).
    pub async fn pause_for_platform(&self, id: i64, pause: &PlatformPause, actor: &str) -> Result<Option<Run>> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET paused_from = status, status = 'paused', status_reason = $1, discovery_owner = NULL, \
               resume_at = $2, waits_for_connection = $3 \
             WHERE id = $4 AND status IN ('discovering', 'running') RETURNING {RUN_COLUMNS}"
        )))
        .bind(pause.reason.as_str())
        .bind(pause.resume_at)
        .bind(pause.waits_for_connection.as_deref())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let run = Run::from_row(&row)?;
        let event = NewEvent {
            run_id: Some(id),
            item_id: None,
            kind: "run",
            from_state: run.paused_from.map(|s| s.as_str().into()),
            to_state: Some(RunStatus::Paused.as_str().into()),
            actor: actor.into(),
            detail: Some(
                serde_json::json!({
                    "reason": pause.reason,
                    "resume_at": pause.resume_at,
                    "waits_for_connection": pause.waits_for_connection,
                })
                .to_string(),
            ),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    /// When run `id` resumes by itself, and the connection it waits for, if it paused for its platform.
    pub async fn platform_pause(&self, id: i64) -> Result<(Option<i64>, Option<String>)> {
        let row = sqlx::query("SELECT resume_at, waits_for_connection FROM runs WHERE id = $1 AND status = 'paused'")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok((row.try_get("resume_at")?, row.try_get("waits_for_connection")?)),
            None => Ok((None, None)),
        }
    }

    /// Resumes the runs of `pipeline` whose platform allowance has reset (`resume_at` passed).
    pub async fn resume_due(&self, pipeline: &str, actor: &str) -> Result<Vec<Run>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE pipeline = $1 AND status = 'paused' AND resume_at IS NOT NULL AND resume_at <= $2",
        )
        .bind(pipeline)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        self.resume_platform_paused(&ids, "the platform's allowance has reset", actor).await
    }

    /// Resumes the runs waiting for `connection` to be authorised again (after `enrichd connect`).
    pub async fn resume_waiting_for(&self, connection: &str, actor: &str) -> Result<Vec<Run>> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM runs WHERE status = 'paused' AND waits_for_connection = $1")
                .bind(connection)
                .fetch_all(&self.pool)
                .await?;
        self.resume_platform_paused(&ids, &format!("connection {connection} was authorised again"), actor).await
    }

    async fn resume_platform_paused(&self, ids: &[i64], why: &str, actor: &str) -> Result<Vec<Run>> {
        let mut resumed = Vec::new();
        for &id in ids {
            let now = now_ms();
            let reason = format!("resumed: {why}");
            let mut tx = self.writer.begin().await?;
            let row = sqlx::query(AssertSqlSafe(format!(
                "UPDATE runs SET status = CASE WHEN paused_from = 'discovering' THEN 'discovering' ELSE 'running' END, \
                   status_reason = $1, paused_from = NULL, resume_at = NULL, waits_for_connection = NULL, \
                   resumed_at = $2, resumed_by = $3 \
                 WHERE id = $4 AND status = 'paused' AND (resume_at IS NOT NULL OR waits_for_connection IS NOT NULL) \
                 RETURNING {RUN_COLUMNS}"
            )))
            .bind(reason.as_str())
            .bind(now)
            .bind(actor)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                continue;
            };
            let run = Run::from_row(&row)?;
            let event = NewEvent {
                run_id: Some(id),
                item_id: None,
                kind: "run",
                from_state: Some(RunStatus::Paused.as_str().into()),
                to_state: Some(run.status.as_str().into()),
                actor: actor.into(),
                detail: Some(serde_json::json!({ "reason": reason }).to_string()),
            };
            insert_events(&mut tx, &[event], now).await?;
            tx.commit().await?;
            resumed.push(run);
        }
        Ok(resumed)
    }

    /// Gives leased items back without counting an attempt, not to be claimed before `not_before`
    /// (Unix ms): items being enriched return to `queued`; items being written go to
    /// `write_failed`, because a write may have landed and must be re-checked before it is tried again.
    pub async fn give_back(&self, items: &[Item], owner: &str, reason: &str, not_before: i64) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let mut events = Vec::new();
        for item in items {
            let row = sqlx::query(
                "UPDATE items SET prev_state = state, \
                   state = CASE WHEN state = 'enriching' THEN 'queued' ELSE 'write_failed' END, \
                   last_error = $1, lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $2, updated_at = $3 \
                 WHERE id = $4 AND lease_owner = $5 AND state IN ('enriching', 'writing') \
                 RETURNING id, run_id, prev_state, state",
            )
            .bind(reason)
            .bind(not_before)
            .bind(now)
            .bind(item.id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                events.push(NewEvent {
                    run_id: Some(row.try_get("run_id")?),
                    item_id: Some(row.try_get("id")?),
                    kind: "transition",
                    from_state: row.try_get("prev_state")?,
                    to_state: Some(row.try_get("state")?),
                    actor: owner.into(),
                    detail: Some(serde_json::json!({ "reason": reason, "not_before": not_before }).to_string()),
                });
            }
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(events.len() as u64)
    }
}
