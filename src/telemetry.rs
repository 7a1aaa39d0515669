//! Metrics in Prometheus format, for the daemon's `/metrics`.
//!
//! Counters and histograms come from the engine in this process (the `metrics` facade, recorded by
//! `metrics-exporter-prometheus`); they start at zero when the process starts, as Prometheus
//! expects. Item-state gauges are read from the store at scrape time, so they are right across
//! several daemons and restarts. Each event below is one function: the place that knows it happened
//! calls it, and the metric names live here only.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{ItemState, RunStatus, Usage};

const PROVIDER_REQUESTS: &str = "enrichd_provider_requests_total";
const PROVIDER_SECONDS: &str = "enrichd_provider_request_seconds";
const PROVIDER_429: &str = "enrichd_provider_rate_limited_total";
const TOKENS: &str = "enrichd_tokens_total";
const SPEND: &str = "enrichd_spend_micro_usd_total";
const WRITEBACKS: &str = "enrichd_writebacks_total";
const CONFLICTS: &str = "enrichd_conflicts_total";
const RECLAIMED: &str = "enrichd_leases_reclaimed_total";
const RUNS_PAUSED: &str = "enrichd_runs_paused_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's metrics recorder (once; later calls return the same handle). Without it
/// every event below is a no-op, as in the CLI's one-shot commands.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PROVIDER_SECONDS.into()),
                    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only store gauges");
            }
            describe();
            // The recorder keeps every histogram sample until an upkeep folds them into buckets; a
            // daemon nobody scrapes would hold one per model request for ever.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start the metrics upkeep thread; histograms fold in at each scrape");
            }
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(PROVIDER_REQUESTS, "Model requests sent, by provider, call and outcome.");
    metrics::describe_histogram!(PROVIDER_SECONDS, metrics::Unit::Seconds, "Model request latency.");
    metrics::describe_counter!(PROVIDER_429, "Model requests refused with HTTP 429.");
    metrics::describe_counter!(TOKENS, "Tokens billed, by pipeline and direction (input, output).");
    metrics::describe_counter!(SPEND, "Money spent on models, in millionths of a USD, by pipeline.");
    metrics::describe_counter!(WRITEBACKS, "Write-back outcomes, by pipeline and outcome.");
    metrics::describe_counter!(CONFLICTS, "Records changed upstream since they were pulled: nothing written.");
    metrics::describe_counter!(RECLAIMED, "Items whose lease expired and were taken back from a dead worker.");
    metrics::describe_counter!(RUNS_PAUSED, "Runs that paused themselves for their error rate.");
}

/// How a model request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Ok,
    /// HTTP 429: a rate limit, or an account out of quota.
    RateLimited,
    /// Anything else that failed (5xx, timeout, refused, unusable answer).
    Error,
}

impl RequestOutcome {
    /// From a provider call's result. Providers name the HTTP status in their error message
    /// (`...: HTTP 429 ...`), which is all that tells a 429 from another failure here.
    pub fn of<T>(result: &Result<T, crate::provider::ProviderError>) -> RequestOutcome {
        match result {
            Ok(_) => RequestOutcome::Ok,
            Err(e) if e.message.contains("HTTP 429") => RequestOutcome::RateLimited,
            Err(_) => RequestOutcome::Error,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::RateLimited => "rate_limited",
            RequestOutcome::Error => "error",
        }
    }
}

/// One request to a model provider: `call` is `complete`, `batch_submit` or `batch_poll`.
pub fn provider_request(provider: &str, call: &'static str, took: Duration, outcome: RequestOutcome) {
    let labels = [("provider", provider.to_owned()), ("call", call.to_owned())];
    counter!(PROVIDER_REQUESTS, "provider" => provider.to_owned(), "call" => call, "outcome" => outcome.as_str())
        .increment(1);
    histogram!(PROVIDER_SECONDS, &labels).record(took.as_secs_f64());
    if outcome == RequestOutcome::RateLimited {
        counter!(PROVIDER_429, "provider" => provider.to_owned()).increment(1);
    }
}

/// An item moved (committed): bills its usage and counts write-back outcomes.
pub(crate) fn item_moved(pipeline: &str, from: Option<ItemState>, to: ItemState, usage: Option<Usage>) {
    if let Some(u) = usage {
        counter!(TOKENS, "pipeline" => pipeline.to_owned(), "direction" => "input")
            .increment(u.input_tokens.max(0) as u64);
        counter!(TOKENS, "pipeline" => pipeline.to_owned(), "direction" => "output")
            .increment(u.output_tokens.max(0) as u64);
        counter!(SPEND, "pipeline" => pipeline.to_owned()).increment(u.cost_micros.max(0) as u64);
    }
    if from != Some(ItemState::Writing) {
        return;
    }
    let outcome = match to {
        ItemState::Written => "written",
        ItemState::Conflict => "conflict",
        ItemState::WriteFailed => "failed",
        ItemState::Dead => "dead",
        _ => return,
    };
    counter!(WRITEBACKS, "pipeline" => pipeline.to_owned(), "outcome" => outcome).increment(1);
    if to == ItemState::Conflict {
        counter!(CONFLICTS, "pipeline" => pipeline.to_owned()).increment(1);
    }
}

/// Items whose expired lease was reclaimed.
pub fn leases_reclaimed(n: usize) {
    counter!(RECLAIMED).increment(n as u64);
}

/// A run paused itself for its error rate.
pub fn run_paused(pipeline: &str) {
    counter!(RUNS_PAUSED, "pipeline" => pipeline.to_owned()).increment(1);
}

/// The scrape: the process's counters and histograms, then the store's gauges (`items` as
/// `(pipeline, state, count)` and `runs` as `(pipeline, status, count)`).
pub fn render(
    handle: &PrometheusHandle,
    items: &[(String, ItemState, i64)],
    runs: &[(String, RunStatus, i64)],
) -> String {
    handle.run_upkeep();
    let mut out = handle.render();
    out.push_str("# HELP enrichd_items Items by pipeline and state, read from the database at scrape time.\n");
    out.push_str("# TYPE enrichd_items gauge\n");
    for (pipeline, state, n) in items {
        out.push_str(&format!("enrichd_items{{pipeline=\"{}\",state=\"{state}\"}} {n}\n", label(pipeline)));
    }
    out.push_str("# HELP enrichd_runs Runs by pipeline and status, read from the database at scrape time.\n");
    out.push_str("# TYPE enrichd_runs gauge\n");
    for (pipeline, status, n) in runs {
        out.push_str(&format!("enrichd_runs{{pipeline=\"{}\",status=\"{status}\"}} {n}\n", label(pipeline)));
    }
    out
}

/// A label value, escaped as the exposition format asks.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
