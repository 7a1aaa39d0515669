//! Items: discovery inserts, leases (claim, heartbeat, reclaim, release) and every transition.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::commit::OwnedMove;
use super::{Backend, ItemState, Result, Store, StoreError, now_ms, parse_col, placeholders, rows_per_statement};
use crate::task::{EditRefusal, Task};
use enrichd_connector::retry::backoff;

pub(super) const ITEM_COLUMNS: &str = "id, run_id, pipeline, entity, external_id, state, prev_state, attempts, write_attempts, \
    max_attempts, next_attempt_at, lease_owner, lease_expires_at, record_version, input, input_hash, task_version, \
    proposal, raw_output, written_version, cost_micros, tokens_in, tokens_out, last_error, created_at, updated_at, batch_id, batch_line, solo, \
    replaced, verified_at, verify_issues, sample";

/// One record's trip through one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub id: i64,
    pub run_id: i64,
    pub pipeline: String,
    pub entity: String,
    pub external_id: String,
    pub state: ItemState,
    pub prev_state: Option<ItemState>,
    /// Failed enrichment attempts so far (a reclaimed lease counts as one).
    pub attempts: i64,
    /// Failed write attempts so far.
    pub write_attempts: i64,
    pub max_attempts: i64,
    /// Not claimed again before this time (Unix ms): the retry backoff.
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// The record's version when it was pulled; the write-back compares against it.
    pub record_version: String,
    /// The record's fields as pulled (JSON object).
    pub input: String,
    pub input_hash: String,
    pub task_version: String,
    pub proposal: Option<Proposal>,
    /// The model's raw answer, kept for diagnosis when it was unusable.
    pub raw_output: Option<String>,
    pub written_version: Option<String>,
    pub cost_micros: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// Why the item last failed, was skipped or died.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The provider batch the item is (or was last) in.
    pub batch_id: Option<i64>,
    /// Its line in that batch (`custom_id`); items packed together share one.
    pub batch_line: Option<String>,
    /// A packed answer left it out: it is sent on its own.
    pub solo: bool,
    /// Each written field's upstream value just before our write (what an undo puts back).
    pub replaced: Option<Map<String, Value>>,
    /// When the written values were read back and compared (Unix ms).
    pub verified_at: Option<i64>,
    /// Fields that did not hold the value written, with the reason.
    pub verify_issues: Option<Vec<VerifyIssue>>,
    /// Proposed while its run's sample gate was closed: part of the sample a reviewer judges.
    pub sample: bool,
}

/// A written field that did not hold the value written when it was read back.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerifyIssue {
    pub field: String,
    pub written: Value,
    /// What the platform returned for it (null when the field was gone).
    pub stored: Value,
    pub reason: String,
}

impl Item {
    pub(super) fn from_row(row: &AnyRow) -> Result<Item> {
        let opt_state = |col: &str| -> Result<Option<ItemState>> {
            let v: Option<String> = row.try_get(col)?;
            v.map(|s| s.parse().map_err(StoreError::Corrupt)).transpose()
        };
        let id: i64 = row.try_get("id")?;
        fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, id: i64, col: &str) -> Result<Option<T>> {
            let text: Option<String> = row.try_get(col)?;
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("item {id}: {col}: {e}"))))
                .transpose()
        }
        let proposal: Option<String> = row.try_get("proposal")?;
        let proposal = proposal
            .map(|p| serde_json::from_str(&p).map_err(|e| StoreError::Corrupt(format!("item {id}: proposal: {e}"))))
            .transpose()?;
        Ok(Item {
            id,
            run_id: row.try_get("run_id")?,
            pipeline: row.try_get("pipeline")?,
            entity: row.try_get("entity")?,
            external_id: row.try_get("external_id")?,
            state: parse_col(row, "state")?,
            prev_state: opt_state("prev_state")?,
            attempts: row.try_get("attempts")?,
            write_attempts: row.try_get("write_attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            record_version: row.try_get("record_version")?,
            input: row.try_get("input")?,
            input_hash: row.try_get("input_hash")?,
            task_version: row.try_get("task_version")?,
            proposal,
            raw_output: row.try_get("raw_output")?,
            written_version: row.try_get("written_version")?,
            cost_micros: row.try_get("cost_micros")?,
            tokens_in: row.try_get("tokens_in")?,
            tokens_out: row.try_get("tokens_out")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            batch_id: row.try_get("batch_id")?,
            batch_line: row.try_get("batch_line")?,
            solo: row.try_get::<i64, _>("solo")? != 0,
            replaced: json_col(row, id, "replaced")?,
            verified_at: row.try_get("verified_at")?,
            verify_issues: json_col(row, id, "verify_issues")?,
            sample: row.try_get::<i64, _>("sample")? != 0,
        })
    }

    /// The record's name for people, as pulled: its `name`, `title` or `subject`, if it has one.
    pub fn record_name(&self) -> Option<String> {
        let fields = self.input_fields().ok()?;
        ["name", "title", "subject"]
            .iter()
            .find_map(|k| fields.get(*k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
            .map(str::to_owned)
    }

    /// The record fields as pulled.
    pub fn input_fields(&self) -> Result<Map<String, Value>> {
        serde_json::from_str(&self.input).map_err(|e| StoreError::Corrupt(format!("item {}: input: {e}", self.id)))
    }
}

/// One field of a proposal: what the record held when pulled, what the model proposed, and what a
/// reviewer changed it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub before: Value,
    pub proposed: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<Value>,
}

impl FieldChange {
    /// What will be written: the reviewer's value if there is one.
    pub fn value(&self) -> &Value {
        self.edited.as_ref().unwrap_or(&self.proposed)
    }
}

/// The diff an item wants to write, with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub fields: BTreeMap<String, FieldChange>,
    pub model: String,
    pub task_version: String,
    /// Task checks the answer failed (`seo_title: 72 characters, at most 60`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The model's confidence in its answer (0–1), from the pipeline's confidence property
    /// (`review.confidence_field`, else the task's `confidence`), when the answer has one: what
    /// the review queue's confidence filter reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why this proposal must never be written (it duplicates a bill already on the platform). A
    /// held proposal cannot be approved — by a policy, a reviewer, the API, the CLI or a bulk
    /// action — and write-back refuses it; it can only be rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// What the task's rules and look-ups found (check results, matched supplier, duplicates).
    #[serde(default, skip_serializing_if = "crate::checks::Findings::is_empty")]
    pub findings: crate::checks::Findings,
}

impl Proposal {
    /// Field → value to write.
    pub fn values(&self) -> Map<String, Value> {
        self.fields.iter().map(|(k, c)| (k.clone(), c.value().clone())).collect()
    }
}

/// Tokens and money one enrichment cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    /// The model has no known price: `cost_micros` does not count these tokens, and the run's spend
    /// becomes unknown.
    pub unpriced: bool,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_micros += other.cost_micros;
        self.unpriced |= other.unpriced;
    }
}

/// Adds `usage` to run `run_id`'s totals: its cost and tokens, and a call without a price makes the
/// run's spend unknown.
pub(super) async fn add_run_usage(conn: &mut sqlx::AnyConnection, run_id: i64, usage: Usage) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET cost_micros = cost_micros + $1, tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, \
         cost_unknown = CASE WHEN $4 <> 0 THEN 1 ELSE cost_unknown END WHERE id = $5",
    )
    .bind(usage.cost_micros)
    .bind(usage.input_tokens)
    .bind(usage.output_tokens)
    .bind(i64::from(usage.unpriced))
    .bind(run_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A record found by discovery.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub entity: String,
    pub external_id: String,
    pub record_version: String,
    /// The record's fields, JSON.
    pub input: String,
    pub input_hash: String,
    /// `Some(reason)`: goes straight to `skipped`.
    pub skip: Option<String>,
    /// The record's attachments as the connector listed them (fetched only when a task reads them).
    pub attachments: Vec<enrichd_connector::AttachmentRef>,
}

/// An earlier item for the same record, used to avoid enriching it twice.
#[derive(Debug, Clone)]
pub struct PriorItem {
    pub id: i64,
    pub run_id: i64,
    pub external_id: String,
    pub state: ItemState,
    pub input_hash: String,
    pub task_version: String,
}

/// Which work a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `queued` → `enriching`, from runs that are discovering or running, within budget, and not
    /// held for sample review.
    Enrich,
    /// `approved` or due `write_failed` → `writing`, from runs that are not paused or cancelled.
    Write,
}

/// A request for up to `limit` items under a lease.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub pipeline: &'a str,
    /// Only this run's items, or any run of the pipeline.
    pub run_id: Option<i64>,
    pub work: Work,
    pub owner: &'a str,
    pub limit: usize,
    pub lease: Duration,
}

/// An audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    pub item_id: Option<i64>,
    pub at: i64,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub actor: String,
    pub detail: Option<Value>,
}

pub(super) struct NewEvent {
    pub run_id: Option<i64>,
    pub item_id: Option<i64>,
    pub kind: &'static str,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub actor: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) enum Bind {
    I64(i64),
    F64(f64),
    Text(String),
    OptText(Option<String>),
}

/// One transition: the states it may start from, where it goes, and what else it sets.
pub(super) struct Move<'a> {
    pub(super) from: &'a [ItemState],
    pub(super) to: ItemState,
    /// Required lease holder for leaving a leased state.
    pub(super) owner: Option<&'a str>,
    pub(super) sets: Vec<(&'static str, Bind)>,
    pub(super) raw_sets: &'a [&'static str],
    /// An extra `column = value` condition (optimistic check).
    pub(super) guard: Option<(&'static str, Bind)>,
    pub(super) actor: &'a str,
    pub(super) detail: Option<Value>,
    pub(super) run_usage: Option<Usage>,
}

pub(super) fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for b in binds {
        q = match b {
            Bind::I64(v) => q.bind(*v),
            Bind::F64(v) => q.bind(*v),
            Bind::Text(v) => q.bind(v.as_str()),
            Bind::OptText(v) => q.bind(v.as_deref()),
        };
    }
    q
}

/// Why an enrichment attempt failed, and what it cost anyway.
#[derive(Debug, Clone, Copy)]
pub struct EnrichFailure<'a> {
    pub error: &'a str,
    /// Whether trying again can help.
    pub retryable: bool,
    /// The wait the provider asked for.
    pub retry_after: Option<Duration>,
    /// The model's unusable answer, kept for diagnosis.
    pub raw_output: Option<&'a str>,
    /// Tokens billed for the failed attempt.
    pub usage: Usage,
}

impl<'a> EnrichFailure<'a> {
    /// A failure that trying again cannot fix, with nothing billed.
    pub fn permanent(error: &'a str) -> Self {
        Self { error, retryable: false, retry_after: None, raw_output: None, usage: Usage::default() }
    }
}

/// Retry timing for failed items.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base: Duration::from_secs(5), max: Duration::from_secs(600) }
    }
}

impl Store {
    pub(super) async fn apply(&self, id: i64, mv: Move<'_>) -> Result<Item> {
        self.apply_all(id, vec![mv]).await
    }

    /// Applies transitions one after another in a single database transaction (each with its event),
    /// so no one ever sees the states in between. All or nothing.
    pub(super) async fn apply_all(&self, id: i64, moves: Vec<Move<'_>>) -> Result<Item> {
        for mv in &moves {
            if let Some(from) = mv.from.iter().find(|f| !f.can_become(mv.to)) {
                return Err(StoreError::IllegalTransition { item: id, from: *from, to: mv.to });
            }
        }
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let mut last = None;
        let mut moved = Vec::with_capacity(moves.len());
        let mut events = Vec::with_capacity(moves.len());
        for mv in moves {
            let (from, to, owner, usage) = (mv.from, mv.to, mv.owner, mv.run_usage);
            match apply_one(&mut tx, id, mv, now, &mut events).await? {
                Some(item) => {
                    moved.push((item.prev_state, to, usage));
                    last = Some(item);
                }
                None => {
                    tx.rollback().await?;
                    return Err(self.diagnose(id, from, to, owner).await);
                }
            }
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        if let Some(item) = &last {
            for (prev, to, usage) in moved {
                crate::telemetry::item_moved(&item.pipeline, prev, to, usage);
            }
        }
        last.ok_or_else(|| StoreError::NotFound(format!("item {id}: no transition given")))
    }

    /// Explains why a conditional update matched nothing.
    pub(super) async fn diagnose(&self, id: i64, from: &[ItemState], to: ItemState, owner: Option<&str>) -> StoreError {
        let row = match sqlx::query("SELECT state, lease_owner FROM items WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
        {
            Ok(row) => row,
            Err(e) => return e.into(),
        };
        let Some(row) = row else {
            return StoreError::NotFound(format!("item {id}"));
        };
        let state: ItemState = match parse_col(&row, "state") {
            Ok(s) => s,
            Err(e) => return e,
        };
        let holder: Option<String> = row.try_get("lease_owner").unwrap_or(None);
        match owner {
            Some(owner) if holder.as_deref() != Some(owner) && from.contains(&state) => StoreError::LeaseLost {
                item: id,
                owner: owner.into(),
                state,
                holder: holder.unwrap_or_else(|| "nobody".into()),
            },
            _ => StoreError::IllegalTransition { item: id, from: state, to },
        }
    }

    /// One item by id.
    pub async fn item(&self, id: i64) -> Result<Item> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Item::from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("item {id}")))
    }

    /// A run's items, optionally in one state, oldest first.
    pub async fn items(&self, run_id: i64, state: Option<ItemState>, limit: i64) -> Result<Vec<Item>> {
        let rows = match state {
            Some(s) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE run_id = $1 AND state = $2 ORDER BY id LIMIT $3"
                )))
                .bind(run_id)
                .bind(s.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE run_id = $1 ORDER BY id LIMIT $2"
                )))
                .bind(run_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(Item::from_row).collect()
    }

    /// Earlier items (in other runs of `pipeline`) for these records.
    pub async fn prior_items(
        &self,
        pipeline: &str,
        entity: &str,
        external_ids: &[String],
        exclude_run: i64,
    ) -> Result<Vec<PriorItem>> {
        let mut out = Vec::new();
        for chunk in external_ids.chunks(rows_per_statement(self.backend, 1, 500)) {
            let sql = format!(
                "SELECT id, run_id, external_id, state, input_hash, task_version FROM items \
                 WHERE pipeline = $1 AND entity = $2 AND run_id <> $3 AND external_id IN ({}) ORDER BY id",
                placeholders(4, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(pipeline).bind(entity).bind(exclude_run);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(PriorItem {
                    id: row.try_get("id")?,
                    run_id: row.try_get("run_id")?,
                    external_id: row.try_get("external_id")?,
                    state: parse_col(&row, "state")?,
                    input_hash: row.try_get("input_hash")?,
                    task_version: row.try_get("task_version")?,
                });
            }
        }
        Ok(out)
    }

    /// Records one page of discovery for `run_id`: inserts the items (a record already in the run is
    /// left alone, so a page fetched twice after a restart adds nothing) already `queued` or
    /// `skipped`, with both events of each (`discovered`, then `queued` or `skipped`), and advances
    /// the run's discovery cursor — all in one transaction, and only while `owner` holds the run's
    /// discovery lease. Returns how many items were new.
    pub async fn add_discovered(
        &self,
        run_id: i64,
        pipeline: &str,
        task_version: &str,
        owner: &str,
        items: &[NewItem],
        next_cursor: Option<&str>,
    ) -> Result<usize> {
        let mut tx = self.writer.begin().await?;
        let n = self.add_discovered_in(&mut tx, run_id, pipeline, task_version, owner, items, next_cursor).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// [`Store::add_discovered`] inside the caller's transaction (which it leaves open; on an error
    /// the caller drops it, rolling back).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn add_discovered_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        run_id: i64,
        pipeline: &str,
        task_version: &str,
        owner: &str,
        items: &[NewItem],
        next_cursor: Option<&str>,
    ) -> Result<usize> {
        let now = now_ms();
        let run = sqlx::query(
            "UPDATE runs SET discovery_cursor = $1, discovered = discovered + $2 \
             WHERE id = $3 AND status = 'discovering' AND discovery_owner = $4 RETURNING max_attempts",
        )
        .bind(next_cursor)
        .bind(items.len() as i64)
        .bind(run_id)
        .bind(owner)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(run) = run else {
            return Err(StoreError::NotFound(format!("run {run_id} discovering under a lease held by {owner}")));
        };
        let max_attempts: i64 = run.try_get("max_attempts")?;

        let mut inserted: Vec<(i64, &NewItem)> = Vec::with_capacity(items.len());
        const COLUMNS: usize = 15;
        for chunk in items.chunks(rows_per_statement(self.backend, COLUMNS, 50)) {
            let mut sql = String::from(
                "INSERT INTO items (run_id, pipeline, entity, external_id, state, prev_state, last_error, max_attempts, \
                 record_version, input, input_hash, task_version, created_at, updated_at, attachments) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                sql.push_str(&placeholders(i * COLUMNS + 1, COLUMNS));
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (run_id, entity, external_id) DO NOTHING RETURNING id, external_id");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for item in chunk {
                q = q
                    .bind(run_id)
                    .bind(pipeline)
                    .bind(item.entity.as_str())
                    .bind(item.external_id.as_str())
                    .bind(if item.skip.is_some() { "skipped" } else { "queued" })
                    .bind("discovered")
                    .bind(item.skip.as_deref())
                    .bind(max_attempts)
                    .bind(item.record_version.as_str())
                    .bind(item.input.as_str())
                    .bind(item.input_hash.as_str())
                    .bind(task_version)
                    .bind(now)
                    .bind(now)
                    .bind(
                        (!item.attachments.is_empty())
                            .then(|| serde_json::to_string(&item.attachments).unwrap_or_default()),
                    );
            }
            for row in q.fetch_all(&mut **tx).await? {
                let id: i64 = row.try_get("id")?;
                let ext: String = row.try_get("external_id")?;
                if let Some(item) = chunk.iter().find(|i| i.external_id == ext) {
                    inserted.push((id, item));
                }
            }
        }
        inserted.sort_by_key(|(id, _)| *id);
        let mut events: Vec<NewEvent> = inserted
            .iter()
            .map(|(id, _)| NewEvent {
                run_id: Some(run_id),
                item_id: Some(*id),
                kind: "transition",
                from_state: None,
                to_state: Some("discovered".into()),
                actor: owner.into(),
                detail: None,
            })
            .collect();
        for (id, item) in &inserted {
            let (to, detail) = match &item.skip {
                None => ("queued", None),
                Some(reason) => ("skipped", Some(serde_json::json!({ "reason": reason }).to_string())),
            };
            events.push(NewEvent {
                run_id: Some(run_id),
                item_id: Some(*id),
                kind: "transition",
                from_state: Some("discovered".into()),
                to_state: Some(to.into()),
                actor: owner.into(),
                detail,
            });
        }
        insert_events(tx, &events, now).await?;
        Ok(inserted.len())
    }

    /// Takes up to `claim.limit` items under a lease held by `claim.owner`, one event each. A run
    /// whose sample gate is closed gives out no more enrichment than its sample has room for.
    pub async fn claim(&self, claim: &Claim<'_>) -> Result<Vec<Item>> {
        let now = now_ms();
        let expires = now + claim.lease.as_millis() as i64;
        let (to, condition) = match claim.work {
            Work::Enrich => (
                "enriching",
                "i.state = 'queued' AND r.status IN ('discovering', 'running') \
                 AND (r.budget_micros IS NULL OR r.cost_micros < r.budget_micros) \
                 AND (r.review_phase IS NULL OR r.review_phase <> 'sample_review')",
            ),
            Work::Write => {
                ("writing", "i.state IN ('approved', 'write_failed') AND r.status NOT IN ('paused', 'cancelled')")
            }
        };
        let run_filter = if claim.run_id.is_some() { "AND i.run_id = $6" } else { "AND $6 = $6" };
        let mut tx = self.writer.begin().await?;
        let mut limit = claim.limit as i64;
        let mut held = String::new();
        if claim.work == Work::Enrich {
            // Sampling runs take no more enrichment than their sample has room for. Touching the
            // run rows first serialises these claims between daemons (a row lock on Postgres, the
            // write lock on SQLite), so two daemons cannot both fill the last places.
            let gates = sqlx::query(
                "UPDATE runs SET sample_size = sample_size WHERE pipeline = $1 AND review_phase = 'sampling' \
                 AND status IN ('discovering', 'running') AND ($2 = 0 OR id = $2) RETURNING id, sample_size",
            )
            .bind(claim.pipeline)
            .bind(claim.run_id.unwrap_or(0))
            .fetch_all(&mut *tx)
            .await?;
            let mut full = Vec::new();
            for gate in &gates {
                let run_id: i64 = gate.try_get("id")?;
                let size: Option<i64> = gate.try_get("sample_size")?;
                let taken: i64 = sqlx::query_scalar(SAMPLE_TAKEN).bind(run_id).fetch_one(&mut *tx).await?;
                let room = size.unwrap_or(0) - taken;
                if room <= 0 {
                    full.push(run_id.to_string());
                } else {
                    limit = limit.min(room);
                }
            }
            if !full.is_empty() {
                held = format!("AND i.run_id NOT IN ({})", full.join(", "));
            }
        }
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF i SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The claimable items in id order come from a partial index (migration 0007), so a claim reads
        // only the rows it takes. SQLite's planner, without statistics, would pick `items_claim` and
        // sort the whole queue for each claim; `INDEXED BY` makes it use the right one (and fail
        // loudly, not slowly, if the index were ever missing). Postgres's planner has statistics.
        let index = match (self.backend, claim.work) {
            (Backend::Sqlite, Work::Enrich) => "INDEXED BY items_queued",
            (Backend::Sqlite, Work::Write) => "INDEXED BY items_writable",
            (Backend::Postgres, _) => "",
        };
        let sql = format!(
            "UPDATE items SET prev_state = state, state = '{to}', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE id IN (SELECT i.id FROM items i {index} JOIN runs r ON r.id = i.run_id \
                 WHERE i.pipeline = $4 AND {condition} AND i.next_attempt_at <= $3 {run_filter} {held} \
                 ORDER BY i.id LIMIT $5 {lock}) \
             RETURNING {ITEM_COLUMNS}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(claim.owner)
            .bind(expires)
            .bind(now)
            .bind(claim.pipeline)
            .bind(limit)
            .bind(claim.run_id.unwrap_or(0))
            .fetch_all(&mut *tx)
            .await?;
        let mut items = rows.iter().map(Item::from_row).collect::<Result<Vec<_>>>()?;
        items.sort_by_key(|i| i.id);
        let events: Vec<NewEvent> = items
            .iter()
            .map(|i| NewEvent {
                run_id: Some(i.run_id),
                item_id: Some(i.id),
                kind: "transition",
                from_state: i.prev_state.map(|s| s.as_str().to_owned()),
                to_state: Some(to.into()),
                actor: claim.owner.into(),
                detail: None,
            })
            .collect();
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(items)
    }

    /// What the write-back of `pipeline` (or of one run) has before it claims: how many items a
    /// write claim would take now (at most `limit`), and whether more may become writable soon
    /// (items queued or being enriched in runs that are not paused). Read from the reading pool, so
    /// it never waits on the writer.
    pub async fn write_backlog(&self, pipeline: &str, run_id: Option<i64>, limit: usize) -> Result<(usize, bool)> {
        let run_filter = if run_id.is_some() { "AND i.run_id = $3" } else { "AND $3 = $3" };
        let ready: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM items i JOIN runs r ON r.id = i.run_id \
             WHERE i.pipeline = $1 AND i.state IN ('approved', 'write_failed') AND i.next_attempt_at <= $2 \
             AND r.status NOT IN ('paused', 'cancelled') {run_filter} LIMIT $4) AS ready"
        )))
        .bind(pipeline)
        .bind(now_ms())
        .bind(run_id.unwrap_or(0))
        .bind(limit as i64)
        .fetch_one(&self.pool)
        .await?;
        let run_filter = if run_id.is_some() { "AND i.run_id = $2" } else { "AND $2 = $2" };
        let coming: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM items i JOIN runs r ON r.id = i.run_id \
             WHERE i.pipeline = $1 AND i.state IN ('queued', 'enriching') \
             AND r.status IN ('discovering', 'running') {run_filter} LIMIT 1) AS coming"
        )))
        .bind(pipeline)
        .bind(run_id.unwrap_or(0))
        .fetch_one(&self.pool)
        .await?;
        Ok((ready as usize, coming > 0))
    }

    /// Extends every lease `owner` holds (items and run discovery) to `lease` from now.
    pub async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64> {
        let expires = now_ms() + lease.as_millis() as i64;
        // On Postgres the rows are locked in id order, the order group commits lock them in, so a
        // heartbeat and a group commit cannot deadlock (which would abort one and could let leases lapse).
        let sql = match self.backend {
            Backend::Postgres => {
                "UPDATE items SET lease_expires_at = $1 WHERE id IN (SELECT id FROM items \
                 WHERE lease_owner = $2 AND state IN ('enriching', 'writing') ORDER BY id FOR UPDATE)"
            }
            Backend::Sqlite => {
                "UPDATE items SET lease_expires_at = $1 WHERE lease_owner = $2 AND state IN ('enriching', 'writing')"
            }
        };
        let items = sqlx::query(sql).bind(expires).bind(owner).execute(&self.writer).await?.rows_affected();
        sqlx::query("UPDATE runs SET discovery_expires_at = $1 WHERE discovery_owner = $2 AND status = 'discovering'")
            .bind(expires)
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(items)
    }

    /// Re-queues the work of leases that expired (their holder died or hung): `enriching` goes back
    /// to `queued`, `writing` to `write_failed` (the write may or may not have landed; the write-back
    /// re-checks the record), each counting as a failed attempt, `dead` once attempts run out.
    /// Returns the reclaimed items' ids.
    pub async fn reclaim_expired(&self, actor: &str) -> Result<Vec<i64>> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "UPDATE items SET prev_state = state, \
               state = CASE WHEN state = 'enriching' \
                   THEN (CASE WHEN attempts + 1 >= max_attempts THEN 'dead' ELSE 'queued' END) \
                   ELSE (CASE WHEN write_attempts + 1 >= max_attempts THEN 'dead' ELSE 'write_failed' END) END, \
               attempts = CASE WHEN state = 'enriching' THEN attempts + 1 ELSE attempts END, \
               write_attempts = CASE WHEN state = 'writing' THEN write_attempts + 1 ELSE write_attempts END, \
               last_error = 'lease held by ' || lease_owner || ' expired', \
               lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 \
             WHERE state IN ('enriching', 'writing') AND lease_expires_at < $1 AND write_job_id IS NULL \
             RETURNING id, run_id, prev_state, state, last_error",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let error: Option<String> = row.try_get("last_error")?;
            ids.push(id);
            events.push(NewEvent {
                run_id: Some(row.try_get("run_id")?),
                item_id: Some(id),
                kind: "transition",
                from_state: row.try_get("prev_state")?,
                to_state: Some(row.try_get("state")?),
                actor: actor.into(),
                detail: error.map(|e| serde_json::json!({ "reason": e }).to_string()),
            });
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Gives back every lease `owner` holds without counting an attempt (graceful shutdown): items
    /// being enriched return to `queued`; items being written go to `write_failed`, because the
    /// write may have landed and must be re-checked before it is tried again.
    pub async fn release(&self, owner: &str) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "UPDATE items SET prev_state = state, \
               state = CASE WHEN state = 'enriching' THEN 'queued' ELSE 'write_failed' END, \
               last_error = 'released at shutdown by ' || lease_owner, \
               lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = $1, updated_at = $1 \
             WHERE lease_owner = $2 AND state IN ('enriching', 'writing') AND write_job_id IS NULL \
             RETURNING id, run_id, prev_state, state",
        )
        .bind(now)
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(NewEvent {
                run_id: Some(row.try_get("run_id")?),
                item_id: Some(row.try_get("id")?),
                kind: "transition",
                from_state: row.try_get("prev_state")?,
                to_state: Some(row.try_get("state")?),
                actor: owner.into(),
                detail: Some(serde_json::json!({ "reason": "released at shutdown" }).to_string()),
            });
        }
        insert_events(&mut tx, &events, now).await?;
        sqlx::query("UPDATE runs SET discovery_owner = NULL, discovery_expires_at = NULL WHERE discovery_owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// `enriching` → `proposed`: the model's answer, validated, with its cost (added to the run's too).
    ///
    /// With `approve_as` (a review policy that approves without a human), the item is approved in
    /// the same database transaction, so nobody ever sees it waiting for review.
    pub async fn propose(
        &self,
        item: &Item,
        owner: &str,
        proposal: &Proposal,
        raw_output: &str,
        usage: Usage,
        approve_as: Option<&str>,
    ) -> Result<Item> {
        let json = serde_json::to_string(proposal).expect("a proposal always serialises");
        let mut moves = vec![OwnedMove {
            from: &[ItemState::Enriching],
            to: ItemState::Proposed,
            owner: Some(owner.to_owned()),
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
            guard: None,
            actor: owner.to_owned(),
            detail: Some(serde_json::json!({
                "model": proposal.model, "task_version": proposal.task_version,
                "tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens, "cost_micros": usage.cost_micros,
            })),
            run_usage: Some(usage),
        }];
        // A held proposal (a duplicate) waits for a person whatever the policy says.
        if let Some(actor) = approve_as.filter(|_| proposal.held.is_none()) {
            moves.push(approve_owned(actor));
        }
        self.apply_grouped(item.id, moves).await
    }

    /// An enrichment attempt failed. Retryable failures go back to `queued` after a backoff until
    /// attempts run out; anything else, or the last attempt, is `dead` with the reason kept. The
    /// money an unusable answer cost is still counted.
    pub async fn fail_enrichment(
        &self,
        item: &Item,
        owner: &str,
        failure: EnrichFailure<'_>,
        policy: RetryPolicy,
    ) -> Result<Item> {
        let EnrichFailure { error, retryable, retry_after, raw_output, usage } = failure;
        let attempts = item.attempts + 1;
        let give_up = !retryable || attempts >= item.max_attempts;
        let (to, next) = if give_up {
            (ItemState::Dead, 0)
        } else {
            (
                ItemState::Queued,
                now_ms() + backoff(attempts as u32, policy.base, policy.max, retry_after).as_millis() as i64,
            )
        };
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Enriching],
                to,
                owner: Some(owner),
                sets: vec![
                    ("last_error", Bind::Text(error.into())),
                    ("next_attempt_at", Bind::I64(next)),
                    ("raw_output", Bind::OptText(raw_output.map(str::to_owned))),
                    ("cost_micros", Bind::I64(item.cost_micros + usage.cost_micros)),
                    ("tokens_in", Bind::I64(item.tokens_in + usage.input_tokens)),
                    ("tokens_out", Bind::I64(item.tokens_out + usage.output_tokens)),
                ],
                raw_sets: &["attempts = attempts + 1"],
                guard: None,
                actor: owner,
                detail: Some(serde_json::json!({ "error": error, "retryable": retryable, "attempt": attempts, "next_attempt_at": next })),
                run_usage: (usage != Usage::default()).then_some(usage),
            },
        )
        .await
    }

    /// `enriching` → `skipped`, with the reason.
    pub async fn skip_leased(&self, item: &Item, owner: &str, reason: &str) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Enriching],
                to: ItemState::Skipped,
                owner: Some(owner),
                sets: vec![("last_error", Bind::Text(reason.into()))],
                raw_sets: &[],
                guard: None,
                actor: owner,
                detail: Some(serde_json::json!({ "reason": reason })),
                run_usage: None,
            },
        )
        .await
    }

    /// `proposed`/`edited` → `approved`, by a reviewer or a policy (`actor`). A held proposal (see
    /// [`Proposal::held`]) is refused, naming why: it can only be rejected. (A proposal does not
    /// change while it waits for review, so the one read here is the one approved.)
    pub async fn approve(&self, id: i64, actor: &str) -> Result<Item> {
        let current = self.item(id).await?;
        if let Some(reason) = current.proposal.as_ref().and_then(|p| p.held.as_deref()) {
            return Err(StoreError::Refused(format!(
                "item {id} (record {}) cannot be approved: {reason}; it is never written (reject it)",
                current.external_id
            )));
        }
        let item = self.apply(id, approve_move(actor)).await?;
        self.after_review(&item, actor).await?;
        Ok(item)
    }

    /// `proposed`/`edited` → `rejected`, with an optional reason.
    pub async fn reject(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Item> {
        let item = self
            .apply(
                id,
                Move {
                    from: &[ItemState::Proposed, ItemState::Edited],
                    to: ItemState::Rejected,
                    owner: None,
                    sets: vec![("last_error", Bind::OptText(reason.map(str::to_owned)))],
                    raw_sets: &[],
                    guard: None,
                    actor,
                    detail: reason.map(|r| serde_json::json!({ "reason": r })),
                    run_usage: None,
                },
            )
            .await?;
        self.after_review(&item, actor).await?;
        Ok(item)
    }

    /// A reviewer changes one proposed field (the record field, or the task property mapped to it).
    /// Every edit path comes here: the value is held to what `task` holds a model's answer to (see
    /// [`Task::edit`]: HTML cleaned, validated against the schema, check warnings recomputed), and
    /// a value that does not fit is refused with [`StoreError::Invalid`], changing nothing.
    pub async fn edit(&self, id: i64, actor: &str, task: &Task, field: &str, value: Value) -> Result<Item> {
        let item = self.item(id).await?;
        let mut proposal = item.proposal.clone().ok_or_else(|| StoreError::IllegalTransition {
            item: id,
            from: item.state,
            to: ItemState::Edited,
        })?;
        let old = serde_json::to_string(&proposal).expect("serialisable");
        let (field, value) = task.edit(&mut proposal, field, value).map_err(|refusal| match refusal {
            EditRefusal::UnknownField(m) => StoreError::NotFound(format!("item {id}: {m}")),
            EditRefusal::Invalid(m) => StoreError::Invalid(format!("item {id}: {m}")),
        })?;
        let new = serde_json::to_string(&proposal).expect("serialisable");
        self.apply(
            id,
            Move {
                from: &[ItemState::Proposed, ItemState::Edited],
                to: ItemState::Edited,
                owner: None,
                sets: vec![("proposal", Bind::Text(new)), ("warnings", Bind::I64(proposal.warnings.len() as i64))],
                raw_sets: &[],
                guard: Some(("proposal", Bind::Text(old))),
                actor,
                detail: Some(serde_json::json!({ "field": field, "value": value, "warnings": proposal.warnings })),
                run_usage: None,
            },
        )
        .await
    }

    /// Keeps, for items about to be written, each field's upstream value just before the write (what
    /// an undo puts back). Saved before the write goes out, so a crash after it still knows.
    pub async fn save_replaced(&self, owner: &str, replaced: &[(i64, Map<String, Value>)]) -> Result<()> {
        if replaced.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        // One statement per chunk (`CASE id WHEN ... THEN ...`), not one round trip per item.
        for chunk in replaced.chunks(rows_per_statement(self.backend, 3, 200)) {
            let mut binds = vec![Bind::Text(owner.to_owned())];
            let mut cases = String::new();
            for (id, values) in chunk {
                binds.push(Bind::I64(*id));
                binds.push(Bind::Text(serde_json::to_string(values).expect("JSON values serialise")));
                cases.push_str(&format!(" WHEN ${} THEN ${}", binds.len() - 1, binds.len()));
            }
            let ids = (0..chunk.len()).map(|i| format!("${}", 2 + 2 * i)).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "UPDATE items SET replaced = CASE id{cases} END \
                 WHERE id IN ({ids}) AND state = 'writing' AND lease_owner = $1"
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the read-after-write check of a written item: when it ran and the fields that did not
    /// hold the value written (none: verified). Adds a `verified` or `verify_failed` event.
    pub async fn record_verification(&self, item: &Item, actor: &str, issues: &[VerifyIssue]) -> Result<()> {
        self.record_verifications(&[(item.clone(), issues.to_vec())], actor).await
    }

    /// [`Store::record_verification`] for the items of one write batch, in one transaction.
    pub async fn record_verifications(&self, checked: &[(Item, Vec<VerifyIssue>)], actor: &str) -> Result<()> {
        if checked.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let mut events = Vec::with_capacity(checked.len());
        // The items that verified clean (nearly all of them) in one statement per chunk.
        let clean: Vec<i64> = checked.iter().filter(|(_, issues)| issues.is_empty()).map(|(i, _)| i.id).collect();
        update_listed(
            &mut tx,
            self.backend,
            "UPDATE items SET verified_at = $1, verify_issues = NULL WHERE state = 'written'",
            now,
            &clean,
        )
        .await?;
        for (item, issues) in checked {
            let text = (!issues.is_empty()).then(|| serde_json::to_string(issues).expect("JSON values serialise"));
            if text.is_some() {
                sqlx::query(
                    "UPDATE items SET verified_at = $1, verify_issues = $2 WHERE id = $3 AND state = 'written'",
                )
                .bind(now)
                .bind(text.as_deref())
                .bind(item.id)
                .execute(&mut *tx)
                .await?;
            }
            events.push(NewEvent {
                run_id: Some(item.run_id),
                item_id: Some(item.id),
                kind: if issues.is_empty() { "verified" } else { "verify_failed" },
                from_state: None,
                to_state: None,
                actor: actor.to_owned(),
                detail: text,
            });
        }
        insert_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `writing` → `written`, with the record's new version.
    pub async fn mark_written(
        &self,
        item: &Item,
        owner: &str,
        version: Option<&str>,
        detail: Option<Value>,
    ) -> Result<Item> {
        self.apply_grouped(
            item.id,
            vec![OwnedMove {
                from: &[ItemState::Writing],
                to: ItemState::Written,
                owner: Some(owner.to_owned()),
                sets: vec![
                    ("written_version", Bind::OptText(version.map(str::to_owned))),
                    ("last_error", Bind::OptText(None)),
                ],
                raw_sets: &[],
                guard: None,
                actor: owner.to_owned(),
                detail,
                run_usage: None,
            }],
        )
        .await
    }

    /// `writing` → `conflict`: the record changed upstream since it was pulled; nothing was written.
    pub async fn mark_conflict(
        &self,
        item: &Item,
        owner: &str,
        upstream_version: Option<&str>,
        reason: &str,
    ) -> Result<Item> {
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Writing],
                to: ItemState::Conflict,
                owner: Some(owner),
                sets: vec![("last_error", Bind::Text(reason.into()))],
                raw_sets: &[],
                guard: None,
                actor: owner,
                detail: Some(serde_json::json!({ "reason": reason, "pulled_version": item.record_version, "upstream_version": upstream_version })),
                run_usage: None,
            },
        )
        .await
    }

    /// A write failed: `write_failed` to retry after a backoff, or `dead` when it cannot succeed or
    /// attempts ran out.
    pub async fn fail_write(
        &self,
        item: &Item,
        owner: &str,
        error: &str,
        retryable: bool,
        retry_after: Option<Duration>,
        policy: RetryPolicy,
    ) -> Result<Item> {
        let attempts = item.write_attempts + 1;
        let give_up = !retryable || attempts >= item.max_attempts;
        let (to, next) = if give_up {
            (ItemState::Dead, 0)
        } else {
            (
                ItemState::WriteFailed,
                now_ms() + backoff(attempts as u32, policy.base, policy.max, retry_after).as_millis() as i64,
            )
        };
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Writing],
                to,
                owner: Some(owner),
                sets: vec![("last_error", Bind::Text(error.into())), ("next_attempt_at", Bind::I64(next))],
                raw_sets: &["write_attempts = write_attempts + 1"],
                guard: None,
                actor: owner,
                detail: Some(serde_json::json!({ "error": error, "retryable": retryable, "attempt": attempts, "next_attempt_at": next })),
                run_usage: None,
            },
        )
        .await
    }

    /// Puts back a written item the platform was never asked about (an earlier call of its write
    /// batch failed, see `ConnectorError::deferred`): it waits `retry_after` (or the first backoff
    /// step) and is written again, without costing it an attempt.
    pub async fn defer_write(
        &self,
        item: &Item,
        owner: &str,
        error: &str,
        retry_after: Option<Duration>,
        policy: RetryPolicy,
    ) -> Result<Item> {
        let next = now_ms() + backoff(1, policy.base, policy.max, retry_after).as_millis() as i64;
        self.apply(
            item.id,
            Move {
                from: &[ItemState::Writing],
                to: ItemState::WriteFailed,
                owner: Some(owner),
                sets: vec![("last_error", Bind::Text(error.into())), ("next_attempt_at", Bind::I64(next))],
                raw_sets: &[],
                guard: None,
                actor: owner,
                detail: Some(serde_json::json!({ "error": error, "deferred": true, "next_attempt_at": next })),
                run_usage: None,
            },
        )
        .await
    }

    /// Moves an item between two states by name, with no side effects; for tests and tools that
    /// need to probe the state machine. Refused exactly like every other transition.
    pub async fn force_transition(&self, id: i64, from: ItemState, to: ItemState, actor: &str) -> Result<Item> {
        let leased_owner = if from.is_leased() { self.item(id).await?.lease_owner } else { None };
        let mut sets = vec![];
        if to.is_leased() {
            sets.push(("lease_owner", Bind::Text(actor.into())));
            sets.push(("lease_expires_at", Bind::I64(now_ms() + 60_000)));
        }
        self.apply(
            id,
            Move {
                from: &[from],
                to,
                owner: leased_owner.as_deref(),
                sets,
                raw_sets: &[],
                guard: None,
                actor,
                detail: None,
                run_usage: None,
            },
        )
        .await
    }

    /// Every event of an item, oldest first.
    pub async fn item_events(&self, item_id: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT id, run_id, item_id, at, kind, from_state, to_state, actor, detail FROM events WHERE item_id = $1 ORDER BY id")
            .bind(item_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Every event of a run (items and the run itself), oldest first.
    pub async fn run_events(&self, run_id: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT id, run_id, item_id, at, kind, from_state, to_state, actor, detail FROM events WHERE run_id = $1 ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// Marks a proposal made while its run's sample gate is closed as part of the sample.
pub(super) const MARK_SAMPLE: &str = "sample = COALESCE((SELECT CASE WHEN r.review_phase IN ('sampling', 'sample_review') \
    THEN 1 ELSE 0 END FROM runs r WHERE r.id = items.run_id), 0)";

fn approve_owned(actor: &str) -> OwnedMove {
    let mv = approve_move(actor);
    OwnedMove {
        from: &[ItemState::Proposed, ItemState::Edited],
        to: mv.to,
        owner: None,
        sets: mv.sets,
        raw_sets: &[],
        guard: None,
        actor: actor.to_owned(),
        detail: None,
        run_usage: None,
    }
}

pub(super) fn approve_move(actor: &str) -> Move<'_> {
    Move {
        from: &[ItemState::Proposed, ItemState::Edited],
        to: ItemState::Approved,
        owner: None,
        sets: vec![("next_attempt_at", Bind::I64(0))],
        raw_sets: &[],
        guard: None,
        actor,
        detail: None,
        run_usage: None,
    }
}

/// Items of a run that count against its sample: proposed (at any later state) or being enriched.
pub(super) const SAMPLE_TAKEN: &str = "SELECT COUNT(*) FROM items WHERE run_id = $1 \
    AND (state IN ('enriching', 'batched') OR proposal IS NOT NULL)";

/// One conditional `UPDATE` plus its event, inside `tx`. `None` when the item was not in a state
/// (or lease) the move starts from.
/// Applies one move to item `id` inside `tx`: the conditional `UPDATE` (and the run's usage), with
/// the move's event appended to `events` for the caller to insert before it commits (one
/// multi-row insert for all the moves of a transaction, not one round trip each).
pub(super) async fn apply_one(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    mv: Move<'_>,
    now: i64,
    events: &mut Vec<NewEvent>,
) -> Result<Option<Item>> {
    let mut binds = vec![Bind::Text(mv.to.as_str().into()), Bind::I64(now)];
    let mut sql = String::from("UPDATE items SET prev_state = state, state = $1, updated_at = $2");
    if !mv.to.is_leased() {
        sql.push_str(", lease_owner = NULL, lease_expires_at = NULL");
    }
    for (col, b) in mv.sets {
        binds.push(b);
        sql.push_str(&format!(", {col} = ${}", binds.len()));
    }
    for raw in mv.raw_sets {
        sql.push_str(", ");
        sql.push_str(raw);
    }
    binds.push(Bind::I64(id));
    sql.push_str(&format!(" WHERE id = ${}", binds.len()));
    let states: Vec<Bind> = mv.from.iter().map(|s| Bind::Text(s.as_str().into())).collect();
    sql.push_str(&format!(" AND state IN ({})", placeholders(binds.len() + 1, states.len())));
    binds.extend(states);
    if let Some(owner) = mv.owner {
        binds.push(Bind::Text(owner.into()));
        sql.push_str(&format!(" AND lease_owner = ${}", binds.len()));
    }
    if let Some((col, b)) = mv.guard {
        binds.push(b);
        sql.push_str(&format!(" AND {col} = ${}", binds.len()));
    }
    sql.push_str(" RETURNING ");
    sql.push_str(ITEM_COLUMNS);

    let Some(row) = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_optional(&mut **tx).await? else {
        return Ok(None);
    };
    let item = Item::from_row(&row)?;
    let event = NewEvent {
        run_id: Some(item.run_id),
        item_id: Some(id),
        kind: "transition",
        from_state: item.prev_state.map(|s| s.as_str().to_owned()),
        to_state: Some(mv.to.as_str().to_owned()),
        actor: mv.actor.to_owned(),
        detail: mv.detail.map(|d| d.to_string()),
    };
    events.push(event);
    if let Some(u) = mv.run_usage {
        add_run_usage(tx, item.run_id, u).await?;
    }
    Ok(Some(item))
}

pub(super) fn event_from_row(row: &AnyRow) -> Result<EventRecord> {
    let detail: Option<String> = row.try_get("detail")?;
    Ok(EventRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        item_id: row.try_get("item_id")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        from_state: row.try_get("from_state")?,
        to_state: row.try_get("to_state")?,
        actor: row.try_get("actor")?,
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

/// Runs `update` (an `UPDATE ... WHERE ...` whose only parameter is `$1`, bound to `now`) for the items
/// `ids`, adding `AND id IN (...)`, in as few statements as the backend takes well.
async fn update_listed(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    update: &str,
    now: i64,
    ids: &[i64],
) -> Result<()> {
    for chunk in ids.chunks(rows_per_statement(backend, 1, 500)) {
        let sql = format!("{update} AND id IN ({})", placeholders(2, chunk.len()));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends events in as few statements as possible.
pub(super) async fn insert_events(tx: &mut Transaction<'_, Any>, events: &[NewEvent], at: i64) -> Result<()> {
    let rows = rows_per_statement(super::backend_of(tx), 8, 100);
    for chunk in events.chunks(rows) {
        let mut sql =
            String::from("INSERT INTO events (run_id, item_id, at, kind, from_state, to_state, actor, detail) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&placeholders(i * 8 + 1, 8));
            sql.push(')');
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(e.run_id)
                .bind(e.item_id)
                .bind(at)
                .bind(e.kind)
                .bind(e.from_state.as_deref())
                .bind(e.to_state.as_deref())
                .bind(e.actor.as_str())
                .bind(e.detail.as_deref());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
