//! Regenerate with a note over the JSON API and from the command line (the real binary), on SQLite
//! and Postgres: an edited proposal is regenerated with the edit as the previous answer and comes
//! back waiting for review; a decided item, a note too long, a daemon without model credentials
//! (`--ui-only`) and a failing model are refused with a clear message and change nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::process::{self, Env, text};
use common::prompts::{revision, user_message};
use common::woo::{ServedShop, serve_for_review, woo_env};
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::Faults;
use enrichd::server::{Access, Site, serve};
use enrichd::store::{Item, ItemState};
use enrichd_woocommerce::sandbox::WooSandbox;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn products() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/regenerate/products.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The three waiting items by record name: hinge, screw, handle.
async fn waiting(db: &TestDb, shop: &ServedShop) -> [Item; 3] {
    let items = db.store.items(shop.run_id, Some(ItemState::Proposed), 10).await.unwrap();
    let named = |name: &str| items.iter().find(|i| i.record_name().unwrap().starts_with(name)).unwrap().clone();
    [named("Butt hinge"), named("Wood screw"), named("Cabinet handle")]
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let client = enrichd_connector::http::builder(Duration::from_secs(30)).build().unwrap();
    let r = client.post(format!("{base}{path}")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn description(item: &Item) -> String {
    item.proposal.as_ref().unwrap().fields["description"].value().as_str().unwrap().to_owned()
}

async fn regenerate_over_the_api(db: &TestDb) {
    let shop = serve_for_review(db, WooSandbox::with_products(products()), Access::new(None)).await;
    let base = &shop.base;
    let [hinge, screw, handle] = waiting(db, &shop).await;
    shop.w.provider.record_requests(true);

    // An edited proposal: the model is shown the edit, and the new proposal replaces it.
    let edit = "<p>Zinc-plated wood screws, a hundred to a pack, for softwood and chipboard.</p>";
    let (status, _) = post(
        base,
        &format!("/api/items/{}/edit", screw.id),
        json!({"reviewer": "eve", "field": "description", "value": edit}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(
        base,
        &format!("/api/items/{}/regenerate", screw.id),
        json!({"reviewer": "eve", "note": "mention the material"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["item"]["state"], "proposed", "waits for review again: {body}");
    let now = db.store.item(screw.id).await.unwrap();
    let change = &now.proposal.as_ref().unwrap().fields["description"];
    assert_eq!(change.edited, None, "the edit went with the old proposal");
    assert_eq!(
        change.proposed,
        json!(format!("{edit}\n<p>Material: zinc-plated steel.</p>")),
        "the model revised the answer it was shown, the reviewer's edit"
    );
    let requests = shop.w.provider.received();
    let (previous, note) = revision(&user_message(&requests.last().unwrap().body));
    assert_eq!((previous["description"].as_str(), note.as_str()), (Some(edit), "mention the material"));
    let events = db.store.item_events(screw.id).await.unwrap();
    let event = events.last().unwrap();
    assert_eq!((event.kind.as_str(), event.actor.as_str()), ("regenerated", "eve"));
    let detail = event.detail.as_ref().unwrap();
    assert_eq!(detail["note"], "mention the material");
    assert_eq!(detail["previous"]["fields"]["description"]["edited"], edit, "the history keeps the edited proposal");
    assert_eq!((event.from_state.as_deref(), event.to_state.as_deref()), (Some("edited"), Some("proposed")));
    assert!(detail["tokens_in"].as_i64().unwrap() > 0 && detail["cost_micros"].as_i64().unwrap() > 0, "{detail}");

    // A decided item is refused, naming why, and stays as it was.
    let (status, _) = post(base, &format!("/api/items/{}/approve", handle.id), json!({"reviewer": "eve"})).await;
    assert_eq!(status, 200);
    let (status, body) =
        post(base, &format!("/api/items/{}/regenerate", handle.id), json!({"reviewer": "eve", "note": "shorter"}))
            .await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("item {}", handle.id))
            && error.contains("approved")
            && error.contains("only a proposal waiting for review can be regenerated"),
        "{error}"
    );
    assert_eq!(db.store.item(handle.id).await.unwrap().state, ItemState::Approved);

    // A note too long, and an unknown item.
    let (status, body) = post(
        base,
        &format!("/api/items/{}/regenerate", hinge.id),
        json!({"reviewer": "eve", "note": "x".repeat(1001)}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 1000"), "{body}");
    let (status, _) = post(base, "/api/items/999999/regenerate", json!({"reviewer": "eve", "note": ""})).await;
    assert_eq!(status, 404);

    // The model fails: a clear message, the item and its proposal untouched, the attempt in the history.
    let run_before = db.store.run(shop.run_id).await.unwrap();
    shop.w.provider.set_faults(Faults { server_error_rate: 1.0, ..Faults::default() });
    let (status, body) =
        post(base, &format!("/api/items/{}/regenerate", hinge.id), json!({"reviewer": "eve", "note": "shorter"})).await;
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("the model did not answer") && error.contains("the proposal is unchanged"), "{error}");
    let after = db.store.item(hinge.id).await.unwrap();
    assert_eq!((after.state, &after.proposal, after.updated_at), (hinge.state, &hinge.proposal, hinge.updated_at));
    let last = db.store.item_events(hinge.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.detail.as_ref().unwrap()["note"].as_str()),
        ("regenerate_failed", Some("shorter"))
    );
    assert_eq!(db.store.run(shop.run_id).await.unwrap().cost_micros, run_before.cost_micros, "a 500 bills nothing");
    shop.w.provider.set_faults(Faults::default());
    let (status, body) =
        post(base, &format!("/api/items/{}/regenerate", hinge.id), json!({"reviewer": "eve", "note": "shorter"})).await;
    assert_eq!(status, 200, "trying again works: {body}");
    assert!(description(&db.store.item(hinge.id).await.unwrap()).len() < description(&hinge).len());

    // A reviewer who approves while the model answers wins; the late answer is not kept, but paid for.
    let hinge = db.store.item(hinge.id).await.unwrap();
    shop.w.provider.set_faults(Faults { latency: Duration::from_millis(1500), ..Faults::default() });
    let slow = {
        let base = base.clone();
        let path = format!("/api/items/{}/regenerate", hinge.id);
        tokio::spawn(async move { post(&base, &path, json!({"reviewer": "eve", "note": "shorter"})).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = post(base, &format!("/api/items/{}/approve", hinge.id), json!({"reviewer": "ada"})).await;
    assert_eq!(status, 200);
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("changed while the model answered"), "{body}");
    let approved = db.store.item(hinge.id).await.unwrap();
    assert_eq!((approved.state, &approved.proposal), (ItemState::Approved, &hinge.proposal), "the approval stands");
    assert!(approved.cost_micros > hinge.cost_micros, "the discarded answer's cost is counted");
    shop.w.provider.set_faults(Faults::default());

    // A run whose budget is spent regenerates nothing.
    let run = db.store.run(shop.run_id).await.unwrap();
    sqlx::query("UPDATE runs SET budget_micros = $1 WHERE id = $2")
        .bind(run.cost_micros)
        .bind(run.id)
        .execute(db.store.write_pool())
        .await
        .unwrap();
    let (status, body) =
        post(base, &format!("/api/items/{}/regenerate", screw.id), json!({"reviewer": "eve", "note": ""})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("has spent its budget"), "{body}");

    // A daemon serving the UI only holds no model credentials: it says so.
    let config = Config::load(&shop.w.config).unwrap();
    let looking = Arc::new(Engine::build_for_looking(&config, db.store.clone()));
    let stop = CancellationToken::new();
    let site = Site { access: Access::new(None), ..Site::from_config(&config) };
    let (addr, _server) = serve(looking, site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let (status, body) =
        post(&format!("http://{addr}"), &format!("/api/items/{}/regenerate", screw.id), json!({"reviewer": "eve"}))
            .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--ui-only"), "{body}");
    stop.cancel();
    shop.stop.cancel();
}

async fn enrichd(config: &std::path::Path, args: &[&str], code: i32) -> String {
    let vars = woo_env();
    let out = process::output_async(config, args, &Env { vars: &vars, ..Env::default() }).await;
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    text(&out)
}

async fn regenerate_from_the_command_line(db: &TestDb) {
    let shop = serve_for_review(db, WooSandbox::with_products(products()), Access::new(None)).await;
    let cfg = shop.w.config.as_path();
    let [hinge, _, handle] = waiting(db, &shop).await;
    let id = hinge.id.to_string();

    let out =
        enrichd(cfg, &["review", "regenerate", &id, "--note", "shorter, mention the material", "--as", "eve"], 0).await;
    assert!(out.contains(&format!("item {id} regenerated by eve: waiting for review")), "{out}");
    assert!(out.contains("Material: stainless steel."), "the new proposal is printed: {out}");
    let now = db.store.item(hinge.id).await.unwrap();
    assert_eq!(now.state, ItemState::Proposed);
    assert!(
        description(&now).contains("Material: stainless steel.") && description(&now).len() < description(&hinge).len()
    );
    let event = db.store.item_events(hinge.id).await.unwrap().pop().unwrap();
    assert_eq!((event.kind.as_str(), event.actor.as_str()), ("regenerated", "eve"));
    assert!(now.cost_micros > hinge.cost_micros, "the regeneration's cost is counted");
    let shown = enrichd(cfg, &["review", "show", &id], 0).await;
    assert!(shown.contains("eve regenerated proposed → proposed"), "{shown}");

    // Refusals exit 1 (an item decided) or 2 (a note that cannot be sent), changing nothing.
    db.store.approve(handle.id, "eve").await.unwrap();
    let refused =
        enrichd(cfg, &["review", "regenerate", &handle.id.to_string(), "--note", "shorter", "--as", "eve"], 1).await;
    assert!(refused.contains("only a proposal waiting for review can be regenerated"), "{refused}");
    let long = "x".repeat(1001);
    let bad = enrichd(cfg, &["review", "regenerate", &id, "--note", &long, "--as", "eve"], 2).await;
    assert!(bad.contains("--note: note: 1001 characters; at most 1000"), "{bad}");
    assert_eq!(db.store.item(hinge.id).await.unwrap().proposal, now.proposal);
    shop.stop.cancel();
}

on_both_backends! {
    api => regenerate_over_the_api;
    cli => regenerate_from_the_command_line;
}
