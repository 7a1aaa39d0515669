//! Xero and QuickBooks Online as OAuth2 connections, over real HTTP against their sandboxes with the
//! engine's own database: `enrichd connect` end to end (a test plays the browser), tokens stored
//! only encrypted, the organisation chosen and used by the next run; a lost refresh answer
//! recovered within Xero's grace; three daemons refreshing one connection at once keeping one
//! chain; `invalid_grant` pausing the run with no further token requests until `connect`; and
//! Xero's daily allowance pausing a run that resumes by itself after the reset, without a retry storm.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{PROVIDER_KEY, ProviderSandbox, TestDb};
use enrichd::config::Config;
use enrichd::engine::{Engine, drain};
use enrichd::oauth::connect::{ConnectOptions, Connected, connect};
use enrichd::store::{CredentialVault, ItemState, NewRun, Run, RunStart, RunStatus, Store, connection_state};
use enrichd_connector::oauth2::{TokenSet, TokenStore};
use enrichd_xero::sandbox::{self as xs, XeroSandbox};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SECRET_KEY: &str = "a long random key for the test vault";

enum Platform {
    Xero,
    QuickBooks,
}

/// A config in `dir` for one OAuth2 connection `books` at `base`, a simulated model at `provider`,
/// and pipeline `bills` filling missing invoice numbers (held for review). Secrets are files.
fn write_config(dir: &Path, db: &TestDb, platform: &Platform, base: &str, provider: &str) -> PathBuf {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        format!("file:{}", path.display())
    };
    let connection = match platform {
        Platform::Xero => format!(
            "kind = \"xero\"\nbase_url = \"{base}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\ntimeout_secs = 10",
            secret("xero_id", xs::CLIENT_ID),
            secret("xero_secret", xs::CLIENT_SECRET)
        ),
        Platform::QuickBooks => format!(
            "kind = \"quickbooks\"\nbase_url = \"{base}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\ntimeout_secs = 10",
            secret("qbo_id", enrichd_quickbooks::sandbox::CLIENT_ID),
            secret("qbo_secret", enrichd_quickbooks::sandbox::CLIENT_SECRET)
        ),
    };
    let text = format!(
        r#"
[database]
url = "{db_url}"
max_connections = 8
secret_key = "{key}"

[daemon]
lease_seconds = 10
shutdown_grace_seconds = 5
poll_interval_ms = 20
retry_base_ms = 50
retry_max_seconds = 1

[connections.books]
{connection}

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "{api_key}"
timeout_seconds = 10

[tasks.bill_number]
version = "1"
description = "An invoice number for a draft bill"
system = "You read supplier bills."
prompt = "Bill {{{{ record.id }}}}: give its invoice number."
max_output_tokens = 200

[tasks.bill_number.output_schema]
type = "object"
additionalProperties = false
required = ["invoice_number"]

[tasks.bill_number.output_schema.properties.invoice_number]
type = "string"
minLength = 1
maxLength = 200

[tasks.bill_number.fields]
invoice_number = "invoice_number"

[pipelines.bills]
connection = "books"
entity = "bills"
task = "bill_number"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 4
max_attempts = 3
select = {{ missing = ["invoice_number"] }}
"#,
        db_url = db.url,
        key = secret("secret_key", SECRET_KEY),
        api_key = secret("provider_key", PROVIDER_KEY),
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Books {
    config: Config,
    provider: ProviderSandbox,
    _dir: tempfile::TempDir,
}

async fn books(db: &TestDb, platform: Platform, base: &str) -> Books {
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), db, &platform, base, &format!("http://{paddr}/v1"));
    let config = Config::load(&path).unwrap();
    Books { config, provider, _dir: dir }
}

fn vault(store: &Store) -> CredentialVault {
    CredentialVault::new(store.clone(), Some(&SecretString::from(SECRET_KEY)))
}

/// Runs `enrichd connect books` and plays the browser: follows the printed address (the sandbox
/// approves at once and redirects to the loopback listener).
async fn connect_in_browser(config: &Config, store: &Store, tenant: Option<&str>) -> Result<Connected, String> {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let options = ConnectOptions { port: 0, tenant: tenant.map(str::to_owned), ..ConnectOptions::default() };
    let browser = tokio::spawn(async move {
        let url = rx.await.unwrap();
        let page = enrichd_connector::http::client(Duration::from_secs(30)).get(&url).send().await.unwrap();
        let status = page.status().as_u16();
        (status, page.text().await.unwrap())
    });
    let mut tx = Some(tx);
    let connected = connect(config, store, "books", &options, |url, redirect| {
        assert!(redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"), "{redirect}");
        assert!(url.contains("code_challenge_method=S256"), "PKCE S256: {url}");
        tx.take().unwrap().send(url.to_owned()).unwrap();
    })
    .await;
    let (status, page) = browser.await.unwrap();
    assert_eq!(status, 200, "{page}");
    connected
}

/// The stored row of `books` as the database holds it, every column as text.
async fn raw_credentials(store: &Store) -> String {
    let row = sqlx::query(
        "SELECT connection, nonce, ciphertext, refresh_digest, tenant_id, tenant_name FROM credentials WHERE connection = 'books'",
    )
    .fetch_one(store.write_pool())
    .await
    .unwrap();
    (0..6).map(|i| row.try_get::<Option<String>, _>(i).unwrap().unwrap_or_default()).collect::<Vec<_>>().join("|")
}

fn assert_not_in_plain_text(raw: &str, tokens: &TokenSet) {
    for secret in [tokens.access_token.expose_secret(), tokens.refresh_token.expose_secret()] {
        assert!(!secret.is_empty());
        assert!(!raw.contains(secret), "a token is stored in plain text");
        assert!(!raw.contains(&hex_of(secret)), "a token is stored hex-encoded");
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn start(engine: &Engine) -> Run {
    let config = &engine.pipelines["bills"].config;
    let new = NewRun {
        pipeline: "bills".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: config.max_attempts as i64,
        budget_micros: None,
        sample: None,
    };
    match engine.store.create_run(&new).await.unwrap() {
        RunStart::Created(r) | RunStart::AlreadyActive(r) => r,
        RunStart::TickTaken => unreachable!(),
    }
}

/// Works pipeline `bills` of `engine` (as a daemon does) until `done(run)` holds or `timeout`
/// passes; returns the run as it then is.
async fn work_until(engine: &Arc<Engine>, run_id: i64, timeout: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let stop = CancellationToken::new();
    let upkeep_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let upkeep = engine.spawn_upkeep(upkeep_stop.clone());
    let pipeline = engine.pipelines["bills"].clone();
    let worker = {
        let (e, s, t) = (engine.clone(), stop.clone(), tracker.clone());
        tokio::spawn(async move { e.work_pipeline(pipeline, Some(run_id), s, t).await })
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let run = loop {
        let run = engine.store.run(run_id).await.unwrap();
        if done(&run) || tokio::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    drain(engine, &tracker, Duration::from_secs(5)).await;
    worker.await.unwrap();
    upkeep_stop.cancel();
    upkeep.await.unwrap();
    run
}

fn settled(run: &Run) -> bool {
    matches!(run.status, RunStatus::AwaitingReview | RunStatus::Done | RunStatus::Failed | RunStatus::Cancelled)
}

// ---------------------------------------------------------------------------------------------

async fn xero_connect_end_to_end(db: &TestDb) {
    let org = XeroSandbox::new(12, 7);
    let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::Xero, &format!("http://{addr}")).await;

    // Before `connect` the connection says what to do, and makes no token request.
    let engine = Engine::build(&b.config, db.store.clone());
    let e = engine.connectors["books"].check("bills").await.unwrap_err();
    assert!(e.message.contains("enrichd connect books"), "{e}");
    assert_eq!(org.counters().token_requests, 0);

    let connected = connect_in_browser(&b.config, &db.store, None).await.unwrap();
    assert_eq!(connected.tenant_id, xs::TENANT_ID);
    assert_eq!(connected.tenant_name.as_deref(), Some(xs::TENANT_NAME));
    let stored = vault(&db.store).load("books").await.unwrap().expect("tokens stored");
    assert!(org.refresh_token_alive(stored.refresh_token.expose_secret()));
    assert_not_in_plain_text(&raw_credentials(&db.store).await, &stored);
    let state = connection_state(&db.store, "books").await.unwrap().unwrap();
    assert_eq!((state.authorised, state.needs_connect, state.tenant_id.as_deref()), (true, None, Some(xs::TENANT_ID)));

    // A following run uses them, for the organisation chosen (the config names none).
    let engine = Arc::new(Engine::build(&b.config, db.store.clone()));
    let run = start(&engine).await;
    let run = work_until(&engine, run.id, Duration::from_secs(60), settled).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let counts = engine.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Proposed), org.candidates().len() as i64, "{counts:?}");
    assert!(org.uses_of(stored.access_token.expose_secret()) > 0, "the run used the tokens `connect` stored");
    assert!(b.provider.stats().requests > 0);

    // --tenant for scripts: an organisation the authorisation does not reach is refused by name.
    let e = connect_in_browser(&b.config, &db.store, Some("00000000-0000-4000-8000-000000000000")).await.unwrap_err();
    assert!(e.contains("--tenant 00000000-0000-4000-8000-000000000000") && e.contains(xs::TENANT_NAME), "{e}");
    let again = connect_in_browser(&b.config, &db.store, Some(xs::TENANT_ID)).await.unwrap();
    assert_eq!(again.tenant_id, xs::TENANT_ID);
}

async fn quickbooks_connect_end_to_end(db: &TestDb) {
    use enrichd_quickbooks::sandbox::{ACCESS_TOKEN, QuickBooksSandbox, REALM_ID};
    let company = QuickBooksSandbox::new(12, 7);
    let addr = company.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::QuickBooks, &format!("http://{addr}")).await;

    let connected = connect_in_browser(&b.config, &db.store, None).await.unwrap();
    assert_eq!(connected.tenant_id, REALM_ID, "the realm comes from the redirect");
    let stored = vault(&db.store).load("books").await.unwrap().expect("tokens stored");
    assert_ne!(stored.access_token.expose_secret(), ACCESS_TOKEN, "tokens from the code exchange");
    assert!(company.refresh_token_valid(stored.refresh_token.expose_secret()));
    assert_not_in_plain_text(&raw_credentials(&db.store).await, &stored);

    let engine = Arc::new(Engine::build(&b.config, db.store.clone()));
    let run = start(&engine).await;
    let run = work_until(&engine, run.id, Duration::from_secs(60), settled).await;
    assert_eq!(run.status, RunStatus::AwaitingReview, "{run:?}");
    let counts = engine.store.counts(run.id).await.unwrap();
    assert!(counts.get(ItemState::Proposed) > 0, "{counts:?}");
    assert_eq!(counts.get(ItemState::Dead), 0, "{counts:?}");

    // A --tenant that is not the company authorised stores nothing new.
    let e = connect_in_browser(&b.config, &db.store, Some("123")).await.unwrap_err();
    assert!(e.contains("realm") && e.contains(REALM_ID), "{e}");
}

/// Tokens as if `enrichd connect` had stored them, for the Xero sandbox's organisation.
async fn seed_xero_tokens(org: &XeroSandbox, store: &Store) -> TokenSet {
    let (access, refresh, expires_in) = org.authorise();
    let tokens = TokenSet {
        access_token: access.into(),
        refresh_token: refresh.into(),
        expires_at: chrono::Utc::now().timestamp() + expires_in,
    };
    vault(store).connected("books", &tokens, Some(xs::TENANT_ID), Some(xs::TENANT_NAME)).await.unwrap();
    tokens
}

async fn lost_refresh_answer_is_recovered(db: &TestDb) {
    let org = XeroSandbox::new(6, 7);
    let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::Xero, &format!("http://{addr}")).await;
    let first = seed_xero_tokens(&org, &db.store).await;
    let engine = Engine::build(&b.config, db.store.clone());
    org.advance(xs::ACCESS_TOKEN_SECS + 1);
    org.set_limits(xs::Limits { lose_refresh_responses: 1, ..xs::Limits::default() });
    engine.connectors["books"].check("bills").await.unwrap();
    let counters = org.counters();
    assert_eq!((counters.refreshes, counters.grace_refreshes), (2, 1), "{counters:?}");
    let stored = vault(&db.store).load("books").await.unwrap().unwrap();
    assert_ne!(stored.refresh_token.expose_secret(), first.refresh_token.expose_secret());
    assert!(org.refresh_token_alive(stored.refresh_token.expose_secret()), "the stored chain is the live one");
    // Past the grace only the stored chain is alive, and it still works.
    org.advance(xs::GRACE_SECS + 1);
    assert!(!org.refresh_token_alive(first.refresh_token.expose_secret()));
    engine.connectors["books"].check("bills").await.unwrap();
}

async fn three_daemons_refresh_at_once(db: &TestDb) {
    let org = XeroSandbox::new(6, 7);
    let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::Xero, &format!("http://{addr}")).await;
    let first = seed_xero_tokens(&org, &db.store).await;
    org.set_limits(xs::Limits { per_minute: 1000, ..xs::Limits::default() });
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(Engine::build(&b.config, db.connect_again(4).await));
    }
    let mut replaced = vec![first.refresh_token.expose_secret().to_owned()];
    for round in 1..=2u64 {
        // Every access token has expired: all three daemons refresh at the same moment.
        org.advance(xs::ACCESS_TOKEN_SECS + 1);
        let (a, b2, c) = tokio::join!(
            daemons[0].connectors["books"].check("bills"),
            daemons[1].connectors["books"].check("bills"),
            daemons[2].connectors["books"].check("bills"),
        );
        for (i, result) in [a, b2, c].into_iter().enumerate() {
            result.unwrap_or_else(|e| panic!("round {round}: daemon {i} lost the connection: {e}"));
        }
        let counters = org.counters();
        assert_eq!(counters.refreshes, round, "one refresh for the three daemons: {counters:?}");
        assert_eq!((counters.invalid_grants, counters.grace_refreshes), (0, 0), "{counters:?}");
        let stored = vault(&db.store).load("books").await.unwrap().unwrap();
        assert!(org.refresh_token_alive(stored.refresh_token.expose_secret()), "the stored chain is alive");
        replaced.push(stored.refresh_token.expose_secret().to_owned());
    }
    // Exactly one chain: past the grace, the stored refresh token is the only one alive, and all
    // three daemons still call (one more refresh between them).
    let current = replaced.pop().unwrap();
    org.advance(xs::GRACE_SECS + 1);
    assert!(org.refresh_token_alive(&current));
    for old in &replaced {
        assert!(!org.refresh_token_alive(old), "a replaced refresh token outlived the grace");
    }
    for daemon in &daemons {
        daemon.connectors["books"].check("bills").await.unwrap();
    }
    assert_eq!(org.counters().refreshes, 3);
}

async fn invalid_grant_pauses_until_connect(db: &TestDb) {
    let org = XeroSandbox::new(12, 7);
    let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::Xero, &format!("http://{addr}")).await;
    seed_xero_tokens(&org, &db.store).await;
    let engine = Arc::new(Engine::build(&b.config, db.store.clone()));
    // The chain dies: the stored refresh token is rotated elsewhere (a copy of the database
    // restored, say) and its grace passes; the access token has expired.
    let dead = vault(&db.store).load("books").await.unwrap().unwrap();
    revoke(&org, &format!("http://{addr}"), dead.refresh_token.expose_secret()).await;
    let before = org.counters().token_requests;

    let run = start(&engine).await;
    let run = work_until(&engine, run.id, Duration::from_secs(30), |r| r.status == RunStatus::Paused).await;
    assert_eq!(run.status, RunStatus::Paused, "{run:?}");
    let reason = run.status_reason.clone().unwrap_or_default();
    assert!(reason.contains("enrichd connect books") && reason.contains("invalid_grant"), "{reason}");
    assert_eq!(org.counters().token_requests, before + 1, "one refused refresh, then none");
    let state = connection_state(&db.store, "books").await.unwrap().unwrap();
    assert!(state.needs_connect.as_deref().unwrap_or_default().contains("invalid_grant"), "{state:?}");

    // No retry storm: the connector, a resumed run and other daemons make no token request.
    for _ in 0..5 {
        let e = engine.connectors["books"].check("bills").await.unwrap_err();
        assert!(e.message.contains("enrichd connect books"), "{e}");
    }
    let other = Engine::build(&b.config, db.connect_again(2).await);
    other.connectors["books"].check("bills").await.unwrap_err();
    engine.store.resume_run(run.id, "tester").await.unwrap();
    let again = work_until(&engine, run.id, Duration::from_secs(30), |r| r.status == RunStatus::Paused).await;
    assert_eq!(again.status, RunStatus::Paused, "{again:?}");
    assert_eq!(org.counters().token_requests, before + 1, "still no token request after the refusal");
    assert_eq!(engine.store.counts(run.id).await.unwrap().get(ItemState::Dead), 0, "no item failed");

    // `enrichd connect` authorises it again and resumes the run, which then finishes.
    let connected = connect_in_browser(&b.config, &db.store, None).await.unwrap();
    assert_eq!(connected.resumed_runs, vec![run.id]);
    let done = work_until(&engine, run.id, Duration::from_secs(60), settled).await;
    assert_eq!(done.status, RunStatus::AwaitingReview, "{done:?}");
    let counts = engine.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Proposed), org.candidates().len() as i64, "{counts:?}");
}

/// Makes `refresh_token` dead at the sandbox the way it dies in life: rotated, and the grace past.
async fn revoke(org: &XeroSandbox, base: &str, refresh_token: &str) {
    let body = format!("grant_type=refresh_token&refresh_token={refresh_token}");
    let answer = enrichd_connector::http::client(Duration::from_secs(30))
        .post(format!("{base}/connect/token"))
        .basic_auth(xs::CLIENT_ID, Some(xs::CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    org.advance(xs::GRACE_SECS + 1);
    assert!(!org.refresh_token_alive(refresh_token));
}

async fn day_limit_pauses_and_resumes(db: &TestDb) {
    let org = XeroSandbox::new(12, 7);
    let addr = org.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = books(db, Platform::Xero, &format!("http://{addr}")).await;
    seed_xero_tokens(&org, &db.store).await;
    let engine = Arc::new(Engine::build(&b.config, db.store.clone()));
    // The sandbox's day ends in 25 seconds, and another app has used all but two of its calls.
    let now = chrono::Utc::now().timestamp();
    org.advance((86_400 - now.rem_euclid(86_400) - 25).rem_euclid(86_400));
    org.set_limits(xs::Limits { per_minute: 1000, per_day: 20, ..xs::Limits::default() });
    for _ in 0..18 {
        engine.connectors["books"].check("bills").await.unwrap();
    }

    let run = start(&engine).await;
    let paused = work_until(&engine, run.id, Duration::from_secs(20), |r| r.status == RunStatus::Paused).await;
    assert_eq!(paused.status, RunStatus::Paused, "{paused:?}");
    let reason = paused.status_reason.clone().unwrap_or_default();
    assert!(reason.contains("daily request limit") && reason.contains("resumes by itself"), "{reason}");
    let (resume_at, waits) = engine.store.platform_pause(run.id).await.unwrap();
    assert!(resume_at.is_some() && waits.is_none());
    assert_eq!(engine.store.counts(run.id).await.unwrap().get(ItemState::Dead), 0);

    // It resumes by itself once the day has reset, and finishes.
    let done = work_until(&engine, run.id, Duration::from_secs(90), settled).await;
    assert_eq!(done.status, RunStatus::AwaitingReview, "{done:?}");
    let counts = engine.store.counts(run.id).await.unwrap();
    assert_eq!(counts.get(ItemState::Proposed), org.candidates().len() as i64, "{counts:?}");
    let counters = org.counters();
    assert!(
        counters.rate_limited <= enrichd_xero::CONCURRENT_LIMIT as u64,
        "no retry storm against the used-up day: {counters:?}"
    );
}

on_both_backends! {
    xero_connect => xero_connect_end_to_end;
    quickbooks_connect => quickbooks_connect_end_to_end;
    lost_refresh => lost_refresh_answer_is_recovered;
    three_daemons => three_daemons_refresh_at_once;
    invalid_grant => invalid_grant_pauses_until_connect;
    day_limit => day_limit_pauses_and_resumes;
}
