//! What the pipelines page reads in a few queries over every pipeline at once: each pipeline's
//! latest run, its spend since a date, its items still on their way (waiting for the model, for
//! review, to be written), and its last dry run; and what a "Run now" or "Dry run" from the page
//! records.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::items::{NewEvent, insert_events};
use super::runs::RUN_COLUMNS;
use super::{ItemState, Result, Run, Store, now_ms, parse_col};

/// What a pipeline's runs since a date cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Runs counted.
    pub runs: i64,
    /// The priced part of their model usage, in USD millionths.
    pub micros: i64,
    /// Some run used a model without a known price: the total is unknown.
    pub unknown: bool,
}

impl Spend {
    /// For people: `$0.1234`; with a run whose cost is unknown, `unknown` and the priced part.
    pub fn text(&self) -> String {
        let priced = self.micros as f64 / 1e6;
        if self.unknown {
            format!("unknown (a run's model has no price; ${priced:.4} priced)")
        } else {
            format!("${priced:.4}")
        }
    }
}

/// The last dry run of a pipeline, as recorded by [`Store::save_dry_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunCount {
    /// When it finished (Unix ms).
    pub at: i64,
    /// Who asked for it (an audit-trail actor).
    pub by: String,
    pub read: i64,
    pub candidates: i64,
}

impl Store {
    /// Each pipeline's newest run (by id), whatever its status.
    pub async fn latest_runs(&self) -> Result<BTreeMap<String, Run>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id IN (SELECT MAX(id) FROM runs GROUP BY pipeline)"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Run::from_row(r).map(|run| (run.pipeline.clone(), run))).collect()
    }

    /// What each pipeline's runs created at or after `since` (Unix ms) cost.
    pub async fn spend_since(&self, since: i64) -> Result<BTreeMap<String, Spend>> {
        let rows = sqlx::query(
            "SELECT pipeline, COUNT(*) AS runs, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS micros, \
               CAST(MAX(cost_unknown) AS BIGINT) AS unknown \
             FROM runs WHERE created_at >= $1 GROUP BY pipeline",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let spend = Spend {
                    runs: r.try_get("runs")?,
                    micros: r.try_get::<Option<i64>, _>("micros")?.unwrap_or(0),
                    unknown: r.try_get::<Option<i64>, _>("unknown")?.unwrap_or(0) != 0,
                };
                Ok((r.try_get("pipeline")?, spend))
            })
            .collect()
    }

    /// Items of each pipeline, over all its runs, in the states where they still wait for something:
    /// the model, a reviewer, or a write.
    pub async fn waiting_items(&self) -> Result<BTreeMap<String, BTreeMap<ItemState, i64>>> {
        use ItemState::*;
        let waiting = [Discovered, Queued, Enriching, Batched, Proposed, Edited, Approved, Writing, WriteFailed];
        let list = waiting.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT pipeline, state, COUNT(*) AS n FROM items WHERE state IN ({list}) GROUP BY pipeline, state"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<String, BTreeMap<ItemState, i64>> = BTreeMap::new();
        for r in &rows {
            out.entry(r.try_get("pipeline")?).or_default().insert(parse_col(r, "state")?, r.try_get("n")?);
        }
        Ok(out)
    }

    /// What a proposal of `pipeline` cost on average over its last `runs` runs whose cost is known
    /// (USD), with how many proposals that is over; `None` before any priced proposal.
    pub async fn cost_per_proposal(&self, pipeline: &str, runs: i64) -> Result<Option<(f64, i64)>> {
        let row = sqlx::query(
            "SELECT CAST(SUM(r.cost_micros) AS BIGINT) AS micros, \
               (SELECT COUNT(*) FROM items i WHERE i.run_id IN (SELECT id FROM runs WHERE pipeline = $1 \
                  AND cost_unknown = 0 AND tokens_in > 0 ORDER BY id DESC LIMIT $2) AND i.proposal IS NOT NULL) AS proposals \
             FROM runs r WHERE r.id IN (SELECT id FROM runs WHERE pipeline = $1 AND cost_unknown = 0 AND tokens_in > 0 \
               ORDER BY id DESC LIMIT $2)",
        )
        .bind(pipeline)
        .bind(runs)
        .fetch_one(&self.pool)
        .await?;
        let micros: Option<i64> = row.try_get("micros")?;
        let proposals: i64 = row.try_get("proposals")?;
        Ok(micros.filter(|_| proposals > 0).map(|m| (m as f64 / 1e6 / proposals as f64, proposals)))
    }

    /// Records the outcome of a dry run of `pipeline` by `actor`: records read, candidates found.
    pub async fn save_dry_run(&self, pipeline: &str, actor: &str, read: i64, candidates: i64) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO pipeline_state (pipeline, dry_run_at, dry_run_by, dry_run_read, dry_run_candidates, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $2) ON CONFLICT (pipeline) DO UPDATE SET dry_run_at = $2, dry_run_by = $3, \
             dry_run_read = $4, dry_run_candidates = $5, updated_at = $2",
        )
        .bind(pipeline)
        .bind(now)
        .bind(actor)
        .bind(read)
        .bind(candidates)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Each pipeline's last recorded dry run.
    pub async fn dry_runs(&self) -> Result<BTreeMap<String, DryRunCount>> {
        let rows = sqlx::query(
            "SELECT pipeline, dry_run_at, dry_run_by, dry_run_read, dry_run_candidates FROM pipeline_state \
             WHERE dry_run_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let count = DryRunCount {
                    at: r.try_get("dry_run_at")?,
                    by: r.try_get::<Option<String>, _>("dry_run_by")?.unwrap_or_default(),
                    read: r.try_get::<Option<i64>, _>("dry_run_read")?.unwrap_or(0),
                    candidates: r.try_get::<Option<i64>, _>("dry_run_candidates")?.unwrap_or(0),
                };
                Ok((r.try_get("pipeline")?, count))
            })
            .collect()
    }

    /// Records in run `run_id`'s history that `actor` asked for it ("Run now" on the pipelines
    /// page): the run's own first event names only how it was started (`manual`).
    pub async fn record_run_request(&self, run_id: i64, actor: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        let event = NewEvent {
            run_id: Some(run_id),
            item_id: None,
            kind: "run_requested",
            from_state: None,
            to_state: None,
            actor: actor.into(),
            detail: Some(serde_json::json!({ "from": "the pipelines page" }).to_string()),
        };
        insert_events(&mut tx, &[event], now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }
}
