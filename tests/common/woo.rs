//! The WooCommerce pipeline over the sandboxes: the WooCommerce sandbox serving HTTPS with its own
//! certificate (trusted through `ca_cert`), the provider sandbox, and a config using the shipped
//! `config/tasks/product_copy.toml`. Secrets come from `WOO_TEST_*` environment variables, which
//! [`woo_env`] lists for child processes and [`set_woo_env`] sets in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TestDb;
use enrichd::config::Config;
use enrichd::engine::Engine;
use enrichd::sandbox::provider::ProviderSandbox;
use enrichd_woocommerce::sandbox::{CONSUMER_KEY, CONSUMER_SECRET, WooSandbox};

pub const PROVIDER_KEY: &str = "woo-test-provider-key";

/// The secrets the config references, for a child process's environment.
pub fn woo_env() -> [(&'static str, &'static str); 3] {
    [("WOO_TEST_CK", CONSUMER_KEY), ("WOO_TEST_CS", CONSUMER_SECRET), ("WOO_TEST_PROVIDER_KEY", PROVIDER_KEY)]
}

pub fn set_woo_env() {
    for (k, v) in woo_env() {
        // SAFETY: set before configs load; the values never change within the process.
        unsafe { std::env::set_var(k, v) };
    }
}

/// The running sandboxes.
pub struct WooSandboxes {
    pub shop: WooSandbox,
    pub shop_port: u16,
    pub provider: ProviderSandbox,
    pub provider_url: String,
}

pub async fn woo_sandboxes(shop: WooSandbox) -> WooSandboxes {
    let addr = shop.start_https("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let provider = ProviderSandbox::new(Some(PROVIDER_KEY));
    let paddr = provider.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    WooSandboxes { shop, shop_port: addr.port(), provider, provider_url: format!("http://{paddr}/v1") }
}

/// Writes `enrichd.toml` (and `tasks/product_copy.toml`, and the store's certificate) into `dir` for
/// pipeline `catalogue`: bare descriptions selected, the given review policy (a policy name, or the
/// whole review table's body: `policy = "sample_first", sample = 3`) and attempts.
pub fn write_woo_config(
    dir: &Path,
    database_url: &str,
    sb: &WooSandboxes,
    policy: &str,
    max_attempts: u32,
    lease_seconds: f64,
    extra_pipeline: &str,
) -> PathBuf {
    let pem = dir.join("shop.pem");
    std::fs::write(&pem, sb.shop.certificate_pem()).unwrap();
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasks/product_copy.toml"),
        dir.join("tasks/product_copy.toml"),
    )
    .unwrap();
    let text = format!(
        r#"
[database]
url = "{database_url}"
max_connections = 8

[daemon]
lease_seconds = {lease_seconds}
shutdown_grace_seconds = 5
poll_interval_ms = 20
retry_base_ms = 50
retry_max_seconds = 1

[connections.shop]
kind = "woocommerce"
base_url = "https://127.0.0.1:{port}"
consumer_key = "${{WOO_TEST_CK}}"
consumer_secret = "${{WOO_TEST_CS}}"
ca_cert = "{pem}"
timeout_seconds = 10

[providers.sim]
kind = "openai"
base_url = "{provider}"
api_key = "${{WOO_TEST_PROVIDER_KEY}}"
timeout_seconds = 10

[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "product_copy"
provider = "sim"
model = "gpt-4o-mini"
concurrency = 16
max_attempts = {max_attempts}
select = {{ missing = ["description"], fill_all_missing = true }}
review = {{ {review} }}
vars = {{ language = "English", brand_voice = "plain and factual" }}
{extra_pipeline}
"#,
        review = if policy.contains('=') { policy.to_owned() } else { format!("policy = \"{policy}\"") },
        port = sb.shop_port,
        pem = pem.display(),
        provider = sb.provider_url,
    );
    let path = dir.join("enrichd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sandboxes and the engine in-process on `db`.
pub struct Woo {
    pub shop: WooSandbox,
    /// The generated `enrichd.toml`.
    pub config: PathBuf,
    pub engine: Arc<Engine>,
    pub provider: ProviderSandbox,
    _dir: tempfile::TempDir,
}

pub async fn woo(db: &TestDb, shop: WooSandbox, policy: &str, max_attempts: u32) -> Woo {
    woo_with(db, shop, policy, max_attempts, "").await
}

/// [`woo`] with lines added to the pipeline's block.
pub async fn woo_with(db: &TestDb, shop: WooSandbox, policy: &str, max_attempts: u32, extra_pipeline: &str) -> Woo {
    woo_with_task(db, shop, policy, max_attempts, extra_pipeline, None).await
}

/// [`woo_with`], with the pipeline's `product_copy` task read from `task` (a fixture file) instead
/// of the shipped one.
pub async fn woo_with_task(
    db: &TestDb,
    shop: WooSandbox,
    policy: &str,
    max_attempts: u32,
    extra_pipeline: &str,
    task: Option<&Path>,
) -> Woo {
    set_woo_env();
    let sb = woo_sandboxes(shop).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_woo_config(dir.path(), &db.url, &sb, policy, max_attempts, 10.0, extra_pipeline);
    if let Some(task) = task {
        std::fs::copy(task, dir.path().join("tasks/product_copy.toml")).unwrap();
    }
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Woo { shop: sb.shop, config: path, engine, provider: sb.provider, _dir: dir }
}

/// The `select` line [`write_woo_config`] writes.
pub const WOO_SELECT: &str = "select = { missing = [\"description\"], fill_all_missing = true }";

/// [`woo`] with the pipeline selecting records by `select` (a TOML inline table, e.g.
/// `{ min_length = { description = 400 }, add = ["tags"] }`) instead of missing descriptions.
pub async fn woo_selecting(db: &TestDb, shop: WooSandbox, policy: &str, select: &str) -> Woo {
    set_woo_env();
    let sb = woo_sandboxes(shop).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_woo_config(dir.path(), &db.url, &sb, policy, 3, 10.0, "");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(WOO_SELECT), "the woo config's select line moved: {text}");
    std::fs::write(&path, text.replace(WOO_SELECT, &format!("select = {select}"))).unwrap();
    let config = Config::load(&path).unwrap();
    let engine = Arc::new(Engine::build(&config, db.store.clone()));
    Woo { shop: sb.shop, config: path, engine, provider: sb.provider, _dir: dir }
}

/// Works run `run_id` of pipeline `catalogue` until no machine work is left, then drains; panics
/// past `timeout`.
pub async fn work_until_idle(engine: &Arc<Engine>, run_id: i64, timeout: std::time::Duration) -> enrichd::store::Run {
    super::harness::work_run(engine, run_id, timeout, true).await
}

/// A generated hardware catalogue of `products` products (about half without a description,
/// `generate_catalogue` with `seed`) through pipeline `catalogue` with `review` (as [`woo_with`])
/// and the pipeline lines `extra_pipeline`, the provider sandbox writing copy from each product's
/// facts; its first run worked until it waits for review. Returns the catalogue as seeded too.
pub async fn catalogue_waiting_for_review(
    db: &TestDb,
    products: usize,
    seed: u64,
    review: &str,
    extra_pipeline: &str,
) -> (Woo, enrichd::store::Run, Vec<serde_json::Value>) {
    let catalogue = enrichd_woocommerce::sandbox::generate_catalogue(products, seed, 0.5);
    let w = woo_with(db, WooSandbox::with_products(catalogue.clone()), review, 3, extra_pipeline).await;
    w.provider.write_copy(true);
    let run = super::harness::start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, std::time::Duration::from_secs(90)).await;
    (w, run, catalogue)
}

/// The daemon's HTTP server (UI and API) over `w`'s engine with `access`, on a free loopback port:
/// its base URL, and the token that stops it.
pub async fn serve_ui(w: &Woo, access: enrichd::server::Access) -> (String, tokio_util::sync::CancellationToken) {
    let config = Config::load(&w.config).unwrap();
    let site = enrichd::server::Site { access, ..enrichd::server::Site::from_config(&config) };
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _server) = enrichd::server::serve(w.engine.clone(), site, "127.0.0.1:0", stop.clone()).await.unwrap();
    (format!("http://{addr}"), stop)
}

/// A shop run through pipeline `catalogue` until its proposals wait for review, and the review
/// server over it on a free loopback port.
pub struct ServedShop {
    pub w: Woo,
    pub run_id: i64,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Stops the server.
    pub stop: tokio_util::sync::CancellationToken,
}

/// `shop` through pipeline `catalogue` with review policy `all` and the provider sandbox writing
/// copy from each record (as a model would), run until its proposals wait for review; then the
/// server with `access`.
pub async fn serve_for_review(db: &TestDb, shop: WooSandbox, access: enrichd::server::Access) -> ServedShop {
    let w = woo(db, shop, "all", 3).await;
    w.provider.write_copy(true);
    let run = super::harness::start_run(&w.engine).await;
    let run = work_until_idle(&w.engine, run.id, std::time::Duration::from_secs(60)).await;
    assert_eq!(run.status, enrichd::store::RunStatus::AwaitingReview, "{run:?}");
    let (base, stop) = serve_ui(&w, access).await;
    ServedShop { w, run_id: run.id, base, stop }
}
