//! Rate-bound runs: N items through the whole pipeline (pull → enrich → approve → write) against a
//! provider that allows R requests/s and answers after L ms, on SQLite. Compares the wall time with
//! the floor N/R and counts the 429s the provider sent, once with the limit configured and once with
//! the limit only learned from the provider's rate-limit headers.
//!
//!   cargo bench --bench rate [-- N R L_MS]      (defaults: 2000 100 50)

use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::config::Config;
use enrichd::engine::{Engine, drain};
use enrichd::sandbox::provider::{Faults, ProviderSandbox, RateLimit};
use enrichd::store::{NewRun, RunStart, RunStatus, Store};
use enrichd_teststore::sandbox::Sandbox;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Outcome {
    wall: Duration,
    rate_limited: u64,
    requests: u64,
    written: i64,
}

async fn scenario(n: u64, rps: f64, latency: Duration, configured: bool) -> Outcome {
    let store_sb = Sandbox::new("bench-token");
    store_sb.seed_products(n, 1);
    let store_addr = store_sb.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some("bench-key"));
    provider.set_faults(Faults { latency, ..Default::default() });
    let provider_addr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let limit = if configured { format!("requests_per_minute = {}", rps * 60.0) } else { String::new() };
    // Enough concurrency that the rate limit, not latency, bounds the run.
    let concurrency = ((rps * latency.as_secs_f64()).ceil() as usize * 2).max(16);
    let text = format!(
        r#"
[database]
url = "sqlite://{db}"
[daemon]
poll_interval_ms = 20
retry_base_ms = 200
retry_max_seconds = 5
[connections.shop]
kind = "teststore"
base_url = "http://{store_addr}"
token = "${{BENCH_STORE_TOKEN}}"
[providers.sim]
kind = "openai"
base_url = "http://{provider_addr}/v1"
api_key = "${{BENCH_PROVIDER_KEY}}"
{limit}
[tasks.copy]
prompt = "Product {{{{ record.id }}}}: write its description."
output_schema = {{ type = "object", additionalProperties = false, required = ["description"], properties = {{ description = {{ type = "string" }} }} }}
fields = {{ description = "description" }}
[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "copy"
provider = "sim"
model = "gpt-4o-mini"
concurrency = {concurrency}
max_attempts = 20
select = {{ missing = ["description"] }}
review = {{ policy = "none" }}
"#,
        db = dir.path().join("bench.db").display(),
    );
    let path = dir.path().join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let store = Store::connect(&config.database.url, 8).await.unwrap();
    store.migrate().await.unwrap();
    let engine = Arc::new(Engine::build(&config, store.clone()));
    // The provider's bucket starts full, as a real account's does after a quiet minute.
    provider.set_rate_limit(Some(RateLimit { requests_per_second: rps }));

    let started = Instant::now();
    let run = match store
        .create_run(&NewRun {
            pipeline: "catalogue".into(),
            scheduled_for: None,
            item_limit: None,
            max_attempts: 20,
            budget_micros: None,
            sample: None,
        })
        .await
        .unwrap()
    {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    };
    let (stop, upkeep_stop, tracker) = (CancellationToken::new(), CancellationToken::new(), TaskTracker::new());
    let upkeep = engine.spawn_upkeep(upkeep_stop.clone());
    let worker = {
        let (e, s, t, p) = (engine.clone(), stop.clone(), tracker.clone(), engine.pipelines["catalogue"].clone());
        tokio::spawn(async move { e.work_pipeline(p, Some(run.id), s, t).await })
    };
    loop {
        let r = store.run(run.id).await.unwrap();
        if !matches!(r.status, RunStatus::Discovering | RunStatus::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed();
    stop.cancel();
    drain(&engine, &tracker, Duration::from_secs(5)).await;
    worker.await.unwrap();
    upkeep_stop.cancel();
    upkeep.await.unwrap();
    let written = store.counts(run.id).await.unwrap().get(enrichd::store::ItemState::Written);
    let stats = provider.stats();
    store.close().await;
    Outcome { wall, rate_limited: stats.rate_limited, requests: stats.requests, written }
}

fn main() {
    // SAFETY: set before any thread starts.
    unsafe {
        std::env::set_var("BENCH_STORE_TOKEN", "bench-token");
        std::env::set_var("BENCH_PROVIDER_KEY", "bench-key");
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, rps, latency_ms) = (arg(0, 2000.0) as u64, arg(1, 100.0), arg(2, 50.0));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("| limits | N | R (req/s) | latency | floor N/R | wall time | wall / floor | requests | 429s | written |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for configured in [true, false] {
        let o = runtime.block_on(scenario(n, rps, Duration::from_secs_f64(latency_ms / 1000.0), configured));
        let floor = n as f64 / rps;
        println!(
            "| {} | {n} | {rps} | {latency_ms} ms | {floor:.2} s | {:.2} s | {:.3} | {} | {} | {} |",
            if configured { "configured" } else { "learned from headers" },
            o.wall.as_secs_f64(),
            o.wall.as_secs_f64() / floor,
            o.requests,
            o.rate_limited,
            o.written
        );
    }
}
