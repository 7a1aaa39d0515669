//! Provider batches: items leave their lease for a batch row before the batch is sent, the
//! provider's id is stored as soon as it is known, any daemon can poll it, and each result line
//! settles only the items of that line. Daemon presence for shared rate limits lives here too.

use serde_json::json;
use sqlx::{AssertSqlSafe, Row};

use super::items::{
    Bind, EnrichFailure, MARK_SAMPLE, Move, NewEvent, Proposal, RetryPolicy, Usage, approve_move, insert_events,
};
use super::{Item, ItemState, Result, Store, StoreError, now_ms, placeholders, rows_per_statement};
use enrichd_connector::retry::backoff;

/// A provider batch as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchRow {
    pub id: i64,
    pub run_id: i64,
    pub pipeline: String,
    pub provider: String,
    pub model: String,
    pub tag: String,
    pub provider_batch_id: Option<String>,
    pub state: String,
    pub lines: i64,
    pub items: i64,
    pub bytes: i64,
    pub polls: i64,
    pub detail: Option<String>,
    pub created_at: i64,
    pub submitted_at: Option<i64>,
    pub ended_at: Option<i64>,
}

const BATCH_COLUMNS: &str = "id, run_id, pipeline, provider, model, tag, provider_batch_id, state, lines, items, bytes, \
    polls, detail, created_at, submitted_at, ended_at";

fn batch_from_row(row: &sqlx::any::AnyRow) -> Result<BatchRow> {
    Ok(BatchRow {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        pipeline: row.try_get("pipeline")?,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        tag: row.try_get("tag")?,
        provider_batch_id: row.try_get("provider_batch_id")?,
        state: row.try_get("state")?,
        lines: row.try_get("lines")?,
        items: row.try_get("items")?,
        bytes: row.try_get("bytes")?,
        polls: row.try_get("polls")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        submitted_at: row.try_get("submitted_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

/// A batch about to be sent.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub run_id: i64,
    pub pipeline: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub tag: &'a str,
    /// `(item id, line custom_id)` for every item going in.
    pub items: &'a [(i64, String)],
    pub lines: usize,
    pub bytes: usize,
    /// How long the submitter may take before others treat the batch as lost.
    pub lease: std::time::Duration,
}

impl Store {
    /// Moves leased items into a new `preparing` batch (`enriching` → `batched`, lease dropped) in
    /// one transaction, before anything is sent. Returns the batch id.
    pub async fn prepare_batch(&self, owner: &str, batch: &NewBatch<'_>) -> Result<i64> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(
            "INSERT INTO batches (run_id, pipeline, provider, model, tag, state, lines, items, bytes, lease_owner, \
             lease_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, 'preparing', $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(batch.run_id)
        .bind(batch.pipeline)
        .bind(batch.provider)
        .bind(batch.model)
        .bind(batch.tag)
        .bind(batch.lines as i64)
        .bind(batch.items.len() as i64)
        .bind(batch.bytes as i64)
        .bind(owner)
        .bind(now + batch.lease.as_millis() as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let batch_id: i64 = row.try_get("id")?;
        let mut events = Vec::with_capacity(batch.items.len());
        for (item, line) in batch.items {
            let moved = sqlx::query(
                "UPDATE items SET prev_state = state, state = 'batched', batch_id = $1, batch_line = $2, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 \
                 WHERE id = $4 AND state = 'enriching' AND lease_owner = $5 RETURNING run_id",
            )
            .bind(batch_id)
            .bind(line.as_str())
            .bind(now)
            .bind(*item)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(moved) = moved else {
                tx.rollback().await?;
                return Err(StoreError::LeaseLost {
                    item: *item,
                    owner: owner.into(),
                    state: ItemState::Enriching,
                    holder: "someone else".into(),
                });
            };
            events.push(NewEvent {
                run_id: Some(moved.try_get("run_id")?),
                item_id: Some(*item),
                kind: "transition",
                from_state: Some("enriching".into()),
                to_state: Some("batched".into()),
                actor: owner.into(),
                detail: Some(json!({"batch": batch_id, "tag": batch.tag, "line": line}).to_string()),
            });
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(batch_id)
    }

    /// Records the provider's id: the batch is `submitted` and due for polling at `first_poll_at`.
    pub async fn batch_submitted(&self, batch_id: i64, provider_batch_id: &str, first_poll_at: i64) -> Result<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE batches SET state = 'submitted', provider_batch_id = $1, submitted_at = $2, next_poll_at = $3, \
             lease_owner = NULL, lease_expires_at = NULL WHERE id = $4 AND state = 'preparing'",
        )
        .bind(provider_batch_id)
        .bind(now)
        .bind(first_poll_at)
        .bind(batch_id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound(format!("batch {batch_id} in state preparing")));
        }
        Ok(())
    }

    /// Takes the pipeline's submitted batches that are due for a poll, pushing their next poll to
    /// `next_poll_at` (a conditional update, so two daemons never poll the same batch at once).
    pub async fn batches_due(&self, pipeline: &str, next_poll_at: i64, limit: i64) -> Result<Vec<BatchRow>> {
        let now = now_ms();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE batches SET next_poll_at = $1, polls = polls + 1 WHERE id IN (SELECT id FROM batches \
             WHERE pipeline = $2 AND state = 'submitted' AND next_poll_at <= $3 ORDER BY id LIMIT $4) \
             AND next_poll_at <= $3 RETURNING {BATCH_COLUMNS}"
        )))
        .bind(next_poll_at)
        .bind(pipeline)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// `preparing` batches whose submitter's lease ran out (it crashed mid-submit), taken over by
    /// `owner` for `lease`.
    pub async fn orphaned_batches(
        &self,
        pipeline: &str,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<BatchRow>> {
        let now = now_ms();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE batches SET lease_owner = $1, lease_expires_at = $2 \
             WHERE pipeline = $3 AND state = 'preparing' AND lease_expires_at < $4 RETURNING {BATCH_COLUMNS}"
        )))
        .bind(owner)
        .bind(now + lease.as_millis() as i64)
        .bind(pipeline)
        .bind(now)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// One batch.
    pub async fn batch(&self, id: i64) -> Result<BatchRow> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("batch {id}")))
    }

    /// A run's batches, oldest first.
    pub async fn run_batches(&self, run_id: i64) -> Result<Vec<BatchRow>> {
        let rows =
            sqlx::query(AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE run_id = $1 ORDER BY id")))
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(batch_from_row).collect()
    }

    /// The items still waiting in batch `batch_id`.
    pub async fn batch_items(&self, batch_id: i64) -> Result<Vec<Item>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM items WHERE batch_id = $1 AND state = 'batched' ORDER BY id",
            super::items::ITEM_COLUMNS
        )))
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Item::from_row).collect()
    }

    /// Closes a batch: `ended`, `failed` or `abandoned`, with a note.
    pub async fn end_batch(&self, batch_id: i64, state: &str, detail: &str) -> Result<()> {
        sqlx::query(
            "UPDATE batches SET state = $1, detail = $2, ended_at = $3, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $4 AND state IN ('preparing', 'submitted')",
        )
        .bind(state)
        .bind(detail)
        .bind(now_ms())
        .bind(batch_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// `batched` → `proposed` (and `approved` with `approve_as`), for an item of `batch_id`.
    #[allow(clippy::too_many_arguments, reason = "mirrors `propose`, plus the batch that holds the item")]
    pub async fn propose_batched(
        &self,
        item: &Item,
        batch_id: i64,
        actor: &str,
        proposal: &Proposal,
        raw_output: &str,
        usage: Usage,
        approve_as: Option<&str>,
    ) -> Result<Item> {
        let json = serde_json::to_string(proposal).expect("a proposal always serialises");
        let mut moves = vec![Move {
            from: &[ItemState::Batched],
            to: ItemState::Proposed,
            owner: None,
            sets: vec![
                ("proposal", Bind::Text(json)),
                ("warnings", Bind::I64(proposal.warnings.len() as i64)),
                ("raw_output", Bind::Text(raw_output.into())),
                ("last_error", Bind::OptText(None)),
                ("cost_micros", Bind::I64(item.cost_micros + usage.cost_micros)),
                ("tokens_in", Bind::I64(item.tokens_in + usage.input_tokens)),
                ("tokens_out", Bind::I64(item.tokens_out + usage.output_tokens)),
            ],
            raw_sets: &[MARK_SAMPLE],
            guard: Some(("batch_id", Bind::I64(batch_id))),
            actor,
            detail: Some(json!({
                "model": proposal.model, "task_version": proposal.task_version, "batch": batch_id,
                "tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens, "cost_micros": usage.cost_micros,
            })),
            run_usage: Some(usage),
        }];
        // A held proposal (a duplicate) waits for a person whatever the policy says.
        if let Some(approver) = approve_as.filter(|_| proposal.held.is_none()) {
            moves.push(approve_move(approver));
        }
        self.apply_all(item.id, moves).await
    }

    /// A batched item got no usable answer. Like a realtime failure: back to `queued` after a
    /// backoff (an attempt counted) or `dead`. With `count_attempt = false` (expired or cancelled
    /// lines, a batch that never reached the provider) it is re-queued at once without using up an
    /// attempt.
    pub async fn fail_batched(
        &self,
        item: &Item,
        batch_id: i64,
        actor: &str,
        failure: EnrichFailure<'_>,
        policy: RetryPolicy,
        count_attempt: bool,
    ) -> Result<Item> {
        let EnrichFailure { error, retryable, retry_after, raw_output, usage } = failure;
        let attempts = item.attempts + i64::from(count_attempt);
        let give_up = !retryable || attempts >= item.max_attempts;
        let (to, next) = if give_up {
            (ItemState::Dead, 0)
        } else if !count_attempt {
            (ItemState::Queued, 0)
        } else {
            (
                ItemState::Queued,
                now_ms() + backoff(attempts as u32, policy.base, policy.max, retry_after).as_millis() as i64,
            )
        };
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Batched],
                to,
                owner: None,
                sets: vec![
                    ("last_error", Bind::Text(error.into())),
                    ("next_attempt_at", Bind::I64(next)),
                    ("raw_output", Bind::OptText(raw_output.map(str::to_owned))),
                    ("cost_micros", Bind::I64(item.cost_micros + usage.cost_micros)),
                    ("tokens_in", Bind::I64(item.tokens_in + usage.input_tokens)),
                    ("tokens_out", Bind::I64(item.tokens_out + usage.output_tokens)),
                    ("attempts", Bind::I64(attempts)),
                ],
                raw_sets: &[],
                guard: Some(("batch_id", Bind::I64(batch_id))),
                actor,
                detail: Some(json!({ "error": error, "retryable": retryable, "attempt": attempts, "batch": batch_id })),
                run_usage: (usage != Usage::default()).then_some(usage),
            },
        )
        .await
    }

    /// A packed answer left these items out: they go back to `queued` marked to be sent alone
    /// (`enriching` → `queued`, no attempt used up).
    pub async fn requeue_solo(&self, item: &Item, owner: &str, reason: &str) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Enriching],
                to: ItemState::Queued,
                owner: Some(owner),
                sets: vec![("last_error", Bind::Text(reason.into())), ("next_attempt_at", Bind::I64(0))],
                raw_sets: &["solo = 1"],
                guard: None,
                actor: owner,
                detail: Some(json!({ "reason": reason, "solo": true })),
                run_usage: None,
            },
        )
        .await
    }

    /// Marks an item to be sent on its own from now on.
    pub async fn mark_solo(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE items SET solo = 1 WHERE id = $1").bind(id).execute(&self.writer).await?;
        Ok(())
    }

    /// Records that daemon `owner` is alive, and returns how many daemons have been seen within
    /// `window_ms` (including this one): rate limits are split between them.
    pub async fn daemon_heartbeat(&self, owner: &str, window_ms: i64) -> Result<u32> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO daemons (owner, started_at, seen_at) VALUES ($1, $2, $2) \
             ON CONFLICT (owner) DO UPDATE SET seen_at = $2",
        )
        .bind(owner)
        .bind(now)
        .execute(&self.writer)
        .await?;
        sqlx::query("DELETE FROM daemons WHERE seen_at < $1").bind(now - 20 * window_ms).execute(&self.writer).await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM daemons WHERE seen_at >= $1")
            .bind(now - window_ms)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n.max(1) as u32)
    }

    /// How many processes working runs (daemons, `enrichd run`) were seen within `window_ms`,
    /// without registering the caller (for watchers).
    pub async fn live_workers(&self, window_ms: i64) -> Result<i64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM daemons WHERE seen_at >= $1")
            .bind(now_ms() - window_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Items of run `run_id` written since `since_ms` whose read-back is not recorded yet: a writer
    /// verifies each batch right after writing it. (A read-back that failed leaves items unverified
    /// for good, so only recent writes count.)
    pub async fn unverified_writes(&self, run_id: i64, since_ms: i64) -> Result<i64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM items WHERE run_id = $1 AND state = 'written' \
             AND verified_at IS NULL AND verify_issues IS NULL AND updated_at >= $2",
        )
        .bind(run_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Removes `owner` from the live daemons (clean shutdown).
    pub async fn daemon_gone(&self, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM daemons WHERE owner = $1").bind(owner).execute(&self.writer).await?;
        Ok(())
    }

    /// Queued items of `pipeline` ready to be claimed now, and whether any of its active runs is
    /// still discovering: batch mode waits for a full batch or the end of discovery.
    pub async fn batch_backlog(&self, pipeline: &str, run_id: Option<i64>) -> Result<(i64, bool)> {
        let filter = if run_id.is_some() { "AND r.id = $3" } else { "AND $3 = $3" };
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT \
               (SELECT COUNT(*) FROM items i JOIN runs r ON r.id = i.run_id WHERE i.pipeline = $1 AND i.state = 'queued' \
                  AND i.next_attempt_at <= $2 AND r.status IN ('discovering', 'running') {filter}) AS queued, \
               (SELECT COUNT(*) FROM runs r WHERE r.pipeline = $1 AND r.status = 'discovering' {filter}) AS discovering"
        )))
        .bind(pipeline)
        .bind(now_ms())
        .bind(run_id.unwrap_or(0))
        .fetch_one(&self.pool)
        .await?;
        let queued: i64 = row.try_get("queued")?;
        let discovering: i64 = row.try_get("discovering")?;
        Ok((queued, discovering > 0))
    }

    /// Items by id (any state), for matching batch results.
    pub async fn items_by_id(&self, ids: &[i64]) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(rows_per_statement(self.backend, 1, 500)) {
            let sql = format!(
                "SELECT {} FROM items WHERE id IN ({}) ORDER BY id",
                super::items::ITEM_COLUMNS,
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(Item::from_row(&row)?);
            }
        }
        Ok(out)
    }
}
