//! What a pipeline carries between runs (its change-feed cursor, the instant its last listing began,
//! the values the platform allows for its fields), asynchronous platform writes kept until their
//! outcome is known, and the removal of scheduled runs that found nothing to do.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};

use super::{Item, Result, Store, now_ms, placeholders};

/// A pipeline's state between runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineState {
    /// Where the platform's change feed continues ([`enrichd_connector::Page::resume`]).
    pub feed_cursor: Option<String>,
    /// When the last complete listing began (Unix ms): a later incremental listing asks for records
    /// modified since then.
    pub listed_since: Option<i64>,
    /// Record field → the values the platform allowed when a run last started.
    pub allowed_values: BTreeMap<String, Vec<String>>,
    /// What the connection's organisation used when a run last started (accounting platforms).
    pub organisation: Option<enrichd_connector::lookup::Organisation>,
}

/// An asynchronous write whose outcome is not recorded yet.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteJob {
    pub id: i64,
    pub pipeline: String,
    pub entity: String,
    /// The platform's job id.
    pub job: String,
    /// The records the job covers.
    pub external_ids: Vec<String>,
}

impl Store {
    /// The pipeline's state; the default when it never ran.
    pub async fn pipeline_state(&self, pipeline: &str) -> Result<PipelineState> {
        let row = sqlx::query(
            "SELECT feed_cursor, listed_since, allowed_values, organisation FROM pipeline_state WHERE pipeline = $1",
        )
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(PipelineState::default()) };
        let allowed: Option<String> = row.try_get("allowed_values")?;
        let organisation: Option<String> = row.try_get("organisation")?;
        Ok(PipelineState {
            organisation: organisation.and_then(|o| serde_json::from_str(&o).ok()),
            feed_cursor: row.try_get("feed_cursor")?,
            listed_since: row.try_get("listed_since")?,
            allowed_values: allowed.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default(),
        })
    }

    /// Records where the pipeline's next incremental listing starts: the feed's cursor (when the
    /// platform has one) and when the listing that ended here began.
    pub async fn save_listing_position(&self, pipeline: &str, feed_cursor: Option<&str>, began_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO pipeline_state (pipeline, feed_cursor, listed_since, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pipeline) DO UPDATE SET feed_cursor = $2, listed_since = $3, updated_at = $4",
        )
        .bind(pipeline)
        .bind(feed_cursor)
        .bind(began_at)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records the values the platform allows for the pipeline's fields, read as a run starts.
    pub async fn save_allowed_values(&self, pipeline: &str, allowed: &BTreeMap<String, Vec<String>>) -> Result<()> {
        let text = serde_json::to_string(allowed).unwrap_or_default();
        sqlx::query(
            "INSERT INTO pipeline_state (pipeline, allowed_values, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (pipeline) DO UPDATE SET allowed_values = $2, updated_at = $3",
        )
        .bind(pipeline)
        .bind(text)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records what the connection's organisation uses (`None`: it says nothing), read as a run starts.
    pub async fn save_organisation(
        &self,
        pipeline: &str,
        organisation: Option<&enrichd_connector::lookup::Organisation>,
    ) -> Result<()> {
        let text = organisation.map(|o| serde_json::to_string(o).unwrap_or_default());
        sqlx::query(
            "INSERT INTO pipeline_state (pipeline, organisation, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (pipeline) DO UPDATE SET organisation = $2, updated_at = $3",
        )
        .bind(pipeline)
        .bind(text)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Removes a run that found no candidate — made by a schedule or a webhook, so it is noise on
    /// the runs page — with its skipped items, in one transaction. A run with any item that is not
    /// skipped, or not made that way, stays; returns whether it was removed. Its events stay (they
    /// are append-only) and say why.
    pub async fn discard_empty_run(&self, run_id: i64, actor: &str) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let kind: Option<String> = sqlx::query_scalar("SELECT trigger_kind FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        if !matches!(kind.as_deref(), Some("schedule" | "webhook")) {
            return Ok(false);
        }
        let busy: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE run_id = $1 AND state <> 'skipped'")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        if busy > 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM items WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM runs WHERE id = $1").bind(run_id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO events (run_id, item_id, kind, from_state, to_state, actor, detail, at) \
             VALUES ($1, NULL, 'run_discarded', NULL, NULL, $2, $3, $4)",
        )
        .bind(run_id)
        .bind(actor)
        .bind(serde_json::json!({"reason": "no new record needed filling"}).to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores an asynchronous write the platform accepted, and ties the items it covers to it, before
    /// it is polled: from here the items are not given back when a lease expires, the job is polled
    /// again instead (by [`Store::claim_write_job`]), so the changes are never submitted twice.
    pub async fn save_write_job(
        &self,
        pipeline: &str,
        entity: &str,
        job: &str,
        items: &[&Item],
        owner: &str,
    ) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        let external_ids: Vec<&str> = items.iter().map(|i| i.external_id.as_str()).collect();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO write_jobs (pipeline, entity, job, external_ids, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id",
        )
        .bind(pipeline)
        .bind(entity)
        .bind(job)
        .bind(serde_json::to_string(&external_ids).unwrap_or_default())
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        let sql = format!(
            "UPDATE items SET write_job_id = $1 WHERE lease_owner = $2 AND state = 'writing' AND id IN ({})",
            placeholders(3, ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id).bind(owner);
        for item in &ids {
            q = q.bind(*item);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Takes over an unfinished write job of `pipeline` whose items' leases have all lapsed (the
    /// daemon polling it died) or are `owner`'s own (its poll gave up): its items are leased to `owner` and returned with the job. A job
    /// with no item left being written is marked finished. `None` when there is nothing to take.
    pub async fn claim_write_job(
        &self,
        pipeline: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(WriteJob, Vec<Item>)>> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, pipeline, entity, job, external_ids FROM write_jobs w WHERE pipeline = $1 \
             AND finished_at IS NULL AND NOT EXISTS (SELECT 1 FROM items i WHERE i.write_job_id = w.id \
             AND i.state = 'writing' AND i.lease_expires_at >= $2 AND i.lease_owner <> $3) ORDER BY id LIMIT 5",
        )
        .bind(pipeline)
        .bind(now)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let job = WriteJob {
                id: row.try_get("id")?,
                pipeline: row.try_get("pipeline")?,
                entity: row.try_get("entity")?,
                job: row.try_get("job")?,
                external_ids: serde_json::from_str(&row.try_get::<String, _>("external_ids")?).unwrap_or_default(),
            };
            let taken: Vec<i64> = sqlx::query_scalar(
                "UPDATE items SET lease_owner = $1, lease_expires_at = $2 WHERE write_job_id = $3 \
                 AND state = 'writing' AND (lease_expires_at IS NULL OR lease_expires_at < $4 OR lease_owner = $1) \
                 RETURNING id",
            )
            .bind(owner)
            .bind(now + lease.as_millis() as i64)
            .bind(job.id)
            .bind(now)
            .fetch_all(&self.writer)
            .await?;
            if taken.is_empty() {
                let writing: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE write_job_id = $1 AND state = 'writing'")
                        .bind(job.id)
                        .fetch_one(&self.writer)
                        .await?;
                if writing == 0 {
                    self.finish_write_job(job.id).await?;
                }
                continue;
            }
            let items = self.items_by_id(&taken).await?;
            return Ok(Some((job, items)));
        }
        Ok(None)
    }

    /// Marks a write job's outcome recorded and unties its items from it.
    pub async fn finish_write_job(&self, id: i64) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE write_jobs SET finished_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE items SET write_job_id = NULL WHERE write_job_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
