//! The Gemini side of the sandbox (Generative Language API `v1beta`): `generateContent` with
//! `responseJsonSchema`, batches inline or from a file uploaded with the File API's resumable
//! protocol, batch operations and their listing, and Google's error bodies (`google.rpc.Status` with
//! `RetryInfo` and `QuotaFailure` details). The key comes in `x-goog-api-key` or `?key=`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{Value, json};

use super::{Batch, BatchKind, Fault, Faults, LineOutcome, ProviderSandbox, Spoil, spoiled_text, tokens};

type Params = Query<BTreeMap<String, String>>;

pub(super) fn routes() -> Router<ProviderSandbox> {
    Router::new()
        .route("/v1beta/models", get(models))
        .route("/v1beta/models/{call}", post(model_call))
        .route("/v1beta/batches", get(list_batches))
        .route("/v1beta/batches/{id}", get(get_batch).post(cancel_batch))
        .route("/upload/v1beta/files", post(upload))
        .route("/download/v1beta/files/{call}", get(download))
        .route("/v1beta/files/{call}", get(download))
}

/// A `google.rpc.Status` error body.
fn status_body(code: u16, status: &str, message: &str, details: Value) -> Value {
    let mut error = json!({"code": code, "message": message, "status": status});
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        error["details"] = details;
    }
    json!({"error": error})
}

fn error(code: u16, status: &str, message: &str, details: Value) -> Response {
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (http, Json(status_body(code, status, message, details))).into_response()
}

/// Google answers a missing key with 403 and a wrong one with 400 `API_KEY_INVALID`.
fn check_key(sandbox: &ProviderSandbox, headers: &HeaderMap, params: &BTreeMap<String, String>) -> Option<Response> {
    let Some(expected) = &sandbox.api_key else { return None };
    let given = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).or(params.get("key").map(String::as_str));
    match given {
        Some(key) if key == &**expected => None,
        Some(_) => Some(error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]),
        )),
        None => Some(error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            json!([]),
        )),
    }
}

fn quota_violation(id: &str) -> Value {
    json!({
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
        "quotaId": id,
        "quotaDimensions": {"location": "global", "model": "sandbox"},
    })
}

const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";

async fn models(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Query(params): Params) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    Json(json!({"models": [{"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
        "supportedGenerationMethods": ["generateContent", "batchGenerateContent"]}]}))
    .into_response()
}

/// `models/{model}:generateContent` and `models/{model}:batchGenerateContent`.
async fn model_call(
    State(sandbox): State<ProviderSandbox>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
    Json(body): Json<Value>,
) -> Response {
    let Some((model, method)) = call.split_once(':') else {
        return error(404, "NOT_FOUND", &format!("models/{call} has no such method"), json!([]));
    };
    match method {
        "generateContent" => generate(sandbox, model, &headers, &params, body).await,
        "batchGenerateContent" => create_batch(sandbox, model, &headers, &params, body),
        other => error(404, "NOT_FOUND", &format!("method {other} is not served by the sandbox"), json!([])),
    }
}

async fn generate(
    sandbox: ProviderSandbox,
    model: &str,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    body: Value,
) -> Response {
    sandbox.log("POST", &format!("/v1beta/models/{model}:generateContent"), &body);
    let begin = sandbox.begin().await;
    if let Some(refused) = check_key(&sandbox, headers, params) {
        return refused;
    }
    match begin.fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut details = vec![json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [quota_violation("GenerateRequestsPerMinutePerProjectPerModel")]})];
            if retry_after {
                let wait = begin.rate.map(|r| r.reset.as_secs_f64().ceil().max(1.0) as u64).unwrap_or(2);
                details.push(
                    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{wait}s")}),
                );
            }
            error(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, json!(details))
        }
        Some(Fault::ServerError) => {
            if rand::rng().random::<bool>() {
                error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]))
            } else {
                error(
                    500,
                    "INTERNAL",
                    "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                    json!([]),
                )
            }
        }
        // A used-up daily quota: Google still sends a RetryInfo, which must not be taken at its word.
        Some(Fault::OutOfMoney) => error(
            429,
            "RESOURCE_EXHAUSTED",
            QUOTA_MESSAGE,
            json!([
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [quota_violation("GenerateRequestsPerDayPerProjectPerModel")]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"},
            ]),
        ),
        Some(Fault::Hang) | None => match answer(&sandbox, &begin.faults, model, &body) {
            Ok(answer) => Json(answer).into_response(),
            Err((code, body)) => {
                (StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), Json(body)).into_response()
            }
        },
    }
}

/// The `GenerateContentResponse` to `body`, or a request error `(status, body)`.
fn answer(sandbox: &ProviderSandbox, faults: &Faults, model: &str, body: &Value) -> Result<Value, (u16, Value)> {
    let invalid = |message: &str| (400, status_body(400, "INVALID_ARGUMENT", message, json!([])));
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return Err(invalid("* GenerateContentRequest.contents: contents is not specified"));
    };
    let config = &body["generationConfig"];
    let json_schema = config.get("responseJsonSchema").filter(|s| !s.is_null());
    let openapi_schema = config.get("responseSchema").filter(|s| !s.is_null());
    if json_schema.is_some() && openapi_schema.is_some() {
        return Err(invalid("responseJsonSchema and responseSchema cannot both be set"));
    }
    let schema = json_schema.or(openapi_schema);
    if schema.is_some() && config["responseMimeType"] != "application/json" {
        return Err(invalid("responseMimeType must be application/json when a response schema is set"));
    }
    let text_of = |c: &Value| -> String {
        c["parts"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("")
    };
    let at = contents.iter().rposition(|c| c["role"].as_str().is_none_or(|r| r == "user"));
    let user = at.map(|at| text_of(&contents[at])).unwrap_or_default();
    let carried = match at.map(|at| documents_of(sandbox, at, &contents[at])).transpose() {
        Ok(found) => found.unwrap_or_default(),
        Err(message) => return Err(invalid(&message)),
    };
    let system = text_of(&body["systemInstruction"]);
    let answer = sandbox.answer_reading(faults, schema.unwrap_or(&Value::Null), &user, &carried);
    let spoil = sandbox.spoil(faults);
    let text = spoiled_text(&answer, spoil);
    let max_tokens = config["maxOutputTokens"].as_u64().unwrap_or(8192);
    // A thinking model thinks a little unless its budget is 0.
    let thoughts = if config["thinkingConfig"]["thinkingBudget"] == 0 { 0 } else { 3 };
    let candidate = match spoil {
        Spoil::Refusal => json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}),
        Spoil::Truncated => {
            json!({"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "MAX_TOKENS", "index": 0})
        }
        Spoil::InvalidJson | Spoil::None => {
            json!({"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0})
        }
    };
    let output = if spoil == Spoil::Refusal { 0 } else { tokens(&text).min(max_tokens) };
    let prompt = tokens(&user)
        + tokens(&system)
        + super::documents::document_tokens(crate::provider::documents::Kind::Gemini, &carried);
    Ok(json!({
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + output + thoughts,
        },
        "modelVersion": model,
        "responseId": sandbox.new_id("resp-"),
    }))
}

fn answer_line(sandbox: &ProviderSandbox, faults: &Faults, body: &Value) -> LineOutcome {
    match answer(sandbox, faults, body["model"].as_str().unwrap_or("sandbox"), &body["request"]) {
        Ok(response) => LineOutcome::Answered(response),
        Err((code, body)) => LineOutcome::Failed(code, body),
    }
}

/// Inline batches are limited to this many bytes of request.
const INLINE_LIMIT: usize = 20 * 1024 * 1024;

fn create_batch(
    sandbox: ProviderSandbox,
    model: &str,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    body: Value,
) -> Response {
    sandbox.log("POST", &format!("/v1beta/models/{model}:batchGenerateContent"), &body);
    if let Some(refused) = check_key(&sandbox, headers, params) {
        return refused;
    }
    let invalid = |message: &str| error(400, "INVALID_ARGUMENT", message, json!([]));
    let batch = &body["batch"];
    let Some(display_name) = batch["displayName"].as_str().filter(|n| !n.is_empty()) else {
        return invalid("* BatchGenerateContentRequest.batch.display_name: display_name is required");
    };
    let input = &batch["inputConfig"];
    let model_name = format!("models/{model}");
    // Each line: (key, {model, request}).
    let mut lines: Vec<(String, Value)> = Vec::new();
    let from_file;
    if let Some(requests) = input["requests"]["requests"].as_array() {
        if body.to_string().len() > INLINE_LIMIT {
            return invalid(&format!("Request payload size exceeds the limit: {INLINE_LIMIT} bytes."));
        }
        for (i, r) in requests.iter().enumerate() {
            let key = r["metadata"]["key"].as_str().map(str::to_owned).unwrap_or_else(|| i.to_string());
            lines.push((key, json!({"model": model, "request": r["request"]})));
        }
        from_file = false;
    } else if let Some(file) = input["fileName"].as_str() {
        let Some(bytes) = sandbox.file(file) else {
            return error(404, "NOT_FOUND", &format!("File {file} not found."), json!([]));
        };
        for (n, line) in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let Ok(line) = serde_json::from_str::<Value>(line) else {
                return invalid(&format!("{file} line {}: not JSON", n + 1));
            };
            let key = line["key"].as_str().map(str::to_owned).unwrap_or_else(|| n.to_string());
            lines.push((key, json!({"model": model, "request": line["request"]})));
        }
        from_file = true;
    } else {
        return invalid("* batch.input_config: either requests or file_name is required");
    }
    if lines.is_empty() {
        return invalid("* batch.input_config: the batch holds no requests");
    }
    let id = sandbox.new_id("batches/");
    sandbox.add_batch(
        &id,
        Batch {
            kind: BatchKind::Gemini,
            lines,
            polls: 0,
            created: super::unix_now(),
            metadata: json!({"displayName": display_name, "model": model_name, "fromFile": from_file}),
            cancelled: false,
            results: None,
            expired: false,
        },
    );
    operation(&sandbox, &id).map(|o| Json(o).into_response()).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The batch as Google shows it: an operation whose metadata is the `GenerateContentBatch`.
/// Answers of an expired batch are dropped: Google keeps none.
fn operation(sandbox: &ProviderSandbox, id: &str) -> Option<Value> {
    let (mut batch, output_lines, from_file) = sandbox.with_batch(id, |b| {
        let ended = b.results.is_some();
        let state = if b.expired {
            "BATCH_STATE_EXPIRED"
        } else if ended && b.cancelled {
            "BATCH_STATE_CANCELLED"
        } else if ended {
            "BATCH_STATE_SUCCEEDED"
        } else if b.polls == 0 {
            "BATCH_STATE_PENDING"
        } else {
            "BATCH_STATE_RUNNING"
        };
        let (mut ok, mut failed) = (0, 0);
        let mut output = Vec::new();
        for (key, outcome) in b.results.iter().flatten() {
            match outcome {
                LineOutcome::Answered(response) if !b.expired => {
                    ok += 1;
                    output.push((key.clone(), json!({"response": response})));
                }
                LineOutcome::Failed(code, body) if !b.expired => {
                    failed += 1;
                    let status = &body["error"];
                    output
                        .push((key.clone(), json!({"error": {"code": rpc_code(*code), "message": status["message"]}})));
                }
                _ => {}
            }
        }
        let total = b.lines.len();
        let batch = json!({
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": id,
            "model": b.metadata["model"],
            "displayName": b.metadata["displayName"],
            "createTime": rfc3339(b.created),
            "updateTime": rfc3339(super::unix_now()),
            "state": state,
            "batchStats": {
                "requestCount": total.to_string(),
                "successfulRequestCount": ok.to_string(),
                "failedRequestCount": failed.to_string(),
                "pendingRequestCount": if ended { "0".to_owned() } else { total.to_string() },
            },
        });
        (batch, ended.then_some(output), b.metadata["fromFile"] == true)
    })?;
    let mut op = json!({"name": id, "metadata": batch, "done": output_lines.is_some()});
    let Some(lines) = output_lines else { return Some(op) };
    if batch["state"] == "BATCH_STATE_EXPIRED" {
        op["error"] = json!({"code": 4, "message": "The batch expired before it could finish."});
        return Some(op);
    }
    let output = if from_file {
        let file = format!("files/{}-output", id.trim_start_matches("batches/"));
        if sandbox.file(&file).is_none() {
            let jsonl: String = lines
                .iter()
                .map(|(key, result)| {
                    let mut line = result.clone();
                    line["key"] = json!(key);
                    format!("{line}\n")
                })
                .collect();
            sandbox.put_file(&file, jsonl.into_bytes());
        }
        json!({"responsesFile": file})
    } else {
        let responses: Vec<Value> = lines
            .into_iter()
            .map(|(key, mut result)| {
                result["metadata"] = json!({"key": key});
                result
            })
            .collect();
        json!({"inlinedResponses": {"inlinedResponses": responses}})
    };
    batch["output"] = output.clone();
    op["metadata"] = batch;
    op["response"] = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.BatchGenerateContentResponse",
        "output": output,
    });
    Some(op)
}

/// The `google.rpc.Code` for an HTTP status, as batch line errors carry it.
fn rpc_code(http: u16) -> u16 {
    match http {
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        429 => 8,
        503 => 14,
        504 => 4,
        _ => 13,
    }
}

/// `GET batches/{id}` (polls advance the batch).
async fn get_batch(
    State(sandbox): State<ProviderSandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    let id = format!("batches/{id}");
    if !sandbox.advance_batch(&id, answer_line) {
        return error(404, "NOT_FOUND", &format!("Batch {id} not found."), json!([]));
    }
    operation(&sandbox, &id).map(|o| Json(o).into_response()).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// `POST batches/{id}:cancel`.
async fn cancel_batch(
    State(sandbox): State<ProviderSandbox>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    let Some((id, "cancel")) = call.split_once(':') else {
        return error(404, "NOT_FOUND", &format!("batches/{call} has no such method"), json!([]));
    };
    let id = format!("batches/{id}");
    if sandbox.with_batch(&id, |b| b.cancelled = true).is_none() {
        return error(404, "NOT_FOUND", &format!("Batch {id} not found."), json!([]));
    }
    Json(json!({})).into_response()
}

/// `GET batches?pageSize&pageToken`, newest first.
async fn list_batches(State(sandbox): State<ProviderSandbox>, headers: HeaderMap, Query(params): Params) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    let mut ids = sandbox.batch_ids(BatchKind::Gemini);
    ids.reverse();
    let size = params.get("pageSize").and_then(|s| s.parse::<usize>().ok()).unwrap_or(50).clamp(1, 1000);
    let from = params.get("pageToken").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let operations: Vec<Value> = ids.iter().skip(from).take(size).filter_map(|id| operation(&sandbox, id)).collect();
    let mut list = json!({"operations": operations});
    if from + size < ids.len() {
        list["nextPageToken"] = json!((from + size).to_string());
    }
    Json(list).into_response()
}

/// The File API's resumable upload: `start` answers an upload URL, `upload, finalize` to it stores
/// the bytes.
async fn upload(
    State(sandbox): State<ProviderSandbox>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let command = header("x-goog-upload-command");
    let Some(upload_id) = params.get("upload_id") else {
        if header("x-goog-upload-protocol") != "resumable" || command != "start" {
            return error(400, "INVALID_ARGUMENT", "the sandbox takes resumable uploads only", json!([]));
        }
        let id = sandbox.new_id("upload-");
        sandbox.put_file(&format!("files/{id}"), Vec::new());
        let media_type = header("x-goog-upload-header-content-type");
        sandbox.set_file_type(
            &format!("files/{id}"),
            if media_type.is_empty() { "application/octet-stream" } else { media_type },
        );
        let url = format!("http://{}/upload/v1beta/files?upload_id={id}&upload_protocol=resumable", header("host"));
        let mut response = Json(json!({})).into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            response.headers_mut().insert("x-goog-upload-url", v);
        }
        response.headers_mut().insert("x-goog-upload-status", HeaderValue::from_static("active"));
        return response;
    };
    let name = format!("files/{upload_id}");
    if sandbox.file(&name).is_none() {
        return error(404, "NOT_FOUND", &format!("upload {upload_id} was never started"), json!([]));
    }
    if !command.contains("finalize") || header("x-goog-upload-offset") != "0" {
        return error(400, "INVALID_ARGUMENT", "the sandbox takes the whole file in one finalizing chunk", json!([]));
    }
    let size = body.len();
    sandbox.put_file(&name, body.to_vec());
    let media_type = sandbox.file_type(&name).unwrap_or_else(|| "application/octet-stream".into());
    let uri = format!("http://{}/v1beta/{name}", header("host"));
    Json(
        json!({"file": {"name": name, "uri": uri, "mimeType": media_type, "sizeBytes": size.to_string(), "state": "ACTIVE",
        "createTime": rfc3339(super::unix_now())}}),
    )
    .into_response()
}

/// `GET files/{id}:download?alt=media`: the file's bytes.
async fn download(
    State(sandbox): State<ProviderSandbox>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(refused) = check_key(&sandbox, &headers, &params) {
        return refused;
    }
    let Some((id, "download")) = call.split_once(':') else {
        return error(404, "NOT_FOUND", &format!("files/{call} has no such method"), json!([]));
    };
    match sandbox.file(&format!("files/{id}")) {
        Some(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        None => error(404, "NOT_FOUND", &format!("File files/{id} not found."), json!([])),
    }
}

/// The documents in content `at`'s parts: `inlineData` (base64) and `fileData` (a file uploaded to
/// this sandbox's File API), either spelling (the API takes camelCase and snake_case). A malformed
/// part is refused as `INVALID_ARGUMENT`, naming its path.
fn documents_of(
    sandbox: &ProviderSandbox,
    at: usize,
    content: &Value,
) -> Result<Vec<super::documents::Carried>, String> {
    let mut out = Vec::new();
    for (i, part) in content["parts"].as_array().into_iter().flatten().enumerate() {
        let path = format!("contents[{at}].parts[{i}]");
        let field = |camel: &str, snake: &str| part.get(camel).or_else(|| part.get(snake)).cloned();
        if let Some(inline) = field("inlineData", "inline_data") {
            let media_type = inline.get("mimeType").or_else(|| inline.get("mime_type")).and_then(Value::as_str);
            let Some(media_type) = media_type else {
                return Err(format!(
                    "* GenerateContentRequest.{path}.inline_data.mime_type: mime_type is not specified"
                ));
            };
            let data = inline["data"]
                .as_str()
                .ok_or_else(|| format!("* GenerateContentRequest.{path}.inline_data.data: data is not specified"))?;
            out.push(
                super::documents::carried("inline", media_type, data)
                    .map_err(|e| format!("Invalid value at '{path}.inline_data' ({media_type}): {e}"))?,
            );
        } else if let Some(file) = field("fileData", "file_data") {
            let uri = file.get("fileUri").or_else(|| file.get("file_uri")).and_then(Value::as_str).unwrap_or_default();
            let name = uri.rsplit_once("/v1beta/").map(|(_, n)| n).unwrap_or(uri);
            let (Some(bytes), Some(media_type)) = (sandbox.file(name), sandbox.file_type(name)) else {
                return Err(format!(
                    "* GenerateContentRequest.{path}.file_data.file_uri: the file {uri} does not exist or you do not have permission to access it"
                ));
            };
            out.push(
                super::documents::from_bytes(name, &media_type, bytes)
                    .map_err(|e| format!("Invalid value at '{path}.file_data' ({media_type}): {e}"))?,
            );
        }
    }
    Ok(out)
}
