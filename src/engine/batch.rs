//! Batch mode (`mode = "batch"`): queued items go to the provider's batch API instead of one
//! request each, at about half the price.
//!
//! The order of things is what makes it safe to kill the daemon at any point:
//! 1. items are claimed under a lease, rendered, and cut into batches at the provider's limits;
//! 2. each batch is written to the store (`preparing`, items `batched`) before anything is sent;
//! 3. the batch is submitted, tagged with our batch name, and the provider's id is stored at once;
//! 4. any daemon polls submitted batches; when one ends, each result line settles only its own
//!    items, and items the results do not mention (expired, cancelled) are re-queued.
//!
//! A crash between 2 and 3 leaves a `preparing` batch: once its lease runs out, another daemon
//! asks the provider for a batch with that tag (OpenAI metadata, Gemini display name) and adopts
//! it, or — when there is none — puts the items back in the queue. Nothing is submitted twice
//! where the provider can be asked; Anthropic batches carry no tag, so a crash in the instant
//! between Anthropic accepting a batch and the store recording its id re-queues those items.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::enrich::{
    Holder, Prepared, log_store_error, packs, prepare, prompt_for, record_completion, record_failure,
    record_provider_error, request_for, schema_for,
};
use super::{Engine, Pipeline, pause};
use crate::provider::{BatchLimits, BatchPoll, ProviderErrorKind};
use crate::store::{BatchRow, Claim, EnrichFailure, NewBatch, StoreError, Work, now_ms};

pub(super) async fn batch_loop(
    engine: Arc<Engine>,
    pipeline: Arc<Pipeline>,
    only_run: Option<i64>,
    stop: CancellationToken,
) {
    let Some(limits) = pipeline.provider.batch_limits() else {
        tracing::error!(pipeline = %pipeline.name, "the provider has no batch API; batch mode cannot run");
        return;
    };
    loop {
        if let Err(e) = recover_orphans(&engine, &pipeline).await {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "recovering unsubmitted batches failed");
        }
        match submit_ready(&engine, &pipeline, only_run, limits).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(pipeline = %pipeline.name, error = %e, "submitting a batch failed"),
        }
        if let Err(e) = poll_due(&engine, &pipeline).await {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "polling batches failed");
        }
        if !pause(&stop, engine.poll()).await {
            break;
        }
    }
}

fn poll_interval(pipeline: &Pipeline) -> Duration {
    Duration::from_secs_f64(pipeline.batch_poll_seconds.max(0.01))
}

/// Submits batches while there is enough queued work: a full batch, or whatever is queued once
/// discovery has finished.
async fn submit_ready(
    engine: &Engine,
    pipeline: &Pipeline,
    only_run: Option<i64>,
    limits: BatchLimits,
) -> Result<usize, StoreError> {
    let per_line = pipeline.task().items_per_request.max(1);
    let max_items = limits.max_requests.saturating_mul(per_line);
    let mut submitted = 0;
    loop {
        let (queued, discovering) = engine.store.batch_backlog(&pipeline.name, only_run).await?;
        if queued == 0 || (discovering && (queued as usize) < max_items) {
            return Ok(submitted);
        }
        let claim = Claim {
            pipeline: &pipeline.name,
            run_id: only_run,
            work: Work::Enrich,
            owner: &engine.owner,
            limit: max_items.min(queued as usize),
            lease: engine.lease(),
        };
        let items = engine.store.claim(&claim).await?;
        if items.is_empty() {
            return Ok(submitted);
        }
        // Lines are built per run: a batch belongs to one run.
        let mut by_run: std::collections::BTreeMap<i64, Vec<crate::store::Item>> = Default::default();
        for item in items {
            by_run.entry(item.run_id).or_default().push(item);
        }
        for (run_id, items) in by_run {
            submitted += submit_run_items(engine, pipeline, run_id, items, limits).await?;
        }
    }
}

/// One line of a batch being built.
struct Line {
    custom_id: String,
    body: serde_json::Value,
    bytes: usize,
    pack: Vec<Prepared>,
}

async fn submit_run_items(
    engine: &Engine,
    pipeline: &Pipeline,
    run_id: i64,
    items: Vec<crate::store::Item>,
    limits: BatchLimits,
) -> Result<usize, StoreError> {
    let mut lines = Vec::new();
    for pack in packs(items, pipeline.task().items_per_request) {
        let pack = prepare(engine, pipeline, pack).await?;
        if pack.is_empty() {
            continue;
        }
        let Some(prompt) = prompt_for(engine, pipeline, &pack).await? else { continue };
        // Each item's documents fit (checked when prepared); a packed line's together may not.
        if let Err(breach) = pipeline.provider.check_documents(&prompt.documents) {
            let e = crate::provider::permanent(breach);
            record_provider_error(engine, pipeline, Holder::Lease(&engine.owner), &pack, &e).await?;
            continue;
        }
        let schema = schema_for(pipeline, &pack);
        let request = request_for(pipeline, &prompt, &schema, pack.len());
        // Provider custom ids allow [a-zA-Z0-9_-]{1,64}: the first item's id names the line.
        let custom_id = format!("item-{}", pack[0].item.id);
        let body = pipeline.provider.batch_line(&custom_id, &request);
        let bytes = body.to_string().len() + 1;
        lines.push(Line { custom_id, body, bytes, pack });
    }
    // Cut at the provider's limits.
    let mut chunks: Vec<Vec<Line>> = Vec::new();
    let (mut count, mut size) = (0usize, 0usize);
    for line in lines {
        if chunks.is_empty() || count == limits.max_requests || size + line.bytes > limits.max_bytes {
            chunks.push(Vec::new());
            count = 0;
            size = 0;
        }
        count += 1;
        size += line.bytes;
        chunks.last_mut().expect("pushed above").push(line);
    }
    let mut sent = 0;
    for chunk in chunks {
        if chunk.is_empty() {
            continue;
        }
        submit_chunk(engine, pipeline, run_id, chunk).await?;
        sent += 1;
    }
    Ok(sent)
}

async fn submit_chunk(engine: &Engine, pipeline: &Pipeline, run_id: i64, chunk: Vec<Line>) -> Result<(), StoreError> {
    let tag = format!("enrichd-{}-{}", run_id, &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let members: Vec<(i64, String)> =
        chunk.iter().flat_map(|l| l.pack.iter().map(|p| (p.item.id, l.custom_id.clone()))).collect();
    let bytes: usize = chunk.iter().map(|l| l.bytes).sum();
    let batch = NewBatch {
        run_id,
        pipeline: &pipeline.name,
        provider: &pipeline.config.provider,
        model: &pipeline.config.model,
        tag: &tag,
        items: &members,
        lines: chunk.len(),
        bytes,
        // Uploading can take a while for big batches; others wait this long before taking over.
        lease: engine.lease().max(Duration::from_secs(120)),
    };
    let batch_id = engine.store.prepare_batch(&engine.owner, &batch).await?;
    let bodies: Vec<serde_json::Value> = chunk.iter().map(|l| l.body.clone()).collect();
    let started = std::time::Instant::now();
    let submitted = pipeline.provider.submit_batch(&tag, &pipeline.config.model, &bodies).await;
    let outcome = crate::telemetry::RequestOutcome::of(&submitted);
    crate::telemetry::provider_request(&pipeline.config.provider, "batch_submit", started.elapsed(), outcome);
    match submitted {
        Ok(provider_id) => {
            let first_poll = now_ms() + poll_interval(pipeline).as_millis() as i64;
            engine.store.batch_submitted(batch_id, &provider_id, first_poll).await?;
            tracing::info!(pipeline = %pipeline.name, run = run_id, batch = batch_id, provider_batch = %provider_id,
                lines = chunk.len(), items = members.len(), bytes, "batch submitted");
        }
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, batch = batch_id, error = %e, "the provider refused the batch");
            let actor = format!("batch:{}", engine.owner);
            let holder = Holder::Batch { id: batch_id, actor: &actor };
            for line in &chunk {
                record_provider_error(engine, pipeline, holder, &line.pack, &e).await?;
            }
            engine.store.end_batch(batch_id, "failed", &e.message).await?;
        }
    }
    Ok(())
}

/// Polls the pipeline's batches that are due, settling the ones that ended.
async fn poll_due(engine: &Engine, pipeline: &Pipeline) -> Result<(), StoreError> {
    let next = now_ms() + poll_interval(pipeline).as_millis() as i64;
    for batch in engine.store.batches_due(&pipeline.name, next, 20).await? {
        let Some(provider_id) = batch.provider_batch_id.clone() else { continue };
        let per_line_tokens =
            pipeline.task().max_output_tokens.saturating_mul(pipeline.task().items_per_request as u32);
        let started = std::time::Instant::now();
        let polled = pipeline.provider.poll_batch(&provider_id, per_line_tokens).await;
        let outcome = crate::telemetry::RequestOutcome::of(&polled);
        crate::telemetry::provider_request(&pipeline.config.provider, "batch_poll", started.elapsed(), outcome);
        match polled {
            Ok(BatchPoll::Running) => {}
            Ok(BatchPoll::Ended { status, results }) => settle(engine, pipeline, &batch, &status, results).await?,
            Ok(BatchPoll::Failed { message }) => {
                let e = crate::provider::ProviderError {
                    kind: ProviderErrorKind::Transient,
                    message: message.clone(),
                    retry_after: None,
                    raw: None,
                    usage: Default::default(),
                };
                let actor = format!("batch:{}", engine.owner);
                let holder = Holder::Batch { id: batch.id, actor: &actor };
                let items = engine.store.batch_items(batch.id).await?;
                let pack: Vec<Prepared> = prepared_again(engine, pipeline, items).await?;
                record_provider_error(engine, pipeline, holder, &pack, &e).await?;
                engine.store.end_batch(batch.id, "failed", &message).await?;
            }
            Err(e) if e.kind == ProviderErrorKind::Permanent => {
                tracing::error!(pipeline = %pipeline.name, batch = batch.id, error = %e, "polling the batch failed for good");
            }
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, batch = batch.id, error = %e, "polling the batch failed; will retry")
            }
        }
    }
    Ok(())
}

/// Rebuilds the prepared form of batched items (their record, missing fields and kept documents;
/// nothing is fetched again).
async fn prepared_again(
    engine: &Engine,
    pipeline: &Pipeline,
    items: Vec<crate::store::Item>,
) -> Result<Vec<Prepared>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let record = enrichd_connector::Record {
            id: item.external_id.clone(),
            version: enrichd_connector::Version(item.record_version.clone()),
            fields: item.input_fields()?,
            attachments: Vec::new(),
            native: None,
        };
        let wanted = crate::select::wanted_fields(&pipeline.config.select, pipeline.task().fields.values(), &record);
        let documents = match pipeline.task().documents {
            Some(_) => super::documents::kept_documents(engine, &item).await?,
            None => Vec::new(),
        };
        out.push(Prepared { item, record, wanted, documents });
    }
    Ok(out)
}

/// Applies an ended batch's results: each line settles its own items; items without a line are
/// re-queued without using up an attempt (the batch expired or was cancelled before reaching them).
async fn settle(
    engine: &Engine,
    pipeline: &Pipeline,
    batch: &BatchRow,
    status: &str,
    results: Vec<crate::provider::BatchResult>,
) -> Result<(), StoreError> {
    let actor = format!("batch:{}", engine.owner);
    let holder = Holder::Batch { id: batch.id, actor: &actor };
    let items = engine.store.batch_items(batch.id).await?;
    let mut by_line: std::collections::BTreeMap<String, Vec<crate::store::Item>> = Default::default();
    for item in items {
        by_line.entry(item.batch_line.clone().unwrap_or_default()).or_default().push(item);
    }
    let (mut answered, mut failed, mut not_run) = (0usize, 0usize, 0usize);
    for result in results {
        let Some(items) = by_line.remove(&result.custom_id) else {
            tracing::warn!(batch = batch.id, line = %result.custom_id, "a result for a line this batch does not hold (or already settled); ignored");
            continue;
        };
        let pack = prepared_again(engine, pipeline, items).await?;
        let outcome = match result.outcome {
            Ok(c) => {
                answered += 1;
                record_completion(engine, pipeline, holder, &pack, &c.answer, &c.raw, c.usage).await
            }
            Err(e) => {
                if e.kind == ProviderErrorKind::NotRun {
                    not_run += 1;
                } else {
                    failed += 1;
                }
                record_provider_error(engine, pipeline, holder, &pack, &e).await
            }
        };
        if let Err(e) = outcome {
            for p in &pack {
                log_store_error(p.item.id, "batch result", &e);
            }
        }
    }
    let missing: usize = by_line.values().map(Vec::len).sum();
    for (line, items) in by_line {
        for item in items {
            let reason = format!(
                "record {}: no result in batch {} ({status}, line {line}); queued again",
                item.external_id, batch.tag
            );
            let failure = EnrichFailure {
                error: &reason,
                retryable: true,
                retry_after: None,
                raw_output: None,
                usage: Default::default(),
            };
            if let Err(e) = record_failure(engine, holder, &item, failure, false).await {
                log_store_error(item.id, "batch result", &e);
            }
        }
    }
    let detail = format!(
        "{status}: {answered} lines answered, {failed} failed, {not_run} not run by the provider; \
         {missing} items without a result; items not run or without a result are queued again"
    );
    tracing::info!(pipeline = %pipeline.name, batch = batch.id, "{detail}");
    engine.store.end_batch(batch.id, "ended", &detail).await
}

/// Takes over `preparing` batches whose submitter vanished: adopts the provider's batch when it
/// can find it by tag, otherwise re-queues the items.
async fn recover_orphans(engine: &Engine, pipeline: &Pipeline) -> Result<(), StoreError> {
    for batch in engine.store.orphaned_batches(&pipeline.name, &engine.owner, Duration::from_secs(120)).await? {
        match pipeline.provider.find_batch(&batch.tag).await {
            Ok(Some(provider_id)) => {
                tracing::warn!(batch = batch.id, provider_batch = %provider_id, "adopted a batch submitted just before a crash");
                engine.store.batch_submitted(batch.id, &provider_id, now_ms()).await?;
            }
            Ok(None) => {
                tracing::warn!(batch = batch.id, tag = %batch.tag, "a batch never reached the provider; its items are queued again");
                let actor = format!("batch:{}", engine.owner);
                let holder = Holder::Batch { id: batch.id, actor: &actor };
                for item in engine.store.batch_items(batch.id).await? {
                    let reason =
                        format!("record {}: batch {} was not submitted; queued again", item.external_id, batch.tag);
                    let failure = EnrichFailure {
                        error: &reason,
                        retryable: true,
                        retry_after: None,
                        raw_output: None,
                        usage: Default::default(),
                    };
                    record_failure(engine, holder, &item, failure, false).await?;
                }
                engine.store.end_batch(batch.id, "abandoned", "never reached the provider").await?;
            }
            Err(e) => {
                tracing::warn!(batch = batch.id, error = %e, "could not ask the provider about an unsubmitted batch")
            }
        }
    }
    Ok(())
}
