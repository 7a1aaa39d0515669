//! The OpenAI side of the sandbox: Chat Completions (at `/v1`, Azure's `/openai/v1` and Azure's
//! `/openai/deployments/{d}/…?api-version=`), models, files and batches.

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Batch, BatchKind, Begin, Fault, LineOutcome, ProviderSandbox, Spoil, go_duration, spoiled_text, tokens};

pub(super) fn routes() -> Router<ProviderSandbox> {
    let api = || {
        Router::new()
            .route("/chat/completions", post(chat))
            .route("/models", get(models))
            .route("/files", post(upload))
            .route("/files/{id}/content", get(file_content))
            .route("/batches", post(create_batch).get(list_batches))
            .route("/batches/{id}", get(get_batch))
            .route("/batches/{id}/cancel", post(cancel_batch))
    };
    Router::new()
        .nest("/v1", api())
        .nest("/openai/v1", api())
        .route("/openai/deployments/{deployment}/chat/completions", post(azure_chat))
}

pub(super) fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.")
}

async fn models(State(sandbox): State<ProviderSandbox>, headers: HeaderMap) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    Json(json!({"object": "list", "data": [{"id": "sandbox-model", "object": "model", "created": 0, "owned_by": "enrichd"}]}))
        .into_response()
}

/// Azure's classic URL: the deployment names the model, `api-version` is required, and the key
/// comes in an `api-key` header.
async fn azure_chat(
    State(sandbox): State<ProviderSandbox>,
    Path(deployment): Path<String>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Response {
    if !query.contains_key("api-version") {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "404", "message": "Resource not found"}})))
            .into_response();
    }
    if sandbox.api_key.is_some() && headers.get("api-key").is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})),
        )
            .into_response();
    }
    body["model"] = json!(deployment);
    chat(State(sandbox), headers, Json(body)).await
}

fn rate_headers(response: &mut Response, begin: &Begin) {
    let Some(rate) = begin.rate else { return };
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-ratelimit-limit-requests", rate.per_minute.to_string());
    set("x-ratelimit-remaining-requests", rate.remaining.to_string());
    set("x-ratelimit-reset-requests", go_duration(rate.reset));
}

async fn chat(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    sandbox.log("POST", "/v1/chat/completions", &body);
    let begin = sandbox.begin().await;
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    let mut response = match begin.fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests per min (RPM). Please try again in 1s.",
            );
            if retry_after {
                let injected =
                    if begin.faults.retry_after.is_zero() { 1.0 } else { begin.faults.retry_after.as_secs_f64() };
                let wait = begin.rate.map(|r| r.reset.as_secs_f64()).unwrap_or(injected);
                r.headers_mut().insert("retry-after-ms", HeaderValue::from(((wait * 1000.0).ceil() as u64).max(1)));
                r.headers_mut().insert("retry-after", HeaderValue::from(wait.ceil().max(1.0) as u64));
            }
            if begin.rate.is_none() {
                r.headers_mut().insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
            }
            r
        }
        Some(Fault::ServerError) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "server_error",
            "The server had an error processing your request.",
        ),
        Some(Fault::OutOfMoney) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        Some(Fault::Hang) | None => match answer_chat(&sandbox, &begin.faults, &body) {
            Ok(answer) => Json(answer).into_response(),
            Err((status, body)) => {
                (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Json(body)).into_response()
            }
        },
    };
    rate_headers(&mut response, &begin);
    response
}

/// The chat completion for `body`, or a request error `(status, body)`.
pub(super) fn answer_chat(
    sandbox: &ProviderSandbox,
    faults: &super::Faults,
    body: &Value,
) -> Result<Value, (u16, Value)> {
    let invalid = |message: &str| {
        (400, json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}))
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(invalid("'messages' is required."));
    };
    if body.get("model").and_then(Value::as_str).is_none() {
        return Err(invalid("you must provide a model parameter"));
    }
    let at = messages.iter().rposition(|m| m["role"] == "user").unwrap_or(0);
    let (user, carried) = match messages.get(at).map(|m| user_content(at, &m["content"])).transpose() {
        Ok(found) => found.unwrap_or_default(),
        Err((param, message)) => {
            return Err((
                400,
                json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_value"}}),
            ));
        }
    };
    let user = user.as_str();
    let schema = &body["response_format"]["json_schema"]["schema"];
    let answer = sandbox.answer_reading(faults, schema, user, &carried);
    let spoil = sandbox.spoil(faults);
    let content = spoiled_text(&answer, spoil);
    let (content, refusal, finish) = match spoil {
        Spoil::Refusal => (Value::Null, json!("I'm sorry, I can't help with that request."), "stop"),
        Spoil::Truncated => (json!(content), Value::Null, "length"),
        _ => (json!(content), Value::Null, "stop"),
    };
    let prompt: u64 = messages.iter().filter_map(|m| m["content"].as_str()).map(tokens).sum::<u64>()
        + if messages.get(at).is_some_and(|m| m["content"].is_array()) { tokens(user) } else { 0 }
        + super::documents::document_tokens(crate::provider::documents::Kind::OpenAi, &carried);
    let completion = content.as_str().map(tokens).unwrap_or(8);
    Ok(json!({
        "id": sandbox.new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": super::unix_now(),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal}, "finish_reason": finish, "logprobs": null}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }))
}

async fn upload(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, mut form: Multipart) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    let (mut purpose, mut file, mut filename) = (None, None, String::from("input.jsonl"));
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                filename = field.file_name().unwrap_or("input.jsonl").to_owned();
                file = field.bytes().await.ok();
            }
            _ => {}
        }
    }
    let (Some(purpose), Some(file)) = (purpose, file) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "'file' and 'purpose' are required.",
        );
    };
    if purpose != "batch" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "purpose must be 'batch' here.",
        );
    }
    let lines: Vec<Value> =
        String::from_utf8_lossy(&file).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    sandbox.log("POST", "/v1/files", &json!({"purpose": purpose, "lines": lines}));
    let id = sandbox.new_id("file-");
    let bytes = file.len();
    sandbox.put_file(&id, file.to_vec());
    Json(json!({"id": id, "object": "file", "bytes": bytes, "created_at": super::unix_now(), "filename": filename, "purpose": "batch"}))
        .into_response()
}

async fn file_content(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    match sandbox.file(&id) {
        Some(bytes) => bytes.into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "file_not_found",
            &format!("No such File object: {id}"),
        ),
    }
}

async fn create_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    sandbox.log("POST", "/v1/batches", &body);
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    let Some(file_id) = body["input_file_id"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", "input_file_id is required");
    };
    if body["completion_window"] != "24h" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "completion_window must be 24h",
        );
    }
    let Some(file) = sandbox.file(file_id) else {
        return error(StatusCode::NOT_FOUND, "invalid_request_error", "file_not_found", "input file not found");
    };
    let mut lines = Vec::new();
    for (n, line) in String::from_utf8_lossy(&file).lines().enumerate() {
        let parsed: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_json_line",
                    &format!("line {}: invalid JSON", n + 1),
                );
            }
        };
        let Some(custom_id) = parsed["custom_id"].as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                &format!("line {}: custom_id missing", n + 1),
            );
        };
        if lines.iter().any(|(c, _)| c == custom_id) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "duplicate_custom_id",
                &format!("line {}: duplicate custom_id", n + 1),
            );
        }
        if parsed["url"] != body["endpoint"] {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "url_mismatch",
                &format!("line {}: url differs from the batch endpoint", n + 1),
            );
        }
        lines.push((custom_id.to_owned(), parsed["body"].clone()));
    }
    if lines.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "empty_batch",
            "the input file has no requests",
        );
    }
    let id = sandbox.new_id("batch_");
    let created = super::unix_now();
    sandbox.add_batch(
        &id,
        Batch {
            kind: BatchKind::OpenAi,
            lines,
            polls: 0,
            created,
            metadata: json!({"input_file_id": file_id, "endpoint": body["endpoint"], "metadata": body["metadata"]}),
            cancelled: false,
            results: None,
            expired: false,
        },
    );
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// The `Batch` object as OpenAI shows it; writes the output and error files once it has ended.
fn batch_object(sandbox: &ProviderSandbox, id: &str) -> Option<Value> {
    let (meta, created, total, ended, cancelled, expired) = sandbox.with_batch(id, |b| {
        (b.metadata.clone(), b.created, b.lines.len(), b.results.is_some(), b.cancelled, b.expired)
    })?;
    let mut object = json!({
        "id": id, "object": "batch", "endpoint": meta["endpoint"], "errors": null,
        "input_file_id": meta["input_file_id"], "completion_window": "24h",
        "status": if ended { if cancelled { "cancelled" } else if expired { "expired" } else { "completed" } } else if cancelled { "cancelling" } else { "in_progress" },
        "output_file_id": null, "error_file_id": null, "created_at": created, "in_progress_at": created,
        "expires_at": created + 86_400, "finalizing_at": null, "completed_at": null, "failed_at": null,
        "expired_at": null, "cancelling_at": null, "cancelled_at": null,
        "request_counts": {"total": total, "completed": 0, "failed": 0},
        "metadata": meta["metadata"],
    });
    if ended {
        let (output, errors, completed, failed) = sandbox
            .with_batch(id, |b| {
                let (mut output, mut errors, mut completed, mut failed) = (String::new(), String::new(), 0, 0);
                for (custom_id, outcome) in b.results.iter().flatten() {
                    let line = match outcome {
                        LineOutcome::Answered(body) => {
                            completed += 1;
                            json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": {"status_code": 200, "request_id": "req_sandbox", "body": body}, "error": null})
                        }
                        LineOutcome::Failed(status, body) => {
                            failed += 1;
                            json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": {"status_code": status, "request_id": "req_sandbox", "body": body}, "error": null})
                        }
                        LineOutcome::Expired => {
                            failed += 1;
                            json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
                        }
                        LineOutcome::Cancelled => {
                            failed += 1;
                            json!({"id": format!("batch_req_{custom_id}"), "custom_id": custom_id, "response": null, "error": {"code": "batch_cancelled", "message": "This request was cancelled."}})
                        }
                    };
                    let into = if matches!(outcome, LineOutcome::Answered(_)) { &mut output } else { &mut errors };
                    into.push_str(&line.to_string());
                    into.push('\n');
                }
                (output, errors, completed, failed)
            })
            .unwrap_or_default();
        let (out_id, err_id) = (format!("file-out-{id}"), format!("file-err-{id}"));
        sandbox.put_file(&out_id, output.into_bytes());
        sandbox.put_file(&err_id, errors.into_bytes());
        object["output_file_id"] = json!(out_id);
        object["error_file_id"] = json!(err_id);
        object["request_counts"] = json!({"total": total, "completed": completed, "failed": failed});
        let at = super::unix_now();
        object["finalizing_at"] = json!(at);
        let stamp = if cancelled {
            "cancelled_at"
        } else if expired {
            "expired_at"
        } else {
            "completed_at"
        };
        object[stamp] = json!(at);
    }
    Some(object)
}

fn answer_line(sandbox: &ProviderSandbox, faults: &super::Faults, body: &Value) -> LineOutcome {
    match answer_chat(sandbox, faults, body) {
        Ok(answer) => LineOutcome::Answered(answer),
        Err((status, body)) => LineOutcome::Failed(status, body),
    }
}

async fn get_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    if !sandbox.advance_batch(&id, answer_line) {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            &format!("No batch found with id '{id}'."),
        );
    }
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

async fn cancel_batch(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    if sandbox.with_batch(&id, |b| b.cancelled = true).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            &format!("No batch found with id '{id}'."),
        );
    }
    batch_object(&sandbox, &id)
        .map(|b| Json(b).into_response())
        .unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// `GET /v1/batches`: newest first, without advancing any batch.
async fn list_batches(State(sandbox): State<ProviderSandbox>, headers: HeaderMap) -> Response {
    if !sandbox.authorized(&headers) {
        return unauthorized();
    }
    let mut ids = sandbox.batch_ids(BatchKind::OpenAi);
    ids.reverse();
    let data: Vec<Value> = ids.iter().take(100).filter_map(|id| batch_object(&sandbox, id)).collect();
    Json(json!({"object": "list", "data": data, "first_id": ids.first(), "last_id": ids.last(), "has_more": false}))
        .into_response()
}

/// The text and documents of user message `at`: a string, or content parts (`text`, `file` with a
/// PDF as a base64 data URL and a filename, `image_url` with a base64 data URL). A malformed part
/// is refused as Chat Completions refuses it: `(param, message)`.
fn user_content(at: usize, content: &Value) -> Result<(String, Vec<super::documents::Carried>), (String, String)> {
    if let Some(text) = content.as_str() {
        return Ok((text.to_owned(), Vec::new()));
    }
    let Some(parts) = content.as_array() else {
        return Err((
            format!("messages[{at}].content"),
            "Invalid type for content: expected a string or an array.".into(),
        ));
    };
    let (mut text, mut documents) = (String::new(), Vec::new());
    for (i, part) in parts.iter().enumerate() {
        let param = format!("messages[{at}].content[{i}]");
        let data_url = |url: &str, param: &str| -> Result<(String, String), (String, String)> {
            let rest = url
                .strip_prefix("data:")
                .ok_or_else(|| (param.to_owned(), "Expected a base64-encoded data URL.".to_owned()))?;
            let (media_type, data) = rest
                .split_once(";base64,")
                .ok_or_else(|| (param.to_owned(), "Expected a base64-encoded data URL.".to_owned()))?;
            Ok((media_type.to_owned(), data.to_owned()))
        };
        match part["type"].as_str().unwrap_or_default() {
            "text" => text.push_str(part["text"].as_str().unwrap_or_default()),
            "file" => {
                let file = &part["file"];
                let param = format!("{param}.file.file_data");
                let Some(url) = file["file_data"].as_str() else {
                    return Err((param, "Missing required parameter: file_data or file_id.".into()));
                };
                let Some(filename) = file["filename"].as_str() else {
                    return Err((
                        format!("messages[{at}].content[{i}].file.filename"),
                        "Missing required parameter: filename.".into(),
                    ));
                };
                let (media_type, data) = data_url(url, &param)?;
                if media_type != "application/pdf" {
                    return Err((
                        param,
                        format!(
                            "Invalid file data: media type {media_type} is not supported; file parts take PDF files."
                        ),
                    ));
                }
                documents.push(
                    super::documents::carried(filename, &media_type, &data)
                        .map_err(|e| (param, format!("Invalid file data: {e}")))?,
                );
            }
            "image_url" => {
                let param = format!("{param}.image_url.url");
                let Some(url) = part["image_url"]["url"].as_str() else {
                    return Err((param, "Missing required parameter: url.".into()));
                };
                let (media_type, data) = data_url(url, &param)?;
                documents.push(
                    super::documents::carried("image", &media_type, &data)
                        .map_err(|e| (param, format!("Invalid image: {e}")))?,
                );
            }
            other => return Err((format!("{param}.type"), format!("Invalid value: '{other}'."))),
        }
    }
    Ok((text, documents))
}
