//! Operator signals from outside, over real HTTP against the sandboxes: a run whose provider fails
//! pauses itself instead of spending (the reason in `enrichd status`, the API, the run page and the
//! log), resumes by `enrichd resume` and by the API, and pauses again only on fresh failures;
//! `/metrics` counts what the daemon did and refuses anonymous scrapes under auth; `enrichd run`
//! prints plain progress lines and the report when stdout is not a terminal; the report as JSON.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::process::{self, Enrichd, Env, text};
use common::{ConfigOptions, TestDb, sandboxes, write_config};
use enrichd::sandbox::provider::Faults;
use enrichd::store::{NewRun, RunStart};
use serde_json::{Value, json};

const API_TOKEN: &str = "signals-api-token";
const ENV: Env = Env { log_level: "warn", json_logs: false, vars: &[("TEST_API_TOKEN", API_TOKEN)] };

fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output(config, args, &ENV)
}

async fn cli(config: &Path, args: &[&str]) -> Output {
    process::output_async(config, args, &ENV).await
}

/// The daemon, logging JSON at info level.
fn start_daemon(config: &Path, log: std::path::PathBuf) -> Enrichd {
    Enrichd::daemon_with(config, log, &Env { log_level: "info", json_logs: true, ..ENV })
}

fn http() -> reqwest::Client {
    enrichd_connector::http::builder(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get_json(path: &str, d: &Enrichd) -> Value {
    let r = http().get(format!("{}{path}", d.base())).bearer_auth(API_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// Polls run `id` through the API until its status is `want`.
async fn wait_status(d: &Enrichd, id: i64, want: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = get_json(&format!("/api/runs/{id}"), d).await;
        if v["run"]["status"] == want {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "run {id} is not {want} after {within:?}: {v}\n{}",
            std::fs::read_to_string(&d.log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample line of a Prometheus scrape (`name{labels} value`), summed over every
/// line whose name matches and whose labels include all of `labels`.
fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

const ITEMS: i64 = 240;

/// A provider that refuses nine requests in ten for good (out of quota) pauses the run after about
/// one window of outcomes; resuming while it still fails pauses it again only after a fresh window;
/// once it is healthy, resuming finishes the run. `/metrics` then agrees with the database and the
/// sandboxes.
async fn failing_provider_pauses_the_run_and_resume_finishes_it(db: &TestDb) {
    let sb = sandboxes(ITEMS as u64, 1).await;
    // Latency keeps a loaded machine's slower settle loop from letting many more requests through.
    sb.provider.set_faults(Faults { quota_rate: 0.9, latency: Duration::from_millis(50), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions {
        concurrency: 4,
        extra_pipeline: "pause_on_error_rate = 0.10\nerror_window = 20",
        ..Default::default()
    };
    let config = write_config(dir.path(), &db.url, &sb, &options);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[server.auth]\ntoken = \"${TEST_API_TOKEN}\"\n");
    std::fs::write(&config, toml).unwrap();
    let daemon = start_daemon(&config, dir.path().join("daemon.log"));

    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 5,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!("a fresh database") };
    let id = run.id;

    // It pauses itself, with the reason, long before the items run out.
    let paused = wait_status(&daemon, id, "paused", Duration::from_secs(90)).await;
    let reason = paused["run"]["status_reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("error rate: ") && reason.contains("of the last 20"), "{reason}");
    assert!(reason.contains("insufficient_quota"), "the reason names the provider's error: {reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_pause = sb.provider.stats().requests;
    assert!(at_pause >= 20, "a full window is needed before pausing: {at_pause} requests");
    assert!(at_pause < (ITEMS as u64) / 3, "paused after about a window, not after the run: {at_pause} requests");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sb.provider.stats().requests, at_pause, "a paused run claims nothing new");

    // The reason is in `enrichd status`, on the run page (with a Resume button) and in the log.
    let status = cli(&config, &["status", &id.to_string()]).await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(text(&status).contains(&format!("run {id} paused (error rate: ")), "{}", text(&status));
    let page = http().get(format!("{}/runs/{id}", daemon.base())).bearer_auth(API_TOKEN).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("id=\"resume-form\"") && page.contains("error rate: "), "{page}");
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    let warned = log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|l| {
        l["level"] == "WARN"
            && l["run"] == id
            && l["message"].as_str().is_some_and(|m| m.starts_with("run paused"))
            && l["reason"].as_str().is_some_and(|r| r.starts_with("error rate: "))
    });
    assert!(warned, "a warning names the run and the reason: {log}");

    // Resuming by command while the provider still fails: the window starts afresh, so the run
    // pauses again only after a new window's worth of failures.
    let out = cli(&config, &["resume", &id.to_string(), "--as", "ops-anna"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("resumed by ops-anna"), "{}", text(&out));
    wait_status(&daemon, id, "paused", Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second_pause = sb.provider.stats().requests;
    assert!(second_pause >= at_pause + 20, "re-paused on fresh failures only: {at_pause} → {second_pause} requests");
    let events = db.store.run_events(id).await.unwrap();
    assert!(
        events.iter().any(|e| e.actor == "ops-anna" && e.from_state.as_deref() == Some("paused")),
        "the resume is in the audit trail under the operator's name: {events:?}"
    );

    // Healthy again: resuming by the API (bearer token, acting as `api`) finishes the run.
    sb.provider.set_faults(Faults::default());
    let anonymous =
        http().post(format!("{}/api/runs/{id}/resume", daemon.base())).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "resuming needs the same credentials as other API actions");
    let r = http()
        .post(format!("{}/api/runs/{id}/resume", daemon.base()))
        .bearer_auth(API_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resumed: Value = r.json().await.unwrap();
    assert_eq!(resumed["run"]["resumed_by"], "api");
    assert_ne!(resumed["run"]["status"], "paused");
    // `status --watch` follows the daemon's work until the run stops moving, then reports.
    let watched = cli(&config, &["status", &id.to_string(), "--watch"]).await;
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched));
    let watched = String::from_utf8(watched.stdout).unwrap();
    let progress: Vec<&str> = watched.lines().filter(|l| l.starts_with(&format!("run {id} ["))).collect();
    assert!(
        progress.last().is_some_and(|l| l.starts_with(&format!("run {id} [finished] {ITEMS}/{ITEMS}"))),
        "{watched}"
    );
    assert!(watched.contains(&format!("run {id} finished")) && watched.contains("time per item"), "{watched}");
    wait_status(&daemon, id, "done", Duration::from_secs(120)).await;

    // The report, by the API and by `status --json`, with what an operator asks of a run.
    let report = get_json(&format!("/api/runs/{id}/report"), &daemon).await;
    let dead = report["dead"].as_i64().unwrap();
    let written = report["written"].as_i64().unwrap();
    assert_eq!(report["total"], ITEMS);
    assert_eq!(written + dead, ITEMS, "{report}");
    assert!(dead >= 36, "two windows of failures at least: {report}");
    assert_eq!(report["conflicts"], 0);
    assert_eq!(report["skipped"], 0);
    assert_eq!(report["failed"], dead, "every failure here was final: {report}");
    assert!(report["retries"].as_i64().unwrap() >= dead);
    assert!(report["tokens_in"].as_i64().unwrap() > 0 && report["tokens_out"].as_i64().unwrap() > 0);
    assert!(report["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(report["item_ms_avg"].as_f64().is_some() && report["item_ms_p95"].as_i64().is_some(), "{report}");
    let out = cli(&config, &["status", &id.to_string(), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cli_report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["total", "written", "conflicts", "skipped", "failed", "dead", "retries", "tokens_in", "tokens_out"] {
        assert_eq!(cli_report[field], report[field], "{field}");
    }
    assert_eq!(cli_report["run"]["status"], "done");
    let again = cli(&config, &["resume", &id.to_string(), "--as", "ops-anna"]).await;
    assert_eq!(again.status.code(), Some(1), "only a paused run can be resumed: {}", text(&again));
    assert!(text(&again).contains(&format!("run {id} is done, not paused")), "{}", text(&again));

    // /metrics: refused without credentials, and no session is made for a scrape.
    let anonymous = http().get(format!("{}/metrics", daemon.base())).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().get("set-cookie").is_none(), "no session per scrape");
    let scrape = http().get(format!("{}/metrics", daemon.base())).bearer_auth(API_TOKEN).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.headers().get("set-cookie").is_none());
    let scrape = scrape.text().await.unwrap();
    let items = |state: &str| metric(&scrape, "enrichd_items", &[("pipeline", "catalogue"), ("state", state)]);
    assert_eq!(items("written"), written as f64, "{scrape}");
    assert_eq!(items("dead"), dead as f64, "{scrape}");
    assert_eq!(metric(&scrape, "enrichd_runs", &[("status", "done")]), 1.0, "{scrape}");
    let requests = sb.provider.stats().requests as f64;
    assert_eq!(metric(&scrape, "enrichd_provider_requests_total", &[("call", "complete")]), requests, "{scrape}");
    assert_eq!(metric(&scrape, "enrichd_provider_requests_total", &[("outcome", "ok")]), written as f64);
    assert_eq!(metric(&scrape, "enrichd_provider_rate_limited_total", &[("provider", "sim")]), dead as f64);
    assert_eq!(metric(&scrape, "enrichd_provider_request_seconds_count", &[("provider", "sim")]), requests, "{scrape}");
    assert_eq!(metric(&scrape, "enrichd_writebacks_total", &[("outcome", "written")]), written as f64);
    assert_eq!(metric(&scrape, "enrichd_conflicts_total", &[]), 0.0);
    let tokens = report["tokens_in"].as_f64().unwrap() + report["tokens_out"].as_f64().unwrap();
    assert_eq!(metric(&scrape, "enrichd_tokens_total", &[("pipeline", "catalogue")]), tokens);
    assert_eq!(metric(&scrape, "enrichd_runs_paused_total", &[]), 2.0);
    assert_eq!(sb.store.writes().len() as i64, written, "each written item was written once");
}

on_both_backends! {
    error_rate_pause => failing_provider_pauses_the_run_and_resume_finishes_it;
}

/// `enrichd run` with stdout piped: plain progress lines (no cursor movement) and the final report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_plain_progress_lines_and_the_report_when_not_a_terminal() {
    let sb = sandboxes(30, 1).await;
    sb.provider.set_faults(Faults { latency: Duration::from_millis(150), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let config = write_config(dir.path(), &db, &sb, &ConfigOptions { concurrency: 2, ..Default::default() });
    let out = cli(&config, &["run", "catalogue"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains('\r') && !stdout.contains('\x1b'), "no terminal control codes: {stdout:?}");
    let progress: Vec<&str> = stdout.lines().filter(|l| l.starts_with("run 1 [")).collect();
    assert!(progress.len() >= 2, "progress lines while it works: {stdout}");
    assert!(progress.iter().all(|l| l.contains("/30") && l.contains(" · $")), "{stdout}");
    assert!(progress.last().unwrap().contains("30/30"), "{stdout}");
    assert!(stdout.contains("run 1 finished"), "{stdout}");
    assert!(stdout.contains("items 30 · written 30 · conflicts 0 · skipped 0"), "{stdout}");
    assert!(stdout.contains("  tokens ") && stdout.contains(" · cost $"), "{stdout}");
    assert!(stdout.contains("time per item: average "), "{stdout}");

    // `status --watch` on a finished run: its last progress line, then the report.
    let out = cli(&config, &["status", "1", "--watch"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("run 1 [finished] 30/30"), "{stdout}");
    assert!(lines[1].starts_with("run 1 finished"), "{stdout}");
    assert!(stdout.contains("items 30 · written 30"), "{stdout}");
}

/// The pause settings are validated with the key path in the error.
#[test]
fn pause_settings_are_validated_with_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::Sandboxes {
        store: common::StoreSandbox::new("x"),
        store_url: "http://127.0.0.1:9".into(),
        provider: common::ProviderSandbox::new(None),
        provider_url: "http://127.0.0.1:9/v1".into(),
    };
    for (extra, expected) in [
        ("pause_on_error_rate = 1.5", "pipelines.catalogue.pause_on_error_rate: must be a share between 0.0 and 1.0"),
        ("pause_on_error_rate = -0.1", "pipelines.catalogue.pause_on_error_rate"),
        ("error_window = 0", "pipelines.catalogue.error_window: must be between 1 and 100000"),
    ] {
        let options = ConfigOptions { extra_pipeline: extra, ..Default::default() };
        let path = write_config(dir.path(), "sqlite://unused.db", &sb, &options);
        let out = enrichd(&path, &["check", "--offline"]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out));
        assert!(text(&out).contains(expected), "{extra}: expected {expected:?} in {}", text(&out));
    }
    let options =
        ConfigOptions { extra_pipeline: "pause_on_error_rate = 1.0\nerror_window = 200", ..Default::default() };
    let path = write_config(dir.path(), "sqlite://unused.db", &sb, &options);
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// On the run page a signed-in reviewer sees why the run paused and resumes it with the page's
/// form (CSRF token required); the run is resumed in the reviewer's name. `/metrics` takes a
/// signed-in session too, and nothing at all is refused.
async fn the_run_page_resumes_a_paused_run(db: &TestDb) {
    use common::harness::{harness, start_run, work};
    let options = ConfigOptions {
        concurrency: 2,
        extra_pipeline: "pause_on_error_rate = 0.10\nerror_window = 5",
        ..Default::default()
    };
    let h = harness(db, 40, 1, options).await;
    h.sb.provider.set_faults(Faults { quota_rate: 1.0, latency: Duration::from_millis(60), ..Default::default() });
    let run = start_run(&h.engine).await;
    let worked = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(worked.status, enrichd::store::RunStatus::Paused, "{worked:?}");
    assert!(h.sb.provider.stats().requests < 25, "paused after about a window: {:?}", h.sb.provider.stats());

    let auth = enrichd::config::ServerAuthConfig {
        password: Some(enrichd::config::Secret("pw".to_owned().into())),
        token: Some(enrichd::config::Secret(API_TOKEN.to_owned().into())),
        session_hours: 1,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let site =
        enrichd::server::Site { access: enrichd::server::Access::new(Some(&auth)), html_fields: Default::default() };
    let (addr, _) = enrichd::server::serve(h.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let base = format!("http://{addr}");
    let http = http();
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = login.text().await.unwrap();
    let csrf_of = |page: &str| {
        let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        page[at..].split('"').next().unwrap().to_owned()
    };
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&page).as_str()), ("name", "Grace"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();

    let r = http.get(format!("{base}/metrics")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 200, "a signed-in session may read /metrics");
    let scrape = r.text().await.unwrap();
    assert_eq!(metric(&scrape, "enrichd_runs", &[("status", "paused")]), 1.0, "{scrape}");
    assert_eq!(http.get(format!("{base}/metrics")).send().await.unwrap().status(), 401);

    let runs = http.get(format!("{base}/runs")).header("cookie", &session).send().await.unwrap();
    let runs = runs.text().await.unwrap();
    assert!(runs.contains(&format!("action=\"/runs/{}/resume\"", run.id)), "{runs}");
    let page = http.get(format!("{base}/runs/{}", run.id)).header("cookie", &session).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("id=\"status-reason\">error rate: 5 of the last 5"), "{page}");
    let form = &page[page.find("id=\"resume-form\"").expect("a Resume button")..];
    let r = http
        .post(format!("{base}/runs/{}/resume", run.id))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a wrong CSRF token is refused");
    assert_eq!(db.store.run(run.id).await.unwrap().status, enrichd::store::RunStatus::Paused);
    let r = http
        .post(format!("{base}/runs/{}/resume", run.id))
        .header("cookie", &session)
        .form(&[("csrf", csrf_of(form).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let resumed = db.store.run(run.id).await.unwrap();
    assert!(!matches!(resumed.status, enrichd::store::RunStatus::Paused), "{resumed:?}");
    assert_eq!(resumed.resumed_by.as_deref(), Some("reviewer:Grace"));
    let page = http.get(format!("{base}/runs/{}", run.id)).header("cookie", &session).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("id=\"resume-form\""), "no Resume button on a running run");
    stop.cancel();
}

on_both_backends! {
    run_page_resume => the_run_page_resumes_a_paused_run;
}

/// Without a daemon: `enrichd run` stops when the run pauses itself (exit 1, the reason on stderr,
/// the report on stdout), refuses to go on with it until `enrichd resume`, and then finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichd_run_stops_at_a_pause_and_finishes_after_resume() {
    let sb = sandboxes(120, 1).await;
    sb.provider.set_faults(Faults { quota_rate: 1.0, latency: Duration::from_millis(50), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let options = ConfigOptions {
        concurrency: 2,
        extra_pipeline: "pause_on_error_rate = 0.25\nerror_window = 8",
        ..Default::default()
    };
    let config = write_config(dir.path(), &db, &sb, &options);
    let out = cli(&config, &["run", "catalogue"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: run 1 paused: error rate: "), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("  items 120 · written 0"), "{}", text(&out));
    let spent = sb.provider.stats().requests;
    assert!((8..40).contains(&spent), "paused after about a window of 8: {spent} requests for 120 items");

    let out = cli(&config, &["run", "catalogue"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("run 1 of catalogue is paused (error rate: "), "{}", text(&out));
    assert!(text(&out).contains("`enrichd resume 1 --as NAME`"), "{}", text(&out));
    assert_eq!(sb.provider.stats().requests, spent, "a paused run is not worked");

    sb.provider.set_faults(Faults::default());
    let out = cli(&config, &["resume", "1", "--as", "ops-anna", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["run"]["resumed_by"], "ops-anna");
    let out = cli(&config, &["run", "catalogue"]).await;
    // Items that died before the pause stay dead (exit 1 says so); everything else is written.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("run 1 finished"), "{}", text(&out));
    let out = cli(&config, &["status", "1", "--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["written"].as_u64().unwrap() + report["dead"].as_u64().unwrap(), 120, "{report}");
    assert_eq!(report["dead"].as_u64().unwrap() as usize, spent as usize, "one failed request per dead item");
    assert_eq!(sb.store.writes().len() as u64, report["written"].as_u64().unwrap());
}

/// A run that pauses while still discovering goes back to discovering when resumed, and reads the
/// rest of the catalogue from where it stopped.
async fn a_pause_during_discovery_resumes_discovery(db: &TestDb) {
    use common::harness::{harness, start_run, work};
    use enrichd::store::{ItemState, RunStatus};
    let options = ConfigOptions {
        concurrency: 2,
        extra_pipeline: "page_size = 10\npause_on_error_rate = 0.10\nerror_window = 5",
        ..Default::default()
    };
    let h = harness(db, 200, 1, options).await;
    h.sb.store
        .set_faults(enrichd_teststore::sandbox::Faults { latency: Duration::from_millis(150), ..Default::default() });
    h.sb.provider.set_faults(Faults { quota_rate: 1.0, ..Default::default() });
    let run = start_run(&h.engine).await;
    let paused = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(paused.status, RunStatus::Paused, "{paused:?}");
    assert_eq!(paused.paused_from, Some(RunStatus::Discovering), "{paused:?}");
    let discovered = db.store.counts(run.id).await.unwrap().total();
    assert!(discovered < 200, "paused before discovery ended: {discovered} items");

    h.sb.store.set_faults(Default::default());
    h.sb.provider.set_faults(Faults::default());
    let resumed = db.store.resume_run(run.id, "ops-anna").await.unwrap();
    assert_eq!(resumed.status, RunStatus::Discovering);
    assert_eq!(resumed.paused_from, None);
    let done = work(&h.engine, run.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, RunStatus::Done, "{done:?}");
    let counts = db.store.counts(run.id).await.unwrap();
    assert_eq!(counts.total(), 200, "the rest of the catalogue was discovered: {counts:?}");
    assert_eq!(counts.get(ItemState::Written) + counts.get(ItemState::Dead), 200, "{counts:?}");
    let refused = db.store.resume_run(run.id, "ops-anna").await.unwrap_err().to_string();
    assert!(refused.contains("is done, not paused"), "{refused}");
}

on_both_backends! {
    pause_in_discovery => a_pause_during_discovery_resumes_discovery;
}

/// A run paused for its budget is not resumed: it would only pause again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_paused_for_its_budget_is_not_resumed() {
    use common::harness::{harness, work};
    use enrichd::store::RunStatus;
    let db = common::sqlite().await;
    let h = harness(&db, 40, 1, ConfigOptions { concurrency: 1, ..Default::default() }).await;
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 5,
        budget_micros: Some(1),
        sample: None,
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!("a fresh database") };
    let paused = work(&h.engine, run.id, Duration::from_secs(60)).await;
    assert_eq!(paused.status, RunStatus::Paused, "{paused:?}");
    assert!(paused.status_reason.as_deref().unwrap_or_default().starts_with("budget reached"), "{paused:?}");
    let refused = db.store.resume_run(run.id, "ops-anna").await.unwrap_err().to_string();
    assert!(refused.contains("spent its budget") && refused.contains("would pause it again"), "{refused}");
    assert_eq!(db.store.run(run.id).await.unwrap().status, RunStatus::Paused);
    db.cleanup().await;
}

/// Whatever the daemon counts right after its server starts is on `/metrics`: a daemon restarted
/// after a kill reclaims the dead one's leases at once, before the server task has run. On a
/// one-thread runtime nothing else runs between `serve` returning and the count below.
#[tokio::test(flavor = "current_thread")]
async fn counts_made_as_the_server_starts_are_scraped() {
    use common::harness::harness;
    let db = common::sqlite().await;
    let h = harness(&db, 1, 1, ConfigOptions::default()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let site = enrichd::server::Site { access: enrichd::server::Access::new(None), html_fields: Default::default() };
    let (addr, server) = enrichd::server::serve(h.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    enrichd::telemetry::leases_reclaimed(3);
    let scrape = http().get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&scrape, "enrichd_leases_reclaimed_total", &[]), 3.0, "{scrape}");
    stop.cancel();
    server.await.unwrap();
    db.cleanup().await;
}

/// Leases a dead worker left behind are reclaimed by the upkeep, and `/metrics` counts them (on an
/// open, loopback-only server a scrape needs no credentials and makes no session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaimed_leases_are_counted_in_metrics() {
    use common::harness::{harness, start_run};
    use enrichd::store::{Claim, NewItem, Work};
    let db = common::sqlite().await;
    let h = harness(&db, 10, 1, ConfigOptions { lease_seconds: 0.4, ..Default::default() }).await;
    let run = start_run(&h.engine).await;
    let store = &db.store;
    let ghost = "ghost-worker";
    store.claim_discovery(run.id, ghost, Duration::from_secs(30)).await.unwrap().expect("discovery lease");
    let items: Vec<NewItem> = (1..=6)
        .map(|i| NewItem {
            entity: "product".into(),
            external_id: i.to_string(),
            record_version: "1".into(),
            input: "{}".into(),
            input_hash: format!("h{i}"),
            skip: None,
            attachments: Vec::new(),
        })
        .collect();
    store.add_discovered(run.id, "catalogue", "v1", ghost, &items, None).await.unwrap();
    let claim = Claim {
        pipeline: "catalogue",
        run_id: Some(run.id),
        work: Work::Enrich,
        owner: ghost,
        limit: 6,
        lease: Duration::from_millis(1),
    };
    assert_eq!(store.claim(&claim).await.unwrap().len(), 6);

    let stop = tokio_util::sync::CancellationToken::new();
    let site = enrichd::server::Site { access: enrichd::server::Access::new(None), html_fields: Default::default() };
    let (addr, _) = enrichd::server::serve(h.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    let upkeep = h.engine.spawn_upkeep(stop.clone());
    let start = Instant::now();
    let scrape = loop {
        let r = http().get(format!("http://{addr}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none(), "no session per scrape");
        let scrape = r.text().await.unwrap();
        if metric(&scrape, "enrichd_leases_reclaimed_total", &[]) >= 6.0 {
            break scrape;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no reclaim counted: {scrape}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metric(&scrape, "enrichd_leases_reclaimed_total", &[]), 6.0, "{scrape}");
    // A scrape reads the database before it renders the counters, so the scrape that first shows
    // the count may have read the items just before the reclaim committed: the next one may not.
    let scrape = http().get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&scrape, "enrichd_leases_reclaimed_total", &[]), 6.0, "{scrape}");
    assert_eq!(metric(&scrape, "enrichd_items", &[("state", "queued")]), 6.0, "{scrape}");
    assert_eq!(metric(&scrape, "enrichd_items", &[("state", "enriching")]), 0.0, "{scrape}");
    stop.cancel();
    upkeep.await.unwrap();
    db.cleanup().await;
}
