//! The ticket-triage pipeline over the Freshdesk sandbox and the provider sandbox, with the shipped
//! `config/tasks/ticket_triage_freshdesk.toml`. Secrets come from `FRESHDESK_TEST_*` environment
//! variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TestDb;
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::ProviderSandbox;
use enrichd::store::Run;
use enrichd_freshdesk::sandbox::{API_KEY, CATEGORY_FIELD, FreshdeskSandbox};
use serde_json::Value;

pub const PROVIDER_KEY: &str = "freshdesk-test-provider-key";
/// The tag allow-list the test pipelines give the task.
pub const TAGS: [&str; 4] = ["refund", "bug", "delivery", "login"];
/// The shipped task's file name.
pub const TRIAGE_TASK: &str = "ticket_triage_freshdesk";

pub fn set_freshdesk_env() {
    for (k, v) in [("FRESHDESK_TEST_KEY", API_KEY), ("FRESHDESK_TEST_PROVIDER_KEY", PROVIDER_KEY)] {
        // SAFETY: set before configs load; the values never change within the process.
        unsafe { std::env::set_var(k, v) };
    }
}

/// The account and the simulated model, serving on loopback ports.
pub struct Helpdesk {
    pub account: FreshdeskSandbox,
    pub account_url: String,
    pub provider: ProviderSandbox,
    pub provider_url: String,
}

pub async fn helpdesk(account: FreshdeskSandbox) -> Helpdesk {
    let addr = account.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Helpdesk { account, account_url: format!("http://{addr}"), provider, provider_url: format!("http://{paddr}/v1") }
}

/// What a test pipeline `triage` runs: the task (a file in `config/tasks` or `tests/fixtures`) and
/// its selector.
pub struct TriageSetup<'a> {
    /// Path of the task file, relative to the workspace.
    pub task_file: &'a str,
    pub select: &'a str,
    /// Appended to the pipeline's table (the default: `allowed` tags, [`TAGS`]).
    pub extra_pipeline: &'a str,
}

impl Default for TriageSetup<'_> {
    /// The shipped task on tickets without a category: every missing field filled, tags added from
    /// [`TAGS`], and the priority set (Freshdesk gives every ticket one, Low by default, so it is
    /// never "missing").
    fn default() -> Self {
        Self {
            task_file: "config/tasks/ticket_triage_freshdesk.toml",
            select: r#"{ missing = ["custom.Category"], fill_all_missing = true, add = ["tags", "priority"] }"#,
            extra_pipeline: r#"allowed = { tags = ["refund", "bug", "delivery", "login"] }"#,
        }
    }
}

/// Writes `enrichd.toml` (and the task under `tasks/`) into `dir` for pipeline `triage`: every
/// proposal approved (confidence 0 or more), 100 tickets a page.
pub fn write_freshdesk_config(dir: &Path, database_url: &str, hd: &Helpdesk, setup: &TriageSetup) -> PathBuf {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(setup.task_file);
    let task = source.file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::copy(&source, dir.join("tasks").join(source.file_name().unwrap())).unwrap();
    let text = format!(
        r#"
[database]
url = "{database_url}"
max_connections = 8

[daemon]
lease_seconds = 10
shutdown_grace_seconds = 5
poll_interval_ms = 20
retry_base_ms = 50
retry_max_seconds = 1

[connections.support]
kind = "freshdesk"
base_url = "{account}"
api_key = "${{FRESHDESK_TEST_KEY}}"
timeout_secs = 10

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{FRESHDESK_TEST_PROVIDER_KEY}}"
timeout_seconds = 10

[pipelines.triage]
connection = "support"
entity = "tickets"
task = "{task}"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 8
max_attempts = 3
page_size = 100
select = {select}
review = {{ policy = "auto_approve", confidence_field = "confidence", min_confidence = 0.0 }}
{extra}
"#,
        account = hd.account_url,
        provider = hd.provider_url,
        select = setup.select,
        extra = setup.extra_pipeline,
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sandboxes and the engine in-process on `db`.
pub struct Triage {
    pub hd: Helpdesk,
    pub config: PathBuf,
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
}

pub async fn triage(db: &TestDb, account: FreshdeskSandbox, setup: &TriageSetup<'_>) -> Triage {
    set_freshdesk_env();
    let hd = helpdesk(account).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_freshdesk_config(dir.path(), &db.url, &hd, setup);
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Triage { hd, config: path, engine, dir }
}

/// A new manual run of pipeline `triage`.
pub async fn start_triage(engine: &Engine) -> Run {
    super::harness::start_named(engine, "triage").await
}

/// Every ticket as the account holds it now, by id.
pub fn tickets(account: &FreshdeskSandbox) -> BTreeMap<u64, Value> {
    account.ticket_ids().into_iter().filter_map(|id| Some((id, account.ticket(id)?))).collect()
}

/// A ticket's custom field value by API name (`cf_category`).
pub fn custom(ticket: &Value, field: &str) -> Value {
    ticket["custom_fields"][field].clone()
}

/// Tickets with no category.
pub fn untriaged(tickets: &BTreeMap<u64, Value>) -> Vec<u64> {
    tickets.iter().filter(|(_, t)| custom(t, CATEGORY_FIELD).is_null()).map(|(id, _)| *id).collect()
}

/// A ticket's tags.
pub fn tags(ticket: &Value) -> Vec<String> {
    ticket["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
