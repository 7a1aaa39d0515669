//! Crash recovery with the real binary: `enrichd run` is SIGKILLed twice mid-run and restarted, on the
//! teststore pipeline (3,000 items) and on the WooCommerce catalogue pipeline (1,200 products over
//! HTTPS); every item must end terminal, every record written with its own answer, nothing lost, and
//! nothing done twice beyond the leases that were in flight at each kill.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::{Enrichd, Env};
use common::{ConfigOptions, TestDb, expected_description, sandboxes, write_config};
use enrichd::store::ItemState;
use serde_json::json;

const ITEMS: u64 = 3_000;

/// `enrichd run catalogue`, with the WooCommerce credentials its config names.
fn spawn_run(config: &std::path::Path, log: &std::path::Path) -> Enrichd {
    Enrichd::run_with(config, "catalogue", log.to_path_buf(), &Env { vars: &common::woo::woo_env(), ..Env::default() })
}

async fn leased(db: &TestDb) -> (i64, i64) {
    let runs = db.store.runs(&[], 10).await.unwrap();
    let mut enriching = 0;
    let mut writing = 0;
    for run in runs {
        let c = db.store.counts(run.id).await.unwrap();
        enriching += c.get(ItemState::Enriching);
        writing += c.get(ItemState::Writing);
    }
    (enriching, writing)
}

/// Runs `enrichd run` and SIGKILLs it once the provider has answered each of `kill_at` requests;
/// returns the enrichment and write leases that were in flight at the kills.
async fn kill_twice(
    db: &TestDb,
    config: &std::path::Path,
    dir: &std::path::Path,
    provider: &common::ProviderSandbox,
    kill_at: [u64; 2],
) -> (i64, i64) {
    let mut in_flight_enrich = 0;
    let mut in_flight_write = 0;
    for (round, kill_at) in [(1, kill_at[0]), (2, kill_at[1])] {
        let log = dir.join(format!("run{round}.log"));
        let mut enrichd = spawn_run(config, &log);
        let start = Instant::now();
        while provider.stats().answered < kill_at {
            assert!(enrichd.alive(), "round {round}: enrichd exited before it was killed: {}", enrichd.output());
            assert!(start.elapsed() < Duration::from_secs(120), "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        enrichd.kill9();
        let (e, w) = leased(db).await;
        eprintln!(
            "round {round}: killed at {} answers with {e} enriching and {w} writing leases in flight",
            provider.stats().answered
        );
        in_flight_enrich += e;
        in_flight_write += w;
    }
    (in_flight_enrich, in_flight_write)
}

/// Runs `enrichd run` to the end; returns its output after checking it succeeded and resumed run 1.
async fn finish(config: &std::path::Path, log: &std::path::Path) -> String {
    let (status, output) = spawn_run(config, log).wait(Duration::from_secs(180)).await;
    assert!(status.success(), "final run failed: {output}");
    assert!(output.contains("resuming run 1"), "the restart must resume the interrupted run: {output}");
    output
}

async fn killed_twice_then_finished(db: &TestDb) {
    let sb = sandboxes(ITEMS, 1).await;
    sb.provider
        .set_faults(enrichd::sandbox::provider::Faults { latency: Duration::from_millis(8), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url,
        &sb,
        &ConfigOptions { lease_seconds: 2.0, concurrency: 16, ..Default::default() },
    );

    let (in_flight_enrich, in_flight_write) = kill_twice(db, &config, dir.path(), &sb.provider, [900, 2_000]).await;
    let output = finish(&config, &dir.path().join("final.log")).await;

    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1, "restarts resume; they do not start new runs");
    let counts = db.store.counts(runs[0].id).await.unwrap();
    assert_eq!(counts.total(), ITEMS as i64, "every record has exactly one item");
    assert_eq!(counts.get(ItemState::Written), ITEMS as i64, "{counts:?}\n{output}");

    let mut writes: HashMap<String, usize> = HashMap::new();
    for w in sb.store.writes() {
        *writes.entry(w.id).or_default() += 1;
    }
    let extra_writes: usize = writes.values().map(|n| n - 1).sum();
    for id in 1..=ITEMS {
        assert_eq!(
            sb.store.record("product", id).unwrap().1["description"],
            json!(expected_description(id)),
            "product {id}"
        );
        assert!(writes.contains_key(&id.to_string()), "product {id} never written");
    }
    assert!(
        extra_writes as i64 <= in_flight_write,
        "{extra_writes} records written twice, but only {in_flight_write} writes were in flight at the kills"
    );
    let calls = sb.provider.stats().answered as i64;
    assert!(
        calls <= ITEMS as i64 + in_flight_enrich,
        "{calls} model calls for {ITEMS} items with {in_flight_enrich} enrichment leases in flight at the kills"
    );
    eprintln!(
        "model calls {calls} (items {ITEMS}, in flight at kills {in_flight_enrich}); extra writes {extra_writes} (in flight {in_flight_write})"
    );
}

const PRODUCTS: usize = 1_200;

/// The WooCommerce catalogue pipeline, every product bare, killed twice and finished.
async fn woocommerce_killed_twice_then_finished(db: &TestDb) {
    use enrichd_woocommerce::sandbox::{WooSandbox, Writer, generate_catalogue};
    let sb = common::woo::woo_sandboxes(WooSandbox::with_products(generate_catalogue(PRODUCTS, 5, 1.0))).await;
    sb.provider
        .set_faults(enrichd::sandbox::provider::Faults { latency: Duration::from_millis(8), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = common::woo::write_woo_config(dir.path(), &db.url, &sb, "none", 5, 2.0, "");
    let ids = sb.shop.product_ids();
    assert_eq!(ids.len(), PRODUCTS);

    let (in_flight_enrich, in_flight_write) = kill_twice(db, &config, dir.path(), &sb.provider, [300, 800]).await;
    let output = finish(&config, &dir.path().join("final.log")).await;

    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1, "restarts resume; they do not start new runs");
    let counts = db.store.counts(runs[0].id).await.unwrap();
    assert_eq!(counts.total(), PRODUCTS as i64, "every product has exactly one item");
    assert_eq!(counts.get(ItemState::Written), PRODUCTS as i64, "{counts:?}\n{output}");

    let mut writes: HashMap<u64, usize> = HashMap::new();
    for w in sb.shop.writes().into_iter().filter(|w| w.by == Writer::Api) {
        *writes.entry(w.product_id).or_default() += 1;
    }
    let extra_writes: usize = writes.values().map(|n| n - 1).sum();
    for id in &ids {
        let description = sb.shop.product(*id).unwrap()["description"].as_str().unwrap().to_owned();
        // The simulated model's answer names the product its prompt was about.
        assert!(description.contains(&format!("product {id} ")), "product {id} got {description:?}");
        assert!(writes.contains_key(id), "product {id} never written");
    }
    assert!(
        extra_writes as i64 <= in_flight_write,
        "{extra_writes} products written twice, but only {in_flight_write} writes were in flight at the kills"
    );
    let calls = sb.provider.stats().answered as i64;
    assert!(
        calls <= PRODUCTS as i64 + in_flight_enrich,
        "{calls} model calls for {PRODUCTS} products with {in_flight_enrich} enrichment leases in flight at the kills"
    );
    eprintln!(
        "woocommerce: model calls {calls} (products {PRODUCTS}, in flight at kills {in_flight_enrich}); extra writes {extra_writes} (in flight {in_flight_write})"
    );
}

on_both_backends! {
    crash_recovery => killed_twice_then_finished;
    woocommerce_crash_recovery => woocommerce_killed_twice_then_finished;
}
