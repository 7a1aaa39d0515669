//! OpenAI Chat Completions, and every server that speaks it (Ollama, vLLM, llama.cpp, OpenRouter,
//! Azure OpenAI in both URL styles). Structured output goes out as
//! `response_format: {type: "json_schema", strict: true}`. Batches go through the Files and Batch
//! APIs: one JSONL file of chat requests, polled until it ends, results matched by `custom_id`.

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
use crate::config::{DocumentInput, KeyHeader, OpenAiProvider, PriceConfig};

pub struct OpenAi {
    name: String,
    base_url: String,
    api_key: Option<SecretString>,
    api_version: Option<String>,
    key_header: KeyHeader,
    http: reqwest::Client,
    pub(super) prices: BTreeMap<String, PriceConfig>,
    pub(super) gate: Arc<RateGate>,
    batch_limits: BatchLimits,
    documents: DocumentInput,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: i64,
    completion_tokens: i64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct BatchObject {
    id: String,
    status: String,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    errors: Option<Value>,
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct BatchList {
    data: Vec<BatchObject>,
}

/// OpenAI's documented per-batch limits: 50,000 requests, 200 MB.
const MAX_BATCH_REQUESTS: usize = 50_000;
const MAX_BATCH_BYTES: usize = 200 * 1024 * 1024;

impl OpenAi {
    pub fn new(name: &str, config: &OpenAiProvider) -> Self {
        let key_header =
            config.auth.unwrap_or(if config.api_version.is_some() { KeyHeader::ApiKey } else { KeyHeader::Bearer });
        Self {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.as_ref().map(|s| s.0.clone()),
            api_version: config.api_version.clone(),
            key_header,
            http: http::client(Duration::from_secs_f64(config.timeout_seconds)),
            prices: config.prices.clone(),
            gate: Arc::new(RateGate::new(name, config.requests_per_minute, config.tokens_per_minute)),
            batch_limits: BatchLimits {
                max_requests: config.batch_max_requests.unwrap_or(MAX_BATCH_REQUESTS).min(MAX_BATCH_REQUESTS),
                max_bytes: config.batch_max_bytes.unwrap_or(MAX_BATCH_BYTES).min(MAX_BATCH_BYTES),
            },
            documents: config.documents,
        }
    }

    /// Whether documents go as their text layer (`documents = "text"`: a server without document input).
    pub fn documents_as_text(&self) -> bool {
        self.documents == DocumentInput::Text
    }

    /// The user message's content: the text alone, or with the documents as `file` parts (PDFs,
    /// `file_data` a data URL) and `image_url` parts (images), or — for a text-only server — with
    /// each PDF's text layer fenced as data after it.
    fn user_content(&self, request: &CompletionRequest<'_>) -> Value {
        let documents = &request.prompt.documents;
        if documents.is_empty() {
            return json!(request.prompt.user);
        }
        if self.documents_as_text() {
            return json!(format!("{}{}", request.prompt.user, super::documents::fenced_text(documents)));
        }
        let mut parts = vec![json!({"type": "text", "text": request.prompt.user})];
        for d in documents {
            parts.push(if d.is_image() {
                json!({"type": "image_url", "image_url": {"url": super::documents::data_url(d)}})
            } else {
                json!({"type": "file", "file": {"filename": d.name, "file_data": super::documents::data_url(d)}})
            });
        }
        Value::Array(parts)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.api_key, self.key_header) {
            (Some(key), KeyHeader::Bearer) => request.bearer_auth(key.expose_secret()),
            (Some(key), KeyHeader::ApiKey) => request.header("api-key", key.expose_secret()),
            (None, _) => request,
        }
    }

    /// Where chat completions for `model` go.
    fn chat_url(&self, model: &str) -> String {
        match &self.api_version {
            Some(version) => format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                self.base_url,
                urlencode(model),
                urlencode(version)
            ),
            None => format!("{}/chat/completions", self.base_url),
        }
    }

    pub async fn check(&self) -> Result<(), ProviderError> {
        let what = format!("provider {}: list models", self.name);
        let url = match &self.api_version {
            Some(version) => format!("{}/openai/models?api-version={}", self.base_url, urlencode(version)),
            None => format!("{}/models", self.base_url),
        };
        let _: Value = call_json(self.authorized(self.http.get(url)), &what, &self.gate).await?;
        Ok(())
    }

    /// The request body, exactly as sent.
    pub fn body(&self, request: &CompletionRequest<'_>) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &request.prompt.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": self.user_content(request)}));
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "max_completion_tokens": request.max_output_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name(request.schema_name), "strict": true, "schema": request.schema},
            },
        });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        body
    }

    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        let what = format!("provider {}: chat completion with {}", self.name, request.model);
        let post = self.authorized(self.http.post(self.chat_url(request.model))).json(&self.body(request));
        let chat: Value = call_json(post, &what, &self.gate).await?;
        parse(chat, &what, request.max_output_tokens)
    }

    pub fn batch_limits(&self) -> Option<BatchLimits> {
        // Azure's classic deployment URLs have no batch endpoints; its /openai/v1 URLs do.
        self.api_version.is_none().then_some(self.batch_limits)
    }

    /// One JSONL line of a batch input file.
    pub fn batch_line(&self, custom_id: &str, request: &CompletionRequest<'_>) -> Value {
        json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": self.body(request)})
    }

    /// Uploads the lines as a JSONL file and creates the batch, tagged with `tag` in its metadata.
    pub async fn submit_batch(&self, tag: &str, lines: &[Value]) -> Result<String, ProviderError> {
        let what = format!("provider {}: batch {tag}", self.name);
        let mut jsonl = String::new();
        for line in lines {
            jsonl.push_str(&line.to_string());
            jsonl.push('\n');
        }
        let part = reqwest::multipart::Part::bytes(jsonl.into_bytes())
            .file_name(format!("{tag}.jsonl"))
            .mime_str("application/jsonl")
            .map_err(|e| super::permanent(format!("{what}: {e}")))?;
        let form = reqwest::multipart::Form::new().text("purpose", "batch").part("file", part);
        let post = self.authorized(self.http.post(format!("{}/files", self.base_url))).multipart(form);
        let file: Value = call_json(post, &format!("{what}: upload"), &self.gate).await?;
        let file_id = file["id"].as_str().ok_or_else(|| super::permanent(format!("{what}: upload answered no id")))?;
        let body = json!({
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"enrichd_batch": tag},
        });
        let post = self.authorized(self.http.post(format!("{}/batches", self.base_url))).json(&body);
        let batch: BatchObject = call_json(post, &format!("{what}: create"), &self.gate).await?;
        Ok(batch.id)
    }

    /// The batch created with `tag`, if the provider has one (recovery after a crash between
    /// submitting and recording the id).
    pub async fn find_batch(&self, tag: &str) -> Result<Option<String>, ProviderError> {
        let what = format!("provider {}: list batches", self.name);
        let get = self.authorized(self.http.get(format!("{}/batches?limit=100", self.base_url)));
        let list: BatchList = call_json(get, &what, &self.gate).await?;
        Ok(list.data.into_iter().find(|b| b.metadata.as_ref().is_some_and(|m| m["enrichd_batch"] == tag)).map(|b| b.id))
    }

    pub async fn poll_batch(&self, id: &str, max_output_tokens: u32) -> Result<BatchPoll, ProviderError> {
        let what = format!("provider {}: batch {id}", self.name);
        let get = self.authorized(self.http.get(format!("{}/batches/{id}", self.base_url)));
        let batch: BatchObject = call_json(get, &what, &self.gate).await?;
        // Azure spells statuses with a capital letter.
        let status = batch.status.to_ascii_lowercase();
        match status.as_str() {
            "validating" | "in_progress" | "finalizing" | "cancelling" => return Ok(BatchPoll::Running),
            "failed" => {
                let reason = batch
                    .errors
                    .as_ref()
                    .and_then(|e| e["data"].as_array())
                    .map(|d| {
                        d.iter()
                            .map(|e| {
                                format!(
                                    "{}: {}",
                                    e["code"].as_str().unwrap_or("?"),
                                    e["message"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                return Ok(BatchPoll::Failed { message: format!("{what} failed: {reason}") });
            }
            _ => {}
        }
        let mut results = Vec::new();
        for file in [&batch.output_file_id, &batch.error_file_id].into_iter().flatten() {
            let text = self.file_content(file, &what).await?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(line) = serde_json::from_str::<Value>(line) else {
                    tracing::warn!(batch = id, "skipping a batch result line that is not JSON");
                    continue;
                };
                let Some(custom_id) = line["custom_id"].as_str() else { continue };
                results.push(BatchResult {
                    custom_id: custom_id.to_owned(),
                    outcome: line_outcome(&line, &format!("{what}: {custom_id}"), max_output_tokens),
                });
            }
        }
        Ok(BatchPoll::Ended { status, results })
    }

    async fn file_content(&self, file: &str, what: &str) -> Result<String, ProviderError> {
        let get = self.authorized(self.http.get(format!("{}/files/{file}/content", self.base_url)));
        let response = http::send(get, what).await.map_err(super::from_http)?;
        response.text().await.map_err(|e| super::transient(format!("{what}: reading file {file}: {e}")))
    }
}

/// One output or error line: the answer, or why there is none.
fn line_outcome(line: &Value, what: &str, max_output_tokens: u32) -> Result<Completion, ProviderError> {
    if let Some(error) = line.get("error").filter(|e| !e.is_null()) {
        let code = error["code"].as_str().unwrap_or("error");
        let message = format!("{what}: {code}: {}", error["message"].as_str().unwrap_or(""));
        return Err(if matches!(code, "batch_expired" | "batch_cancelled") {
            super::not_run(message)
        } else {
            super::transient(message)
        });
    }
    let response = &line["response"];
    let status = response["status_code"].as_u64().unwrap_or(0);
    if status == 200 {
        return parse(response["body"].clone(), what, max_output_tokens);
    }
    let code = response["body"]["error"]["code"].as_str().unwrap_or("");
    let message =
        format!("{what}: HTTP {status} {code}: {}", response["body"]["error"]["message"].as_str().unwrap_or(""));
    // Like realtime: a bad request or a quota error will not get better by retrying.
    if status == 400 || status == 401 || status == 403 || code == "insufficient_quota" {
        Err(super::permanent(message))
    } else {
        Err(super::transient(message))
    }
}

/// A chat completion body → the answer, classified when it is unusable.
fn parse(chat: Value, what: &str, max_output_tokens: u32) -> Result<Completion, ProviderError> {
    let chat: ChatResponse = serde_json::from_value(chat)
        .map_err(|e| super::transient(format!("{what}: the response is not a chat completion: {e}")))?;
    let usage = chat
        .usage
        .map(|u| TokenUsage {
            input: u.prompt_tokens,
            cached_input: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            output: u.completion_tokens,
        })
        .unwrap_or_default();
    let bad = |message: String, raw: Option<String>| ProviderError {
        kind: ProviderErrorKind::BadAnswer,
        message,
        retry_after: None,
        raw,
        usage,
    };
    let Some(choice) = chat.choices.into_iter().next() else {
        return Err(bad(format!("{what}: the response has no choices"), None));
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        return Err(bad(format!("{what}: the model refused: {refusal}"), Some(refusal)));
    }
    let raw = choice.message.content.unwrap_or_default();
    if choice.finish_reason.as_deref() == Some("length") {
        return Err(bad(
            format!("{what}: the answer was cut off at max_output_tokens ({max_output_tokens})"),
            Some(raw),
        ));
    }
    match serde_json::from_str::<Value>(&raw) {
        Ok(answer) => Ok(Completion { answer, raw, usage }),
        Err(e) => Err(bad(format!("{what}: the answer is not valid JSON: {e}"), Some(raw))),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
