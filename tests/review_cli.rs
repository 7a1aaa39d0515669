//! `enrichd review …` and `enrichd revert` from outside (the real binary), on SQLite and Postgres:
//! a `sample_first` run held after its sample, listed, shown, edited, decided one by one and in bulk
//! (count first, then `--confirm N`), released, finished by `enrichd run`, and reverted.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::harness::{harness, start_run, work};
use common::process::{self, Env, text};
use common::{ConfigOptions, TestDb};
use enrichd::store::{ItemState, ReviewPhase, RunStatus};
use serde_json::Value;

fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output(config, args, &Env::default())
}

/// Runs `args`, expects exit `code`, returns stdout.
fn expect(config: &Path, args: &[&str], code: i32) -> String {
    let out = enrichd(config, args);
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(config: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&expect(config, args, 0)).unwrap()
}

async fn review_and_revert_from_the_command_line(db: &TestDb) {
    let options = ConfigOptions { policy: "sample_first", review_extra: ", sample = 5", ..Default::default() };
    let h = harness(db, 12, 1, options).await;
    let config = h._dir.path().join("enrichd.toml");
    let run = start_run(&h.engine).await;
    let held = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(held.review_phase, Some(ReviewPhase::SampleReview));
    let r = run.id.to_string();
    let cfg = config.as_path();

    let listing = expect(cfg, &["review", "list", "--run", &r], 0);
    assert!(listing.contains("sample of run"), "{listing}");
    assert!(listing.contains("5 item(s) match"), "{listing}");
    let queue = json_of(cfg, &["review", "list", "--run", &r, "--json"]);
    let ids: Vec<String> =
        queue["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap().to_string()).collect();
    assert_eq!((queue["total"].as_i64(), queue["sample"]["total"].as_i64()), (Some(5), Some(5)));

    // Decisions need a name; edits then approvals one by one.
    let out = enrichd(cfg, &["review", "approve", &ids[0]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    expect(cfg, &["review", "edit", &ids[0], "description", "Hand-written, long enough.", "--as", "eve"], 0);
    expect(cfg, &["review", "approve", &ids[0], "--as", "eve"], 0);
    expect(cfg, &["review", "reject", &ids[1], "--reason", "bland", "--as", "eve"], 0);
    let shown = expect(cfg, &["review", "show", &ids[0]], 0);
    assert!(shown.contains("edited:   Hand-written, long enough."), "{shown}");
    assert!(shown.contains("eve: edited, waiting for review → approved, to be written"), "{shown}");
    let history = json_of(cfg, &["review", "show", &ids[1], "--json"]);
    let last = history["events"].as_array().unwrap().last().unwrap();
    assert_eq!((last["to_state"].as_str(), last["actor"].as_str()), (Some("rejected"), Some("eve")));

    // Bulk over a filter: a count first, a stale count refused, then the confirmed action.
    let dry = expect(cfg, &["review", "approve", "--run", &r, "--as", "eve"], 0);
    assert!(dry.contains("3 item(s) match; nothing changed"), "{dry}");
    expect(
        cfg,
        &["review", "approve", "--run", &r, "--filter", "text=zzz-no-match", "--confirm", "3", "--as", "eve"],
        1,
    );
    expect(cfg, &["review", "approve", "--run", &r, "--filter", "state=proposed", "--confirm", "3", "--as", "eve"], 0);
    assert_eq!(db.store.review_count(&Default::default()).await.unwrap(), 0);

    // Release by name, then `enrichd run` finishes the rest (approved as it arrives).
    expect(cfg, &["review", "release", "--run", &r, "--as", "eve"], 0);
    expect(cfg, &["review", "release", "--run", &r, "--as", "eve"], 1);
    expect(cfg, &["run", "catalogue"], 0);
    let after = db.store.run(run.id).await.unwrap();
    assert_eq!(after.status, RunStatus::Done, "{:?}", after.status_reason);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Rejected)), (11, 1), "{counts:?}");
    let edited: u64 = db.store.item(ids[0].parse().unwrap()).await.unwrap().external_id.parse().unwrap();
    assert_eq!(h.sb.store.record("product", edited).unwrap().1["description"], "Hand-written, long enough.");

    // Undo one item, then the rest of the run; an item edited upstream is a conflict (exit 1).
    expect(cfg, &["revert", "--item", &ids[0], "--as", "eve"], 0);
    assert_eq!(h.sb.store.record("product", edited).unwrap().1["description"], "");
    let other = db.store.items(run.id, Some(ItemState::Written), 1).await.unwrap().remove(0);
    h.sb.store.edit("product", other.external_id.parse().unwrap(), "description", "<p>Mine.</p>".into());
    let count = expect(cfg, &["revert", "--run", &r, "--as", "eve"], 0);
    assert!(count.contains("10 written item(s) in run"), "{count}");
    assert!(count.contains("--confirm 10"), "{count}");
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Written), 10, "a count reverts nothing");
    expect(cfg, &["revert", "--run", &r, "--confirm", "11", "--as", "eve"], 1);
    let out = enrichd(cfg, &["revert", "--run", &r, "--confirm", "10", "--as", "eve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("9 of 10 item(s) reverted"), "{}", text(&out));
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Reverted), counts.get(ItemState::RevertConflict)), (10, 1), "{counts:?}");
    assert_eq!(
        h.sb.store.record("product", other.external_id.parse().unwrap()).unwrap().1["description"],
        "<p>Mine.</p>"
    );
    expect(cfg, &["revert", "--item", "999999", "--as", "eve"], 1);
}

on_both_backends! {
    review_cli => review_and_revert_from_the_command_line;
}
