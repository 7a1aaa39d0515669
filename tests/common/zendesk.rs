//! The ticket-triage pipeline over the Zendesk sandbox and the provider sandbox, with the shipped
//! `config/tasks/ticket_triage.toml`. Secrets come from `ZENDESK_TEST_*` environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TestDb;
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::ProviderSandbox;
use enrichd::store::Run;
use enrichd_zendesk::sandbox::{API_TOKEN, CATEGORY_FIELD_ID, EMAIL, ZendeskSandbox};
use serde_json::Value;

pub const PROVIDER_KEY: &str = "zendesk-test-provider-key";
/// The tag allow-list the test pipelines give the task.
pub const TAGS: [&str; 4] = ["refund", "bug", "delivery", "login"];

/// The secrets the config references, for a child process's environment.
pub fn zendesk_env() -> [(&'static str, &'static str); 2] {
    [("ZENDESK_TEST_TOKEN", API_TOKEN), ("ZENDESK_TEST_PROVIDER_KEY", PROVIDER_KEY)]
}

pub fn set_zendesk_env() {
    for (k, v) in zendesk_env() {
        // SAFETY: set before configs load; the values never change within the process.
        unsafe { std::env::set_var(k, v) };
    }
}

/// The account and the simulated model, serving on loopback ports.
pub struct Helpdesk {
    pub account: ZendeskSandbox,
    pub account_url: String,
    pub provider: ProviderSandbox,
    pub provider_url: String,
}

pub async fn helpdesk(account: ZendeskSandbox) -> Helpdesk {
    let addr = account.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Helpdesk { account, account_url: format!("http://{addr}"), provider, provider_url: format!("http://{paddr}/v1") }
}

/// Writes `enrichd.toml` (and `tasks/ticket_triage.toml`) into `dir` for pipeline `triage`: tickets
/// without a category, tags added from [`TAGS`], every proposal approved (confidence 0 or more),
/// `extra_connection` and `extra_pipeline` appended to their blocks.
pub fn write_zendesk_config(
    dir: &Path,
    database_url: &str,
    hd: &Helpdesk,
    extra_connection: &str,
    extra_pipeline: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/ticket_triage.toml"),
        dir.join("tasks/ticket_triage.toml"),
    )
    .unwrap();
    let tags = TAGS.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ");
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
kind = "zendesk"
base_url = "{account}"
email = "{EMAIL}"
api_token = "${{ZENDESK_TEST_TOKEN}}"
timeout_secs = 10
{extra_connection}

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{ZENDESK_TEST_PROVIDER_KEY}}"
timeout_seconds = 10

[pipelines.triage]
connection = "support"
entity = "tickets"
task = "ticket_triage"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 8
max_attempts = 3
page_size = 1000
select = {{ missing = ["custom.Category"], fill_all_missing = true, add = ["tags"] }}
review = {{ policy = "auto_approve", confidence_field = "confidence", min_confidence = 0.0 }}
allowed = {{ tags = [{tags}] }}
{extra_pipeline}
"#,
        account = hd.account_url,
        provider = hd.provider_url,
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

pub async fn triage(db: &TestDb, account: ZendeskSandbox, extra_pipeline: &str) -> Triage {
    set_zendesk_env();
    let hd = helpdesk(account).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_zendesk_config(dir.path(), &db.url, &hd, "", extra_pipeline);
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Triage { hd, config: path, engine, dir }
}

/// A new manual run of pipeline `triage`.
pub async fn start_triage(engine: &Engine) -> Run {
    super::harness::start_named(engine, "triage").await
}

/// Every ticket as the account holds it now, by id.
pub fn tickets(account: &ZendeskSandbox) -> BTreeMap<u64, Value> {
    account.ticket_ids().into_iter().filter_map(|id| Some((id, account.ticket(id)?))).collect()
}

/// A ticket's custom field value.
pub fn custom(ticket: &Value, field: u64) -> Value {
    ticket["custom_fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == field))
        .map(|f| f["value"].clone())
        .unwrap_or(Value::Null)
}

/// Tickets with no category.
pub fn untriaged(tickets: &BTreeMap<u64, Value>) -> Vec<u64> {
    tickets.iter().filter(|(_, t)| custom(t, CATEGORY_FIELD_ID).is_null()).map(|(id, _)| *id).collect()
}

/// A ticket's tags.
pub fn tags(ticket: &Value) -> Vec<String> {
    ticket["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
