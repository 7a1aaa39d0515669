//! `enrichd review list|show|approve|reject|edit|regenerate|release` and `enrichd revert`: the
//! review queue and undo from a terminal, over the same store and engine calls as the JSON API. Decisions carry
//! the reviewer's name (`--as NAME`, or `ENRICHD_REVIEWER`) into the audit trail.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Failure, config_error, failed, open_store};
use crate::config::Config;
use crate::engine::{Engine, RevertOutcome, revert, revert_run, tally};
use crate::store::{Item, ReviewAction, ReviewFilter, Store, StoreError, plain_actor, plain_event, reviewer_name};
use crate::task::Task;

/// Which items: the queue's filters.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct Selection {
    /// Only this run's items.
    #[arg(long)]
    run: Option<i64>,
    /// Only this pipeline's items.
    #[arg(long)]
    pipeline: Option<String>,
    /// `state=STATE[,STATE…]` (default: proposed,edited), `warnings=yes|no`, `text=WORDS`,
    /// `proposed=FIELD=VALUE` (the value the item would write, e.g. `proposed=custom.Category=billing`),
    /// `confidence=LOW..HIGH` (either end open: `..0.5`, `0.5..0.8`, `0.8..`); repeat for several.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
}

impl Selection {
    fn filter(&self) -> Result<ReviewFilter, Failure> {
        let mut filter = ReviewFilter { pipeline: self.pipeline.clone(), run_id: self.run, ..Default::default() };
        for f in &self.filters {
            let Some((key, value)) = f.split_once('=') else {
                return Err(config_error(format!(
                    "--filter {f:?}: expected KEY=VALUE (state, warnings, text, proposed or confidence)"
                )));
            };
            match key.trim() {
                "state" => {
                    for s in value.split(',') {
                        filter.states.push(s.trim().parse().map_err(|e| config_error(format!("--filter state: {e}")))?);
                    }
                }
                "warnings" => {
                    filter.warnings = Some(match value.trim() {
                        "yes" | "true" => true,
                        "no" | "false" => false,
                        other => return Err(config_error(format!("--filter warnings: {other:?} is not yes or no"))),
                    })
                }
                "text" => filter.text = Some(value.to_owned()),
                "proposed" => {
                    filter.proposed = Some(value.parse().map_err(|e| config_error(format!("--filter proposed: {e}")))?)
                }
                "confidence" => {
                    filter.confidence =
                        Some(value.parse().map_err(|e| config_error(format!("--filter confidence: {e}")))?)
                }
                other => {
                    return Err(config_error(format!(
                        "--filter {other:?}: unknown key; use state, warnings, text, proposed or confidence"
                    )));
                }
            }
        }
        Ok(filter)
    }
}

#[derive(Subcommand)]
pub(super) enum ReviewCommand {
    /// The queue: proposals waiting for review (or the `--filter state=` asked for), oldest first.
    List {
        #[command(flatten)]
        selection: Selection,
        /// Show at most this many items.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print the items, the total and the sample's progress as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One item: its proposal (value at pull time, proposed, edited) and every event of its history.
    Show {
        /// The item's id (from `review list`).
        item: i64,
        /// Print the item and its events as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve the given items, or everything matching the filters (count first: `--confirm N`).
    Approve {
        /// Item ids; without them, every item matching the filters.
        items: Vec<i64>,
        #[command(flatten)]
        selection: Selection,
        /// The count of matching items you were shown; without it nothing is changed.
        #[arg(long)]
        confirm: Option<i64>,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject the given items, or everything matching the filters (count first: `--confirm N`).
    Reject {
        /// Item ids; without them, every item matching the filters.
        items: Vec<i64>,
        #[command(flatten)]
        selection: Selection,
        /// The count of matching items you were shown; without it nothing is changed.
        #[arg(long)]
        confirm: Option<i64>,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change one proposed field before approving it. The value is held to what the model's answer
    /// is held to: HTML fields cleaned, validated against the task's schema (exit 2 when it does not
    /// fit), and the task's check warnings recomputed.
    Edit {
        /// The item whose proposal to change.
        item: i64,
        /// The record field (e.g. `description`), or the task property mapped to it.
        field: String,
        /// The new value: text, or JSON with `--json-value`.
        value: String,
        /// Read VALUE as JSON (a list for `tags`, say).
        #[arg(long)]
        json_value: bool,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
    },
    /// Send a proposal waiting for review back to the model with a note ("shorter", "mention the
    /// material"): the model gets its previous answer (edits included) and the note, and its new
    /// proposal replaces the old one (kept in the history) and waits for review again. The model is
    /// asked from here, with the config's provider credentials; the cost counts against the run.
    Regenerate {
        /// The item whose proposal to regenerate.
        item: i64,
        /// What to change, for the model (at most 1,000 characters; empty: just try again).
        #[arg(long, default_value = "")]
        note: String,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Print the item with its new proposal as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a `sample_first` run held after its sample: the rest is enriched and approved as it
    /// arrives. Needs every sample proposal reviewed, or `--force --reason "…"`.
    Release {
        /// The run whose sample gate opens.
        #[arg(long)]
        run: i64,
        /// Your name, for the audit trail.
        #[arg(long = "as", env = "ENRICHD_REVIEWER", value_name = "NAME")]
        reviewer: String,
        /// Release before the whole sample is reviewed (needs `--reason`; both go into the audit trail).
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why the sample is released before it is reviewed (with `--force`).
        #[arg(long, requires = "force", value_name = "TEXT")]
        reason: Option<String>,
        /// Print the run and its sample as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ReviewCommand {
    /// Whether the command asks a model (and so needs the config's secrets).
    pub(super) fn connects(&self) -> bool {
        matches!(self, ReviewCommand::Regenerate { .. })
    }
}

/// The task of `pipeline` as configured now: what an edit of its proposals is held to.
fn task_of(config: &Config, pipeline: &str) -> Result<Task, Failure> {
    let p = config.pipelines.get(pipeline).ok_or_else(|| {
        failed(format!("pipeline {pipeline:?} is not in the config, so an edit of its proposals cannot be checked"))
    })?;
    let cfg = config
        .tasks
        .get(&p.task)
        .ok_or_else(|| config_error(format!("pipelines.{pipeline}.task: no task {:?}", p.task)))?;
    Task::build(&p.task, cfg).map_err(|(key, m)| config_error(format!("tasks.{}.{key}: {m}", p.task)))
}

fn store_failure(e: StoreError) -> Failure {
    failed(e.to_string())
}

fn actor(name: &str) -> Result<String, Failure> {
    reviewer_name(name).map_err(|m| config_error(format!("--as: {m}")))
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable"));
}

pub(super) async fn review(config: &Config, command: ReviewCommand) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let result = dispatch(config, &store, command).await;
    store.close().await;
    result
}

async fn dispatch(config: &Config, store: &Store, command: ReviewCommand) -> Result<(), Failure> {
    match command {
        ReviewCommand::List { selection, limit, json } => list(store, &selection, limit, json).await,
        ReviewCommand::Show { item, json } => show(store, item, json).await,
        ReviewCommand::Approve { items, selection, confirm, reviewer, json } => {
            decide(store, ReviewAction::Approve, items, &selection, confirm, &actor(&reviewer)?, json).await
        }
        ReviewCommand::Reject { items, selection, confirm, reason, reviewer, json } => {
            let action = ReviewAction::Reject { reason };
            decide(store, action, items, &selection, confirm, &actor(&reviewer)?, json).await
        }
        ReviewCommand::Edit { item, field, value, json_value, reviewer } => {
            let value = if json_value {
                serde_json::from_str(&value).map_err(|e| config_error(format!("value: not JSON: {e}")))?
            } else {
                Value::String(value)
            };
            let actor = actor(&reviewer)?;
            let pipeline = store.item(item).await.map_err(store_failure)?.pipeline;
            let task = task_of(config, &pipeline)?;
            let item = store.edit(item, &actor, &task, &field, value).await.map_err(|e| match e {
                StoreError::Invalid(m) => config_error(m),
                e => store_failure(e),
            })?;
            let proposal = item.proposal.as_ref().expect("an edited item has a proposal");
            println!("item {} {}: {field} edited", item.id, item.state.plain());
            for w in &proposal.warnings {
                println!("  warning: {w}");
            }
            Ok(())
        }
        ReviewCommand::Regenerate { item, note, reviewer, json } => {
            regenerate(config, store, item, &note, &actor(&reviewer)?, json).await
        }
        ReviewCommand::Release { run, reviewer, force, reason, json } => {
            let anyway = if force { reason.as_deref() } else { None };
            let released = store.release_sample(run, &actor(&reviewer)?, anyway).await.map_err(|e| match e {
                e @ StoreError::SampleNotReviewed { .. } => failed(format!("{e} (--force --reason \"…\")")),
                StoreError::Invalid(m) => config_error(format!("--reason: {m}")),
                e => store_failure(e),
            })?;
            let stats = store.sample_stats(run).await.map_err(store_failure)?;
            if json {
                print_json(&json!({ "run": released, "sample": stats }));
            } else {
                match &stats.released_unreviewed {
                    Some(unreviewed) => println!("run {run} {unreviewed}"),
                    None => println!(
                        "run {run} released by {}",
                        plain_actor(released.released_by.as_deref().unwrap_or_default())
                    ),
                }
                println!("the rest of the run is enriched and approved as it arrives");
            }
            Ok(())
        }
    }
}

/// `enrichd review regenerate`: asks the model from this process (see `crate::engine::regenerate`)
/// and prints the new proposal. Exit 1 when it is refused or the model fails (nothing changed), 2
/// for a note that cannot be sent.
async fn regenerate(
    config: &Config,
    store: &Store,
    id: i64,
    note: &str,
    actor: &str,
    as_json: bool,
) -> Result<(), Failure> {
    let engine = Engine::build(config, store.clone());
    let item = crate::engine::regenerate(&engine, id, note, actor).await.map_err(|e| match e {
        crate::engine::RegenerateError::Invalid(m) => config_error(format!("--note: {m}")),
        e => failed(e.to_string()),
    })?;
    if as_json {
        print_json(&json!({ "item": item }));
        return Ok(());
    }
    println!("item {} regenerated by {actor}: {}", item.id, item.state.plain());
    if let Some(p) = &item.proposal {
        for (field, change) in &p.fields {
            println!("  {field}");
            println!("    proposed: {}", full(&change.proposed));
        }
        for w in &p.warnings {
            println!("  warning: {w}");
        }
    }
    println!("the previous proposal and the note are in the history (`enrichd review show {}`)", item.id);
    Ok(())
}

fn short(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\n', " ");
    if text.chars().count() > 100 { format!("{}…", text.chars().take(100).collect::<String>()) } else { text }
}

/// A value whole, for reading: text as it is, anything else as pretty JSON; lines after the first
/// indented under the value's label.
fn full(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "(empty)".to_owned(),
        other => serde_json::to_string_pretty(other).expect("JSON values serialise"),
    };
    text.lines().collect::<Vec<_>>().join(&format!("\n{:14}", ""))
}

fn item_line(item: &Item) -> String {
    let warnings = item.proposal.as_ref().map(|p| p.warnings.len()).unwrap_or(0);
    let confidence = item.proposal.as_ref().and_then(|p| p.confidence);
    format!(
        "item {} · run {} · {} · record {} · {}{}{}",
        item.id,
        item.run_id,
        item.pipeline,
        item.external_id,
        item.state.plain(),
        confidence.map(|c| format!(" · confidence {c:.2}")).unwrap_or_default(),
        if warnings > 0 { format!(" · {warnings} warning(s)") } else { String::new() }
    )
}

async fn list(store: &Store, selection: &Selection, limit: i64, as_json: bool) -> Result<(), Failure> {
    let filter = selection.filter()?;
    let total = store.review_count(&filter).await.map_err(store_failure)?;
    let items = store.review_queue(&filter, limit.max(1), 0).await.map_err(store_failure)?;
    let sample = match selection.run {
        Some(run) => {
            let stats = store.sample_stats(run).await.map_err(store_failure)?;
            stats.phase.is_some().then_some(stats)
        }
        None => None,
    };
    if as_json {
        print_json(&json!({ "total": total, "items": items, "sample": sample }));
        return Ok(());
    }
    if let Some(s) = &sample {
        let pct = |r: Option<f64>| r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "-".into());
        println!(
            "sample of run {}: {} · {} of {} reviewed · approved {} · rejected {} · edited {}",
            s.run_id,
            s.phase.map(|p| p.plain()).unwrap_or_default(),
            s.reviewed,
            s.total,
            pct(s.approve_rate),
            pct(s.reject_rate),
            pct(s.edit_rate)
        );
        if let Some(unreviewed) = &s.released_unreviewed {
            println!("  {unreviewed}");
        }
    }
    println!(
        "{total} item(s) match{}",
        if total > items.len() as i64 { format!("; the first {}", items.len()) } else { String::new() }
    );
    for item in &items {
        println!("{}", item_line(item));
        if let Some(p) = &item.proposal {
            for (field, change) in &p.fields {
                println!("    {field}: {} → {}", short(&change.before), short(change.value()));
            }
        }
    }
    Ok(())
}

async fn show(store: &Store, id: i64, as_json: bool) -> Result<(), Failure> {
    let item = store.item(id).await.map_err(store_failure)?;
    let events = store.item_events(id).await.map_err(store_failure)?;
    if as_json {
        print_json(&json!({ "item": item, "events": events }));
        return Ok(());
    }
    println!("{}", item_line(&item));
    if let Some(name) = item.record_name() {
        println!("  record name: {name}");
    }
    if let Some(error) = &item.last_error {
        println!("  last error: {error}");
    }
    if let Some(p) = &item.proposal {
        println!("  proposal by model {} (task version {})", p.model, p.task_version);
        for (field, change) in &p.fields {
            println!("  {field}");
            println!("    before:   {}", full(&change.before));
            println!("    proposed: {}", full(&change.proposed));
            if let Some(edited) = &change.edited {
                println!("    edited:   {}", full(edited));
            }
        }
        for w in &p.warnings {
            println!("  warning: {w}");
        }
    }
    println!("  history:");
    for e in &events {
        let at = chrono::DateTime::from_timestamp_millis(e.at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| e.at.to_string());
        let what = plain_event(&e.kind, e.from_state.as_deref(), e.to_state.as_deref());
        let detail = e.detail.as_ref().map(|d| format!(" {}", short(d))).unwrap_or_default();
        println!("    {at} {}: {what}{detail}", plain_actor(&e.actor));
    }
    Ok(())
}

async fn decide(
    store: &Store,
    action: ReviewAction,
    items: Vec<i64>,
    selection: &Selection,
    confirm: Option<i64>,
    actor: &str,
    as_json: bool,
) -> Result<(), Failure> {
    let verb = match action {
        ReviewAction::Approve => "approve",
        ReviewAction::Reject { .. } => "reject",
    };
    let outcome = if !items.is_empty() {
        if selection.run.is_some() || selection.pipeline.is_some() || !selection.filters.is_empty() {
            return Err(config_error("give item ids or filters (--run, --pipeline, --filter), not both"));
        }
        store.bulk_review(&items, &action, actor).await.map_err(store_failure)?
    } else {
        let filter = selection.filter()?;
        match confirm {
            None => {
                let count = store.review_count(&filter).await.map_err(store_failure)?;
                if as_json {
                    print_json(&json!({ "matching": count, "applied": false }));
                } else {
                    println!(
                        "{count} item(s) match; nothing changed. Run again with --confirm {count} to {verb} them."
                    );
                }
                return Ok(());
            }
            Some(n) => store.bulk_review_matching(&filter, &action, actor, n).await.map_err(store_failure)?,
        }
    };
    let past = if verb == "approve" { "approved" } else { "rejected" };
    if as_json {
        print_json(&json!({ "applied": true, "done": outcome.done, "skipped": outcome.skipped }));
    } else {
        println!("{} item(s) {past} by {actor}", outcome.done.len());
        for s in &outcome.skipped {
            println!("  skipped item {}: {}", s.item, s.reason);
        }
    }
    if outcome.skipped.is_empty() {
        Ok(())
    } else {
        Err(failed(format!("{} item(s) could not be {past}", outcome.skipped.len())))
    }
}

/// `enrichd revert (--item ID | --run ID [--confirm N])`. A whole run counts first, like a bulk
/// decision: without `--confirm` it prints how many items are written and changes nothing.
pub(super) async fn revert_cmd(
    config: &Config,
    item: Option<i64>,
    run: Option<i64>,
    confirm: Option<i64>,
    reviewer: &str,
    as_json: bool,
) -> Result<(), Failure> {
    let actor = actor(reviewer)?;
    let store = open_store(config).await?;
    let engine = Engine::build(config, store.clone());
    let results = match (item, run, confirm) {
        (Some(id), None, None) => revert(&engine, &[id], &actor).await.map_err(store_failure),
        (Some(_), None, Some(_)) => Err(config_error("--confirm goes with --run (one item needs no count)")),
        (None, Some(run), None) => {
            let count = match store.run(run).await {
                Ok(_) => store.written_ids(run).await.map(|ids| ids.len()).map_err(store_failure),
                Err(e) => Err(store_failure(e)),
            };
            store.close().await;
            let count = count?;
            if as_json {
                print_json(&json!({ "matching": count, "applied": false }));
            } else {
                println!(
                    "{count} written item(s) in run {run}; nothing changed. Run again with --confirm {count} to revert them."
                );
            }
            return Ok(());
        }
        (None, Some(run), Some(n)) => revert_run(&engine, run, &actor, n).await.map_err(store_failure),
        _ => Err(config_error("give exactly one of --item or --run")),
    };
    store.close().await;
    let results = results?;
    let t = tally(&results);
    if as_json {
        print_json(&json!({
            "reverted": t.reverted,
            "partially_reverted": t.partially_reverted,
            "conflicts": t.conflicts,
            "failed": t.failed,
            "results": results,
        }));
    } else {
        for r in &results {
            let what = match &r.outcome {
                RevertOutcome::Reverted => "reverted".to_owned(),
                RevertOutcome::PartiallyReverted { reason, .. } => format!("partially reverted: {reason}"),
                RevertOutcome::Conflict { reason } => format!("conflict: {reason}"),
                RevertOutcome::Failed { reason } => format!("failed: {reason}"),
                RevertOutcome::NotRevertible { reason } => format!("not reverted: {reason}"),
            };
            println!("item {} (record {}): {what}", r.item, r.external_id);
        }
        println!(
            "{} of {} item(s) reverted · {} partially reverted · {} conflict(s) · {} failed or not revertible",
            t.reverted,
            results.len(),
            t.partially_reverted,
            t.conflicts,
            t.failed
        );
    }
    if t.not_reverted() == 0 {
        Ok(())
    } else {
        Err(failed(format!(
            "{} of {} item(s) not fully reverted ({} partially reverted)",
            t.not_reverted(),
            results.len(),
            t.partially_reverted
        )))
    }
}

/// Whether a run is held for sample review, for `enrichd run`'s last words.
pub(super) fn held_for_sample(run: &crate::store::Run) -> bool {
    run.review_phase == Some(crate::store::ReviewPhase::SampleReview)
}
