//! The Help Scout triage pipeline over the Help Scout sandbox and the provider sandbox, with the
//! shipped `config/tasks/ticket_triage_helpscout.toml`. Secrets come from `HELPSCOUT_TEST_*`
//! environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TestDb;
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::ProviderSandbox;
use enrichd::store::Run;
use enrichd_helpscout::sandbox::{CLIENT_ID, CLIENT_SECRET, HelpScoutSandbox, MAILBOX_ID};

pub const PROVIDER_KEY: &str = "helpscout-test-provider-key";
/// The key `database.secret_key` is set to when a test keeps tokens (in a real deployment: a long
/// random value from a secret store).
pub const SECRET_KEY: &str = "helpscout-test-database-secret-key-0123456789";
/// The tag allow-list the test pipelines give the task.
pub const TAGS: [&str; 4] = ["refund", "bug", "delivery", "login"];

/// The secrets the config references, for a child process's environment.
pub fn helpscout_env() -> [(&'static str, &'static str); 3] {
    [
        ("HELPSCOUT_TEST_CLIENT_SECRET", CLIENT_SECRET),
        ("HELPSCOUT_TEST_PROVIDER_KEY", PROVIDER_KEY),
        ("HELPSCOUT_TEST_SECRET_KEY", SECRET_KEY),
    ]
}

pub fn set_helpscout_env() {
    for (k, v) in helpscout_env() {
        // SAFETY: set before configs load; the values never change within the process.
        unsafe { std::env::set_var(k, v) };
    }
}

/// The account and the simulated model, serving on loopback ports.
pub struct Mailbox {
    pub account: HelpScoutSandbox,
    pub account_url: String,
    pub provider: ProviderSandbox,
    pub provider_url: String,
}

pub async fn mailbox(account: HelpScoutSandbox) -> Mailbox {
    let addr = account.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Mailbox { account, account_url: format!("http://{addr}"), provider, provider_url: format!("http://{paddr}/v1") }
}

/// What a test config holds beyond the defaults.
#[derive(Default)]
pub struct Knobs<'a> {
    /// `database.secret_key` set: the connection's tokens are kept, encrypted, in the database.
    pub keep_tokens: bool,
    pub extra_pipeline: &'a str,
}

/// Writes `enrichd.toml` (and `tasks/ticket_triage_helpscout.toml`) into `dir` for pipeline
/// `triage`: every conversation of the mailbox (`status = "all"`) without a category, tags added
/// from [`TAGS`], every proposal approved (confidence 0 or more).
pub fn write_helpscout_config(dir: &Path, database_url: &str, mb: &Mailbox, knobs: &Knobs) -> PathBuf {
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/ticket_triage_helpscout.toml"),
        dir.join("tasks/ticket_triage_helpscout.toml"),
    )
    .unwrap();
    let tags = TAGS.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ");
    let secret_key = if knobs.keep_tokens { "secret_key = \"${HELPSCOUT_TEST_SECRET_KEY}\"" } else { "" };
    let text = format!(
        r#"
[database]
url = "{database_url}"
max_connections = 8
{secret_key}

[daemon]
lease_seconds = 10
shutdown_grace_seconds = 5
poll_interval_ms = 20
retry_base_ms = 50
retry_max_seconds = 1

[connections.support]
kind = "helpscout"
base_url = "{account}"
client_id = "{CLIENT_ID}"
client_secret = "${{HELPSCOUT_TEST_CLIENT_SECRET}}"
mailbox = {MAILBOX_ID}
status = "all"
timeout_secs = 10

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{HELPSCOUT_TEST_PROVIDER_KEY}}"
timeout_seconds = 10

[pipelines.triage]
connection = "support"
entity = "conversations"
task = "ticket_triage_helpscout"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 8
max_attempts = 3
select = {{ missing = ["custom.Category"], fill_all_missing = true, add = ["tags"] }}
review = {{ policy = "auto_approve", confidence_field = "confidence", min_confidence = 0.0 }}
allowed = {{ tags = [{tags}] }}
{extra_pipeline}
"#,
        account = mb.account_url,
        provider = mb.provider_url,
        extra_pipeline = knobs.extra_pipeline,
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sandboxes and the engine in-process on `db`.
pub struct Triage {
    pub mb: Mailbox,
    pub config: PathBuf,
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
}

pub async fn triage(db: &TestDb, account: HelpScoutSandbox, knobs: &Knobs<'_>) -> Triage {
    set_helpscout_env();
    let mb = mailbox(account).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_helpscout_config(dir.path(), &db.url, &mb, knobs);
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Triage { mb, config: path, engine, dir }
}

/// A new manual run of pipeline `triage`.
pub async fn start_triage(engine: &Engine) -> Run {
    super::harness::start_named(engine, "triage").await
}

/// A conversation as the mailbox holds it now: its tags and custom fields (labels), by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub status: String,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub sentiment: Option<String>,
    pub language: Option<String>,
}

/// Every conversation as the account holds it now, by id.
pub fn conversations(account: &HelpScoutSandbox) -> BTreeMap<u64, Seen> {
    use enrichd_helpscout::sandbox::{CATEGORY_FIELD_ID, LANGUAGE_FIELD_ID, SENTIMENT_FIELD_ID};
    account
        .conversation_ids()
        .into_iter()
        .map(|id| {
            let status = account.conversation(id).unwrap()["status"].as_str().unwrap_or_default().to_owned();
            let seen = Seen {
                status,
                tags: account.tags(id),
                category: account.field_text(id, CATEGORY_FIELD_ID),
                sentiment: account.field_text(id, SENTIMENT_FIELD_ID),
                language: account.field_text(id, LANGUAGE_FIELD_ID),
            };
            (id, seen)
        })
        .collect()
}

/// Conversations with no category.
pub fn untriaged(conversations: &BTreeMap<u64, Seen>) -> Vec<u64> {
    conversations.iter().filter(|(_, c)| c.category.is_none()).map(|(id, _)| *id).collect()
}
