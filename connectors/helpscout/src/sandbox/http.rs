//! The sandbox's HTTP side: the token endpoint, auth, rate limits, faults, and each endpoint.

use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

use super::{
    AGENT_IDS, CLIENT_ID, CLIENT_SECRET, HelpScoutSandbox, MAILBOX_ID, OTHER_MAILBOX_ID, State, render_thread,
};

const PAGE_SIZE: usize = 50;
const THREAD_PAGE_SIZE: usize = 25;
const HAL: &str = "application/hal+json;charset=UTF-8";
const ERRORS_DOC: &str = "https://developer.helpscout.com/mailbox-api/overview/errors";

pub fn router(sandbox: HelpScoutSandbox) -> Router {
    Router::new().fallback(handle).with_state(sandbox)
}

struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body: Some(body), headers: Vec::new() }
}

fn empty(status: u16) -> Reply {
    Reply { status, body: None, headers: Vec::new() }
}

/// Help Scout's error shape; `errors` are (path, message, rejected value, about-code).
fn hal_error(status: u16, message: &str, errors: &[(&str, &str, Value, &str)]) -> Reply {
    let log_ref =
        format!("{:08x}-5a9d-4c1e-9b7f-{:012x}", rand::rng().random::<u32>(), rand::rng().random::<u64>() >> 16);
    let mut body = json!({"logRef": log_ref, "message": message, "_links": {"about": {"href": ERRORS_DOC}}});
    if !errors.is_empty() {
        body["_embedded"] = json!({"errors": errors.iter().map(|(path, message, rejected, code)| {
            let mut e = json!({"path": path, "message": message, "source": "JSON",
                "_links": {"about": {"href": format!("{ERRORS_DOC}#{code}")}}});
            if !rejected.is_null() {
                e["rejectedValue"] = rejected.clone();
            }
            e
        }).collect::<Vec<_>>()});
    }
    Reply { status, body: Some(body), headers: Vec::new() }
}

fn not_found() -> Reply {
    hal_error(404, "Resource not found", &[])
}

fn pairs(raw: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://sandbox/?{raw}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

async fn handle(
    AxumState(sandbox): AxumState<HelpScoutSandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let base = format!("http://{host}");
    let mut state = sandbox.lock();
    state.stats.requests += 1;
    let path = uri.path().trim_end_matches('/').to_owned();
    if path == "/v2/oauth2/token" {
        return if method == Method::POST {
            state.token(&headers, &body, uri.query())
        } else {
            state.finish(not_found(), None)
        };
    }
    if method != Method::GET {
        let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
        state.received.push(super::Received { method: method.to_string(), path: path.clone(), body: parsed });
    }
    let faults = &mut state.faults;
    if faults.rate_limited_requests > 0 {
        faults.rate_limited_requests -= 1;
        let secs = faults.retry_after_secs;
        return state.too_many(secs);
    }
    if faults.server_errors > 0 {
        faults.server_errors -= 1;
        return state.finish(hal_error(503, "Service Unavailable", &[]), None);
    }
    let (rate, server_rate, retry_after) = (faults.rate_limit_rate, faults.server_error_rate, faults.retry_after_secs);
    if rate > 0.0 || server_rate > 0.0 {
        let roll: f64 = state.rng.random();
        if roll < rate {
            return state.too_many(retry_after);
        }
        if roll < rate + server_rate {
            return state.finish(hal_error(503, "Service Unavailable", &[]), None);
        }
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let valid = token.and_then(|t| state.tokens.get(t)).is_some_and(|expiry| Instant::now() < *expiry);
    if !valid {
        state.stats.unauthorized += 1;
        return state.finish(
            Reply {
                status: 401,
                body: Some(json!({"error": "invalid_token", "error_description": "The access token is invalid or has expired"})),
                headers: Vec::new(),
            },
            None,
        );
    }
    // Writes count double against the minute's allowance.
    let cost = if method == Method::GET { 1 } else { 2 };
    if state.window.0.elapsed() >= Duration::from_secs(60) {
        state.window = (Instant::now(), 0);
    }
    let limit = state.faults.per_minute;
    if state.window.1 + cost > limit {
        let wait = 60u64.saturating_sub(state.window.0.elapsed().as_secs()).max(1);
        return state.too_many(wait);
    }
    state.window.1 += cost;
    let remaining = limit - state.window.1;
    let query = pairs(uri.query().unwrap_or(""));
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let parts: Vec<&str> = path.strip_prefix("/v2/").unwrap_or("").split('/').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    let json_body = || serde_json::from_slice::<Value>(&body);
    let reply = match (&method, parts.as_slice()) {
        (&Method::GET, ["conversations"]) => state.list(&query, &base),
        (&Method::POST, ["conversations"]) => match json_body() {
            Ok(b) => state.create_from_api(&b, &base),
            Err(e) => bad_json(&e),
        },
        (&Method::GET, ["conversations", c]) => match id(c) {
            Some(c) => state.read(c, param("embed") == Some("threads"), &base),
            None => not_found(),
        },
        (&Method::PATCH, ["conversations", c]) => match (id(c), json_body()) {
            (Some(c), Ok(b)) => state.patch(c, &b),
            (None, _) => not_found(),
            (_, Err(e)) => bad_json(&e),
        },
        (&Method::GET, ["conversations", c, "threads"]) => match id(c) {
            Some(c) => state.thread_list(c, &base),
            None => not_found(),
        },
        (&Method::PUT, ["conversations", c, "tags"]) => match (id(c), json_body()) {
            (Some(c), Ok(b)) => state.put_tags(c, &b),
            (None, _) => not_found(),
            (_, Err(e)) => bad_json(&e),
        },
        (&Method::PUT, ["conversations", c, "fields"]) => match (id(c), json_body()) {
            (Some(c), Ok(b)) => state.put_fields(c, &b),
            (None, _) => not_found(),
            (_, Err(e)) => bad_json(&e),
        },
        (&Method::POST, ["conversations", c, "notes"]) => match (id(c), json_body()) {
            (Some(c), Ok(b)) => state.note(c, &b),
            (None, _) => not_found(),
            (_, Err(e)) => bad_json(&e),
        },
        (&Method::GET, ["mailboxes"]) => mailbox_list(&base),
        (&Method::GET, ["mailboxes", m, "fields"]) => {
            match id(m).filter(|m| [MAILBOX_ID, OTHER_MAILBOX_ID].contains(m)) {
                Some(m) => state.field_list(m, &base),
                None => not_found(),
            }
        }
        _ => not_found(),
    };
    state.finish(reply, Some((limit, remaining)))
}

fn mailbox_list(base: &str) -> Reply {
    let mailboxes: Vec<Value> = [MAILBOX_ID, OTHER_MAILBOX_ID]
        .iter()
        .map(|m| {
            json!({
                "id": m, "name": format!("Sandbox {m}"), "slug": format!("{m:016x}"), "email": format!("support{m}@example.com"),
                "createdAt": "2025-11-03T10:00:00Z", "updatedAt": "2025-11-03T10:00:00Z",
                "_links": {"fields": {"href": format!("{base}/v2/mailboxes/{m}/fields/")},
                    "folders": {"href": format!("{base}/v2/mailboxes/{m}/folders/")},
                    "self": {"href": format!("{base}/v2/mailboxes/{m}")}}
            })
        })
        .collect();
    ok(json!({
        "_embedded": {"mailboxes": mailboxes},
        "_links": links(&format!("{base}/v2/mailboxes"), 1, 1),
        "page": {"size": PAGE_SIZE, "totalElements": 2, "totalPages": 1, "number": 1}
    }))
}

fn bad_json(e: &serde_json::Error) -> Reply {
    hal_error(400, "Bad request", &[("", &format!("Malformed JSON: {e}"), Value::Null, "MalformedJson")])
}

fn links(self_href: &str, page: usize, pages: usize) -> Value {
    let sep = if self_href.contains('?') { '&' } else { '?' };
    let mut links = json!({
        "first": {"href": format!("{self_href}{sep}page=1")},
        "last": {"href": format!("{self_href}{sep}page={}", pages.max(1))},
        "page": {"href": self_href},
        "self": {"href": self_href}
    });
    if page < pages {
        links["next"] = json!({"href": format!("{self_href}{sep}page={}", page + 1)});
    }
    if page > 1 {
        links["previous"] = json!({"href": format!("{self_href}{sep}page={}", page - 1)});
    }
    links
}

fn date_header(epoch: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(epoch.max(0) as u64))
}

impl State {
    fn finish(&self, reply: Reply, rate: Option<(u32, u32)>) -> Response {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("cache-control", "no-cache, no-store, max-age=0, must-revalidate")
            .header("correlation-id", format!("{:08x}-sandbox#{}", self.stats.requests, self.stats.requests))
            .header("date", date_header(self.now));
        if let Some((limit, remaining)) = rate {
            builder = builder
                .header("x-ratelimit-limit-minute", limit.to_string())
                .header("x-ratelimit-remaining-minute", remaining.to_string());
        }
        for (name, value) in reply.headers {
            builder = builder.header(name, value);
        }
        let response = match reply.body {
            Some(body) => builder.header("content-type", HAL).body(axum::body::Body::from(body.to_string())),
            None => builder.header("content-type", "text/plain; charset=UTF-8").body(axum::body::Body::empty()),
        };
        response.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }

    fn too_many(&mut self, secs: u64) -> Response {
        self.stats.rate_limited += 1;
        let limit = self.faults.per_minute;
        let mut reply = hal_error(429, "Too Many Requests", &[]);
        reply.headers.push(("x-ratelimit-retry-after", secs.to_string()));
        self.finish(reply, Some((limit, 0)))
    }

    /// `POST /v2/oauth2/token`: client credentials in a JSON body, a form body or the query.
    fn token(&mut self, headers: &HeaderMap, body: &[u8], query: Option<&str>) -> Response {
        let json_type = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"));
        let params: Vec<(String, String)> = if json_type {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .map(|o| o.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_owned()))).collect())
                .unwrap_or_default()
        } else {
            let mut p = pairs(&String::from_utf8_lossy(body));
            p.extend(pairs(query.unwrap_or("")));
            p
        };
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let reply = |status: u16, body: Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json; charset=utf-8")
                .header("cache-control", "no-store")
                .header("pragma", "no-cache")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        };
        if param("grant_type") != Some("client_credentials") {
            return reply(
                400,
                json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}),
            );
        }
        if param("client_id") != Some(CLIENT_ID) || param("client_secret") != Some(CLIENT_SECRET) {
            return reply(401, json!({"error": "invalid_client", "error_description": "Bad client credentials"}));
        }
        self.stats.tokens_issued += 1;
        let token = format!("hs_sandbox_{:016x}{:016x}", rand::rng().random::<u64>(), self.stats.tokens_issued);
        let lifetime = self.token_lifetime;
        self.tokens.insert(token.clone(), Instant::now() + lifetime);
        reply(200, json!({"token_type": "bearer", "access_token": token, "expires_in": lifetime.as_secs()}))
    }

    fn list(&mut self, query: &[(String, String)], base: &str) -> Reply {
        self.stats.list_pages += 1;
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mailboxes: Option<Vec<u64>> =
            param("mailbox").map(|m| m.split(',').filter_map(|s| s.trim().parse().ok()).collect());
        let status = param("status").unwrap_or("active");
        if !["active", "pending", "closed", "spam", "all"].contains(&status) {
            return hal_error(400, "Bad request", &[("status", "Invalid status", json!(status), "InvalidValue")]);
        }
        let since = match param("modifiedSince") {
            None => None,
            Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(at) => Some(at.timestamp()),
                Err(_) => {
                    return hal_error(
                        400,
                        "Bad request",
                        &[("modifiedSince", "Invalid date", json!(s), "InvalidDate")],
                    );
                }
            },
        };
        let sort_field = param("sortField").unwrap_or("createdAt");
        if !["createdAt", "modifiedAt", "number", "status", "subject"].contains(&sort_field) {
            return hal_error(
                400,
                "Bad request",
                &[("sortField", "Invalid sort field", json!(sort_field), "InvalidValue")],
            );
        }
        let page = param("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
        let embed = param("embed") == Some("threads");
        let mut hits: Vec<&super::Conversation> = self
            .conversations
            .values()
            .filter(|c| mailboxes.as_ref().is_none_or(|m| m.contains(&c.mailbox)))
            .filter(|c| if status == "all" { true } else { c.status == status })
            .filter(|c| since.is_none_or(|s| c.modified_at >= s))
            .collect();
        hits.sort_by(|a, b| match sort_field {
            "modifiedAt" => (a.modified_at, a.id).cmp(&(b.modified_at, b.id)),
            "number" => a.number.cmp(&b.number),
            "status" => (&a.status, a.id).cmp(&(&b.status, b.id)),
            "subject" => (&a.subject, a.id).cmp(&(&b.subject, b.id)),
            _ => (a.created_at, a.id).cmp(&(b.created_at, b.id)),
        });
        if param("sortOrder").unwrap_or("desc") == "desc" {
            hits.reverse();
        }
        let total = hits.len();
        let pages = total.div_ceil(PAGE_SIZE);
        let items: Vec<Value> =
            hits.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).map(|c| self.render(c, base, embed)).collect();
        let raw: Vec<String> = query.iter().filter(|(k, _)| k != "page").map(|(k, v)| format!("{k}={v}")).collect();
        let self_href = format!("{base}/v2/conversations?{}", raw.join("&"));
        ok(json!({
            "_embedded": {"conversations": items},
            "_links": links(self_href.trim_end_matches('?'), page, pages),
            "page": {"size": PAGE_SIZE, "totalElements": total, "totalPages": pages, "number": page}
        }))
    }

    fn read(&mut self, id: u64, embed: bool, base: &str) -> Reply {
        self.stats.conversation_reads += 1;
        if self.agent_pending.remove(&id) {
            let edit = json!({"tags": ["agent_edited"], "status": "pending"});
            if self.agent_edit(id, &edit).is_ok() {
                self.tag_id("agent_edited");
                self.agent_edited.push(id);
            }
        }
        let Some(c) = self.conversations.get(&id) else { return not_found() };
        let body = self.render(c, base, embed);
        // Agents at work: a conversation read may be picked up by an agent, whose edit lands
        // before the next read of it (between a connector's pull and its write).
        if self.faults.agent_edit_rate > 0.0 && !self.agent_pending.contains(&id) {
            let roll: f64 = self.rng.random();
            if roll < self.faults.agent_edit_rate {
                self.agent_pending.insert(id);
            }
        }
        ok(body)
    }

    fn thread_list(&self, id: u64, base: &str) -> Reply {
        let Some(c) = self.conversations.get(&id) else { return not_found() };
        let threads = self.threads.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let rendered: Vec<Value> =
            threads.iter().rev().take(THREAD_PAGE_SIZE).map(|t| render_thread(t, c, base)).collect();
        let pages = threads.len().div_ceil(THREAD_PAGE_SIZE);
        ok(json!({
            "_embedded": {"threads": rendered},
            "_links": links(&format!("{base}/v2/conversations/{id}/threads/"), 1, pages),
            "page": {"size": THREAD_PAGE_SIZE, "totalElements": threads.len(), "totalPages": pages, "number": 1}
        }))
    }

    fn field_list(&self, mailbox: u64, base: &str) -> Reply {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, (id, name, kind, options))| {
                json!({"id": id, "name": name, "type": kind, "order": i + 1, "required": false,
                    "options": options.iter().enumerate().map(|(n, (oid, label))| json!({"id": oid, "order": n + 1, "label": label})).collect::<Vec<_>>(),
                    "_links": {"self": {"href": format!("{base}/v2/mailboxes/{mailbox}/fields/{id}")}}})
            })
            .collect();
        let total = fields.len();
        ok(json!({
            "_embedded": {"fields": fields},
            "_links": links(&format!("{base}/v2/mailboxes/{mailbox}/fields/"), 1, 1),
            "page": {"size": PAGE_SIZE, "totalElements": total, "totalPages": 1, "number": 1}
        }))
    }

    fn patch(&mut self, id: u64, body: &Value) -> Reply {
        self.stats.patches += 1;
        let Some(mut c) = self.conversations.get(&id).cloned() else { return not_found() };
        let (op, path, value) = (body["op"].as_str(), body["path"].as_str(), &body["value"]);
        match (op, path) {
            (Some("replace"), Some("/subject")) => match value.as_str().filter(|s| !s.trim().is_empty()) {
                Some(s) => c.subject = s.to_owned(),
                None => {
                    return hal_error(400, "Bad request", &[("value", "may not be empty", value.clone(), "NotEmpty")]);
                }
            },
            (Some("replace"), Some("/status")) => {
                match value.as_str().filter(|s| ["active", "pending", "closed"].contains(s)) {
                    Some(s) => c.status = s.to_owned(),
                    None => {
                        return hal_error(
                            400,
                            "Bad request",
                            &[("value", "Invalid status", value.clone(), "InvalidValue")],
                        );
                    }
                }
            }
            _ => {
                return hal_error(
                    400,
                    "Bad request",
                    &[("path", "Unsupported operation or path", json!(body["path"]), "InvalidValue")],
                );
            }
        }
        let stamp = self.stamp(c.modified_at);
        c.modified_at = stamp;
        c.user_updated_at = stamp;
        self.conversations.insert(id, c);
        empty(204)
    }

    fn put_tags(&mut self, id: u64, body: &Value) -> Reply {
        self.stats.tag_writes += 1;
        if self.faults.tag_write_server_errors > 0 {
            self.faults.tag_write_server_errors -= 1;
            return hal_error(503, "Service Unavailable", &[]);
        }
        if !self.conversations.contains_key(&id) {
            return not_found();
        }
        let Some(tags) = body["tags"].as_array().and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        else {
            return hal_error(
                400,
                "Bad request",
                &[("tags", "must be a list of strings", body["tags"].clone(), "NotNull")],
            );
        };
        let mut set: Vec<String> = Vec::new();
        for tag in tags.iter().map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()) {
            if !set.contains(&tag) {
                self.tag_id(&tag);
                set.push(tag);
            }
        }
        set.sort();
        let now = self.now;
        let c = self.conversations.get_mut(&id).expect("checked above");
        c.tags = set;
        // A tag change moves what `modifiedSince` sees but not `userUpdatedAt` (as recorded).
        c.modified_at = now.max(c.modified_at + 1);
        self.now = c.modified_at;
        empty(204)
    }

    fn put_fields(&mut self, id: u64, body: &Value) -> Reply {
        self.stats.field_writes += 1;
        if !self.conversations.contains_key(&id) {
            return not_found();
        }
        if self.faults.field_write_refusal_rate > 0.0 {
            let roll: f64 = self.rng.random();
            if roll < self.faults.field_write_refusal_rate {
                self.refused.push(id);
                return hal_error(
                    400,
                    "Bad request",
                    &[(
                        "fields",
                        "Conversation fields cannot be updated (injected refusal)",
                        Value::Null,
                        "InvalidValue",
                    )],
                );
            }
        }
        let Some(current) = self.conversations.get(&id) else { return not_found() };
        let Some(list) = body["fields"].as_array() else {
            return hal_error(400, "Bad request", &[("fields", "may not be null", Value::Null, "NotNull")]);
        };
        let mut custom = std::collections::BTreeMap::new();
        for (i, entry) in list.iter().enumerate() {
            let path = format!("fields[{i}]");
            let Some(field) = entry["id"].as_u64().and_then(|f| self.fields.iter().find(|x| x.0 == f)) else {
                return hal_error(
                    400,
                    "Bad request",
                    &[(&format!("{path}.id"), "Unknown custom field", entry["id"].clone(), "InvalidValue")],
                );
            };
            let value = match &entry["value"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                other => {
                    return hal_error(
                        400,
                        "Bad request",
                        &[(&format!("{path}.value"), "Invalid value", other.clone(), "InvalidValue")],
                    );
                }
            };
            if field.2 == "DROPDOWN" && !value.is_empty() && !field.3.iter().any(|(o, _)| o.to_string() == value) {
                return hal_error(
                    400,
                    "Bad request",
                    &[(
                        &format!("{path}.value"),
                        &format!("Invalid option for field '{}'", field.1),
                        json!(value),
                        "InvalidOption",
                    )],
                );
            }
            if !value.is_empty() {
                custom.insert(field.0, value);
            }
        }
        let mut c = current.clone();
        c.custom = custom;
        c.modified_at = self.stamp(c.modified_at);
        self.conversations.insert(id, c);
        empty(204)
    }

    fn note(&mut self, id: u64, body: &Value) -> Reply {
        self.stats.notes += 1;
        if !self.conversations.contains_key(&id) {
            return not_found();
        }
        let Some(text) = body["text"].as_str().filter(|t| !t.trim().is_empty()) else {
            return hal_error(400, "Bad request", &[("text", "may not be empty", body["text"].clone(), "NotEmpty")]);
        };
        let thread = self.next_thread;
        self.next_thread += 1;
        let previous = self.conversations[&id].modified_at;
        let stamp = self.stamp(previous);
        self.threads.entry(id).or_default().push(super::Thread {
            id: thread,
            kind: "note".into(),
            body: text.to_owned(),
            created_at: stamp,
            author: AGENT_IDS[0],
        });
        let c = self.conversations.get_mut(&id).expect("checked above");
        c.modified_at = stamp;
        c.user_updated_at = stamp;
        // As recorded (`thread_note_create_201.json`): no `Location`/`Resource-Id`, unlike a new conversation.
        empty(201)
    }

    fn create_from_api(&mut self, body: &Value, base: &str) -> Reply {
        let subject = body["subject"].as_str().unwrap_or("").trim();
        if subject.is_empty() {
            return hal_error(
                400,
                "Bad request",
                &[("subject", "may not be empty", body["subject"].clone(), "NotEmpty")],
            );
        }
        let mailbox = body["mailboxId"].as_u64().or_else(|| body["mailboxId"].as_str()?.parse().ok()).unwrap_or(0);
        if ![MAILBOX_ID, OTHER_MAILBOX_ID].contains(&mailbox) {
            return hal_error(
                400,
                "Bad request",
                &[("mailboxId", "Invalid mailbox", body["mailboxId"].clone(), "InvalidValue")],
            );
        }
        let text = body["threads"][0]["text"].as_str().unwrap_or("");
        let id = self.create(mailbox, subject, text);
        let mut reply = empty(201);
        reply.headers.push(("location", format!("{base}/v2/conversations/{id}")));
        reply.headers.push(("resource-id", id.to_string()));
        reply
    }
}
