//! Model providers: one interface for sending a prompt with an output schema and getting validated
//! JSON back, with usage and cost. The set of provider kinds is closed, so it is an enum.

mod anthropic;
pub mod documents;
mod gemini;
pub mod limit;
mod openai;

use std::time::Duration;

use serde_json::Value;

use crate::config::{PriceConfig, ProviderConfig};
use crate::task::Prompt;
pub use limit::RateGate;

pub use anthropic::Anthropic;
pub use gemini::Gemini;
pub use openai::OpenAi;

/// What one request asks for.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a Prompt,
    /// Name of the output schema (the task's name).
    pub schema_name: &'a str,
    pub schema: &'a Value,
    pub max_output_tokens: u32,
    pub temperature: Option<f32>,
}

/// Tokens a request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: i64,
    /// Part of `input` served from the provider's prompt cache.
    pub cached_input: i64,
    pub output: i64,
}

/// A usable answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The parsed answer (not yet checked against the schema: the task does that).
    pub answer: Value,
    /// The answer's text as the model sent it.
    pub raw: String,
    pub usage: TokenUsage,
}

/// Why a request gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// Rate limits, overload, 5xx, timeouts: try again later.
    Transient,
    /// Bad request, authentication, quota or spend limit exhausted: trying again will not help.
    Permanent,
    /// The model answered, but not with usable JSON (truncated, invalid, refused).
    BadAnswer,
    /// The provider never ran the request (its batch expired or was cancelled): sent again without
    /// counting an attempt.
    NotRun,
}

/// A failed request, classified, with whatever the model did send.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub raw: Option<String>,
    /// Tokens billed even though the answer was unusable.
    pub usage: TokenUsage,
}

/// An error that trying again will not fix.
pub(crate) fn permanent(message: String) -> ProviderError {
    ProviderError {
        kind: ProviderErrorKind::Permanent,
        message,
        retry_after: None,
        raw: None,
        usage: TokenUsage::default(),
    }
}

/// A batch line the provider never ran.
pub(crate) fn not_run(message: String) -> ProviderError {
    ProviderError {
        kind: ProviderErrorKind::NotRun,
        message,
        retry_after: None,
        raw: None,
        usage: TokenUsage::default(),
    }
}

/// An error that may pass.
pub(crate) fn transient(message: String) -> ProviderError {
    ProviderError {
        kind: ProviderErrorKind::Transient,
        message,
        retry_after: None,
        raw: None,
        usage: TokenUsage::default(),
    }
}

impl ProviderError {
    pub fn retryable(&self) -> bool {
        !matches!(self.kind, ProviderErrorKind::Permanent)
    }
}

/// Limits of one provider batch (requests and bytes of the serialized lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_requests: usize,
    pub max_bytes: usize,
}

/// The outcome of one line of a provider batch, matched back by `custom_id`.
#[derive(Debug)]
pub struct BatchResult {
    pub custom_id: String,
    /// Expired, cancelled and errored lines are `Err` (transient unless the error says otherwise).
    pub outcome: Result<Completion, ProviderError>,
}

/// Where a submitted batch stands.
#[derive(Debug)]
pub enum BatchPoll {
    /// Still queued or running.
    Running,
    /// Ended (completed, expired or cancelled): the results there are. Lines without a result
    /// (e.g. an expired batch that dropped them) are simply absent.
    Ended { status: String, results: Vec<BatchResult> },
    /// The provider refused or lost the whole batch (validation failure, gone): no results.
    Failed { message: String },
}

/// A configured provider.
pub enum Provider {
    OpenAi(OpenAi),
    Anthropic(Anthropic),
    Gemini(Gemini),
}

impl Provider {
    pub fn build(name: &str, config: &ProviderConfig) -> Provider {
        match config {
            ProviderConfig::OpenAi(c) => Provider::OpenAi(OpenAi::new(name, c)),
            ProviderConfig::Anthropic(c) => Provider::Anthropic(Anthropic::new(name, c)),
            ProviderConfig::Gemini(c) => Provider::Gemini(Gemini::new(name, c)),
        }
    }

    /// The rate gate of this provider's credential.
    pub fn gate(&self) -> &RateGate {
        match self {
            Provider::OpenAi(p) => &p.gate,
            Provider::Anthropic(p) => &p.gate,
            Provider::Gemini(p) => &p.gate,
        }
    }

    /// How this provider takes documents, for its limits and token counting.
    pub fn document_kind(&self) -> documents::Kind {
        match self {
            Provider::OpenAi(p) if p.documents_as_text() => documents::Kind::OpenAiText,
            Provider::OpenAi(_) => documents::Kind::OpenAi,
            Provider::Anthropic(_) => documents::Kind::Anthropic,
            Provider::Gemini(_) => documents::Kind::Gemini,
        }
    }

    /// Whether this provider can take `documents` in one request (its documented page and size
    /// limits; a text-only server takes PDFs with a text layer only). The error names the document
    /// and the limit.
    pub fn check_documents(&self, documents: &[crate::document::Document]) -> Result<(), String> {
        documents::check(self.document_kind(), documents)
    }

    /// Sends one request once it may go under the credential's rate limits. A request whose
    /// documents the provider cannot take is refused here, never sent.
    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        self.check_documents(&request.prompt.documents).map_err(permanent)?;
        self.gate().acquire(estimate_tokens_for(self.document_kind(), request)).await;
        match self {
            Provider::OpenAi(p) => p.complete(request).await,
            Provider::Anthropic(p) => p.complete(request).await,
            Provider::Gemini(p) => p.complete(request).await,
        }
    }

    /// The provider's batch limits, or `None` when it has no batch API.
    pub fn batch_limits(&self) -> Option<BatchLimits> {
        match self {
            Provider::OpenAi(p) => p.batch_limits(),
            Provider::Anthropic(p) => Some(p.batch_limits()),
            Provider::Gemini(p) => Some(p.batch_limits()),
        }
    }

    /// One batch line for `request`, in the provider's own format.
    pub fn batch_line(&self, custom_id: &str, request: &CompletionRequest<'_>) -> Value {
        match self {
            Provider::OpenAi(p) => p.batch_line(custom_id, request),
            Provider::Anthropic(p) => p.batch_line(custom_id, request),
            Provider::Gemini(p) => p.batch_line(custom_id, request),
        }
    }

    /// Submits `lines` (all for `model`) as one batch tagged `tag`; returns the provider's batch id.
    pub async fn submit_batch(&self, tag: &str, model: &str, lines: &[Value]) -> Result<String, ProviderError> {
        self.gate().acquire(1).await;
        match self {
            Provider::OpenAi(p) => p.submit_batch(tag, lines).await,
            Provider::Anthropic(p) => p.submit_batch(tag, lines).await,
            Provider::Gemini(p) => p.submit_batch(tag, model, lines).await,
        }
    }

    /// The batch submitted with `tag`, when the provider can tell (OpenAI metadata, Gemini display
    /// name). Anthropic batches carry no tag: `None`.
    pub async fn find_batch(&self, tag: &str) -> Result<Option<String>, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.find_batch(tag).await,
            Provider::Gemini(p) => p.find_batch(tag).await,
            Provider::Anthropic(_) => Ok(None),
        }
    }

    pub async fn poll_batch(&self, id: &str, max_output_tokens: u32) -> Result<BatchPoll, ProviderError> {
        self.gate().acquire(1).await;
        match self {
            Provider::OpenAi(p) => p.poll_batch(id, max_output_tokens).await,
            Provider::Anthropic(p) => p.poll_batch(id, max_output_tokens).await,
            Provider::Gemini(p) => p.poll_batch(id, max_output_tokens).await,
        }
    }

    /// An authenticated call that costs nothing (listing models), for `enrichd check`.
    pub async fn check(&self) -> Result<(), ProviderError> {
        match self {
            Provider::OpenAi(p) => p.check().await,
            Provider::Anthropic(p) => p.check().await,
            Provider::Gemini(p) => p.check().await,
        }
    }

    /// What `usage` costs on `model`, in micro-USD; `None` when the model has no known price.
    pub fn cost_micros(&self, model: &str, usage: TokenUsage) -> Option<i64> {
        let configured = match self {
            Provider::OpenAi(p) => &p.prices,
            Provider::Anthropic(p) => &p.prices,
            Provider::Gemini(p) => &p.prices,
        };
        let price = configured.get(model).copied().or_else(|| default_price(model))?;
        let uncached = (usage.input - usage.cached_input).max(0) as f64;
        let cached = usage.cached_input.max(0) as f64;
        let micros = uncached * price.input
            + cached * price.cached_input.unwrap_or(price.input)
            + usage.output as f64 * price.output;
        // Prices are USD per million tokens, so tokens × price is already micro-USD.
        Some(micros.round() as i64)
    }
}

/// Tokens a request will use at most: its prompt (about four characters a token), its documents
/// (counted as a vision model reads them: the text layer plus an image per page) and its answer.
pub fn estimate_tokens(request: &CompletionRequest<'_>) -> u32 {
    estimate_tokens_for(documents::Kind::Anthropic, request)
}

/// [`estimate_tokens`] with documents counted the way provider `kind` counts them.
pub fn estimate_tokens_for(kind: documents::Kind, request: &CompletionRequest<'_>) -> u32 {
    let chars = request.prompt.user.len() + request.prompt.system.as_ref().map_or(0, String::len);
    let documents: u64 = request.prompt.documents.iter().map(|d| documents::tokens(kind, d)).sum();
    (chars.div_ceil(4) as u32)
        .saturating_add(u32::try_from(documents).unwrap_or(u32::MAX))
        .saturating_add(request.max_output_tokens)
}

/// Maps an HTTP failure to a provider error. A 429 that means the account is out of money (OpenAI
/// `insufficient_quota`, Anthropic `enforced_spend_limit_reached`) is not a rate limit: not retried.
/// Gemini says so only in its error body: see [`send`].
pub(crate) fn from_http(e: enrichd_connector::ConnectorError) -> ProviderError {
    let out_of_money = matches!(
        e.code.as_deref(),
        Some("insufficient_quota" | "billing_hard_limit_reached" | "enforced_spend_limit_reached")
    );
    let kind = if e.retryable && !out_of_money { ProviderErrorKind::Transient } else { ProviderErrorKind::Permanent };
    ProviderError { kind, message: e.message, retry_after: e.retry_after, raw: None, usage: TokenUsage::default() }
}

/// Sends `request` and reads its JSON answer, with failures classified for providers.
/// Rate-limit headers of every answer feed `gate`; a 429 that is a rate limit closes it for everyone
/// on the credential.
pub(crate) async fn call_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
    gate: &RateGate,
) -> Result<T, ProviderError> {
    let response = send(request, what, gate).await?;
    enrichd_connector::http::json(response, what).await.map_err(from_http)
}

/// Sends `request` and returns a 2xx response; anything else becomes a classified provider error.
/// Rate-limit headers of a 2xx answer feed `gate`; a 429 that is a rate limit closes it for
/// everyone on the credential.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
    gate: &RateGate,
) -> Result<reqwest::Response, ProviderError> {
    use enrichd_connector::http;
    let response = request.send().await.map_err(|e| from_http(http::transport_error(e, what)))?;
    let status = response.status();
    if status.is_success() {
        gate.observe(response.headers());
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    let mut error = from_http(http::classify(status, &headers, &body, what));
    // Google's 429 is the same for a per-minute limit and an exhausted daily quota or prepaid
    // balance; only the body's details tell them apart.
    if let Some(reason) = gemini::out_of_quota(&body).filter(|_| error.kind == ProviderErrorKind::Transient) {
        error.kind = ProviderErrorKind::Permanent;
        error.message = format!("{} ({reason}: not retried)", error.message);
    }
    if status.as_u16() == 429 && error.kind == ProviderErrorKind::Transient {
        gate.rate_limited_for(error.retry_after);
    }
    Err(error)
}

/// Tool and schema names allow `[a-zA-Z0-9_-]{1,64}`.
pub(crate) fn schema_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    if cleaned.is_empty() { "answer".into() } else { cleaned }
}

/// When the built-in prices were taken: the newest source date in [`BUILT_IN_PRICES`]. Prices change
/// often; `[providers.<name>.prices."<model>"]` overrides or extends the table.
pub const BUILT_IN_PRICES_AS_OF: &str = "2026-09-20";

/// One model's published price, USD per million tokens.
#[derive(Debug, Clone, Copy)]
pub struct BuiltInPrice {
    pub model: &'static str,
    pub input: f64,
    /// Cached input (prompt-cache read); the input price when the source gives none.
    pub cached_input: Option<f64>,
    pub output: f64,
    /// The last day this price applies, when the provider announced a change (`YYYY-MM-DD`).
    pub until: Option<&'static str>,
    /// Where the price is from, and that source's date.
    pub source: &'static str,
}

/// The built-in price table: the models of OpenAI, Anthropic and Gemini whose realtime prices
/// `shared/research/ai_providers.md` §6 documents (compiled 2026-11-22), with each price's source
/// and date. Models the research does not price are not listed: they need `prices."<model>"`.
/// Batch mode bills half of these (see `estimate::BATCH_DISCOUNT`).
pub const BUILT_IN_PRICES: &[BuiltInPrice] = &[
    price("gpt-4o-mini", 0.15, Some(0.075), 0.60, "pydantic/genai-prices openai.yml, 2026-08-21"),
    price("gpt-4.1-mini", 0.40, Some(0.10), 1.60, "pydantic/genai-prices openai.yml, 2026-08-21"),
    price("gpt-5-mini", 0.25, Some(0.025), 2.00, "pydantic/genai-prices openai.yml, 2026-08-21"),
    price("gpt-5.4-mini", 0.75, Some(0.075), 4.50, "api-evangelist/openai plans/openai-plans-pricing.yml, 2026-05-04"),
    price("gpt-5.4-nano", 0.20, Some(0.02), 1.25, "api-evangelist/openai plans/openai-plans-pricing.yml, 2026-05-04"),
    // Cache writes (1.25× input for 5 minutes) are not counted: enrichd sends no cache_control.
    price("claude-haiku-4-5", 1.00, Some(0.10), 5.00, "platform.claude.com about-claude/pricing, 2026-08-21"),
    price("gemini-2.5-flash", 0.30, Some(0.03), 2.50, "pydantic/genai-prices google.yml, 2026-08-21 (text input)"),
    price("gemini-2.5-flash-lite", 0.10, Some(0.01), 0.40, "pydantic/genai-prices google.yml, 2026-08-21"),
    price("gemini-2.0-flash", 0.10, Some(0.025), 0.40, "pydantic/genai-prices google.yml, 2026-08-21"),
    price("gemini-2.0-flash-lite", 0.075, None, 0.30, "pydantic/genai-prices google.yml, 2026-08-21"),
    price("gemini-3.5-flash", 1.50, None, 9.00, "api-evangelist/gemini pricing, 2026-09-20"),
    BuiltInPrice {
        until: Some("2026-12-31"),
        ..price("gemini-3.8-flash", 0.75, None, 3.75, "api-evangelist/gemini pricing, 2026-09-20")
    },
    price("gemini-3.8-flash", 1.50, None, 7.50, "api-evangelist/gemini pricing, 2026-09-20 (from 2027-01-01)"),
];

const fn price(
    model: &'static str,
    input: f64,
    cached_input: Option<f64>,
    output: f64,
    source: &'static str,
) -> BuiltInPrice {
    BuiltInPrice { model, input, cached_input, output, until: None, source }
}

/// The built-in price of `model` today. A dated snapshot (`gpt-5-mini-2025-08-07`,
/// `claude-haiku-4-5-20251001`) costs what its alias costs.
fn default_price(model: &str) -> Option<PriceConfig> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let lookup = |name: &str| {
        BUILT_IN_PRICES
            .iter()
            .find(|p| p.model == name && p.until.is_none_or(|until| today.as_str() <= until))
            .map(|p| PriceConfig { input: p.input, output: p.output, cached_input: p.cached_input })
    };
    lookup(model).or_else(|| lookup(without_snapshot_date(model)?))
}

/// `model` without a trailing snapshot date (`-2025-08-07` or `-20251001`).
fn without_snapshot_date(model: &str) -> Option<&str> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let (base, last) = model.rsplit_once('-')?;
    if digits(last, 8) {
        return Some(base);
    }
    let (rest, month) = base.rsplit_once('-')?;
    let (base, year) = rest.rsplit_once('-')?;
    (digits(last, 2) && digits(month, 2) && digits(year, 4)).then_some(base)
}

/// The models the built-in table prices, once each.
pub fn priced_models() -> Vec<&'static str> {
    let mut models: Vec<&str> = BUILT_IN_PRICES.iter().map(|p| p.model).collect();
    models.dedup();
    models
}

/// The price `model` is billed at through the provider configured as `config`: its own
/// `prices."<model>"`, else the built-in table. `None`: spend on it is unknown.
pub fn known_price(config: &ProviderConfig, model: &str) -> Option<PriceConfig> {
    config.prices().get(model).copied().or_else(|| default_price(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_count_cached_tokens_at_their_price() {
        let cfg: crate::config::OpenAiProvider = toml::from_str(r#"base_url = "http://x/v1""#).unwrap();
        let p = Provider::OpenAi(OpenAi::new("p", &cfg));
        let usage = TokenUsage { input: 1_000_000, cached_input: 400_000, output: 100_000 };
        // 600k × 0.15 + 400k × 0.075 + 100k × 0.60 = 0.09 + 0.03 + 0.06 = $0.18
        assert_eq!(p.cost_micros("gpt-4o-mini", usage), Some(180_000));
        assert_eq!(
            p.cost_micros("gpt-4o-mini-2024-07-18", usage),
            Some(180_000),
            "a snapshot costs what its alias costs"
        );
        assert_eq!(p.cost_micros("unknown-model", usage), None);
    }

    #[test]
    fn the_table_prices_current_models_of_every_provider() {
        for model in ["gpt-5-mini", "gpt-5.4-nano", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "gemini-2.5-flash"]
        {
            assert!(default_price(model).is_some(), "{model}");
        }
        assert_eq!(without_snapshot_date("gpt-5-mini-2025-08-07"), Some("gpt-5-mini"));
        assert_eq!(without_snapshot_date("claude-haiku-4-5"), None);
        assert!(BUILT_IN_PRICES.iter().all(|p| p.source.contains("20")), "every price names its source date");
    }
}

#[cfg(test)]
mod estimates {
    use super::*;

    #[test]
    fn estimates_count_documents_as_the_provider_does() {
        fn request<'a>(prompt: &'a Prompt, schema: &'a Value) -> CompletionRequest<'a> {
            CompletionRequest {
                model: "m",
                prompt,
                schema_name: "t",
                schema,
                max_output_tokens: 100,
                temperature: None,
            }
        }
        let schema = serde_json::json!({});
        let mut prompt = Prompt { system: None, user: "x".repeat(400), documents: Vec::new() };
        assert_eq!(estimate_tokens_for(documents::Kind::Gemini, &request(&prompt, &schema)), 200);
        prompt.documents.push(crate::document::Document {
            name: "a.pdf".into(),
            media_type: crate::document::PDF.into(),
            bytes: bytes::Bytes::from_static(b"%PDF-"),
            text: None,
            pages: Some(3),
        });
        assert_eq!(estimate_tokens_for(documents::Kind::Gemini, &request(&prompt, &schema)), 200 + 3 * 258);
        assert_eq!(estimate_tokens(&request(&prompt, &schema)), 200 + 3 * 1_600);
    }
}

#[cfg(test)]
mod classification {
    use super::*;
    use enrichd_connector::ConnectorError;

    #[test]
    fn out_of_money_429s_are_not_retried() {
        for code in ["insufficient_quota", "enforced_spend_limit_reached", "billing_hard_limit_reached"] {
            let mut e = ConnectorError::transient("HTTP 429");
            e.code = Some(code.into());
            assert_eq!(from_http(e).kind, ProviderErrorKind::Permanent, "{code}");
        }
        let mut e = ConnectorError::transient("HTTP 429");
        e.code = Some("rate_limit_error".into());
        assert_eq!(from_http(e).kind, ProviderErrorKind::Transient);
    }
}
