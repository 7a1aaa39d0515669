//! A new user's first day with the `enrichd` binary (issue 17): `enrichd run` writes what was
//! approved, read-only commands need no secrets, `run --dry-run --list/--json`, and the CLI's rough
//! edges (closed pipes, help text, usage errors, cron and task-file errors, the demo).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::{self, Env, text};
use common::{ConfigOptions, Sandboxes, TestDb, sandboxes, write_config};
use enrichd::store::{ItemState, RunStatus};
use serde_json::Value;

fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output(config, args, &Env::default())
}

async fn enrichd_async(config: &Path, args: &[&str]) -> Output {
    process::output_async(config, args, &Env::default()).await
}

/// Runs `args` off the test's runtime, expects exit `code`, returns stdout.
async fn expect(config: &Path, args: &[&str], code: i32) -> String {
    let out = enrichd_async(config, args).await;
    assert_eq!(out.status.code(), Some(code), "enrichd {}: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `enrichd --config CONFIG ARGS` with neither the shop's nor the model's secret in its environment.
fn without_secrets(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .env_remove("TEST_STORE_TOKEN")
        .env_remove("TEST_PROVIDER_KEY")
        .env_remove("ENRICHD_REVIEWER")
        .env("ENRICHD_LOG", "warn")
        .output()
        .unwrap()
}

/// A config over fresh sandboxes (`products` teststore products, every `missing_every`th without
/// a description) and `db`.
async fn setup(
    db: &TestDb,
    products: u64,
    missing_every: u64,
    options: ConfigOptions,
) -> (Sandboxes, tempfile::TempDir, PathBuf) {
    let sb = sandboxes(products, missing_every).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url, &sb, &options);
    (sb, dir, config)
}

// Item 4: with `review.policy = "all"`, `enrichd run` proposes, a reviewer approves, and a second
// `enrichd run` writes the approved values: the same run, no new one.
async fn run_writes_what_was_approved(db: &TestDb) {
    let (sb, _dir, config) = setup(db, 9, 3, ConfigOptions { policy: "all", ..Default::default() }).await;
    let cfg = config.as_path();
    let first = expect(cfg, &["run", "catalogue"], 0).await;
    assert!(first.contains("3 proposal(s) wait for review"), "{first}");
    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = runs[0].clone();
    assert_eq!(run.status, RunStatus::AwaitingReview, "{:?}", run.status_reason);
    for id in [3, 6, 9] {
        assert_eq!(sb.store.record("product", id).unwrap().1["description"], "", "nothing is written before review");
    }

    let r = run.id.to_string();
    expect(cfg, &["review", "approve", "--run", &r, "--confirm", "3", "--as", "eve"], 0).await;
    let second = expect(cfg, &["run", "catalogue"], 0).await;
    assert!(second.contains(&format!("run {}", run.id)), "{second}");

    let runs = db.store.runs(&[], 10).await.unwrap();
    assert_eq!(runs.len(), 1, "`enrichd run` works the run with approved items instead of starting one: {runs:?}");
    let after = db.store.run(run.id).await.unwrap();
    assert_eq!(after.status, RunStatus::Done, "{:?}", after.status_reason);
    assert_eq!(db.store.counts(run.id).await.unwrap().get(ItemState::Written), 3);
    for id in [3, 6, 9] {
        assert_eq!(
            sb.store.record("product", id).unwrap().1["description"],
            common::expected_description(id),
            "product {id} holds the approved value"
        );
    }
}

// Item 7: looking needs no secrets; connecting does, and names the key.
async fn read_only_commands_need_no_secrets(db: &TestDb) {
    let (_sb, _dir, config) = setup(db, 6, 3, ConfigOptions { policy: "all", ..Default::default() }).await;
    let cfg = config.as_path();
    expect(cfg, &["run", "catalogue"], 0).await;
    let run = db.store.runs(&[], 1).await.unwrap().remove(0);
    let r = run.id.to_string();
    let item = db.store.items(run.id, None, 1).await.unwrap().remove(0).id.to_string();

    let cfg_owned = config.clone();
    let (status, list, show, migrate, run_out, check) = tokio::task::spawn_blocking(move || {
        let cfg = cfg_owned.as_path();
        (
            without_secrets(cfg, &["status"]),
            without_secrets(cfg, &["review", "list", "--run", &r]),
            without_secrets(cfg, &["review", "show", &item]),
            without_secrets(cfg, &["migrate"]),
            without_secrets(cfg, &["run", "catalogue"]),
            without_secrets(cfg, &["check", "--offline"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(status.status.code(), Some(0), "status: {}", text(&status));
    assert!(text(&status).contains(&format!("run {}", run.id)), "{}", text(&status));
    assert_eq!(list.status.code(), Some(0), "review list: {}", text(&list));
    assert!(text(&list).contains("2 item(s) match"), "{}", text(&list));
    assert_eq!(show.status.code(), Some(0), "review show: {}", text(&show));
    assert_eq!(migrate.status.code(), Some(0), "migrate: {}", text(&migrate));
    // The UI for looking: a daemon serving only the UI and API needs no shop or model secret.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["--config", config.to_str().unwrap(), "daemon", "--ui-only", "--bind", "127.0.0.1:0"])
        .env_remove("TEST_STORE_TOKEN")
        .env_remove("TEST_PROVIDER_KEY")
        .env("ENRICHD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = daemon.stdout.take().unwrap();
    let guard = KillOnDrop(daemon);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "daemon --ui-only did not start: {line:?}");
    let edit_path =
        format!("/api/items/{}/edit", db.store.items(run.id, Some(ItemState::Proposed), 1).await.unwrap()[0].id);
    let (runs, edited) = tokio::task::spawn_blocking(move || {
        let body = r#"{"reviewer": "ann", "field": "description", "value": "A plain steel hinge for doors."}"#;
        let bad = r#"{"reviewer": "ann", "field": "description", "value": "short"}"#;
        (http_get(&addr, "/api/runs"), [http_post(&addr, &edit_path, body), http_post(&addr, &edit_path, bad)])
    })
    .await
    .unwrap();
    assert!(runs.starts_with("HTTP/1.1 200"), "{runs}");
    assert!(runs.contains(&format!("\"id\":{}", run.id)), "{runs}");
    // Reviewing there is held to the task as everywhere: a good edit is kept, a bad one refused.
    assert!(edited[0].starts_with("HTTP/1.1 200"), "an edit in the UI-only daemon: {}", edited[0]);
    assert!(edited[1].starts_with("HTTP/1.1 422"), "a too-short edit is refused: {}", edited[1]);
    drop(guard);
    let cfg_owned = config.clone();
    let full = tokio::task::spawn_blocking(move || without_secrets(&cfg_owned, &["daemon", "--bind", "127.0.0.1:0"]))
        .await
        .unwrap();

    assert!(text(&full).contains("`enrichd daemon --ui-only` serves the review UI"), "{}", text(&full));
    for (what, out) in [("run", &run_out), ("check", &check), ("daemon", &full)] {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(out));
        assert!(
            text(out)
                .contains("enrichd.toml: connections.shop.token: environment variable TEST_STORE_TOKEN is not set"),
            "{what}: {}",
            text(out)
        );
    }
}

// Item 12: `run --dry-run --list` and `--json` say which records and fields; nothing is stored.
async fn dry_run_lists_records_and_fields(db: &TestDb) {
    let (sb, _dir, config) = setup(db, 9, 3, ConfigOptions::default()).await;
    let cfg = config.as_path();
    let listed = expect(cfg, &["run", "catalogue", "--dry-run", "--list"], 0).await;
    let lines: Vec<&str> = listed.lines().filter(|l| l.starts_with("record ")).collect();
    assert_eq!(lines.len(), 3, "{listed}");
    for id in [3u64, 6, 9] {
        let name = sb.store.record("product", id).unwrap().1["name"].as_str().unwrap().to_owned();
        assert!(listed.contains(&format!("record {id}  {name}: description")), "record {id} {name:?} in:\n{listed}");
    }
    assert!(listed.contains("9 records read, 3 would be enriched"), "{listed}");

    let json: Value =
        serde_json::from_str(&expect(cfg, &["run", "catalogue", "--dry-run", "--json"], 0).await).unwrap();
    assert_eq!((json["read"].as_u64(), json["candidates"].as_u64()), (Some(9), Some(3)), "{json}");
    assert_eq!(json["fields"]["description"].as_u64(), Some(3), "{json}");
    let records = json["records"].as_array().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "6", "9"]);
    assert_eq!(records[0]["fields"], serde_json::json!(["description"]));
    assert_eq!(records[0]["name"], sb.store.record("product", 3).unwrap().1["name"]);
    assert!(db.store.runs(&[], 10).await.unwrap().is_empty(), "a dry run stores nothing");

    let out = enrichd_async(cfg, &["run", "catalogue", "--list"]).await;
    assert_eq!(out.status.code(), Some(2), "--list without --dry-run is a usage error: {}", text(&out));
}

on_both_backends! {
    run_after_approval => run_writes_what_was_approved;
    no_secrets_to_look => read_only_commands_need_no_secrets;
    dry_run_list => dry_run_lists_records_and_fields;
}

/// A config over sandboxes that are not running (for commands that need none), in a fresh folder.
fn offline_config() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandboxes {
        store: common::StoreSandbox::new("x"),
        store_url: "http://127.0.0.1:9".into(),
        provider: common::ProviderSandbox::new(None),
        provider_url: "http://127.0.0.1:9/v1".into(),
    };
    let db = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let path = write_config(dir.path(), &db, &sb, &ConfigOptions::default());
    (dir, path)
}

// Item 13: a reader that goes away early (`enrichd status | head -1`) is no crash.
#[test]
fn a_closed_pipe_ends_quietly() {
    let (_dir, config) = offline_config();
    for args in [&["status"][..], &["review", "list"], &["check", "--offline"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_enrichd"))
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .env("TEST_STORE_TOKEN", "x")
            .env("TEST_PROVIDER_KEY", "x")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "enrichd {}: {stderr}", args.join(" "));
        assert_ne!(out.status.code(), Some(101), "enrichd {}: {stderr}", args.join(" "));
    }
}

// Item 13: every argument of every command says what it is for.
#[test]
fn every_argument_has_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&enrichd::cli::command(), "enrichd", &mut missing);
    assert!(missing.is_empty(), "arguments without help text:\n{}", missing.join("\n"));
}

// Item 13: usage errors exit 2 and name what is wrong.
#[test]
fn usage_errors_exit_2() {
    let (_dir, config) = offline_config();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "nope"], "no pipeline named \"nope\""),
        (&["run", "nope", "--dry-run"], "known: catalogue"),
        (&["estimate", "nope"], "known: catalogue"),
        (&["run", "catalogue", "--limit", "0"], "--limit"),
        (&["estimate", "catalogue", "--sample", "0"], "--sample"),
        (&["status", "--json", "--watch"], "cannot be used with"),
        (&["sandbox", "woocommerce", "--missing-share", "1.5"], "--missing-share"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let out = enrichd(&config, args);
        assert_eq!(out.status.code(), Some(2), "enrichd {}: {}", args.join(" "), text(&out));
        assert!(text(&out).contains(expected), "enrichd {}: expected {expected:?} in {}", args.join(" "), text(&out));
    }
}

/// `check --offline` on the offline config after `edit`; returns its output, expecting exit 2.
fn check_broken(edit: impl Fn(&Path, String) -> String) -> String {
    let (dir, config) = offline_config();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, edit(dir.path(), good)).unwrap();
    let out = enrichd(&config, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    text(&out)
}

// Item 13: a cron field out of range is named with its range.
#[test]
fn a_bad_cron_names_the_field_out_of_range() {
    for (cron, expected) in [
        ("61 0 * * *", "minute 61 is out of range 0-59"),
        ("0 61 * * *", "hour 61 is out of range 0-23"),
        ("0 3 32 * *", "day of month 32 is out of range 1-31"),
        ("0 3 * 13 *", "month 13 is out of range 1-12"),
        ("0 3 * * 9", "day of week 9 is out of range 0-7"),
        ("75 0 3 * * *", "second 75 is out of range 0-59"),
        ("0 */90 * * *", "hour step 90 is out of range 1-23"),
    ] {
        let out =
            check_broken(|_, c| c.replace("max_attempts = 5", &format!("max_attempts = 5\nschedule = \"{cron}\"")));
        let want = format!("pipelines.catalogue.schedule: \"{cron}\": {expected}");
        assert!(out.contains(&want), "expected {want:?} in: {out}");
    }
    // Weekdays count from Sunday = 0, as cron does.
    let (_dir, config) = offline_config();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("max_attempts = 5", "max_attempts = 5\nschedule = \"0 3 * * 0\"")).unwrap();
    let out = enrichd(&config, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

// Item 13: a mistake in a task file is reported against that file.
#[test]
fn an_error_in_a_task_file_names_the_file() {
    let out = check_broken(|dir, c| {
        std::fs::create_dir_all(dir.join("tasks")).unwrap();
        std::fs::write(
            dir.join("tasks/bad.toml"),
            "prompt = \"Describe {{ record.id }}.\"\noutput_schema = { type = \"object\", properties = { a = { type = \"string\" } } }\nfields = { b = \"description\" }\n",
        )
        .unwrap();
        c
    });
    let file = Path::new("tasks").join("bad.toml");
    assert!(
        out.contains(&format!("{}: tasks.bad.fields.b", file.display())),
        "the task file, not enrichd.toml, is named: {out}"
    );
    assert!(!out.contains("enrichd.toml: tasks.bad"), "{out}");
}

// Item 13: the demo prints commands that run as printed, at addresses already listening, and its
// simulated model writes copy from each product's facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_commands_that_work_and_writes_plausible_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (child, lines) = common::process::start_demo(&["--products", "12"], dir.path()).await;
    let guard = KillOnDrop(child);
    let printed = lines.join("\n");

    // The review address is listening when printed.
    let queue = lines.iter().find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://"))).unwrap();
    let base = queue.split("/queue").next().unwrap();
    assert!(!base.ends_with(":0"), "the bound port is printed, not the one asked for: {printed}");
    let health = http_get(base.trim_start_matches("http://"), "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}\n{printed}");

    // Every printed command is the real binary with the demo's config.
    let exe = env!("CARGO_BIN_EXE_enrichd");
    let commands: Vec<Vec<String>> = lines
        .iter()
        .filter_map(|l| l.find(exe).map(|at| l[at..].split_whitespace().map(str::to_owned).collect()))
        .collect();
    assert!(commands.len() >= 4, "commands print the binary's path {exe}: {printed}");
    let status = commands.iter().find(|c| c.contains(&"status".to_owned())).unwrap();
    let list = commands.iter().find(|c| c.contains(&"list".to_owned())).unwrap();

    // Wait for proposals, then read them with the printed command, from another folder.
    let deadline = Instant::now() + Duration::from_secs(60);
    let queue: Value = loop {
        let mut args: Vec<String> = list[1..].to_vec();
        args.push("--json".into());
        let out = Command::new(&list[0]).args(&args).current_dir("/").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["total"].as_i64().unwrap_or(0) >= 2 || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let out = Command::new(&status[0]).args(&status[1..]).current_dir("/").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let items = queue["items"].as_array().unwrap();
    assert!(items.len() >= 2, "{queue}");
    for item in items {
        let show = Command::new(&list[0])
            .args(&list[1..3])
            .args(["review", "show", &item["id"].as_i64().unwrap().to_string(), "--json"])
            .output()
            .unwrap();
        assert_eq!(show.status.code(), Some(0), "{}", text(&show));
        let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
        let item = &shown["item"];
        let record = item_input(item);
        let name = record["name"].as_str().unwrap();
        let category = record["categories"][0].as_str().unwrap();
        let proposal = item_proposal(item);
        let description = proposal["description"].as_str().unwrap();
        assert!(description.starts_with("<p>") && description.contains(name), "{name}: {description}");
        assert!(!description.contains("(sandbox)") && !description.contains("description for"), "{description}");
        assert!(
            description.to_lowercase().contains(&category.to_lowercase().replace('&', "&amp;")),
            "the copy uses the category {category}: {description}"
        );
    }
    drop(guard);
}

/// The record an item was proposed for (its `input`, a JSON object in a string).
fn item_input(item: &Value) -> Value {
    serde_json::from_str(item["input"].as_str().unwrap()).unwrap()
}

/// The proposed values by field.
fn item_proposal(item: &Value) -> Value {
    let fields = item["proposal"]["fields"].as_object().unwrap();
    Value::Object(fields.iter().map(|(k, c)| (k.clone(), c["proposed"].clone())).collect())
}

/// A plain HTTP/1.1 GET of `path` at `addr`: the response's head and body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn http_post(addr: &str, path: &str, json: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Stops a child process (SIGTERM, then SIGKILL) and reaps it when the test ends, passing or failing.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
