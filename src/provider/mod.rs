//! Model providers: one interface for sending a prompt with an output schema and getting validated
//! JSON back, with usage and cost. The set of provider kinds is closed, so it is an enum.

mod anthropic;
mod openai;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::config::{PriceConfig, ProviderConfig};
use crate::task::Prompt;

pub use anthropic::Anthropic;
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

impl ProviderError {
    pub fn retryable(&self) -> bool {
        !matches!(self.kind, ProviderErrorKind::Permanent)
    }
}

/// A configured provider.
pub enum Provider {
    OpenAi(OpenAi),
    Anthropic(Anthropic),
}

impl Provider {
    pub fn build(name: &str, config: &ProviderConfig) -> Provider {
        match config {
            ProviderConfig::OpenAi(c) => Provider::OpenAi(OpenAi::new(name, c)),
            ProviderConfig::Anthropic(c) => Provider::Anthropic(Anthropic::new(name, c)),
        }
    }

    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        match self {
            Provider::OpenAi(p) => p.complete(request).await,
            Provider::Anthropic(p) => p.complete(request).await,
        }
    }

    /// An authenticated call that costs nothing (listing models), for `enrichd check`.
    pub async fn check(&self) -> Result<(), ProviderError> {
        match self {
            Provider::OpenAi(p) => p.check().await,
            Provider::Anthropic(p) => p.check().await,
        }
    }

    /// What `usage` costs on `model`, in micro-USD; `None` when the model has no known price.
    pub fn cost_micros(&self, model: &str, usage: TokenUsage) -> Option<i64> {
        let configured = match self {
            Provider::OpenAi(p) => &p.prices,
            Provider::Anthropic(p) => &p.prices,
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

/// Maps an HTTP failure to a provider error. A 429 that means the account is out of money (OpenAI
/// `insufficient_quota`, Anthropic `enforced_spend_limit_reached`) is not a rate limit: not retried.
pub(crate) fn from_http(e: enrichd_connector::ConnectorError) -> ProviderError {
    let out_of_money = matches!(
        e.code.as_deref(),
        Some("insufficient_quota" | "billing_hard_limit_reached" | "enforced_spend_limit_reached")
    );
    let kind = if e.retryable && !out_of_money { ProviderErrorKind::Transient } else { ProviderErrorKind::Permanent };
    ProviderError { kind, message: e.message, retry_after: e.retry_after, raw: None, usage: TokenUsage::default() }
}

/// Sends `request` and reads its JSON answer, with failures classified for providers.
pub(crate) async fn call_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, ProviderError> {
    let response = enrichd_connector::http::send(request, what).await.map_err(from_http)?;
    enrichd_connector::http::json(response, what).await.map_err(from_http)
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

/// Built-in prices (USD per million tokens), from `shared/research/ai_providers.md` §6. Config
/// `[providers.<name>.prices."<model>"]` overrides them: prices change often.
fn default_price(model: &str) -> Option<PriceConfig> {
    let table: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::from([
        ("gpt-4o-mini", (0.15, 0.075, 0.60)),
        ("gpt-4.1-mini", (0.40, 0.10, 1.60)),
        ("gpt-5-mini", (0.25, 0.025, 2.00)),
    ]);
    table.get(model).map(|&(input, cached, output)| PriceConfig { input, output, cached_input: Some(cached) })
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
        assert_eq!(p.cost_micros("unknown-model", usage), None);
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
