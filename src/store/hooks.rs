//! Webhook intake: records named by verified webhooks, queued into the pipeline's open webhook run.
//!
//! A webhook run (`trigger_kind = 'webhook'`) is open while it is discovering and its discovery has
//! not closed it (its `discovery_cursor` is still empty): webhooks arriving meanwhile join it. Its
//! discovery first closes it (setting the cursor, under the run row's lock, so a webhook either
//! joined before or opens the next run), then fetches the queued records by id and adds them as
//! items, marks the queue rows taken and moves the run on — those three in one transaction.

use sqlx::Row;

use super::items::{NewEvent, insert_events};
use super::{Backend, NewItem, NewRun, Result, RunStatus, Store, StoreError, now_ms, placeholders};

/// The cursor a webhook run's discovery sets when it closes the run to new webhooks.
const CLOSED: &str = "webhook:closed";

/// What [`Store::queue_hook`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookQueued {
    /// The webhook run the record joined.
    pub run_id: i64,
    /// The run was opened by this webhook (no webhook run was open).
    pub opened: bool,
    /// The record was already waiting in that run (a repeated delivery); nothing was added.
    pub already_queued: bool,
}

/// One record a webhook named, waiting for its run's discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRecord {
    pub entity: String,
    pub external_id: String,
    /// When the webhook arrived (Unix ms).
    pub received_at: i64,
}

impl Store {
    /// Queues record `external_id` of `entity` for `new.pipeline`: into the pipeline's open webhook
    /// run, or a new one (created from `new`, trigger `webhook`) when none is open. Safe against
    /// webhooks racing each other and the run's discovery closing it.
    pub async fn queue_hook(&self, new: &NewRun, entity: &str, external_id: &str) -> Result<HookQueued> {
        // A race with another webhook creating the open run, or with discovery closing it, ends in
        // a unique violation or a missed row; the next attempt sees the winner.
        let mut last = None;
        for _ in 0..5 {
            match self.try_queue_hook(new, entity, external_id).await {
                Ok(q) => return Ok(q),
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    last = Some(StoreError::Database(sqlx::Error::Database(e)))
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Refused("could not queue the webhook".into())))
    }

    async fn try_queue_hook(&self, new: &NewRun, entity: &str, external_id: &str) -> Result<HookQueued> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        // Touching the open run's row locks it (Postgres; SQLite has one writer), so its discovery
        // cannot close it between this look and the insert below.
        let open: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET discovered = discovered WHERE pipeline = $1 AND trigger_kind = 'webhook' \
             AND status = 'discovering' AND discovery_cursor IS NULL RETURNING id",
        )
        .bind(new.pipeline.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let (run_id, opened) = match open {
            Some(id) => (id, false),
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (pipeline, trigger_kind, scheduled_for, status, item_limit, max_attempts, budget_micros, \
                       created_at, review_phase, sample_size, auto_release_max_reject_ppm) \
                     VALUES ($1, 'webhook', NULL, 'discovering', NULL, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(new.pipeline.as_str())
                .bind(new.max_attempts)
                .bind(new.budget_micros)
                .bind(now)
                .bind(new.sample.map(|_| super::ReviewPhase::Sampling.as_str()))
                .bind(new.sample.map(|g| g.size))
                .bind(new.sample.and_then(|g| g.auto_release_max_reject_rate).map(|r| (r * 1e6).round() as i64))
                .fetch_one(&mut *tx)
                .await?;
                let event = NewEvent {
                    run_id: Some(id),
                    item_id: None,
                    kind: "run",
                    from_state: None,
                    to_state: Some(RunStatus::Discovering.as_str().into()),
                    actor: "webhook".into(),
                    detail: None,
                };
                insert_events(&mut tx, &[event], now).await?;
                (id, true)
            }
        };
        let inserted = sqlx::query(
            "INSERT INTO hook_queue (run_id, pipeline, entity, external_id, received_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (run_id, entity, external_id) DO NOTHING",
        )
        .bind(run_id)
        .bind(new.pipeline.as_str())
        .bind(entity)
        .bind(external_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(HookQueued { run_id, opened, already_queued: inserted == 0 })
    }

    /// Closes webhook run `run_id` to new webhooks (they open the next run), if `owner` holds its
    /// discovery lease. Closing twice is harmless. Returns whether the run is closed.
    pub async fn close_hook_run(&self, run_id: i64, owner: &str) -> Result<bool> {
        let closed: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET discovery_cursor = $1 WHERE id = $2 AND trigger_kind = 'webhook' \
             AND status = 'discovering' AND discovery_owner = $3 RETURNING id",
        )
        .bind(CLOSED)
        .bind(run_id)
        .bind(owner)
        .fetch_optional(&self.writer)
        .await?;
        Ok(closed.is_some())
    }

    /// The records waiting in webhook run `run_id`, oldest first.
    pub async fn hook_records(&self, run_id: i64) -> Result<Vec<HookRecord>> {
        let rows = sqlx::query(
            "SELECT entity, external_id, received_at FROM hook_queue WHERE run_id = $1 AND taken_at IS NULL ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HookRecord {
                    entity: r.try_get("entity")?,
                    external_id: r.try_get("external_id")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// Finishes the discovery of webhook run `run_id` in one transaction, under `owner`'s discovery
    /// lease: adds `items` as [`Store::add_discovered`] does, marks the run's queued records taken,
    /// and moves the run to `running` with `reason`.
    ///
    /// A record another run of the pipeline still has in progress, committed after the caller
    /// looked, is skipped here (checked inside the transaction; on Postgres webhook discoveries of
    /// one pipeline take an advisory lock), so one record is never enriched by two webhook runs at
    /// once.
    pub async fn take_hook_records(
        &self,
        run_id: i64,
        pipeline: &str,
        task_version: &str,
        owner: &str,
        items: &[NewItem],
        reason: &str,
    ) -> Result<usize> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                .bind(format!("enrichd:hooks:{pipeline}"))
                .execute(&mut *tx)
                .await?;
        }
        let mut items = items.to_vec();
        let wanted: Vec<&str> = items.iter().filter(|i| i.skip.is_none()).map(|i| i.external_id.as_str()).collect();
        if !wanted.is_empty() {
            let finished = super::ItemState::ALL
                .iter()
                .filter(|s| s.is_finished())
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT id, run_id, external_id, state FROM items WHERE pipeline = $1 AND run_id <> $2 \
                 AND state NOT IN ({finished}) AND external_id IN ({}) ORDER BY id",
                placeholders(3, wanted.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(pipeline).bind(run_id);
            for id in &wanted {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let ext: String = row.try_get("external_id")?;
                let (id, other, state): (i64, i64, String) =
                    (row.try_get("id")?, row.try_get("run_id")?, row.try_get("state")?);
                for item in items.iter_mut().filter(|i| i.external_id == ext && i.skip.is_none()) {
                    item.skip = Some(format!("already in progress in run {other} (item {id}, {state})"));
                }
            }
        }
        let added =
            self.add_discovered_in(&mut tx, run_id, pipeline, task_version, owner, &items, Some(CLOSED)).await?;
        sqlx::query("UPDATE hook_queue SET taken_at = $1 WHERE run_id = $2 AND taken_at IS NULL")
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let moved = sqlx::query(
            "UPDATE runs SET status = 'running', status_reason = $1, discovery_owner = NULL \
             WHERE id = $2 AND status = 'discovering' AND discovery_owner = $3",
        )
        .bind(reason)
        .bind(run_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Err(StoreError::NotFound(format!("run {run_id} discovering under a lease held by {owner}")));
        }
        let event = NewEvent {
            run_id: Some(run_id),
            item_id: None,
            kind: "run",
            from_state: Some(RunStatus::Discovering.as_str().into()),
            to_state: Some(RunStatus::Running.as_str().into()),
            actor: owner.into(),
            detail: Some(serde_json::json!({ "reason": reason }).to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(added)
    }
}
