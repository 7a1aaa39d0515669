//! `enrichd demo`: everything on one machine, no accounts. A WooCommerce sandbox (HTTPS, its own
//! certificate) filled with a generated hardware catalogue, the simulated model (or OpenAI when
//! `OPENAI_API_KEY` is set), an SQLite database and a config in a working folder, and the shipped
//! `product_copy` task; the caller runs the daemon on that config with the catalogue run started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use enrichd_woocommerce::sandbox::{CONSUMER_KEY, CONSUMER_SECRET, WooSandbox, generate_catalogue};

use crate::sandbox::provider::{Faults, ProviderSandbox};

/// Proposals of the demo's run that wait for review before the rest of the run is held.
pub const DEMO_SAMPLE: u64 = 20;

/// The product copy task shipped in `config/tasks`.
pub const PRODUCT_COPY_TASK: &str = include_str!("../config/tasks/product_copy.toml");

/// What the demo started; the sandboxes serve as long as this lives.
pub struct Demo {
    pub config: PathBuf,
    pub dir: PathBuf,
    pub shop_url: String,
    pub products: usize,
    pub bare: usize,
    /// "simulated model" or the real provider's name.
    pub model_label: String,
    pub shop: WooSandbox,
    pub provider: Option<ProviderSandbox>,
    /// Removes the working folder on drop when it was a temporary one.
    _temp: Option<tempfile::TempDir>,
}

/// Starts the sandboxes and writes the demo's config. `dir`: keep everything there (else a
/// temporary folder, removed on exit); `bind`: the daemon's address.
pub async fn prepare(products: usize, dir: Option<&Path>, bind: &str) -> Result<Demo, String> {
    let (temp, dir) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("--dir {}: {e}", d.display()))?;
            // Absolute, so the printed commands and the config's paths work from any folder.
            let d = std::path::absolute(d).map_err(|e| format!("--dir {}: {e}", d.display()))?;
            (None, d)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("enrichd-demo-")
                .tempdir()
                .map_err(|e| format!("creating a temporary folder: {e}"))?;
            let path = t.path().to_path_buf();
            (Some(t), path)
        }
    };
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    };

    let catalogue = generate_catalogue(products, 2026, 0.4);
    let bare = catalogue
        .iter()
        .filter(|p| p.get("description").and_then(|d| d.as_str()).is_none_or(|d| d.trim().is_empty()))
        .count();
    let shop = WooSandbox::with_products(catalogue);
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let shop_addr = shop.start_https(local).await.map_err(|e| format!("starting the WooCommerce sandbox: {e}"))?;
    let pem = write("shop-certificate.pem", &shop.certificate_pem())?;
    let ck = write("woocommerce-consumer-key", CONSUMER_KEY)?;
    let cs = write("woocommerce-consumer-secret", CONSUMER_SECRET)?;
    std::fs::create_dir_all(dir.join("tasks")).map_err(|e| format!("creating {}/tasks: {e}", dir.display()))?;
    write("tasks/product_copy.toml", PRODUCT_COPY_TASK)?;

    let (provider, provider_block, model, label) = match std::env::var("OPENAI_API_KEY") {
        Ok(key) if !key.trim().is_empty() => (
            None,
            "kind = \"openai\"\napi_key = \"${OPENAI_API_KEY}\"\nrequests_per_minute = 500".to_owned(),
            "gpt-4o-mini",
            "OpenAI gpt-4o-mini (OPENAI_API_KEY is set)".to_owned(),
        ),
        _ => {
            let sim = ProviderSandbox::new(Some("demo-model-key"));
            sim.write_copy(true);
            // About what a small hosted model takes per product.
            sim.set_faults(Faults { latency: Duration::from_millis(400), ..Default::default() });
            let addr = sim.start(local).await.map_err(|e| format!("starting the simulated model: {e}"))?;
            let key = write("model-api-key", "demo-model-key")?;
            let block = format!(
                "kind = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_key = \"file:{}\"\n[providers.model.prices.\"simulated\"]\ninput = 0.15\ncached_input = 0.075\noutput = 0.60",
                key.display()
            );
            (Some(sim), block, "simulated", "simulated model (no provider account needed)".to_owned())
        }
    };

    let config = format!(
        r#"# Written by `enrichd demo`. Everything here is local; delete the folder to start over.
[database]
url = "sqlite://{db}"

[server]
bind = "{bind}"

[daemon]
poll_interval_ms = 200

[connections.shop]
kind = "woocommerce"
base_url = "https://127.0.0.1:{shop_port}"
consumer_key = "file:{ck}"
consumer_secret = "file:{cs}"
ca_cert = "{pem}"

[providers.model]
{provider_block}

[pipelines.catalogue]
connection = "shop"
entity = "product"
task = "product_copy"
provider = "model"
model = "{model}"
concurrency = 8
# Products missing a description are candidates; fill_all_missing: each also gets whatever else the
# task fills that it is missing (short description, SEO title and meta description, alt text, tags).
select = {{ missing = ["description"], fill_all_missing = true }}
review = {{ policy = "sample_first", sample = {sample} }}
vars = {{ language = "English", brand_voice = "plain, factual and helpful", weight_unit = "kg", dimension_unit = "cm" }}
"#,
        db = dir.join("enrichd.db").display(),
        sample = DEMO_SAMPLE,
        shop_port = shop_addr.port(),
        ck = ck.display(),
        cs = cs.display(),
        pem = pem.display(),
    );
    let config = write("enrichd.toml", &config)?;
    Ok(Demo {
        config,
        dir,
        shop_url: format!("https://{shop_addr}"),
        products,
        bare,
        model_label: label,
        shop,
        provider,
        _temp: temp,
    })
}
