//! `enrichd eval PIPELINE [--sample N] [--field F]… [--json]`: how often is the model right on
//! records a person already filled? The pipeline's task is run on a sample of such records with
//! those fields emptied (as an unfilled record looks), through the pipeline's provider, and each
//! answer is compared with what the person wrote: per field accuracy, per-class precision and
//! recall, the confusion matrix, and a confidence threshold table for picking `min_confidence`.
//! Nothing is written to the platform; the report is stored in our database. See docs/eval.md.

pub mod report;
pub mod score;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use enrichd_connector::{Connector, PageRequest, Record};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, PipelineConfig};
use crate::provider::{CompletionRequest, Provider, ProviderError, TokenUsage};
use crate::store::{NewEval, Store, now_ms};
use crate::task::Task;
use score::{Outcome, Scores};

/// Records evaluated when `--sample` is not given.
pub const DEFAULT_SAMPLE: usize = 200;
/// A string property is a "short value" when its schema caps it at this many characters or fewer.
pub const SHORT_TEXT_MAX: u64 = 64;
/// Problems (failed answers) kept in the report, one line each.
const MAX_PROBLEMS: usize = 10;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Records to send at most (a deterministic spread over the listing).
    pub sample: usize,
    /// Only these fields (record field or answer property names); empty: every field the task fills
    /// that is an enum or a short value.
    pub fields: Vec<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { sample: DEFAULT_SAMPLE, fields: Vec::new() }
    }
}

/// Why an evaluation did not happen: the command was wrong (exit 2), or something failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// One field of the task, scored or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    /// The record field.
    pub field: String,
    /// The answer property that fills it.
    pub property: String,
    pub evaluated: bool,
    /// Why the field was not evaluated (free text, not named with `--field`).
    pub reason: Option<String>,
    /// How values were compared: `enum`, `set` (a list, as a set), `short text`, `value`.
    pub compared_as: Option<String>,
    /// Sampled records whose field was filled by a person.
    pub items: u64,
    /// Of those, records the model gave no usable answer for (not scored).
    pub failed: u64,
    #[serde(flatten)]
    pub scores: Option<Scores>,
    /// A list of lines compared position by position (`[eval] compare = "exact"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<score::LineScores>,
}

/// A whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The stored report's id (set once stored).
    pub id: Option<i64>,
    pub pipeline: String,
    pub task: String,
    pub task_version: String,
    pub provider: String,
    pub model: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Records in the connection's full listing.
    pub records_read: u64,
    /// Records with at least one evaluated field filled: the population sampled from.
    pub records_found: u64,
    /// Records sent to the model.
    pub sampled: u64,
    pub requests: u64,
    /// Sampled records with a usable answer.
    pub answered: u64,
    /// Sampled records without one (after retries), with the first few reasons in `problems`.
    pub failed: u64,
    /// Sampled records not sent because the pipeline's budget was reached.
    pub not_sent: u64,
    pub problems: Vec<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// `null` when the model has no known price.
    pub cost_usd: Option<f64>,
    pub budget_usd: Option<f64>,
    /// The answer property read as the confidence (`review.confidence_field`, else `confidence`).
    pub confidence_field: Option<String>,
    pub fields: Vec<FieldReport>,
}

/// A task field chosen for evaluation, and how it is compared.
#[derive(Debug, Clone)]
struct Target {
    property: String,
    field: String,
    compared_as: &'static str,
    /// Value by value (`[eval] compare = "exact"`); classes when `None`.
    exact: Option<score::Exact>,
}

/// How `compare = "exact"` compares a property (see [`score::Exact`]); `Err(reason)` when it
/// cannot.
fn exact_kind(schema: &Value, html: bool, field: &str, tolerance: f64) -> Result<score::Exact, String> {
    if field.contains("[]") {
        return Err("a per-element field (one value per image or line): compare the whole list instead".into());
    }
    if html {
        return Err("free text (an HTML property): read the proposals instead".into());
    }
    if schema.get("enum").is_some() || schema.get("const").is_some() {
        return Ok(score::Exact::Text);
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find_map(|t| t.as_str().filter(|t| *t != "null")).unwrap_or("null"),
        t => t.as_str().unwrap_or(""),
    };
    let dated = |s: &Value| {
        s["format"] == "date" || s["pattern"].as_str().is_some_and(|p| p.contains("{4}-") || p.contains("\\d{4}-"))
    };
    Ok(match ty {
        "number" | "integer" => score::Exact::Number(tolerance),
        "string" if dated(schema) => score::Exact::Date,
        "string" | "boolean" => score::Exact::Text,
        "array" if schema["items"]["type"] == "object" || schema["items"]["properties"].is_object() => {
            let keys = schema["items"]["properties"].as_object().cloned().unwrap_or_default();
            let keys = keys
                .iter()
                .filter_map(|(key, sub)| exact_kind(sub, false, key, tolerance).ok().map(|how| (key.clone(), how)))
                .filter(|(_, how)| !matches!(how, score::Exact::Lines(_)))
                .collect();
            score::Exact::Lines(keys)
        }
        "array" => score::Exact::Set,
        other => return Err(format!("a {} value: not compared", if other.is_empty() { "structured" } else { other })),
    })
}

/// Whether the property can be scored, and how; `Err(reason)` when it cannot.
fn comparable(schema: &Value, html: bool, field: &str) -> Result<&'static str, String> {
    if field.contains("[]") {
        return Err("a per-element field (one value per image or line): not a class".into());
    }
    if html {
        return Err("free text (an HTML property): read the proposals instead".into());
    }
    if schema.get("enum").is_some() || schema.get("const").is_some() {
        return Ok("enum");
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find_map(|t| t.as_str().filter(|t| *t != "null")).unwrap_or("null"),
        t => t.as_str().unwrap_or(""),
    };
    match ty {
        "boolean" | "integer" => Ok("value"),
        "string" => match schema["maxLength"].as_u64() {
            Some(max) if max <= SHORT_TEXT_MAX => Ok("short text"),
            Some(max) => Err(format!(
                "free text (maxLength {max}, above {SHORT_TEXT_MAX}): name it with --field to compare it exactly"
            )),
            None => Err("free text (no enum and no maxLength): name it with --field to compare it exactly".into()),
        },
        "array" => {
            let items = &schema["items"];
            let short = items.get("enum").is_some()
                || matches!(items["type"].as_str(), Some("integer" | "boolean"))
                || items["maxLength"].as_u64().is_some_and(|m| m <= SHORT_TEXT_MAX);
            if short {
                Ok("set")
            } else {
                Err(format!(
                    "a list of free text (its items have no enum and no maxLength up to {SHORT_TEXT_MAX}): name it with --field to compare it as a set"
                ))
            }
        }
        other => Err(format!("a {} value: not a class", if other.is_empty() { "structured" } else { other })),
    }
}

/// The value an unfilled record holds in place of `value`: empty of the same kind.
fn emptied(value: &Value) -> Value {
    match value {
        Value::String(_) => json!(""),
        Value::Array(_) => json!([]),
        Value::Object(_) => json!({}),
        _ => Value::Null,
    }
}

/// `n` indices spread evenly over `0..total` (all of them when `n >= total`): deterministic, so the
/// same listing gives the same sample.
pub fn spread(total: usize, n: usize) -> Vec<usize> {
    if n >= total {
        return (0..total).collect();
    }
    (0..n).map(|i| i * total / n).collect()
}

/// Runs the evaluation of `pipeline_name` and stores its report in `store`.
pub async fn evaluate(
    config: &Config,
    store: &Store,
    pipeline_name: &str,
    options: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    let p = config.pipeline(pipeline_name).map_err(EvalError::Usage)?;
    let connector = crate::engine::build_named(config, &p.connection);
    let base = Task::build(&p.task, &config.tasks[&p.task])
        .map_err(|(k, m)| EvalError::Usage(format!("tasks.{}.{k}: {m}", p.task)))?;
    for name in &options.fields {
        if !base.fields.iter().any(|(prop, field)| prop == name || field == name) {
            let known: Vec<String> = base.fields.values().cloned().collect();
            return Err(EvalError::Usage(format!(
                "--field {name}: task {} fills no such field (it fills {})",
                p.task,
                known.join(", ")
            )));
        }
    }

    // The task as a run starts it: the pipeline's allow-lists and the values the platform allows
    // now (a dropdown's options) as the properties' enums.
    let mut allowed = p.allowed.clone();
    for field in base.fields.values() {
        if let Some(values) = connector.allowed_values(&p.entity, field).await.map_err(|e| {
            EvalError::Failed(format!("connections.{}: the values allowed for {field}: {e}", p.connection))
        })? {
            allowed.insert(field.clone(), values);
        }
    }
    let task = if allowed.is_empty() { base } else { base.with_allowed(&allowed).map_err(EvalError::Failed)? };

    // The fields to score.
    let mut targets = Vec::new();
    let mut skipped: Vec<FieldReport> = Vec::new();
    for (property, field) in task.fields.clone() {
        let named = options.fields.iter().any(|n| *n == property || *n == field);
        if !options.fields.is_empty() && !named {
            skipped.push(not_evaluated(&field, &property, "not named with --field".into()));
            continue;
        }
        let schema = &task.schema["properties"][&property];
        let html = task.html.contains(&property);
        if task.eval.compare == crate::config::EvalCompare::Exact {
            match exact_kind(schema, html, &field, task.eval.tolerance) {
                Ok(how) => targets.push(Target { property, field, compared_as: how.name(), exact: Some(how) }),
                Err(reason) => skipped.push(not_evaluated(&field, &property, reason)),
            }
            continue;
        }
        match comparable(schema, html, &field) {
            Ok(how) => targets.push(Target { property, field, compared_as: how, exact: None }),
            Err(_) if named && !field.contains("[]") => {
                let how = if schema["type"] == "array" { "set" } else { "short text" };
                targets.push(Target { property, field, compared_as: how, exact: None });
            }
            Err(reason) => skipped.push(not_evaluated(&field, &property, reason)),
        }
    }
    if targets.is_empty() {
        let why: Vec<String> =
            skipped.iter().map(|f| format!("{}: {}", f.field, f.reason.clone().unwrap_or_default())).collect();
        return Err(EvalError::Usage(format!(
            "pipeline {pipeline_name}: task {} fills no field eval can score ({})",
            p.task,
            why.join("; ")
        )));
    }
    let provider = Provider::build(&p.provider, &config.providers[&p.provider]);

    // The full listing; keep the records a person filled.
    let (read, found) = list_filled(connector.as_ref(), p, &targets).await?;
    let records_found = found.len() as u64;
    if found.is_empty() {
        let names: Vec<&str> = targets.iter().map(|t| t.field.as_str()).collect();
        return Err(EvalError::Failed(format!(
            "pipeline {pipeline_name}: none of the {read} records read has {} filled, so there is nothing to compare the model with",
            names.join(" or ")
        )));
    }
    let picked: Vec<Record> = spread(found.len(), options.sample).into_iter().map(|i| found[i].clone()).collect();
    drop(found);

    // Ask about every picked record with the targets emptied.
    let wanted: Vec<String> = targets.iter().map(|t| t.field.clone()).collect();
    let masked: Vec<Record> = picked
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for field in &wanted {
                let empty = emptied(r.fields.get(field).unwrap_or(&Value::Null));
                r.fields.insert(field.clone(), empty);
            }
            r
        })
        .collect();
    let asker = Asker {
        provider: &provider,
        task: &task,
        p,
        wanted: &wanted,
        attempts: p.max_attempts.max(1),
        retry_base: Duration::from_millis(config.daemon.retry_base_ms),
        retry_max: Duration::from_secs(config.daemon.retry_max_seconds),
        budget_micros: p.budget_usd.map(|b| (b * 1e6).round() as i64),
        spent: Arc::new(AtomicI64::new(0)),
    };
    let per_request = task.items_per_request.max(1);
    let packs: Vec<&[Record]> = masked.chunks(per_request).collect();
    let results: Vec<Asked> = futures::stream::iter(packs.into_iter().map(|pack| asker.ask(pack)))
        .buffered(p.concurrency.max(1))
        .collect()
        .await;

    let mut answers: BTreeMap<String, Value> = BTreeMap::new();
    let (mut requests, mut usage, mut problems, mut failed, mut not_sent) =
        (0u64, TokenUsage::default(), Vec::new(), 0u64, 0u64);
    let mut priced = true;
    let mut cost_micros = 0i64;
    for asked in results {
        requests += asked.requests;
        usage.input += asked.usage.input;
        usage.cached_input += asked.usage.cached_input;
        usage.output += asked.usage.output;
        match provider.cost_micros(&p.model, asked.usage) {
            Some(c) => cost_micros += c,
            None if asked.usage != TokenUsage::default() => priced = false,
            None => {}
        }
        for (id, outcome) in asked.answers {
            match outcome {
                Answer::Usable(v) => {
                    answers.insert(id, v);
                }
                Answer::Failed(why) => {
                    failed += 1;
                    if problems.len() < MAX_PROBLEMS {
                        problems.push(why);
                    }
                }
                Answer::NotSent => not_sent += 1,
            }
        }
    }

    if answers.is_empty() {
        return Err(EvalError::Failed(format!(
            "pipeline {pipeline_name}: none of the {} sampled records got a usable answer{}",
            picked.len(),
            problems.first().map(|p| format!(" ({p})")).unwrap_or_default()
        )));
    }
    let confidence_field = p
        .review
        .confidence_field
        .clone()
        .or_else(|| task.schema["properties"].get("confidence").map(|_| "confidence".to_owned()));
    let mut fields = Vec::new();
    for t in &targets {
        let mut outcomes = Vec::new();
        let (mut items, mut field_failed) = (0u64, 0u64);
        for record in &picked {
            let truth = record.fields.get(&t.field).cloned().unwrap_or(Value::Null);
            if score::class_of(&truth).is_none() {
                continue;
            }
            items += 1;
            let Some(answer) = answers.get(&record.id) else {
                field_failed += 1;
                continue;
            };
            let confidence = confidence_field.as_ref().and_then(|c| answer.get(c)).and_then(Value::as_f64);
            let predicted = answer.get(&t.property).cloned().unwrap_or(Value::Null);
            outcomes.push(Outcome { truth, predicted, confidence });
        }
        let (scores, lines) = match &t.exact {
            Some(how) => score::score_exact(&outcomes, how),
            None => (score::score(&outcomes), None),
        };
        fields.push(FieldReport {
            field: t.field.clone(),
            property: t.property.clone(),
            evaluated: true,
            reason: None,
            compared_as: Some(t.compared_as.to_owned()),
            items,
            failed: field_failed,
            scores: Some(scores),
            lines,
        });
    }
    fields.extend(skipped);

    let mut report = EvalReport {
        id: None,
        pipeline: pipeline_name.to_owned(),
        task: p.task.clone(),
        task_version: task.version.clone(),
        provider: p.provider.clone(),
        model: p.model.clone(),
        created_at: now_ms(),
        records_read: read,
        records_found,
        sampled: picked.len() as u64,
        requests,
        answered: answers.len() as u64,
        failed,
        not_sent,
        problems,
        tokens_in: usage.input,
        tokens_out: usage.output,
        cost_usd: priced.then_some(cost_micros as f64 / 1e6),
        budget_usd: p.budget_usd,
        confidence_field,
        fields,
    };
    let json = serde_json::to_value(&report).expect("serialisable");
    let id = store
        .save_eval(&NewEval {
            pipeline: pipeline_name,
            created_at: report.created_at,
            task_version: &report.task_version,
            model: &report.model,
            sampled: report.sampled as i64,
            report: &json,
        })
        .await
        .map_err(|e| EvalError::Failed(format!("storing the report: {e}")))?;
    report.id = Some(id);
    Ok(report)
}

fn not_evaluated(field: &str, property: &str, reason: String) -> FieldReport {
    FieldReport {
        field: field.to_owned(),
        property: property.to_owned(),
        evaluated: false,
        reason: Some(reason),
        compared_as: None,
        items: 0,
        failed: 0,
        scores: None,
        lines: None,
    }
}

/// Reads the connection's full listing (not incremental): how many records, and those with at
/// least one target field filled, in listing order.
async fn list_filled(
    connector: &dyn Connector,
    p: &PipelineConfig,
    targets: &[Target],
) -> Result<(u64, Vec<Record>), EvalError> {
    let (mut read, mut found, mut cursor) = (0u64, Vec::new(), None);
    loop {
        let page = connector
            .list(&p.entity, &PageRequest { cursor: cursor.clone(), per_page: p.page_size, modified_after: None })
            .await
            .map_err(|e| EvalError::Failed(format!("connections.{}: {e}", p.connection)))?;
        for mut record in page.records {
            read += 1;
            if targets.iter().any(|t| score::class_of(record.fields.get(&t.field).unwrap_or(&Value::Null)).is_some()) {
                record.native = None;
                found.push(record);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((read, found))
}

/// What became of one record.
enum Answer {
    /// The answer, valid against the task's schema.
    Usable(Value),
    Failed(String),
    /// The budget was spent before its request went out.
    NotSent,
}

/// One pack's outcome: the requests it took, the tokens billed, and each record's answer.
struct Asked {
    requests: u64,
    usage: TokenUsage,
    answers: Vec<(String, Answer)>,
}

/// Sends requests as a run would: the task's prompt and narrowed schema, packed when the task
/// packs, through the provider's rate gate, retried with the engine's backoff (never sooner than
/// `Retry-After`) up to the pipeline's `max_attempts`, within its budget.
struct Asker<'a> {
    provider: &'a Provider,
    task: &'a Task,
    p: &'a PipelineConfig,
    wanted: &'a [String],
    attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    budget_micros: Option<i64>,
    spent: Arc<AtomicI64>,
}

impl Asker<'_> {
    fn over_budget(&self) -> bool {
        self.budget_micros.is_some_and(|b| self.spent.load(Ordering::SeqCst) >= b)
    }

    fn bill(&self, usage: TokenUsage) {
        if let Some(c) = self.provider.cost_micros(&self.p.model, usage) {
            self.spent.fetch_add(c, Ordering::SeqCst);
        }
    }

    /// One request for `records`, retried while retryable; an answer that does not fit the schema
    /// is retried too (as the engine retries it). Returns the completion's per-record answers.
    async fn request(
        &self,
        records: &[&Record],
        out: &mut Asked,
    ) -> Result<BTreeMap<String, Result<Value, String>>, String> {
        let prompt = if records.len() == 1 {
            self.task.render(&self.p.entity, records[0], &self.p.vars)
        } else {
            self.task.render_pack(&self.p.entity, records, &self.p.vars)
        }?;
        let schema = self.task.request_schema(self.wanted, records.len());
        let request = CompletionRequest {
            model: &self.p.model,
            prompt: &prompt,
            schema_name: &self.task.name,
            schema: &schema,
            max_output_tokens: self.task.max_output_tokens.saturating_mul(records.len() as u32),
            temperature: self.task.temperature,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.over_budget() {
                return Err(NOT_SENT.into());
            }
            out.requests += 1;
            let result = self.provider.complete(&request).await;
            let (error, retry_after) = match result {
                Ok(c) => {
                    add(&mut out.usage, c.usage);
                    self.bill(c.usage);
                    let answers = self.split(records, &c.answer);
                    // A single record whose answer does not fit is asked again, as the engine would.
                    match answers.values().next() {
                        Some(Err(e)) if records.len() == 1 && attempt < self.attempts => (e.clone(), None),
                        _ => return Ok(answers),
                    }
                }
                Err(e) => {
                    add(&mut out.usage, e.usage);
                    self.bill(e.usage);
                    if !e.retryable() || attempt >= self.attempts {
                        return Err(failure(&e, attempt));
                    }
                    (e.message.clone(), e.retry_after)
                }
            };
            tracing::debug!(attempt, error = %error, "eval: request failed, retrying");
            tokio::time::sleep(enrichd_connector::retry::backoff(
                attempt,
                self.retry_base,
                self.retry_max,
                retry_after,
            ))
            .await;
        }
    }

    /// Each record's answer out of a completion, checked against the task's schema for the wanted
    /// fields.
    fn split(&self, records: &[&Record], answer: &Value) -> BTreeMap<String, Result<Value, String>> {
        let check = |a: Value| self.task.validate_for(&a, self.wanted).map(|()| a);
        if records.len() == 1 {
            return [(records[0].id.clone(), check(answer.clone()))].into();
        }
        let mut split = self.task.unpack(answer);
        records
            .iter()
            .map(|r| {
                let outcome = match split.remove(&r.id) {
                    Some(mut one) if one.len() == 1 => check(one.pop().expect("one")),
                    Some(_) => Err("the packed answer answered it more than once".to_owned()),
                    None => Err("the packed answer left it out".to_owned()),
                };
                (r.id.clone(), outcome)
            })
            .collect()
    }

    /// Asks about `pack`; records a packed answer leaves out or gets wrong are asked alone.
    async fn ask(&self, pack: &[Record]) -> Asked {
        let mut out = Asked { requests: 0, usage: TokenUsage::default(), answers: Vec::new() };
        let records: Vec<&Record> = pack.iter().collect();
        let first = self.request(&records, &mut out).await;
        for record in &records {
            let outcome = match &first {
                Ok(answers) => match answers.get(&record.id) {
                    Some(Ok(v)) => Ok(v.clone()),
                    Some(Err(e)) if records.len() > 1 => {
                        tracing::debug!(record = %record.id, error = %e, "eval: asked again alone");
                        match self.request(&[*record], &mut out).await {
                            Ok(mut one) => one.remove(&record.id).unwrap_or_else(|| Err("no answer".into())),
                            Err(e) => Err(e),
                        }
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("no answer".into()),
                },
                Err(e) => Err(e.clone()),
            };
            let answer = match outcome {
                Ok(v) => Answer::Usable(v),
                Err(e) if e == NOT_SENT => Answer::NotSent,
                Err(e) => Answer::Failed(format!("record {}: {e}", record.id)),
            };
            out.answers.push((record.id.clone(), answer));
        }
        out
    }
}

const NOT_SENT: &str = "not sent: the pipeline's budget is spent";

fn add(total: &mut TokenUsage, u: TokenUsage) {
    total.input += u.input;
    total.cached_input += u.cached_input;
    total.output += u.output;
}

fn failure(e: &ProviderError, attempts: u32) -> String {
    format!("{} (after {attempts} attempt{})", e.message, if attempts == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_listing() {
        assert_eq!(spread(10, 20), (0..10).collect::<Vec<_>>());
        assert_eq!(spread(10, 5), [0, 2, 4, 6, 8]);
        assert_eq!(spread(1000, 3), [0, 333, 666]);
        assert_eq!(spread(0, 3), Vec::<usize>::new());
    }

    #[test]
    fn enums_sets_and_short_text_are_scored_free_text_is_not() {
        let ok = |s: Value| comparable(&s, false, "f");
        assert_eq!(ok(json!({"enum": ["a", "b"]})), Ok("enum"));
        assert_eq!(ok(json!({"type": "array", "items": {"enum": ["a"]}})), Ok("set"));
        assert_eq!(ok(json!({"type": "array", "items": {"type": "string", "maxLength": 40}})), Ok("set"));
        assert_eq!(ok(json!({"type": "string", "maxLength": 10})), Ok("short text"));
        assert_eq!(ok(json!({"type": ["boolean", "null"]})), Ok("value"));
        assert!(ok(json!({"type": "string", "maxLength": 160})).unwrap_err().contains("maxLength 160"));
        assert!(ok(json!({"type": "string"})).unwrap_err().contains("free text"));
        assert!(comparable(&json!({"type": "string", "maxLength": 10}), true, "d").unwrap_err().contains("HTML"));
        assert!(comparable(&json!({"type": "array"}), false, "images[].alt").unwrap_err().contains("per-element"));
    }

    #[test]
    fn extraction_compares_every_field_by_its_kind() {
        let cfg: crate::config::TaskConfig =
            toml::from_str(include_str!("../../config/tasks/invoice_extract.toml")).unwrap();
        let task = Task::build("invoice_extract", &cfg).unwrap();
        let kind = |property: &str| {
            let field = &task.fields[property];
            exact_kind(&task.schema["properties"][property], false, field, task.eval.tolerance).map(|k| k.name())
        };
        assert_eq!(kind("total"), Ok("number"));
        assert_eq!(kind("issue_date"), Ok("date"));
        assert_eq!(kind("due_date"), Ok("date"));
        assert_eq!(kind("supplier_name"), Ok("text"));
        assert_eq!(kind("amounts_are"), Ok("text"));
        assert_eq!(kind("line_items"), Ok("lines by position"));
        let Ok(score::Exact::Lines(keys)) =
            exact_kind(&task.schema["properties"]["line_items"], false, "line_items", 0.01)
        else {
            panic!("line items are lines")
        };
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, how)| (k.as_str(), how.name())).collect();
        assert!(keys.contains(&("unit_price", "number")) && keys.contains(&("description", "text")), "{keys:?}");
    }

    #[test]
    fn emptied_values_look_unfilled() {
        assert_eq!(emptied(&json!("Billing")), json!(""));
        assert_eq!(emptied(&json!(["Tools"])), json!([]));
        assert_eq!(emptied(&json!(3)), Value::Null);
        assert!(crate::select::is_missing(Some(&emptied(&json!({"a": 1})))));
    }
}
