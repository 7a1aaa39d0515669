//! Accounts and roles from outside, on SQLite and Postgres: `enrichd user …` and `enrichd token …`
//! (the real binary), then the real server over HTTP — signing in by account, roles refused with a
//! 403 naming the role needed, role changes and removals applied on the next request, per-account
//! API tokens (and revoking them), sign-in throttling (429 with Retry-After), the deprecated
//! `[server.auth]` still working with its deprecation shown, and a daemon with accounts allowed to
//! listen beyond loopback. And in a real browser: a reviewer is refused release and revert with a
//! 403 naming the operator role; an operator is not.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::browser::{browser, chromedriver, click, text_of, wait_for};
use common::process::{self, Env, text};
use common::web::{csrf_of, fixture, http, serve_shop, sign_in, try_sign_in};
use common::woo::work_until_idle;
use enrichd::config::{Secret, ServerAuthConfig};
use enrichd::server::Access;
use enrichd::store::{ItemState, ReviewPhase, RunStatus};
use fantoccini::Locator;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

const SHARED_PASSWORD: &str = "the old shared password";
const CONFIG_TOKEN: &str = "the-old-config-token";

async fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output_async(config, args, &Env::default()).await
}

/// Runs `args` with `stdin`, expects exit `code`; returns stdout and stderr together.
async fn expect_with(config: &Path, args: &[&str], stdin: &str, code: i32) -> String {
    let out = process::output_with_stdin(config, args, &Env::default(), stdin).await;
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    text(&out)
}

async fn expect(config: &Path, args: &[&str], code: i32) -> String {
    let out = enrichd(config, args).await;
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    text(&out)
}

/// `enrichd user add NAME --role ROLE --password-stdin` with `NAME-password-1`.
async fn add_user(config: &Path, name: &str, role: &str) {
    let password = format!("{name}-password-1\n");
    let out = expect_with(config, &["user", "add", name, "--role", role, "--password-stdin"], &password, 0).await;
    assert!(out.contains(&format!("account {name} created with role {role}")), "{out}");
}

fn password_of(name: &str) -> String {
    format!("{name}-password-1")
}

/// A config with only the database (what `enrichd user` needs).
fn db_config(dir: &Path, db: &common::TestDb) -> std::path::PathBuf {
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, format!("[database]\nurl = \"{}\"\n", db.url)).unwrap();
    path
}

async fn accounts_are_managed_from_the_command_line(db: &common::TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = db_config(dir.path(), db);
    let cfg = cfg.as_path();
    assert!(expect(cfg, &["user", "list"], 0).await.contains("no accounts"));

    add_user(cfg, "ada", "reviewer").await;
    let out =
        expect_with(cfg, &["user", "add", "ADA", "--role", "viewer", "--password-stdin"], "another-pass\n", 1).await;
    assert!(out.contains("account \"ADA\"") && out.contains("exists already"), "{out}");
    let out = expect_with(cfg, &["user", "add", "bo", "--role", "viewer", "--password-stdin"], "short\n", 2).await;
    assert!(out.contains("account bo: the password is too weak") && out.contains("at least 8"), "{out}");
    let out = expect_with(cfg, &["user", "add", "bo", "--role", "viewer", "--password-stdin"], "\n", 2).await;
    assert!(out.contains("account bo: the password is empty"), "{out}");
    let out = expect(cfg, &["user", "add", "bo", "--role", "viewer"], 2).await;
    assert!(out.contains("account bo: no password given") && out.contains("--password-stdin"), "{out}");
    let out = expect_with(cfg, &["user", "add", "bo", "--role", "root", "--password-stdin"], "long-enough\n", 2).await;
    assert!(out.contains("unknown role \"root\""), "{out}");
    add_user(cfg, "Bo", "viewer").await;

    let listing = expect(cfg, &["user", "list"], 0).await;
    assert!(listing.contains("ada") && listing.contains("reviewer") && listing.contains("Bo"), "{listing}");
    let listed: Value = serde_json::from_str(&expect(cfg, &["user", "list", "--json"], 0).await).unwrap();
    let names: Vec<(&str, &str)> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["role"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("ada", "reviewer"), ("Bo", "viewer")]);
    assert!(!listing.contains("argon2") && !listed.to_string().contains("argon2"), "no hashes are listed");

    // The database holds salted Argon2id hashes, never the passwords.
    let rows = sqlx::query("SELECT name, password_hash FROM accounts ORDER BY name_key")
        .fetch_all(db.store.write_pool())
        .await
        .unwrap();
    let hashes: Vec<String> = rows.iter().map(|r| r.get::<String, _>("password_hash")).collect();
    for (hash, name) in hashes.iter().zip(["ada", "Bo"]) {
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&password_of(name)), "the password is not stored");
    }

    // A new password, a new role; unknown accounts are named.
    expect_with(cfg, &["user", "passwd", "ada", "--password-stdin"], "a brand new one\r\n", 0).await;
    let after = sqlx::query("SELECT password_hash FROM accounts WHERE name_key = 'ada'")
        .fetch_one(db.store.write_pool())
        .await
        .unwrap()
        .get::<String, _>("password_hash");
    assert_ne!(after, hashes[0]);
    assert!(enrichd::accounts::verify_password(&after, "a brand new one"), "the line ending is not part of it");
    let out = expect_with(cfg, &["user", "passwd", "nobody", "--password-stdin"], "long-enough\n", 1).await;
    assert!(out.contains("account \"nobody\""), "{out}");
    assert!(expect(cfg, &["user", "role", "ada", "operator"], 0).await.contains("account ada is now an operator"));
    assert!(expect(cfg, &["user", "role", "nobody", "admin"], 1).await.contains("account \"nobody\""));

    // Tokens: printed once, alone on stdout; stored as their SHA-256; listed without them.
    let out = enrichd(cfg, &["token", "create", "ada", "--label", "nightly export"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout: {stdout:?}");
    assert!(token.starts_with("enrichd_") && token.len() == 72, "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown only this once"));
    let stored: String = sqlx::query("SELECT token_hash FROM api_tokens")
        .fetch_one(db.store.write_pool())
        .await
        .unwrap()
        .get("token_hash");
    assert_eq!(stored, hex::encode(Sha256::digest(token.as_bytes())));
    let listing = expect(cfg, &["token", "list"], 0).await;
    assert!(listing.contains("nightly export") && listing.contains("ada") && listing.contains("never"), "{listing}");
    assert!(!listing.contains(token) && !listing.contains(&stored));
    assert!(expect(cfg, &["token", "create", "nobody"], 1).await.contains("account \"nobody\""));
    let id =
        serde_json::from_str::<Value>(&expect(cfg, &["token", "list", "--json"], 0).await).unwrap()["tokens"][0]["id"]
            .as_i64()
            .unwrap()
            .to_string();
    assert!(expect(cfg, &["token", "revoke", &id], 0).await.contains("revoked"));
    assert!(expect(cfg, &["token", "revoke", &id], 1).await.contains("revoked already"));
    assert!(expect(cfg, &["token", "revoke", "999"], 1).await.contains("API token 999 not found"));

    // Removing an account takes its tokens along.
    assert!(expect(cfg, &["user", "remove", "ada"], 0).await.contains("account ada removed"));
    assert!(expect(cfg, &["user", "remove", "ada"], 1).await.contains("account \"ada\""));
    assert!(expect(cfg, &["token", "list"], 0).await.contains("no API tokens"));
    let out = expect(cfg, &["user", "remove", "Bo"], 0).await;
    assert!(out.contains("no accounts are left"), "{out}");
}

/// A page's body, fetched with a session cookie.
async fn page(client: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let r = client.get(url).header("cookie", cookie).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn accounts_sign_in_and_roles_apply_over_http(db: &common::TestDb) {
    let (w, run_id, base, stop) = serve_shop(db, fixture("products.json"), "all", Access::new(None)).await;
    let cfg = w.config.as_path();
    let client = http();
    // Open while there are no accounts: a loopback API call acts as `local`.
    assert_eq!(client.get(format!("{base}/api/runs")).send().await.unwrap().status(), 200);
    for (name, role) in [("vera", "viewer"), ("rita", "reviewer"), ("otto", "operator")] {
        add_user(cfg, name, role).await;
    }
    let items: Vec<i64> =
        db.store.items(run_id, Some(ItemState::Proposed), 100).await.unwrap().iter().map(|i| i.id).collect();
    assert_eq!(items.len(), 2);

    // With accounts, even this machine must sign in.
    let r = client.get(format!("{base}/runs")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(client.get(format!("{base}/api/runs")).send().await.unwrap().status(), 401);
    let r = try_sign_in(&client, &base, "vera", "not her password").await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("wrong account name or password"));
    let r = try_sign_in(&client, &base, "nobody", "whatever-it-is").await;
    assert_eq!(r.status(), 401, "an unknown name is refused like a wrong password");
    let r = try_sign_in(&client, &base, "VERA", &password_of("vera")).await;
    assert_eq!(r.status(), 303, "names ignore case");

    // A viewer looks, and is refused an approval with a 403 naming the role it needs.
    let vera = sign_in(&client, &base, "vera", &password_of("vera")).await;
    let item_url = format!("{base}/items/{}", items[0]);
    let (status, html) = page(&client, &item_url, &vera).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"signed-in-name\">vera<") && html.contains("id=\"signed-in-role\">viewer<"), "{html}");
    assert!(!html.contains("id=\"approve-form\""), "a viewer is not shown the approve button");
    let csrf = csrf_of(&html);
    let approve = format!("{base}/items/{}/approve", items[0]);
    let r = client.post(&approve).header("cookie", &vera).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let refusal = r.text().await.unwrap();
    assert!(refusal.contains("approve a proposal needs the reviewer role (or higher); vera is a viewer"), "{refusal}");
    let api_approve = format!("{base}/api/items/{}/approve", items[0]);
    let r = client.post(&api_approve).header("cookie", &vera).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["needs_role"], "reviewer");
    assert_eq!(db.store.item(items[0]).await.unwrap().state, ItemState::Proposed);

    // A role change applies on the next request; the trail names the account.
    expect(cfg, &["user", "role", "vera", "reviewer"], 0).await;
    let (_, html) = page(&client, &item_url, &vera).await;
    assert!(html.contains("id=\"approve-form\""), "now a reviewer: {html}");
    let r = client.post(&approve).header("cookie", &vera).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let last = db.store.item_events(items[0]).await.unwrap().pop().unwrap();
    assert_eq!((last.to_state.as_deref(), last.actor.as_str()), (Some("approved"), "reviewer:vera"));
    // A body cannot claim another name.
    let r = client
        .post(format!("{base}/api/items/{}/reject", items[1]))
        .header("cookie", &vera)
        .json(&json!({ "reviewer": "otto", "reason": "meh" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(db.store.item_events(items[1]).await.unwrap().pop().unwrap().actor, "reviewer:vera");

    // A removed account's session ends on its next request.
    expect(cfg, &["user", "remove", "vera"], 0).await;
    let r = client.get(format!("{base}/runs")).header("cookie", &vera).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed out");

    // A new password ends the sessions signed in before it.
    let otto = sign_in(&client, &base, "otto", &password_of("otto")).await;
    assert_eq!(page(&client, &format!("{base}/runs"), &otto).await.0, 200);
    expect_with(cfg, &["user", "passwd", "otto", "--password-stdin"], "otto-password-2\n", 0).await;
    assert_eq!(client.get(format!("{base}/runs")).header("cookie", &otto).send().await.unwrap().status(), 303);
    assert_eq!(try_sign_in(&client, &base, "otto", &password_of("otto")).await.status(), 401);
    sign_in(&client, &base, "otto", "otto-password-2").await;

    // A per-account token acts as its account, with its role; a revoked one is refused.
    let out = enrichd(cfg, &["token", "create", "rita", "--label", "script"]).await;
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let r = client.get(format!("{base}/api/runs")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/runs/{run_id}/release"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["needs_role"], "operator");
    assert!(body["error"].as_str().unwrap().contains("rita is a reviewer"), "{body}");
    let listed: Value = serde_json::from_str(&expect(cfg, &["token", "list", "--json"], 0).await).unwrap();
    assert!(listed["tokens"][0]["last_used_at"].is_i64(), "its use is recorded: {listed}");
    let id = listed["tokens"][0]["id"].as_i64().unwrap().to_string();
    expect(cfg, &["token", "revoke", &id], 0).await;
    let r = client.get(format!("{base}/api/runs")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("was revoked"));
    let r = client.get(format!("{base}/api/runs")).bearer_auth("enrichd_guess").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Admins see the accounts and tokens (never a hash or a token); others are refused.
    let otto = sign_in(&client, &base, "otto", "otto-password-2").await;
    let (status, text) = page(&client, &format!("{base}/users"), &otto).await;
    assert_eq!(status, 403);
    assert!(text.contains("see the accounts needs the admin role (or higher); otto is an operator"), "{text}");
    assert!(!page(&client, &format!("{base}/runs"), &otto).await.1.contains("id=\"users-link\""));
    add_user(cfg, "adam", "admin").await;
    let adam = sign_in(&client, &base, "adam", &password_of("adam")).await;
    let (status, text) = page(&client, &format!("{base}/runs"), &adam).await;
    assert!(status == 200 && text.contains("id=\"users-link\""), "{text}");
    let (status, text) = page(&client, &format!("{base}/users"), &adam).await;
    assert_eq!(status, 200);
    for shown in ["rita", "otto", "adam", "operator", "script"] {
        assert!(text.contains(shown), "{shown}: {text}");
    }
    assert!(text.contains("class=\"revoked\""), "the revoked token is marked: {text}");
    assert!(!text.contains("argon2") && !text.contains(&token) && !text.contains("none"), "{text}");
    stop.cancel();
}

async fn failed_sign_ins_are_throttled(db: &common::TestDb) {
    let (w, _run, base, stop) = serve_shop(db, fixture("products.json"), "all", Access::new(None)).await;
    let cfg = w.config.as_path();
    add_user(cfg, "rita", "reviewer").await;
    add_user(cfg, "otto", "operator").await;
    let client = http();
    for _ in 0..5 {
        assert_eq!(try_sign_in(&client, &base, "rita", "wrong guess").await.status(), 401);
    }
    // Locked: even the right password waits, with Retry-After and a plain message.
    let r = try_sign_in(&client, &base, "rita", &password_of("rita")).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body = r.text().await.unwrap();
    assert!(body.contains("too many failed sign-ins for this account or from this address: try again in"), "{body}");
    // Another account from the same address still signs in...
    sign_in(&client, &base, "otto", &password_of("otto")).await;
    // ...until the address itself has failed too often, whatever names it tried.
    for i in 0..15 {
        assert_eq!(try_sign_in(&client, &base, &format!("guess{i}"), "wrong guess").await.status(), 401);
    }
    let r = try_sign_in(&client, &base, "otto", &password_of("otto")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    stop.cancel();
}

fn shared_auth(password: bool, token: bool) -> ServerAuthConfig {
    ServerAuthConfig {
        password: password.then(|| Secret(SHARED_PASSWORD.to_owned().into())),
        token: token.then(|| Secret(CONFIG_TOKEN.to_owned().into())),
        session_hours: 1,
    }
}

async fn the_shared_password_still_works_and_is_deprecated(db: &common::TestDb) {
    let access = Access::new(Some(&shared_auth(true, true)));
    let (w, run_id, base, stop) = serve_shop(db, fixture("products.json"), "all", access).await;
    let cfg = w.config.as_path();
    let client = http();
    let (_, login) = page(&client, &format!("{base}/login"), "").await;
    assert!(login.contains("id=\"deprecation\""), "{login}");
    assert!(login.contains("[server.auth] is deprecated") && login.contains("enrichd user add"), "{login}");

    // A single-account setup: the name typed, as admin; the config token acts as `api`.
    let grace = sign_in(&client, &base, "Grace", SHARED_PASSWORD).await;
    let (_, html) = page(&client, &format!("{base}/runs/{run_id}"), &grace).await;
    assert!(html.contains("id=\"signed-in-name\">Grace<") && html.contains("id=\"signed-in-role\">admin<"));
    let r = client.get(format!("{base}/api/runs")).bearer_auth(CONFIG_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Once an account exists, the shared password no longer signs in (and says why); sessions it
    // made end; the config token still works.
    add_user(cfg, "ada", "admin").await;
    assert_eq!(client.get(format!("{base}/runs")).header("cookie", &grace).send().await.unwrap().status(), 303);
    let r = try_sign_in(&client, &base, "Grace", SHARED_PASSWORD).await;
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(text.contains("the shared password of [server.auth] no longer signs in"), "{text}");
    assert!(text.contains("no longer signs in, because accounts exist"), "the deprecation says so too: {text}");
    sign_in(&client, &base, "ada", &password_of("ada")).await;
    let r = client.get(format!("{base}/api/runs")).bearer_auth(CONFIG_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    stop.cancel();
}

on_both_backends! {
    command_line => accounts_are_managed_from_the_command_line;
    http_roles => accounts_sign_in_and_roles_apply_over_http;
    throttling => failed_sign_ins_are_throttled;
    shared_password => the_shared_password_still_works_and_is_deprecated;
    browser_roles => a_reviewer_is_refused_revert_and_release_with_a_403_naming_the_role_an_operator_is_not;
}

/// `enrichd check` and the daemon's start both say that `[server.auth]` is deprecated; with an
/// account the daemon may listen on every address (no `[server.auth]` needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecation_is_printed_and_accounts_allow_a_public_address() {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("enrichd.toml");
    std::fs::write(
        &cfg,
        format!("[database]\nurl = \"{}\"\n\n[server.auth]\npassword = \"${{TEST_SHARED_PASSWORD}}\"\n", db.url),
    )
    .unwrap();
    let env = Env { log_level: "warn", json_logs: false, vars: &[("TEST_SHARED_PASSWORD", SHARED_PASSWORD)] };
    let out = process::output_async(&cfg, &["check", "--offline"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("warn  server.auth: [server.auth] is deprecated"), "{}", text(&out));
    assert!(text(&out).contains("enrichd user add NAME --role ROLE"), "{}", text(&out));
    let log = dir.path().join("daemon.log");
    let daemon = process::Enrichd::daemon_with(&cfg, log, &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !daemon.output().contains("[server.auth] is deprecated") {
        assert!(tokio::time::Instant::now() < deadline, "no deprecation logged: {}", daemon.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(daemon);

    // Without [server.auth], a public address needs an account.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, format!("[database]\nurl = \"{}\"\n", db.url)).unwrap();
    let out = enrichd(&open, &["daemon", "--bind", "0.0.0.0:0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("enrichd user add NAME --role admin"), "{}", text(&out));
    add_user(&open, "ada", "admin").await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", open.to_str().unwrap(), "daemon", "--ui-only", "--bind", "0.0.0.0:0"])
        .env("ENRICHD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://0.0.0.0:"), "{line:?}");
    db.cleanup().await;
}

// ---- the browser ----

/// Signs `name` in through the sign-in form in the browser.
async fn browser_sign_in(client: &fantoccini::Client, base: &str, name: &str, password: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    client.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(name).await.unwrap();
    client.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(password).await.unwrap();
    click(client, "form.login button").await;
    wait_for(client, "#signed-in-role").await;
}

async fn browser_sign_out(client: &fantoccini::Client) {
    click(client, "form.who button").await;
    wait_for(client, "form.login").await;
}

/// Posts a form from the page, with the page's CSRF token, the way a hand-made form or a script on
/// the page would; returns the status and the text of the answer.
async fn post_from_page(client: &fantoccini::Client, path: &str, fields: &str) -> (u64, String) {
    let script = "const [path, fields, done] = arguments;
        const csrf = document.querySelector('input[name=csrf]').value;
        fetch(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
                      body: 'csrf=' + encodeURIComponent(csrf) + fields, redirect: 'manual' })
          .then(async r => done([r.status, await r.text()]));";
    let answer = client.execute_async(script, vec![Value::from(path), Value::from(fields)]).await.unwrap();
    (answer[0].as_u64().unwrap(), answer[1].as_str().unwrap().to_owned())
}

/// The issue's done-when, in a real browser: a reviewer signed in is not shown the release and
/// revert buttons, and a release or revert posted from the page with its CSRF token is a 403 whose
/// text names the operator role; an operator then releases the sample and reverts a write.
async fn a_reviewer_is_refused_revert_and_release_with_a_403_naming_the_role_an_operator_is_not(db: &common::TestDb) {
    let Some(driver) = chromedriver().await else { return };
    let review = r#"policy = "sample_first", sample = 3"#;
    let (w, run_id, base, stop) = serve_shop(db, fixture("sampled_products.json"), review, Access::new(None)).await;
    let cfg = w.config.as_path();
    add_user(cfg, "rita", "reviewer").await;
    add_user(cfg, "otto", "operator").await;
    let client = browser(&driver).await;

    // The reviewer reviews the sample (approves it in bulk)...
    browser_sign_in(&client, &base, "rita", &password_of("rita")).await;
    assert_eq!(text_of(&client, "#signed-in").await, "Signed in as rita reviewer");
    client.goto(&format!("{base}/queue?run={run_id}")).await.unwrap();
    wait_for(&client, "#approve-all").await;
    click(&client, "#approve-all").await;
    wait_for(&client, "#bulk-question").await;
    click(&client, "#bulk-confirm button").await;
    wait_for(&client, "#bulk-result").await;
    assert_eq!(db.store.sample_stats(run_id).await.unwrap().reviewed, 3);

    // ...but is not offered the release, and a release posted anyway is refused naming the role.
    client.goto(&format!("{base}/runs/{run_id}")).await.unwrap();
    wait_for(&client, "#sample-gate").await;
    let buttons =
        "return ['#release', '#release-anyway', '#revert-run'].filter(s => document.querySelector(s)).length;";
    assert_eq!(client.execute(buttons, vec![]).await.unwrap(), 0, "no release or revert for a reviewer");
    let (status, answer) = post_from_page(&client, &format!("/runs/{run_id}/release"), "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("release a sample needs the operator role (or higher); rita is a reviewer"), "{answer}");
    assert_eq!(db.store.run(run_id).await.unwrap().review_phase, Some(ReviewPhase::SampleReview));

    // The operator releases it.
    browser_sign_out(&client).await;
    browser_sign_in(&client, &base, "otto", &password_of("otto")).await;
    client.goto(&format!("{base}/runs/{run_id}")).await.unwrap();
    wait_for(&client, "#release").await;
    click(&client, "#release").await;
    wait_for(&client, "#released-by").await;
    assert!(text_of(&client, "#released-by").await.starts_with("by reviewer:otto at "));
    let run = work_until_idle(&w.engine, run_id, Duration::from_secs(60)).await;
    assert_eq!(run.status, RunStatus::Done, "{run:?}");
    let written = db.store.items(run_id, Some(ItemState::Written), 100).await.unwrap();
    assert_eq!(written.len(), 6);
    let item = written[0].id;

    // The reviewer is not offered undo, and an undo posted anyway is refused naming the role.
    browser_sign_out(&client).await;
    browser_sign_in(&client, &base, "rita", &password_of("rita")).await;
    client.goto(&format!("{base}/items/{item}")).await.unwrap();
    wait_for(&client, "#record-name").await;
    let revert = "return document.querySelectorAll('#revert, #revert-form').length;";
    assert_eq!(client.execute(revert, vec![]).await.unwrap(), 0, "no revert for a reviewer");
    let (status, answer) = post_from_page(&client, &format!("/items/{item}/revert"), "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("revert a write needs the operator role (or higher); rita is a reviewer"), "{answer}");
    let (status, answer) = post_from_page(&client, &format!("/runs/{run_id}/revert"), "&confirm=6").await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("needs the operator role"), "{answer}");
    assert_eq!(db.store.counts(run_id).await.unwrap().get(ItemState::Written), 6, "nothing was reverted");

    // The operator reverts the write; the trail names the account.
    browser_sign_out(&client).await;
    browser_sign_in(&client, &base, "otto", &password_of("otto")).await;
    client.goto(&format!("{base}/items/{item}")).await.unwrap();
    wait_for(&client, "#revert-form").await;
    click(&client, "#revert-form button").await;
    wait_for(&client, "#revert-summary").await;
    assert!(text_of(&client, "#revert-summary").await.starts_with("1 reverted · 0 conflicts"));
    let events = db.store.item_events(item).await.unwrap();
    assert!(
        events.iter().any(|e| e.to_state.as_deref() == Some("reverted") && e.actor == "reviewer:otto"),
        "{events:?}"
    );
    client.close().await.unwrap();
    stop.cancel();
}
