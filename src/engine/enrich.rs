//! Enrichment: claims queued items up to the pipeline's concurrency, asks the model, validates the
//! answer, and records a proposal (approved at once under `review.policy = "none"`) or a failure.

use std::sync::Arc;

use enrichd_connector::{Record, Version};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Engine, Pipeline, pause};
use crate::config::ReviewPolicy;
use crate::provider::CompletionRequest;
use crate::select::wanted_fields;
use crate::store::{Claim, EnrichFailure, Item, StoreError, Work};

pub(super) async fn enrich_loop(
    engine: Arc<Engine>,
    pipeline: Arc<Pipeline>,
    only_run: Option<i64>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(pipeline.config.concurrency));
    loop {
        // Wait for at least one free slot, then take every free one.
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let claim = Claim {
            pipeline: &pipeline.name,
            run_id: only_run,
            work: Work::Enrich,
            owner: &engine.owner,
            limit: permits.len(),
            lease: engine.lease(),
        };
        let items = match engine.store.claim(&claim).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, error = %e, "claiming items to enrich failed");
                Vec::new()
            }
        };
        if items.is_empty() {
            drop(permits);
            if !pause(&stop, engine.poll()).await {
                break;
            }
            continue;
        }
        for item in items {
            let permit = permits.pop().expect("claimed no more items than permits");
            let (engine, pipeline) = (engine.clone(), pipeline.clone());
            tracker.spawn(async move {
                let id = item.id;
                if let Err(e) = enrich(&engine, &pipeline, item).await {
                    log_store_error(id, "enrichment", &e);
                }
                drop(permit);
            });
        }
    }
}

pub(super) fn log_store_error(item: i64, phase: &str, e: &StoreError) {
    match e {
        StoreError::LeaseLost { .. } | StoreError::IllegalTransition { .. } => {
            tracing::warn!(item, error = %e, "{phase} result discarded: the item moved on without us")
        }
        _ => {
            tracing::error!(item, error = %e, "recording the {phase} result failed; the lease will expire and the item will be retried")
        }
    }
}

async fn enrich(engine: &Engine, pipeline: &Pipeline, item: Item) -> Result<(), StoreError> {
    let store = &engine.store;
    let owner = engine.owner.as_str();
    let record = Record {
        id: item.external_id.clone(),
        version: Version(item.record_version.clone()),
        fields: item.input_fields()?,
        attachments: Vec::new(),
    };
    let wanted = wanted_fields(&pipeline.config.select, pipeline.task.fields.values(), &record);
    if wanted.is_empty() {
        store.skip_leased(&item, owner, "nothing is missing").await?;
        return Ok(());
    }
    let prompt = match pipeline.task.render(&pipeline.config.entity, &record) {
        Ok(p) => p,
        Err(message) => {
            store.fail_enrichment(&item, owner, EnrichFailure::permanent(&message), engine.retry_policy()).await?;
            return Ok(());
        }
    };
    let request = CompletionRequest {
        model: &pipeline.config.model,
        prompt: &prompt,
        schema_name: &pipeline.task.name,
        schema: &pipeline.task.schema,
        max_output_tokens: pipeline.task.max_output_tokens,
        temperature: pipeline.task.temperature,
    };
    let completion = match pipeline.provider.complete(&request).await {
        Ok(c) => c,
        Err(e) => {
            let usage = pipeline.usage(e.usage);
            let message = format!("record {}: {}", item.external_id, e.message);
            store
                .fail_enrichment(
                    &item,
                    owner,
                    EnrichFailure {
                        error: &message,
                        retryable: e.retryable(),
                        retry_after: e.retry_after,
                        raw_output: e.raw.as_deref(),
                        usage,
                    },
                    engine.retry_policy(),
                )
                .await?;
            return Ok(());
        }
    };
    let usage = pipeline.usage(completion.usage);
    // An answer that breaks the schema or fills none of the missing fields is unusable: retried.
    let checked = pipeline.task.validate(&completion.answer).and_then(|()| {
        let proposal = pipeline.task.proposal(&record, &completion.answer, &wanted, &pipeline.config.model);
        if proposal.fields.is_empty() {
            Err(format!("the answer has no value for the missing fields ({})", wanted.join(", ")))
        } else {
            Ok(proposal)
        }
    });
    match checked {
        Ok(proposal) => {
            let approve_as = (pipeline.config.review.policy == ReviewPolicy::None).then_some("policy:none");
            store.propose(&item, owner, &proposal, &completion.raw, usage, approve_as).await?;
        }
        Err(message) => {
            let message = format!("record {}: {message}", item.external_id);
            let failure = EnrichFailure {
                error: &message,
                retryable: true,
                retry_after: None,
                raw_output: Some(&completion.raw),
                usage,
            };
            store.fail_enrichment(&item, owner, failure, engine.retry_policy()).await?;
        }
    }
    Ok(())
}
