//! Discovery of a webhook run: the records verified webhooks named are fetched by id (not listed)
//! and become items exactly as listed records do — the same selection (nothing missing: skipped)
//! and the same duplicate rule (a record in progress or already answered in another run: skipped
//! with that reason), which is what makes a record arriving by webhook and by the schedule
//! enriched once.

use std::collections::{BTreeSet, HashMap};

use enrichd_connector::Record;
use tokio_util::sync::CancellationToken;

use super::discovery::{input_hash, reuse_reason};
use super::{Engine, Pipeline, pause};
use crate::select::wanted_fields;
use crate::store::{NewItem, PriorItem, Run, RunStatus};

/// Records fetched per request (WooCommerce `include` and Zendesk `show_many` both take 100).
const FETCH_CHUNK: usize = 100;

pub(super) async fn discover(engine: &Engine, pipeline: &Pipeline, run: Run, stop: &CancellationToken) {
    let store = &engine.store;
    let entity = &pipeline.config.entity;
    // Closed first, so webhooks arriving from now on open the next run instead of joining one
    // whose records are already being fetched.
    if run.discovery_cursor.is_none() {
        match store.close_hook_run(run.id, &engine.owner).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return tracing::warn!(run = run.id, error = %e, "closing the webhook run failed"),
        }
    }
    let queued = match store.hook_records(run.id).await {
        Ok(q) => q,
        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading the webhook queue failed"),
    };
    let ids: Vec<String> = queued
        .iter()
        .filter(|r| &r.entity == entity)
        .map(|r| r.external_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let oldest = queued.iter().map(|r| r.received_at).min();
    let mut records: Vec<Record> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(FETCH_CHUNK) {
        match fetch(engine, pipeline, &run, chunk, stop).await {
            Some(mut got) => records.append(&mut got),
            None => return,
        }
    }
    let found: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !found.contains(id.as_str())).collect();
    if !missing.is_empty() {
        tracing::warn!(run = run.id, pipeline = %pipeline.name, ?missing, "records named by webhooks were not found on the platform");
    }
    let prior = match store.prior_items(&pipeline.name, entity, &ids, run.id).await {
        Ok(p) => p,
        Err(e) => return tracing::warn!(run = run.id, error = %e, "reading earlier items failed"),
    };
    let mut by_record: HashMap<&str, Vec<&PriorItem>> = HashMap::new();
    for p in &prior {
        by_record.entry(p.external_id.as_str()).or_default().push(p);
    }
    let task = pipeline.task();
    let items: Vec<NewItem> = records
        .iter()
        .map(|record| {
            let hash = input_hash(record);
            let wanted = wanted_fields(&pipeline.config.select, task.fields.values(), record);
            let skip = if wanted.is_empty() {
                Some("nothing is missing".to_owned())
            } else {
                reuse_reason(by_record.get(record.id.as_str()).map(Vec::as_slice).unwrap_or(&[]), &hash, &task.version)
            };
            NewItem {
                entity: entity.clone(),
                external_id: record.id.clone(),
                record_version: record.version.0.clone(),
                input: serde_json::to_string(&record.fields).unwrap_or_default(),
                input_hash: hash,
                skip,
                attachments: record.attachments.clone(),
            }
        })
        .collect();
    let candidates = items.iter().filter(|i| i.skip.is_none()).count();
    // As for scheduled runs (engine::discovery): on an incremental pipeline a webhook run with
    // nothing to fill — the echo of our own write, a record already being enriched — leaves no run
    // behind. Its queue rows go with it.
    if candidates == 0 && pipeline.config.incremental {
        match store.discard_empty_run(run.id, &engine.owner).await {
            Ok(true) => {
                return tracing::debug!(run = run.id, pipeline = %pipeline.name, "webhooks named nothing to fill; the run was discarded");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(run = run.id, error = %e, "discarding an empty webhook run failed"),
        }
    }
    let reason = format!(
        "{} record{} named by webhooks, {candidates} to enrich{}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        if missing.is_empty() { String::new() } else { format!(", {} not found", missing.len()) }
    );
    match store.take_hook_records(run.id, &pipeline.name, &task.version, &engine.owner, &items, &reason).await {
        Ok(_) => tracing::info!(
            run = run.id,
            pipeline = %pipeline.name,
            candidates,
            waited_ms = oldest.map(|t| crate::store::now_ms() - t),
            "webhook run discovered: {reason}"
        ),
        Err(e) => tracing::warn!(run = run.id, error = %e, "recording the webhook run's records failed"),
    }
}

/// Fetches `ids`, retrying as listing does; `None` when the run failed or the daemon is stopping.
async fn fetch(
    engine: &Engine,
    pipeline: &Pipeline,
    run: &Run,
    ids: &[String],
    stop: &CancellationToken,
) -> Option<Vec<Record>> {
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let entity = &pipeline.config.entity;
        // What a listing would have given the task (a ticket's conversation), not only what a
        // write needs.
        let got = match pipeline.connector.fetch(entity, ids).await {
            Ok(mut records) => pipeline.connector.complete(entity, &mut records).await.map(|()| records),
            Err(e) => Err(e),
        };
        match got {
            Ok(records) => return Some(records),
            Err(e) => {
                failures += 1;
                if !e.retryable || failures >= pipeline.config.max_attempts {
                    let reason = format!(
                        "fetching records named by webhooks failed on connection {}: {e}",
                        pipeline.config.connection
                    );
                    tracing::error!(run = run.id, "{reason}");
                    let _ = engine
                        .store
                        .set_run_status(
                            run.id,
                            &[RunStatus::Discovering],
                            RunStatus::Failed,
                            Some(&reason),
                            &engine.owner,
                        )
                        .await;
                    return None;
                }
                let policy = engine.retry_policy();
                let wait = enrichd_connector::retry::backoff(failures, policy.base, policy.max, e.retry_after);
                tracing::warn!(run = run.id, error = %e, wait_s = wait.as_secs_f64(), "fetching failed; retrying");
                if !pause(stop, wait).await {
                    return None;
                }
            }
        }
    }
}
