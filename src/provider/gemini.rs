//! Google Gemini API (Generative Language API `v1beta`). Realtime requests go to
//! `models/{model}:generateContent` with the task's JSON Schema as
//! `generationConfig.responseJsonSchema`. Batches go to `models/{model}:batchGenerateContent`:
//! inline up to 20 MB, as a JSONL file uploaded through the File API above that. Every request of a
//! batch carries our line id as its key, and the batch carries our tag as its display name, so a
//! batch submitted just before a crash is found again. A batch is a long-running operation polled
//! at `batches/{id}`; its results name their key and may come in any order.
//!
//! Gemini sends no rate-limit headers. A 429 says how long to wait in its body
//! (`google.rpc.RetryInfo`), and only the body tells a per-minute limit from an exhausted daily
//! quota or prepaid balance (see [`out_of_quota`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enrichd_connector::http;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    BatchLimits, BatchPoll, BatchResult, Completion, CompletionRequest, ProviderError, ProviderErrorKind, RateGate,
    TokenUsage, call_json, send,
};
use crate::config::{GeminiProvider, PriceConfig};

pub struct Gemini {
    name: String,
    base_url: String,
    api_key: SecretString,
    thinking_budget: Option<i32>,
    http: reqwest::Client,
    pub(super) prices: BTreeMap<String, PriceConfig>,
    pub(super) gate: Arc<RateGate>,
    batch_limits: BatchLimits,
    inline_max_bytes: usize,
    request_inline_max_bytes: usize,
}

/// Google documents no request count per batch; this keeps one batch's results a size that is read
/// in one go.
const DEFAULT_BATCH_REQUESTS: usize = 100_000;
/// Batches are built and uploaded from memory: 200 MB unless config raises it (up to 2 GB).
const DEFAULT_BATCH_BYTES: usize = 200 * 1024 * 1024;
/// Pages of 100 batches looked through when finding a batch by its tag.
const FIND_PAGES: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
    /// A thought summary, not the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    /// Includes the cached part.
    #[serde(default)]
    prompt_token_count: i64,
    #[serde(default)]
    cached_content_token_count: i64,
    #[serde(default)]
    candidates_token_count: i64,
    /// Thinking, billed as output.
    #[serde(default)]
    thoughts_token_count: i64,
}

/// A long-running operation: a batch being created or run (`metadata` is the batch).
#[derive(Deserialize)]
struct Operation {
    name: String,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    response: Value,
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationList {
    #[serde(default)]
    operations: Vec<Operation>,
    next_page_token: Option<String>,
}

impl Gemini {
    /// Google's limit for a batch sent inline in its create request.
    pub const INLINE_MAX_BYTES: usize = 20 * 1024 * 1024;
    /// Google's limit for a batch input file.
    pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024 * 1024;

    pub fn new(name: &str, config: &GeminiProvider) -> Self {
        Self {
            name: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').trim_end_matches("/v1beta").to_owned(),
            api_key: config.api_key.0.clone(),
            thinking_budget: config.thinking_budget,
            http: http::client(Duration::from_secs_f64(config.timeout_seconds)),
            prices: config.prices.clone(),
            gate: Arc::new(RateGate::new(name, config.requests_per_minute, config.tokens_per_minute)),
            batch_limits: BatchLimits {
                max_requests: config.batch_max_requests.unwrap_or(DEFAULT_BATCH_REQUESTS),
                max_bytes: config.batch_max_bytes.unwrap_or(DEFAULT_BATCH_BYTES).min(Self::MAX_BATCH_BYTES),
            },
            inline_max_bytes: config
                .batch_inline_max_bytes
                .unwrap_or(Self::INLINE_MAX_BYTES)
                .min(Self::INLINE_MAX_BYTES),
            request_inline_max_bytes: config
                .inline_max_bytes
                .unwrap_or(Self::REQUEST_INLINE_MAX_BYTES)
                .min(Self::REQUEST_INLINE_MAX_BYTES),
        }
    }

    /// The key goes in a header: a key in the URL (`?key=`) ends up in proxy and server logs.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("x-goog-api-key", self.api_key.expose_secret())
    }

    pub async fn check(&self) -> Result<(), ProviderError> {
        let what = format!("provider {}: list models", self.name);
        let get =
            self.authorized(self.http.get(format!("{}/v1beta/models", self.base_url))).query(&[("pageSize", "1")]);
        let _: Value = call_json(get, &what, &self.gate).await?;
        Ok(())
    }

    /// The `GenerateContentRequest`, exactly as sent, with every document inline.
    pub fn body(&self, request: &CompletionRequest<'_>) -> Value {
        self.body_with(request, &[])
    }

    /// The request with the documents whose index has a URI in `uploaded` referred to by that File
    /// API URI (`fileData`), the others inline (`inlineData`, base64). Documents come before the
    /// text, as Google advises for a prompt about a document.
    fn body_with(&self, request: &CompletionRequest<'_>, uploaded: &[Option<String>]) -> Value {
        let mut generation = json!({
            "responseMimeType": "application/json",
            "responseJsonSchema": request.schema,
            "maxOutputTokens": request.max_output_tokens,
        });
        if let Some(t) = request.temperature {
            generation["temperature"] = json!(t);
        }
        if let Some(budget) = self.thinking_budget {
            generation["thinkingConfig"] = json!({"thinkingBudget": budget});
        }
        let mut parts: Vec<Value> = request
            .prompt
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| match uploaded.get(i).cloned().flatten() {
                Some(uri) => json!({"fileData": {"mimeType": d.media_type, "fileUri": uri}}),
                None => json!({"inlineData": {"mimeType": d.media_type, "data": super::documents::base64(d)}}),
            })
            .collect();
        parts.push(json!({"text": request.prompt.user}));
        let mut body = json!({
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": generation,
        });
        if let Some(system) = &request.prompt.system {
            body["systemInstruction"] = json!({"parts": [{"text": system}]});
        }
        body
    }

    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, ProviderError> {
        let what = format!("provider {}: generateContent with {}", self.name, request.model);
        let url = format!("{}/v1beta/{}:generateContent", self.base_url, model_path(request.model));
        let uploaded = self.upload_documents(request, &what).await?;
        let post = self.authorized(self.http.post(url)).json(&self.body_with(request, &uploaded));
        let response: Value = call_json(post, &what, &self.gate).await?;
        parse(response, &what, request.max_output_tokens)
    }

    pub fn batch_limits(&self) -> BatchLimits {
        self.batch_limits
    }

    /// One request of a batch, in the JSONL file form (`key` is our line id).
    pub fn batch_line(&self, custom_id: &str, request: &CompletionRequest<'_>) -> Value {
        json!({"key": custom_id, "request": self.body(request)})
    }

    /// Creates the batch, named `tag`: inline when it fits in 20 MB (or the configured
    /// `batch_inline_max_bytes`), from an uploaded JSONL file otherwise. Returns `batches/{id}`.
    pub async fn submit_batch(&self, tag: &str, model: &str, lines: &[Value]) -> Result<String, ProviderError> {
        let what = format!("provider {}: batch {tag}", self.name);
        let requests: Vec<Value> =
            lines.iter().map(|l| json!({"request": l["request"], "metadata": {"key": l["key"]}})).collect();
        let inline = json!({"requests": {"requests": requests}});
        let input_config = if inline.to_string().len() <= self.inline_max_bytes {
            inline
        } else {
            json!({"fileName": self.upload(tag, lines, &what).await?})
        };
        let body = json!({"batch": {"displayName": tag, "model": model_path(model), "inputConfig": input_config}});
        let url = format!("{}/v1beta/{}:batchGenerateContent", self.base_url, model_path(model));
        let post = self.authorized(self.http.post(url)).json(&body);
        let operation: Operation = call_json(post, &format!("{what}: create"), &self.gate).await?;
        Ok(operation.name)
    }

    /// Google's limit for a `generateContent` request carrying its data inline.
    pub const REQUEST_INLINE_MAX_BYTES: usize = 20 * 1024 * 1024;

    /// When the request would pass 20 MB with every document inline, uploads documents through the
    /// File API, largest first, until the rest fits; returns each document's file URI (or `None`:
    /// inline).
    async fn upload_documents(
        &self,
        request: &CompletionRequest<'_>,
        what: &str,
    ) -> Result<Vec<Option<String>>, ProviderError> {
        let documents = &request.prompt.documents;
        let mut uploaded: Vec<Option<String>> = vec![None; documents.len()];
        let mut size = self.body(request).to_string().len();
        let mut largest: Vec<usize> = (0..documents.len()).collect();
        largest.sort_by_key(|i| std::cmp::Reverse(documents[*i].bytes.len()));
        for i in largest {
            if size <= self.request_inline_max_bytes {
                break;
            }
            let d = &documents[i];
            uploaded[i] = Some(self.upload_document(d, &format!("{what}: upload {}", d.name)).await?);
            size = size.saturating_sub(super::documents::base64_len(d.bytes.len()));
        }
        Ok(uploaded)
    }

    /// Uploads one document (resumable protocol, one chunk); returns its `uri`.
    async fn upload_document(&self, d: &crate::document::Document, what: &str) -> Result<String, ProviderError> {
        let start = self
            .authorized(self.http.post(format!("{}/upload/v1beta/files", self.base_url)))
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "start")
            .header("x-goog-upload-header-content-length", d.bytes.len())
            .header("x-goog-upload-header-content-type", d.media_type.as_str())
            .json(&json!({"file": {"displayName": d.name}}));
        let started = send(start, &format!("{what}: start"), &self.gate).await?;
        let upload_url = started
            .headers()
            .get("x-goog-upload-url")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| super::transient(format!("{what}: the upload start answered no x-goog-upload-url")))?;
        let finish = self
            .authorized(self.http.post(upload_url))
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-offset", "0")
            .header(reqwest::header::CONTENT_TYPE, d.media_type.as_str())
            .body(d.bytes.clone());
        let file: Value = call_json(finish, what, &self.gate).await?;
        file["file"]["uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| super::transient(format!("{what}: the upload answered no file uri")))
    }

    /// Uploads `lines` as a JSONL file (the File API's resumable protocol, in one chunk); returns
    /// the file's name (`files/{id}`).
    async fn upload(&self, tag: &str, lines: &[Value], what: &str) -> Result<String, ProviderError> {
        let mut jsonl = String::new();
        for line in lines {
            jsonl.push_str(&line.to_string());
            jsonl.push('\n');
        }
        let start = self
            .authorized(self.http.post(format!("{}/upload/v1beta/files", self.base_url)))
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "start")
            .header("x-goog-upload-header-content-length", jsonl.len())
            .header("x-goog-upload-header-content-type", "application/jsonl")
            .json(&json!({"file": {"displayName": format!("{tag}.jsonl")}}));
        let started = send(start, &format!("{what}: upload start"), &self.gate).await?;
        let upload_url = started
            .headers()
            .get("x-goog-upload-url")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| super::transient(format!("{what}: the upload start answered no x-goog-upload-url")))?;
        let finish = self
            .authorized(self.http.post(upload_url))
            .header("x-goog-upload-command", "upload, finalize")
            .header("x-goog-upload-offset", "0")
            .header(reqwest::header::CONTENT_TYPE, "application/jsonl")
            .body(jsonl);
        let file: Value = call_json(finish, &format!("{what}: upload"), &self.gate).await?;
        file["file"]["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| super::transient(format!("{what}: the upload answered no file name")))
    }

    /// The batch whose display name is `tag`, if Google has one (recovery after a crash between
    /// submitting and recording the id).
    pub async fn find_batch(&self, tag: &str) -> Result<Option<String>, ProviderError> {
        let what = format!("provider {}: list batches", self.name);
        let mut page_token: Option<String> = None;
        for _ in 0..FIND_PAGES {
            let mut get = self
                .authorized(self.http.get(format!("{}/v1beta/batches", self.base_url)))
                .query(&[("pageSize", "100")]);
            if let Some(token) = &page_token {
                get = get.query(&[("pageToken", token)]);
            }
            let list: OperationList = call_json(get, &what, &self.gate).await?;
            if let Some(found) = list.operations.into_iter().find(|o| o.metadata["displayName"] == tag) {
                return Ok(Some(found.name));
            }
            match list.next_page_token.filter(|t| !t.is_empty()) {
                Some(token) => page_token = Some(token),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    pub async fn poll_batch(&self, id: &str, max_output_tokens: u32) -> Result<BatchPoll, ProviderError> {
        let what = format!("provider {}: batch {id}", self.name);
        let get = self.authorized(self.http.get(format!("{}/v1beta/{}", self.base_url, batch_path(id))));
        let operation: Operation = call_json(get, &what, &self.gate).await?;
        // The REST enum says BATCH_STATE_*, the docs and SDKs JOB_STATE_*.
        let state = operation.metadata["state"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("BATCH_STATE_")
            .trim_start_matches("JOB_STATE_")
            .to_ascii_lowercase();
        let output = batch_output(&operation);
        let ended = matches!(state.as_str(), "succeeded" | "cancelled" | "expired");
        if state == "failed" || (operation.done && !ended && output.is_none()) {
            let reason = operation.error.as_ref().map(status_text).unwrap_or_else(|| "no reason given".into());
            return Ok(BatchPoll::Failed { message: format!("{what} failed: {reason}") });
        }
        if !ended && !operation.done {
            return Ok(BatchPoll::Running);
        }
        let status = if state.is_empty() || state == "unspecified" { "done".to_owned() } else { state };
        let mut results = Vec::new();
        match output {
            // An expired batch has nothing to read; its lines go back to the queue.
            None => {}
            Some(Output::Inline(responses)) => {
                for response in &responses {
                    let Some(key) = response["metadata"]["key"].as_str() else {
                        tracing::warn!(batch = id, "skipping an inline batch response without a key");
                        continue;
                    };
                    let outcome = line_outcome(response, &format!("{what}: {key}"), max_output_tokens);
                    results.push(BatchResult { custom_id: key.to_owned(), outcome });
                }
            }
            Some(Output::File(file)) => {
                let text = self.download(&file, &what).await?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let Ok(line) = serde_json::from_str::<Value>(line) else {
                        tracing::warn!(batch = id, "skipping a batch result line that is not JSON");
                        continue;
                    };
                    let Some(key) = line["key"].as_str() else { continue };
                    let outcome = line_outcome(&line, &format!("{what}: {key}"), max_output_tokens);
                    results.push(BatchResult { custom_id: key.to_owned(), outcome });
                }
            }
        }
        Ok(BatchPoll::Ended { status, results })
    }

    async fn download(&self, file: &str, what: &str) -> Result<String, ProviderError> {
        let url = format!("{}/download/v1beta/{}:download", self.base_url, file);
        let get = self.authorized(self.http.get(url)).query(&[("alt", "media")]);
        let response = send(get, &format!("{what}: download {file}"), &self.gate).await?;
        response.text().await.map_err(|e| super::transient(format!("{what}: reading {file}: {e}")))
    }
}

/// `models/{model}`, unless the pipeline's model already names its collection.
fn model_path(model: &str) -> String {
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

fn batch_path(id: &str) -> String {
    if id.starts_with("batches/") { id.to_owned() } else { format!("batches/{id}") }
}

/// Where a finished batch's results are.
enum Output {
    Inline(Vec<Value>),
    /// `files/{id}` of the JSONL results.
    File(String),
}

/// The spec puts the output under `response.output`, the docs' examples read `response` itself;
/// the batch in `metadata` carries it too.
fn batch_output(operation: &Operation) -> Option<Output> {
    [&operation.response["output"], &operation.response, &operation.metadata["output"]].into_iter().find_map(|o| {
        if let Some(file) = o["responsesFile"].as_str() {
            return Some(Output::File(file.to_owned()));
        }
        let inline = &o["inlinedResponses"];
        inline["inlinedResponses"].as_array().or_else(|| inline.as_array()).map(|r| Output::Inline(r.clone()))
    })
}

/// One batch response (inline or a file line): the answer, or why there is none.
fn line_outcome(line: &Value, what: &str, max_output_tokens: u32) -> Result<Completion, ProviderError> {
    if let Some(error) = line.get("error").filter(|e| e.is_object()) {
        return Err(line_error(error, what));
    }
    match line.get("response").filter(|r| r.is_object()) {
        Some(response) => parse(response.clone(), what, max_output_tokens),
        None => Err(super::transient(format!("{what}: neither a response nor an error"))),
    }
}

/// A `google.rpc.Status` of one batch request, classified like its realtime HTTP twin.
fn line_error(error: &Value, what: &str) -> ProviderError {
    let code = error["code"].as_i64().unwrap_or(2);
    let status = error["status"].as_str().unwrap_or_else(|| rpc_code_name(code));
    let message = format!("{what}: {}", status_text(error));
    match (status, code) {
        ("CANCELLED", _) => super::not_run(message),
        ("RESOURCE_EXHAUSTED" | "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" | "ABORTED" | "UNKNOWN", _) => {
            super::transient(message)
        }
        (_, 429 | 500..=599) => super::transient(message),
        _ => super::permanent(message),
    }
}

/// The name of a `google.rpc.Code` (what a `Status` carries when it has no `status` string).
fn rpc_code_name(code: i64) -> &'static str {
    match code {
        1 => "CANCELLED",
        3 | 400 => "INVALID_ARGUMENT",
        4 | 504 => "DEADLINE_EXCEEDED",
        5 | 404 => "NOT_FOUND",
        7 | 403 => "PERMISSION_DENIED",
        8 | 429 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        13 | 500 => "INTERNAL",
        14 | 503 => "UNAVAILABLE",
        16 | 401 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `STATUS (code): message` of a `google.rpc.Status`.
fn status_text(error: &Value) -> String {
    let code = error["code"].as_i64().unwrap_or(2);
    let status = error["status"].as_str().unwrap_or_else(|| rpc_code_name(code));
    format!("{status} ({code}): {}", error["message"].as_str().unwrap_or_default())
}

/// Whether a 429 body means the account cannot spend (prepaid credits depleted, a daily quota used
/// up until midnight Pacific) rather than a per-minute limit. Google words both as
/// `RESOURCE_EXHAUSTED` "You exceeded your current quota"; the `QuotaFailure` details name the
/// quota. Returns what ran out.
pub(super) fn out_of_quota(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = &value["error"];
    if error["status"] != "RESOURCE_EXHAUSTED" {
        return None;
    }
    if error["message"].as_str().is_some_and(|m| m.to_ascii_lowercase().contains("prepayment credits are depleted")) {
        return Some("prepaid credits depleted".into());
    }
    error["details"]
        .as_array()?
        .iter()
        .filter(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.rpc.QuotaFailure")))
        .flat_map(|d| d["violations"].as_array().into_iter().flatten())
        .filter_map(|v| v["quotaId"].as_str())
        .find(|id| id.contains("PerDay"))
        .map(|id| format!("daily quota {id} used up"))
}

/// A `GenerateContentResponse` → the answer, classified when it is unusable.
fn parse(response: Value, what: &str, max_output_tokens: u32) -> Result<Completion, ProviderError> {
    let response: GenerateContentResponse = serde_json::from_value(response)
        .map_err(|e| super::transient(format!("{what}: the response is not a GenerateContentResponse: {e}")))?;
    let usage = response
        .usage_metadata
        .map(|u| TokenUsage {
            input: u.prompt_token_count,
            cached_input: u.cached_content_token_count,
            output: u.candidates_token_count + u.thoughts_token_count,
        })
        .unwrap_or_default();
    let bad = |message: String, raw: Option<String>| ProviderError {
        kind: ProviderErrorKind::BadAnswer,
        message,
        retry_after: None,
        raw,
        usage,
    };
    if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(bad(format!("{what}: the model refused: the prompt was blocked ({reason})"), None));
    }
    let Some(candidate) = response.candidates.into_iter().next() else {
        return Err(bad(format!("{what}: the response has no candidates"), None));
    };
    let raw: String = candidate
        .content
        .map(|c| c.parts.into_iter().filter(|p| !p.thought).filter_map(|p| p.text).collect())
        .unwrap_or_default();
    match candidate.finish_reason.as_deref() {
        None | Some("STOP" | "FINISH_REASON_UNSPECIFIED") => {}
        Some("MAX_TOKENS") => {
            return Err(bad(
                format!("{what}: the answer was cut off at max_output_tokens ({max_output_tokens})"),
                Some(raw),
            ));
        }
        // SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, LANGUAGE, OTHER, …
        Some(reason) => {
            let raw = Some(raw).filter(|r| !r.is_empty());
            return Err(bad(format!("{what}: the model refused: the answer was withheld ({reason})"), raw));
        }
    }
    match serde_json::from_str::<Value>(&raw) {
        Ok(answer) => Ok(Completion { answer, raw, usage }),
        Err(e) => Err(bad(format!("{what}: the answer is not valid JSON: {e}"), Some(raw))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/gemini/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn usage_counts_thoughts_as_output_and_cached_tokens() {
        let c = parse(fixture("answer_with_thoughts.json"), "t", 100).unwrap();
        assert_eq!(c.answer, json!({"description": "A bolt."}), "thought parts are not the answer");
        assert_eq!(c.usage, TokenUsage { input: 1200, cached_input: 1024, output: 30 + 45 });
    }

    #[test]
    fn blocked_and_withheld_answers_are_refusals() {
        let e = parse(fixture("prompt_blocked.json"), "t", 100).unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::BadAnswer);
        assert!(e.message.contains("the prompt was blocked (PROHIBITED_CONTENT)"), "{}", e.message);
        let e = parse(fixture("recitation.json"), "t", 100).unwrap_err();
        assert!(e.message.contains("withheld (RECITATION)"), "{}", e.message);
        assert_eq!(e.raw.as_deref(), Some("{\"description\": \"Once upon"), "what was sent is kept");
    }

    #[test]
    fn quota_429s_are_told_from_rate_limits() {
        let read = |name: &str| out_of_quota(&fixture(name).to_string());
        assert_eq!(read("429_per_minute.json"), None);
        assert_eq!(
            read("429_per_day.json").as_deref(),
            Some("daily quota GenerateRequestsPerDayPerProjectPerModel-FreeTier used up")
        );
        assert_eq!(read("429_prepayment.json").as_deref(), Some("prepaid credits depleted"));
    }

    #[test]
    fn batch_operations_in_both_spellings() {
        let op: Operation = serde_json::from_value(fixture("batch_done_job_state.json")).unwrap();
        let Some(Output::Inline(responses)) = batch_output(&op) else { panic!("inline output expected") };
        assert_eq!(responses.len(), 2);
        let outcomes: Vec<_> = responses.iter().map(|r| line_outcome(r, "t", 100)).collect();
        assert!(outcomes[0].is_ok());
        assert_eq!(outcomes[1].as_ref().unwrap_err().kind, ProviderErrorKind::Transient, "INTERNAL is retried");
        assert_eq!(line_error(&json!({"code": 1, "message": "x"}), "t").kind, ProviderErrorKind::NotRun);
        assert_eq!(line_error(&json!({"code": 3, "message": "x"}), "t").kind, ProviderErrorKind::Permanent);
    }
}
