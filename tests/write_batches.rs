//! Writes go out in full batches. With a model that takes a while to answer, approvals trickle in;
//! written as they come, a run of a few hundred products costs the store dozens of small
//! `products/batch` calls and as many re-reads (seen against a real store: 112 products, 13 batch
//! writes and 26 reads). Approved items wait up to `write_linger_ms` for a batch to fill while more
//! of the run is being enriched — never longer — and the last, partial batch goes out as soon as
//! nothing more is coming. Engine in-process over HTTPS against the WooCommerce sandbox, SQLite and
//! Postgres.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use common::woo::woo_with;
use enrichd::sandbox::provider::Faults;
use enrichd::store::{ItemState, RunStatus};
use enrichd_woocommerce::sandbox::{WooSandbox, generate_catalogue};

/// Runs 150 products, all missing a description, through a model answering in 100 ms (16 in
/// flight), with `write_linger_ms = linger`; returns (written, batch writes, reads, wall time).
async fn run_with_linger(db: &TestDb, linger: u64) -> (i64, u64, u64, Duration) {
    let shop = WooSandbox::with_products(generate_catalogue(150, 11, 1.0));
    let w = woo_with(db, shop, "none", 3, &format!("write_linger_ms = {linger}")).await;
    w.provider.set_faults(Faults { latency: Duration::from_millis(100), ..Default::default() });
    let run = common::harness::start_run(&w.engine).await;
    let started = Instant::now();
    let run = common::woo::work_until_idle(&w.engine, run.id, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let written = w.engine.store.counts(run.id).await.unwrap().get(ItemState::Written);
    let stats = w.shop.stats();
    // Listing: two pages of 100 (the second one short, so the last), and one page of meta for
    // the SEO plugin detection.
    let reads = (stats.list + stats.get).saturating_sub(3);
    (written, stats.batch, reads, took)
}

async fn approvals_wait_for_a_full_batch(db: TestDb) {
    let (written, batches, reads, took) = run_with_linger(&db, 5_000).await;
    assert_eq!(written, 150);
    // 100 + 50: the first batch fills while the model still answers; the rest goes once nothing
    // more is coming, without waiting out the linger.
    assert!(batches <= 3, "150 products in {batches} batch writes with a 5 s linger");
    assert!(reads <= 2 * batches, "one re-read before and one read-back after each batch: {reads} reads");
    assert!(took < Duration::from_secs(15), "the last partial batch does not wait out the linger: {took:?}");
    db.cleanup().await;
}

async fn without_linger_writes_trickle(db: TestDb) {
    // The behaviour the linger exists for: written as approved, the same run takes many batches.
    let (written, batches, _, _) = run_with_linger(&db, 0).await;
    assert_eq!(written, 150);
    assert!(batches >= 6, "answers arriving over ~1 s with a 20 ms poll make many small batches: {batches}");
    db.cleanup().await;
}

#[tokio::test]
async fn approvals_wait_for_a_full_batch_sqlite() {
    approvals_wait_for_a_full_batch(common::sqlite().await).await;
}

#[tokio::test]
async fn approvals_wait_for_a_full_batch_postgres() {
    let Some(db) = common::postgres().await else { return };
    approvals_wait_for_a_full_batch(db).await;
}

#[tokio::test]
async fn without_linger_writes_trickle_sqlite() {
    without_linger_writes_trickle(common::sqlite().await).await;
}

#[tokio::test]
async fn a_linger_past_ten_minutes_is_refused() {
    let db = common::sqlite().await;
    let shop = WooSandbox::with_products(generate_catalogue(1, 1, 1.0));
    let sb = common::woo::woo_sandboxes(shop).await;
    let dir = tempfile::tempdir().unwrap();
    let path = common::woo::write_woo_config(dir.path(), &db.url, &sb, "none", 3, 10.0, "write_linger_ms = 600001");
    common::woo::set_woo_env();
    let err = enrichd::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("pipelines.catalogue.write_linger_ms"), "{err}");
    db.cleanup().await;
}
