//! The Anthropic side of the sandbox: Messages (forced tool or `output_config` structured output)
//! and Message Batches.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::documents::{Carried, carried, document_tokens};
use super::{Batch, BatchKind, Begin, Fault, Faults, LineOutcome, ProviderSandbox, Spoil, spoiled_text, tokens};
use crate::provider::documents::Kind;

pub(super) fn routes() -> Router<ProviderSandbox> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/batches", post(create_batch).get(list_batches))
        .route("/v1/messages/batches/{id}", get(get_batch))
        .route("/v1/messages/batches/{id}/results", get(results))
        .route("/v1/messages/batches/{id}/cancel", post(cancel_batch))
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sandbox"})
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(error_body(kind, message))).into_response()
}

fn check_headers(sandbox: &ProviderSandbox, headers: &HeaderMap) -> Option<Response> {
    if !sandbox.authorized(headers) {
        return Some(error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key"));
    }
    if headers.get("anthropic-version").is_none() {
        return Some(error(StatusCode::BAD_REQUEST, "invalid_request_error", "anthropic-version: header is required"));
    }
    None
}

fn rfc3339_in(d: std::time::Duration) -> String {
    let at = std::time::SystemTime::now() + d;
    httpdate_rfc3339(at)
}

fn httpdate_rfc3339(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    chrono::DateTime::from_timestamp(secs.floor() as i64, ((secs.fract()) * 1e9) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn rate_headers(response: &mut Response, begin: &Begin) {
    let Some(rate) = begin.rate else { return };
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("anthropic-ratelimit-requests-limit", rate.per_minute.to_string());
    set("anthropic-ratelimit-requests-remaining", rate.remaining.to_string());
    set("anthropic-ratelimit-requests-reset", rfc3339_in(rate.reset));
}

async fn messages(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    sandbox.log("POST", "/v1/messages", &body);
    let begin = sandbox.begin().await;
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    let mut response = match begin.fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
            );
            if retry_after {
                let wait = begin.rate.map(|r| r.reset.as_secs_f64()).unwrap_or(1.0);
                r.headers_mut().insert("retry-after", HeaderValue::from(wait.ceil().max(1.0) as u64));
            }
            if begin.rate.is_none() {
                r.headers_mut().insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("0"));
            }
            r
        }
        Some(Fault::ServerError) => error(StatusCode::from_u16(529).expect("valid"), "overloaded_error", "Overloaded"),
        Some(Fault::OutOfMoney) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "You have reached your specified workspace API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.", "details": {"error_code": "enforced_spend_limit_reached"}}, "request_id": "req_sandbox"})),
        )
            .into_response(),
        Some(Fault::Hang) | None => match answer_message(&sandbox, &begin.faults, &body) {
            Ok(answer) => Json(answer).into_response(),
            Err((status, body)) => (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Json(body)).into_response(),
        },
    };
    rate_headers(&mut response, &begin);
    response
}

/// The message answering `body`, or a request error `(status, body)`.
fn answer_message(sandbox: &ProviderSandbox, faults: &Faults, body: &Value) -> Result<Value, (u16, Value)> {
    let (Some(model), Some(max_tokens), Some(msgs)) =
        (body["model"].as_str(), body["max_tokens"].as_u64(), body["messages"].as_array())
    else {
        return Err((400, error_body("invalid_request_error", "model, max_tokens and messages are required")));
    };
    let at = msgs.iter().rposition(|m| m["role"] == "user").unwrap_or(0);
    let (user, carried) = match msgs.get(at).map(|m| user_content(at, &m["content"])).transpose() {
        Ok(found) => found.unwrap_or_default(),
        Err(message) => return Err((400, error_body("invalid_request_error", &message))),
    };
    let user = user.as_str();
    let forced_tool = body["tool_choice"]["type"] == "tool";
    let schema = if forced_tool {
        let name = &body["tool_choice"]["name"];
        body["tools"].as_array().and_then(|t| t.iter().find(|t| &t["name"] == name)).map(|t| t["input_schema"].clone())
    } else {
        body["output_config"]["format"]["schema"].as_object().map(|_| body["output_config"]["format"]["schema"].clone())
    };
    let answer = sandbox.answer_reading(faults, schema.as_ref().unwrap_or(&Value::Null), user, &carried);
    let spoil = sandbox.spoil(faults);
    let text = spoiled_text(&answer, spoil);
    let (content, stop) = match spoil {
        Spoil::Refusal => (json!([{"type": "text", "text": "I can't help with that."}]), "refusal"),
        Spoil::Truncated => (json!([{"type": "text", "text": text}]), "max_tokens"),
        Spoil::InvalidJson => (json!([{"type": "text", "text": text}]), "end_turn"),
        Spoil::None if forced_tool => (
            json!([{"type": "tool_use", "id": "toolu_sandbox", "name": body["tool_choice"]["name"], "input": answer}]),
            "tool_use",
        ),
        Spoil::None => (json!([{"type": "text", "text": text}]), "end_turn"),
    };
    let system = body["system"].as_str().map_or(0, tokens);
    Ok(json!({
        "id": sandbox.new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": {
            "input_tokens": tokens(user) + system + document_tokens(Kind::Anthropic, &carried),
            "output_tokens": tokens(&text).min(max_tokens),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }))
}

async fn create_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    sandbox.log("POST", "/v1/messages/batches", &body);
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    let Some(requests) = body["requests"].as_array().filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "requests: at least one request is required");
    };
    let mut lines: Vec<(String, Value)> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let Some(custom_id) = r["custom_id"].as_str().filter(|c| {
            !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        }) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"),
            );
        };
        if lines.iter().any(|(c, _)| c == custom_id) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("requests.{i}.custom_id: duplicate {custom_id}"),
            );
        }
        lines.push((custom_id.to_owned(), r["params"].clone()));
    }
    let id = sandbox.new_id("msgbatch_");
    sandbox.add_batch(
        &id,
        Batch {
            kind: BatchKind::Anthropic,
            lines,
            polls: 0,
            created: super::unix_now(),
            metadata: Value::Null,
            cancelled: false,
            results: None,
            expired: false,
        },
    );
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

fn batch_object(sandbox: &ProviderSandbox, id: &str) -> Option<Value> {
    sandbox.with_batch(id, |b| {
        let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(b.created);
        let mut counts =
            json!({"processing": b.lines.len(), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0});
        let ended = b.results.is_some();
        if let Some(results) = &b.results {
            counts["processing"] = json!(0);
            for (_, outcome) in results {
                let bucket = match outcome {
                    LineOutcome::Answered(_) => "succeeded",
                    LineOutcome::Failed(..) => "errored",
                    LineOutcome::Expired => "expired",
                    LineOutcome::Cancelled => "canceled",
                };
                counts[bucket] = json!(counts[bucket].as_u64().unwrap_or(0) + 1);
            }
        }
        json!({
            "id": id,
            "type": "message_batch",
            "processing_status": if ended { "ended" } else if b.cancelled { "canceling" } else { "in_progress" },
            "request_counts": counts,
            "ended_at": if ended { json!(httpdate_rfc3339(std::time::SystemTime::now())) } else { Value::Null },
            "created_at": httpdate_rfc3339(created),
            "expires_at": httpdate_rfc3339(created + std::time::Duration::from_secs(86_400)),
            "archived_at": null,
            "cancel_initiated_at": null,
            "results_url": if ended { json!(format!("/v1/messages/batches/{id}/results")) } else { Value::Null },
        })
    })
}

fn answer_line(sandbox: &ProviderSandbox, faults: &Faults, body: &Value) -> LineOutcome {
    match answer_message(sandbox, faults, body) {
        Ok(answer) => LineOutcome::Answered(answer),
        Err((status, body)) => LineOutcome::Failed(status, body),
    }
}

async fn get_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    if !sandbox.advance_batch(&id, answer_line) {
        return error(StatusCode::NOT_FOUND, "not_found_error", &format!("batch {id} not found"));
    }
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn cancel_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    if sandbox.with_batch(&id, |b| b.cancelled = true).is_none() {
        return error(StatusCode::NOT_FOUND, "not_found_error", &format!("batch {id} not found"));
    }
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn list_batches(State(sandbox): State<ProviderSandbox>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    let mut ids = sandbox.batch_ids(BatchKind::Anthropic);
    ids.reverse();
    let data: Vec<Value> = ids.iter().take(100).filter_map(|id| batch_object(&sandbox, id)).collect();
    Json(json!({"data": data, "has_more": false, "first_id": ids.first(), "last_id": ids.last()})).into_response()
}

/// Results JSONL, out of submission order.
async fn results(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = check_headers(&sandbox, &headers) {
        return refused;
    }
    let Some(Some(lines)) = sandbox.with_batch(&id, |b| {
        b.results.as_ref().map(|results| {
            results
                .iter()
                .map(|(custom_id, outcome)| {
                    let result = match outcome {
                        LineOutcome::Answered(message) => json!({"type": "succeeded", "message": message}),
                        LineOutcome::Failed(_, body) => json!({"type": "errored", "error": body}),
                        LineOutcome::Expired => json!({"type": "expired"}),
                        LineOutcome::Cancelled => json!({"type": "canceled"}),
                    };
                    json!({"custom_id": custom_id, "result": result}).to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }) else {
        return error(StatusCode::NOT_FOUND, "not_found_error", &format!("batch {id} has no results yet"));
    };
    ([("content-type", "application/binary")], lines).into_response()
}

/// The text and documents of user message `at`: a string, or content blocks (`text`, `document`
/// with a base64 PDF, `image` with a base64 PNG, JPEG, GIF or WebP). A malformed block is refused
/// the way the Messages API refuses it, naming its path.
fn user_content(at: usize, content: &Value) -> Result<(String, Vec<Carried>), String> {
    if let Some(text) = content.as_str() {
        return Ok((text.to_owned(), Vec::new()));
    }
    let Some(blocks) = content.as_array() else {
        return Err(format!("messages.{at}.content: Input should be a valid string or list"));
    };
    let (mut text, mut documents) = (String::new(), Vec::new());
    for (i, block) in blocks.iter().enumerate() {
        let path = format!("messages.{at}.content.{i}");
        let source = &block["source"];
        let kind = block["type"].as_str().unwrap_or_default();
        match kind {
            "text" => text.push_str(block["text"].as_str().ok_or_else(|| format!("{path}.text: Field required"))?),
            "document" | "image" => {
                if source["type"] != "base64" {
                    return Err(format!("{path}.source.type: the sandbox takes base64 sources"));
                }
                let media_type =
                    source["media_type"].as_str().ok_or_else(|| format!("{path}.source.media_type: Field required"))?;
                let allowed: &[&str] = if kind == "document" {
                    &["application/pdf"]
                } else {
                    &["image/jpeg", "image/png", "image/gif", "image/webp"]
                };
                if !allowed.contains(&media_type) {
                    return Err(format!("{path}.source.media_type: Input should be {}", allowed.join(", ")));
                }
                let data = source["data"].as_str().ok_or_else(|| format!("{path}.source.data: Field required"))?;
                let name = block["title"].as_str().unwrap_or(kind);
                documents.push(carried(name, media_type, data).map_err(|e| format!("{path}.source: {e}"))?);
            }
            other => {
                return Err(format!(
                    "{path}.type: Input tag '{other}' found using 'type' does not match any of the expected tags"
                ));
            }
        }
    }
    Ok((text, documents))
}
