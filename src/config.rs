//! Configuration: one TOML file (see `config/enrichd.example.toml`), plus task files in a `tasks/`
//! folder beside it. Unknown keys are errors, and every error names its key path
//! (`pipelines.catalogue.concurrency: invalid type: string "8", expected usize`).
//!
//! Secrets are never written in the file: a secret field holds `"${ENV_VAR}"` or `"file:/path"`.
//! Loading checks only that form; [`Config::resolve_secrets`] reads them, and only the commands that
//! connect to a shop, a model or the UI's sign-in call it, so `status` and `review list` need none.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use enrichd_connector::ConnectionSettings as _;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// A configuration error, with the file and key path it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path (`pipelines.catalogue.review.policy`), or `(file)` for syntax errors.
    pub path: String,
    pub message: String,
}

/// A secret: after [`Config::resolve_secrets`], its value from the environment or a file; before,
/// the reference the config gives (`${ENV_VAR}` or `file:/path`), which is not a credential.
#[derive(Clone)]
pub struct Secret(pub SecretString);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if (text.starts_with("${") && text.ends_with('}')) || text.starts_with("file:") {
            return Ok(Secret(text.into()));
        }
        Err(D::Error::custom(
            "secrets are not written in the config file: use \"${ENV_VAR}\" or \"file:/path/to/secret\"",
        ))
    }
}

impl Secret {
    /// Replaces the reference with the value it names.
    fn resolve(&mut self) -> Result<(), String> {
        let value = resolve_secret(secrecy::ExposeSecret::expose_secret(&self.0))?;
        self.0 = value.into();
        Ok(())
    }
}

fn resolve_secret(text: &str) -> Result<String, String> {
    if let Some(var) = text.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        };
    }
    if let Some(path) = text.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read secret file {path}: {e}"));
    }
    Err("secrets are not written in the config file: use \"${ENV_VAR}\" or \"file:/path/to/secret\"".into())
}

/// The whole configuration.
#[derive(Debug)]
pub struct Config {
    /// Where it was loaded from (for messages and relative paths).
    pub file: PathBuf,
    pub database: DatabaseConfig,
    pub server: ServerConfig,
    pub daemon: DaemonConfig,
    pub connections: BTreeMap<String, ConnectionConfig>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub tasks: BTreeMap<String, TaskConfig>,
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// `[notifications]`: webhooks about runs (`crate::notify`).
    pub notifications: crate::notify::NotificationsConfig,
    /// The file each task came from: `tasks/NAME.toml` beside the config, or the config itself.
    pub task_files: BTreeMap<String, PathBuf>,
    /// Whether [`Config::resolve_secrets`] has read the secrets.
    secrets_resolved: bool,
    /// Whether `server.auth`'s secrets have been read (by either resolve call).
    server_secrets_resolved: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default)]
    connections: BTreeMap<String, toml::Table>,
    #[serde(default)]
    providers: BTreeMap<String, toml::Table>,
    #[serde(default)]
    tasks: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pipelines: BTreeMap<String, toml::Table>,
    #[serde(default)]
    notifications: crate::notify::NotificationsConfig,
}

/// `[database]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://enrichd.db` (the default; a relative path is relative to the working directory) or
    /// `postgres://user@host/db`.
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Encrypts credentials enrichd stores (rotating OAuth2 tokens). Needed only by connections that
    /// store tokens.
    pub secret_key: Option<Secret>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_database_url(), max_connections: default_max_connections(), secret_key: None }
    }
}

fn default_database_url() -> String {
    "sqlite://enrichd.db".into()
}
fn default_max_connections() -> u32 {
    8
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP server (the review UI, `/healthz`, `/api/...`). Loopback by default; any
    /// other address is refused unless `[server.auth]` is configured.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Who may use the UI and the API. Without it the server is open to this machine only.
    pub auth: Option<ServerAuthConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { bind: default_bind(), auth: None }
    }
}

/// `[server.auth]`: at least one of `password` and `token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAuthConfig {
    /// Shared reviewer password: reviewers sign in with their name (which goes into the audit trail)
    /// and this password, and get a session cookie.
    pub password: Option<Secret>,
    /// Bearer token for API clients (`Authorization: Bearer …`); they act as `api`.
    pub token: Option<Secret>,
    /// Hours a session lasts without use.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

fn default_session_hours() -> u64 {
    12
}

fn default_bind() -> String {
    "127.0.0.1:8686".into()
}

/// `[daemon]`: how workers hold and give up work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// How long a claimed item stays leased without a heartbeat. A daemon that dies leaves leases
    /// that expire after this; the work is then re-queued.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: f64,
    /// On SIGTERM/SIGINT, how long in-flight work may take to finish before its leases are released.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: f64,
    /// How often idle workers look for new work.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First retry delay of a failed item; doubles per attempt, with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_retry_max_seconds")]
    pub retry_max_seconds: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            lease_seconds: default_lease_seconds(),
            shutdown_grace_seconds: default_shutdown_grace_seconds(),
            poll_interval_ms: default_poll_interval_ms(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_seconds: default_retry_max_seconds(),
        }
    }
}

fn default_lease_seconds() -> f64 {
    60.0
}
fn default_shutdown_grace_seconds() -> f64 {
    20.0
}
fn default_poll_interval_ms() -> u64 {
    500
}
fn default_retry_base_ms() -> u64 {
    2_000
}
fn default_retry_max_seconds() -> u64 {
    600
}

/// `[connections.<name>]`, by `kind`.
#[derive(Debug)]
pub enum ConnectionConfig {
    TestStore(TestStoreConnection),
    WooCommerce(WooCommerceConnection),
    /// Settings owned and validated by the connector crates (`enrichd-zendesk`, ...).
    Zendesk(Box<enrichd_zendesk::ZendeskConfig>),
    Freshdesk(Box<enrichd_freshdesk::FreshdeskConfig>),
    HelpScout(Box<enrichd_helpscout::HelpScoutConfig>),
    /// OAuth2 connections: tokens come from `enrichd connect` and live encrypted in the database.
    Xero(Box<enrichd_xero::XeroConfig>),
    QuickBooks(Box<QuickBooksConnection>),
}

/// `kind = "quickbooks"`: the settings `enrichd-quickbooks` owns, plus `access_token`, a ready
/// access token (a secret reference) for a quick start without `enrichd connect` (the sandbox
/// prints one; Intuit's OAuth Playground gives one that lasts an hour).
#[derive(Debug)]
pub struct QuickBooksConnection {
    pub settings: enrichd_quickbooks::QuickBooksConfig,
    pub access_token: Option<SecretString>,
}

impl ConnectionConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectionConfig::TestStore(_) => "teststore",
            ConnectionConfig::WooCommerce(_) => "woocommerce",
            ConnectionConfig::Zendesk(_) => "zendesk",
            ConnectionConfig::Freshdesk(_) => "freshdesk",
            ConnectionConfig::HelpScout(_) => "helpscout",
            ConnectionConfig::Xero(_) => "xero",
            ConnectionConfig::QuickBooks(_) => "quickbooks",
        }
    }
}

/// `kind = "woocommerce"`: a WooCommerce store's `wc/v3` REST API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WooCommerceConnection {
    /// The site's root URL (`https://shop.example.com`).
    pub base_url: String,
    pub consumer_key: Secret,
    pub consumer_secret: Secret,
    /// `auto` (Basic over HTTPS, OAuth 1.0a over HTTP), `basic`, `query` or `oauth1`.
    #[serde(default)]
    pub auth: WooAuth,
    /// Where SEO titles and meta descriptions live: `auto` (detected from the products' meta keys),
    /// `yoast`, `rank_math` or `none`.
    #[serde(default)]
    pub seo: WooSeo,
    /// A PEM file with a certificate to trust besides the system roots (a staging site's own CA).
    pub ca_cert: Option<PathBuf>,
    /// List only products with this status (`publish`, `draft`, ...); default: every status but trash.
    pub status: Option<String>,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WooAuth {
    #[default]
    Auto,
    Basic,
    Query,
    #[serde(rename = "oauth1")]
    OAuth1,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WooSeo {
    #[default]
    Auto,
    Yoast,
    RankMath,
    None,
}

impl WooCommerceConnection {
    /// The connector's options; reads `ca_cert`.
    pub fn options(&self) -> Result<enrichd_woocommerce::Options, String> {
        use enrichd_woocommerce::{Auth, Seo};
        let ca_cert_pem = match &self.ca_cert {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok(enrichd_woocommerce::Options {
            base_url: self.base_url.clone(),
            consumer_key: self.consumer_key.0.clone(),
            consumer_secret: self.consumer_secret.0.clone(),
            auth: match self.auth {
                WooAuth::Auto => Auth::Auto,
                WooAuth::Basic => Auth::Basic,
                WooAuth::Query => Auth::Query,
                WooAuth::OAuth1 => Auth::OAuth1,
            },
            seo: match self.seo {
                WooSeo::Auto => Seo::Auto,
                WooSeo::Yoast => Seo::Yoast,
                WooSeo::RankMath => Seo::RankMath,
                WooSeo::None => Seo::None,
            },
            timeout: std::time::Duration::from_secs_f64(self.timeout_seconds),
            ca_cert_pem,
            status: self.status.clone(),
        })
    }
}

/// `kind = "teststore"`: enrichd's own small record store (tests, demos, benchmarks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestStoreConnection {
    pub base_url: String,
    pub token: Secret,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
}

fn default_timeout_seconds() -> f64 {
    60.0
}

/// `[providers.<name>]`, by `kind`.
#[derive(Debug)]
pub enum ProviderConfig {
    OpenAi(OpenAiProvider),
    Anthropic(AnthropicProvider),
    Gemini(GeminiProvider),
}

impl ProviderConfig {
    /// `prices."<model>"` of this provider.
    pub fn prices(&self) -> &BTreeMap<String, PriceConfig> {
        match self {
            ProviderConfig::OpenAi(c) => &c.prices,
            ProviderConfig::Anthropic(c) => &c.prices,
            ProviderConfig::Gemini(c) => &c.prices,
        }
    }

    /// Seconds between polls of a submitted batch.
    pub fn batch_poll_seconds(&self) -> f64 {
        match self {
            ProviderConfig::OpenAi(c) => c.batch_poll_seconds,
            ProviderConfig::Anthropic(c) => c.batch_poll_seconds,
            ProviderConfig::Gemini(c) => c.batch_poll_seconds,
        }
    }
}

/// `kind = "anthropic"`: the Anthropic Messages API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicProvider {
    /// Without `/v1`.
    #[serde(default = "default_anthropic_url")]
    pub base_url: String,
    pub api_key: Secret,
    /// The `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub version: String,
    /// How the answer's schema is enforced: `tool` (a forced tool call; every model) or
    /// `output_config` (structured outputs; newer models).
    #[serde(default)]
    pub structured_output: AnthropicStructuredOutput,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
    /// Requests per minute allowed on this credential (split between daemons sharing the database).
    /// Without it the limit is learned from the provider's rate-limit headers.
    pub requests_per_minute: Option<f64>,
    /// Tokens per minute allowed on this credential (estimated before sending: prompt and answer).
    pub tokens_per_minute: Option<f64>,
    /// Override the provider's batch limits (requests per batch, bytes per batch).
    pub batch_max_requests: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    /// Seconds between status polls of a submitted batch.
    #[serde(default = "default_batch_poll_seconds")]
    pub batch_poll_seconds: f64,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
}

/// How Anthropic is made to answer in the task's schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnthropicStructuredOutput {
    #[default]
    Tool,
    OutputConfig,
}

/// `kind = "gemini"`: the Google Gemini API (Generative Language API, `v1beta`), realtime
/// `generateContent` and batch mode. The key travels in the `x-goog-api-key` header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiProvider {
    /// Without `/v1beta`.
    #[serde(default = "default_gemini_url")]
    pub base_url: String,
    pub api_key: Secret,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
    /// Thinking tokens a 2.5 model may spend before answering (`0` turns thinking off on Flash and
    /// Flash-Lite). Thinking is billed as output and counts against `max_output_tokens`; without
    /// this the model decides.
    pub thinking_budget: Option<i32>,
    /// Requests per minute allowed on this credential (split between daemons sharing the database).
    /// Gemini sends no rate-limit headers: without it only 429s slow the daemon down.
    pub requests_per_minute: Option<f64>,
    /// Tokens per minute allowed on this credential (estimated before sending: prompt and answer).
    pub tokens_per_minute: Option<f64>,
    /// Override the batch limits (requests per batch, bytes per batch; at most 2 GB, the input file
    /// limit).
    pub batch_max_requests: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    /// Batches up to this size go inline in the create request; larger ones are uploaded as a JSONL
    /// file first. At most 20 MB, Google's limit for inline batches.
    pub batch_inline_max_bytes: Option<usize>,
    /// A `generateContent` request whose documents would take it past this size sends the largest
    /// of them through the File API instead of inline. At most 20 MB, Google's inline limit.
    pub inline_max_bytes: Option<usize>,
    /// Seconds between status polls of a submitted batch.
    #[serde(default = "default_batch_poll_seconds")]
    pub batch_poll_seconds: f64,
    /// Prices per model in USD per million tokens; override or extend the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
}

fn default_gemini_url() -> String {
    "https://generativelanguage.googleapis.com".into()
}

fn default_batch_poll_seconds() -> f64 {
    30.0
}

/// The header an API key travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyHeader {
    Bearer,
    ApiKey,
}

fn default_anthropic_url() -> String {
    "https://api.anthropic.com".into()
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}

/// `kind = "openai"`: OpenAI Chat Completions or any OpenAI-compatible server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProvider {
    /// Up to and including `/v1`, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Optional for local servers.
    pub api_key: Option<Secret>,
    /// Azure OpenAI's classic URLs: with `api_version` set, `base_url` is the resource endpoint
    /// (`https://RESOURCE.openai.azure.com`), requests go to
    /// `/openai/deployments/{model}/chat/completions?api-version=…` (the pipeline's `model` is the
    /// deployment name) and the key travels in an `api-key` header. Azure's `/openai/v1` URLs need no
    /// `api_version`: set `base_url` to `https://RESOURCE.openai.azure.com/openai/v1` and `auth = "api-key"`.
    pub api_version: Option<String>,
    /// How the key is sent: `bearer` (`Authorization: Bearer`, the default) or `api-key` (Azure;
    /// the default when `api_version` is set).
    pub auth: Option<KeyHeader>,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
    /// Requests per minute allowed on this credential (split between daemons sharing the database).
    /// Without it the limit is learned from the provider's rate-limit headers.
    pub requests_per_minute: Option<f64>,
    /// Tokens per minute allowed on this credential (estimated before sending: prompt and answer).
    pub tokens_per_minute: Option<f64>,
    /// Override the provider's batch limits (requests per batch, bytes per batch).
    pub batch_max_requests: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    /// Seconds between status polls of a submitted batch.
    #[serde(default = "default_batch_poll_seconds")]
    pub batch_poll_seconds: f64,
    /// Prices per model in USD per million tokens; override or extend the built-in table.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// How documents (a task's PDFs and images) reach the model: `native` (the default) sends them
    /// as Chat Completions `file` and `image_url` parts; `text` is for servers without document
    /// input (llama-server, most local models): a PDF goes as its text layer, extracted locally,
    /// and an image or a scan without one is refused for the item ("needs a model that reads images").
    #[serde(default)]
    pub documents: DocumentInput,
}

/// `[providers.<name>] documents`: how an OpenAI-kind server takes documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentInput {
    #[default]
    Native,
    Text,
}

/// A model's price, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens; the input price when absent.
    pub cached_input: Option<f64>,
}

/// `[tasks.<name>]` or `tasks/<name>.toml`: what the model is asked to do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Bump when the task's meaning changes; enrichd also folds a hash of the prompt, schema and
    /// mapping into the version, so an edited prompt never reuses old answers.
    #[serde(default = "default_task_version")]
    pub version: String,
    pub description: Option<String>,
    /// System message (minijinja template).
    pub system: Option<String>,
    /// User message (minijinja template). `record.id` and `record.fields.<name>` are available; the
    /// record itself is appended fenced as data unless the template places `{{ record_data }}`.
    pub prompt: String,
    /// JSON Schema of the model's answer (an object).
    pub output_schema: serde_json::Value,
    /// Answer property → record field it fills. Only these fields can ever be written.
    pub fields: BTreeMap<String, String>,
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    pub temperature: Option<f32>,
    /// Records per model request. Above 1, records are packed into one prompt with their ids and
    /// the answer is an `items` list mapped back by id (`max_output_tokens` is then per record).
    #[serde(default = "default_items_per_request")]
    pub items_per_request: u32,
    /// Answer properties that hold HTML. They are cleaned with an allow-list fit for product copy
    /// (paragraphs, lists, emphasis, headings, tables, links) before they are proposed, so a
    /// reviewer approves exactly what will be written.
    #[serde(default)]
    pub html: Vec<String>,
    /// Checks on answer properties (`seo_title = { max_chars = 60 }`). An answer that fails one is
    /// still proposed, with a warning a reviewer sees; auto-approval holds it for review.
    #[serde(default)]
    pub checks: BTreeMap<String, FieldCheck>,
    /// Names people read for fields on the review pages (`seo_description = "Meta description"`),
    /// keyed by answer property (as `checks` is) or by record field (for the record as pulled).
    /// Without one, a filled field shows its property's `title` from `output_schema`, else its
    /// name, humanised.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `[tasks.<name>.rules.<rule>]`: checks across answer properties, with numbers (lines add up
    /// to the subtotal, a date not before another, a currency the organisation uses, a value the
    /// document's text holds). A rule that fails is a warning on the proposal, named by the rule;
    /// auto-approval holds it for review. See [`RuleConfig`].
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
    /// `[tasks.<name>.look_up]`: look the answer up in the organisation's own data on the platform
    /// (the existing supplier, bills it would duplicate, the account code the supplier's bills use),
    /// for connections that can (Xero, QuickBooks). See [`LookUpConfig`].
    pub look_up: Option<LookUpConfig>,
    /// `[tasks.<name>.eval]`: how `enrichd eval` compares answers with the values people wrote.
    #[serde(default)]
    pub eval: EvalConfig,
    /// Documents the model reads beside the record: `"attachments"` sends the record's attachments
    /// (fetched once per item through the connector and kept in the database). Unset: none.
    pub documents: Option<DocumentSource>,
    /// At most this many of the record's attachments are sent, in the platform's order.
    #[serde(default = "default_max_documents")]
    pub max_documents: u32,
    /// The attachment media types read (`application/pdf`, `image/png`, `image/jpeg`); others are
    /// passed over.
    #[serde(default = "default_document_types")]
    pub document_types: Vec<String>,
}

/// One rule of `[tasks.<name>.rules.<rule>]`: exactly one kind, given by its key.
///
/// - `sum = ["subtotal", "total_tax"]` (or one `list[].key` path) with `equals = "total"`: the
///   values add up to `equals` within `tolerance` per value added (default 0.01).
/// - `date = "due_date"` with `not_before = "issue_date"`: the first date is not before the second.
/// - `currency = "currency"`: an ISO 4217 code, and one the organisation uses when the connection
///   says which.
/// - `tax_rate = "line_items[].tax_rate"`: each rate (percent) is one of the organisation's.
/// - `property = "document_type"` with `is = "invoice"` (or a list): the answer has that value.
/// - `in_document = ["total", "invoice_number"]`: each value appears in the document's text layer
///   (numbers in any common format: `1,234.50`, `1.234,50`, `1234.5`).
///
/// Paths name answer properties; `list[].key` reads `key` of each element of the list `list`.
/// `when = { amounts_are = "inclusive" }` applies the rule only to answers with those values.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub sum: Option<OneOrMany>,
    pub equals: Option<String>,
    pub tolerance: Option<f64>,
    pub date: Option<String>,
    pub not_before: Option<String>,
    pub currency: Option<String>,
    pub tax_rate: Option<String>,
    pub property: Option<String>,
    pub is: Option<serde_json::Value>,
    pub in_document: Option<OneOrMany>,
    /// Answer property → the value (or list of values) it must have for the rule to apply.
    #[serde(default)]
    pub when: BTreeMap<String, serde_json::Value>,
}

/// A path, or a list of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[tasks.<name>.look_up]`: which answer property feeds each part of the look-up, and where its
/// findings go. Every key is optional; name at least one of the first five.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LookUpConfig {
    pub supplier_name: Option<String>,
    pub supplier_tax_number: Option<String>,
    pub invoice_number: Option<String>,
    pub total: Option<String>,
    /// The issue date (`YYYY-MM-DD`).
    pub date: Option<String>,
    /// The record field that takes the matched supplier's id (`supplier.id`). The record fields
    /// filled from `supplier_name` and `supplier_tax_number` are then not written: the bill points
    /// at the existing supplier instead of naming a new one.
    pub supplier_id: Option<String>,
    /// The answer property holding line items, whose `account_code` (when the document gave none)
    /// is filled with the one the supplier's recent bills use, marked as suggested.
    pub line_items: Option<String>,
    /// The key of a line item's account code.
    #[serde(default = "default_account_code")]
    pub account_code: String,
}

fn default_account_code() -> String {
    "account_code".into()
}

/// `[tasks.<name>.eval]`: how `enrichd eval` compares.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default)]
    pub compare: EvalCompare,
    /// How far apart two numbers may be and still be the same value (`compare = "exact"`).
    #[serde(default = "default_eval_tolerance")]
    pub tolerance: f64,
}

fn default_eval_tolerance() -> f64 {
    0.01
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { compare: EvalCompare::default(), tolerance: default_eval_tolerance() }
    }
}

/// `classes` (the default): enums and short values as classes, with precision, recall and a
/// confusion matrix, for classification tasks. `exact`: every field value by value, for
/// extraction tasks — numbers within `tolerance`, text trimmed with case and runs of whitespace
/// ignored, dates exactly, lists of objects position by position.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EvalCompare {
    #[default]
    Classes,
    Exact,
}

/// `[tasks.<name>] documents`: where a task's documents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentSource {
    /// The record's attachments.
    Attachments,
}

fn default_max_documents() -> u32 {
    1
}

fn default_document_types() -> Vec<String> {
    crate::document::MEDIA_TYPES.iter().map(|t| t.to_string()).collect()
}

/// `[tasks.<name>.checks.<property>]`: bounds a proposed value should meet. Text is measured in
/// visible characters (HTML tags not counted); lists and objects by their number of entries.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldCheck {
    pub min_chars: Option<usize>,
    pub max_chars: Option<usize>,
    pub min_items: Option<usize>,
    pub max_items: Option<usize>,
}

fn default_items_per_request() -> u32 {
    1
}

fn default_task_version() -> String {
    "1".into()
}
fn default_max_output_tokens() -> u32 {
    1024
}

/// `[pipelines.<name>]`: which records, which task, which model, how reviewed, when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub connection: String,
    /// The platform entity (`product`, `ticket`, `bill`).
    pub entity: String,
    pub task: String,
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub mode: Mode,
    pub select: Selector,
    #[serde(default)]
    pub review: ReviewConfig,
    /// Cron expression (5 fields, or 6 with seconds first), in UTC. No schedule: runs only on demand.
    pub schedule: Option<String>,
    /// Model requests in flight at once for this pipeline, per daemon.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts per item (enrichment and write-back each) before it is `dead`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Stop claiming new work once a run has spent this much.
    pub budget_usd: Option<f64>,
    /// Pause a run when more than this share (0.0–1.0) of its last `error_window` enrichment
    /// outcomes failed, instead of spending the budget on a broken provider or task. `1.0` never
    /// pauses. Resume with `enrichd resume RUN`, the API or the run page.
    #[serde(default = "default_pause_on_error_rate")]
    pub pause_on_error_rate: f64,
    /// Enrichment outcomes (proposals and dead items, most recent first) the error rate is taken over.
    #[serde(default = "default_error_window")]
    pub error_window: u32,
    /// Records per listing page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How long approved items may wait for a write batch to fill (up to the platform's maximum,
    /// WooCommerce 100) while more of the run is still being enriched, in milliseconds. No item
    /// waits longer than this; `0` writes whatever is approved at once.
    #[serde(default = "default_write_linger_ms")]
    pub write_linger_ms: u64,
    /// Values the task's templates see as `vars.<name>` (store language, brand voice, ...).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Read only records modified since the previous finished run started (WooCommerce
    /// `modified_after`), instead of every record each run.
    #[serde(default)]
    pub incremental: bool,
    /// Record field → the values it may take (an allow-list of tags), for fields whose values the
    /// platform does not list itself: the task's answer must choose among them (JSON Schema
    /// `enum`), and templates see them as `allowed["<field>"]`. Values the platform lists (a
    /// dropdown's options) take precedence.
    #[serde(default)]
    pub allowed: BTreeMap<String, Vec<String>>,
    /// `[pipelines.<name>.webhook]`: take the platform's own signed webhooks at
    /// `POST /hooks/<name>` and enrich the records they name at once (the schedule stays the safety net).
    pub webhook: Option<WebhookConfig>,
    /// `[pipelines.<name>.notifications]`: which notification webhooks and events this pipeline uses.
    pub notifications: Option<crate::notify::PipelineNotifications>,
}

/// `[pipelines.<name>.webhook]`: how webhooks to `POST /hooks/<name>` are verified. The signing rule
/// follows the connection's kind: WooCommerce `X-WC-Webhook-Signature`, Zendesk
/// `X-Zendesk-Webhook-Signature` with its timestamp.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The webhook's signing secret (WooCommerce: the webhook's *Secret*; Zendesk: the webhook's
    /// signing secret), as `"${ENV_VAR}"` or `"file:/path"`.
    pub secret: Secret,
    /// Zendesk: a signature timestamp further than this from our clock, either way, is refused
    /// (a replayed or delayed delivery).
    #[serde(default = "default_webhook_max_age_seconds")]
    pub max_age_seconds: u64,
}

fn default_webhook_max_age_seconds() -> u64 {
    300
}

/// The connection kinds whose webhooks `POST /hooks/<pipeline>` verifies.
pub const WEBHOOK_KINDS: [&str; 2] = ["woocommerce", "zendesk"];

impl PipelineConfig {
    /// The run's error-rate pause rule; `None` when `pause_on_error_rate = 1.0` (never pauses).
    pub fn error_rule(&self) -> Option<crate::store::ErrorRule> {
        (self.pause_on_error_rate < 1.0)
            .then_some(crate::store::ErrorRule { max_rate: self.pause_on_error_rate, window: self.error_window as i64 })
    }
}

fn default_write_linger_ms() -> u64 {
    2_000
}
fn default_concurrency() -> usize {
    4
}
fn default_max_attempts() -> u32 {
    5
}
fn default_pause_on_error_rate() -> f64 {
    0.10
}
fn default_error_window() -> u32 {
    50
}
fn default_page_size() -> u32 {
    100
}

/// How requests reach the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One request per item (or pack) as it is claimed.
    #[default]
    Realtime,
    /// The provider's batch API: about half price, results within hours (at most 24).
    Batch,
}

/// Which records need enriching, and which of their fields are proposed. A record is a candidate
/// when any listed field is missing or shorter than its minimum; records with nothing missing are
/// skipped. Text is measured as a customer sees it: tags and comments dropped, entities decoded,
/// whitespace collapsed, so `<p>&nbsp;</p>` is missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Fields that make a record a candidate when absent, null or empty.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Field → minimum length in visible characters.
    #[serde(default)]
    pub min_length: BTreeMap<String, usize>,
    /// `false` (the default): only the fields selected above are proposed. `true`: a candidate
    /// record also gets every other field the task fills that it is missing (a product without a
    /// description also gets its missing tags, SEO meta and alt text).
    #[serde(default)]
    pub fill_all_missing: bool,
    /// Fields proposed for every candidate record whatever the record already holds. A list field
    /// (`tags`) is written by adding to the record's list (what is there stays); any other field is
    /// set, on candidates only: for a value the platform always fills with a default, such as
    /// Freshdesk's `priority` (Low unless someone changed it), which is otherwise never missing.
    #[serde(default)]
    pub add: Vec<String>,
}

/// `[pipelines.<name>.review]`: who approves proposals. Keys beyond `policy` belong to one policy
/// each and are refused with the others.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    #[serde(default)]
    pub policy: ReviewPolicy,
    /// `sample_first`: how many proposals of a run wait for review before the rest is held.
    pub sample: Option<u64>,
    /// `sample_first`: release the rest of the run by itself once every sample item is reviewed
    /// and the share rejected is at most this (0.0–1.0). Without it a reviewer releases the run.
    pub auto_release_max_reject_rate: Option<f64>,
    /// The answer property holding the model's confidence (without it, the task's `confidence`
    /// property if it has one): `auto_approve` compares it with `min_confidence`, and the review
    /// queue filters by it under any policy.
    pub confidence_field: Option<String>,
    /// `auto_approve`: approve only when the confidence is at least this; a proposal whose answer
    /// lacks a numeric confidence waits for review.
    pub min_confidence: Option<f64>,
}

/// Who approves proposals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewPolicy {
    /// Every proposal waits for a human.
    #[default]
    All,
    /// The first `sample` proposals of a run wait for a human; enrichment then stops until a
    /// reviewer releases the run (or it releases itself, see `auto_release_max_reject_rate`), and
    /// proposals after the release are approved as they arrive.
    SampleFirst,
    /// Proposals that pass every task check (and reach `min_confidence`, when set) are approved as
    /// they arrive; the rest wait for a human.
    AutoApprove,
    /// Proposals are approved as they arrive.
    None,
}

impl ReviewConfig {
    /// The sample gate a new run of the pipeline gets (`sample_first` only).
    pub fn sample_gate(&self) -> Option<crate::store::SampleGate> {
        (self.policy == ReviewPolicy::SampleFirst).then(|| crate::store::SampleGate {
            size: self.sample.unwrap_or(1) as i64,
            auto_release_max_reject_rate: self.auto_release_max_reject_rate,
        })
    }

    /// Checks the keys fit the policy; errors are `(key, message)`.
    fn validate(&self, task: &TaskConfig) -> Result<(), (&'static str, String)> {
        let only = |key: &'static str, set: bool, policy: &str| {
            if set { Err((key, format!("only applies to policy = \"{policy}\""))) } else { Ok(()) }
        };
        if self.policy != ReviewPolicy::SampleFirst {
            only("sample", self.sample.is_some(), "sample_first")?;
            only("auto_release_max_reject_rate", self.auto_release_max_reject_rate.is_some(), "sample_first")?;
        }
        if self.policy != ReviewPolicy::AutoApprove {
            only("min_confidence", self.min_confidence.is_some(), "auto_approve")?;
            if let Some(field) = &self.confidence_field
                && task.output_schema.pointer(&format!("/properties/{field}")).is_none()
            {
                return Err(("confidence_field", format!("{field:?} is not a property of the task's output_schema")));
            }
        }
        match self.policy {
            ReviewPolicy::SampleFirst => {
                match self.sample {
                    None => return Err(("sample", "missing: how many proposals of a run wait for review".into())),
                    Some(0) => return Err(("sample", "must be at least 1".into())),
                    Some(_) => {}
                }
                if self.auto_release_max_reject_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                    return Err(("auto_release_max_reject_rate", "must be between 0.0 and 1.0".into()));
                }
            }
            ReviewPolicy::AutoApprove => match (&self.confidence_field, self.min_confidence) {
                (Some(_), None) => return Err(("min_confidence", "missing: set it with confidence_field".into())),
                (None, Some(_)) => {
                    return Err((
                        "confidence_field",
                        "missing: name the answer property holding the confidence".into(),
                    ));
                }
                (Some(field), Some(min)) => {
                    if !min.is_finite() {
                        return Err(("min_confidence", "must be a number".into()));
                    }
                    if task.output_schema.pointer(&format!("/properties/{field}")).is_none() {
                        return Err((
                            "confidence_field",
                            format!("{field:?} is not a property of the task's output_schema"),
                        ));
                    }
                }
                (None, None) => {}
            },
            ReviewPolicy::All | ReviewPolicy::None => {}
        }
        Ok(())
    }
}

fn err(file: &Path, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { file: file.display().to_string(), path: path.into(), message: message.into() }
}

/// Deserialises `table` as `T`, naming errors by `prefix` + the path inside.
fn section<T: DeserializeOwned>(file: &Path, prefix: &str, table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() { prefix.to_owned() } else { format!("{prefix}.{inner}") };
        err(file, path, e.into_inner().to_string())
    })
}

/// `${ENV_VAR}` or `file:/path`: how a secret is named in the config file.
fn is_secret_reference(text: &str) -> bool {
    (text.starts_with("${") && text.ends_with('}')) || text.starts_with("file:")
}

/// A connection whose settings a connector crate owns: deserialised (unknown keys refused by the
/// crate's struct), every secret checked to be a reference, and validated by the crate, with errors
/// naming the key path.
fn platform<T, O>(
    file: &Path,
    prefix: &str,
    table: toml::Table,
    validate: fn(&T, &str) -> Result<O, enrichd_connector::ConfigError>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + enrichd_connector::ConnectionSettings,
{
    let mut settings: T = section(file, prefix, table)?;
    for (key, secret) in settings.secrets_mut() {
        if !is_secret_reference(secret.expose_secret()) {
            return Err(err(
                file,
                format!("{prefix}.{key}"),
                "secrets are not written in the config file: use \"${ENV_VAR}\" or \"file:/path/to/secret\"",
            ));
        }
    }
    validate(&settings, prefix).map_err(|e| err(file, e.key, e.message))?;
    Ok(settings)
}

impl Config {
    /// Reads, parses and validates the config at `path` and the task files beside it, and reads its
    /// secrets: what a command that connects needs.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Self::read(path)?;
        config.resolve_secrets()?;
        Ok(config)
    }

    /// [`Config::load`] without reading the secrets: enough for commands that only look at the
    /// database (`status`, `review`), which must work without the shop's or the model's secrets.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, "(file)", format!("cannot read: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse_unresolved(path, &text, Some(&dir.join("tasks")))
    }

    /// Parses config text and reads its secrets; `tasks_dir` is where task files are looked for.
    pub fn parse(file: &Path, text: &str, tasks_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = Self::parse_unresolved(file, text, tasks_dir)?;
        config.resolve_secrets()?;
        Ok(config)
    }

    /// Reads every secret the config names (`${ENV_VAR}`, `file:/path`); the first that cannot be
    /// read is the error, with its key path.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        if self.secrets_resolved {
            return Ok(());
        }
        self.resolve_server_secrets()?;
        let file = self.file.clone();
        let mut secrets: Vec<(String, &mut Secret)> = Vec::new();
        if let Some(s) = self.database.secret_key.as_mut() {
            secrets.push(("database.secret_key".into(), s));
        }
        let mut crate_secrets: Vec<(String, &mut SecretString)> = Vec::new();
        for (name, conn) in self.connections.iter_mut() {
            let at = |key: &str| format!("connections.{name}.{key}");
            match conn {
                ConnectionConfig::TestStore(c) => secrets.push((at("token"), &mut c.token)),
                ConnectionConfig::WooCommerce(c) => {
                    secrets.push((at("consumer_key"), &mut c.consumer_key));
                    secrets.push((at("consumer_secret"), &mut c.consumer_secret));
                }
                ConnectionConfig::Zendesk(c) => {
                    crate_secrets.extend(c.secrets_mut().into_iter().map(|(key, s)| (at(key), s)));
                }
                ConnectionConfig::Freshdesk(c) => {
                    crate_secrets.extend(c.secrets_mut().into_iter().map(|(key, s)| (at(key), s)));
                }
                ConnectionConfig::HelpScout(c) => {
                    crate_secrets.extend(c.secrets_mut().into_iter().map(|(key, s)| (at(key), s)));
                }
                ConnectionConfig::Xero(c) => {
                    crate_secrets.extend(c.secrets_mut().into_iter().map(|(key, s)| (at(key), s)));
                }
                ConnectionConfig::QuickBooks(c) => {
                    crate_secrets.extend(c.settings.secrets_mut().into_iter().map(|(key, s)| (at(key), s)));
                    if let Some(token) = c.access_token.as_mut() {
                        crate_secrets.push((at("access_token"), token));
                    }
                }
            }
        }
        for (path, secret) in crate_secrets {
            let value = resolve_secret(secret.expose_secret()).map_err(|m| err(&file, path, m))?;
            *secret = value.into();
        }
        for (name, pipeline) in self.pipelines.iter_mut() {
            if let Some(hook) = pipeline.webhook.as_mut() {
                secrets.push((format!("pipelines.{name}.webhook.secret"), &mut hook.secret));
            }
        }
        for (name, provider) in self.providers.iter_mut() {
            let key = match provider {
                ProviderConfig::OpenAi(p) => p.api_key.as_mut(),
                ProviderConfig::Anthropic(p) => Some(&mut p.api_key),
                ProviderConfig::Gemini(p) => Some(&mut p.api_key),
            };
            if let Some(s) = key {
                secrets.push((format!("providers.{name}.api_key"), s));
            }
        }
        secrets.extend(self.notifications.secrets_mut());
        for (path, secret) in secrets {
            secret.resolve().map_err(|m| err(&file, path, m))?;
        }
        self.notifications.check_resolved_urls().map_err(|(path, m)| err(&file, path, m))?;
        self.secrets_resolved = true;
        Ok(())
    }

    /// Reads only `server.auth`'s secrets: what the UI needs to sign people in, for a daemon that
    /// serves the UI without working pipelines (`enrichd daemon --ui-only`).
    pub fn resolve_server_secrets(&mut self) -> Result<(), ConfigError> {
        if self.server_secrets_resolved {
            return Ok(());
        }
        let file = self.file.clone();
        if let Some(auth) = self.server.auth.as_mut() {
            for (key, secret) in [("password", auth.password.as_mut()), ("token", auth.token.as_mut())] {
                if let Some(secret) = secret {
                    secret.resolve().map_err(|m| err(&file, format!("server.auth.{key}"), m))?;
                }
            }
        }
        self.server_secrets_resolved = true;
        Ok(())
    }

    /// Whether the secrets have been read ([`Config::resolve_secrets`]).
    pub fn secrets_resolved(&self) -> bool {
        self.secrets_resolved
    }

    /// Parses config text, leaving its secrets unread.
    fn parse_unresolved(file: &Path, text: &str, tasks_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| err(file, "(file)", e.to_string().trim_end().to_owned()))?;
        let raw: RawConfig = section(file, "(top level)", table).map_err(|mut e| {
            e.path = e.path.trim_start_matches("(top level).").to_owned();
            e
        })?;

        let mut connections = BTreeMap::new();
        for (name, mut table) in raw.connections {
            let prefix = format!("connections.{name}");
            let kind = take_kind(file, &prefix, &mut table)?;
            let conn = match kind.as_str() {
                "teststore" => ConnectionConfig::TestStore(section(file, &prefix, table)?),
                "woocommerce" => {
                    let woo: WooCommerceConnection = section(file, &prefix, table)?;
                    if !(woo.timeout_seconds.is_finite() && woo.timeout_seconds > 0.0) {
                        return Err(err(file, format!("{prefix}.timeout_seconds"), "must be a positive number"));
                    }
                    let options = woo.options().map_err(|m| err(file, format!("{prefix}.ca_cert"), m))?;
                    if let Err(e) = enrichd_woocommerce::WooCommerce::new(options) {
                        let key = if e.message.contains("ca_cert") {
                            "ca_cert"
                        } else if e.message.contains("auth") {
                            "auth"
                        } else {
                            "base_url"
                        };
                        let message = e.message.trim_start_matches("woocommerce: ").to_owned();
                        return Err(err(file, format!("{prefix}.{key}"), message));
                    }
                    ConnectionConfig::WooCommerce(woo)
                }
                "zendesk" => ConnectionConfig::Zendesk(Box::new(platform(
                    file,
                    &prefix,
                    table,
                    enrichd_zendesk::ZendeskConfig::validate,
                )?)),
                "freshdesk" => ConnectionConfig::Freshdesk(Box::new(platform(
                    file,
                    &prefix,
                    table,
                    enrichd_freshdesk::FreshdeskConfig::validate,
                )?)),
                "helpscout" => ConnectionConfig::HelpScout(Box::new(platform(
                    file,
                    &prefix,
                    table,
                    enrichd_helpscout::HelpScoutConfig::validate,
                )?)),
                "xero" => ConnectionConfig::Xero(Box::new(platform(
                    file,
                    &prefix,
                    table,
                    enrichd_xero::XeroConfig::validate,
                )?)),
                "quickbooks" => {
                    let access_token = match table.remove("access_token") {
                        None => None,
                        Some(toml::Value::String(text)) if is_secret_reference(&text) => Some(SecretString::from(text)),
                        Some(_) => {
                            return Err(err(
                                file,
                                format!("{prefix}.access_token"),
                                "secrets are not written in the config file: use \"${ENV_VAR}\" or \"file:/path/to/secret\"",
                            ));
                        }
                    };
                    let settings = platform(file, &prefix, table, enrichd_quickbooks::QuickBooksConfig::validate)?;
                    ConnectionConfig::QuickBooks(Box::new(QuickBooksConnection { settings, access_token }))
                }
                other => {
                    return Err(err(
                        file,
                        format!("{prefix}.kind"),
                        format!(
                            "unknown connection kind {other:?}; available: \"teststore\", \"woocommerce\", \"zendesk\", \"freshdesk\", \"helpscout\", \"xero\", \"quickbooks\""
                        ),
                    ));
                }
            };
            connections.insert(name, conn);
        }
        let mut providers = BTreeMap::new();
        for (name, mut table) in raw.providers {
            let prefix = format!("providers.{name}");
            let kind = take_kind(file, &prefix, &mut table)?;
            let provider = match kind.as_str() {
                "openai" => ProviderConfig::OpenAi(section(file, &prefix, table)?),
                "anthropic" => ProviderConfig::Anthropic(section(file, &prefix, table)?),
                "gemini" => ProviderConfig::Gemini(section(file, &prefix, table)?),
                other => {
                    return Err(err(
                        file,
                        format!("{prefix}.kind"),
                        format!("unknown provider kind {other:?}; available: \"openai\", \"anthropic\", \"gemini\""),
                    ));
                }
            };
            providers.insert(name, provider);
        }
        let mut tasks = BTreeMap::new();
        let mut task_files = BTreeMap::new();
        for (name, table) in raw.tasks {
            let task: TaskConfig = section(file, &format!("tasks.{name}"), table)?;
            task_files.insert(name.clone(), file.to_owned());
            tasks.insert(name, task);
        }
        if let Some(dir) = tasks_dir.filter(|d| d.is_dir()) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| err(file, "tasks", format!("cannot read {}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            entries.sort();
            for task_file in entries {
                let name = task_file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&task_file)
                    .map_err(|e| err(&task_file, "(file)", format!("cannot read: {e}")))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| err(&task_file, "(file)", e.to_string().trim_end().to_owned()))?;
                let task: TaskConfig = section(&task_file, &format!("tasks.{name}"), table)?;
                if tasks.insert(name.clone(), task).is_some() {
                    return Err(err(
                        &task_file,
                        format!("tasks.{name}"),
                        format!("task {name} is defined both here and in {}", file.display()),
                    ));
                }
                task_files.insert(name, task_file);
            }
        }
        let mut pipelines = BTreeMap::new();
        for (name, table) in raw.pipelines {
            let pipeline: PipelineConfig = section(file, &format!("pipelines.{name}"), table)?;
            pipelines.insert(name, pipeline);
        }
        let config = Config {
            file: file.to_owned(),
            database: raw.database,
            server: raw.server,
            daemon: raw.daemon,
            connections,
            providers,
            tasks,
            pipelines,
            notifications: raw.notifications,
            task_files,
            secrets_resolved: false,
            server_secrets_resolved: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what single sections cannot: references between sections, value ranges, templates,
    /// schemas and cron expressions.
    fn validate(&self) -> Result<(), ConfigError> {
        let file = self.file.as_path();
        let names = |m: &dyn Fn() -> Vec<String>| {
            let v = m();
            if v.is_empty() { "none are configured".to_owned() } else { format!("known: {}", v.join(", ")) }
        };
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return Err(err(file, "database.url", "must start with sqlite: or postgres://"));
        }
        if let Some(auth) = &self.server.auth {
            if auth.password.is_none() && auth.token.is_none() {
                return Err(err(file, "server.auth", "set password, token or both"));
            }
            if auth.session_hours == 0 {
                return Err(err(file, "server.auth.session_hours", "must be at least 1"));
            }
        }
        if !(self.daemon.lease_seconds.is_finite() && self.daemon.lease_seconds > 0.0) {
            return Err(err(file, "daemon.lease_seconds", "must be positive"));
        }
        for (name, provider) in &self.providers {
            if let ProviderConfig::Gemini(g) = provider {
                let at = |key: &str| format!("providers.{name}.{key}");
                if !(g.timeout_seconds.is_finite() && g.timeout_seconds > 0.0) {
                    return Err(err(file, at("timeout_seconds"), "must be positive"));
                }
                if g.batch_inline_max_bytes.is_some_and(|b| b > crate::provider::Gemini::INLINE_MAX_BYTES) {
                    return Err(err(
                        file,
                        at("batch_inline_max_bytes"),
                        "Gemini takes at most 20 MB inline (20971520)",
                    ));
                }
                if g.batch_max_bytes.is_some_and(|b| b > crate::provider::Gemini::MAX_BATCH_BYTES) {
                    return Err(err(
                        file,
                        at("batch_max_bytes"),
                        "Gemini batch input files are at most 2 GB (2147483648)",
                    ));
                }
                for (key, value) in
                    [("batch_max_requests", g.batch_max_requests), ("batch_max_bytes", g.batch_max_bytes)]
                {
                    if value == Some(0) {
                        return Err(err(file, at(key), "must be at least 1"));
                    }
                }
            }
        }
        for (name, task) in &self.tasks {
            // A task file's mistakes are reported against that file.
            let file = self.task_files.get(name).map_or(file, PathBuf::as_path);
            // 0–2 is what OpenAI and Gemini accept; Anthropic's 0–1 is clamped when sent.
            if task.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                return Err(err(file, format!("tasks.{name}.temperature"), "must be between 0 and 2"));
            }
            crate::task::Task::build(name, task)
                .map_err(|(key, message)| err(file, format!("tasks.{name}.{key}"), message))?;
        }
        for (name, p) in &self.pipelines {
            let at = |key: &str| format!("pipelines.{name}.{key}");
            if !self.connections.contains_key(&p.connection) {
                return Err(err(
                    file,
                    at("connection"),
                    format!(
                        "no connection named {:?} ({})",
                        p.connection,
                        names(&|| self.connections.keys().cloned().collect())
                    ),
                ));
            }
            if !self.providers.contains_key(&p.provider) {
                return Err(err(
                    file,
                    at("provider"),
                    format!(
                        "no provider named {:?} ({})",
                        p.provider,
                        names(&|| self.providers.keys().cloned().collect())
                    ),
                ));
            }
            let Some(task) = self.tasks.get(&p.task) else {
                return Err(err(
                    file,
                    at("task"),
                    format!("no task named {:?} ({})", p.task, names(&|| self.tasks.keys().cloned().collect())),
                ));
            };
            if p.select.missing.is_empty() && p.select.min_length.is_empty() {
                return Err(err(
                    file,
                    at("select"),
                    "name at least one field in `missing` or `min_length`, or every record would be a candidate",
                ));
            }
            let written: Vec<&String> = task.fields.values().collect();
            for field in p.select.missing.iter().chain(p.select.min_length.keys()).chain(&p.select.add) {
                if !written.contains(&field) {
                    return Err(err(
                        file,
                        at("select"),
                        format!(
                            "field {field:?} is selected but task {} never fills it (it fills: {})",
                            p.task,
                            task.fields.values().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            for (field, values) in &p.allowed {
                if !written.contains(&field) {
                    return Err(err(
                        file,
                        at(&format!("allowed.{field}")),
                        format!(
                            "task {} never fills {field:?} (it fills: {})",
                            p.task,
                            task.fields.values().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
                    return Err(err(
                        file,
                        at(&format!("allowed.{field}")),
                        "list at least one value, none of them empty",
                    ));
                }
            }
            p.review.validate(task).map_err(|(key, message)| err(file, at(&format!("review.{key}")), message))?;
            if p.concurrency == 0 || p.concurrency > 1024 {
                return Err(err(file, at("concurrency"), "must be between 1 and 1024"));
            }
            if p.max_attempts == 0 {
                return Err(err(file, at("max_attempts"), "must be at least 1"));
            }
            if p.page_size == 0 || p.page_size > 1000 {
                return Err(err(file, at("page_size"), "must be between 1 and 1000"));
            }
            if p.write_linger_ms > 600_000 {
                return Err(err(file, at("write_linger_ms"), "must be at most 600000 (ten minutes)"));
            }
            if p.mode == Mode::Batch {
                let batchable = match &self.providers[&p.provider] {
                    ProviderConfig::OpenAi(o) => o.api_version.is_none(),
                    _ => true,
                };
                if !batchable {
                    return Err(err(
                        file,
                        at("mode"),
                        format!(
                            "provider {:?} uses Azure's classic deployment URLs, which have no batch API: use base_url \".../openai/v1\" with auth = \"api-key\" for batch mode",
                            p.provider
                        ),
                    ));
                }
            }
            if !(p.pause_on_error_rate.is_finite() && (0.0..=1.0).contains(&p.pause_on_error_rate)) {
                return Err(err(
                    file,
                    at("pause_on_error_rate"),
                    "must be a share between 0.0 and 1.0 (0.10 pauses when more than 10% fail; 1.0 never pauses)",
                ));
            }
            if !(1..=100_000).contains(&p.error_window) {
                return Err(err(file, at("error_window"), "must be between 1 and 100000 enrichment outcomes"));
            }
            if p.budget_usd.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
                return Err(err(file, at("budget_usd"), "must be a positive amount"));
            }
            if p.budget_usd.is_some() && !self.priced(p) {
                return Err(err(file, at("budget_usd"), self.unpriced_message(p)));
            }
            if let Some(cron) = &p.schedule {
                crate::scheduler::parse_cron(cron).map_err(|m| err(file, at("schedule"), m))?;
            }
            if let Some(hook) = &p.webhook {
                let kind = self.connections[&p.connection].kind();
                if !WEBHOOK_KINDS.contains(&kind) {
                    return Err(err(
                        file,
                        at("webhook"),
                        format!(
                            "connection {:?} is a {kind} connection; webhooks are taken from {} connections only",
                            p.connection,
                            WEBHOOK_KINDS.join(" and ")
                        ),
                    ));
                }
                if !(1..=86_400).contains(&hook.max_age_seconds) {
                    return Err(err(file, at("webhook.max_age_seconds"), "must be between 1 and 86400 seconds"));
                }
            }
        }
        self.notifications
            .validate(self.pipelines.iter().map(|(name, p)| (name, p.notifications.as_ref())))
            .map_err(|(path, m)| err(file, path, m))?;
        Ok(())
    }

    /// Whether the model of pipeline `p` has a price (its provider's `prices."<model>"` or the
    /// built-in table), so its spend is known and a budget binds.
    pub fn priced(&self, p: &PipelineConfig) -> bool {
        self.providers.get(&p.provider).is_some_and(|c| crate::provider::known_price(c, &p.model).is_some())
    }

    /// Why pipeline `p`'s spend is unknown, and the fix.
    pub fn unpriced_message(&self, p: &PipelineConfig) -> String {
        format!(
            "model {:?} on provider {:?} has no known price; add [providers.{}.prices.\"{}\"] with input/output per million tokens (built-in prices, as of {}, cover: {})",
            p.model,
            p.provider,
            p.provider,
            p.model,
            crate::provider::BUILT_IN_PRICES_AS_OF,
            crate::provider::priced_models().join(", ")
        )
    }

    /// The pipeline named `name`, or an error listing the known ones.
    pub fn pipeline(&self, name: &str) -> Result<&PipelineConfig, String> {
        self.pipelines.get(name).ok_or_else(|| {
            let known: Vec<_> = self.pipelines.keys().cloned().collect();
            format!(
                "no pipeline named {name:?} in {} (known: {})",
                self.file.display(),
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })
    }
}

fn take_kind(file: &Path, prefix: &str, table: &mut toml::Table) -> Result<String, ConfigError> {
    match table.remove("kind") {
        Some(toml::Value::String(kind)) => Ok(kind),
        Some(other) => {
            Err(err(file, format!("{prefix}.kind"), format!("expected a string, found {}", other.type_str())))
        }
        None => Err(err(file, format!("{prefix}.kind"), "missing: say which platform or provider this is")),
    }
}
