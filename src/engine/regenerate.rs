//! Regenerate with a note: a reviewer sends a proposal waiting for review back to the model with an
//! instruction ("shorter", "mention the material"), and gets a new proposal to review in seconds.
//!
//! The model is asked synchronously, by the process that took the request (the daemon serving the
//! UI and API, or `enrichd review regenerate`), with a realtime request even for a batch pipeline,
//! and for the one record alone even when the task packs records. The prompt is the task's own for
//! the record plus the previous answer and the note, fenced as data ([`Task::render_revision`]);
//! documents are sent again when the task reads them. The answer goes through the same judging as a
//! first answer (`super::enrich::judge`: schema, HTML cleaning, checks, look-ups, confidence). No
//! review policy approves it: a person asked, so it waits for review again. The store keeps it only
//! if the proposal the model was shown still waits (see [`crate::store::Store::regenerated`]).
//! No lease and no transaction is held while the model thinks; a failure leaves the item and its
//! proposal as they were, with a `regenerate_failed` event saying why.
//!
//! [`Task::render_revision`]: crate::task::Task::render_revision

use super::enrich::{Prepared, attach_documents, judge, request_for, schema_for};
use super::{Engine, Pipeline};
use crate::select::wanted_fields;
use crate::store::{Item, StoreError, Usage};

/// The longest note a reviewer can send, in characters: a request about an answer, not a document.
pub const MAX_NOTE_CHARS: usize = 1000;

/// Why a regeneration made no new proposal. In every case the item and its proposal are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RegenerateError {
    /// The note is not one that can be sent (too long, control characters).
    #[error("{0}")]
    Invalid(String),
    /// The item cannot be regenerated now (not waiting for review, its run's budget is spent, its
    /// pipeline is not configured, it changed while the model answered).
    #[error("{0}")]
    Refused(String),
    /// This process holds no model credentials (`enrichd daemon --ui-only`).
    #[error("{0}")]
    Unavailable(String),
    /// The model failed or answered unusably (said how).
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegenerateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(m) => RegenerateError::Refused(m),
            e @ StoreError::IllegalTransition { .. } => RegenerateError::Refused(e.to_string()),
            e => RegenerateError::Store(e),
        }
    }
}

/// Checks a reviewer's note: at most [`MAX_NOTE_CHARS`] characters, no control characters but line
/// breaks and tabs. Returns it trimmed; an empty note is allowed and asks for another try.
pub fn check_note(note: &str) -> Result<String, RegenerateError> {
    let note = note.replace("\r\n", "\n");
    let note = note.trim();
    let chars = note.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(RegenerateError::Invalid(format!(
            "note: {chars} characters; at most {MAX_NOTE_CHARS} (a request about the answer, like \"shorter, mention the material\")"
        )));
    }
    if note.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(RegenerateError::Invalid("note: control characters are not allowed".into()));
    }
    Ok(note.to_owned())
}

/// Sends item `id`, waiting for review, back to the model with the reviewer's `note`, and keeps the
/// new answer as its proposal (waiting for review again), by `actor`. Returns the item as it is now.
pub async fn regenerate(engine: &Engine, id: i64, note: &str, actor: &str) -> Result<Item, RegenerateError> {
    let note = check_note(note)?;
    let item = engine.store.item(id).await?;
    let refused = |why: String| RegenerateError::Refused(format!("item {id} (record {}): {why}", item.external_id));
    if !item.state.awaits_review() || item.proposal.is_none() {
        return Err(refused(format!(
            "it is {}; only a proposal waiting for review can be regenerated",
            item.state.plain()
        )));
    }
    if engine.looking_only {
        return Err(RegenerateError::Unavailable(format!(
            "item {id}: this daemon serves the review UI only (`enrichd daemon --ui-only`) and holds no model \
             credentials; regenerate from a daemon that runs pipelines, or with `enrichd review regenerate {id} --note \"…\"`"
        )));
    }
    let Some(pipeline) = engine.pipelines.get(&item.pipeline) else {
        return Err(refused(format!(
            "its pipeline {:?} is not in the config, so the model cannot be asked",
            item.pipeline
        )));
    };
    let run = engine.store.run(item.run_id).await?;
    if run.budget_reached() {
        return Err(refused(format!(
            "run {} has spent its budget ({} of ${:.4}); a regeneration would spend more",
            run.id,
            run.spent_text(),
            run.budget_micros.unwrap_or(0) as f64 / 1e6
        )));
    }
    // A process that did not start the run (the CLI) reads the platform's allowed values and the
    // organisation's facts the run started with, so the answer is judged as the first one was.
    pipeline.reload_allowed(&engine.store).await;
    let prepared = match prepare(engine, pipeline, &item).await? {
        Ok(prepared) => prepared,
        Err(why) => return Err(refused(why)),
    };
    let previous = item.proposal.as_ref().expect("checked above");
    let task = pipeline.task();
    let mut prompt = task
        .render_revision(&pipeline.config.entity, &prepared.record, &pipeline.config.vars, previous, &note)
        .map_err(RegenerateError::Refused)?;
    let pack = std::slice::from_ref(&prepared);
    attach_documents(&mut prompt, pack);
    let schema = schema_for(pipeline, pack);
    let request = request_for(pipeline, &prompt, &schema, 1);
    let started = std::time::Instant::now();
    let result = pipeline.provider.complete(&request).await;
    crate::telemetry::provider_request(
        &pipeline.config.provider,
        "complete",
        started.elapsed(),
        crate::telemetry::RequestOutcome::of(&result),
    );
    let completion = match result {
        Ok(c) => c,
        Err(e) => {
            let usage = realtime_usage(pipeline, e.usage);
            let message = format!("item {id}: the model did not answer: {}; the proposal is unchanged", e.message);
            engine.store.regenerate_failed(&item, actor, &note, &e.message, usage).await?;
            return Err(RegenerateError::Model(message));
        }
    };
    let usage = realtime_usage(pipeline, completion.usage);
    let proposal = match judge(pipeline, &prepared, &completion.answer).await {
        Ok(proposal) => proposal,
        Err(why) => {
            let message = format!("item {id}: the model's new answer is unusable: {why}; the proposal is unchanged");
            engine.store.regenerate_failed(&item, actor, &note, &why, usage).await?;
            return Err(RegenerateError::Model(message));
        }
    };
    match engine.store.regenerated(&item, &proposal, &completion.raw, usage, actor, &note).await {
        Ok(item) => Ok(item),
        Err(StoreError::Refused(why)) => {
            // The answer was paid for: its cost is counted even though it was not kept.
            engine.store.regenerate_failed(&item, actor, &note, &why, usage).await?;
            Err(RegenerateError::Refused(why))
        }
        Err(e) => Err(e.into()),
    }
}

/// The record of `item` as pulled, the fields it lacks, and its documents (the ones kept when it was
/// first enriched). `Ok(Err(why))` when it cannot be asked about again.
async fn prepare(engine: &Engine, pipeline: &Pipeline, item: &Item) -> Result<Result<Prepared, String>, StoreError> {
    let task = pipeline.task();
    let record = super::enrich::item_record(engine, &task, item).await?;
    let wanted = wanted_fields(&pipeline.config.select, task.fields.values(), &record);
    if wanted.is_empty() {
        return Ok(Err("the pipeline's selection finds nothing missing on this record now".into()));
    }
    let documents = match &task.documents {
        None => Vec::new(),
        Some(rule) => match super::documents::documents_for(engine, pipeline, item, &record.attachments, rule).await? {
            Ok(documents) => documents,
            Err(failure) => return Ok(Err(failure.message)),
        },
    };
    Ok(Ok(Prepared { item: item.clone(), record, wanted, documents }))
}

/// `usage` priced at the model's realtime price: a regeneration is a realtime request even in a
/// batch pipeline.
fn realtime_usage(pipeline: &Pipeline, usage: crate::provider::TokenUsage) -> Usage {
    let priced = pipeline.provider.cost_micros(&pipeline.config.model, usage);
    Usage {
        input_tokens: usage.input,
        output_tokens: usage.output,
        cost_micros: priced.unwrap_or(0),
        unpriced: priced.is_none() && (usage.input > 0 || usage.output > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_trimmed_limited_and_may_be_empty() {
        assert_eq!(check_note("  shorter, mention the material \r\n").unwrap(), "shorter, mention the material");
        assert_eq!(check_note("").unwrap(), "", "an empty note asks for another try");
        assert_eq!(check_note("line one\r\nline two").unwrap(), "line one\nline two");
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        let e = check_note(&long).unwrap_err().to_string();
        assert!(e.contains("1001 characters; at most 1000"), "{e}");
        assert!(check_note(&"é".repeat(MAX_NOTE_CHARS)).is_ok(), "characters are counted, not bytes");
        assert!(check_note("bell \u{7}").is_err());
    }
}
