//! The review UI from outside: a real browser (headless Chromium through chromedriver, driven with
//! fantoccini) signs in, edits a proposal, approves it with the keyboard shortcut, and the edited
//! value reaches the WooCommerce sandbox; a `<script>` in a product name renders as text. Over plain
//! HTTP: sign-in is required when `[server.auth]` is set, CSRF-less posts are refused, bearer tokens
//! work for the API, and the open (no auth) server answers only to loopback Host names. And the
//! daemon refuses to bind a public address without auth.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::harness::start_run;
use common::woo::{Woo, woo, work_until_idle};
use enrichd::config::{Config, Secret, ServerAuthConfig};
use enrichd::server::{Access, Site, serve};
use enrichd::store::{ItemState, RunStatus};
use enrichd_woocommerce::sandbox::WooSandbox;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "ui-test-api-token";
const REVIEWER: &str = "Ada Reviewer";

fn products() -> Vec<Value> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ui/products.json")).unwrap();
    serde_json::from_str(&text).unwrap()
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
    let w = woo(db, WooSandbox::with_products(products()), "all", 3).await;
    let run = start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let config = Config::load(&w.config).unwrap();
    let site = Site { access, ..Site::from_config(&config) };
    let stop = CancellationToken::new();
    let (addr, _server) = serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    (w, run.id, format!("http://{addr}"), stop)
}

fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session cookie a response sets (`enrichd_session=…`).
fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("enrichd_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
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

/// chromedriver on a free port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or returns `None` (with a notice) when it is not installed outside CI.
async fn chromedriver() -> Option<Chromedriver> {
    let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if !std::path::Path::new(&path).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and chromedriver is not at {path}: apt-get install chromium chromium-driver");
        }
        eprintln!("NOTICE: chromedriver is not at {path}; skipping the browser test. CI=true makes this a failure.");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {path}: {e}"));
    let driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}") };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

async fn browser(driver: &Chromedriver) -> fantoccini::Client {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1024"],
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("starting Chromium through chromedriver: {e}"))
}

/// Presses one key the way a person does (key down, key up on the focused element).
async fn press(client: &fantoccini::Client, key: char) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let keys =
        KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    client.perform_actions(keys).await.unwrap();
}

async fn text_of(client: &fantoccini::Client, css: &str) -> String {
    let script = "return document.querySelector(arguments[0]).textContent;";
    client.execute(script, vec![Value::from(css)]).await.unwrap().as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_edits_and_approves_in_the_browser_and_the_store_gets_the_edit() {
    use fantoccini::Locator;
    let Some(driver) = chromedriver().await else { return };
    let db = common::sqlite().await;
    let (w, run_id, base, stop) = reviewed_shop(&db, Access::new(Some(&auth(true, false)))).await;
    let items = db.store.items(run_id, Some(ItemState::Proposed), 100).await.unwrap();
    assert_eq!(items.len(), 2, "the two products without a description wait for review");
    let target = &items[0];
    let payload = target.input_fields().unwrap()["name"].as_str().unwrap().to_owned();
    assert!(payload.contains("<script>alert(1)</script>"), "the store kept the payload: {payload}");

    let client = browser(&driver).await;
    // Signing in as a named reviewer through the form, from the queue's redirect.
    client.goto(&format!("{base}/queue?run={run_id}")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/login"));
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(REVIEWER).await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    client.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("table.queue")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().query(), Some(format!("run={run_id}").as_str()));

    // The payload is text in the queue and on the item page; no script of it ran or was created.
    assert!(text_of(&client, "table.queue td.name").await.contains(&payload));
    client.find(Locator::Css("a.open")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("#record-name")).await.unwrap();
    assert_eq!(text_of(&client, "#record-name").await, payload);
    let scripts =
        client.execute("return Array.from(document.scripts).map(s => s.src || s.textContent);", vec![]).await.unwrap();
    assert_eq!(scripts, serde_json::json!([format!("{base}/assets/review.js")]), "only our own script");
    let injected = client.execute("return document.querySelectorAll('img[onerror]').length;", vec![]).await.unwrap();
    assert_eq!(injected, 0, "no element of the payload exists");
    assert!(text_of(&client, ".shortcuts").await.contains("approve"), "shortcuts are listed on the page");

    // `e` opens the first field's editor (description); the edit is saved inline.
    press(&client, 'e').await;
    let focused = client.execute("return document.activeElement.closest('section.field').id;", vec![]).await.unwrap();
    assert_eq!(focused, "field-description");
    let edited = "<p>Edited in the browser by Ada: M8 hex bolt, zinc plated.</p>";
    let textarea = client.find(Locator::Css("#field-description textarea")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(edited).await.unwrap();
    client.find(Locator::Css("#field-description .edit-form button")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("#field-description .edited-value")).await.unwrap();
    assert_eq!(text_of(&client, "#field-description .edited-value").await, edited);
    assert_eq!(db.store.item(target.id).await.unwrap().state, ItemState::Edited);

    // `a` approves; the page moves on to the next item of the queue.
    press(&client, 'a').await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while db.store.item(target.id).await.unwrap().state != ItemState::Approved {
        assert!(tokio::time::Instant::now() < deadline, "the approve shortcut did not approve");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = format!("{base}/items/{}?run={run_id}", items[1].id);
    while client.current_url().await.unwrap().as_str() != next {
        assert!(tokio::time::Instant::now() < deadline, "the page did not move on to {next}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The item's history shows every event, with the reviewer's name.
    client.goto(&format!("{base}/items/{}/history", target.id)).await.unwrap();
    let history = text_of(&client, "table.history").await;
    for kind in ["discovered", "proposed", "edited", "approved"] {
        assert!(history.contains(kind), "history lacks {kind}: {history}");
    }
    assert!(history.contains(&format!("reviewer:{REVIEWER}")));
    client.close().await.unwrap();

    // The write-back sends the edited description to the store.
    let run = work_until_idle(&w.engine, run_id, Duration::from_secs(60)).await;
    let written = db.store.item(target.id).await.unwrap();
    assert_eq!(written.state, ItemState::Written, "{:?} {run:?}", written.last_error);
    let product: u64 = target.external_id.parse().unwrap();
    let stored = w.shop.product(product).unwrap()["description"].as_str().unwrap().to_owned();
    assert!(stored.contains("Edited in the browser by Ada: M8 hex bolt, zinc plated."), "store holds {stored:?}");
    let events = db.store.item_events(target.id).await.unwrap();
    assert!(
        events.iter().any(|e| e.to_state.as_deref() == Some("approved") && e.actor == format!("reviewer:{REVIEWER}"))
    );
    stop.cancel();
    db.cleanup().await;
}
