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

use super::{
    API_TOKEN, EMAIL, Job, OAUTH_TOKEN, READ_ONLY_OAUTH_TOKEN, State, Ticket, ZendeskSandbox, iso, render_ticket,
};

/// The account's per-minute API limit (Enterprise).
const RATE_LIMIT: u32 = 700;
/// The 409 description of a stale `updated_stamp` (reported by third parties, see
/// shared/research/platform_apis.md 2.6); a batch ticket with a stale stamp fails with it too.
const SAFE_UPDATE_CONFLICT: &str =
    "Safe Update prevented the update due to outdated ticket data. Please fetch the latest ticket data and try again.";
/// Search's cap on results per query.
const SEARCH_CAP: usize = 1000;

pub fn router(sandbox: ZendeskSandbox) -> Router {
    Router::new().fallback(handle).with_state(sandbox)
}

struct Reply {
    status: u16,
    body: Value,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body }
}

fn error(status: u16, error: &str, description: &str) -> Reply {
    Reply { status, body: json!({"error": error, "description": description}) }
}

fn not_found() -> Reply {
    error(404, "RecordNotFound", "Not found")
}

fn too_many_values() -> Reply {
    // Verbatim, double space included (error_400_too_many_values_create_many.json).
    Reply {
        status: 400,
        body: json!({"error": "TooManyValues", "description": "Parameter  cannot specify more than 100 values", "max_count": 100}),
    }
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

enum Auth {
    ReadWrite,
    ReadOnly,
}

fn authenticate(headers: &HeaderMap) -> Option<Auth> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return match token.trim() {
            OAUTH_TOKEN => Some(Auth::ReadWrite),
            READ_ONLY_OAUTH_TOKEN => Some(Auth::ReadOnly),
            _ => None,
        };
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    (decoded == format!("{EMAIL}/token:{API_TOKEN}")).then_some(Auth::ReadWrite)
}

async fn handle(
    AxumState(sandbox): AxumState<ZendeskSandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let base = format!("http://{host}");
    let mut state = sandbox.lock();
    state.stats.requests += 1;
    if method != Method::GET {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        state.received.push(super::Received { method: method.to_string(), path: uri.path().to_owned(), body });
    }
    let remaining = state.count_request();
    let faults = &mut state.faults;
    if faults.rate_limited_requests > 0 {
        faults.rate_limited_requests -= 1;
        let secs = faults.retry_after_secs;
        state.stats.rate_limited += 1;
        return plain_429(secs, remaining);
    }
    if faults.server_errors > 0 {
        faults.server_errors -= 1;
        return finish(error(503, "ServiceUnavailable", "Server is temporarily unavailable"), remaining);
    }
    let (rate_limit_rate, server_error_rate, retry_after) =
        (faults.rate_limit_rate, faults.server_error_rate, faults.retry_after_secs);
    if rate_limit_rate > 0.0 || server_error_rate > 0.0 {
        let roll: f64 = state.rng.random();
        if roll < rate_limit_rate {
            state.stats.rate_limited += 1;
            return plain_429(retry_after, remaining);
        }
        if roll < rate_limit_rate + server_error_rate {
            return finish(error(503, "ServiceUnavailable", "Server is temporarily unavailable"), remaining);
        }
    }
    let Some(auth) = authenticate(&headers) else {
        state.stats.unauthorized += 1;
        return finish(Reply { status: 401, body: json!({"error": "Couldn't authenticate you"}) }, remaining);
    };
    if method != Method::GET && matches!(auth, Auth::ReadOnly) {
        return finish(
            Reply {
                status: 403,
                body: json!({"errors": [{
                    "code": "Forbidden",
                    "title": "Forbidden",
                    "detail": "The access token's scope does not allow writes (it has `read` only)",
                    "status": "403"
                }]}),
            },
            remaining,
        );
    }
    let query = query_pairs(&uri);
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let path = uri.path().trim_end_matches('/');
    let rest = path.strip_prefix("/api/v2/").unwrap_or("");
    let rest = rest.strip_suffix(".json").unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    let reply = match (&method, parts.as_slice()) {
        (&Method::GET, ["tickets", "show_many"]) => state.show_many(param("ids").unwrap_or(""), &base),
        (&Method::PUT, ["tickets", "update_many"]) => state.update_many(&body, &base),
        (&Method::GET, ["tickets", id]) => match id.parse::<u64>().ok().and_then(|id| state.tickets.get(&id)) {
            Some(t) => ok(json!({"ticket": render_ticket(t, &state.fields, &base)})),
            None => not_found(),
        },
        (&Method::PUT, ["tickets", id]) => match id.parse::<u64>() {
            Ok(id) => state.update_one(id, &body, &base),
            Err(_) => not_found(),
        },
        (&Method::GET, ["tickets", id, "comments"]) => match id.parse::<u64>() {
            Ok(id) => state.comments_of(id, param("include") == Some("users")),
            Err(_) => not_found(),
        },
        (&Method::GET, ["organizations", "show_many"]) => {
            let ids: Vec<&str> = param("ids").unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
            if ids.len() > 100 {
                too_many_values()
            } else {
                let organizations: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| id.trim().parse::<u64>().ok())
                    .filter_map(|id| super::ORGANIZATIONS.iter().find(|(o, _)| *o == id))
                    .map(|(id, name)| {
                        json!({"url": format!("{base}/api/v2/organizations/{id}.json"), "id": id, "name": name,
                            "shared_tickets": false, "shared_comments": false, "external_id": null,
                            "created_at": "2025-11-03T10:00:00Z", "updated_at": "2025-11-03T10:00:00Z",
                            "domain_names": [], "details": "", "notes": "", "group_id": null, "tags": [],
                            "organization_fields": {}})
                    })
                    .collect();
                let count = organizations.len();
                ok(json!({"organizations": organizations, "next_page": null, "previous_page": null, "count": count}))
            }
        }
        (&Method::GET, ["ticket_fields"]) => ok(
            json!({"ticket_fields": state.fields, "next_page": null, "previous_page": null, "count": state.fields.len()}),
        ),
        (&Method::GET, ["incremental", "tickets", "cursor"]) => match state.incremental_allowed() {
            Err(wait) => {
                state.stats.rate_limited += 1;
                return plain_429(wait, remaining);
            }
            Ok(()) => state.incremental(param("start_time"), param("cursor"), param("per_page"), &base),
        },
        (&Method::GET, ["search"]) => {
            state.search(param("query").unwrap_or(""), param("page"), param("per_page"), param("sort_order"), &base)
        }
        (&Method::GET, ["job_statuses", id]) => state.poll(id, &base),
        _ => error(404, "InvalidEndpoint", "Not found"),
    };
    finish(reply, remaining)
}

fn rate_headers(builder: axum::http::response::Builder, remaining: u32) -> axum::http::response::Builder {
    builder
        .header("x-rate-limit", RATE_LIMIT.to_string())
        .header("x-rate-limit-remaining", remaining.to_string())
        .header("ratelimit-limit", RATE_LIMIT.to_string())
        .header("ratelimit-remaining", remaining.to_string())
        .header("ratelimit-reset", "60")
        .header("x-zendesk-api-version", "v2")
}

fn finish(reply: Reply, remaining: u32) -> Response {
    let builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "max-age=0, private, must-revalidate");
    rate_headers(builder, remaining)
        .body(axum::body::Body::from(reply.body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A 429 as Zendesk sends it on some endpoints: `Retry-After` in seconds and a plain-text body.
fn plain_429(retry_after: u64, remaining: u32) -> Response {
    let builder = Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("content-type", "text/plain; charset=utf-8")
        .header("retry-after", retry_after.to_string());
    rate_headers(builder, remaining)
        .body(axum::body::Body::from(format!("Rate limit exceeded. Retry after {retry_after} seconds.")))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One term of a search query.
type Condition = Box<dyn Fn(&Ticket) -> bool>;

/// The status order Search compares with `<` and `>`.
fn status_rank(status: &str) -> Option<u8> {
    ["new", "open", "pending", "hold", "solved", "closed"].iter().position(|s| *s == status).map(|p| p as u8)
}

/// The export cursor of a position (updated_at, id), shaped like Zendesk's (`base64("ts.0||id|")`).
fn encode_cursor(updated: i64, id: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{updated}.0||{id}|"))
}

fn decode_cursor(cursor: &str) -> Option<(i64, u64)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(cursor.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let mut parts = raw.split('|');
    let updated = parts.next()?.split('.').next()?.parse().ok()?;
    let id = parts.nth(1)?.parse().ok()?;
    Some((updated, id))
}

impl State {
    /// Counts a request in the current (real) minute and returns the remaining allowance.
    fn count_request(&mut self) -> u32 {
        if self.window.0.elapsed() >= Duration::from_secs(60) {
            self.window = (Instant::now(), 0);
        }
        self.window.1 += 1;
        RATE_LIMIT.saturating_sub(self.window.1)
    }

    /// Whether another incremental export call fits in the last minute; otherwise the seconds to wait.
    fn incremental_allowed(&mut self) -> Result<(), u64> {
        let Some(limit) = self.faults.incremental_per_minute else { return Ok(()) };
        self.incremental_calls.retain(|t| t.elapsed() < Duration::from_secs(60));
        if self.incremental_calls.len() >= limit as usize {
            let oldest = self.incremental_calls[0].elapsed();
            return Err(60u64.saturating_sub(oldest.as_secs()).max(1));
        }
        self.incremental_calls.push(Instant::now());
        Ok(())
    }

    fn show_many(&mut self, ids: &str, base: &str) -> Reply {
        self.stats.show_many += 1;
        let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if ids.len() > 100 {
            return too_many_values();
        }
        let tickets: Vec<Value> = ids
            .iter()
            .filter_map(|id| id.parse::<u64>().ok())
            .filter_map(|id| self.tickets.get(&id))
            .map(|t| render_ticket(t, &self.fields, base))
            .collect();
        // Agents at work: right after a ticket is read (as a connector re-reads before writing),
        // an agent may pick it up and set its priority and a tag.
        let rate = self.faults.agent_edit_rate;
        if rate > 0.0 {
            for ticket in &tickets {
                let id = ticket["id"].as_u64().unwrap_or(0);
                if self.rng.random::<f64>() < rate
                    && self
                        .apply(
                            id,
                            &json!({"priority": "urgent", "additional_tags": ["agent_edited"]}),
                            super::AGENT_IDS[2],
                        )
                        .is_ok()
                {
                    self.agent_edited.push(id);
                }
            }
        }
        let count = tickets.len();
        ok(json!({"tickets": tickets, "next_page": null, "previous_page": null, "count": count}))
    }

    fn comments_of(&self, id: u64, include_users: bool) -> Reply {
        let Some(comments) = self.comments.get(&id) else { return not_found() };
        let rendered: Vec<Value> = comments
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.body,
                    "html_body": format!("<div class=\"zd-comment\"><p>{}</p></div>", c.body.replace('&', "&amp;").replace('<', "&lt;")),
                    "plain_body": c.body, "public": c.public, "attachments": [], "audit_id": c.id + 1,
                    "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": null}},
                    "created_at": iso(c.created_at), "metadata": {"system": {}, "custom": {}}
                })
            })
            .collect();
        let mut body = json!({"comments": rendered, "next_page": null, "previous_page": null, "count": comments.len()});
        if include_users {
            let mut ids: Vec<u64> = comments.iter().map(|c| c.author_id).collect();
            ids.sort_unstable();
            ids.dedup();
            body["users"] = ids
                .iter()
                .filter_map(|id| self.users.get(id))
                .map(|u| json!({"id": u.id, "name": u.name, "role": u.role.as_str(), "organization_id": u.organization_id}))
                .collect();
        }
        ok(body)
    }

    fn incremental(
        &mut self,
        start_time: Option<&str>,
        cursor: Option<&str>,
        per_page: Option<&str>,
        base: &str,
    ) -> Reply {
        self.stats.incremental += 1;
        let horizon = self.now - 60;
        let after = match (cursor, start_time) {
            (Some(cursor), _) => match decode_cursor(cursor) {
                Some(position) => position,
                None => return error(400, "InvalidCursor", "The cursor is invalid"),
            },
            (None, Some(start)) => match start.parse::<i64>() {
                Ok(start) if start > horizon => {
                    return error(
                        400,
                        "InvalidValue",
                        "start_time is too recent. Please use a start_time at least one minute in the past.",
                    );
                }
                Ok(start) => (start - 1, u64::MAX),
                Err(_) => return error(400, "InvalidValue", "start_time must be an integer (epoch seconds)"),
            },
            (None, None) => return error(400, "InvalidValue", "start_time or cursor is required"),
        };
        let per_page = per_page.and_then(|p| p.parse::<usize>().ok()).unwrap_or(1000).clamp(1, 1000);
        let mut eligible: Vec<&Ticket> =
            self.tickets.values().filter(|t| t.updated_at <= horizon && (t.updated_at, t.id) > after).collect();
        eligible.sort_by_key(|t| (t.updated_at, t.id));
        let page: Vec<&Ticket> = eligible.iter().take(per_page).copied().collect();
        let end_of_stream = eligible.len() <= per_page;
        let next = page.last().map_or(after, |t| (t.updated_at, t.id));
        let after_cursor = encode_cursor(next.0, next.1);
        let tickets: Vec<Value> = page
            .iter()
            .map(|t| {
                let mut v = render_ticket(t, &self.fields, base);
                v["generated_timestamp"] = json!(t.updated_at);
                v
            })
            .collect();
        ok(json!({
            "tickets": tickets,
            "after_url": format!("{base}/api/v2/incremental/tickets/cursor.json?cursor={}&per_page={per_page}", after_cursor.replace('=', "%3D")),
            "before_url": null,
            "after_cursor": after_cursor,
            "before_cursor": null,
            "end_of_stream": end_of_stream
        }))
    }

    /// Brings the search index up to the state of `search_lag` seconds ago.
    fn refresh_index(&mut self) {
        let cutoff = self.now - self.search_lag;
        for (id, ticket) in &self.tickets {
            if ticket.updated_at <= cutoff {
                self.index.insert(*id, ticket.clone());
            }
        }
    }

    fn search(
        &mut self,
        query: &str,
        page: Option<&str>,
        per_page: Option<&str>,
        sort_order: Option<&str>,
        base: &str,
    ) -> Reply {
        self.stats.search += 1;
        self.refresh_index();
        let per_page = per_page.and_then(|p| p.parse::<usize>().ok()).unwrap_or(100).clamp(1, 100);
        let page = page.and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
        if (page - 1) * per_page >= SEARCH_CAP {
            return error(
                422,
                "invalid",
                "Invalid search: Requested response size was greater than Search Response Limits",
            );
        }
        let mut conditions: Vec<Condition> = Vec::new();
        let mut is_ticket_query = false;
        for token in query.split_whitespace() {
            let (negated, token) = match token.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, token),
            };
            let condition: Condition = if token == "type:ticket" {
                is_ticket_query = true;
                continue;
            } else if let Some((op, value)) = ["status<", "status>", "status:"]
                .iter()
                .find_map(|p| token.strip_prefix(p).map(|v| (p.as_bytes()[6], v.to_owned())))
            {
                let Some(rank) = status_rank(&value) else {
                    return error(400, "invalid", &format!("Invalid search: unknown status {value:?}"));
                };
                Box::new(move |t: &Ticket| {
                    let r = status_rank(&t.status).unwrap_or(0);
                    match op {
                        b'<' => r < rank,
                        b'>' => r > rank,
                        _ => r == rank,
                    }
                })
            } else if let Some(tag) = token.strip_prefix("tags:").or_else(|| token.strip_prefix("tag:")) {
                let tag = tag.to_lowercase();
                if tag == "none" {
                    Box::new(|t: &Ticket| t.tags.is_empty())
                } else {
                    Box::new(move |t: &Ticket| t.tags.contains(&tag))
                }
            } else if let Some((field, value)) =
                token.strip_prefix("custom_field_").and_then(|rest| rest.split_once(':'))
            {
                let Ok(field) = field.parse::<u64>() else {
                    return error(400, "invalid", &format!("Invalid search: bad custom field {token:?}"));
                };
                let value = value.to_owned();
                Box::new(move |t: &Ticket| {
                    let current = t.custom.get(&field).and_then(Value::as_str).filter(|v| !v.is_empty());
                    if value == "none" { current.is_none() } else { current == Some(value.as_str()) }
                })
            } else {
                let word = token.to_lowercase();
                Box::new(move |t: &Ticket| {
                    t.subject.to_lowercase().contains(&word) || t.description.to_lowercase().contains(&word)
                })
            };
            conditions.push(if negated { Box::new(move |t: &Ticket| !condition(t)) } else { condition });
        }
        if !is_ticket_query {
            return error(400, "invalid", "Invalid search: the sandbox answers ticket searches only (type:ticket)");
        }
        let cutoff = self.now - self.search_lag;
        let mut hits: Vec<&Ticket> =
            self.index.values().filter(|t| t.created_at <= cutoff && conditions.iter().all(|c| c(t))).collect();
        if sort_order == Some("desc") {
            hits.reverse();
        }
        let count = hits.len();
        let results: Vec<Value> = hits
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|t| {
                let mut v = render_ticket(t, &self.fields, base);
                v["result_type"] = json!("ticket");
                v
            })
            .collect();
        let link = |p: usize| {
            json!(format!("{base}/api/v2/search.json?page={p}&per_page={per_page}&query={}", query.replace(' ', "+")))
        };
        ok(json!({
            "results": results,
            "facets": null,
            "next_page": if page * per_page < count { link(page + 1) } else { Value::Null },
            "previous_page": if page > 1 { link(page - 1) } else { Value::Null },
            "count": count
        }))
    }

    fn job_value(&self, job: &Job, base: &str) -> Value {
        let total = job.updates.len();
        let (status, progress, message, results) = match (&job.results, job.polls) {
            (Some(results), _) => (
                "completed",
                json!(total),
                json!(format!(
                    "Completed at {}",
                    chrono::DateTime::from_timestamp(job.completed_at.unwrap_or(self.now), 0)
                        .unwrap_or_default()
                        .format("%Y-%m-%d %H:%M:%S +0000")
                )),
                json!(results),
            ),
            (None, polls) if polls > self.faults.job_queued_polls => {
                let progress = (total / 2).max(1);
                let id = job.updates.get(progress - 1).and_then(|u| u["id"].as_u64()).unwrap_or(0);
                ("working", json!(progress), json!(format!("Updating ticket #{id}")), Value::Null)
            }
            _ => ("queued", Value::Null, Value::Null, Value::Null),
        };
        json!({"job_status": {
            "id": job.id,
            "url": format!("{base}/api/v2/job_statuses/{}.json", job.id),
            "total": total,
            "progress": progress,
            "status": status,
            "message": message,
            "results": results
        }})
    }

    fn update_many(&mut self, body: &[u8], base: &str) -> Reply {
        self.stats.update_many += 1;
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return error(400, "InvalidJSON", "The request body is not valid JSON");
        };
        let Some(tickets) = body["tickets"].as_array() else {
            return error(400, "InvalidValue", "The sandbox accepts the batch form only: {\"tickets\":[{\"id\":…,…}]}");
        };
        if tickets.len() > 100 {
            return too_many_values();
        }
        if tickets.iter().any(|t| t["id"].as_u64().is_none()) {
            return error(400, "InvalidValue", "Every ticket in a batch update needs an integer id");
        }
        let unfinished = self.jobs.values().filter(|j| j.results.is_none()).count();
        if unfinished >= self.faults.job_cap {
            return error(
                429,
                "TooManyJobs",
                &format!(
                    "Number of allowed concurrent jobs ({}) exceeded; wait for queued jobs to finish",
                    self.faults.job_cap
                ),
            );
        }
        self.job_seq += 1;
        let id = format!("V3-{:016x}{:016x}", rand::rng().random::<u64>(), self.job_seq);
        for t in tickets {
            *self.submissions.entry(t["id"].as_u64().unwrap_or(0)).or_default() += 1;
        }
        let job = Job { id: id.clone(), updates: tickets.clone(), polls: 0, results: None, completed_at: None };
        let value = self.job_value(&job, base);
        self.jobs.insert(id.clone(), job);
        self.job_order.push(id);
        ok(value)
    }

    fn poll(&mut self, id: &str, base: &str) -> Reply {
        self.stats.job_polls += 1;
        let Some(mut job) = self.jobs.get(id).cloned() else { return not_found() };
        job.polls += 1;
        if job.results.is_none() && job.polls > self.faults.job_queued_polls + self.faults.job_working_polls {
            let mut results = Vec::new();
            for (index, update) in job.updates.iter().enumerate() {
                let ticket_id = update["id"].as_u64().unwrap_or(0);
                let stale = update["safe_update"] == true
                    && self
                        .tickets
                        .get(&ticket_id)
                        .is_some_and(|t| update["updated_stamp"].as_str() != Some(iso(t.updated_at).as_str()));
                if stale {
                    results.push(json!({
                        "index": index, "id": ticket_id, "action": "update", "status": "Failed",
                        "success": false, "error": "UpdateConflict", "details": SAFE_UPDATE_CONFLICT
                    }));
                    continue;
                }
                let rate = self.faults.job_item_failure_rate;
                if rate > 0.0 && self.rng.random_bool(rate.min(1.0)) {
                    results.push(json!({
                        "index": index, "id": ticket_id, "action": "update", "status": "Failed",
                        "success": false, "error": "TicketUpdateFailed",
                        "details": "The ticket could not be updated (sandbox fault: job_item_failure_rate)"
                    }));
                    continue;
                }
                match self.apply(ticket_id, update, super::AGENT_IDS[0]) {
                    Ok(()) => {
                        results.push(json!({"action": "update", "status": "Updated", "success": true, "id": ticket_id}))
                    }
                    Err((code, details)) => results.push(json!({
                        "index": index, "id": ticket_id, "action": "update", "status": "Failed",
                        "success": false, "error": code, "details": details
                    })),
                }
            }
            job.results = Some(results);
            job.completed_at = Some(self.now);
        }
        let value = self.job_value(&job, base);
        self.jobs.insert(id.to_owned(), job);
        ok(value)
    }

    fn update_one(&mut self, id: u64, body: &[u8], base: &str) -> Reply {
        self.stats.single_updates += 1;
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return error(400, "InvalidJSON", "The request body is not valid JSON");
        };
        let update = &body["ticket"];
        if !update.is_object() {
            return error(400, "InvalidValue", "The body must be {\"ticket\":{…}}");
        }
        let Some(current) = self.tickets.get(&id) else { return not_found() };
        if update["safe_update"] == true {
            let stamp = update["updated_stamp"].as_str().unwrap_or("");
            if stamp != iso(current.updated_at) {
                return error(409, "UpdateConflict", SAFE_UPDATE_CONFLICT);
            }
        }
        let previous = render_ticket(current, &self.fields, base);
        let before = self.comments.get(&id).map_or(0, Vec::len);
        match self.apply(id, update, super::AGENT_IDS[0]) {
            Ok(()) => {
                let ticket = &self.tickets[&id];
                let now = render_ticket(ticket, &self.fields, base);
                let mut events: Vec<Value> = self.comments[&id][before..]
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "Comment", "author_id": c.author_id, "body": c.body, "public": c.public}))
                    .collect();
                for (n, key) in ["subject", "priority", "type", "status", "tags"].iter().enumerate() {
                    if previous[key] != now[key] {
                        events.push(json!({"id": ticket.updated_at as u64 * 100 + n as u64, "type": "Change",
                            "value": now[key], "field_name": key, "previous_value": previous[key]}));
                    }
                }
                let audit = json!({
                    "id": ticket.updated_at as u64 * 10 + id % 10, "ticket_id": id, "created_at": iso(ticket.updated_at),
                    "author_id": super::AGENT_IDS[0], "metadata": {"system": {}, "custom": {}}, "events": events,
                    "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": null}}
                });
                ok(json!({"ticket": render_ticket(ticket, &self.fields, base), "audit": audit}))
            }
            Err(("RecordNotFound", _)) => not_found(),
            Err((code, details)) => Reply {
                status: 422,
                body: json!({"error": code, "description": "Record validation errors",
                    "details": {"base": [{"description": details, "error": "InvalidValue"}]}}),
            },
        }
    }
}
