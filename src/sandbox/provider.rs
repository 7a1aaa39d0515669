//! A model server for tests and demos, speaking OpenAI Chat Completions and Anthropic Messages ("simulated model"). Its answers are
//! deterministic functions of the request: every string property of the requested schema is
//! `"<property> for <first line of the user message>"` (cut to the schema's `maxLength`), so a test
//! can tell which record an answer was produced for. Faults can be injected: latency, 5xx, 429 with
//! `retry-after`, and answers that are cut off mid-JSON.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{Map, Value, json};

/// Faults injected into `/v1/chat/completions`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub latency: Duration,
    pub server_error_rate: f64,
    pub rate_limit_rate: f64,
    /// Share of answers cut off mid-JSON with `finish_reason: "length"`.
    pub truncated_rate: f64,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub answered: u64,
    pub faults: u64,
}

#[derive(Default)]
struct Inner {
    faults: Faults,
    stats: Stats,
    subjects: Vec<String>,
}

/// A provider sandbox. Cloning shares it.
#[derive(Clone, Default)]
pub struct ProviderSandbox {
    api_key: Option<Arc<str>>,
    inner: Arc<Mutex<Inner>>,
}

impl ProviderSandbox {
    /// `api_key`: when set, requests must carry `Authorization: Bearer <api_key>`.
    pub fn new(api_key: Option<&str>) -> Self {
        Self { api_key: api_key.map(Into::into), inner: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The subject (first user-message line) of every answered request, in order.
    pub fn subjects(&self) -> Vec<String> {
        self.lock().subjects.clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(messages))
            .route("/v1/models", get(models))
            .with_state(self.clone())
    }

    /// Serves on `addr` in a background task; returns the bound address.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "provider sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// `Authorization: Bearer KEY` (OpenAI) or `x-api-key: KEY` (Anthropic).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else { return true };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("authorization") == Some(&format!("Bearer {key}")) || header("x-api-key") == Some(key)
    }

    /// Counts the request, waits the injected latency, and picks the fault to inject, if any.
    async fn begin(&self) -> (Faults, Option<Fault>) {
        let faults = {
            let mut inner = self.lock();
            inner.stats.requests += 1;
            inner.faults.clone()
        };
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        let roll: f64 = rand::rng().random();
        let fault = if roll < faults.rate_limit_rate {
            Some(Fault::RateLimited)
        } else if roll < faults.rate_limit_rate + faults.server_error_rate {
            Some(Fault::ServerError)
        } else {
            None
        };
        if fault.is_some() {
            self.lock().stats.faults += 1;
        }
        (faults, fault)
    }

    /// Whether to cut this answer off (and count it).
    fn truncate(&self, faults: &Faults) -> bool {
        let cut = rand::rng().random::<f64>() < faults.truncated_rate;
        if cut {
            self.lock().stats.faults += 1;
        }
        cut
    }

    fn answered(&self, subject: String) {
        let mut inner = self.lock();
        inner.stats.answered += 1;
        inner.subjects.push(subject);
    }
}

enum Fault {
    RateLimited,
    ServerError,
}

fn subject_of(user: &str) -> String {
    user.lines().next().unwrap_or_default().trim().chars().take(80).collect()
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"type": "error", "error": {"type": kind, "message": message}}))).into_response()
}

async fn messages(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (faults, fault) = sandbox.begin().await;
    if !sandbox.authorized(&headers) {
        return anthropic_error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key");
    }
    if headers.get("anthropic-version").is_none() {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    match fault {
        Some(Fault::RateLimited) => {
            let mut r = anthropic_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
            );
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            r.headers_mut().insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("0"));
            return r;
        }
        Some(Fault::ServerError) => {
            return anthropic_error(StatusCode::from_u16(529).expect("valid"), "overloaded_error", "Overloaded");
        }
        None => {}
    }
    let (Some(model), Some(max_tokens), Some(msgs)) =
        (body["model"].as_str(), body["max_tokens"].as_u64(), body["messages"].as_array())
    else {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model, max_tokens and messages are required",
        );
    };
    let user = msgs.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default();
    let subject = subject_of(user);
    let forced_tool = body["tool_choice"]["type"] == "tool";
    let schema = if forced_tool {
        let name = &body["tool_choice"]["name"];
        body["tools"].as_array().and_then(|t| t.iter().find(|t| &t["name"] == name)).map(|t| t["input_schema"].clone())
    } else {
        body["output_config"]["format"]["schema"].as_object().map(|_| body["output_config"]["format"]["schema"].clone())
    };
    let answer = answer_for(schema.as_ref().unwrap_or(&Value::Null), &subject, "answer");
    let mut text = answer.to_string();
    let mut stop = if forced_tool { "tool_use" } else { "end_turn" };
    if sandbox.truncate(&faults) {
        text.truncate(text.len() / 2);
        stop = "max_tokens";
    }
    let content = if forced_tool && stop == "tool_use" {
        json!([{"type": "tool_use", "id": "toolu_sandbox", "name": body["tool_choice"]["name"], "input": answer}])
    } else {
        json!([{"type": "text", "text": text}])
    };
    let system = body["system"].as_str().map_or(0, str::len);
    sandbox.answered(subject);
    Json(json!({
        "id": "msg_sandbox",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": {
            "input_tokens": (user.len() + system).div_ceil(4),
            "output_tokens": text.len().div_ceil(4).min(max_tokens as usize),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }))
    .into_response()
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

async fn models(State(sandbox): State<ProviderSandbox>, headers: HeaderMap) -> Response {
    if !sandbox.authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        );
    }
    Json(json!({"object": "list", "data": [{"id": "sandbox-model", "object": "model", "owned_by": "enrichd"}]}))
        .into_response()
}

async fn chat(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (faults, fault) = sandbox.begin().await;
    if !sandbox.authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        );
    }
    match fault {
        Some(Fault::RateLimited) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            );
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            r.headers_mut().insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
            return r;
        }
        Some(Fault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "server_error",
                "The server had an error processing your request.",
            );
        }
        None => {}
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", "'messages' is required.");
    };
    let user =
        messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default();
    let subject = subject_of(user);
    let schema = &body["response_format"]["json_schema"]["schema"];
    let answer = answer_for(schema, &subject, "answer");
    let mut content = answer.to_string();
    let mut finish = "stop";
    if sandbox.truncate(&faults) {
        content.truncate(content.len() / 2);
        finish = "length";
    }
    let prompt_chars: usize = messages.iter().filter_map(|m| m["content"].as_str()).map(str::len).sum();
    sandbox.answered(subject);
    Json(json!({
        "id": "chatcmpl-sandbox",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_chars.div_ceil(4),
            "completion_tokens": content.len().div_ceil(4),
            "total_tokens": prompt_chars.div_ceil(4) + content.len().div_ceil(4),
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }))
    .into_response()
}

/// A value that satisfies `schema` (the subset of JSON Schema that structured outputs use).
pub fn answer_for(schema: &Value, subject: &str, key: &str) -> Value {
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types.iter().find_map(|t| t.as_str().filter(|t| *t != "null")).unwrap_or("null"),
        t => t.as_str().unwrap_or("string"),
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (name, sub) in props {
                    out.insert(name.clone(), answer_for(sub, subject, name));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(1).max(1);
            Value::Array((0..n).map(|_| answer_for(&schema["items"], subject, key)).collect())
        }
        "integer" => json!(subject.len() as i64 % 100),
        "number" => json!((subject.len() % 100) as f64 / 10.0),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => {
            let mut text = format!("{key} for {subject}");
            let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
            while text.chars().count() < min {
                text.push_str(" (sandbox)");
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                text = text.chars().take(max as usize).collect();
            }
            json!(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_fit_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "title": {"type": "string", "maxLength": 12},
            "body": {"type": "string", "minLength": 40},
            "priority": {"enum": ["low", "high"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        }});
        let a = answer_for(&schema, "Product 9", "answer");
        assert_eq!(a["title"], "title for Pr");
        assert!(a["body"].as_str().unwrap().starts_with("body for Product 9"));
        assert!(a["body"].as_str().unwrap().len() >= 40);
        assert_eq!(a["priority"], "low");
        assert_eq!(a["tags"], json!(["tags for Product 9"]));
    }
}
