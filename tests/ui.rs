//! The review UI from outside: a real browser (headless Chromium through chromedriver, driven with
//! fantoccini) signs in, reviews the sample of a `sample_first` run — edits a proposal, approves it
//! with the keyboard shortcut, approves the rest in bulk after the count step — releases the run from
//! its sample gate, and the edited value reaches the WooCommerce sandbox; then reverts one write and
//! the whole run (a record edited by hand since is a conflict). A `<script>` in a product name
//! renders as text. Over plain HTTP: sign-in is required when `[server.auth]` is set, CSRF-less posts
//! are refused, bearer tokens work for the API, bulk and revert confirmations refuse a stale count,
//! and the open (no auth) server answers only to loopback Host names. And the daemon refuses to bind
//! a public address without auth.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::{browser, chromedriver, click, press, text_of, wait_for};
use common::web::{csrf_of, fixture, http, serve_shop, set_cookie};
use common::woo::{Woo, work_until_idle};
use enrichd::config::{Secret, ServerAuthConfig};
use enrichd::server::Access;
use enrichd::store::{ItemState, ReviewPhase, RunStatus};
use fantoccini::Locator;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "ui-test-api-token";
const REVIEWER: &str = "Ada Reviewer";

fn products() -> Vec<Value> {
    fixture("products.json")
}

fn auth(password: bool, token: bool) -> ServerAuthConfig {
    ServerAuthConfig {
        password: password.then(|| Secret(PASSWORD.to_owned().into())),
        token: token.then(|| Secret(TOKEN.to_owned().into())),
        session_hours: 1,
    }
}

/// The fixture catalogue through pipeline `catalogue` with review policy `all`, run until its
/// proposals wait for review; then the server on a free loopback port with `access`.
async fn reviewed_shop(db: &common::TestDb, access: Access) -> (Woo, i64, String, CancellationToken) {
    serve_shop(db, products(), "all", access).await
}

/// Signs `REVIEWER` in over HTTP; returns the session cookie.
async fn sign_in(client: &reqwest::Client, base: &str) -> String {
    common::web::sign_in(client, base, REVIEWER, PASSWORD).await
}

async fn proposed_ids(db: &common::TestDb, run_id: i64) -> Vec<i64> {
    db.store.items(run_id, Some(ItemState::Proposed), 100).await.unwrap().iter().map(|i| i.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_csrf_and_bearer_tokens_over_http() {
    let db = common::sqlite().await;
    let (_w, run_id, base, stop) = reviewed_shop(&db, Access::new(Some(&auth(true, true)))).await;
    let item = proposed_ids(&db, run_id).await[0];
    let client = http();

    // Nothing but /healthz and the assets without signing in.
    let r = client.get(format!("{base}/queue?run={run_id}")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/login?next=%2Fqueue%3Frun%3D{run_id}"));
    assert_eq!(client.get(format!("{base}/api/runs")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let r = client.post(format!("{base}/items/{item}/approve")).form(&[("csrf", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 403, "a post with a token of no session is refused");

    // Bearer tokens for the API; a wrong one is refused.
    let r = client.get(format!("{base}/api/runs")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("{base}/api/runs")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The sign-in form: its own CSRF token, the password, and a fresh session id on success.
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let anonymous = set_cookie(&r).expect("a session cookie");
    let cookie_line = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    let csrf = csrf_of(&r.text().await.unwrap());
    let form = |csrf: &str, password: &str| {
        vec![("csrf", csrf.to_owned()), ("name", REVIEWER.to_owned()), ("password", password.to_owned())]
    };
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&form("", PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "sign-in without the CSRF token");
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&form(&csrf, "guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "wrong password");
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&form(&csrf, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = set_cookie(&r).expect("a new session on sign-in");
    assert_ne!(session, anonymous);
    let r = client.get(format!("{base}/queue")).header("cookie", &anonymous).send().await.unwrap();
    assert_eq!(r.status(), 303, "the pre-sign-in session id is dead");

    // Signed in: pages render; a post without the session's CSRF token, or from another origin, is
    // refused and changes nothing.
    let r = client.get(format!("{base}/items/{item}")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(REVIEWER));
    let csrf = csrf_of(&page);
    let approve = format!("{base}/items/{item}/approve");
    let r = client.post(&approve).header("cookie", &session).form(&[("reason", "")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client.post(&approve).header("cookie", &session).form(&[("csrf", "not-the-token")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(&approve)
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(db.store.item(item).await.unwrap().state, ItemState::Proposed);

    // With the token the reject goes through, with the reviewer's name and reason in the trail.
    let r = client
        .post(format!("{base}/items/{item}/reject"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str()), ("reason", "wrong thread size")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let events = db.store.item_events(item).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.to_state.as_deref(), Some("rejected"));
    assert_eq!(last.actor, format!("reviewer:{REVIEWER}"));
    assert_eq!(last.detail.as_ref().unwrap()["reason"], "wrong thread size");

    // No secret reaches a page.
    for path in ["/runs", &format!("/runs/{run_id}"), "/queue?state=all", &format!("/items/{item}/history")] {
        let r = client.get(format!("{base}{path}")).header("cookie", &session).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        for secret in [PASSWORD, TOKEN, enrichd_woocommerce::sandbox::CONSUMER_SECRET, common::woo::PROVIDER_KEY] {
            assert!(!text.contains(secret), "{path} shows a secret");
        }
    }
    stop.cancel();
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_server_answers_to_loopback_names_only() {
    let db = common::sqlite().await;
    let (_w, _run, base, stop) = reviewed_shop(&db, Access::new(None)).await;
    let client = http();
    let r = client.get(format!("{base}/runs")).header("host", "evil.example:8686").send().await.unwrap();
    assert_eq!(r.status(), 403, "a rebound DNS name is refused");
    // Open, but still asks who is reviewing (no password).
    let r = client.get(format!("{base}/runs")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = client.get(format!("{base}/login")).send().await.unwrap();
    let cookie = set_cookie(&r).unwrap();
    let page = r.text().await.unwrap();
    assert!(!page.contains("type=\"password\""));
    let csrf = csrf_of(&page);
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "Grace"), ("next", "/queue")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/queue");
    let session = set_cookie(&r).unwrap();
    let r = client.get(format!("{base}/queue")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The JSON API is open here (a browser cannot post JSON cross-site without a preflight).
    assert_eq!(client.get(format!("{base}/api/runs")).send().await.unwrap().status(), 200);
    stop.cancel();
    db.cleanup().await;
}

#[test]
fn the_daemon_refuses_a_public_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enrichd.toml");
    std::fs::write(&config, format!("[database]\nurl = \"sqlite://{}\"\n", dir.path().join("e.db").display())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", config.to_str().unwrap(), "daemon", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to serve on 0.0.0.0:0 without authentication"), "{stderr}");
    assert!(stderr.contains("[server.auth]") && stderr.contains("--bind"), "{stderr}");
}

// ---- the browser ----

async fn wait_for_state(db: &common::TestDb, item: i64, state: ItemState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.store.item(item).await.unwrap().state != state {
        assert!(tokio::time::Instant::now() < deadline, "item {item} did not become {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The issue's done-when, in a real browser: a `sample_first` run (6 bare products, sample 3; one
/// described product carries the Yoast meta keys, so the store's SEO fields are known) is
/// held after its sample; the reviewer edits one proposal, approves it with `a`, approves the other
/// two in bulk after the count step, releases the run from its sample gate; the engine writes the
/// rest and the store holds the edited value. Then undo: one write, and the whole run with a count
/// first, where a record edited by hand since is a conflict and keeps the hand edit.
async fn a_sampled_run_is_reviewed_released_and_reverted_in_the_browser(db: &common::TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let review = r#"policy = "sample_first", sample = 3"#;
    let (w, run_id, base, stop) =
        serve_shop(db, fixture("sampled_products.json"), review, Access::new(Some(&auth(true, false)))).await;
    let held = db.store.run(run_id).await.unwrap();
    assert_eq!(held.review_phase, Some(ReviewPhase::SampleReview), "{held:?}");
    let sample = db.store.items(run_id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(sample.len(), 3, "the sample waits for review");
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Queued), 3, "the rest is held");
    let all = db.store.items(run_id, None, 100).await.unwrap();
    let xss = all.iter().find(|i| i.input.contains("<script>alert(1)</script>")).expect("the payload product");
    let payload = xss.input_fields().unwrap()["name"].as_str().unwrap().to_owned();

    let client = browser(&driver).await;
    // Signing in as a named reviewer through the form, from the runs page's redirect; the runs
    // page shows the run's phase.
    client.goto(&format!("{base}/runs")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/login"));
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(REVIEWER).await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    click(&client, "form.login button").await;
    wait_for(&client, "table.runs").await;
    assert_eq!(text_of(&client, "td.run-phase .run-state").await, "waiting for sample review");

    // The payload is text in the queue and on the item page; no script of it ran or was created.
    client.goto(&format!("{base}/queue?run={run_id}&state=all")).await.unwrap();
    wait_for(&client, "table.queue").await;
    let names = client
        .execute("return Array.from(document.querySelectorAll('td.name')).map(td => td.textContent);", vec![])
        .await
        .unwrap();
    assert!(names.as_array().unwrap().iter().any(|n| n.as_str() == Some(payload.as_str())), "{names}");
    client.goto(&format!("{base}/items/{}", xss.id)).await.unwrap();
    wait_for(&client, "#record-name").await;
    assert_eq!(text_of(&client, "#record-name").await, payload);
    let scripts =
        client.execute("return Array.from(document.scripts).map(s => s.src || s.textContent);", vec![]).await.unwrap();
    assert_eq!(scripts, serde_json::json!([format!("{base}/assets/review.js")]), "only our own script");
    let injected = client.execute("return document.querySelectorAll('img[onerror]').length;", vec![]).await.unwrap();
    assert_eq!(injected, 0, "no element of the payload exists");

    // The queue of the run lists the sample; open the first.
    client.goto(&format!("{base}/queue?run={run_id}")).await.unwrap();
    wait_for(&client, "table.queue").await;
    click(&client, "a.open").await;
    wait_for(&client, "#record-name").await;
    let target = sample[0].clone();
    assert_eq!(client.current_url().await.unwrap().path(), format!("/items/{}", target.id));
    assert!(text_of(&client, ".shortcuts").await.contains("approve"), "shortcuts are listed on the page");

    // `e` opens the first field's editor (description); the edit is saved inline.
    press(&client, 'e').await;
    let focused = client.execute("return document.activeElement.closest('section.field').id;", vec![]).await.unwrap();
    assert_eq!(focused, "field-description");
    // At least the task schema's 80 characters: an edit is validated as the model's answer is.
    let edited = "<p>Edited in the browser by Ada: coach screw, galvanised, for timber frames and outdoor decking.</p>";
    let textarea = client.find(Locator::Css("#field-description textarea")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(edited).await.unwrap();
    click(&client, "#field-description .edit-form button").await;
    wait_for(&client, "#field-description .edited-value").await;
    assert_eq!(text_of(&client, "#field-description .edited-value").await, edited);
    assert_eq!(db.store.item(target.id).await.unwrap().state, ItemState::Edited);

    // `a` approves; the page moves on to the next item of the queue.
    press(&client, 'a').await;
    wait_for_state(db, target.id, ItemState::Approved).await;
    let next = format!("{base}/items/{}?run={run_id}", sample[1].id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.current_url().await.unwrap().as_str() != next {
        assert!(tokio::time::Instant::now() < deadline, "the page did not move on to {next}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bulk: "approve all matching" shows the count first and changes nothing until confirmed.
    client.goto(&format!("{base}/queue?run={run_id}")).await.unwrap();
    wait_for(&client, "#approve-all").await;
    assert_eq!(text_of(&client, "#approve-all").await, "Approve all 2 matching this filter…");
    click(&client, "#approve-all").await;
    wait_for(&client, "#bulk-question").await;
    assert_eq!(text_of(&client, "#bulk-question").await, "Approve 2 items?");
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Proposed), 2, "the count changes nothing");
    click(&client, "#bulk-confirm button").await;
    wait_for(&client, "#bulk-result").await;
    assert_eq!(text_of(&client, "#bulk-result").await, format!("2 items were approved by {REVIEWER}."));
    for item in &sample[1..] {
        assert_eq!(db.store.item(item.id).await.unwrap().state, ItemState::Approved);
    }

    // The sample gate on the run page: rates, then the release.
    client.goto(&format!("{base}/runs/{run_id}")).await.unwrap();
    wait_for(&client, "#sample-gate").await;
    assert_eq!(text_of(&client, "#gate-phase").await, "waiting for sample review");
    assert_eq!(text_of(&client, "#sample-reviewed").await, "3 of 3");
    assert_eq!(text_of(&client, "#sample-approved").await, "3 (100%)");
    assert_eq!(text_of(&client, "#sample-rejected").await, "0 (0%)");
    assert_eq!(text_of(&client, "#sample-edited").await, "1 (33%)");
    click(&client, "#release").await;
    wait_for(&client, "#released-by").await;
    assert_eq!(text_of(&client, "#gate-phase").await, "full run (sample released)");
    assert!(text_of(&client, "#released-by").await.starts_with(&format!("by {REVIEWER} at ")));
    let released = db.store.run(run_id).await.unwrap();
    assert_eq!(released.review_phase, Some(ReviewPhase::Released));
    assert_eq!(released.released_by.as_deref(), Some(format!("reviewer:{REVIEWER}").as_str()));

    // The engine works the rest; the store gets the edited description.
    let run = work_until_idle(&w.engine, run_id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let counts = db.store.counts(run_id).await.unwrap();
    assert_eq!(counts.get(ItemState::Written), 6, "{counts:?}");
    let product: u64 = target.external_id.parse().unwrap();
    let stored = w.shop.product(product).unwrap()["description"].as_str().unwrap().to_owned();
    assert!(
        stored
            .contains("Edited in the browser by Ada: coach screw, galvanised, for timber frames and outdoor decking."),
        "store holds {stored:?}"
    );
    for item in db.store.items(run_id, Some(ItemState::Written), 100).await.unwrap().iter().filter(|i| !i.sample) {
        let events = db.store.item_events(item.id).await.unwrap();
        assert!(events.iter().any(|e| e.to_state.as_deref() == Some("approved") && e.actor == "policy:sample_first"));
    }

    // The item's history shows every event, with the reviewer's name.
    client.goto(&format!("{base}/items/{}/history", target.id)).await.unwrap();
    let history = text_of(&client, "table.history").await;
    for words in ["found", "waiting for review", "edited, waiting for review", "approved, to be written", "written"] {
        assert!(history.contains(words), "history lacks {words}: {history}");
    }
    assert!(history.contains(REVIEWER) && !history.contains("reviewer:"), "the reviewer by name: {history}");
    let empty = client
        .execute("return Array.from(document.querySelectorAll('table.history td')).map(td => td.textContent.trim()).filter(t => t.toLowerCase() === 'none').length;", vec![])
        .await
        .unwrap();
    assert_eq!(empty, 0, "no cell says None: {history}");

    // Undo one write: the page shows what goes back (the empty description), then reverts it.
    client.goto(&format!("{base}/items/{}", target.id)).await.unwrap();
    wait_for(&client, "#revert").await;
    assert_eq!(text_of(&client, "#revert .back").await, "(empty)");
    assert!(text_of(&client, "#revert table").await.contains("coach screw, galvanised"));
    click(&client, "#revert-form button").await;
    wait_for(&client, "#revert-summary").await;
    assert!(text_of(&client, "#revert-summary").await.starts_with("1 reverted · 0 conflicts"));
    assert_eq!(w.shop.product(product).unwrap()["description"], "");

    // Undo the whole run, count first; a record edited by hand since our write is a conflict.
    let written = db.store.items(run_id, Some(ItemState::Written), 100).await.unwrap();
    assert_eq!(written.len(), 5);
    let by_hand: u64 = written[0].external_id.parse().unwrap();
    w.shop.edit_as_human(by_hand, serde_json::json!({"description": "<p>Fixed by hand.</p>"})).unwrap();
    client.goto(&format!("{base}/runs/{run_id}")).await.unwrap();
    click(&client, "#revert-run").await;
    wait_for(&client, "#revert-question").await;
    assert_eq!(text_of(&client, "#revert-question").await, format!("Revert 5 written items of run #{run_id}?"));
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Written), 5, "the count changes nothing");
    click(&client, "#revert-run-form button").await;
    wait_for(&client, "#revert-summary").await;
    assert!(text_of(&client, "#revert-summary").await.starts_with("4 reverted · 1 conflict "));
    let outcomes = text_of(&client, "table.revert-results").await;
    assert!(outcomes.contains("conflict: the record was edited since our write"), "{outcomes}");
    let kept = w.shop.product(by_hand).unwrap()["description"].as_str().unwrap().to_owned();
    assert_eq!(kept.trim(), "<p>Fixed by hand.</p>", "the hand edit is kept");
    let counts = db.store.counts(run_id).await.unwrap();
    assert_eq!((counts.get(ItemState::Reverted), counts.get(ItemState::RevertConflict)), (5, 1), "{counts:?}");
    client.close().await.unwrap();
    stop.cancel();
}

/// Bulk and run-revert confirmations over HTTP: a count changes nothing, a stale count is refused
/// with the new one and changes nothing, a selection is decided with the reason and the reviewer's
/// name, and forms without the CSRF token are refused.
async fn bulk_and_revert_confirmations_refuse_a_stale_count(db: &common::TestDb) {
    let (w, run_id, base, stop) = reviewed_shop(db, Access::new(Some(&auth(true, false)))).await;
    let waiting = proposed_ids(db, run_id).await;
    assert_eq!(waiting.len(), 2);
    let client = http();
    let session = sign_in(&client, &base).await;
    let page = client.get(format!("{base}/queue?run={run_id}")).header("cookie", &session).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Approve all 2 matching this filter"), "{page}");
    let csrf = csrf_of(&page);
    let bulk = format!("{base}/queue/bulk?run={run_id}");
    let post = |form: Vec<(&'static str, String)>| client.post(&bulk).header("cookie", &session).form(&form).send();

    let r = post(vec![("do", "approve-filter".into())]).await.unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = post(vec![("csrf", csrf.clone()), ("do", "approve-filter".into())]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Approve 2 items?"));
    let r = post(vec![("csrf", csrf.clone()), ("do", "approve-filter".into()), ("confirm", "3".into())]).await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("2 items match this filter now, not the 3 you confirmed"), "{text}");
    assert!(text.contains("Approve 2 items?"), "asked again with the new count: {text}");
    assert_eq!(proposed_ids(db, run_id).await.len(), 2, "a stale count changes nothing");

    // A selection of one, rejected with a reason.
    let selected = vec![("csrf", csrf.clone()), ("do", "reject-selected".into()), ("ids", waiting[0].to_string())];
    let r = post([selected.clone(), vec![("reason", "too generic".into())]].concat()).await.unwrap();
    assert!(r.text().await.unwrap().contains("Reject 1 item?"));
    let r = post([selected, vec![("reason", "too generic".into()), ("confirm", "1".into())]].concat()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(&format!("1 item was rejected by {REVIEWER}.")));
    let last = db.store.item_events(waiting[0]).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.to_state.as_deref(), last.actor.as_str()),
        (Some("rejected"), format!("reviewer:{REVIEWER}").as_str())
    );
    assert_eq!(last.detail.unwrap()["reason"], "too generic");
    let r = post(vec![("csrf", csrf.clone()), ("do", "approve-selected".into())]).await.unwrap();
    assert_eq!(r.status(), 400, "nothing ticked");

    // The rest by filter, then written; the run's revert counts first too.
    let r = post(vec![("csrf", csrf.clone()), ("do", "approve-filter".into()), ("confirm", "1".into())]).await.unwrap();
    assert_eq!(r.status(), 200);
    let run = work_until_idle(&w.engine, run_id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let r = client.get(format!("{base}/runs/{run_id}/revert")).header("cookie", &session).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(&format!("Revert 1 written item of run #{run_id}?")));
    let revert = format!("{base}/runs/{run_id}/revert");
    let r = client.post(&revert).header("cookie", &session).form(&[("csrf", csrf.as_str()), ("confirm", "2")]).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("1 items of the run are written now, not the 2 you confirmed"));
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Written), 1);
    let r = client.post(&revert).header("cookie", &session).form(&[("csrf", csrf.as_str()), ("confirm", "1")]).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("1 reverted · 0 conflicts"));
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Reverted), 1);
    stop.cancel();
}

on_both_backends! {
    browser_sample_first => a_sampled_run_is_reviewed_released_and_reverted_in_the_browser;
    bulk_and_revert_pages => bulk_and_revert_confirmations_refuse_a_stale_count;
}
