//! Review policies, the review queue's JSON API and undo, end to end over the sandboxes on SQLite
//! and Postgres: `sample_first` holds the rest of a run until a reviewer (or its auto-release rule)
//! releases it, `auto_approve` approves only clean and confident proposals, bulk actions count
//! before they act, edits are written as edited, and reverts put old values back — except over a
//! record edited since our write, which is a conflict and is left alone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::harness::{Harness, harness, start_run, work};
use common::{ConfigOptions, TestDb, expected_description, sandboxes, set_secret_env, write_config};
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::store::{ItemState, ReviewPhase, RunStatus};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The JSON API of the engine's store, served in-process on a free port.
struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Api {
    async fn start(engine: &Arc<Engine>) -> Api {
        let stop = CancellationToken::new();
        // Open mode: loopback, no [server.auth].
        let site =
            enrichd::server::Site { access: enrichd::server::Access::new(None), html_fields: Default::default() };
        let (addr, _) = enrichd::server::serve(engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
        Api { base: format!("http://{addr}"), http: enrichd_connector::http::client(Duration::from_secs(30)), stop }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

fn options(policy: &'static str, review: &'static str) -> ConfigOptions {
    ConfigOptions { policy, review_extra: review, concurrency: 4, ..Default::default() }
}

async fn sample_first_holds_the_rest_until_a_reviewer_releases_it(db: &TestDb) {
    let h = harness(db, 12, 1, options("sample_first", ", sample = 3")).await;
    let run = start_run(&h.engine).await;
    let held = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(held.status, RunStatus::AwaitingReview, "{:?}", held.status_reason);
    assert_eq!(held.review_phase, Some(ReviewPhase::SampleReview));
    assert!(held.status_reason.as_deref().unwrap().contains("waiting for sample review"), "{:?}", held.status_reason);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Proposed), counts.get(ItemState::Queued)), (3, 9), "{counts:?}");
    assert!(h.sb.store.writes().is_empty());

    let api = Api::start(&h.engine).await;
    let (status, queue) = api.get(&format!("/api/review?run={}", run.id)).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["total"], 3);
    let sample = ids(&queue);
    // One rejected, one edited then approved, one approved; names go into the audit trail.
    let (status, body) =
        api.post(&format!("/api/items/{}/reject", sample[0]), json!({"reviewer": "ann", "reason": "off brand"})).await;
    assert_eq!((status, body["item"]["state"].as_str()), (200, Some("rejected")), "{body}");
    let (status, body) = api
        .post(
            &format!("/api/items/{}/edit", sample[1]),
            json!({"reviewer": "bob", "field": "description", "value": "Edited by Bob, long enough."}),
        )
        .await;
    assert_eq!((status, body["item"]["state"].as_str()), (200, Some("edited")), "{body}");
    for id in &sample[1..] {
        let (status, body) = api.post(&format!("/api/items/{id}/approve"), json!({"reviewer": "ann"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, stats) = api.get(&format!("/api/runs/{}/sample", run.id)).await;
    let s = &stats["sample"];
    assert_eq!((s["total"].as_i64(), s["reviewed"].as_i64(), s["rejected"].as_i64()), (Some(3), Some(3), Some(1)));
    assert_eq!((s["approved"].as_i64(), s["edited"].as_i64()), (Some(2), Some(1)));
    assert!((s["reject_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{s}");
    assert_eq!(s["phase"], "sample_review", "no auto-release was configured");

    // A reviewer's name is required; a second release is refused.
    let (status, _) = api.post(&format!("/api/runs/{}/release", run.id), json!({})).await;
    assert_eq!(status, 400);
    let (status, body) = api.post(&format!("/api/runs/{}/release", run.id), json!({"reviewer": "ann"})).await;
    assert_eq!((status, body["run"]["status"].as_str()), (200, Some("running")), "{body}");
    let (status, _) = api.post(&format!("/api/runs/{}/release", run.id), json!({"reviewer": "ann"})).await;
    assert_eq!(status, 409);

    let done = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, RunStatus::Done, "{:?}", done.status_reason);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Rejected)), (11, 1), "{counts:?}");
    let edited = db.store.item(sample[1]).await.unwrap();
    let record: u64 = edited.external_id.parse().unwrap();
    assert_eq!(h.sb.store.record("product", record).unwrap().1["description"], "Edited by Bob, long enough.");
    // After the release, proposals are approved by the policy as they arrive; the sample by people.
    let (_, detail) = api.get(&format!("/api/items/{}", sample[1])).await;
    let actors: Vec<(&str, &str)> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["to_state"].as_str()?, e["actor"].as_str()?)))
        .filter(|(to, _)| ["edited", "approved"].contains(to))
        .collect();
    assert_eq!(actors, [("edited", "bob"), ("approved", "ann")]);
    let rest = db.store.items(run.id, Some(ItemState::Written), 100).await.unwrap();
    let by_policy = rest.iter().filter(|i| !i.sample).count();
    assert_eq!(by_policy, 9);
    for item in rest.iter().filter(|i| !i.sample) {
        let events = db.store.item_events(item.id).await.unwrap();
        assert!(events.iter().any(|e| e.to_state.as_deref() == Some("approved") && e.actor == "policy:sample_first"));
    }
    let run_events = db.store.run_events(run.id).await.unwrap();
    assert!(
        run_events
            .iter()
            .any(|e| e.kind == "review_phase" && e.to_state.as_deref() == Some("released") && e.actor == "ann")
    );
}

async fn sample_first_releases_itself_when_few_are_rejected(db: &TestDb) {
    let h = harness(db, 8, 1, options("sample_first", ", sample = 2, auto_release_max_reject_rate = 0.5")).await;
    let run = start_run(&h.engine).await;
    let held = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(held.review_phase, Some(ReviewPhase::SampleReview));
    let sample: Vec<i64> =
        db.store.items(run.id, Some(ItemState::Proposed), 10).await.unwrap().iter().map(|i| i.id).collect();
    assert_eq!(sample.len(), 2);
    db.store.reject(sample[0], "ann", None).await.unwrap();
    assert_eq!(db.store.run(run.id).await.unwrap().review_phase, Some(ReviewPhase::SampleReview), "half reviewed");
    db.store.approve(sample[1], "ann").await.unwrap();
    let released = db.store.run(run.id).await.unwrap();
    assert_eq!(released.review_phase, Some(ReviewPhase::Released), "1 of 2 rejected is at the 0.5 threshold");
    assert_eq!(released.status, RunStatus::Running);
    assert_eq!(released.released_by.as_deref(), Some("policy:sample_first (ann)"));
    let done = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, RunStatus::Done, "{:?}", done.status_reason);
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Written), 7);
}

async fn sample_first_stays_held_when_too_many_are_rejected(db: &TestDb) {
    let h = harness(db, 6, 1, options("sample_first", ", sample = 2, auto_release_max_reject_rate = 0.0")).await;
    let run = start_run(&h.engine).await;
    work(&h.engine, run.id, Duration::from_secs(60)).await;
    let sample = db.store.items(run.id, Some(ItemState::Proposed), 10).await.unwrap();
    db.store.reject(sample[0].id, "ann", Some("wrong")).await.unwrap();
    db.store.approve(sample[1].id, "ann").await.unwrap();
    let run = db.store.settle_run(run.id, "test").await.unwrap();
    assert_eq!(run.review_phase, Some(ReviewPhase::SampleReview));
    assert_eq!(run.status, RunStatus::AwaitingReview);
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Queued), 4);
}

/// A harness whose task also answers a `confidence` (the sandbox says 3.3 for products 1–9 and
/// 3.4 from 10 on) and warns on descriptions over 49 characters (products from 10 on).
async fn auto_approve_harness(db: &TestDb) -> Harness {
    set_secret_env();
    let sb = sandboxes(12, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions {
        policy: "auto_approve",
        review_extra: ", confidence_field = \"confidence\", min_confidence = 3.3",
        extra_task: "checks = { description = { max_chars = 49 } }",
        ..Default::default()
    };
    let path = write_config(dir.path(), &db.url, &sb, &options);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "properties = { description = { type = \"string\", minLength = 10 } }",
        "properties = { description = { type = \"string\", minLength = 10 }, confidence = { type = \"number\" } }",
    );
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Harness { sb, engine, _dir: dir }
}

async fn auto_approve_holds_what_a_check_warned_about(db: &TestDb) {
    let h = auto_approve_harness(db).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{:?}", run.status_reason);
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Written), counts.get(ItemState::Proposed)), (9, 3), "{counts:?}");
    let api = Api::start(&h.engine).await;
    let (_, warned) = api.get(&format!("/api/review?run={}&warnings=true", run.id)).await;
    assert_eq!(warned["total"], 3);
    let records: Vec<&str> =
        warned["items"].as_array().unwrap().iter().map(|i| i["external_id"].as_str().unwrap()).collect();
    assert_eq!(records, ["10", "11", "12"]);
    let (_, clean) = api.get(&format!("/api/review?run={}&warnings=false", run.id)).await;
    assert_eq!(clean["total"], 0);
    for item in db.store.items(run.id, Some(ItemState::Written), 100).await.unwrap() {
        let events = db.store.item_events(item.id).await.unwrap();
        assert!(events.iter().any(|e| e.actor == "policy:auto_approve"), "item {}", item.id);
    }
}

async fn bulk_actions_count_first_and_act_per_item(db: &TestDb) {
    let h = harness(db, 12, 1, options("all", "")).await;
    let run = start_run(&h.engine).await;
    work(&h.engine, run.id, Duration::from_secs(60)).await;
    let api = Api::start(&h.engine).await;
    let (_, all) = api.get(&format!("/api/review?pipeline=catalogue&run={}&limit=5", run.id)).await;
    assert_eq!((all["total"].as_i64(), ids(&all).len()), (Some(12), 5));
    // Text search covers the record and the proposal: "Product 1" matches 1, 10, 11 and 12.
    let filter = json!({"run": run.id, "q": "product 1"});
    let (_, found) = api.get(&format!("/api/review?run={}&q=product%201", run.id)).await;
    assert_eq!(found["total"], 4);
    let (status, dry) =
        api.post("/api/review/bulk", json!({"action": "approve", "reviewer": "cy", "filter": filter})).await;
    assert_eq!((status, dry["matching"].as_i64(), dry["applied"].as_bool()), (200, Some(4), Some(false)));
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Approved), 0, "a count changes nothing");
    let (status, stale) = api
        .post("/api/review/bulk", json!({"action": "approve", "reviewer": "cy", "filter": filter, "confirm": 5}))
        .await;
    assert_eq!((status, stale["matching"].as_i64()), (409, Some(4)));
    let (status, applied) = api
        .post("/api/review/bulk", json!({"action": "approve", "reviewer": "cy", "filter": filter, "confirm": 4}))
        .await;
    assert_eq!((status, applied["done"].as_array().unwrap().len()), (200, 4), "{applied}");
    // A selection by ids, one of which was already decided: skipped with the reason.
    let (_, rest) = api.get(&format!("/api/review?run={}", run.id)).await;
    let mut selection = ids(&rest)[..3].to_vec();
    selection.push(applied["done"][0].as_i64().unwrap());
    let (status, rejected) = api
        .post(
            "/api/review/bulk",
            json!({"action": "reject", "reviewer": "cy", "reason": "too generic", "ids": selection}),
        )
        .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["done"].as_array().unwrap().len(), 3);
    assert_eq!(rejected["skipped"].as_array().unwrap().len(), 1);
    let (_, state_filtered) = api.get(&format!("/api/review?run={}&state=rejected,approved", run.id)).await;
    assert_eq!(state_filtered["total"], 7);
    let (status, _) = api.get(&format!("/api/review?run={}&state=nonsense", run.id)).await;
    assert_eq!(status, 400);
    // History: every event of the item, with who did it.
    let (_, detail) = api.get(&format!("/api/items/{}", selection[0])).await;
    let last = detail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["to_state"].as_str(), last["actor"].as_str()), (Some("rejected"), Some("cy")));
    assert_eq!(last["detail"]["reason"], "too generic");
    let (status, _) = api.post(&format!("/api/items/{}/approve", selection[0]), json!({"reviewer": "cy"})).await;
    assert_eq!(status, 409, "a rejected item cannot be approved");
    let (status, _) = api.get("/api/items/999999").await;
    assert_eq!(status, 404);
    let (status, _) = api.post(&format!("/api/items/{}/approve", ids(&rest)[4]), json!({"reviewer": "policy:x"})).await;
    assert_eq!(status, 400, "policy names are not for people");
}

async fn revert_puts_old_values_back_but_never_over_a_newer_edit(db: &TestDb) {
    let h = harness(db, 6, 1, options("none", "")).await;
    let run = start_run(&h.engine).await;
    let run = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{:?}", run.status_reason);
    let written = db.store.items(run.id, Some(ItemState::Written), 10).await.unwrap();
    assert_eq!(written.len(), 6);
    let record = |item: &enrichd::store::Item| h.sb.store.record("product", item.external_id.parse().unwrap()).unwrap();
    let api = Api::start(&h.engine).await;

    // One item: the old (empty) description is written back.
    let first = &written[0];
    assert_eq!(record(first).1["description"], json!(expected_description(first.external_id.parse().unwrap())));
    let (status, body) = api.post(&format!("/api/items/{}/revert", first.id), json!({"reviewer": "dee"})).await;
    assert_eq!((status, body["result"]["outcome"].as_str()), (200, Some("reverted")), "{body}");
    assert_eq!(record(first).1["description"], "");
    let item = db.store.item(first.id).await.unwrap();
    assert_eq!(item.state, ItemState::Reverted);
    let events = db.store.item_events(first.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.to_state.as_deref(), last.actor.as_str()), (Some("reverted"), "dee"));
    let (status, _) = api.post(&format!("/api/items/{}/revert", first.id), json!({"reviewer": "dee"})).await;
    assert_eq!(status, 409, "a reverted item is not reverted twice");

    // Someone edits a record after our write: its revert is a conflict and writes nothing.
    let second = &written[1];
    h.sb.store.edit("product", second.external_id.parse().unwrap(), "description", json!("<p>Fixed by hand.</p>"));
    let writes = h.sb.store.writes().len();
    let (status, body) = api.post(&format!("/api/items/{}/revert", second.id), json!({"reviewer": "dee"})).await;
    assert_eq!((status, body["result"]["outcome"].as_str()), (409, Some("conflict")), "{body}");
    assert_eq!(h.sb.store.writes().len(), writes, "nothing was written");
    assert_eq!(record(second).1["description"], "<p>Fixed by hand.</p>");
    assert_eq!(db.store.item(second.id).await.unwrap().state, ItemState::RevertConflict);

    // The whole run counts first: four are still written; a stale count reverts nothing.
    let (status, count) = api.post(&format!("/api/runs/{}/revert", run.id), json!({"reviewer": "dee"})).await;
    assert_eq!((status, count["matching"].as_i64(), count["applied"].as_bool()), (200, Some(4), Some(false)));
    let (status, stale) =
        api.post(&format!("/api/runs/{}/revert", run.id), json!({"reviewer": "dee", "confirm": 6})).await;
    assert_eq!((status, stale["matching"].as_i64()), (409, Some(4)), "{stale}");
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Written), 4, "a stale count reverts nothing");
    let (status, body) =
        api.post(&format!("/api/runs/{}/revert", run.id), json!({"reviewer": "dee", "confirm": 4})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["reverted"].as_i64(), body["conflicts"].as_i64()), (Some(4), Some(0)), "{body}");
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!((counts.get(ItemState::Reverted), counts.get(ItemState::RevertConflict)), (5, 1), "{counts:?}");
    for item in &written[2..] {
        assert_eq!(record(item).1["description"], "");
    }
}

/// With `[server.auth]` the actor is who authenticated — `api` for the bearer token, the signed-in
/// reviewer for a session — and a `reviewer` named in the body is ignored.
async fn with_auth_the_actor_is_who_signed_in(db: &TestDb) {
    let h = harness(db, 4, 1, options("all", "")).await;
    let run = start_run(&h.engine).await;
    work(&h.engine, run.id, Duration::from_secs(60)).await;
    let waiting: Vec<i64> =
        db.store.items(run.id, Some(ItemState::Proposed), 10).await.unwrap().iter().map(|i| i.id).collect();
    assert_eq!(waiting.len(), 4);
    let token = "review-test-token";
    let auth = enrichd::config::ServerAuthConfig {
        password: Some(enrichd::config::Secret("pw".to_owned().into())),
        token: Some(enrichd::config::Secret(token.to_owned().into())),
        session_hours: 1,
    };
    let stop = CancellationToken::new();
    let site =
        enrichd::server::Site { access: enrichd::server::Access::new(Some(&auth)), html_fields: Default::default() };
    let (addr, _) = enrichd::server::serve(h.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let http = enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let last_actor = |id: i64| async move { db.store.item_events(id).await.unwrap().last().unwrap().actor.clone() };

    // The bearer token acts as `api`, whatever the body claims.
    let r = http
        .post(format!("{base}/api/items/{}/approve", waiting[0]))
        .bearer_auth(token)
        .json(&json!({"reviewer": "the-ceo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_actor(waiting[0]).await, "api");
    let r = http
        .post(format!("{base}/api/review/bulk"))
        .bearer_auth(token)
        .json(&json!({"action": "reject", "reviewer": "the-ceo", "ids": [waiting[1]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_actor(waiting[1]).await, "api");

    // A signed-in session acts as its reviewer; without a session or token nothing happens.
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = login.text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = page[at..].split('"').next().unwrap().to_owned();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "Grace"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let r = http
        .post(format!("{base}/api/items/{}/approve", waiting[2]))
        .header("cookie", &session)
        .json(&json!({"reviewer": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_actor(waiting[2]).await, "reviewer:Grace");
    let r = http
        .post(format!("{base}/api/items/{}/approve", waiting[3]))
        .json(&json!({"reviewer": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(db.store.item(waiting[3]).await.unwrap().state, ItemState::Proposed);
    stop.cancel();
}

on_both_backends! {
    auth_actor => with_auth_the_actor_is_who_signed_in;
    sample_first_manual_release => sample_first_holds_the_rest_until_a_reviewer_releases_it;
    sample_first_auto_release => sample_first_releases_itself_when_few_are_rejected;
    sample_first_held_on_rejects => sample_first_stays_held_when_too_many_are_rejected;
    auto_approve => auto_approve_holds_what_a_check_warned_about;
    bulk => bulk_actions_count_first_and_act_per_item;
    revert => revert_puts_old_values_back_but_never_over_a_newer_edit;
}
