//! Write-back: claims approved items a batch at a time, re-reads the records, and writes only where
//! the record is still at the version that was pulled. A record changed upstream is a `conflict`
//! and is left as it is; a record that already holds the approved values (our write landed before a
//! crash) is `written` without writing again. The values a write replaces are kept on the item
//! before it goes out (for undo), and after it the records are read back to confirm every written
//! field holds what was written; a field that did not stick is flagged on the item with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd_connector::{
    Change, ConnectorError, Record, Version, WriteMode, WriteOutcome, WriteResult, WriteSubmission,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::enrich::log_store_error;
use super::{Engine, Pipeline, pause};
use crate::store::{Claim, Item, StoreError, VerifyIssue, Work};

pub(super) async fn write_loop(
    engine: Arc<Engine>,
    pipeline: Arc<Pipeline>,
    only_run: Option<i64>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = pipeline.connector.max_write_batch().clamp(1, 500);
    let linger = Duration::from_millis(pipeline.config.write_linger_ms);
    // When the first approved item of a batch that is not yet full was seen.
    let mut filling_since: Option<Instant> = None;
    while !stop.is_cancelled() {
        if resume_write_job(&engine, &pipeline).await {
            continue;
        }
        if !linger.is_zero() {
            // Answers trickle in; a handful written at once costs the platform a whole batch call
            // and a re-read. Wait (at most `write_linger_ms` after the first one) for a full batch
            // while more is on its way.
            match engine.store.write_backlog(&pipeline.name, only_run, limit).await {
                Ok((0, _)) => {
                    filling_since = None;
                    if !pause(&stop, engine.poll()).await {
                        break;
                    }
                    continue;
                }
                Ok((ready, true)) if ready < limit => {
                    let since = *filling_since.get_or_insert_with(Instant::now);
                    let left = linger.saturating_sub(since.elapsed());
                    if !left.is_zero() {
                        if !pause(&stop, left.min(engine.poll())).await {
                            break;
                        }
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(pipeline = %pipeline.name, error = %e, "counting items to write failed"),
            }
        }
        filling_since = None;
        let claim = Claim {
            pipeline: &pipeline.name,
            run_id: only_run,
            work: Work::Write,
            owner: &engine.owner,
            limit,
            lease: engine.lease(),
        };
        let items = match engine.store.claim(&claim).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, error = %e, "claiming items to write failed");
                Vec::new()
            }
        };
        if items.is_empty() {
            if !pause(&stop, engine.poll()).await {
                break;
            }
            continue;
        }
        // Tracked so a shutdown waits for the batch instead of abandoning it mid-write.
        let (e, p) = (engine.clone(), pipeline.clone());
        let batch = tracker.spawn(async move { write_batch(&e, &p, items).await });
        if let Err(e) = batch.await {
            tracing::error!(error = %e, "write-back batch panicked");
        }
    }
}

async fn write_batch(engine: &Engine, pipeline: &Pipeline, items: Vec<Item>) {
    let store = &engine.store;
    let owner = engine.owner.as_str();
    let policy = engine.retry_policy();
    let entity = &pipeline.config.entity;
    let ids: Vec<String> = items.iter().map(|i| i.external_id.clone()).collect();
    let current = match pipeline.connector.fetch(entity, &ids).await {
        Ok(records) => records,
        Err(e) => {
            if let Some(pause) = super::pauses::platform_pause(&e, &pipeline.config.connection) {
                let held: Vec<&Item> = items.iter().collect();
                return super::pauses::pause_items(engine, pipeline, &held, &pause).await;
            }
            for item in &items {
                let message = format!("record {}: re-reading before the write failed: {e}", item.external_id);
                if let Err(err) = store.fail_write(item, owner, &message, e.retryable, e.retry_after, policy).await {
                    log_store_error(item.id, "write-back", &err);
                }
            }
            return;
        }
    };
    let current: HashMap<&str, &Record> = current.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut to_write: Vec<(Item, Change)> = Vec::new();
    for item in items {
        let result = check_item(engine, pipeline, &item, current.get(item.external_id.as_str()).copied()).await;
        match result {
            Ok(Some(change)) => to_write.push((item, change)),
            Ok(None) => {}
            Err(e) => log_store_error(item.id, "write-back", &e),
        }
    }
    let replaced: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = to_write
        .iter()
        .map(|(item, change)| {
            // An earlier attempt kept them before its first call went out; what it may have
            // written since is ours, not what an undo should put back.
            if let Some(kept) = item.replaced.as_ref().filter(|k| change.fields.keys().all(|f| k.contains_key(f))) {
                return (item.id, kept.clone());
            }
            let record = current.get(item.external_id.as_str());
            let before = change
                .fields
                .keys()
                .map(|k| (k.clone(), record.and_then(|r| r.fields.get(k)).cloned().unwrap_or_default()))
                .collect();
            (item.id, before)
        })
        .collect();
    if let Err(e) = store.save_replaced(owner, &replaced).await {
        // Without the old values an undo could not put them back: do not write yet.
        tracing::warn!(pipeline = %pipeline.name, error = %e, "keeping the values a write replaces failed; retrying later");
        for (item, _) in &to_write {
            let message = format!("record {}: keeping the values the write replaces failed: {e}", item.external_id);
            if let Err(err) = store.fail_write(item, owner, &message, true, None, policy).await {
                log_store_error(item.id, "write-back", &err);
            }
        }
        return;
    }
    for chunk in to_write.chunks(pipeline.connector.max_write_batch().max(1)) {
        let changes: Vec<Change> = chunk.iter().map(|(_, c)| c.clone()).collect();
        match pipeline.connector.write(entity, &changes).await {
            Ok(WriteSubmission::Done(outcomes)) => {
                let written = record_outcomes(engine, chunk, outcomes).await;
                verify(engine, pipeline, written).await;
            }
            Ok(WriteSubmission::Pending(job)) => {
                // Kept before the first poll: a daemon killed while polling leaves the items tied to
                // the job, and whoever takes the pipeline over polls it again instead of writing twice.
                let items: Vec<&Item> = chunk.iter().map(|(i, _)| i).collect();
                let stored = match store.save_write_job(&pipeline.name, entity, &job.job, &items, owner).await {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::warn!(pipeline = %pipeline.name, job = %job.job, error = %e, "keeping the write job failed; polling it in this process only");
                        None
                    }
                };
                settle_job(engine, pipeline, &job, stored, chunk).await;
            }
            Err(e) => match super::pauses::platform_pause(&e, &pipeline.config.connection) {
                Some(pause) => {
                    // Nothing of the call was applied: the items go back, and their runs pause.
                    let held: Vec<&Item> = chunk.iter().map(|(i, _)| i).collect();
                    super::pauses::pause_items(engine, pipeline, &held, &pause).await
                }
                None => fail_all(engine, chunk, &e).await,
            },
        }
    }
}

/// Every item of `chunk` failed with `e` (retried if `e` is retryable).
async fn fail_all(engine: &Engine, chunk: &[(Item, Change)], e: &ConnectorError) {
    for (item, _) in chunk {
        let message = format!("record {}: {e}", item.external_id);
        if let Err(err) = engine
            .store
            .fail_write(item, &engine.owner, &message, e.retryable, e.retry_after, engine.retry_policy())
            .await
        {
            log_store_error(item.id, "write-back", &err);
        }
    }
}

/// Polls an asynchronous write until the platform reports every record's outcome, records them,
/// verifies what was written, and closes the stored job. A poll that gives up leaves the job stored
/// and its items tied to it: it is polled again (by this or another daemon) once their leases lapse,
/// never submitted again.
async fn settle_job(
    engine: &Engine,
    pipeline: &Pipeline,
    job: &enrichd_connector::PendingWrite,
    stored: Option<i64>,
    chunk: &[(Item, Change)],
) {
    match poll_until_done(pipeline.connector.as_ref(), job).await {
        Ok(outcomes) => {
            let written = record_outcomes(engine, chunk, outcomes).await;
            if let Some(id) = stored
                && let Err(e) = engine.store.finish_write_job(id).await
            {
                tracing::warn!(pipeline = %pipeline.name, job = %job.job, error = %e, "closing the write job failed; it is closed when polled again");
            }
            verify(engine, pipeline, written).await;
        }
        Err(e) if stored.is_some() => {
            tracing::warn!(pipeline = %pipeline.name, job = %job.job, error = %e, "polling the write job failed; it is polled again when its items' leases lapse");
        }
        Err(e) => fail_all(engine, chunk, &e).await,
    }
}

/// Takes over a stored write job whose poller died, and finishes it. Returns whether there was one.
async fn resume_write_job(engine: &Engine, pipeline: &Pipeline) -> bool {
    let claimed = match engine.store.claim_write_job(&pipeline.name, &engine.owner, engine.lease()).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "looking for unfinished write jobs failed");
            return false;
        }
    };
    let Some((job, items)) = claimed else { return false };
    tracing::info!(pipeline = %pipeline.name, job = %job.job, items = items.len(), "resuming the poll of a write job left by another process");
    let chunk: Vec<(Item, Change)> = items
        .into_iter()
        .map(|item| {
            let change = Change {
                id: item.external_id.clone(),
                base_version: Version(item.record_version.clone()),
                fields: item.proposal.as_ref().map(|p| p.values()).unwrap_or_default(),
                native: None,
                mode: WriteMode::Merge,
            };
            (item, change)
        })
        .collect();
    let pending = enrichd_connector::PendingWrite {
        entity: job.entity.clone(),
        job: job.job.clone(),
        ids: chunk.iter().map(|(i, _)| i.external_id.clone()).collect(),
    };
    settle_job(engine, pipeline, &pending, Some(job.id), &chunk).await;
    true
}

/// Decides one item against the record as it is now: `Some(change)` to write, or records the
/// outcome (gone, already applied, conflict) and returns `None`.
async fn check_item(
    engine: &Engine,
    pipeline: &Pipeline,
    item: &Item,
    upstream: Option<&Record>,
) -> Result<Option<Change>, StoreError> {
    let store = &engine.store;
    let owner = engine.owner.as_str();
    let Some(proposal) = &item.proposal else {
        store.fail_write(item, owner, "approved without a proposal", false, None, engine.retry_policy()).await?;
        return Ok(None);
    };
    if let Some(reason) = &proposal.held {
        // Approval refuses held proposals; one that got here anyway is still never written.
        let message = format!("record {}: not written: {reason}", item.external_id);
        store.fail_write(item, owner, &message, false, None, engine.retry_policy()).await?;
        return Ok(None);
    }
    let values = proposal.values();
    let Some(record) = upstream else {
        let message =
            format!("record {} no longer exists on connection {}", item.external_id, pipeline.config.connection);
        store.fail_write(item, owner, &message, false, None, engine.retry_policy()).await?;
        return Ok(None);
    };
    if values.iter().all(|(k, v)| pipeline.connector.holds(k, v, record.field(k))) {
        let detail = json!({ "note": "the record already holds the approved values (an earlier write landed before a restart)" });
        let written = store.mark_written(item, owner, Some(&record.version.0), Some(detail)).await?;
        store.record_verification(&written, owner, &[]).await?;
        return Ok(None);
    }
    if record.version.0 != item.record_version {
        if let Some(change) = finish_half_done(pipeline, item, proposal, record) {
            return Ok(Some(change));
        }
        let reason = format!(
            "record {} changed upstream since it was pulled (version {} → {}); nothing was written",
            item.external_id, item.record_version, record.version
        );
        store.mark_conflict(item, owner, Some(&record.version.0), &reason).await?;
        return Ok(None);
    }
    Ok(Some(Change {
        id: item.external_id.clone(),
        base_version: Version(item.record_version.clone()),
        fields: values,
        native: record.native.clone(),
        mode: WriteMode::Merge,
    }))
}

/// A write an earlier attempt left half done: a platform without a batch update (Help Scout: one
/// call for the custom fields, one for the tags) stored part of the change, then failed with an
/// error worth retrying. The record's version moved — by our own write — so the plain check would
/// call it a conflict and leave it half written. It is finished instead when the evidence says
/// nobody else touched what we write: this item tried before, some fields already hold our values,
/// and every other field still holds what it held at the pull. Then the rest is written against the
/// record as it is now (the connector merges tags with the current set). Anything else is a conflict.
fn finish_half_done(
    pipeline: &Pipeline,
    item: &Item,
    proposal: &crate::store::Proposal,
    record: &Record,
) -> Option<Change> {
    if item.write_attempts == 0 {
        return None;
    }
    let connector = pipeline.connector.as_ref();
    let mut ours = 0;
    for (field, change) in &proposal.fields {
        let stored = record.field(field);
        if connector.holds(field, change.value(), stored) {
            ours += 1;
        } else if !connector.restored(field, &change.before, stored) {
            return None;
        }
    }
    if ours == 0 {
        return None;
    }
    tracing::info!(pipeline = %pipeline.name, record = %item.external_id, "finishing a write an earlier attempt left half done");
    Some(Change {
        id: item.external_id.clone(),
        base_version: record.version.clone(),
        fields: proposal.values(),
        native: record.native.clone(),
        mode: WriteMode::Merge,
    })
}

pub(super) async fn poll_until_done(
    connector: &dyn enrichd_connector::Connector,
    job: &enrichd_connector::PendingWrite,
) -> Result<Vec<WriteOutcome>, ConnectorError> {
    // Platform jobs (Zendesk's update_many) usually finish within a second or two: look soon, then
    // less and less often (0.2 s, 0.3 s, 0.45 s, … at most every 5 s; about 9 minutes in all).
    let mut wait = Duration::from_millis(200);
    for _ in 0..120 {
        tokio::time::sleep(wait).await;
        if let Some(outcomes) = connector.poll_write(job).await? {
            return Ok(outcomes);
        }
        wait = wait.mul_f64(1.5).min(Duration::from_secs(5));
    }
    Err(ConnectorError::transient(format!("write job {} did not finish in time", job.job)))
}

/// Records each change's outcome; returns the items now `written`, with what was written to them.
async fn record_outcomes(
    engine: &Engine,
    chunk: &[(Item, Change)],
    outcomes: Vec<WriteOutcome>,
) -> Vec<(Item, Change)> {
    let store = &engine.store;
    let owner = engine.owner.as_str();
    let mut by_id: HashMap<String, WriteResult> = outcomes.into_iter().map(|o| (o.id, o.result)).collect();
    // All at once: the store commits the items of a batch together (one flush, not one per item).
    let recorded = chunk.iter().map(|(item, change)| {
        let result = by_id.remove(&item.external_id);
        async move {
            let outcome = match result {
                Some(WriteResult::Written { version }) => store
                    .mark_written(item, owner, version.as_ref().map(|v| v.0.as_str()), None)
                    .await
                    .map(|done| Some((done, change.clone()))),
                Some(WriteResult::Conflict { current }) => {
                    let reason = format!(
                        "record {}: the platform refused the write because the record changed",
                        item.external_id
                    );
                    store
                        .mark_conflict(item, owner, current.as_ref().map(|v| v.0.as_str()), &reason)
                        .await
                        .map(|_| None)
                }
                Some(WriteResult::Failed(e)) if e.deferred => {
                    store.defer_write(item, owner, &e.message, e.retry_after, engine.retry_policy()).await.map(|_| None)
                }
                Some(WriteResult::Failed(e)) => store
                    .fail_write(item, owner, &e.message, e.retryable, e.retry_after, engine.retry_policy())
                    .await
                    .map(|_| None),
                None => {
                    let message = format!("record {}: the platform reported no outcome for it", item.external_id);
                    store.fail_write(item, owner, &message, true, None, engine.retry_policy()).await.map(|_| None)
                }
            };
            outcome.unwrap_or_else(|e| {
                log_store_error(item.id, "write-back", &e);
                None
            })
        }
    });
    let written: Vec<(Item, Change)> = futures::future::join_all(recorded).await.into_iter().flatten().collect();
    written
}

/// Reads the written records back and checks every written field holds what was written (after
/// the platform's normalisation). A field that did not stick is flagged on its item with the
/// reason; the rest are marked verified. A failed read leaves the items unverified, with a warning.
async fn verify(engine: &Engine, pipeline: &Pipeline, written: Vec<(Item, Change)>) {
    if written.is_empty() {
        return;
    }
    let store = &engine.store;
    let owner = engine.owner.as_str();
    let ids: Vec<String> = written.iter().map(|(i, _)| i.external_id.clone()).collect();
    let records = match pipeline.connector.fetch(&pipeline.config.entity, &ids).await {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, items = ids.len(), "reading written records back failed; they stay unverified");
            return;
        }
    };
    let by_id: HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut checked = Vec::with_capacity(written.len());
    for (item, change) in written {
        let record = by_id.get(item.external_id.as_str());
        let mut issues = Vec::new();
        for (field, value) in &change.fields {
            let stored = record.and_then(|r| r.field(field));
            if !pipeline.connector.holds(field, value, stored) {
                issues.push(VerifyIssue {
                    field: field.clone(),
                    written: value.clone(),
                    stored: stored.cloned().unwrap_or_default(),
                    reason: match record {
                        None => format!("record {} was gone when read back after the write", item.external_id),
                        Some(_) => pipeline.connector.not_held_reason(field, stored),
                    },
                });
            }
        }
        if !issues.is_empty() {
            tracing::warn!(pipeline = %pipeline.name, record = %item.external_id, fields = ?issues.iter().map(|i| &i.field).collect::<Vec<_>>(), "written fields did not stick");
        }
        checked.push((item, issues));
    }
    if let Err(e) = store.record_verifications(&checked, owner).await {
        // One at a time, so an item that cannot be recorded does not keep the others unverified.
        tracing::debug!(error = %e, "recording a batch's verification failed; recording item by item");
        for (item, issues) in &checked {
            if let Err(e) = store.record_verification(item, owner, issues).await {
                log_store_error(item.id, "verification", &e);
            }
        }
    }
}
