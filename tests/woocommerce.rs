//! The WooCommerce catalogue pipeline end to end over real HTTP(S): the WooCommerce sandbox (HTTPS,
//! its own certificate trusted through `ca_cert`), the provider sandbox, the engine in-process, and
//! a real database (SQLite and Postgres). Products come from the sandbox's hardware catalogue
//! generator; the task is the shipped `config/tasks/product_copy.toml`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use enrichd::engine::Engine;
use enrichd::store::{ItemState, NewRun, Run, RunStart, RunStatus};
use enrichd_woocommerce::sandbox::{Faults, WooSandbox, Writer, generate_catalogue};
use serde_json::{Value, json};

use common::woo::woo;

async fn start_run(engine: &Engine) -> Run {
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: engine.pipelines["catalogue"].config.max_attempts as i64,
        budget_micros: None,
        sample: None,
    };
    match engine.store.create_run(&new).await.unwrap() {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    }
}

async fn work(engine: &Arc<Engine>, run_id: i64, timeout: Duration) -> Run {
    common::harness::work_run(engine, run_id, timeout, true).await
}

fn description_of(shop: &WooSandbox, id: u64) -> String {
    shop.product(id).unwrap()["description"].as_str().unwrap_or_default().to_owned()
}

/// Ids of the products whose description is empty.
fn bare(shop: &WooSandbox) -> BTreeSet<String> {
    shop.product_ids()
        .into_iter()
        .filter(|id| shop.product(*id).is_some_and(|p| p["status"] != "trash"))
        .filter(|id| description_of(shop, *id).trim().is_empty())
        .map(|id| id.to_string())
        .collect()
}

fn ids(items: &[enrichd::store::Item]) -> BTreeSet<String> {
    items.iter().map(|i| i.external_id.clone()).collect()
}

async fn catalogue_reviewed_and_written(db: TestDb) {
    let shop = WooSandbox::with_products(generate_catalogue(1000, 7, 0.4));
    let w = woo(&db, shop, "all", 5).await;
    let expected = bare(&w.shop);
    assert!((300..=500).contains(&expected.len()), "about 40% of 1,000 are bare: {}", expected.len());
    let before: BTreeMap<u64, Value> =
        w.shop.product_ids().into_iter().map(|id| (id, w.shop.product(id).unwrap())).collect();

    let run = start_run(&w.engine).await;
    let run = work(&w.engine, run.id, Duration::from_secs(300)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let store = &w.engine.store;
    let proposed = store.items(run.id, Some(ItemState::Proposed), 5000).await.unwrap();
    assert_eq!(ids(&proposed), expected, "exactly the products without a description are proposed");
    assert!(w.shop.writes().iter().all(|w| w.by != Writer::Api), "nothing is written before review");
    for item in &proposed {
        let p = item.proposal.as_ref().unwrap();
        assert!(p.fields.contains_key("description"), "item {} proposes a description", item.id);
        for (field, change) in &p.fields {
            let had = &before[&item.external_id.parse::<u64>().unwrap()];
            // Nothing a person wrote is proposed over: every proposed field was empty upstream.
            assert!(
                enrichd::select::field_missing(field, Some(&change.before)),
                "{field} of {} had {}",
                item.external_id,
                had
            );
        }
    }

    // Someone edits five of them in wp-admin after the pull and before the write.
    let edited: Vec<u64> = proposed.iter().take(5).map(|i| i.external_id.parse().unwrap()).collect();
    for id in &edited {
        w.shop.edit_as_human(*id, json!({"short_description": "<p>Edited by hand in wp-admin.</p>"})).unwrap();
    }
    for item in &proposed {
        store.approve(item.id, "reviewer:test").await.unwrap();
    }
    let run = work(&w.engine, run.id, Duration::from_secs(300)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");

    let counts = store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written) as usize, expected.len() - edited.len(), "{counts:?}");
    assert_eq!(counts.get(ItemState::Conflict) as usize, edited.len(), "{counts:?}");
    assert_eq!(counts.get(ItemState::Dead), 0, "{counts:?}");

    let api_writes: Vec<_> = w.shop.writes().into_iter().filter(|w| w.by == Writer::Api).collect();
    let written_ids: Vec<u64> = api_writes.iter().map(|w| w.product_id).collect();
    let unique: HashSet<u64> = written_ids.iter().copied().collect();
    assert_eq!(unique.len(), written_ids.len(), "no product is written twice");
    for id in &edited {
        assert!(!unique.contains(id), "product {id}, edited upstream, is not written");
        let now = w.shop.product(*id).unwrap();
        assert!(
            now["short_description"].as_str().unwrap().contains("Edited by hand in wp-admin."),
            "the upstream edit is intact"
        );
        assert_eq!(description_of(&w.shop, *id), "", "nothing of ours reached product {id}");
    }
    for id in w.shop.product_ids() {
        if !expected.contains(&id.to_string()) {
            assert!(!unique.contains(&id), "product {id} had a description and is not written");
            assert_eq!(w.shop.product(id).unwrap()["description"], before[&id]["description"]);
        }
    }

    // What the store holds now is what was approved, read back from the store itself.
    let written = store.items(run.id, Some(ItemState::Written), 5000).await.unwrap();
    for item in &written {
        let id: u64 = item.external_id.parse().unwrap();
        let product = w.shop.product(id).unwrap();
        let proposal = item.proposal.as_ref().unwrap();
        let approved = proposal.fields["description"].value();
        assert!(
            enrichd_woocommerce::holds("description", approved, product.get("description")),
            "product {id}: {approved} vs {}",
            product["description"]
        );
        assert!(item.verified_at.is_some() && item.verify_issues.is_none(), "item {} verified", item.id);
        assert!(item.replaced.as_ref().is_some_and(|r| r["description"] == ""), "what the write replaced is kept");
        if let Some(tags) = proposal.fields.get("tags") {
            let names: Vec<String> = product["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_lowercase())
                .collect();
            for tag in tags.value().as_array().unwrap() {
                assert!(names.contains(&tag.as_str().unwrap().to_lowercase()), "tag {tag} on product {id}");
            }
        }
        // Images keep their ids; alt text only where it was missing.
        let old_images = before[&id]["images"].as_array().cloned().unwrap_or_default();
        let new_images = product["images"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            old_images.iter().map(|i| i["id"].clone()).collect::<Vec<_>>(),
            new_images.iter().map(|i| i["id"].clone()).collect::<Vec<_>>(),
            "product {id} keeps its images"
        );
        for (old, new) in old_images.iter().zip(&new_images) {
            if !old["alt"].as_str().unwrap_or_default().is_empty() {
                assert_eq!(old["alt"], new["alt"], "existing alt text of product {id} is untouched");
            }
        }
    }
    let report = store.report(run.id).await.unwrap();
    assert_eq!(report.verified as usize, written.len());
    assert_eq!(report.verify_flagged, 0);
    db.cleanup().await;
}

#[tokio::test]
async fn catalogue_reviewed_and_written_sqlite() {
    catalogue_reviewed_and_written(common::sqlite().await).await;
}

#[tokio::test]
async fn catalogue_reviewed_and_written_postgres() {
    if let Some(db) = common::postgres().await {
        catalogue_reviewed_and_written(db).await;
    }
}

/// A store that answers 200 to a meta write but keeps nothing (a plugin guarding its own keys):
/// the item is written, and the field that did not stick is flagged with the reason.
async fn a_meta_field_the_store_drops_is_flagged(db: TestDb) {
    let shop = WooSandbox::with_products(generate_catalogue(80, 11, 0.5));
    shop.set_faults(Faults {
        dropped_meta_keys: HashSet::from(["_yoast_wpseo_metadesc".to_owned()]),
        ..Default::default()
    });
    let w = woo(&db, shop, "none", 5).await;
    let run = start_run(&w.engine).await;
    let run = work(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let store = &w.engine.store;
    let written = store.items(run.id, Some(ItemState::Written), 1000).await.unwrap();
    assert!(!written.is_empty());
    let mut flagged = 0;
    for item in &written {
        let proposal = item.proposal.as_ref().unwrap();
        let id: u64 = item.external_id.parse().unwrap();
        let meta_keys: Vec<String> = w.shop.product(id).unwrap()["meta_data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["key"].as_str().unwrap().to_owned())
            .collect();
        if proposal.fields.contains_key("seo_description") {
            flagged += 1;
            let issues = item.verify_issues.as_ref().unwrap_or_else(|| panic!("item {} flagged", item.id));
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!(issues[0].field, "seo_description");
            assert!(issues[0].reason.contains("did not store"), "{}", issues[0].reason);
            assert!(!meta_keys.contains(&"_yoast_wpseo_metadesc".to_owned()), "the store really dropped it");
            if proposal.fields.contains_key("seo_title") {
                assert!(meta_keys.contains(&"_yoast_wpseo_title".to_owned()), "the title, not dropped, landed");
            }
        } else {
            assert!(item.verify_issues.is_none(), "{:?}", item.verify_issues);
        }
        let events = store.item_events(item.id).await.unwrap();
        let kind = if proposal.fields.contains_key("seo_description") { "verify_failed" } else { "verified" };
        assert!(events.iter().any(|e| e.kind == kind), "item {} has a {kind} event", item.id);
    }
    assert!(flagged > 0, "the catalogue has products missing their SEO description");
    let report = store.report(run.id).await.unwrap();
    assert_eq!(report.verify_flagged, flagged);
    db.cleanup().await;
}

#[tokio::test]
async fn a_meta_field_the_store_drops_is_flagged_sqlite() {
    a_meta_field_the_store_drops_is_flagged(common::sqlite().await).await;
}

#[tokio::test]
async fn a_meta_field_the_store_drops_is_flagged_postgres() {
    if let Some(db) = common::postgres().await {
        a_meta_field_the_store_drops_is_flagged(db).await;
    }
}

/// 5xx, 429 with `Retry-After` and a store whose batch limit is below 100 (every first batch is a
/// 413 that applies nothing): every bare product is still written, once, and nothing is dead.
async fn faults_lose_nothing(db: TestDb) {
    let shop = WooSandbox::with_products(generate_catalogue(300, 23, 0.4));
    let w = woo(&db, shop, "none", 12).await;
    let expected = bare(&w.shop);
    w.shop.set_faults(Faults {
        server_error_rate: 0.15,
        rate_limit_rate: 0.1,
        retry_after_secs: 0,
        batch_limit: Some(30),
        ..Default::default()
    });
    let run = start_run(&w.engine).await;
    let run = work(&w.engine, run.id, Duration::from_secs(180)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let store = &w.engine.store;
    let counts = store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Dead), 0, "{counts:?}");
    let written = store.items(run.id, Some(ItemState::Written), 1000).await.unwrap();
    assert_eq!(ids(&written), expected, "{counts:?}");
    let api_writes: Vec<u64> =
        w.shop.writes().into_iter().filter(|w| w.by == Writer::Api).map(|w| w.product_id).collect();
    let unique: HashSet<u64> = api_writes.iter().copied().collect();
    assert_eq!(unique.len(), api_writes.len(), "no product is written twice");
    assert_eq!(unique.len(), expected.len());
    assert!(w.shop.stats().rejected_by_faults > 0, "faults were injected");
    for item in &written {
        let id: u64 = item.external_id.parse().unwrap();
        assert!(!description_of(&w.shop, id).is_empty(), "product {id} has its description");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn faults_lose_nothing_sqlite() {
    faults_lose_nothing(common::sqlite().await).await;
}

#[tokio::test]
async fn faults_lose_nothing_postgres() {
    if let Some(db) = common::postgres().await {
        faults_lose_nothing(db).await;
    }
}

/// `incremental = true`: the second run reads only products modified since the first run started
/// (the ones the first run wrote, and one a person emptied since), not the whole catalogue.
#[tokio::test]
async fn incremental_runs_read_only_what_changed() {
    let db = common::sqlite().await;
    // A catalogue last touched an hour ago.
    let shop = WooSandbox::new();
    shop.set_time(chrono::Utc::now().naive_utc() - chrono::Duration::hours(1));
    for product in generate_catalogue(150, 31, 0.2) {
        shop.seed_product(&product).unwrap();
    }
    shop.use_system_clock();
    let w = common::woo::woo_with(&db, shop, "none", 5, "incremental = true").await;
    let first = start_run(&w.engine).await;
    let first = work(&w.engine, first.id, Duration::from_secs(60)).await;
    assert_eq!((first.status, first.discovered), (RunStatus::Done, 150));
    let store = &w.engine.store;
    let written_first = ids(&store.items(first.id, Some(ItemState::Written), 1000).await.unwrap());
    assert!(!written_first.is_empty());

    // Someone empties a description that had been there all along.
    let emptied = w.shop.product_ids().into_iter().find(|id| !written_first.contains(&id.to_string())).unwrap();
    w.shop.edit_as_human(emptied, json!({"description": ""})).unwrap();

    let second = start_run(&w.engine).await;
    let second = work(&w.engine, second.id, Duration::from_secs(60)).await;
    assert_eq!(second.status, RunStatus::Done);
    assert_eq!(
        second.discovered as usize,
        written_first.len() + 1,
        "only the products modified since the first run started are read"
    );
    let written_second = ids(&store.items(second.id, Some(ItemState::Written), 1000).await.unwrap());
    assert_eq!(written_second, BTreeSet::from([emptied.to_string()]));
    assert!(!description_of(&w.shop, emptied).is_empty());
    db.cleanup().await;
}

/// Undo on WooCommerce: every written product gets back what it held before our write (the empty
/// description and the other fields we filled), except one edited in wp-admin since, which is a
/// revert conflict and keeps the human's edit.
async fn a_written_run_is_reverted_except_over_a_human_edit(db: TestDb) {
    let shop = WooSandbox::with_products(generate_catalogue(30, 3, 0.5));
    let w = woo(&db, shop, "none", 5).await;
    let before: BTreeMap<u64, Value> =
        w.shop.product_ids().into_iter().map(|id| (id, w.shop.product(id).unwrap())).collect();
    let run = start_run(&w.engine).await;
    let run = work(&w.engine, run.id, Duration::from_secs(300)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let store = &w.engine.store;
    let written = store.items(run.id, Some(ItemState::Written), 100).await.unwrap();
    assert!(written.len() >= 5, "{}", written.len());
    let touched: u64 = written[0].external_id.parse().unwrap();
    w.shop.edit_as_human(touched, json!({"description": "<p>Rewritten by hand.</p>"})).unwrap();

    let ids: Vec<i64> = written.iter().map(|i| i.id).collect();
    let results = enrichd::engine::revert(&w.engine, &ids, "reviewer:dee").await.unwrap();
    let conflicts: Vec<i64> = results
        .iter()
        .filter(|r| matches!(r.outcome, enrichd::engine::RevertOutcome::Conflict { .. }))
        .map(|r| r.item)
        .collect();
    assert_eq!(conflicts, [written[0].id], "{results:?}");
    let counts = store.counts(run.id).await.unwrap();
    // Alt text our write added stays (WooCommerce ignores an empty alt): exactly those items are
    // partially reverted; the rest are reverted.
    let partial: Vec<i64> = results
        .iter()
        .filter(|r| matches!(r.outcome, enrichd::engine::RevertOutcome::PartiallyReverted { .. }))
        .map(|r| r.item)
        .collect();
    assert_eq!(
        counts.sum(&[ItemState::Reverted, ItemState::PartiallyReverted]) as usize,
        written.len() - 1,
        "{results:?}"
    );
    assert!(description_of(&w.shop, touched).contains("Rewritten by hand."));
    for item in &written[1..] {
        let id: u64 = item.external_id.parse().unwrap();
        let alt = item.proposal.as_ref().unwrap().fields.contains_key("images[].alt");
        assert_eq!(partial.contains(&item.id), alt, "item {}: partially reverted only for alt text", item.id);
        let tags = |p: &Value| -> BTreeSet<String> {
            p["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(tags(&w.shop.product(id).unwrap()), tags(&before[&id]), "product {id}: exactly its old tags");
        assert_eq!(
            description_of(&w.shop, id),
            before[&id]["description"].as_str().unwrap_or_default(),
            "product {id}"
        );
        for field in item.replaced.as_ref().unwrap().keys() {
            let was = &before[&id][field];
            if was.is_string() {
                assert_eq!(&w.shop.product(id).unwrap()[field], was, "product {id} {field}");
            }
        }
    }
    db.cleanup().await;
}

#[tokio::test]
async fn a_written_run_is_reverted_except_over_a_human_edit_sqlite() {
    a_written_run_is_reverted_except_over_a_human_edit(common::sqlite().await).await;
}

#[tokio::test]
async fn a_written_run_is_reverted_except_over_a_human_edit_postgres() {
    if let Some(db) = common::postgres().await {
        a_written_run_is_reverted_except_over_a_human_edit(db).await;
    }
}
