//! `enrichd estimate PIPELINE [--sample N]`: reads every record to count the candidates, sends a
//! sample of them to the model exactly as a run would (packing included), and projects cost and
//! time for all of them — realtime, and in batch mode beside it. Nothing is stored or written.

use std::time::{Duration, Instant};

use enrichd_connector::Record;
use futures::StreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::provider::{CompletionRequest, Provider, TokenUsage};
use crate::task::Task;

/// Batch APIs bill half the realtime price (OpenAI, Anthropic and Gemini alike).
pub const BATCH_DISCOUNT: f64 = 0.5;

/// What an estimate found.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub pipeline: String,
    pub model: String,
    pub records_read: u64,
    pub candidates: u64,
    /// Candidate records sent in the sample.
    pub sampled: u64,
    pub sample_requests: u64,
    /// Sampled records whose answer was usable (valid against the task's schema).
    pub usable: u64,
    /// Why the others were not, one line each (at most 10).
    pub problems: Vec<String>,
    pub input_tokens_per_record: f64,
    pub output_tokens_per_record: f64,
    /// `None` when the model has no known price (set one under `[providers.<name>.prices]`).
    pub cost_per_record_usd: Option<f64>,
    pub seconds_per_request: f64,
    pub realtime_cost_usd: Option<f64>,
    pub realtime_seconds: f64,
    /// What limits realtime speed: `concurrency` or `rate limit`.
    pub realtime_bound: String,
    pub batch_cost_usd: Option<f64>,
}

/// Runs the estimate for `pipeline_name` with a sample of `sample` candidate records.
pub async fn estimate(config: &Config, pipeline_name: &str, sample: usize) -> Result<Estimate, String> {
    let p = config.pipeline(pipeline_name)?;
    let connector = crate::engine::build_named(config, &p.connection);
    let task = Task::build(&p.task, &config.tasks[&p.task]).map_err(|(k, m)| format!("tasks.{}.{k}: {m}", p.task))?;
    let provider = Provider::build(&p.provider, &config.providers[&p.provider]);

    // Count every candidate; keep the first `sample` of them.
    let mut picked = Vec::<Record>::new();
    let found = crate::select::list_candidates(&*connector, p, &task, None, |record, _| {
        if picked.len() < sample {
            picked.push(record.clone());
        }
    })
    .await?;
    let (read, candidates) = (found.read, found.candidates);

    let per_request = task.items_per_request.max(1);
    let requests: Vec<Vec<Record>> = picked.chunks(per_request).map(<[Record]>::to_vec).collect();
    let sample_requests = requests.len() as u64;
    let outcomes: Vec<Asked> = futures::stream::iter(requests.iter().map(|records| ask(&provider, &task, p, records)))
        .buffer_unordered(p.concurrency.max(1))
        .collect()
        .await;

    let mut usage = TokenUsage::default();
    let (mut usable, mut problems, mut latency) = (0u64, Vec::new(), Duration::ZERO);
    for (took, outcome) in &outcomes {
        latency += *took;
        let u = match outcome {
            Ok((u, n)) => {
                usable += *n as u64;
                u
            }
            Err((u, message)) => {
                if problems.len() < 10 {
                    problems.push(message.clone());
                }
                u
            }
        };
        usage.input += u.input;
        usage.cached_input += u.cached_input;
        usage.output += u.output;
    }
    let sampled = picked.len() as u64;
    let per = |v: i64| if sampled == 0 { 0.0 } else { v as f64 / sampled as f64 };
    let cost_per_record = provider.cost_micros(&p.model, usage).map(|micros| per(micros) / 1e6);
    let seconds_per_request = if outcomes.is_empty() { 0.0 } else { latency.as_secs_f64() / outcomes.len() as f64 };

    let all_requests = candidates.div_ceil(per_request as u64) as f64;
    let by_concurrency = seconds_per_request / p.concurrency.max(1) as f64;
    let by_rate = provider.gate().requests_per_minute().map(|rpm| 60.0 / rpm);
    let (per_request_s, bound) = match by_rate {
        Some(r) if r > by_concurrency => (r, "rate limit"),
        _ => (by_concurrency, "concurrency"),
    };
    let realtime_cost = cost_per_record.map(|c| c * candidates as f64);
    Ok(Estimate {
        pipeline: pipeline_name.to_owned(),
        model: p.model.clone(),
        records_read: read,
        candidates,
        sampled,
        sample_requests,
        usable,
        problems,
        input_tokens_per_record: per(usage.input),
        output_tokens_per_record: per(usage.output),
        cost_per_record_usd: cost_per_record,
        seconds_per_request,
        realtime_cost_usd: realtime_cost,
        realtime_seconds: all_requests * per_request_s,
        realtime_bound: bound.into(),
        batch_cost_usd: realtime_cost.map(|c| c * BATCH_DISCOUNT),
    })
}

/// How long one sample request took, and its usage with the number of usable answers, or why not.
type Asked = (Duration, Result<(TokenUsage, usize), (TokenUsage, String)>);

/// Sends one request for `records`; returns its time and (usage, usable answers) or (usage, why).
async fn ask(provider: &Provider, task: &Task, p: &crate::config::PipelineConfig, records: &[Record]) -> Asked {
    let started = Instant::now();
    let prompt = if records.len() == 1 {
        task.render(&p.entity, &records[0], &p.vars)
    } else {
        task.render_pack(&p.entity, &records.iter().collect::<Vec<_>>(), &p.vars)
    };
    let prompt = match prompt {
        Ok(prompt) => prompt,
        Err(e) => return (started.elapsed(), Err((TokenUsage::default(), e))),
    };
    // Asked as the run would ask: only for the fields the records are missing.
    let wanted: Vec<Vec<String>> =
        records.iter().map(|r| crate::select::wanted_fields(&p.select, task.fields.values(), r)).collect();
    let mut union: Vec<String> = Vec::new();
    for field in wanted.iter().flatten() {
        if !union.contains(field) {
            union.push(field.clone());
        }
    }
    let schema = task.request_schema(&union, records.len());
    let request = CompletionRequest {
        model: &p.model,
        prompt: &prompt,
        schema_name: &task.name,
        schema: &schema,
        max_output_tokens: task.max_output_tokens.saturating_mul(records.len() as u32),
        temperature: task.temperature,
    };
    let outcome = match provider.complete(&request).await {
        Ok(c) => {
            // Each answer beside the fields its record is missing.
            let answers: Vec<(serde_json::Value, &Vec<String>)> = if records.len() == 1 {
                vec![(c.answer, &wanted[0])]
            } else {
                let mut split = task.unpack(&c.answer);
                records
                    .iter()
                    .zip(&wanted)
                    .filter_map(|(r, w)| Some((split.remove(&r.id).filter(|a| a.len() == 1)?.pop()?, w)))
                    .collect()
            };
            let usable = answers.iter().filter(|(a, w)| task.validate_for(a, w).is_ok()).count();
            if usable == records.len() {
                Ok((c.usage, usable))
            } else {
                let first = answers.iter().find_map(|(a, w)| task.validate_for(a, w).err());
                Err((
                    c.usage,
                    format!(
                        "{} of {} answers unusable{}",
                        records.len() - usable,
                        records.len(),
                        first.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                ))
            }
        }
        Err(e) => Err((e.usage, e.message)),
    };
    (started.elapsed(), outcome)
}

impl Estimate {
    /// The report as plain text.
    pub fn report(&self) -> String {
        let usd =
            |v: Option<f64>| v.map_or_else(|| "unknown (no price for this model)".to_owned(), |v| format!("${v:.4}"));
        let mut out = format!(
            "estimate for {} (model {}):\n  records read {}, candidates {}\n  sample: {} records in {} requests, {} usable answers\n",
            self.pipeline,
            self.model,
            self.records_read,
            self.candidates,
            self.sampled,
            self.sample_requests,
            self.usable
        );
        for p in &self.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
        out.push_str(&format!(
            "  per record: {:.0} input + {:.0} output tokens, {}; {:.2} s per request\n",
            self.input_tokens_per_record,
            self.output_tokens_per_record,
            usd(self.cost_per_record_usd),
            self.seconds_per_request
        ));
        out.push_str(&format!(
            "  all {} candidates, realtime: {}, about {} (bound by {})\n",
            self.candidates,
            usd(self.realtime_cost_usd),
            crate::cli::fmt_duration(Duration::from_secs_f64(self.realtime_seconds)),
            self.realtime_bound
        ));
        out.push_str(&format!(
            "  all {} candidates, batch mode: {} ({}% off), results within 24 h (usually much sooner)\n",
            self.candidates,
            usd(self.batch_cost_usd),
            ((1.0 - BATCH_DISCOUNT) * 100.0).round()
        ));
        out
    }
}
