//! Runs: creation (idempotent per cron tick, one active run per pipeline), the discovery lease, status
//! changes with events, counts, and settling a run once nothing is left that needs no human.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::items::{NewEvent, insert_events};
use super::{ItemState, Result, RunStatus, Store, StoreError, now_ms, parse_col, placeholders};

pub(super) const RUN_COLUMNS: &str = "id, pipeline, trigger_kind, scheduled_for, status, status_reason, item_limit, max_attempts, \
    budget_micros, discovery_cursor, discovery_owner, discovery_expires_at, discovered, cost_micros, tokens_in, tokens_out, \
    created_at, finished_at, review_phase, sample_size, auto_release_max_reject_ppm, released_at, released_by, paused_from, resumed_at, resumed_by, \
    cost_unknown";

/// One execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub pipeline: String,
    /// `schedule`, `manual` or `webhook`.
    pub trigger_kind: String,
    pub scheduled_for: Option<i64>,
    pub status: RunStatus,
    pub status_reason: Option<String>,
    pub item_limit: Option<i64>,
    pub max_attempts: i64,
    pub budget_micros: Option<i64>,
    pub discovery_cursor: Option<String>,
    pub discovery_owner: Option<String>,
    pub discovery_expires_at: Option<i64>,
    pub discovered: i64,
    /// What the priced part of the run's model usage cost; see `cost_unknown`.
    pub cost_micros: i64,
    /// Some model usage had no known price (the model is in neither the built-in table nor the
    /// provider's `prices`): the spend is unknown, and shown so, never as `cost_micros`.
    pub cost_unknown: bool,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Where the run's sample gate is; `None` when the pipeline does not sample.
    pub review_phase: Option<ReviewPhase>,
    /// Proposals that wait for review before the rest of the run is held.
    pub sample_size: Option<i64>,
    /// Release by itself when at most this share (parts per million) of the reviewed sample was rejected.
    pub auto_release_max_reject_ppm: Option<i64>,
    pub released_at: Option<i64>,
    /// Who released the sample gate (a reviewer, or `policy:sample_first`).
    pub released_by: Option<String>,
    /// The status a paused run had when it paused (`discovering` or `running`); resuming returns there.
    pub paused_from: Option<RunStatus>,
    /// When the run was last resumed after a pause (Unix ms), and by whom.
    pub resumed_at: Option<i64>,
    pub resumed_by: Option<String>,
}

/// The sample gate of a `sample_first` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewPhase {
    /// Enriching the sample.
    Sampling,
    /// The sample is complete; the rest of the run is held until a reviewer releases it.
    SampleReview,
    /// Released: the rest of the run is enriched and approved as it arrives.
    Released,
}

impl ReviewPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewPhase::Sampling => "sampling",
            ReviewPhase::SampleReview => "sample_review",
            ReviewPhase::Released => "released",
        }
    }

    /// The phase in plain words, as the UI and the CLI show it.
    pub fn plain(self) -> &'static str {
        match self {
            ReviewPhase::Sampling => "enriching the sample",
            ReviewPhase::SampleReview => "waiting for sample review",
            ReviewPhase::Released => "full run (sample released)",
        }
    }
}

impl std::str::FromStr for ReviewPhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [ReviewPhase::Sampling, ReviewPhase::SampleReview, ReviewPhase::Released]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown review phase {s:?}"))
    }
}

/// A run's sample gate as configured (`sample_first`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleGate {
    pub size: i64,
    /// Auto-release threshold: the highest share of rejected sample items (0.0–1.0).
    pub auto_release_max_reject_rate: Option<f64>,
}

impl Run {
    pub(super) fn from_row(row: &AnyRow) -> Result<Run> {
        Ok(Run {
            id: row.try_get("id")?,
            pipeline: row.try_get("pipeline")?,
            trigger_kind: row.try_get("trigger_kind")?,
            scheduled_for: row.try_get("scheduled_for")?,
            status: parse_col(row, "status")?,
            status_reason: row.try_get("status_reason")?,
            item_limit: row.try_get("item_limit")?,
            max_attempts: row.try_get("max_attempts")?,
            budget_micros: row.try_get("budget_micros")?,
            discovery_cursor: row.try_get("discovery_cursor")?,
            discovery_owner: row.try_get("discovery_owner")?,
            discovery_expires_at: row.try_get("discovery_expires_at")?,
            discovered: row.try_get("discovered")?,
            cost_micros: row.try_get("cost_micros")?,
            cost_unknown: row.try_get::<i64, _>("cost_unknown")? != 0,
            tokens_in: row.try_get("tokens_in")?,
            tokens_out: row.try_get("tokens_out")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
            review_phase: {
                let phase: Option<String> = row.try_get("review_phase")?;
                phase.map(|p| p.parse().map_err(StoreError::Corrupt)).transpose()?
            },
            sample_size: row.try_get("sample_size")?,
            auto_release_max_reject_ppm: row.try_get("auto_release_max_reject_ppm")?,
            released_at: row.try_get("released_at")?,
            released_by: row.try_get("released_by")?,
            paused_from: {
                let from: Option<String> = row.try_get("paused_from")?;
                from.map(|s| s.parse().map_err(StoreError::Corrupt)).transpose()?
            },
            resumed_at: row.try_get("resumed_at")?,
            resumed_by: row.try_get("resumed_by")?,
        })
    }

    pub fn budget_reached(&self) -> bool {
        self.budget_micros.is_some_and(|b| self.cost_micros >= b)
    }

    /// What the run spent in USD; `None` when it is unknown (see `cost_unknown`).
    pub fn spent_usd(&self) -> Option<f64> {
        (!self.cost_unknown).then(|| self.cost_micros as f64 / 1e6)
    }

    /// Where the run is, in one phrase for people: its status in plain words, with the sample gate
    /// where it says more ("waiting for sample review", "running, sample of 20 first").
    pub fn plain_state(&self) -> String {
        let status = self.status.plain();
        if self.status.is_finished() {
            return status.to_owned();
        }
        match self.review_phase {
            Some(ReviewPhase::SampleReview) if self.status == RunStatus::Paused => {
                "paused, waiting for sample review".to_owned()
            }
            Some(ReviewPhase::SampleReview) => "waiting for sample review".to_owned(),
            Some(ReviewPhase::Sampling) => format!("{status}, sample of {} first", self.sample_size.unwrap_or(0)),
            Some(ReviewPhase::Released) => format!("{status}, sample released"),
            None => status.to_owned(),
        }
    }

    /// The status reason, less what [`Run::plain_state`] already says (a held run's reason starts
    /// "waiting for sample review: …"); `None` when nothing is left.
    pub fn reason_beyond_state(&self) -> Option<String> {
        let reason = self.status_reason.as_deref()?.trim();
        let state = self.plain_state();
        let rest = match reason.strip_prefix(state.as_str()) {
            Some(rest) => rest.trim_start_matches([':', ';', ',', ' ', '—', '-']),
            None => reason,
        };
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// The spend for people: `$0.1234`, or `unknown` (the model has no price).
    pub fn spent_text(&self) -> String {
        spend_text(self.spent_usd())
    }
}

/// `$0.1234`, or `unknown` for a spend without a known price.
pub fn spend_text(usd: Option<f64>) -> String {
    usd.map_or_else(|| "unknown (the model has no price)".to_owned(), |usd| format!("${usd:.4}"))
}

/// What a new run is.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline: String,
    /// The cron tick (Unix ms) for scheduled runs; `None` for manual ones.
    pub scheduled_for: Option<i64>,
    pub item_limit: Option<i64>,
    pub max_attempts: i64,
    pub budget_micros: Option<i64>,
    /// `sample_first`: the run's sample gate.
    pub sample: Option<SampleGate>,
}

/// The answer to [`Store::create_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum RunStart {
    Created(Run),
    /// The pipeline already has a run going; nothing was created.
    AlreadyActive(Run),
    /// Another daemon already created the run for this cron tick.
    TickTaken,
}

/// When a run pauses itself for failing too often (pipelines' `pause_on_error_rate` and `error_window`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRule {
    /// The highest share (0.0–1.0) of failed outcomes in the window that does not pause the run.
    pub max_rate: f64,
    /// Enrichment outcomes looked at (the most recent ones).
    pub window: i64,
}

/// What a run did, for the CLI, the API and the UI.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: Run,
    pub counts: RunCounts,
    /// Items in the run, whatever their state.
    pub total: i64,
    /// Items our write reached the record for, whatever happened after (an undo included).
    pub written: i64,
    /// Written items whose replaced values an undo put back (read back and compared).
    pub reverted: i64,
    /// Written items an undo could only partly put back (what is left is on each item).
    pub partially_reverted: i64,
    /// Undos refused because the record changed upstream since our write.
    pub revert_conflicts: i64,
    /// Records changed upstream since they were pulled: nothing written over them.
    pub conflicts: i64,
    /// Nothing missing, or the same input already answered.
    pub skipped: i64,
    pub rejected: i64,
    /// Items with at least one failed attempt (enrichment or write), whatever they ended as.
    pub failed: i64,
    /// Items given up on (attempts used up, or a failure that is not retried).
    pub dead: i64,
    pub awaiting_review: i64,
    /// Items the machine is still working on.
    pub in_progress: i64,
    /// Failed attempts, enrichment and write together (`enrich_retries` + `write_retries`).
    pub retries: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// What the run cost, in USD (`run.cost_micros` / 1e6); `None` (JSON `null`) when the run's
    /// model has no known price.
    pub cost_usd: Option<f64>,
    /// Failed enrichment attempts (each was retried or ended the item).
    pub enrich_retries: i64,
    /// Failed write attempts.
    pub write_retries: i64,
    /// Written items whose values were read back and held.
    pub verified: i64,
    /// Written items with a field that did not hold the value written.
    pub verify_flagged: i64,
    /// Milliseconds from discovery to an end, over the items that reached one (for an item undone
    /// later, its end is its write). The percentile is taken over the same items as the average.
    pub item_ms_avg: Option<f64>,
    pub item_ms_p95: Option<i64>,
    pub wall_ms: i64,
}

impl RunReport {
    /// The report as lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        let c = &self.counts;
        let n = |s: ItemState| c.get(s);
        let mut out = vec![
            format!(
                "run {} {}{} · pipeline {}",
                self.run.id,
                self.run.plain_state(),
                self.run.reason_beyond_state().map(|r| format!(" ({r})")).unwrap_or_default(),
                self.run.pipeline
            ),
            format!(
                "  items {} · written {} · conflicts {} · skipped {} · rejected {} · dead {} · waiting for review {} · in progress {}",
                c.total(),
                self.written,
                n(ItemState::Conflict),
                n(ItemState::Skipped),
                n(ItemState::Rejected),
                n(ItemState::Dead),
                c.awaiting_review(),
                c.machine_pending()
            ),
            format!(
                "  failed at least once {} · retries {} (enrichment {}, write {}) · written values verified {}, flagged {}",
                self.failed, self.retries, self.enrich_retries, self.write_retries, self.verified, self.verify_flagged
            ),
            format!("  tokens {} in, {} out · cost {}", self.run.tokens_in, self.run.tokens_out, self.run.spent_text()),
        ];
        if self.reverted + self.partially_reverted + self.revert_conflicts > 0 {
            out.push(format!(
                "  undone: reverted {} · partially reverted {} · revert conflicts {} (of {} written)",
                self.reverted, self.partially_reverted, self.revert_conflicts, self.written
            ));
        }
        if let Some(phase) = self.run.review_phase {
            out.push(format!(
                "  sample gate: {} · sample {}{}",
                phase.plain(),
                self.run.sample_size.unwrap_or(0),
                self.run
                    .released_by
                    .as_deref()
                    .map(|b| format!(" · released by {}", super::plain_actor(b)))
                    .unwrap_or_default()
            ));
        }
        if let (Some(avg), Some(p95)) = (self.item_ms_avg, self.item_ms_p95) {
            out.push(format!(
                "  time per item: average {:.1}s, p95 {:.1}s · wall {:.1}s",
                avg / 1000.0,
                p95 as f64 / 1000.0,
                self.wall_ms as f64 / 1000.0
            ));
        }
        out
    }
}

/// Item counts of a run by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts(pub BTreeMap<ItemState, i64>);

impl RunCounts {
    pub fn get(&self, state: ItemState) -> i64 {
        self.0.get(&state).copied().unwrap_or(0)
    }
    pub fn sum(&self, states: &[ItemState]) -> i64 {
        states.iter().map(|s| self.get(*s)).sum()
    }
    pub fn total(&self) -> i64 {
        self.0.values().sum()
    }
    /// Items the machine can still move without a human.
    pub fn machine_pending(&self) -> i64 {
        use ItemState::*;
        self.sum(&[Discovered, Queued, Enriching, Batched, Approved, Writing, WriteFailed])
    }
    pub fn awaiting_review(&self) -> i64 {
        self.sum(&[ItemState::Proposed, ItemState::Edited])
    }
    pub fn terminal(&self) -> i64 {
        self.0.iter().filter(|(s, _)| s.is_finished()).map(|(_, n)| n).sum()
    }
}

impl Store {
    /// Creates a run unless the pipeline already has one going (then returns that one) or, for a
    /// scheduled run, another daemon already created the run of this tick. Both checks are unique
    /// indexes, so racing daemons cannot create two.
    pub async fn create_run(&self, new: &NewRun) -> Result<RunStart> {
        let now = now_ms();
        let trigger = if new.scheduled_for.is_some() { "schedule" } else { "manual" };
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO runs (pipeline, trigger_kind, scheduled_for, status, item_limit, max_attempts, budget_micros, created_at, \
               review_phase, sample_size, auto_release_max_reject_ppm) \
             VALUES ($1, $2, $3, 'discovering', $4, $5, $6, $7, $8, $9, $10) RETURNING {RUN_COLUMNS}"
        )))
        .bind(new.pipeline.as_str())
        .bind(trigger)
        .bind(new.scheduled_for)
        .bind(new.item_limit)
        .bind(new.max_attempts)
        .bind(new.budget_micros)
        .bind(now)
        .bind(new.sample.map(|_| ReviewPhase::Sampling.as_str()))
        .bind(new.sample.map(|g| g.size))
        .bind(new.sample.and_then(|g| g.auto_release_max_reject_rate).map(|r| (r * 1e6).round() as i64))
        .fetch_one(&self.writer)
        .await;
        match inserted {
            Ok(row) => {
                let run = Run::from_row(&row)?;
                self.run_event(run.id, None, RunStatus::Discovering, trigger, None).await?;
                Ok(RunStart::Created(run))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => match self.active_run(&new.pipeline).await? {
                Some(run) => Ok(RunStart::AlreadyActive(run)),
                None => Ok(RunStart::TickTaken),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn run_event(
        &self,
        run_id: i64,
        from: Option<RunStatus>,
        to: RunStatus,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        let event = NewEvent {
            run_id: Some(run_id),
            item_id: None,
            kind: "run",
            from_state: from.map(|s| s.as_str().into()),
            to_state: Some(to.as_str().into()),
            actor: actor.into(),
            detail: reason.map(|r| serde_json::json!({ "reason": r }).to_string()),
        };
        insert_events(&mut tx, &[event], now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, id: i64) -> Result<Run> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Run::from_row).transpose()?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
    }

    /// The pipeline's run that is discovering, running, paused or held for sample review, if any.
    /// Webhook runs stand beside it and are not it.
    pub async fn active_run(&self, pipeline: &str) -> Result<Option<Run>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE pipeline = $1 AND trigger_kind <> 'webhook' \
             AND (status IN ('discovering', 'running', 'paused') OR review_phase = 'sample_review') ORDER BY id DESC LIMIT 1"
        )))
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Run::from_row).transpose()
    }

    /// Runs in one of `statuses` (all when empty), newest first.
    pub async fn runs(&self, statuses: &[RunStatus], limit: i64) -> Result<Vec<Run>> {
        let rows = if statuses.is_empty() {
            sqlx::query(AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1")))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
        } else {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ({}) ORDER BY id DESC LIMIT $1",
                placeholders(2, statuses.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(limit);
            for s in statuses {
                q = q.bind(s.as_str());
            }
            q.fetch_all(&self.pool).await?
        };
        rows.iter().map(Run::from_row).collect()
    }

    /// Takes (or renews) the discovery lease of a discovering run. `None` when another live owner
    /// holds it or the run is past discovery.
    pub async fn claim_discovery(&self, run_id: i64, owner: &str, lease: std::time::Duration) -> Result<Option<Run>> {
        let now = now_ms();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET discovery_owner = $1, discovery_expires_at = $2 \
             WHERE id = $3 AND status = 'discovering' \
               AND (discovery_owner IS NULL OR discovery_owner = $1 OR discovery_expires_at < $4) \
             RETURNING {RUN_COLUMNS}"
        )))
        .bind(owner)
        .bind(now + lease.as_millis() as i64)
        .bind(run_id)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(Run::from_row).transpose()
    }

    /// Moves a run from one of `from` to `to`, with an event. `None` if the run was not in `from`.
    pub async fn set_run_status(
        &self,
        id: i64,
        from: &[RunStatus],
        to: RunStatus,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Option<Run>> {
        let now = now_ms();
        let finished = if to.is_finished() { Some(now) } else { None };
        let sql = format!(
            "UPDATE runs SET status = $1, status_reason = $2, finished_at = $3, \
               discovery_owner = CASE WHEN $1 = 'discovering' THEN discovery_owner ELSE NULL END \
             WHERE id = $4 AND status IN ({}) RETURNING {RUN_COLUMNS}",
            placeholders(5, from.len())
        );
        let mut tx = self.writer.begin().await?;
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(to.as_str()).bind(reason).bind(finished).bind(id);
        for s in from {
            q = q.bind(s.as_str());
        }
        let Some(row) = q.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let run = Run::from_row(&row)?;
        // The previous status is not returned by UPDATE; with one allowed source it is known.
        let event = NewEvent {
            run_id: Some(id),
            item_id: None,
            kind: "run",
            from_state: (from.len() == 1).then(|| from[0].as_str().into()),
            to_state: Some(to.as_str().into()),
            actor: actor.into(),
            detail: reason.map(|r| serde_json::json!({ "reason": r }).to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(Some(run))
    }

    /// Whether `pipeline` has runs other than `run_id` (whose items a discovery compares with).
    pub async fn other_runs_exist(&self, pipeline: &str, run_id: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE pipeline = $1 AND id <> $2")
            .bind(pipeline)
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// The run's report: counts, retries, tokens, cost, write checks and time per item.
    pub async fn report(&self, run_id: i64) -> Result<RunReport> {
        let run = self.run(run_id).await?;
        let counts = self.counts(run_id).await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS enrich_retries, \
                    CAST(COALESCE(SUM(write_attempts), 0) AS BIGINT) AS write_retries, \
                    CAST(COALESCE(SUM(CASE WHEN verified_at IS NOT NULL AND verify_issues IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS verified, \
                    CAST(COALESCE(SUM(CASE WHEN verify_issues IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS flagged, \
                    CAST(COALESCE(SUM(CASE WHEN attempts > 0 OR write_attempts > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed \
             FROM items WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        // Time per item: from discovery to its end, for items that reached one. An item undone later
        // ended when it was written (its last change is the undo, hours later perhaps): its write
        // is found in the event log. The average and the percentile read the same rows. Computed
        // in the database: fetching one row per item made the report of a 100,000-item run the
        // largest allocation of the whole run (hundreds of MB of rows, measured).
        const TOOK: &str = "(CASE WHEN state IN ('reverted', 'partially_reverted', 'revert_conflict') \
             THEN COALESCE((SELECT MAX(e.at) FROM events e WHERE e.item_id = items.id AND e.to_state = 'written'), updated_at) \
             ELSE updated_at END) - created_at";
        const ENDED: &str = "FROM items WHERE run_id = $1 AND state IN \
             ('written', 'conflict', 'skipped', 'dead', 'rejected', 'reverted', 'partially_reverted', 'revert_conflict')";
        let ended = sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM({TOOK}), 0) AS BIGINT) AS total {ENDED}"
        )))
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        let (n, total): (i64, i64) = (ended.try_get("n")?, ended.try_get("total")?);
        let avg = (n > 0).then(|| total as f64 / n as f64);
        let p95 = if n > 0 {
            let rank = ((n as f64 * 0.95).ceil() as i64).clamp(1, n) - 1;
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT CAST({TOOK} AS BIGINT) AS took {ENDED} ORDER BY took LIMIT 1 OFFSET $2"
            )))
            .bind(run_id)
            .bind(rank)
            .fetch_optional(&self.pool)
            .await?
        } else {
            None
        };
        let (enrich_retries, write_retries): (i64, i64) =
            (row.try_get("enrich_retries")?, row.try_get("write_retries")?);
        Ok(RunReport {
            total: counts.total(),
            written: counts.sum(&[
                ItemState::Written,
                ItemState::Reverted,
                ItemState::PartiallyReverted,
                ItemState::RevertConflict,
            ]),
            reverted: counts.get(ItemState::Reverted),
            partially_reverted: counts.get(ItemState::PartiallyReverted),
            revert_conflicts: counts.get(ItemState::RevertConflict),
            conflicts: counts.get(ItemState::Conflict),
            skipped: counts.get(ItemState::Skipped),
            rejected: counts.get(ItemState::Rejected),
            failed: row.try_get("failed")?,
            dead: counts.get(ItemState::Dead),
            awaiting_review: counts.awaiting_review(),
            in_progress: counts.machine_pending(),
            retries: enrich_retries + write_retries,
            tokens_in: run.tokens_in,
            tokens_out: run.tokens_out,
            cost_usd: run.spent_usd(),
            enrich_retries,
            write_retries,
            verified: row.try_get("verified")?,
            verify_flagged: row.try_get("flagged")?,
            item_ms_avg: avg,
            item_ms_p95: p95,
            wall_ms: run.finished_at.unwrap_or_else(super::now_ms) - run.created_at,
            run,
            counts,
        })
    }

    /// Marks run `run_id`'s spend unknown: its model has no price.
    pub async fn mark_cost_unknown(&self, run_id: i64) -> Result<()> {
        sqlx::query("UPDATE runs SET cost_unknown = 1 WHERE id = $1").bind(run_id).execute(&self.writer).await?;
        Ok(())
    }

    /// Items by pipeline and state, over every run (the `/metrics` gauges).
    pub async fn item_state_counts(&self) -> Result<Vec<(String, ItemState, i64)>> {
        let rows = sqlx::query(
            "SELECT pipeline, state, COUNT(*) AS n FROM items GROUP BY pipeline, state ORDER BY pipeline, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("pipeline")?, parse_col(r, "state")?, r.try_get("n")?))).collect()
    }

    /// Runs by pipeline and status (the `/metrics` gauges).
    pub async fn run_status_counts(&self) -> Result<Vec<(String, RunStatus, i64)>> {
        let rows = sqlx::query(
            "SELECT pipeline, status, COUNT(*) AS n FROM runs GROUP BY pipeline, status ORDER BY pipeline, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("pipeline")?, parse_col(r, "status")?, r.try_get("n")?))).collect()
    }

    /// When the pipeline's latest run before `run_id` that finished (`done`) was created, in Unix ms.
    pub async fn previous_done_run_start(&self, pipeline: &str, run_id: i64) -> Result<Option<i64>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM runs WHERE pipeline = $1 AND id < $2 AND status = 'done' ORDER BY id DESC LIMIT 1",
        )
        .bind(pipeline)
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(at)
    }

    /// Item counts of a run by state.
    pub async fn counts(&self, run_id: i64) -> Result<RunCounts> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM items WHERE run_id = $1 GROUP BY state")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        let mut counts = BTreeMap::new();
        for row in &rows {
            counts.insert(parse_col(row, "state")?, row.try_get::<i64, _>("n")?);
        }
        Ok(RunCounts(counts))
    }

    /// Pauses a discovering or running run whose enrichment fails too often: when more than
    /// `rule.max_rate` of its last `rule.window` enrichment outcomes (proposals and dead items,
    /// counted since the run started or was last resumed) are failures. A full window is needed, so a
    /// resumed run pauses again only on fresh failures; a run with nothing left to claim is not
    /// paused. Returns the paused run, or `None`.
    pub async fn pause_on_errors(&self, id: i64, rule: ErrorRule, actor: &str) -> Result<Option<Run>> {
        let run = self.run(id).await?;
        if !matches!(run.status, RunStatus::Discovering | RunStatus::Running) {
            return Ok(None);
        }
        // Cheap first (this runs on every settle): the window's failures are items that died since
        // the run started or resumed (`items_run_state` index, dead items only). Only when there are
        // enough of them are the run's counts and the event log read.
        let since = run.resumed_at.unwrap_or(0);
        let died: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE run_id = $1 AND state = 'dead' AND updated_at >= $2")
                .bind(id)
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
        if (died as f64) <= rule.max_rate * rule.window as f64 {
            return Ok(None);
        }
        // Nothing left to claim: pausing would save nothing, and the run should settle as it is.
        if run.status == RunStatus::Running
            && self.counts(id).await?.sum(&[ItemState::Discovered, ItemState::Queued]) == 0
        {
            return Ok(None);
        }
        let outcomes: Vec<String> = sqlx::query_scalar(
            "SELECT to_state FROM events WHERE run_id = $1 AND kind = 'transition' AND at >= $2 \
               AND from_state IN ('enriching', 'batched') AND to_state IN ('proposed', 'dead') \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(id)
        .bind(since)
        .bind(rule.window)
        .fetch_all(&self.pool)
        .await?;
        let failed = outcomes.iter().filter(|s| *s == "dead").count() as i64;
        if (outcomes.len() as i64) < rule.window || (failed as f64) <= rule.max_rate * rule.window as f64 {
            return Ok(None);
        }
        let last_error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM items WHERE run_id = $1 AND state = 'dead' AND last_error IS NOT NULL \
             ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        let mut reason = format!(
            "error rate: {failed} of the last {} enrichment outcomes failed ({:.0}%, more than the {:.0}% allowed by pause_on_error_rate)",
            rule.window,
            failed as f64 * 100.0 / rule.window as f64,
            rule.max_rate * 100.0
        );
        if let Some(e) = last_error {
            let short: String = e.chars().take(300).collect();
            reason.push_str(&format!("; last error: {short}"));
        }
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET paused_from = status, status = 'paused', status_reason = $1, discovery_owner = NULL \
             WHERE id = $2 AND status = $3 RETURNING {RUN_COLUMNS}"
        )))
        .bind(reason.as_str())
        .bind(id)
        .bind(run.status.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let event = NewEvent {
            run_id: Some(id),
            item_id: None,
            kind: "run",
            from_state: Some(run.status.as_str().into()),
            to_state: Some(RunStatus::Paused.as_str().into()),
            actor: actor.into(),
            detail: Some(serde_json::json!({ "reason": reason, "failed": failed, "window": rule.window }).to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Ok(Some(Run::from_row(&row)?))
    }

    /// Resumes a paused run by `actor`: it goes back to where it paused (discovering or running) and
    /// claims work again; the error-rate window starts afresh. A run that spent its budget stays
    /// paused: resuming it would only pause it again.
    pub async fn resume_run(&self, id: i64, actor: &str) -> Result<Run> {
        let run = self.run(id).await?;
        if run.status != RunStatus::Paused {
            return Err(StoreError::Refused(format!(
                "run {id} is {}, not paused: there is nothing to resume",
                run.status
            )));
        }
        if run.budget_reached() {
            return Err(StoreError::Refused(format!(
                "run {id} spent its budget (${:.4} of ${:.4}); resuming would pause it again",
                run.cost_micros as f64 / 1e6,
                run.budget_micros.unwrap_or(0) as f64 / 1e6
            )));
        }
        let to = run.paused_from.unwrap_or(RunStatus::Running);
        let to = if to == RunStatus::Discovering { RunStatus::Discovering } else { RunStatus::Running };
        let now = now_ms();
        let reason = format!("resumed by {}", super::plain_actor(actor));
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = $1, status_reason = $2, paused_from = NULL, resumed_at = $3, resumed_by = $4 \
             WHERE id = $5 AND status = 'paused' RETURNING {RUN_COLUMNS}"
        )))
        .bind(to.as_str())
        .bind(reason.as_str())
        .bind(now)
        .bind(actor)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::Refused(format!("run {id} was resumed or changed meanwhile")));
        };
        let event = NewEvent {
            run_id: Some(id),
            item_id: None,
            kind: "run",
            from_state: Some(RunStatus::Paused.as_str().into()),
            to_state: Some(to.as_str().into()),
            actor: actor.into(),
            detail: Some(serde_json::json!({ "reason": reason, "paused_because": run.status_reason }).to_string()),
        };
        insert_events(&mut tx, &[event], now).await?;
        tx.commit().await?;
        Run::from_row(&row)
    }

    /// What a run held for sample review is waiting for: how much of the sample is reviewed.
    async fn sample_review_reason(&self, id: i64, counts: &RunCounts) -> Result<String> {
        let stats = self.sample_stats(id).await?;
        Ok(format!(
            "waiting for sample review: {} of {} sample proposals reviewed; {} items held",
            stats.reviewed,
            stats.total,
            counts.get(ItemState::Queued)
        ))
    }

    /// Says afresh how far the sample review of run `id` is, if the run is held for it (after a
    /// sample item was reviewed: the reason must not keep the count it had when the run was held).
    pub(super) async fn refresh_sample_reason(&self, id: i64) -> Result<()> {
        let counts = self.counts(id).await?;
        let reason = self.sample_review_reason(id, &counts).await?;
        sqlx::query(
            "UPDATE runs SET status_reason = $1 \
             WHERE id = $2 AND status = 'awaiting_review' AND review_phase = 'sample_review'",
        )
        .bind(reason.as_str())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Moves a run on when its items allow: `running` → `awaiting_review` (only proposals waiting for
    /// a human are left) or `done` (everything terminal); `awaiting_review` → `done`; `running` →
    /// `paused` when its budget is spent with work still queued. Returns the run as it now is.
    ///
    /// A sampling run whose sample is complete is held for sample review (`awaiting_review`, with
    /// the reason); it releases itself when its auto-release rule allows.
    pub async fn settle_run(&self, id: i64, actor: &str) -> Result<Run> {
        let mut run = self.run(id).await?;
        let counts = self.counts(id).await?;
        if run.review_phase == Some(ReviewPhase::Sampling)
            && counts.sum(&[ItemState::Enriching, ItemState::Batched]) == 0
            && counts.get(ItemState::Queued) > 0
            && self.proposed_count(id).await? >= run.sample_size.unwrap_or(0)
        {
            self.set_review_phase(id, ReviewPhase::Sampling, ReviewPhase::SampleReview, actor).await?;
            run = self.run(id).await?;
        }
        if run.review_phase == Some(ReviewPhase::SampleReview) {
            run = self.auto_release(id, actor).await?;
        }
        if run.review_phase == Some(ReviewPhase::SampleReview) {
            if run.status == RunStatus::Running {
                let reason = self.sample_review_reason(id, &counts).await?;
                if let Some(run) = self
                    .set_run_status(id, &[RunStatus::Running], RunStatus::AwaitingReview, Some(&reason), actor)
                    .await?
                {
                    return Ok(run);
                }
            }
            return self.run(id).await;
        }
        let next = match run.status {
            RunStatus::Running if counts.machine_pending() == 0 && counts.awaiting_review() > 0 => {
                Some((RunStatus::AwaitingReview, format!("{} proposals wait for review", counts.awaiting_review())))
            }
            RunStatus::Running | RunStatus::AwaitingReview
                if counts.machine_pending() == 0 && counts.awaiting_review() == 0 =>
            {
                Some((RunStatus::Done, format!("{} items, all finished", counts.total())))
            }
            RunStatus::Running
                if run.budget_reached()
                    && counts.get(ItemState::Queued) > 0
                    && counts.get(ItemState::Enriching) == 0 =>
            {
                Some((
                    RunStatus::Paused,
                    format!(
                        "budget reached: ${:.4} spent of ${:.4}; {} items not enriched",
                        run.cost_micros as f64 / 1e6,
                        run.budget_micros.unwrap_or(0) as f64 / 1e6,
                        counts.get(ItemState::Queued)
                    ),
                ))
            }
            _ => None,
        };
        if let Some((to, reason)) = next {
            if let Some(run) = self.set_run_status(id, &[run.status], to, Some(&reason), actor).await? {
                return Ok(run);
            }
            return self.run(id).await;
        }
        Ok(run)
    }
}
