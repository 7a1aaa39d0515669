//! Test databases: a fresh SQLite file or a fresh Postgres database per test, migrated.
//!
//! Postgres comes from `ENRICHD_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`). When it
//! cannot be reached the Postgres cases are skipped with a printed notice — except under `CI=true`,
//! where they fail.
#![allow(dead_code)]

pub mod browser;
pub mod freshdesk;
pub mod harness;
pub mod helpscout;
pub mod process;
pub mod prompts;
pub mod queue;
pub mod receiver;
pub mod session;
pub mod web;
pub mod woo;
pub mod zendesk;

use std::sync::atomic::{AtomicU32, Ordering};

use enrichd::store::Store;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Executor};

pub struct TestDb {
    pub store: Store,
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Another, independent store on the same database (separate connections).
    pub async fn connect_again(&self, max_connections: u32) -> Store {
        Store::connect(&self.url, max_connections).await.unwrap()
    }

    pub async fn cleanup(self) {
        self.store.close().await;
        let Some((admin, name)) = self.admin else {
            return;
        };
        if let Ok(mut conn) = AnyConnection::connect(&admin).await {
            let _ = conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
        }
    }
}

pub fn postgres_admin_url() -> String {
    std::env::var("ENRICHD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enrichd.db").display());
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    TestDb { store, url, admin: None, _dir: Some(dir) }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, migrated Postgres database, or `None` (with a notice) when none is reachable outside CI.
pub async fn postgres() -> Option<TestDb> {
    sqlx::any::install_default_drivers();
    let base = postgres_admin_url();
    let admin = format!("{}/postgres", base.trim_end_matches('/'));
    let mut conn = match AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "NOTICE: Postgres at {base} is not reachable ({e}); skipping the Postgres case. CI=true makes this a failure."
            );
            return None;
        }
        Err(e) => panic!("CI=true and Postgres at {base} is not reachable: {e}"),
    };
    let name =
        format!("enrichd_t_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), rand_suffix());
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
    conn.close().await.unwrap();
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    Some(TestDb { store, url, admin: Some((admin, name)), _dir: None })
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// Defines `mod $name { sqlite, postgres }`, each running `$case(TestDb)` on a fresh database.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $case:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::common::sqlite().await;
                super::$case(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::common::postgres().await else { return };
                super::$case(&db).await;
                db.cleanup().await;
            }
        }
    )*};
}

pub use enrichd::sandbox::provider::ProviderSandbox;
pub use enrichd_teststore::sandbox::Sandbox as StoreSandbox;

pub const STORE_TOKEN: &str = "test-store-token";
pub const PROVIDER_KEY: &str = "test-provider-key";

/// Both sandboxes, serving on loopback ports.
pub struct Sandboxes {
    pub store: StoreSandbox,
    pub store_url: String,
    pub provider: ProviderSandbox,
    pub provider_url: String,
}

/// Starts a teststore with `products` products (every `missing_every`th lacks a description) and a
/// provider sandbox, both on free ports.
pub async fn sandboxes(products: u64, missing_every: u64) -> Sandboxes {
    let store = StoreSandbox::new(STORE_TOKEN);
    store.seed_products(products, missing_every);
    let addr = store.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Sandboxes { store, store_url: format!("http://{addr}"), provider, provider_url: format!("http://{paddr}/v1") }
}

/// Knobs of a test config.
pub struct ConfigOptions {
    pub policy: &'static str,
    /// More keys of the pipeline's inline `review` table, starting with a comma (`, sample = 3`).
    pub review_extra: &'static str,
    pub concurrency: usize,
    pub lease_seconds: f64,
    pub max_attempts: u32,
    pub extra_pipeline: &'static str,
    /// Lines added to `[providers.sim]` and `[tasks.copy]`.
    pub extra_provider: &'static str,
    pub extra_task: &'static str,
    /// The HTTP timeouts of the store connection and of the provider: chaos tests shorten them so
    /// a hung request costs a second, not ten.
    pub store_timeout_seconds: f64,
    pub provider_timeout_seconds: f64,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        Self {
            policy: "none",
            review_extra: "",
            concurrency: 8,
            lease_seconds: 5.0,
            max_attempts: 5,
            extra_pipeline: "",
            extra_provider: "",
            extra_task: "",
            store_timeout_seconds: 10.0,
            provider_timeout_seconds: 10.0,
        }
    }
}

/// Writes `enrichd.toml` into `dir` for pipeline `catalogue` over the sandboxes. Secrets come from
/// the environment variables `TEST_STORE_TOKEN` and `TEST_PROVIDER_KEY`, which callers set (or pass
/// to child processes).
pub fn write_config(
    dir: &std::path::Path,
    database_url: &str,
    sb: &Sandboxes,
    o: &ConfigOptions,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[database]
url = "{database_url}"
max_connections = 8

[daemon]
lease_seconds = {lease}
shutdown_grace_seconds = 5
poll_interval_ms = 50
retry_base_ms = 100
retry_max_seconds = 2

[connections.shop]
kind = "teststore"
base_url = "{store}"
token = "${{TEST_STORE_TOKEN}}"
timeout_seconds = {store_timeout}

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{TEST_PROVIDER_KEY}}"
timeout_seconds = {provider_timeout}
{extra_provider}

[tasks.copy]
prompt = "Product {{{{ record.id }}}}: write its description."
output_schema = {{ type = "object", additionalProperties = false, required = ["description"], properties = {{ description = {{ type = "string", minLength = 10 }} }} }}
fields = {{ description = "description" }}
{extra_task}

[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "copy"
provider = "sim"
model = "gpt-4o-mini"
concurrency = {concurrency}
max_attempts = {max_attempts}
select = {{ missing = ["description"] }}
review = {{ policy = "{policy}"{review_extra} }}
{extra}
"#,
        lease = o.lease_seconds,
        store = sb.store_url,
        provider = sb.provider_url,
        concurrency = o.concurrency,
        max_attempts = o.max_attempts,
        policy = o.policy,
        review_extra = o.review_extra,
        extra = o.extra_pipeline,
        extra_provider = o.extra_provider,
        extra_task = o.extra_task,
        store_timeout = o.store_timeout_seconds,
        provider_timeout = o.provider_timeout_seconds,
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sets the secrets the test configs reference, for in-process config loading.
pub fn set_secret_env() {
    // SAFETY: set once per test process before any config is loaded; the values never change.
    unsafe {
        std::env::set_var("TEST_STORE_TOKEN", STORE_TOKEN);
        std::env::set_var("TEST_PROVIDER_KEY", PROVIDER_KEY);
    }
}

/// What the provider sandbox answers for product `id` with the test task.
pub fn expected_description(id: u64) -> String {
    format!("description for Product {id}: write its description.")
}
