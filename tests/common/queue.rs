//! A review queue made straight in the store: items of one run, each proposed with a given
//! proposal (warnings, confidence and all), for tests of how the queue lists, counts and filters
//! them without a model or a platform in the way.

use std::time::Duration;

use enrichd::store::{Claim, NewItem, NewRun, Proposal, RunStart, Store, Usage, Work};
use serde_json::Value;

const OWNER: &str = "queue-seeder";

/// A run of `pipeline` whose items (record `input`, proposal) all wait for review; returns the
/// run id and the item ids in the order given.
pub async fn proposals_waiting(store: &Store, pipeline: &str, items: Vec<(Value, Proposal)>) -> (i64, Vec<i64>) {
    let new_run = NewRun {
        pipeline: pipeline.into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(run) = store.create_run(&new_run).await.unwrap() else { panic!("run not created") };
    store.claim_discovery(run.id, OWNER, Duration::from_secs(60)).await.unwrap().expect("discovery lease");
    let records: Vec<NewItem> = items
        .iter()
        .enumerate()
        .map(|(n, (input, _))| NewItem {
            entity: "product".into(),
            external_id: format!("r{n}"),
            record_version: "v1".into(),
            input: input.to_string(),
            input_hash: format!("hash-{n}"),
            skip: None,
            attachments: Vec::new(),
        })
        .collect();
    store.add_discovered(run.id, pipeline, "t1", OWNER, &records, None).await.unwrap();
    let claim = Claim {
        pipeline,
        run_id: Some(run.id),
        work: Work::Enrich,
        owner: OWNER,
        limit: items.len(),
        lease: Duration::from_secs(60),
    };
    let claimed = store.claim(&claim).await.unwrap();
    assert_eq!(claimed.len(), items.len(), "every item claimed");
    let mut ids = Vec::new();
    for (n, (_, proposal)) in items.iter().enumerate() {
        let item = claimed.iter().find(|i| i.external_id == format!("r{n}")).expect("claimed item");
        store.propose(item, OWNER, proposal, "{}", Usage::default(), None).await.unwrap();
        ids.push(item.id);
    }
    (run.id, ids)
}
