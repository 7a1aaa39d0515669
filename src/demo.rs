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

/// The ticket triage task shipped in `config/tasks`.
pub const TICKET_TRIAGE_TASK: &str = include_str!("../config/tasks/ticket_triage.toml");

/// The invoice extraction task shipped in `config/tasks`.
pub const INVOICE_EXTRACT_TASK: &str = include_str!("../config/tasks/invoice_extract.toml");

/// Requests a minute the invoices demo's Xero organisation allows (Xero's own is 60, which would
/// make a first look take minutes; the connector paces itself by what the sandbox reports either way).
pub const INVOICES_DEMO_PER_MINUTE: u32 = 600;

/// Seconds between new customer tickets in `enrichd demo helpdesk`.
pub const NEW_TICKET_EVERY: u64 = 20;

/// The helpdesk demo's confidence bar: answers at least this sure are written at once.
pub const HELPDESK_MIN_CONFIDENCE: f64 = 0.8;

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
    let (temp, dir) = working_dir(dir)?;
    let write = |name: &str, text: &str| write_file(&dir, name, text);

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

    let (provider, provider_block, model, label) = model(&dir, local).await?;

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

/// The demo's working folder: `dir` (created), or a temporary one removed when the guard drops.
fn working_dir(dir: Option<&Path>) -> Result<(Option<tempfile::TempDir>, PathBuf), String> {
    Ok(match dir {
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
    })
}

fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// The demo's model: OpenAI gpt-4o-mini when `OPENAI_API_KEY` is set, else the simulated model
/// (started here, about as slow as a small hosted model): the sandbox, the `[providers.model]`
/// block, the model name and how to call it.
async fn model(
    dir: &Path,
    local: SocketAddr,
) -> Result<(Option<ProviderSandbox>, String, &'static str, String), String> {
    Ok(match std::env::var("OPENAI_API_KEY") {
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
            let key = write_file(dir, "model-api-key", "demo-model-key")?;
            let block = format!(
                "kind = \"openai\"\nbase_url = \"http://{addr}/v1\"\napi_key = \"file:{}\"\n[providers.model.prices.\"simulated\"]\ninput = 0.15\ncached_input = 0.075\noutput = 0.60",
                key.display()
            );
            (Some(sim), block, "simulated", "simulated model (no provider account needed)".to_owned())
        }
    })
}

/// What `enrichd demo helpdesk` started; the sandboxes serve as long as this lives.
pub struct HelpdeskDemo {
    pub config: PathBuf,
    pub dir: PathBuf,
    pub account_url: String,
    pub tickets: u64,
    pub untriaged: usize,
    pub model_label: String,
    pub account: crate::cli::ZendeskAccount,
    pub provider: Option<ProviderSandbox>,
    _temp: Option<tempfile::TempDir>,
}

/// Starts a Zendesk sandbox (its clock following the wall clock, a new customer ticket every
/// [`NEW_TICKET_EVERY`] seconds) and the model, and writes a config whose `triage` pipeline runs every
/// minute on what changed since the last tick, writing confident answers at once.
pub async fn prepare_helpdesk(tickets: u64, dir: Option<&Path>, bind: &str) -> Result<HelpdeskDemo, String> {
    let (temp, dir) = working_dir(dir)?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let account = crate::cli::start_zendesk_sandbox(tickets, 0.4, 2026, local, 0.0, NEW_TICKET_EVERY)
        .await
        .map_err(|e| format!("starting the Zendesk sandbox: {e}"))?;
    // The generated tickets are older than the export's one-minute horizon from the start.
    account.sandbox.advance(120);
    let untriaged = account.untriaged();
    let token = write_file(&dir, "zendesk-api-token", enrichd_zendesk::sandbox::API_TOKEN)?;
    std::fs::create_dir_all(dir.join("tasks")).map_err(|e| format!("creating {}/tasks: {e}", dir.display()))?;
    write_file(&dir, "tasks/ticket_triage.toml", TICKET_TRIAGE_TASK)?;
    let (provider, provider_block, model, label) = model(&dir, local).await?;
    if let Some(sim) = &provider {
        sim.classify(Some(triage_classifier()));
    }
    let config = format!(
        r#"# Written by `enrichd demo helpdesk`. Everything here is local; delete the folder to start over.
[database]
url = "sqlite://{db}"

[server]
bind = "{bind}"

[daemon]
poll_interval_ms = 200

[connections.support]
kind = "zendesk"
base_url = "{account}"
email = "{email}"
api_token = "file:{token}"

[providers.model]
{provider_block}

[pipelines.triage]
connection = "support"
entity = "tickets"
task = "ticket_triage"
provider = "model"
model = "{model}"
concurrency = 4
# Every minute, only what changed since the last tick (the Zendesk export's cursor is kept for the
# pipeline); a tick with no new ticket makes no run.
schedule = "* * * * *"
incremental = true
write_linger_ms = 500
# Tickets without a category are candidates; each also gets whatever else the task fills that it is
# missing; tags from the allow-list are added to the agent's tags, never replacing them.
select = {{ missing = ["custom.Category"], fill_all_missing = true, add = ["tags"] }}
allowed = {{ tags = ["refund", "bug", "delivery", "login", "feature_request"] }}
# Confident answers are written at once; the rest wait in the review queue.
review = {{ policy = "auto_approve", confidence_field = "confidence", min_confidence = {min_confidence} }}
"#,
        db = dir.join("enrichd.db").display(),
        account = account.base_url,
        email = enrichd_zendesk::sandbox::EMAIL,
        token = token.display(),
        min_confidence = HELPDESK_MIN_CONFIDENCE,
    );
    let config = write_file(&dir, "enrichd.toml", &config)?;
    Ok(HelpdeskDemo {
        config,
        dir,
        account_url: account.base_url.clone(),
        tickets,
        untriaged,
        model_label: label,
        account,
        provider,
        _temp: temp,
    })
}

/// How the simulated model triages the sandbox's tickets: it recognises each sample subject's
/// category, and is unsure (and wrong) on about one ticket in five, which then waits for review.
fn triage_classifier() -> crate::sandbox::provider::classify::Classifier {
    use crate::sandbox::provider::classify::{Classifier, ErrorRule};
    use enrichd_zendesk::sandbox::{CATEGORIES, sample};
    let languages = 4;
    let clues = (0..languages * CATEGORIES.len() as u64)
        .map(|n| {
            let (subject, _) = sample(n);
            let category = CATEGORIES[((n / languages) % CATEGORIES.len() as u64) as usize].1;
            (subject.to_owned(), serde_json::json!(category))
        })
        .collect();
    Classifier {
        clues: [("category".to_owned(), clues)].into(),
        confidence_property: "confidence".into(),
        confidence: 0.93,
        rules: vec![ErrorRule {
            modulus: 5,
            buckets: vec![0],
            answers: [("category".to_owned(), serde_json::json!("feedback"))].into(),
            confidence: 0.55,
        }],
    }
}

/// What `enrichd demo invoices` started; the sandboxes serve as long as this lives.
pub struct InvoicesDemo {
    pub config: PathBuf,
    pub dir: PathBuf,
    pub books_url: String,
    pub bills: usize,
    pub candidates: usize,
    pub model_label: String,
    pub books: enrichd_xero::sandbox::XeroSandbox,
    pub provider: Option<ProviderSandbox>,
    _temp: Option<tempfile::TempDir>,
}

/// Starts a Xero organisation (draft bills from its bills inbox, each with a generated PDF or scan:
/// several layouts and currencies, credit notes, duplicates of bills already in the books, a supplier
/// not yet a contact) reached as a Custom Connection, and the model; writes a config whose `bills`
/// pipeline extracts every draft bill's document, writes the clean ones at once and holds the rest
/// (a check failed, a new supplier, a duplicate) for review.
pub async fn prepare_invoices(bills: usize, dir: Option<&Path>, bind: &str) -> Result<InvoicesDemo, String> {
    use enrichd_xero::sandbox::{CUSTOM_CLIENT_ID, CUSTOM_CLIENT_SECRET, Limits, XeroSandbox};
    let (temp, dir) = working_dir(dir)?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let books = XeroSandbox::new(bills, 2026);
    books.set_limits(Limits { per_minute: INVOICES_DEMO_PER_MINUTE, ..Limits::default() });
    let addr = books.start(local).await.map_err(|e| format!("starting the Xero sandbox: {e}"))?;
    let candidates = books.candidates().len();
    let id = write_file(&dir, "xero-client-id", CUSTOM_CLIENT_ID)?;
    let secret = write_file(&dir, "xero-client-secret", CUSTOM_CLIENT_SECRET)?;
    std::fs::create_dir_all(dir.join("tasks")).map_err(|e| format!("creating {}/tasks: {e}", dir.display()))?;
    write_file(&dir, "tasks/invoice_extract.toml", INVOICE_EXTRACT_TASK)?;
    let (provider, provider_block, model, label) = model(&dir, local).await?;
    if let Some(sim) = &provider {
        // A model that misreads now and then, so some bills fail their checks and wait for a person.
        sim.misread(0.1);
    }
    let config = format!(
        r#"# Written by `enrichd demo invoices`. Everything here is local; delete the folder to start over.
[database]
url = "sqlite://{db}"

[server]
bind = "{bind}"

[daemon]
poll_interval_ms = 200

# A Xero organisation reached as a Custom Connection (client credentials: no `enrichd connect`).
[connections.books]
kind = "xero"
base_url = "http://{addr}"
custom_connection = true
client_id = "file:{id}"
client_secret = "file:{secret}"

[providers.model]
{provider_block}

[pipelines.bills]
connection = "books"
entity = "bills"
task = "invoice_extract"
provider = "model"
model = "{model}"
concurrency = 4
# Draft bills with a document and no invoice number yet; each gets every field the task fills that
# it is missing, and the document's own supplier, date, currency, amounts basis, lines and totals in
# place of what the bills inbox filled in (the base currency, "exclusive", no lines). Bills stay
# DRAFT: a person approves them in Xero.
select = {{ missing = ["invoice_number"], fill_all_missing = true, add = ["supplier.name", "date", "currency", "amounts_are", "line_items", "sub_total", "total_tax", "total"] }}
# Bills whose checks all pass are written at once; a warning (numbers that do not add up, a supplier
# not in the books, a credit note, a currency the organisation does not use) or a duplicate waits.
review = {{ policy = "auto_approve" }}
"#,
        db = dir.join("enrichd.db").display(),
        id = id.display(),
        secret = secret.display(),
    );
    let config = write_file(&dir, "enrichd.toml", &config)?;
    Ok(InvoicesDemo {
        config,
        dir,
        books_url: format!("http://{addr}"),
        bills,
        candidates,
        model_label: label,
        books,
        provider,
        _temp: temp,
    })
}
