//! The sandbox's HTTP side: routing, auth, rate-limit headers, faults, and each endpoint.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::Rng;
use serde_json::{Value, json};

use super::{API_KEY, FreshdeskSandbox, Invalid, Job, State, iso, render_conversation, render_ticket};

/// The account's per-minute API limit (Enterprise).
const RATE_LIMIT: u32 = 700;
/// Freshdesk's cap on `per_page` and on ids per bulk action.
const MAX_PER_PAGE: usize = 100;

pub fn router(sandbox: FreshdeskSandbox) -> Router {
    Router::new().fallback(handle).with_state(sandbox)
}

struct Reply {
    status: u16,
    body: Value,
    /// The `Link` header's next page, if any.
    next: Option<String>,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body, next: None }
}

fn validation(errors: Vec<Invalid>) -> Reply {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(field, message, code)| json!({"field": field, "message": message, "code": code}))
        .collect();
    Reply { status: 400, body: json!({"description": "Validation failed", "errors": errors}), next: None }
}

fn not_found() -> Reply {
    Reply { status: 404, body: Value::Null, next: None }
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Basic auth with the API key as user name and any password (Freshdesk's docs use `X`).
fn authenticated(headers: &HeaderMap) -> bool {
    let Some(encoded) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let decoded = String::from_utf8_lossy(&decoded);
    decoded.split_once(':').is_some_and(|(key, _)| key == API_KEY)
}

async fn handle(
    AxumState(sandbox): AxumState<FreshdeskSandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = sandbox.lock().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let base = format!("http://{host}");
    let mut state = sandbox.lock();
    state.stats.requests += 1;
    if method != Method::GET {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        state.received.push(super::Received { method: method.to_string(), path: uri.path().to_owned(), body });
    }
    let query = query_pairs(&uri);
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // `include` costs extra credits: one more per included resource on listings.
    let cost = 1 + u32::from(method == Method::GET && uri.path().trim_end_matches('/') == "/api/v2/tickets")
        * param("include").map_or(0, |i| i.split(',').count() as u32);
    let remaining = state.count_request(cost);
    let faults = &mut state.faults;
    if faults.rate_limited_requests > 0 {
        faults.rate_limited_requests -= 1;
        let secs = faults.retry_after_secs;
        state.stats.rate_limited += 1;
        return too_many(secs, remaining);
    }
    if faults.server_errors > 0 {
        faults.server_errors -= 1;
        return unavailable(remaining);
    }
    let malformed = if faults.malformed_bodies > 0 {
        faults.malformed_bodies -= 1;
        true
    } else {
        false
    };
    let (rate_limit_rate, server_error_rate, retry_after) =
        (faults.rate_limit_rate, faults.server_error_rate, faults.retry_after_secs);
    if rate_limit_rate > 0.0 || server_error_rate > 0.0 {
        let roll: f64 = state.rng.random();
        if roll < rate_limit_rate {
            state.stats.rate_limited += 1;
            return too_many(retry_after, remaining);
        }
        if roll < rate_limit_rate + server_error_rate {
            return unavailable(remaining);
        }
    }
    if !authenticated(&headers) {
        state.stats.unauthorized += 1;
        let body =
            json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."});
        return finish(Reply { status: 401, body, next: None }, remaining, cost, false);
    }
    let path = uri.path().trim_end_matches('/');
    let rest = path.strip_prefix("/api/v2/").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    let reply = match (&method, parts.as_slice()) {
        (&Method::GET, ["tickets"]) => state.list(&query, &base),
        (&Method::POST, ["tickets", "bulk_update"]) => state.bulk_update(&body),
        (&Method::GET, ["tickets", id]) => match id.parse::<u64>() {
            Ok(id) => state.show(id),
            Err(_) => not_found(),
        },
        (&Method::PUT, ["tickets", id]) => match id.parse::<u64>() {
            Ok(id) => state.update(id, &body),
            Err(_) => not_found(),
        },
        (&Method::GET, ["tickets", id, "conversations"]) => match id.parse::<u64>() {
            Ok(id) => state.conversations_of(id, param("page"), param("per_page"), &base),
            Err(_) => not_found(),
        },
        (&Method::POST, ["tickets", id, "notes"]) => match id.parse::<u64>() {
            Ok(id) => state.note(id, &body),
            Err(_) => not_found(),
        },
        (&Method::GET, ["ticket_fields"]) => {
            state.stats.field_reads += 1;
            ok(Value::Array(state.fields.clone()))
        }
        (&Method::GET, ["companies", id]) => {
            match super::COMPANIES.iter().find(|(c, _)| id.parse::<u64>().ok() == Some(*c)) {
                Some((id, name)) => ok(json!({
                    "id": id, "name": name, "description": null, "domains": [], "note": null, "custom_fields": {},
                    "created_at": "2025-11-03T10:00:00Z", "updated_at": "2025-11-03T10:00:00Z",
                    "health_score": null, "account_tier": null, "renewal_date": null, "industry": null
                })),
                None => not_found(),
            }
        }
        (&Method::GET, ["jobs", id]) => state.poll(id),
        _ => not_found(),
    };
    finish(reply, remaining, cost, malformed)
}

fn rate_headers(builder: axum::http::response::Builder, remaining: u32, cost: u32) -> axum::http::response::Builder {
    builder
        .header("x-ratelimit-total", RATE_LIMIT.to_string())
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-used-currentrequest", cost.to_string())
}

fn finish(reply: Reply, remaining: u32, cost: u32, malformed: bool) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8");
    if let Some(next) = &reply.next {
        builder = builder.header("link", format!("<{next}>; rel=\"next\""));
    }
    let mut text = if reply.body.is_null() { String::new() } else { reply.body.to_string() };
    if malformed && !text.is_empty() {
        text.truncate(text.len() / 2);
    }
    rate_headers(builder, remaining, cost)
        .body(axum::body::Body::from(text))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A 429 with `Retry-After` in seconds (Freshdesk documents the header, not the body).
fn too_many(retry_after: u64, remaining: u32) -> Response {
    let builder = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("content-type", "text/plain; charset=utf-8")
        .header("retry-after", retry_after.to_string());
    rate_headers(builder, remaining, 1)
        .body(axum::body::Body::from(format!("Too many requests. Retry after {retry_after} seconds.")))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn unavailable(remaining: u32) -> Response {
    let body = json!({"code": "service_unavailable", "message": "The service is temporarily unavailable"});
    finish(Reply { status: 503, body, next: None }, remaining, 1, false)
}

fn parse_time(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(value.trim()).ok().map(|t| t.timestamp())
}

impl State {
    /// Counts `cost` credits in the current (real) minute and returns the remaining allowance.
    fn count_request(&mut self, cost: u32) -> u32 {
        if self.window.0.elapsed() >= Duration::from_secs(60) {
            self.window = (Instant::now(), 0);
        }
        self.window.1 += cost;
        RATE_LIMIT.saturating_sub(self.window.1)
    }

    fn list(&mut self, query: &[(String, String)], base: &str) -> Reply {
        self.stats.list_pages += 1;
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut errors: Vec<Invalid> = Vec::new();
        let per_page = match param("per_page").map(str::parse::<usize>) {
            None => 30,
            Some(Ok(n)) if (1..=MAX_PER_PAGE).contains(&n) => n,
            Some(_) => {
                errors.push(("per_page".into(), "Has to be a number between 1 and 100".into(), "invalid_value"));
                30
            }
        };
        let page = match param("page").map(str::parse::<u32>) {
            None => 1,
            Some(Ok(n)) if n >= 1 => n,
            Some(_) => {
                errors.push(("page".into(), "It should be a Positive Integer".into(), "invalid_value"));
                1
            }
        };
        if page > self.page_wall {
            self.stats.page_wall_hits += 1;
            errors.push((
                "page".into(),
                format!(
                    "You cannot access tickets beyond the {}th page. Please provide a smaller page number.",
                    self.page_wall
                ),
                "invalid_value",
            ));
        }
        let since = match param("updated_since") {
            None => None,
            Some(s) => match parse_time(s) {
                Some(t) => Some(t),
                None => {
                    errors.push((
                        "updated_since".into(),
                        "It should be in the 'valid date-time' format".into(),
                        "invalid_date",
                    ));
                    None
                }
            },
        };
        let order_by = param("order_by").unwrap_or("created_at");
        if !["created_at", "due_by", "updated_at", "status"].contains(&order_by) {
            errors.push((
                "order_by".into(),
                "It should be one of these values: 'created_at,due_by,updated_at,status'".into(),
                "invalid_value",
            ));
        }
        let order_type = param("order_type").unwrap_or("desc");
        if !["asc", "desc"].contains(&order_type) {
            errors.push(("order_type".into(), "It should be one of these values: 'asc,desc'".into(), "invalid_value"));
        }
        if !errors.is_empty() {
            return validation(errors);
        }
        let include_description = param("include").is_some_and(|i| i.split(',').any(|p| p == "description"));
        let thirty_days_ago = self.now - 30 * 86_400;
        let mut matching: Vec<&super::Ticket> = self
            .tickets
            .values()
            .filter(|t| match since {
                Some(since) => t.updated_at >= since,
                None => t.created_at >= thirty_days_ago,
            })
            .collect();
        matching.sort_by_key(|t| match order_by {
            "updated_at" => (t.updated_at, t.id),
            "status" => (i64::from(t.status), t.id),
            "due_by" => (t.created_at + 3 * 86_400, t.id),
            _ => (t.created_at, t.id),
        });
        if order_type == "desc" {
            matching.reverse();
        }
        let start = (page as usize - 1) * per_page;
        let tickets: Vec<Value> =
            matching.iter().skip(start).take(per_page).map(|t| render_ticket(t, include_description)).collect();
        // Freshdesk drops `attachments` from list items even with include=description.
        let tickets: Vec<Value> = tickets
            .into_iter()
            .map(|mut t| {
                if let Some(o) = t.as_object_mut() {
                    o.remove("attachments");
                }
                t
            })
            .collect();
        let next = (matching.len() > start + per_page).then(|| {
            let query: Vec<String> = query
                .iter()
                .filter(|(k, _)| k != "page")
                .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('+', "%2B")))
                .chain(std::iter::once(format!("page={}", page + 1)))
                .collect();
            format!("{base}/api/v2/tickets?{}", query.join("&"))
        });
        Reply { status: 200, body: Value::Array(tickets), next }
    }

    fn show(&mut self, id: u64) -> Reply {
        self.stats.ticket_reads += 1;
        let Some(ticket) = self.tickets.get(&id) else { return not_found() };
        // Agents at work: between the listing and the first read of a ticket by id (the engine's
        // re-read just before it writes), an agent may pick it up, raise its priority and tag it.
        // Freshdesk has no concurrency token, so an edit after that read cannot be detected by any
        // client; this one can, and must end as a conflict.
        let rate = self.faults.agent_edit_rate;
        if self.read_by_id.insert(id) && rate > 0.0 && self.rng.random::<f64>() < rate {
            let mut tags = ticket.tags.clone();
            tags.push("agent_edited".into());
            if self.apply(id, &json!({"priority": 4, "tags": tags})).is_ok() {
                self.agent_edited.push(id);
            }
        }
        ok(render_ticket(&self.tickets[&id], true))
    }

    fn update(&mut self, id: u64, body: &[u8]) -> Reply {
        self.stats.single_updates += 1;
        let Ok(update) = serde_json::from_slice::<Value>(body) else {
            return validation(vec![("body".into(), "Request body has invalid json format".into(), "invalid_json")]);
        };
        if !self.tickets.contains_key(&id) {
            return not_found();
        }
        *self.submissions.entry(id).or_default() += 1;
        match self.apply(id, &update) {
            Ok(()) => ok(render_ticket(&self.tickets[&id], true)),
            Err(errors) => validation(errors),
        }
    }

    fn note(&mut self, id: u64, body: &[u8]) -> Reply {
        self.stats.notes += 1;
        let Ok(note) = serde_json::from_slice::<Value>(body) else {
            return validation(vec![("body".into(), "Request body has invalid json format".into(), "invalid_json")]);
        };
        let text = note["body"].as_str().unwrap_or("");
        if text.trim().is_empty() {
            return validation(vec![(
                "body".into(),
                "It should not be blank as this is a mandatory field".into(),
                "missing_field",
            )]);
        }
        // Notes are private unless `"private": false`.
        let private = note["private"].as_bool().unwrap_or(true);
        match self.add_note(id, text, private, super::AGENT_IDS[0]) {
            Some(note) => Reply { status: 201, body: render_conversation(id, &note), next: None },
            None => not_found(),
        }
    }

    fn conversations_of(&mut self, id: u64, page: Option<&str>, per_page: Option<&str>, base: &str) -> Reply {
        self.stats.conversation_reads += 1;
        let Some(conversations) = self.conversations.get(&id) else { return not_found() };
        let per_page = per_page.and_then(|p| p.parse::<usize>().ok()).unwrap_or(30).clamp(1, MAX_PER_PAGE);
        let page = page.and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
        let start = (page - 1) * per_page;
        let items: Vec<Value> =
            conversations.iter().skip(start).take(per_page).map(|c| render_conversation(id, c)).collect();
        let next = (conversations.len() > start + per_page)
            .then(|| format!("{base}/api/v2/tickets/{id}/conversations?per_page={per_page}&page={}", page + 1));
        Reply { status: 200, body: Value::Array(items), next }
    }

    fn bulk_update(&mut self, body: &[u8]) -> Reply {
        self.stats.bulk_updates += 1;
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return validation(vec![("body".into(), "Request body has invalid json format".into(), "invalid_json")]);
        };
        let action = &body["bulk_action"];
        let Some(ids) = action["ids"].as_array() else {
            return validation(vec![("ids".into(), "It should be a/an Array".into(), "missing_field")]);
        };
        let ids: Vec<u64> = ids.iter().filter_map(Value::as_u64).collect();
        if ids.is_empty() || ids.len() > MAX_PER_PAGE {
            return validation(vec![("ids".into(), "It should have 1 to 100 ids".into(), "invalid_value")]);
        }
        if !action["properties"].is_object() {
            return validation(vec![("properties".into(), "It should be a/an key/value pair".into(), "missing_field")]);
        }
        self.job_seq += 1;
        let id = format!("{:016x}{:016x}", rand::rng().random::<u64>(), self.job_seq);
        for ticket in &ids {
            *self.submissions.entry(*ticket).or_default() += 1;
        }
        let job = Job {
            id: id.clone(),
            ids,
            properties: action["properties"].clone(),
            polls: 0,
            created_at: self.now,
            results: None,
            completed_at: None,
        };
        self.jobs.insert(id.clone(), job);
        Reply { status: 202, body: json!({"job_id": id}), next: None }
    }

    fn poll(&mut self, id: &str) -> Reply {
        self.stats.job_polls += 1;
        let Some(mut job) = self.jobs.get(id).cloned() else { return not_found() };
        job.polls += 1;
        if job.results.is_none() && job.polls > self.faults.job_queued_polls + self.faults.job_in_progress_polls {
            let mut results = Vec::new();
            for ticket in job.ids.clone() {
                if self.faults.bulk_failure_rate > 0.0 && self.rng.random::<f64>() < self.faults.bulk_failure_rate {
                    results.push(json!({"id": ticket, "success": false,
                        "errors": [{"field": "id", "message": "The ticket is being updated by another process, try again", "code": "internal_error"}]}));
                    continue;
                }
                match self.apply(ticket, &job.properties) {
                    Ok(()) => results.push(json!({"id": ticket, "success": true})),
                    Err(errors) => {
                        let errors: Vec<Value> = errors
                            .into_iter()
                            .map(|(field, message, code)| json!({"field": field, "message": message, "code": code}))
                            .collect();
                        results.push(json!({"id": ticket, "success": false, "errors": errors}));
                    }
                }
            }
            job.results = Some(results);
            job.completed_at = Some(self.now);
        }
        let total = job.ids.len();
        let (status, progress) = match (&job.results, job.polls) {
            (Some(_), _) => ("COMPLETED", 100),
            (None, polls) if polls > self.faults.job_queued_polls => ("IN_PROGRESS", 50),
            _ => ("QUEUED", 0),
        };
        let body = json!({
            "id": job.id,
            "status": status,
            "progress": progress,
            "total": total,
            "created_at": iso(job.created_at),
            "status_updated_at": iso(job.completed_at.unwrap_or(job.created_at)),
            "data": job.results.clone().unwrap_or_default(),
        });
        self.jobs.insert(id.to_owned(), job);
        ok(body)
    }
}
