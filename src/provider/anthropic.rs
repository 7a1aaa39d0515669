//! Anthropic Messages API. The answer's schema is enforced either by a forced tool call (the tool's
//! `input_schema` is the task schema; works on every model) or by `output_config.format` structured
//! outputs (newer models), as `structured_output` says.

use std::collections::BTreeMap;
use std::time::Duration;

use enrichd_connector::http;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Completion, CompletionRequest, ProviderError, ProviderErrorKind, TokenUsage, call_json, schema_name};
use crate::config::{AnthropicProvider, AnthropicStructuredOutput, PriceConfig};

pub struct Anthropic {
    name: String,
    base_url: String,
    api_key: SecretString,
    version: String,
    structured: AnthropicStructuredOutput,
    http: reqwest::Client,
    pub(super) prices: BTreeMap<String, PriceConfig>,
}

#[derive(Deserialize)]
struct MessageResponse {
    content: Vec<Value>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    input_tokens: i64,
    output_tokens: i64,
    cache_read_input_tokens: Option<i64>,
    cache_creation_input_tokens: Option<i64>,
}

impl Anthropic {
    pub fn new(name: &str, config: &AnthropicProvider) -> Self {
        Self {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').trim_end_matches("/v1").to_owned(),
            api_key: config.api_key.0.clone(),
            version: config.version.clone(),
            structured: config.structured_output,
            http: http::client(Duration::from_secs_f64(config.timeout_seconds)),
            prices: config.prices.clone(),
        }
    }

    fn request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("x-api-key", self.api_key.expose_secret()).header("anthropic-version", &self.version)
    }

    pub async fn check(&self) -> Result<(), ProviderError> {
        let what = format!("provider {}: list models", self.name);
        let _: Value = call_json(self.request(self.http.get(format!("{}/v1/models", self.base_url))), &what).await?;
        Ok(())
    }

    /// The request body, exactly as sent.
    pub fn body(&self, request: &CompletionRequest<'_>) -> Value {
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_output_tokens,
            "messages": [{"role": "user", "content": request.prompt.user}],
        });
        if let Some(system) = &request.prompt.system {
            body["system"] = json!(system);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t.clamp(0.0, 1.0));
        }
        let name = schema_name(request.schema_name);
        match self.structured {
            AnthropicStructuredOutput::Tool => {
                body["tools"] = json!([{
                    "name": name,
                    "description": "Record the answer. Call this tool exactly once with the complete answer.",
                    "input_schema": request.schema,
                }]);
                body["tool_choice"] = json!({"type": "tool", "name": name});
            }
            AnthropicStructuredOutput::OutputConfig => {
                body["output_config"] = json!({"format": {"type": "json_schema", "schema": request.schema}});
            }
        }
        body
    }

    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        let what = format!("provider {}: message with {}", self.name, request.model);
        let post = self.request(self.http.post(format!("{}/v1/messages", self.base_url))).json(&self.body(request));
        let message: MessageResponse = call_json(post, &what).await?;
        let usage = message
            .usage
            .map(|u| {
                let read = u.cache_read_input_tokens.unwrap_or(0);
                TokenUsage {
                    input: u.input_tokens + read + u.cache_creation_input_tokens.unwrap_or(0),
                    cached_input: read,
                    output: u.output_tokens,
                }
            })
            .unwrap_or_default();
        let bad = |message: String, raw: Option<String>| ProviderError {
            kind: ProviderErrorKind::BadAnswer,
            message,
            retry_after: None,
            raw,
            usage,
        };
        let text: String = message.content.iter().filter_map(|b| b["text"].as_str()).collect();
        let tool_input = message.content.iter().find(|b| b["type"] == "tool_use").map(|b| b["input"].clone());
        let raw = tool_input.as_ref().map(Value::to_string).unwrap_or_else(|| text.clone());
        match message.stop_reason.as_deref() {
            Some("refusal") => return Err(bad(format!("{what}: the model refused"), Some(raw))),
            Some("max_tokens") => {
                return Err(bad(
                    format!("{what}: the answer was cut off at max_output_tokens ({})", request.max_output_tokens),
                    Some(raw),
                ));
            }
            _ => {}
        }
        let answer = match (self.structured, tool_input) {
            (AnthropicStructuredOutput::Tool, Some(input)) => input,
            (AnthropicStructuredOutput::Tool, None) => {
                return Err(bad(format!("{what}: the model did not call the answer tool"), Some(raw)));
            }
            (AnthropicStructuredOutput::OutputConfig, _) => serde_json::from_str(&text)
                .map_err(|e| bad(format!("{what}: the answer is not valid JSON: {e}"), Some(raw.clone())))?,
        };
        Ok(Completion { answer, raw, usage })
    }
}
