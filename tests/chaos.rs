//! Chaos tests with the real binary over real HTTP: `enrichd` runs as child processes against the
//! teststore and provider sandboxes served from this test process, which count every model call,
//! every write (with the values written) and every request's arrival.
//!
//! - SIGKILL at random moments of a run, restarting each time: every item ends terminal, nothing is
//!   lost, no record is written twice with different values, and model calls stay within items +
//!   the enrichment leases in flight at the kills.
//! - A fault mix on both sandboxes (10% 5xx, 5% 429 with `Retry-After`, 2% hung requests — for
//!   writes also writes that land but whose response hangs —, 1% malformed model JSON): no item is
//!   stuck, every item is written or dead with its reason. And the nasty case alone, every time:
//!   each write lands but its response is lost, and nothing is written twice.
//! - Three daemons on one Postgres on one run: one model call and one write per item, and the
//!   configured request rate is kept across the three.
//!
//! The short versions always run; `ENRICHD_CHAOS_LONG=1` runs the full sizes (10,000 items,
//! 20 kills). Every random choice comes from a seed printed at the start of each test;
//! `ENRICHD_CHAOS_SEED=<n>` replays it (the fault draws are seeded, but which request meets which
//! draw still depends on arrival order).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::process::Enrichd;
use common::{ConfigOptions, TestDb, expected_description, sandboxes, write_config};
use enrichd::sandbox::provider::Faults as ModelFaults;
use enrichd::store::{ItemState, NewRun, RunStart, RunStatus};
use enrichd_teststore::sandbox::Faults as StoreFaults;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Whether to run the full sizes.
fn long() -> bool {
    std::env::var("ENRICHD_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// The seed for test `name`: `ENRICHD_CHAOS_SEED`, or a fresh one; printed either way.
fn seed(name: &str) -> u64 {
    let seed = match std::env::var("ENRICHD_CHAOS_SEED") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("ENRICHD_CHAOS_SEED must be an unsigned integer, got {v:?}")),
        Err(_) => rand::rng().random_range(0..1_000_000_000u64),
    };
    eprintln!("{name}: seed {seed} (replay with ENRICHD_CHAOS_SEED={seed})");
    seed
}

/// Every item of every run, by state.
async fn items_by_state(db: &TestDb, limit: i64) -> BTreeMap<String, Vec<enrichd::store::Item>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for run in db.store.runs(&[], 100).await.unwrap() {
        for item in db.store.items(run.id, None, limit).await.unwrap() {
            out.entry(format!("{:?}", item.state)).or_default().push(item);
        }
    }
    out
}

/// Checks that no record was written twice with different values; returns the number of writes
/// beyond the first per record.
fn repeated_writes(sb: &common::Sandboxes) -> usize {
    let mut by_record: HashMap<String, Vec<serde_json::Map<String, serde_json::Value>>> = HashMap::new();
    for w in sb.store.writes() {
        by_record.entry(w.id).or_default().push(w.fields);
    }
    for (id, writes) in &by_record {
        assert!(writes.iter().all(|w| *w == writes[0]), "record {id} was written with different values: {writes:?}");
    }
    by_record.values().map(|w| w.len() - 1).sum()
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at random moments

async fn killed_at_random_moments(db: &TestDb) {
    let (items, kills) = if long() { (10_000u64, 20usize) } else { (2_000, 5) };
    let mut rng = StdRng::seed_from_u64(seed("kill -9"));
    let sb = sandboxes(items, 1).await;
    sb.provider.set_faults(ModelFaults { latency: Duration::from_millis(5), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url,
        &sb,
        &ConfigOptions { lease_seconds: 2.0, concurrency: 16, ..Default::default() },
    );

    // A moment is a number of model answers (from 0: before the run even exists) plus up to 40 ms.
    let mut moments: Vec<(u64, u64)> =
        (0..kills).map(|_| (rng.random_range(0..items * 9 / 10), rng.random_range(0..40))).collect();
    moments.sort();
    // The leases in flight at the kills, each counted once even when it outlives several kills.
    let mut enrich_leases = BTreeSet::new();
    let mut write_leases = BTreeSet::new();
    for (round, (answers, jitter_ms)) in moments.iter().enumerate() {
        let mut enrichd = Enrichd::run(&config, "catalogue", dir.path().join(format!("run{round}.log")));
        let start = Instant::now();
        while sb.provider.stats().answered < *answers {
            assert!(enrichd.alive(), "round {round}: enrichd exited before it was killed:\n{}", enrichd.output());
            assert!(start.elapsed() < Duration::from_secs(120), "round {round}: no progress:\n{}", enrichd.output());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(*jitter_ms)).await;
        enrichd.kill9();
        let leased = items_by_state(db, items as i64 + 10).await;
        for (state, set) in [("Enriching", &mut enrich_leases), ("Writing", &mut write_leases)] {
            for item in leased.get(state).into_iter().flatten() {
                set.insert((item.id, item.lease_owner.clone()));
            }
        }
        eprintln!(
            "kill {round}: at {} answers (+{jitter_ms} ms); leases in flight so far: {} enriching, {} writing",
            sb.provider.stats().answered,
            enrich_leases.len(),
            write_leases.len()
        );
    }
    let within = Duration::from_secs(if long() { 900 } else { 180 });
    let (status, output) = Enrichd::run(&config, "catalogue", dir.path().join("final.log")).wait(within).await;
    assert!(status.success(), "the final run failed: {output}");

    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1, "restarts resume the run; they do not start new ones");
    let counts = db.store.counts(runs[0].id).await.unwrap();
    assert_eq!(counts.total(), items as i64, "every record has exactly one item: {counts:?}");
    assert_eq!(counts.get(ItemState::Written), items as i64, "every item ends written: {counts:?}\n{output}");
    for id in 1..=items {
        let description = &sb.store.record("product", id).unwrap().1["description"];
        assert_eq!(*description, json!(expected_description(id)), "product {id}");
    }
    let extra_writes = repeated_writes(&sb);
    assert!(
        extra_writes <= write_leases.len(),
        "{extra_writes} repeated writes, but only {} write leases were in flight at the kills",
        write_leases.len()
    );
    let calls = sb.provider.stats().answered;
    assert!(
        calls <= items + enrich_leases.len() as u64,
        "{calls} model calls for {items} items with {} enrichment leases in flight at the kills",
        enrich_leases.len()
    );
    let mut per_record: HashMap<String, u64> = HashMap::new();
    for subject in sb.provider.subjects() {
        *per_record.entry(subject).or_default() += 1;
    }
    assert_eq!(per_record.len() as u64, items, "every record got a model call");
    eprintln!(
        "kill -9 ×{kills} on {items} items: {calls} model calls ({} enrichment leases in flight at the kills), \
         {extra_writes} repeated writes ({} write leases in flight)",
        enrich_leases.len(),
        write_leases.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Fault mix on both sandboxes

async fn fault_mix_on_both_sides(db: &TestDb) {
    let items: u64 = if long() { 10_000 } else { 1_500 };
    let seed = seed("fault mix");
    let sb = sandboxes(items, 1).await;
    sb.store.set_seed(seed);
    sb.provider.set_seed(seed.wrapping_add(1));
    let hang = Duration::from_secs(3);
    sb.store.set_faults(StoreFaults {
        server_error_rate: 0.10,
        rate_limit_rate: 0.05,
        timeout_rate: 0.02,
        lost_response_rate: 0.02,
        hang,
        ..Default::default()
    });
    sb.provider.set_faults(ModelFaults {
        latency: Duration::from_millis(5),
        server_error_rate: 0.10,
        rate_limit_rate: 0.05,
        retry_after: Duration::from_millis(200),
        timeout_rate: 0.02,
        hang,
        invalid_json_rate: 0.01,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions {
        concurrency: 16,
        store_timeout_seconds: 1.0,
        provider_timeout_seconds: 1.0,
        ..Default::default()
    };
    let config = write_config(dir.path(), &db.url, &sb, &options);
    let within = Duration::from_secs(if long() { 900 } else { 180 });
    let (status, output) = Enrichd::run(&config, "catalogue", dir.path().join("run.log")).wait(within).await;

    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Done, "{:?}", runs[0].status_reason);
    let states = items_by_state(db, items as i64 + 10).await;
    assert_eq!(states.values().map(Vec::len).sum::<usize>() as u64, items, "one item per record");
    let stuck: Vec<_> = states
        .iter()
        .filter(|(state, _)| *state != "Written" && *state != "Dead")
        .flat_map(|(_, items)| items.iter().take(5).map(|i| (&i.external_id, i.state, &i.last_error)))
        .collect();
    assert!(stuck.is_empty(), "items neither written nor dead: {stuck:?}\n{output}");
    let written = states.get("Written").map_or(&[][..], Vec::as_slice);
    let dead = states.get("Dead").map_or(&[][..], Vec::as_slice);
    for item in written {
        let id: u64 = item.external_id.parse().unwrap();
        let description = &sb.store.record("product", id).unwrap().1["description"];
        assert_eq!(*description, json!(expected_description(id)), "written product {id}");
    }
    // `enrichd run` exits non-zero when items died, and says so; otherwise it succeeds.
    assert!(
        status.success() || (!dead.is_empty() && output.contains(&format!("{} item(s) dead", dead.len()))),
        "enrichd run exited {status:?} with {} dead items: {output}",
        dead.len()
    );
    let writes = sb.store.writes();
    for item in dead {
        let reason = item.last_error.as_deref().unwrap_or_default();
        assert!(!reason.trim().is_empty(), "dead item {} (record {}) has no reason", item.id, item.external_id);
        assert!(!writes.iter().any(|w| w.id == item.external_id), "dead record {} was written", item.external_id);
    }
    repeated_writes(&sb);

    // The faults really happened, on both sides.
    let store = sb.store.stats();
    let model = sb.provider.stats();
    assert!(
        store.rejected_by_faults + store.hung + store.lost_responses > 0,
        "the store injected no faults: {store:?}"
    );
    assert!(model.faults > 0, "the provider injected no faults: {model:?}");
    let reasons: BTreeSet<&str> = dead.iter().filter_map(|i| i.last_error.as_deref()).collect();
    eprintln!(
        "fault mix on {items} items: {} written, {} dead {reasons:?}; store {store:?}; model {model:?}",
        written.len(),
        dead.len()
    );
}

/// The nasty case of the fault mix, every time: each write lands but its response hangs past the
/// client's timeout. The engine must find its own values on the record and call the item written,
/// without writing it again.
async fn every_write_response_lost(db: &TestDb) {
    let items = 60;
    let sb = sandboxes(items, 1).await;
    sb.store.set_faults(StoreFaults { lost_response_rate: 1.0, hang: Duration::from_secs(3), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions { store_timeout_seconds: 1.0, ..Default::default() };
    let config = write_config(dir.path(), &db.url, &sb, &options);
    let (status, output) =
        Enrichd::run(&config, "catalogue", dir.path().join("run.log")).wait(Duration::from_secs(120)).await;
    assert!(status.success(), "enrichd run failed: {output}");
    let runs = db.store.runs(&[], 10).await.unwrap();
    let counts = db.store.counts(runs[0].id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written), items as i64, "{counts:?}\n{output}");
    assert!(sb.store.stats().lost_responses > 0, "no write response was lost: {:?}", sb.store.stats());
    assert_eq!(repeated_writes(&sb), 0, "a write whose response was lost was sent again");
    for id in 1..=items {
        let description = &sb.store.record("product", id).unwrap().1["description"];
        assert_eq!(*description, json!(expected_description(id)), "product {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Three daemons on one Postgres

/// The provider limit the three daemons share (the `requests_per_minute` line of their config).
const REQUESTS_PER_MINUTE: f64 = 3_600.0;

async fn three_daemons_one_run(db: &TestDb) {
    let items: u64 = if long() { 10_000 } else { 2_000 };
    let per_minute = REQUESTS_PER_MINUTE;
    seed("three daemons");
    let sb = sandboxes(items, 1).await;
    sb.provider.set_faults(ModelFaults { latency: Duration::from_millis(20), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions { concurrency: 8, extra_provider: "requests_per_minute = 3600", ..Default::default() };
    let config = write_config(dir.path(), &db.url, &sb, &options);
    let daemons: Vec<Enrichd> =
        (0..3).map(|n| Enrichd::daemon(&config, dir.path().join(format!("daemon{n}.log")))).collect();
    // Let every daemon see the other two in the heartbeat table before work starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 5,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!("a run already existed") };
    let within = Duration::from_secs_f64(items as f64 / (per_minute / 60.0) * 2.0 + 60.0);
    let start = Instant::now();
    while db.store.run(run.id).await.unwrap().status != RunStatus::Done {
        let counts = db.store.counts(run.id).await.unwrap();
        assert!(
            start.elapsed() < within,
            "the run did not finish within {within:?}: {counts:?}\n{}",
            daemons.iter().map(Enrichd::output).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    for d in &daemons {
        d.sigterm();
    }
    for d in daemons {
        let (status, output) = d.wait(Duration::from_secs(20)).await;
        assert!(status.success(), "daemon exit {status:?}: {output}");
    }

    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written), items as i64, "{counts:?}");
    let model = sb.provider.stats();
    assert_eq!(model.answered, items, "one model call per item across the three daemons: {model:?}");
    assert_eq!(model.requests, items, "no request was refused or repeated: {model:?}");
    let writes = sb.store.writes();
    let records: BTreeSet<&str> = writes.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(writes.len() as u64, items, "one write per item");
    assert_eq!(records.len() as u64, items, "every record written once");

    // The rate limit across the three: in any one second, no more requests than the limit plus the
    // burst each daemon's share allows (half a second of its share, see src/provider/limit.rs), plus
    // 5% for requests the gates released on schedule reaching the sandbox bunched together. Three
    // daemons each at the full limit reach about twice this.
    let per_second = per_minute / 60.0;
    let burst_each = ((per_second / 3.0 / 2.0).floor()).max(1.0);
    let allowed = (per_second * 1.05 + 3.0 * burst_each).ceil() as usize;
    let arrivals = sb.provider.arrivals();
    let mut busiest = 0;
    let mut from = 0;
    for (to, at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[from]) >= Duration::from_secs(1) {
            from += 1;
        }
        busiest = busiest.max(to - from + 1);
    }
    eprintln!(
        "three daemons, {items} items in {took:.1?} ({:.1}/s): busiest second {busiest} requests, allowed {allowed} \
         (limit {per_second}/s)",
        items as f64 / took.as_secs_f64()
    );
    assert!(busiest <= allowed, "{busiest} requests in one second; the shared limit allows {allowed}");
}

on_both_backends! {
    kill9_at_random_moments => killed_at_random_moments;
    fault_mix => fault_mix_on_both_sides;
    lost_write_responses => every_write_response_lost;
}

mod three_daemons {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(db) = crate::common::postgres().await else { return };
        super::three_daemons_one_run(&db).await;
        db.cleanup().await;
    }
}
