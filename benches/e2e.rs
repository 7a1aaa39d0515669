//! End-to-end benchmarks of the real `enrichd` binary against the sandboxes, printing one table per
//! scenario (the README's figures come from here):
//!
//!   cargo bench --bench e2e                          every scenario with its default size
//!   cargo bench --bench e2e -- latency rate          only those
//!   cargo bench --bench e2e -- overhead --items 20000
//!
//! `ENRICHD_BENCH_LOG=<filter>` (e.g. `sqlx=debug`) runs enrichd with that log filter and keeps its
//! log in the temp directory, to see which statements a scenario spends its time on.
//!
//! Scenarios:
//! - `latency`: 2,000 products of which 1,000 miss a description, the model answering after 50 ms,
//!   no rate limit: wall time, the most requests the provider saw in flight at once, peak RSS.
//! - `rate`: the provider allows R requests/s (token bucket, real `x-ratelimit-*` headers, 429 with
//!   `retry-after` above it): wall time against the floor N/R, with the limit configured and with it
//!   only learned from the headers.
//! - `overhead`: zero-latency sandboxes, every product missing its description, pull → enrich →
//!   approve → re-read → write → verify: items/s on SQLite and on Postgres, peak RSS.
//! - `memory`: discovery of 1,000,000 products (and 100,000 for comparison) into the queue while
//!   enrichment runs: peak RSS, to show records stream through.
//! - `writes`: the WooCommerce sandbox (HTTPS) and the shipped `product_copy` task: WooCommerce
//!   requests per 100 products written (write batches, re-reads before writing, verification reads),
//!   with an instant model and with a 400 ms one, with and without `write_linger_ms`.
//!
//! The sandboxes run in this process on the same machine; `enrichd` runs as a child process, and its
//! peak RSS is its own high-water mark (`VmHWM`), sampled every 10 ms. Postgres comes from
//! `ENRICHD_BENCH_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`); the database
//! `enrichd_bench` is dropped and created for each Postgres case.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use enrichd::sandbox::provider::{Faults, ProviderSandbox, RateLimit};
use enrichd::store::{ItemState, RunStatus, Store};
use enrichd_teststore::sandbox::Sandbox;
use enrichd_woocommerce::sandbox::{CONSUMER_KEY, CONSUMER_SECRET, WooSandbox, generate_catalogue};

const STORE_TOKEN: &str = "bench-token";
const PROVIDER_KEY: &str = "bench-key";

/// What the child process did.
struct Exit {
    wall: Duration,
    peak_rss_kb: i64,
    /// User + system CPU time the child used.
    cpu: Duration,
    success: bool,
    output: String,
}

/// Spawns `enrichd ARGS` and waits for it, returning its wall time and peak RSS. `until`, when
/// given, is polled every 50 ms; once it answers true the child gets SIGTERM.
async fn enrichd<F, Fut>(dir: &Path, args: &[&str], until: Option<F>) -> Exit
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let log = dir.join("enrichd.log");
    let file = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .arg("--config")
        .arg(dir.join("enrichd.toml"))
        .args(args)
        .env("BENCH_STORE_TOKEN", STORE_TOKEN)
        .env("BENCH_PROVIDER_KEY", PROVIDER_KEY)
        .env("BENCH_WOO_CK", CONSUMER_KEY)
        .env("BENCH_WOO_CS", CONSUMER_SECRET)
        .env("ENRICHD_LOG", std::env::var("ENRICHD_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("starting enrichd");
    let pid = child.id() as libc::pid_t;
    // Peak RSS is the kernel's high-water mark of enrichd's own memory (VmHWM), sampled every 10 ms
    // until it exits. Not `ru_maxrss` from wait4: a child started by (v)fork inherits the parent's
    // high-water mark at exec, so that figure is the harness's size (its sandboxes hold the whole
    // catalogue) whenever the harness is the larger of the two.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while let Ok(status) = std::fs::read_to_string(&path) {
                let hwm = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
                match hwm {
                    Some(kb) => {
                        peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                    }
                    None => break, // exited: a zombie has no memory left to report
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let waiter = tokio::task::spawn_blocking(move || {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4 failed");
        let tv = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
        let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
        (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, cpu)
    });
    if let Some(until) = until {
        while !waiter.is_finished() {
            if until().await {
                // SAFETY: signals our own child, which has not been reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (success, cpu) = waiter.await.unwrap();
    sampler.join().unwrap();
    let peak_rss_kb = peak.load(std::sync::atomic::Ordering::Relaxed);
    let wall = started.elapsed();
    std::mem::forget(child); // already reaped by wait4
    if std::env::var_os("ENRICHD_BENCH_LOG").is_some() {
        let kept = std::env::temp_dir().join(format!("enrichd-bench-{pid}.log"));
        if std::fs::copy(&log, &kept).is_ok() {
            println!("(enrichd's log: {})", kept.display());
        }
    }
    Exit { wall, peak_rss_kb, cpu, success, output: std::fs::read_to_string(&log).unwrap_or_default() }
}

/// User + system CPU time this process (the harness, i.e. the sandboxes) has used so far.
fn own_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn mb(kb: i64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

/// A database for one case: a fresh SQLite file in `dir`, or the recreated `enrichd_bench`.
fn database(dir: &Path, postgres: bool) -> String {
    if !postgres {
        return format!("sqlite://{}", dir.join("bench.db").display());
    }
    let admin = std::env::var("ENRICHD_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    for sql in ["DROP DATABASE IF EXISTS enrichd_bench WITH (FORCE)", "CREATE DATABASE enrichd_bench"] {
        let ok = Command::new("psql")
            .args([&format!("{admin}/postgres"), "-qc", sql])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "psql could not run {sql:?} at {admin}");
    }
    format!("{admin}/enrichd_bench")
}

struct TestStoreCase<'a> {
    database: &'a str,
    store: std::net::SocketAddr,
    provider: std::net::SocketAddr,
    concurrency: usize,
    provider_limit: &'a str,
    max_connections: u32,
}

fn teststore_config(dir: &Path, case: TestStoreCase<'_>) {
    let TestStoreCase { database, store, provider, concurrency, provider_limit, max_connections } = case;
    let text = format!(
        r#"
[database]
url = "{database}"
max_connections = {max_connections}
[daemon]
poll_interval_ms = 20
retry_base_ms = 200
retry_max_seconds = 5
[connections.shop]
kind = "teststore"
base_url = "http://{store}"
token = "${{BENCH_STORE_TOKEN}}"
[providers.sim]
kind = "openai"
base_url = "http://{provider}/v1"
api_key = "${{BENCH_PROVIDER_KEY}}"
{provider_limit}
[tasks.copy]
prompt = "Product {{{{ record.id }}}}: {{{{ record.fields.name }}}}. Write its description."
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
"#
    );
    std::fs::write(dir.join("enrichd.toml"), text).unwrap();
}

/// Item counts of the one run in `url`.
async fn counts(url: &str) -> enrichd::store::RunCounts {
    let store = Store::connect(url, 1).await.unwrap();
    let run = store.runs(&[], 1).await.unwrap().pop().expect("the run exists");
    let counts = store.counts(run.id).await.unwrap();
    store.close().await;
    counts
}

async fn sandboxes(
    products: u64,
    missing_every: u64,
    latency: Duration,
) -> (Sandbox, ProviderSandbox, [std::net::SocketAddr; 2]) {
    let shop = Sandbox::new(STORE_TOKEN);
    shop.seed_products(products, missing_every);
    let shop_addr = shop.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    provider.set_faults(Faults { latency, ..Default::default() });
    let provider_addr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (shop, provider, [shop_addr, provider_addr])
}

async fn latency(items: u64) {
    println!("\n### Latency-bound: {items} products, half missing a description, model latency 50 ms, no rate limit\n");
    println!(
        "| concurrency | enriched + written | wall time | floor (enriched × 50 ms / concurrency) | most requests in flight | peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for concurrency in [16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let (_shop, provider, [s, p]) = sandboxes(items, 2, Duration::from_millis(50)).await;
        let url = database(dir.path(), false);
        teststore_config(
            dir.path(),
            TestStoreCase {
                database: &url,
                store: s,
                provider: p,
                concurrency,
                provider_limit: "",
                max_connections: 8,
            },
        );
        let exit = enrichd(dir.path(), &["run", "catalogue"], None::<fn() -> std::future::Ready<bool>>).await;
        assert!(exit.success, "enrichd run failed:\n{}", exit.output);
        let written = counts(&url).await.get(ItemState::Written);
        let floor = written as f64 * 0.05 / concurrency as f64;
        println!(
            "| {concurrency} | {written} | {:.2} s | {floor:.2} s | {} | {} |",
            exit.wall.as_secs_f64(),
            provider.stats().max_in_flight,
            mb(exit.peak_rss_kb)
        );
    }
}

async fn rate(items: u64, rps: f64, latency_ms: u64) {
    println!("\n### Rate-bound: {items} products, provider limit {rps} requests/s, latency {latency_ms} ms\n");
    println!("| limits | floor N/R | wall time | wall / floor | requests | 429s | written |");
    println!("|---|---|---|---|---|---|---|");
    for configured in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (_shop, provider, [s, p]) = sandboxes(items, 1, Duration::from_millis(latency_ms)).await;
        // The provider's bucket starts full, as a real account's does after a quiet minute.
        provider.set_rate_limit(Some(RateLimit { requests_per_second: rps }));
        let url = database(dir.path(), false);
        let limit = if configured { format!("requests_per_minute = {}", rps * 60.0) } else { String::new() };
        // Enough concurrency that the limit, not the latency, bounds the run.
        let concurrency = ((rps * latency_ms as f64 / 1000.0).ceil() as usize * 2).max(16);
        teststore_config(
            dir.path(),
            TestStoreCase {
                database: &url,
                store: s,
                provider: p,
                concurrency,
                provider_limit: &limit,
                max_connections: 8,
            },
        );
        let exit = enrichd(dir.path(), &["run", "catalogue"], None::<fn() -> std::future::Ready<bool>>).await;
        assert!(exit.success, "enrichd run failed:\n{}", exit.output);
        let written = counts(&url).await.get(ItemState::Written);
        let stats = provider.stats();
        let floor = items as f64 / rps;
        println!(
            "| {} | {floor:.2} s | {:.2} s | {:.3} | {} | {} | {written} |",
            if configured { "configured" } else { "learned from headers" },
            exit.wall.as_secs_f64(),
            exit.wall.as_secs_f64() / floor,
            stats.requests,
            stats.rate_limited,
        );
    }
}

async fn overhead(items: u64) {
    println!("\n### Overhead: {items} products, all missing a description, zero-latency sandboxes, policy none\n");
    println!(
        "| database | written | verified | wall time | items/s | CPU (enrichd) | CPU (sandboxes) | peak RSS (enrichd) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for postgres in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_shop, _provider, [s, p]) = sandboxes(items, 1, Duration::ZERO).await;
        let url = database(dir.path(), postgres);
        teststore_config(
            dir.path(),
            TestStoreCase {
                database: &url,
                store: s,
                provider: p,
                concurrency: 32,
                provider_limit: "",
                max_connections: 8,
            },
        );
        let harness = own_cpu();
        let exit = enrichd(dir.path(), &["run", "catalogue"], None::<fn() -> std::future::Ready<bool>>).await;
        let harness = own_cpu() - harness;
        assert!(exit.success, "enrichd run failed:\n{}", exit.output);
        let store = Store::connect(&url, 1).await.unwrap();
        let run = store.runs(&[], 1).await.unwrap().pop().unwrap();
        let report = store.report(run.id).await.unwrap();
        let written = store.counts(run.id).await.unwrap().get(ItemState::Written);
        store.close().await;
        println!(
            "| {} | {written} | {} | {:.1} s | {:.0} | {:.1} s | {:.1} s | {} |",
            if postgres { "postgres" } else { "sqlite" },
            report.verified,
            exit.wall.as_secs_f64(),
            written as f64 / exit.wall.as_secs_f64(),
            exit.cpu.as_secs_f64(),
            harness.as_secs_f64(),
            mb(exit.peak_rss_kb)
        );
    }
}

async fn memory(sizes: &[u64]) {
    println!("\n### Memory: products discovered into the queue (SQLite) while enrichment runs at 1 s model latency\n");
    println!("| products | discovered | time to discover | peak RSS (enrichd) |");
    println!("|---|---|---|---|");
    for &items in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (_shop, _provider, [s, p]) = sandboxes(items, 1, Duration::from_secs(1)).await;
        let url = database(dir.path(), false);
        teststore_config(
            dir.path(),
            TestStoreCase {
                database: &url,
                store: s,
                provider: p,
                concurrency: 16,
                provider_limit: "",
                max_connections: 8,
            },
        );
        let store = Store::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        let discovered = {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move {
                    match store.runs(&[], 1).await.ok().and_then(|mut r| r.pop()) {
                        Some(run) => run.status != RunStatus::Discovering,
                        None => false,
                    }
                }
            }
        };
        let started = Instant::now();
        let exit = enrichd(dir.path(), &["run", "catalogue"], Some(discovered)).await;
        let took = started.elapsed();
        let run = store.runs(&[], 1).await.unwrap().pop().unwrap();
        store.close().await;
        println!("| {items} | {} | {:.1} s | {} |", run.discovered, took.as_secs_f64(), mb(exit.peak_rss_kb));
    }
}

async fn writes(items: usize) {
    println!(
        "\n### Write efficiency: WooCommerce sandbox (HTTPS), {items} products, half missing a description, product_copy task, concurrency 8\n"
    );
    println!(
        "| model latency | write_linger_ms | written | write batches | reads before writing + verification reads | requests per 100 written | wall time |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (latency_ms, linger) in [(0, 2_000), (400, 0), (400, 2_000)] {
        writes_case(items, latency_ms, linger).await;
    }
}

async fn writes_case(items: usize, latency_ms: u64, linger: u64) {
    let dir = tempfile::tempdir().unwrap();
    let shop = WooSandbox::with_products(generate_catalogue(items, 7, 0.5));
    let shop_addr = shop.start_https("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    provider.set_faults(Faults { latency: Duration::from_millis(latency_ms), ..Default::default() });
    let provider_addr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pem = dir.path().join("shop.pem");
    std::fs::write(&pem, shop.certificate_pem()).unwrap();
    std::fs::create_dir_all(dir.path().join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/product_copy.toml"),
        dir.path().join("tasks/product_copy.toml"),
    )
    .unwrap();
    let url = database(dir.path(), false);
    // The daemon's default poll interval (500 ms), as a user runs it.
    let text = format!(
        r#"
[database]
url = "{url}"
[connections.shop]
kind = "woocommerce"
base_url = "https://{shop_addr}"
consumer_key = "${{BENCH_WOO_CK}}"
consumer_secret = "${{BENCH_WOO_CS}}"
ca_cert = "{pem}"
[providers.sim]
kind = "openai"
base_url = "http://{provider_addr}/v1"
api_key = "${{BENCH_PROVIDER_KEY}}"
[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "product_copy"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 8
write_linger_ms = {linger}
select = {{ missing = ["description"], fill_all_missing = true }}
review = {{ policy = "none" }}
vars = {{ language = "English", brand_voice = "plain and factual" }}
"#,
        pem = pem.display()
    );
    std::fs::write(dir.path().join("enrichd.toml"), text).unwrap();
    let started = Instant::now();
    let exit = enrichd(dir.path(), &["run", "catalogue"], None::<fn() -> std::future::Ready<bool>>).await;
    let took = started.elapsed();
    assert!(exit.success, "enrichd run failed:\n{}", exit.output);
    let written = counts(&url).await.get(ItemState::Written);
    let stats = shop.stats();
    // Listing pages (the last one is the empty one or the total says so) and the SEO detection page.
    let pages = (items as u64).div_ceil(100) + 1;
    let reads = (stats.list + stats.get).saturating_sub(pages + 1);
    println!(
        "| {latency_ms} ms | {linger} | {written} | {} | {reads} | {:.1} | {:.1} s |",
        stats.batch,
        (stats.batch + reads) as f64 * 100.0 / written.max(1) as f64,
        took.as_secs_f64()
    );
}

fn main() {
    let mut scenarios: Vec<String> = Vec::new();
    let mut size: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--items" => size = args.next().and_then(|v| v.parse().ok()),
            a if a.starts_with("--") => {} // cargo bench passes --bench
            a => scenarios.push(a.to_owned()),
        }
    }
    if scenarios.is_empty() || scenarios.iter().any(|s| s == "all") {
        scenarios = ["latency", "rate", "overhead", "memory", "writes"].map(String::from).to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("enrichd end-to-end benchmarks: release build, {cpus} CPUs, sandboxes in the harness process");
    for scenario in &scenarios {
        runtime.block_on(async {
            match scenario.as_str() {
                "latency" => latency(size.unwrap_or(2_000)).await,
                "rate" => {
                    rate(size.unwrap_or(2_000), 100.0, 50).await;
                    rate(size.map_or(1_000, |s| s / 2), 50.0, 200).await;
                }
                "overhead" => overhead(size.unwrap_or(100_000)).await,
                "memory" => match size {
                    Some(s) => memory(&[s]).await,
                    None => memory(&[100_000, 1_000_000]).await,
                },
                "writes" => writes(size.unwrap_or(2_000) as usize).await,
                other => panic!("unknown scenario {other:?} (latency, rate, overhead, memory, writes, all)"),
            }
        });
    }
}
