//! Notifications from outside: real `enrichd daemon`s over the sandboxes post signed webhooks to a
//! local receiver, retry after a 500, show every attempt on the run page and in the API, send one
//! "paused" notification per pause even with two daemons on one database, and refuse bad config
//! with the key path.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Enrichd, Env};
use common::receiver::Receiver;
use common::{ConfigOptions, TestDb, sandboxes, write_config};
use enrichd::config::Config;
use enrichd::sandbox::provider::Faults;
use enrichd::store::{NewRun, RunStart};
use serde_json::Value;

const HOOK_SECRET: &str = "whsec-test-1234567890";
/// Stands for the secret a Slack webhook URL carries in its path: it must never be shown.
const PATH_SECRET: &str = "T000-B000-pathsecret";
const API_TOKEN: &str = "notify-test-api-token";

fn http() -> reqwest::Client {
    enrichd_connector::http::client(Duration::from_secs(10))
}

/// A test config for pipeline `catalogue` plus `[notifications]` posting to `receiver`.
fn config_with_hooks(
    dir: &Path,
    db: &TestDb,
    sb: &common::Sandboxes,
    o: &ConfigOptions,
    receiver: &Receiver,
) -> std::path::PathBuf {
    let path = write_config(dir, &db.url, sb, o);
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(&format!(
        r#"
[server.auth]
token = "${{TEST_API_TOKEN}}"

[notifications]
public_url = "https://enrichd.example.com/"
retry_base_ms = 200
retry_max_seconds = 1
poll_interval_ms = 100
timeout_seconds = 5

[notifications.webhooks.ops]
url = "{}"
secret = "${{TEST_HOOK_SECRET}}"
"#,
        receiver.url(PATH_SECRET)
    ));
    std::fs::write(&path, toml).unwrap();
    path
}

fn daemon(config: &Path, log: std::path::PathBuf) -> Enrichd {
    Enrichd::daemon_with(
        config,
        log,
        &Env {
            log_level: "info",
            vars: &[("TEST_HOOK_SECRET", HOOK_SECRET), ("TEST_API_TOKEN", API_TOKEN)],
            ..Env::default()
        },
    )
}

async fn new_run(db: &TestDb) -> i64 {
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: None,
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!("a fresh database") };
    run.id
}

async fn get_json(url: String) -> Value {
    let response = http().get(&url).bearer_auth(API_TOKEN).send().await.unwrap();
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.unwrap()
}

/// A run that finishes is told to the receiver, signed; the receiver's 500 on the first attempt is
/// retried; both attempts are on the run page and in the API; the body carries the run's report
/// and a Slack `text`; the URL's secret path appears nowhere.
async fn finished_run_is_delivered_after_a_retry(db: &TestDb) {
    let sb = sandboxes(6, 1).await;
    let receiver = Receiver::start(HOOK_SECRET, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_hooks(dir.path(), db, &sb, &ConfigOptions::default(), &receiver);
    let d = daemon(&config, dir.path().join("daemon.log"));
    let id = new_run(db).await;

    receiver
        .wait_for(Duration::from_secs(60), "delivered run_finished", |got| {
            got.iter().any(|r| r.body["event"] == "run_finished" && r.answered == 200)
        })
        .await;
    let finished = receiver.of("run_finished");
    assert_eq!(finished.len(), 2, "one refused with 500, one delivered: {finished:#?}");
    assert_eq!(finished[0].answered, 500);
    assert!(finished.iter().all(|r| r.signature_valid), "every delivery is signed with the secret");
    assert_eq!(finished[0].body, finished[1].body, "a retry sends the same body");
    assert_eq!(finished[0].delivery, finished[1].delivery);

    let body = &finished[1].body;
    assert_eq!(
        body["id"],
        format!("run-{id}-run_finished-{}", body["id"].as_str().unwrap().rsplit('-').next().unwrap())
    );
    assert_eq!(body["run"]["id"], id);
    assert_eq!(body["run"]["pipeline"], "catalogue");
    assert_eq!(body["url"], format!("https://enrichd.example.com/runs/{id}"));
    let report = get_json(format!("{}/api/runs/{id}/report", d.base())).await;
    assert_eq!(body["report"]["total"], report["total"]);
    assert_eq!(body["report"]["written"], report["written"]);
    assert_eq!(body["report"]["run"]["status"], "done");
    // Slack shows `text` as the message.
    let text = body["text"].as_str().expect("a Slack-compatible text field");
    assert!(text.starts_with(&format!("Run {id} of catalogue finished: 6 items, 6 written")), "{text}");
    assert!(text.ends_with(&format!("https://enrichd.example.com/runs/{id}")), "{text}");

    // Both attempts on the run page, the endpoint masked.
    let notifications = get_json(format!("{}/api/runs/{id}/notifications", d.base())).await;
    let list = notifications["notifications"].as_array().unwrap();
    let n = list.iter().find(|n| n["event"] == "run_finished").expect("recorded");
    assert_eq!(n["status"], "delivered");
    assert_eq!(n["tries"].as_array().unwrap().len(), 2);
    assert_eq!(n["tries"][0]["http_status"], 500);
    assert_eq!(n["tries"][0]["outcome"], "retrying");
    assert_eq!(n["tries"][1]["outcome"], "delivered");
    let page = http()
        .get(format!("{}/runs/{id}", d.base()))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("id=\"notifications\"").unwrap_or_else(|| panic!("a notifications section: {page}"));
    let section = &page[at..];
    assert!(section.contains("run finished") && section.contains("data-status=\"delivered\""), "{section}");
    // minijinja escapes `/` in HTML.
    let masked = format!("http://{}/***", receiver.addr).replace('/', "&#x2f;");
    assert!(section.contains(&masked), "the endpoint, masked: {section}");
    assert!(section.contains("data-attempt=\"1\" data-outcome=\"retrying\""), "{section}");
    assert!(section.contains("HTTP 500"), "{section}");
    assert!(section.contains("data-attempt=\"2\" data-outcome=\"delivered\""), "{section}");
    assert!(!page.contains(PATH_SECRET), "the URL's secret path is not on the page");
    assert!(!notifications.to_string().contains(PATH_SECRET), "nor in the API");

    d.sigterm();
    let (_, log) = d.wait(Duration::from_secs(15)).await;
    assert!(log.contains("notification delivered"), "{log}");
    assert!(!log.contains(PATH_SECRET) && !log.contains(HOOK_SECRET), "no secret in the log: {log}");
}

/// A run whose provider fails pauses itself; two daemons on the database send exactly one "paused"
/// notification for that pause; a resume that pauses again sends one more.
async fn a_pause_is_told_once(db: &TestDb) {
    let sb = sandboxes(60, 1).await;
    sb.provider.set_faults(Faults { quota_rate: 1.0, latency: Duration::from_millis(20), ..Default::default() });
    let receiver = Receiver::start(HOOK_SECRET, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions {
        concurrency: 2,
        extra_pipeline: "pause_on_error_rate = 0.10\nerror_window = 5",
        ..Default::default()
    };
    let config = config_with_hooks(dir.path(), db, &sb, &options, &receiver);
    let a = daemon(&config, dir.path().join("a.log"));
    let b = daemon(&config, dir.path().join("b.log"));
    let id = new_run(db).await;

    // Then time for both daemons to look at the pause many times over.
    let paused = receiver.settled("run_paused", 1, Duration::from_secs(60), Duration::from_millis(1500)).await;
    assert_eq!(paused.len(), 1, "one notification for one pause: {paused:#?}");
    assert!(paused[0].signature_valid);
    let reason = paused[0].body["reason"].as_str().unwrap();
    assert!(reason.starts_with("error rate: "), "{reason}");
    let text = paused[0].body["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("Run {id} of catalogue paused: error rate: ")), "{text}");

    // Resumed while the provider still fails, it pauses again: a new notification.
    let resumed = http()
        .post(format!("{}/api/runs/{id}/resume", a.base()))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(resumed.status().is_success(), "{}", resumed.text().await.unwrap());
    let paused = receiver.settled("run_paused", 2, Duration::from_secs(60), Duration::from_millis(1500)).await;
    assert_eq!(paused.len(), 2, "one per pause: {paused:#?}");
    assert_ne!(paused[0].body["id"], paused[1].body["id"]);
    let listed = get_json(format!("{}/api/runs/{id}/notifications", b.base())).await;
    let rows: Vec<&Value> =
        listed["notifications"].as_array().unwrap().iter().filter(|n| n["event"] == "run_paused").collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows.iter().all(|n| n["status"] == "delivered" && n["tries"].as_array().unwrap().len() == 1), "{listed}");
    drop((a, b));
}

/// A `sample_first` run whose sample waits for review says so.
async fn a_waiting_sample_is_told(db: &TestDb) {
    let sb = sandboxes(12, 1).await;
    let receiver = Receiver::start(HOOK_SECRET, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions { policy: "sample_first", review_extra: ", sample = 3", ..Default::default() };
    let config = config_with_hooks(dir.path(), db, &sb, &options, &receiver);
    let d = daemon(&config, dir.path().join("daemon.log"));
    let new = NewRun {
        pipeline: "catalogue".into(),
        scheduled_for: None,
        item_limit: None,
        max_attempts: 3,
        budget_micros: None,
        sample: Some(enrichd::store::SampleGate { size: 3, auto_release_max_reject_rate: None }),
    };
    let RunStart::Created(run) = db.store.create_run(&new).await.unwrap() else { panic!() };
    let got = receiver.settled("sample_waiting", 1, Duration::from_secs(60), Duration::from_millis(1000)).await;
    assert_eq!(got.len(), 1, "one notification for the waiting sample: {got:#?}");
    assert_eq!(got[0].body["run"]["id"], run.id);
    assert_eq!(got[0].body["sample"]["proposed"], 3);
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.contains("its sample of 3 proposals waits for review"), "{text}");
    drop(d);
}

/// Writes the platform refuses again and again make one "writes failing" notification.
async fn failing_writes_are_told_once(db: &TestDb) {
    let sb = sandboxes(4, 1).await;
    let receiver = Receiver::start(HOOK_SECRET, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ConfigOptions { policy: "all", max_attempts: 4, ..Default::default() };
    let config = config_with_hooks(dir.path(), db, &sb, &options, &receiver);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[notifications.writes_failing]\nfailures = 3\nwindow_seconds = 60\n");
    std::fs::write(&config, toml).unwrap();
    let d = daemon(&config, dir.path().join("daemon.log"));
    let id = new_run(db).await;
    // Every proposal waits for review; then the shop starts failing and they are approved.
    let start = Instant::now();
    loop {
        let queue = get_json(format!("{}/api/review?run={id}", d.base())).await;
        if queue["total"].as_i64().unwrap_or(0) >= 4 || queue["items"].as_array().is_some_and(|a| a.len() >= 4) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no proposals: {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sb.store.set_faults(enrichd_teststore::sandbox::Faults { server_error_rate: 1.0, ..Default::default() });
    let bulk = http()
        .post(format!("{}/api/review/bulk", d.base()))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({ "action": "approve", "filter": { "run": id }, "confirm": 4 }))
        .send()
        .await
        .unwrap();
    assert!(bulk.status().is_success(), "{}", bulk.text().await.unwrap());
    let got = receiver.settled("writes_failing", 1, Duration::from_secs(60), Duration::from_millis(1500)).await;
    assert_eq!(got.len(), 1, "one per episode: {got:#?}");
    let text = got[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("Run {id} of catalogue: writes are failing: 3 writes to the platform failed within")),
        "{text}"
    );
    drop(d);
}

on_both_backends! {
    finished_run => finished_run_is_delivered_after_a_retry;
    pause_once => a_pause_is_told_once;
    sample_waiting => a_waiting_sample_is_told;
    writes_failing => failing_writes_are_told_once;
}

/// Bad `[notifications]` config is refused, naming the key path.
#[test]
fn bad_config_names_the_key() {
    let base = r#"
[notifications.webhooks.ops]
url = "https://hooks.example.com/x"
secret = "${NOTIFY_TEST_SECRET}"
"#;
    let cases: [(&str, String, &str); 6] = [
        (
            "unknown event",
            format!("{base}events = [\"run_pausd\"]\n"),
            "notifications.webhooks.ops.events[0]: unknown variant `run_pausd`",
        ),
        (
            "missing secret",
            "[notifications.webhooks.ops]\nurl = \"https://x.example.com/\"\n".into(),
            "notifications.webhooks.ops: missing field `secret`",
        ),
        (
            "secret in the file",
            base.replace("${NOTIFY_TEST_SECRET}", "hunter2"),
            "notifications.webhooks.ops.secret: secrets are not written in the config file",
        ),
        (
            "not a URL",
            base.replace("https://hooks.example.com/x", "ftp://example.com/x"),
            "notifications.webhooks.ops.url: must be an https:// or http:// URL",
        ),
        ("unknown key", format!("{base}retries = 3\n"), "notifications.webhooks.ops.retries: unknown field `retries`"),
        (
            "unset env",
            base.to_owned(),
            "notifications.webhooks.ops.secret: environment variable NOTIFY_TEST_SECRET is not set",
        ),
    ];
    for (what, text, want) in cases {
        let err = Config::parse(Path::new("enrichd.toml"), &text, None).expect_err(what).to_string();
        assert!(err.contains(want), "{what}: {err}");
    }
}
