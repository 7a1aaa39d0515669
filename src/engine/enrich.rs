//! Enrichment: claims queued items up to the pipeline's concurrency, asks the model (one record per
//! request, or several packed into one when the task sets `items_per_request`), validates the
//! answer, and records a proposal (approved at once when the review policy says so, see
//! [`approver`]) or a failure.
//! Batch mode (`batch.rs`) shares the preparing and judging done here.

use std::collections::BTreeSet;
use std::sync::Arc;

use enrichd_connector::{Record, Version};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Engine, Pipeline, pause};
use crate::config::{ReviewConfig, ReviewPolicy};
use crate::provider::{CompletionRequest, ProviderError, ProviderErrorKind, TokenUsage};
use crate::select::wanted_fields;
use crate::store::{Claim, EnrichFailure, Item, Proposal, ReviewPhase, StoreError, Usage, Work};
use crate::task::Prompt;

pub(super) async fn enrich_loop(
    engine: Arc<Engine>,
    pipeline: Arc<Pipeline>,
    only_run: Option<i64>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(pipeline.config.concurrency));
    let per_request = pipeline.task().items_per_request;
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
            limit: permits.len() * per_request,
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
        for pack in packs(items, per_request) {
            // More packs than permits can only happen when solo items split a claim: wait for a slot.
            let permit = match permits.pop() {
                Some(p) => p,
                None => slots.clone().acquire_owned().await.expect("semaphore is never closed"),
            };
            let (engine, pipeline) = (engine.clone(), pipeline.clone());
            tracker.spawn(async move {
                let ids: Vec<i64> = pack.iter().map(|i| i.id).collect();
                if let Err(e) = enrich_pack(&engine, &pipeline, pack).await {
                    for id in ids {
                        log_store_error(id, "enrichment", &e);
                    }
                }
                drop(permit);
            });
        }
    }
}

/// Groups claimed items into requests of up to `per_request` records: items marked solo go alone,
/// and a pack never holds the same record twice.
pub(super) fn packs(items: Vec<Item>, per_request: usize) -> Vec<Vec<Item>> {
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut open: Vec<Item> = Vec::new();
    let mut seen = BTreeSet::new();
    for item in items {
        if per_request <= 1 || item.solo {
            out.push(vec![item]);
            continue;
        }
        if open.len() == per_request || seen.contains(&item.external_id) {
            out.push(std::mem::take(&mut open));
            seen.clear();
        }
        seen.insert(item.external_id.clone());
        open.push(item);
    }
    if !open.is_empty() {
        out.push(open);
    }
    out
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

/// An item ready to be asked about: its record as pulled and the fields it lacks.
pub(super) struct Prepared {
    pub item: Item,
    pub record: Record,
    pub wanted: Vec<String>,
    /// The record's documents, when the task reads them (fetched once per item).
    pub documents: Vec<crate::document::Document>,
}

/// The record of `item` as pulled (its input snapshot and version), with the attachments kept at
/// discovery when `task` reads documents.
pub(super) async fn item_record(engine: &Engine, task: &crate::task::Task, item: &Item) -> Result<Record, StoreError> {
    Ok(Record {
        id: item.external_id.clone(),
        version: Version(item.record_version.clone()),
        fields: item.input_fields()?,
        // Read back only for tasks that read documents.
        attachments: match task.documents {
            Some(_) => engine.store.attachments_of(item.id).await?,
            None => Vec::new(),
        },
        native: None,
    })
}

/// Builds the record of a leased item and settles the items that need no model call (nothing
/// missing: skipped). Returns the rest.
pub(super) async fn prepare(
    engine: &Engine,
    pipeline: &Pipeline,
    items: Vec<Item>,
) -> Result<Vec<Prepared>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let task = pipeline.task();
        let record = item_record(engine, &task, &item).await?;
        let wanted = wanted_fields(&pipeline.config.select, task.fields.values(), &record);
        if wanted.is_empty() {
            engine.store.skip_leased(&item, &engine.owner, "nothing is missing").await?;
            continue;
        }
        let documents = match &task.documents {
            None => Vec::new(),
            Some(rule) => {
                match super::documents::documents_for(engine, pipeline, &item, &record.attachments, rule).await? {
                    Ok(documents) => documents,
                    Err(failure) => {
                        if let Some(pause) = &failure.pause {
                            super::pauses::pause_items(engine, pipeline, &[&item], pause).await;
                            continue;
                        }
                        // This item only: the others of the claim go on.
                        let recorded = EnrichFailure {
                            error: &failure.message,
                            retryable: failure.retryable,
                            retry_after: failure.retry_after,
                            raw_output: None,
                            usage: Usage::default(),
                        };
                        engine.store.fail_enrichment(&item, &engine.owner, recorded, engine.retry_policy()).await?;
                        continue;
                    }
                }
            }
        };
        out.push(Prepared { item, record, wanted, documents });
    }
    Ok(out)
}

/// The prompt for one request: the record's own, or a packed one. A template error is permanent
/// for every item of the request and is recorded here; `None` then.
pub(super) async fn prompt_for(
    engine: &Engine,
    pipeline: &Pipeline,
    pack: &[Prepared],
) -> Result<Option<Prompt>, StoreError> {
    let rendered = if pack.len() == 1 {
        pipeline.task().render(&pipeline.config.entity, &pack[0].record, &pipeline.config.vars)
    } else {
        let records: Vec<&Record> = pack.iter().map(|p| &p.record).collect();
        pipeline.task().render_pack(&pipeline.config.entity, &records, &pipeline.config.vars)
    };
    match rendered {
        Ok(mut p) => {
            attach_documents(&mut p, pack);
            Ok(Some(p))
        }
        Err(message) => {
            for p in pack {
                engine
                    .store
                    .fail_enrichment(&p.item, &engine.owner, EnrichFailure::permanent(&message), engine.retry_policy())
                    .await?;
            }
            Ok(None)
        }
    }
}

/// Sends the documents of `pack`'s records with `prompt`, listed at the end of its user message.
pub(super) fn attach_documents(prompt: &mut Prompt, pack: &[Prepared]) {
    let attached: Vec<(&str, &crate::document::Document)> =
        pack.iter().flat_map(|p| p.documents.iter().map(|d| (p.record.id.as_str(), d))).collect();
    if !attached.is_empty() {
        prompt.user.push_str(&super::documents::listing(&attached));
        prompt.documents = attached.into_iter().map(|(_, d)| d.clone()).collect();
    }
}

/// The answer schema for `pack`: only the properties that fill fields some record of the pack is
/// missing, packed when there is more than one record.
pub(super) fn schema_for(pipeline: &Pipeline, pack: &[Prepared]) -> Value {
    let mut wanted: Vec<String> = Vec::new();
    for field in pack.iter().flat_map(|p| &p.wanted) {
        if !wanted.contains(field) {
            wanted.push(field.clone());
        }
    }
    pipeline.task().request_schema(&wanted, pack.len())
}

/// The request for a prompt covering `records` records, answered in `schema` (see [`schema_for`]).
pub(super) fn request_for<'a>(
    pipeline: &'a Pipeline,
    prompt: &'a Prompt,
    schema: &'a Value,
    records: usize,
) -> CompletionRequest<'a> {
    CompletionRequest {
        model: &pipeline.config.model,
        prompt,
        schema_name: &pipeline.base_task.name,
        schema,
        max_output_tokens: pipeline.task().max_output_tokens.saturating_mul(records as u32),
        temperature: pipeline.task().temperature,
    }
}

/// Where an item's outcome is recorded from: a lease (realtime) or a batch.
#[derive(Debug, Clone, Copy)]
pub(super) enum Holder<'a> {
    Lease(&'a str),
    Batch { id: i64, actor: &'a str },
}

/// The proposal a reviewer sees for one record's answer: validated against the schema, HTML
/// cleaned, the task's checks as warnings, the look-ups done, with the answer's confidence. Every
/// answer goes through here, a first one or a regeneration's (`super::regenerate`). `Err`: why the
/// answer is unusable.
pub(super) async fn judge(pipeline: &Pipeline, prepared: &Prepared, answer: &Value) -> Result<Proposal, String> {
    let task = pipeline.task();
    task.validate_for(answer, &prepared.wanted)?;
    let mut proposal = task.proposal(&prepared.record, answer, &prepared.wanted, &pipeline.config.model);
    if proposal.fields.is_empty() {
        return Err(format!("the answer has no value for the missing fields ({})", prepared.wanted.join(", ")));
    }
    if super::lookup::needed(&task) {
        super::lookup::check(pipeline, prepared, &mut proposal).await;
    }
    // The answer's confidence goes with the proposal, for the review queue's confidence filter.
    proposal.confidence = confidence_property(&pipeline.config.review, &pipeline.base_task)
        .and_then(|property| answer.get(&property))
        .and_then(Value::as_f64);
    Ok(proposal)
}

/// Checks one record's answer and proposes it, or records why it is unusable (retried).
pub(super) async fn record_answer(
    engine: &Engine,
    pipeline: &Pipeline,
    holder: Holder<'_>,
    prepared: &Prepared,
    answer: &Value,
    raw: &str,
    usage: Usage,
) -> Result<(), StoreError> {
    match judge(pipeline, prepared, answer).await {
        Ok(proposal) => propose(engine, pipeline, holder, &prepared.item, &proposal, answer, raw, usage).await,
        Err(message) => {
            let message = format!("record {}: {message}", prepared.item.external_id);
            let failure =
                EnrichFailure { error: &message, retryable: true, retry_after: None, raw_output: Some(raw), usage };
            record_failure(engine, holder, &prepared.item, failure, true).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn propose(
    engine: &Engine,
    pipeline: &Pipeline,
    holder: Holder<'_>,
    item: &Item,
    proposal: &Proposal,
    answer: &Value,
    raw: &str,
    usage: Usage,
) -> Result<(), StoreError> {
    let released = match pipeline.config.review.policy {
        ReviewPolicy::SampleFirst => engine.store.run(item.run_id).await?.review_phase == Some(ReviewPhase::Released),
        _ => false,
    };
    let approve_as = approver(&pipeline.config.review, proposal, answer, released);
    match holder {
        Holder::Lease(owner) => engine.store.propose(item, owner, proposal, raw, usage, approve_as).await?,
        Holder::Batch { id, actor } => {
            engine.store.propose_batched(item, id, actor, proposal, raw, usage, approve_as).await?
        }
    };
    Ok(())
}

/// The answer property holding the model's confidence: `review.confidence_field`, else the task's
/// own `confidence` property when its output schema has one.
pub(crate) fn confidence_property(review: &ReviewConfig, task: &crate::task::Task) -> Option<String> {
    review
        .confidence_field
        .clone()
        .or_else(|| task.schema["properties"].get("confidence").map(|_| "confidence".to_owned()))
}

/// Who approves a new proposal without a human under the pipeline's review policy, if anyone:
/// `none` always; `sample_first` once the run's sample was released; `auto_approve` when no task
/// check warned and the answer's confidence (when configured) reaches the minimum. A released run's
/// gate is read before the proposal is stored, so a release racing it leaves the proposal waiting,
/// never approved early.
pub(super) fn approver(
    review: &ReviewConfig,
    proposal: &Proposal,
    answer: &Value,
    released: bool,
) -> Option<&'static str> {
    match review.policy {
        ReviewPolicy::All => None,
        ReviewPolicy::None => Some("policy:none"),
        ReviewPolicy::SampleFirst => released.then_some("policy:sample_first"),
        ReviewPolicy::AutoApprove => {
            let confident = match (&review.confidence_field, review.min_confidence) {
                (Some(field), Some(min)) => answer.get(field).and_then(Value::as_f64).is_some_and(|c| c >= min),
                _ => true,
            };
            (proposal.warnings.is_empty() && confident).then_some("policy:auto_approve")
        }
    }
}

/// Records a failed attempt for `item`.
pub(super) async fn record_failure(
    engine: &Engine,
    holder: Holder<'_>,
    item: &Item,
    failure: EnrichFailure<'_>,
    count_attempt: bool,
) -> Result<(), StoreError> {
    match holder {
        Holder::Lease(owner) => engine.store.fail_enrichment(item, owner, failure, engine.retry_policy()).await?,
        Holder::Batch { id, actor } => {
            engine.store.fail_batched(item, id, actor, failure, engine.retry_policy(), count_attempt).await?
        }
    };
    Ok(())
}

/// Records a provider error against every item of a request, each billed its share.
pub(super) async fn record_provider_error(
    engine: &Engine,
    pipeline: &Pipeline,
    holder: Holder<'_>,
    pack: &[Prepared],
    e: &ProviderError,
) -> Result<(), StoreError> {
    let usage = share(pipeline, e.usage, pack.len());
    for p in pack {
        let message = format!("record {}: {}", p.item.external_id, e.message);
        let failure = EnrichFailure {
            error: &message,
            retryable: e.retryable(),
            retry_after: e.retry_after,
            raw_output: e.raw.as_deref(),
            usage,
        };
        record_failure(engine, holder, &p.item, failure, e.kind != ProviderErrorKind::NotRun).await?;
    }
    Ok(())
}

/// `usage` priced on the pipeline's model and split evenly over `n` items.
pub(super) fn share(pipeline: &Pipeline, usage: TokenUsage, n: usize) -> Usage {
    let whole = pipeline.usage(usage);
    let n = n.max(1) as i64;
    Usage {
        input_tokens: whole.input_tokens / n,
        output_tokens: whole.output_tokens / n,
        cost_micros: whole.cost_micros / n,
        unpriced: whole.unpriced,
    }
}

/// Records the answer to a request for `pack`: one record's answer directly; a packed answer split
/// by id, where an item left out (or answered twice) goes back to the queue to be sent alone.
pub(super) async fn record_completion(
    engine: &Engine,
    pipeline: &Pipeline,
    holder: Holder<'_>,
    pack: &[Prepared],
    answer: &Value,
    raw: &str,
    usage: TokenUsage,
) -> Result<(), StoreError> {
    let usage = share(pipeline, usage, pack.len());
    if pack.len() == 1 {
        return record_answer(engine, pipeline, holder, &pack[0], answer, raw, usage).await;
    }
    let mut split = pipeline.task().unpack(answer);
    for p in pack {
        match split.remove(&p.item.external_id).as_deref() {
            Some([one]) => record_answer(engine, pipeline, holder, p, one, raw, usage).await?,
            other => {
                let reason = format!(
                    "record {}: the packed answer {} it; it will be sent on its own",
                    p.item.external_id,
                    if other.is_none() { "left out" } else { "answered more than once for" }
                );
                match holder {
                    Holder::Lease(owner) => {
                        engine.store.requeue_solo(&p.item, owner, &reason).await?;
                    }
                    Holder::Batch { .. } => {
                        let failure = EnrichFailure {
                            error: &reason,
                            retryable: true,
                            retry_after: None,
                            raw_output: Some(raw),
                            usage,
                        };
                        record_failure(engine, holder, &p.item, failure, false).await?;
                        engine.store.mark_solo(p.item.id).await?;
                    }
                }
            }
        }
    }
    if !split.is_empty() {
        tracing::warn!(pipeline = %pipeline.name, ids = ?split.keys().collect::<Vec<_>>(), "the packed answer held ids that were not asked about; ignored");
    }
    Ok(())
}

async fn enrich_pack(engine: &Engine, pipeline: &Pipeline, items: Vec<Item>) -> Result<(), StoreError> {
    let pack = prepare(engine, pipeline, items).await?;
    if pack.is_empty() {
        return Ok(());
    }
    let Some(prompt) = prompt_for(engine, pipeline, &pack).await? else {
        return Ok(());
    };
    let schema = schema_for(pipeline, &pack);
    let request = request_for(pipeline, &prompt, &schema, pack.len());
    let holder = Holder::Lease(&engine.owner);
    let started = std::time::Instant::now();
    let result = pipeline.provider.complete(&request).await;
    crate::telemetry::provider_request(
        &pipeline.config.provider,
        "complete",
        started.elapsed(),
        crate::telemetry::RequestOutcome::of(&result),
    );
    match result {
        Ok(c) => record_completion(engine, pipeline, holder, &pack, &c.answer, &c.raw, c.usage).await,
        Err(e) => record_provider_error(engine, pipeline, holder, &pack, &e).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::approver;
    use crate::config::{ReviewConfig, ReviewPolicy};
    use crate::store::Proposal;

    fn proposal(warnings: &[&str]) -> Proposal {
        Proposal {
            fields: BTreeMap::new(),
            model: "m".into(),
            task_version: "1".into(),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            ..Default::default()
        }
    }

    fn review(policy: ReviewPolicy) -> ReviewConfig {
        ReviewConfig { policy, ..Default::default() }
    }

    #[test]
    fn all_and_none_ignore_the_answer() {
        let clean = proposal(&[]);
        assert_eq!(approver(&review(ReviewPolicy::All), &clean, &json!({}), true), None);
        assert_eq!(approver(&review(ReviewPolicy::None), &proposal(&["x"]), &json!({}), false), Some("policy:none"));
    }

    #[test]
    fn sample_first_approves_only_after_the_release() {
        let r = review(ReviewPolicy::SampleFirst);
        assert_eq!(approver(&r, &proposal(&[]), &json!({}), false), None);
        assert_eq!(approver(&r, &proposal(&[]), &json!({}), true), Some("policy:sample_first"));
    }

    #[test]
    fn auto_approve_needs_clean_checks_and_enough_confidence() {
        let plain = review(ReviewPolicy::AutoApprove);
        assert_eq!(approver(&plain, &proposal(&[]), &json!({}), false), Some("policy:auto_approve"));
        assert_eq!(approver(&plain, &proposal(&["seo_title: too long"]), &json!({}), false), None);
        let confident = ReviewConfig {
            confidence_field: Some("confidence".into()),
            min_confidence: Some(0.8),
            ..review(ReviewPolicy::AutoApprove)
        };
        let p = proposal(&[]);
        assert_eq!(approver(&confident, &p, &json!({"confidence": 0.8}), false), Some("policy:auto_approve"));
        assert_eq!(approver(&confident, &p, &json!({"confidence": 0.79}), false), None);
        assert_eq!(approver(&confident, &p, &json!({}), false), None, "no confidence reported: waits");
        assert_eq!(approver(&confident, &p, &json!({"confidence": "high"}), false), None);
        assert_eq!(approver(&confident, &proposal(&["w"]), &json!({"confidence": 0.99}), false), None);
    }
}
