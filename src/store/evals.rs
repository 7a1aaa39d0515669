//! Stored `enrichd eval` reports: one row per evaluation, the report itself as JSON.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError};

/// One stored evaluation report.
#[derive(Debug, Clone)]
pub struct StoredEval {
    pub id: i64,
    pub pipeline: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub task_version: String,
    pub model: String,
    pub sampled: i64,
    pub report: Value,
}

/// What is stored with a new report.
#[derive(Debug, Clone)]
pub struct NewEval<'a> {
    pub pipeline: &'a str,
    pub created_at: i64,
    pub task_version: &'a str,
    pub model: &'a str,
    pub sampled: i64,
    pub report: &'a Value,
}

const COLUMNS: &str = "id, pipeline, created_at, task_version, model, sampled, report";

fn stored(row: &AnyRow) -> Result<StoredEval> {
    let id: i64 = row.try_get("id")?;
    let text: String = row.try_get("report")?;
    let report = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("eval report {id}: the stored report is not JSON: {e}")))?;
    Ok(StoredEval {
        id,
        pipeline: row.try_get("pipeline")?,
        created_at: row.try_get("created_at")?,
        task_version: row.try_get("task_version")?,
        model: row.try_get("model")?,
        sampled: row.try_get("sampled")?,
        report,
    })
}

impl Store {
    /// Stores an evaluation report; returns its id.
    pub async fn save_eval(&self, new: &NewEval<'_>) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO eval_reports (pipeline, created_at, task_version, model, sampled, report) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(new.pipeline)
        .bind(new.created_at)
        .bind(new.task_version)
        .bind(new.model)
        .bind(new.sampled)
        .bind(new.report.to_string())
        .fetch_one(&self.writer)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The pipeline's reports, newest first, at most `limit`.
    pub async fn eval_reports(&self, pipeline: &str, limit: i64) -> Result<Vec<StoredEval>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM eval_reports WHERE pipeline = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored).collect()
    }

    /// One report by id.
    pub async fn eval_report(&self, id: i64) -> Result<StoredEval> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM eval_reports WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("eval report {id}")))?;
        stored(&row)
    }
}
