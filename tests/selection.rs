//! Which records a pipeline selects and which fields it proposes, against the WooCommerce sandbox
//! (HTTPS) and the provider sandbox with the engine in-process on SQLite and Postgres: text is
//! measured as a customer sees it (markup, entities and whitespace do not count), and a pipeline
//! proposes only the fields it selects unless it sets `select.fill_all_missing`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::woo::{set_woo_env, woo_sandboxes, write_woo_config};
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::ProviderSandbox;
use enrichd::store::{ItemState, NewRun, RunStart, RunStatus};
use enrichd_woocommerce::sandbox::{WooSandbox, generate_catalogue};
use serde_json::{Value, json};

/// The select line `write_woo_config` writes, replaced by each test's own.
const WOO_SELECT: &str = "select = { missing = [\"description\"], fill_all_missing = true }";

struct Shop {
    engine: Arc<Engine>,
    shop: WooSandbox,
    provider: ProviderSandbox,
    _dir: tempfile::TempDir,
}

/// The sandboxes serving `products`, and the engine for pipeline `catalogue` (the shipped
/// `product_copy` task, every proposal waiting for review) selecting with `select`.
async fn shop(db: &TestDb, products: Vec<Value>, select: &str) -> Shop {
    set_woo_env();
    let sb = woo_sandboxes(WooSandbox::with_products(products)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_woo_config(dir.path(), &db.url, &sb, "all", 3, 10.0, "");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(WOO_SELECT), "the woo config's select line moved: {text}");
    std::fs::write(&path, text.replace(WOO_SELECT, &format!("select = {select}"))).unwrap();
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Shop { engine, shop: sb.shop, provider: sb.provider, _dir: dir }
}

/// Runs pipeline `catalogue` until only review is left; returns the proposed fields by SKU.
async fn proposals_by_sku(s: &Shop) -> BTreeMap<String, BTreeSet<String>> {
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: None,
    };
    let run = match s.engine.store.create_run(&new).await.unwrap() {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    };
    let run = common::harness::work_run(&s.engine, run.id, Duration::from_secs(60), true).await;
    assert!(matches!(run.status, RunStatus::AwaitingReview | RunStatus::Done), "{run:?}");
    let counts = s.engine.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Dead), 0, "{counts:?}");
    let proposed = s.engine.store.items(run.id, Some(ItemState::Proposed), 1000).await.unwrap();
    proposed
        .iter()
        .map(|item| {
            let id: u64 = item.external_id.parse().unwrap();
            let sku = s.shop.product(id).unwrap()["sku"].as_str().unwrap().to_owned();
            (sku, item.proposal.as_ref().unwrap().fields.keys().cloned().collect())
        })
        .collect()
}

fn sku(product: &Value) -> String {
    product["sku"].as_str().unwrap().to_owned()
}

fn set(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// A `<p>&nbsp;</p>` description, or one of only tags, comments and whitespace, is missing; a short
/// description is as long as its visible text, entities decoded and whitespace collapsed.
async fn selection_counts_what_a_customer_sees(db: &TestDb) {
    let mut products = generate_catalogue(8, 11, 0.0);
    let long_short = "<p>Zinc-plated trade fixing, sold individually from stock.</p>";
    for p in &mut products {
        p["short_description"] = json!(long_short);
    }
    let empty_looking =
        ["<p>&nbsp;</p>", "<div>\n  <br />\n</div>\n", "<!-- wp:paragraph -->\n<p></p>\n<!-- /wp:paragraph -->"];
    for (p, description) in products.iter_mut().zip(empty_looking) {
        p["description"] = json!(description);
    }
    // 19 visible characters ("Fish & chips & peas"), 27 counted with the raw entities.
    products[3]["short_description"] = json!("<p>Fish &amp; chips &amp; peas</p>");
    // 14 visible ("Hex bolts. M8."), 25 counted with every newline.
    products[4]["short_description"] = json!(format!("<p>Hex bolts.</p>{}<p>M8.</p>", "\n".repeat(12)));
    // 20 visible with an entity: long enough.
    products[5]["short_description"] = json!("<p>Bolts &amp; washers, M10</p>");
    let skus: Vec<String> = products.iter().map(sku).collect();

    let s = shop(db, products, "{ missing = [\"description\"], min_length = { short_description = 20 } }").await;
    let proposed = proposals_by_sku(&s).await;
    let expected: BTreeMap<String, BTreeSet<String>> = [
        (skus[0].clone(), set(&["description"])),
        (skus[1].clone(), set(&["description"])),
        (skus[2].clone(), set(&["description"])),
        (skus[3].clone(), set(&["short_description"])),
        (skus[4].clone(), set(&["short_description"])),
    ]
    .into();
    assert_eq!(proposed, expected, "records selected by what a customer sees, each proposing what it misses");
}

/// `min_length = { short_description = 200 }` proposes only `short_description`, and the model is
/// asked only for it; `fill_all_missing = true` also fills every other field the record misses.
async fn a_pipeline_proposes_only_the_fields_it_selects(db: &TestDb) {
    let mut products = generate_catalogue(6, 5, 0.0);
    for p in &mut products {
        p["short_description"] = json!("<p>Short.</p>");
        p["tags"] = json!([]);
    }
    let skus: Vec<String> = products.iter().map(sku).collect();

    let s = shop(db, products.clone(), "{ min_length = { short_description = 200 } }").await;
    s.provider.record_requests(true);
    let proposed = proposals_by_sku(&s).await;
    assert_eq!(proposed.keys().cloned().collect::<BTreeSet<_>>(), skus.iter().cloned().collect::<BTreeSet<_>>());
    for (sku, fields) in &proposed {
        assert_eq!(fields, &set(&["short_description"]), "product {sku}: only the selected field is proposed");
    }
    let requests: Vec<Value> =
        s.provider.received().into_iter().filter(|r| r.path.ends_with("/chat/completions")).map(|r| r.body).collect();
    assert_eq!(requests.len(), skus.len(), "one request per product");
    for body in &requests {
        let schema = &body["response_format"]["json_schema"]["schema"];
        let asked: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(asked, ["short_description"], "the model is asked only for the selected field: {schema}");
        assert_eq!(schema["required"], json!(["short_description"]), "{schema}");
    }
}

/// The same catalogue with `fill_all_missing = true`: the other missing fields are proposed too.
async fn fill_all_missing_proposes_every_missing_field(db: &TestDb) {
    let mut products = generate_catalogue(6, 5, 0.0);
    for p in &mut products {
        p["short_description"] = json!("<p>Short.</p>");
        p["tags"] = json!([]);
    }
    let skus: Vec<String> = products.iter().map(sku).collect();
    let all = shop(db, products, "{ min_length = { short_description = 200 }, fill_all_missing = true }").await;
    let proposed = proposals_by_sku(&all).await;
    assert_eq!(proposed.len(), skus.len());
    for (sku, fields) in &proposed {
        assert!(
            fields.contains("short_description") && fields.contains("tags"),
            "product {sku}: every missing field the task fills is proposed: {fields:?}"
        );
        assert!(!fields.contains("description"), "product {sku}: its description has text and is left alone");
    }
}

on_both_backends! {
    visible_text => selection_counts_what_a_customer_sees;
    selected_fields_only => a_pipeline_proposes_only_the_fields_it_selects;
    fill_all_missing => fill_all_missing_proposes_every_missing_field;
}

/// `select.fill_all_missing` is a boolean; anything else is refused with its key path (exit 2).
#[test]
fn fill_all_missing_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::Sandboxes {
        store: common::StoreSandbox::new("x"),
        store_url: "http://127.0.0.1:9".into(),
        provider: ProviderSandbox::new(None),
        provider_url: "http://127.0.0.1:9/v1".into(),
    };
    let path = common::write_config(dir.path(), "sqlite://unused.db", &sb, &common::ConfigOptions::default());
    let text = std::fs::read_to_string(&path).unwrap();
    let select = "select = { missing = [\"description\"] }";
    assert!(text.contains(select));
    std::fs::write(&path, text.replace(select, "select = { missing = [\"description\"], fill_all_missing = \"yes\" }"))
        .unwrap();
    let out = common::process::output(&path, &["check", "--offline"], &common::process::Env::default());
    assert_eq!(out.status.code(), Some(2), "{}", common::process::text(&out));
    assert!(
        common::process::text(&out).contains("pipelines.catalogue.select.fill_all_missing: invalid type"),
        "{}",
        common::process::text(&out)
    );
}
