//! Anthropic Messages API. The answer's schema is enforced either by a forced tool call (the tool's
//! `input_schema` is the task schema; works on every model) or by `output_config.format` structured
//! outputs (newer models), as `structured_output` says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enrichd_connector::http;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    BatchLimits, BatchPoll, BatchResult, Completion, CompletionRequest, ProviderError, ProviderErrorKind, RateGate,
    TokenUsage, call_json, schema_name,
};
use crate::config::{AnthropicProvider, AnthropicStructuredOutput, PriceConfig};

pub struct Anthropic {
    name: String,
    base_url: String,
    api_key: SecretString,
    version: String,
    structured: AnthropicStructuredOutput,
    http: reqwest::Client,
    pub(super) prices: BTreeMap<String, PriceConfig>,
    pub(super) gate: Arc<RateGate>,
    batch_limits: BatchLimits,
}

#[derive(Deserialize)]
struct BatchObject {
    id: String,
    processing_status: String,
    results_url: Option<String>,
}

/// Anthropic's documented per-batch limits: 100,000 requests, 256 MB.
const MAX_BATCH_REQUESTS: usize = 100_000;
const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

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
            gate: Arc::new(RateGate::new(name, config.requests_per_minute, config.tokens_per_minute)),
            batch_limits: BatchLimits {
                max_requests: config.batch_max_requests.unwrap_or(MAX_BATCH_REQUESTS).min(MAX_BATCH_REQUESTS),
                max_bytes: config.batch_max_bytes.unwrap_or(MAX_BATCH_BYTES).min(MAX_BATCH_BYTES),
            },
        }
    }

    fn request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("x-api-key", self.api_key.expose_secret()).header("anthropic-version", &self.version)
    }

    pub async fn check(&self) -> Result<(), ProviderError> {
        let what = format!("provider {}: list models", self.name);
        let _: Value =
            call_json(self.request(self.http.get(format!("{}/v1/models", self.base_url))), &what, &self.gate).await?;
        Ok(())
    }

    /// The request body, exactly as sent.
    pub fn body(&self, request: &CompletionRequest<'_>) -> Value {
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_output_tokens,
            "messages": [{"role": "user", "content": user_content(request)}],
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
        let message: Value = call_json(post, &what, &self.gate).await?;
        self.parse(message, &what, request.max_output_tokens)
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.batch_limits
    }

    /// One request of a Message Batch.
    pub fn batch_line(&self, custom_id: &str, request: &CompletionRequest<'_>) -> Value {
        json!({"custom_id": custom_id, "params": self.body(request)})
    }

    /// Creates a Message Batch. Anthropic batches carry no metadata, so `tag` only names it in logs.
    pub async fn submit_batch(&self, tag: &str, lines: &[Value]) -> Result<String, ProviderError> {
        let what = format!("provider {}: batch {tag}", self.name);
        let post = self
            .request(self.http.post(format!("{}/v1/messages/batches", self.base_url)))
            .json(&json!({"requests": lines}));
        let batch: BatchObject = call_json(post, &what, &self.gate).await?;
        Ok(batch.id)
    }

    pub async fn poll_batch(&self, id: &str, max_output_tokens: u32) -> Result<BatchPoll, ProviderError> {
        let what = format!("provider {}: batch {id}", self.name);
        let get = self.request(self.http.get(format!("{}/v1/messages/batches/{id}", self.base_url)));
        let batch: BatchObject = call_json(get, &what, &self.gate).await?;
        if batch.processing_status != "ended" {
            return Ok(BatchPoll::Running);
        }
        let Some(url) = batch.results_url else {
            return Ok(BatchPoll::Ended { status: "ended".into(), results: Vec::new() });
        };
        let url = if url.starts_with("http") { url } else { format!("{}{url}", self.base_url) };
        let response = http::send(self.request(self.http.get(url)), &what).await.map_err(super::from_http)?;
        let text = response.text().await.map_err(|e| super::transient(format!("{what}: reading results: {e}")))?;
        let mut results = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(line) = serde_json::from_str::<Value>(line) else {
                tracing::warn!(batch = id, "skipping a batch result line that is not JSON");
                continue;
            };
            let Some(custom_id) = line["custom_id"].as_str() else { continue };
            let what = format!("{what}: {custom_id}");
            let result = &line["result"];
            let outcome = match result["type"].as_str() {
                Some("succeeded") => self.parse(result["message"].clone(), &what, max_output_tokens),
                Some("errored") => {
                    let kind = result["error"]["error"]["type"].as_str().unwrap_or("error");
                    let message =
                        format!("{what}: {kind}: {}", result["error"]["error"]["message"].as_str().unwrap_or(""));
                    // Anthropic: fix the request for invalid_request_error; retry as is otherwise.
                    if kind == "invalid_request_error" {
                        Err(super::permanent(message))
                    } else {
                        Err(super::transient(message))
                    }
                }
                Some(other @ ("expired" | "canceled")) => Err(super::not_run(format!("{what}: {other}"))),
                Some(other) => Err(super::transient(format!("{what}: {other}"))),
                None => Err(super::transient(format!("{what}: no result"))),
            };
            results.push(BatchResult { custom_id: custom_id.to_owned(), outcome });
        }
        Ok(BatchPoll::Ended { status: "ended".into(), results })
    }

    /// A Messages response body → the answer, classified when it is unusable.
    fn parse(&self, message: Value, what: &str, max_output_tokens: u32) -> Result<Completion, ProviderError> {
        let message: MessageResponse = serde_json::from_value(message)
            .map_err(|e| super::transient(format!("{what}: the response is not a message: {e}")))?;
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
                    format!("{what}: the answer was cut off at max_output_tokens ({max_output_tokens})"),
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

/// The user message's content: the text alone, or the documents first (`document` blocks for PDFs,
/// `image` blocks for images, base64) and the text after them, as Anthropic advises.
fn user_content(request: &CompletionRequest<'_>) -> Value {
    let documents = &request.prompt.documents;
    if documents.is_empty() {
        return json!(request.prompt.user);
    }
    let mut blocks: Vec<Value> = documents
        .iter()
        .map(|d| {
            let source = json!({"type": "base64", "media_type": d.media_type, "data": super::documents::base64(d)});
            if d.is_image() {
                json!({"type": "image", "source": source})
            } else {
                json!({"type": "document", "source": source, "title": d.name})
            }
        })
        .collect();
    blocks.push(json!({"type": "text", "text": request.prompt.user}));
    Value::Array(blocks)
}
