//! The `enrichd` binary from outside: `check` on the example and on broken configs (exit 2 with the
//! key path), connection tests (exit 1), `run --limit`, `run --dry-run`, `status --json`, usage errors.

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{self, Env, text};
use common::{ConfigOptions, sandboxes, write_config};

fn enrichd(config: &Path, args: &[&str]) -> Output {
    process::output(config, args, &Env { vars: &[("TESTSTORE_TOKEN", "example-token")], ..Env::default() })
}

#[test]
fn the_example_config_checks_offline() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/enrichd.example.toml");
    let out = enrichd(&example, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Every shipped task file, and the one task the example defines inline ([tasks.short_copy]).
    let shipped = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tasks"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "toml"))
        .count();
    assert!(
        text(&out).contains(&format!("{} task(s), 1 pipeline(s)", shipped + 1)),
        "the task files in config/tasks are loaded: {}",
        text(&out)
    );
}

/// Applies `edit` to a valid config and expects `check --offline` to fail with exit 2 and `expected`.
fn broken(edit: impl Fn(String) -> String, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sb = common::Sandboxes {
        store: common::StoreSandbox::new("x"),
        store_url: "http://127.0.0.1:9".into(),
        provider: common::ProviderSandbox::new(None),
        provider_url: "http://127.0.0.1:9/v1".into(),
    };
    let path = write_config(dir.path(), "sqlite://unused.db", &sb, &ConfigOptions::default());
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = edit(good.clone());
    assert_ne!(good, bad, "the edit for {expected:?} changed nothing");
    std::fs::write(&path, bad).unwrap();
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(expected), "expected {expected:?} in: {}", text(&out));
}

#[test]
fn broken_configs_fail_with_exit_2_and_the_key_path() {
    broken(
        |c| c.replace("policy = \"none\"", "policy = \"none\", sample = 3"),
        "pipelines.catalogue.review.sample: only applies to policy = \"sample_first\"",
    );
    broken(
        |c| c.replace("policy = \"none\"", "policy = \"sample_first\""),
        "pipelines.catalogue.review.sample: missing",
    );
    broken(
        |c| c.replace("policy = \"none\"", "policy = \"sample_first\", sample = 5, auto_release_max_reject_rate = 1.5"),
        "pipelines.catalogue.review.auto_release_max_reject_rate: must be between 0.0 and 1.0",
    );
    broken(
        |c| {
            c.replace(
                "policy = \"none\"",
                "policy = \"auto_approve\", confidence_field = \"certainty\", min_confidence = 0.9",
            )
        },
        "pipelines.catalogue.review.confidence_field: \"certainty\" is not a property of the task's output_schema",
    );
    broken(
        |c| c.replace("policy = \"none\"", "policy = \"auto_approve\", min_confidence = 0.9"),
        "pipelines.catalogue.review.confidence_field: missing",
    );
    broken(
        |c| c.replace("concurrency = 8", "concurrency = \"eight\""),
        "pipelines.catalogue.concurrency: invalid type: string \"eight\", expected usize",
    );
    broken(
        |c| c.replace("concurrency = 8", "concurrency = 8\ncolour = \"red\""),
        "pipelines.catalogue.colour: unknown field `colour`",
    );
    broken(|c| c.replace("[daemon]", "[daemon]\nthreads = 4"), "daemon.threads: unknown field `threads`");
    broken(|c| c.replace("[database]", "[databse]\n[database]"), "databse: unknown field `databse`");
    broken(
        |c| c.replace("token = \"${TEST_STORE_TOKEN}\"", "token = \"s3cr3t\""),
        "connections.shop.token: secrets are not written in the config file",
    );
    broken(
        |c| c.replace("${TEST_STORE_TOKEN}", "${NOT_SET_ANYWHERE_42}"),
        "connections.shop.token: environment variable NOT_SET_ANYWHERE_42 is not set",
    );
    broken(
        |c| c.replace("token = \"${TEST_STORE_TOKEN}\"", "token = \"file:/nonexistent/secret\""),
        "connections.shop.token: cannot read secret file /nonexistent/secret",
    );
    broken(
        |c| c.replace("provider = \"sim\"", "provider = \"nope\""),
        "pipelines.catalogue.provider: no provider named \"nope\" (known: sim)",
    );
    broken(
        |c| c.replace("kind = \"teststore\"", "kind = \"shopify\""),
        "connections.shop.kind: unknown connection kind \"shopify\"",
    );
    broken(
        |c| c.replace("policy = \"none\"", "policy = \"sometimes\""),
        "pipelines.catalogue.review.policy: unknown variant `sometimes`",
    );
    broken(
        |c| c.replace("max_attempts = 5", "max_attempts = 5\nschedule = \"every night\""),
        "pipelines.catalogue.schedule: \"every night\" has 2 fields",
    );
    broken(
        |c| c.replace("max_attempts = 5", "max_attempts = 0"),
        "pipelines.catalogue.max_attempts: must be at least 1",
    );
    broken(
        |c| c.replace("missing = [\"description\"]", "missing = [\"price\"]"),
        "pipelines.catalogue.select: field \"price\" is selected but task copy never fills it",
    );
    broken(
        |c| c.replace("fields = { description = \"description\" }", "fields = { summary = \"description\" }"),
        "tasks.copy.fields.summary: \"summary\" is not a property of output_schema",
    );
    broken(|c| c.replace("write its description.", "write {{ its description."), "tasks.copy.prompt: template error");
    broken(
        |c| c.replace("fields = {", "temperature = 2.5\nfields = {"),
        "tasks.copy.temperature: must be between 0 and 2",
    );
    broken(
        |c| c.replace("fields = {", "temperature = -0.1\nfields = {"),
        "tasks.copy.temperature: must be between 0 and 2",
    );
    broken(
        |c| c.replace("fields = {", "temperature = nan\nfields = {"),
        "tasks.copy.temperature: must be between 0 and 2",
    );
    broken(|c| c.replace("[connections.shop]", "[connections.shop"), "(file): TOML parse error at line");
}

#[test]
fn task_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tasks")).unwrap();
    std::fs::write(
        dir.path().join("tasks/bad.toml"),
        "prompt = 'x'\nmax_output_tokens = -1\noutput_schema = { type = 'object', properties = {} }\nfields = {}\n",
    )
    .unwrap();
    let path = dir.path().join("enrichd.toml");
    std::fs::write(&path, "").unwrap();
    let out = enrichd(&path, &["check", "--offline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("bad.toml: tasks.bad.max_output_tokens: invalid value: integer `-1`"),
        "{}",
        text(&out)
    );
}

#[test]
fn usage_errors_and_missing_files_exit_2() {
    let out = enrichd(Path::new("/nonexistent/enrichd.toml"), &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("/nonexistent/enrichd.toml: (file): cannot read"), "{}", text(&out));
    let out = enrichd(Path::new("x.toml"), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = enrichd(Path::new("x.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(2), "missing PIPELINE argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tests_connections_and_run_limit_dry_run_and_status() {
    let sb = sandboxes(40, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let path = write_config(dir.path(), &db, &sb, &ConfigOptions::default());
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["check"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok    connections.shop (teststore): can list product"));

    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["run", "nope"])).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no pipeline named \"nope\""), "{}", text(&out));

    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["run", "catalogue", "--dry-run"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("40 records read, 20 would be enriched (description 20), 20 have nothing missing"),
        "{}",
        text(&out)
    );
    assert!(
        sb.store.writes().is_empty() && sb.provider.stats().requests == 0,
        "a dry run calls no model and writes nothing"
    );

    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["run", "catalogue", "--limit", "5"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sb.store.writes().len(), 5, "--limit 5 enriches five records");
    assert!(text(&out).contains("run 1 finished"), "{}", text(&out));

    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["status", "1", "--json"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["run"]["status"], "done");
    assert_eq!(status["run"]["item_limit"], 5);
    assert_eq!(status["counts"]["written"], 5);
    assert!(status["run"]["cost_micros"].as_i64().unwrap() > 0);

    // A wrong token fails the connection test with exit 1, naming the connection, never the token.
    let text_cfg = std::fs::read_to_string(&path).unwrap().replace("${TEST_STORE_TOKEN}", "${WRONG_TOKEN}");
    std::fs::write(&path, text_cfg).unwrap();
    let out = process::output_async(
        &path,
        &["check"],
        &Env { log_level: "info", vars: &[("WRONG_TOKEN", "guessed-token-123")], ..Env::default() },
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("connections.shop: teststore: list product: HTTP 401 unauthorized"), "{}", text(&out));
    assert!(!text(&out).contains("guessed-token-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_samples_the_model_and_projects_cost_with_the_batch_price() {
    let sb = sandboxes(60, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let options = ConfigOptions { extra_provider: "requests_per_minute = 6000", ..Default::default() };
    let path = write_config(dir.path(), &db, &sb, &options);
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || enrichd(&p, &["estimate", "catalogue", "--sample", "4", "--json"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((e["records_read"].as_u64(), e["candidates"].as_u64()), (Some(60), Some(20)));
    assert_eq!((e["sampled"].as_u64(), e["usable"].as_u64()), (Some(4), Some(4)));
    assert_eq!(sb.provider.stats().requests, 4, "only the sample reached the model");
    let per = e["cost_per_record_usd"].as_f64().unwrap();
    let total = e["realtime_cost_usd"].as_f64().unwrap();
    assert!(per > 0.0 && (total - per * 20.0).abs() < 1e-12, "{e}");
    assert!((e["batch_cost_usd"].as_f64().unwrap() - total / 2.0).abs() < 1e-12, "batch is half price: {e}");
    assert!(sb.store.writes().is_empty(), "an estimate writes nothing");
    assert!(!dir.path().join("e.db").exists(), "and stores nothing");

    let p = path.clone();
    let out =
        tokio::task::spawn_blocking(move || enrichd(&p, &["estimate", "catalogue", "--sample", "2"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("records read 60, candidates 20"), "{report}");
    assert!(report.contains("batch mode: $") && report.contains("(50% off)"), "{report}");
}
