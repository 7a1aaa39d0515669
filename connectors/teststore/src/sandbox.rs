//! The teststore sandbox: an axum server holding records in memory, with the behaviour of a real
//! platform API (bearer auth, pagination headers, per-item batch errors, 413 over the batch limit,
//! versions bumped by every write) and injectable faults (latency, 5xx, 429 with `Retry-After`,
//! requests that hang past the client's timeout, and writes that land but whose response hangs).
//! Tests drive it in-process and inspect it directly: what was written, how often, and when. Faults
//! are drawn from a seeded generator when [`Sandbox::set_seed`] was called, so a failing chaos run
//! can be replayed (the draws are in arrival order, which concurrency may still reshuffle).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use enrichd_connector::lookup::{BillQuery, Duplicate, LookUp, Organisation, SupplierMatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{MAX_BATCH, MAX_PER_PAGE};

/// Faults the sandbox injects into API requests (not into the inspection methods).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every request.
    pub latency: Duration,
    /// Share of requests answered `503` before doing anything.
    pub server_error_rate: f64,
    /// Share of requests answered `429` with `Retry-After: 1` before doing anything.
    pub rate_limit_rate: f64,
    /// Share of requests that hang for `hang` before anything happens (the client's timeout fires
    /// and nothing was read or written).
    pub timeout_rate: f64,
    /// Share of batch writes that are applied and whose response then hangs for `hang`: the write
    /// landed, but the client sees a timeout.
    pub lost_response_rate: f64,
    /// How long a hung request hangs (60 s when zero).
    pub hang: Duration,
}

impl Faults {
    fn hang(&self) -> Duration {
        if self.hang.is_zero() { Duration::from_secs(60) } else { self.hang }
    }
}

/// One write the sandbox applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedWrite {
    pub entity: String,
    pub id: String,
    pub fields: Map<String, Value>,
    pub version: u64,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub list_requests: u64,
    pub fetch_requests: u64,
    pub batch_requests: u64,
    pub rejected_by_faults: u64,
    /// Requests hung by `timeout_rate` (nothing done) and writes applied whose response was hung.
    pub hung: u64,
    pub lost_responses: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    version: u64,
    fields: Map<String, Value>,
}

#[derive(Default)]
struct Inner {
    entities: HashMap<String, BTreeMap<u64, Stored>>,
    faults: Faults,
    writes: Vec<AppliedWrite>,
    stats: Stats,
    oauth: Option<OAuth>,
    /// Where the last page of a listing ended: `(entity, offset, first id after it)`, so walking the
    /// pages in order costs one page each instead of skipping from the start every time. Cleared
    /// whenever records are added.
    list_resume: Option<(String, u64, u64)>,
    /// The fault generator, when seeded.
    rng: Option<StdRng>,
    /// `GET /organisation`, when set.
    organisation: Option<Organisation>,
    /// Look-ups answered (`POST /api/{entity}/look_up`), when enabled.
    look_ups: bool,
    /// Look-up requests received, in order.
    look_up_requests: Vec<BillQuery>,
}

/// An OAuth2 token endpoint whose refresh tokens rotate: each refresh returns a new refresh token
/// and the old one stops working (like Xero and QuickBooks Online).
struct OAuth {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    access_tokens: Vec<String>,
    lifetime_secs: u64,
    refreshes: u64,
}

/// A running or not-yet-started teststore. Cloning shares the same store.
#[derive(Clone)]
pub struct Sandbox {
    token: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

impl Sandbox {
    /// An empty store that accepts `Authorization: Bearer {token}`.
    pub fn new(token: &str) -> Self {
        Self { token: token.into(), inner: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a record at version 1.
    pub fn insert(&self, entity: &str, id: u64, fields: Map<String, Value>) {
        let mut inner = self.lock();
        inner.list_resume = None;
        inner.entities.entry(entity.into()).or_default().insert(id, Stored { version: 1, fields });
    }

    /// Fills `product` with `count` sparse hardware-catalogue products, ids 1..=count. Every product
    /// whose id is divisible by `missing_every` has an empty description; the others have one.
    pub fn seed_products(&self, count: u64, missing_every: u64) {
        const KINDS: [&str; 8] =
            ["Hex bolt", "Wood screw", "Wall plug", "Hinge", "Cable tie", "Washer", "Shelf bracket", "Drill bit"];
        const FINISH: [&str; 4] = ["zinc plated", "stainless A2", "black oxide", "brass"];
        let mut inner = self.lock();
        inner.list_resume = None;
        let products = inner.entities.entry("product".into()).or_default();
        for id in 1..=count {
            let kind = KINDS[(id as usize) % KINDS.len()];
            let finish = FINISH[(id as usize / 8) % FINISH.len()];
            let size = 3 + id % 10;
            let description = if missing_every > 0 && id % missing_every == 0 {
                String::new()
            } else {
                format!("<p>{kind} M{size}, {finish}. Sold in packs of 100.</p>")
            };
            let fields = json!({
                "name": format!("{kind} M{size} {finish}"),
                "sku": format!("HW-{id:06}"),
                "weight": format!("{:.2}", 0.05 + (id % 17) as f64 / 100.0),
                "supplier_line": format!("{} M{size}x{} {}", kind.to_uppercase(), 10 + id % 90, finish),
                "description": description,
            });
            let Value::Object(fields) = fields else { unreachable!() };
            products.insert(id, Stored { version: 1, fields });
        }
    }

    /// Simulates someone editing a record on the platform: sets `field` and bumps the version.
    pub fn edit(&self, entity: &str, id: u64, field: &str, value: Value) {
        let mut inner = self.lock();
        let record = inner.entities.get_mut(entity).and_then(|e| e.get_mut(&id)).expect("edit of an unknown record");
        record.fields.insert(field.into(), value);
        record.version += 1;
    }

    /// A record's current version and fields.
    pub fn record(&self, entity: &str, id: u64) -> Option<(u64, Map<String, Value>)> {
        self.lock().entities.get(entity)?.get(&id).map(|r| (r.version, r.fields.clone()))
    }

    /// Every write applied so far, in order.
    pub fn writes(&self) -> Vec<AppliedWrite> {
        self.lock().writes.clone()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Turns on `POST /oauth/token` (grant `refresh_token`, client credentials in Basic auth). The
    /// access tokens it issues are accepted as bearer tokens beside the static one.
    pub fn enable_oauth(&self, client_id: &str, client_secret: &str, refresh_token: &str, lifetime_secs: u64) {
        self.lock().oauth = Some(OAuth {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            refresh_token: refresh_token.into(),
            access_tokens: Vec::new(),
            lifetime_secs,
            refreshes: 0,
        });
    }

    /// The refresh token that works now, and how many refreshes were made.
    pub fn oauth_state(&self) -> Option<(String, u64)> {
        self.lock().oauth.as_ref().map(|o| (o.refresh_token.clone(), o.refreshes))
    }

    /// Serves `organisation` at `GET /organisation` from now on.
    pub fn set_organisation(&self, organisation: Organisation) {
        self.lock().organisation = Some(organisation);
    }

    /// Answers look-ups from now on: suppliers are the `suppliers` records (`name`, `tax_number`);
    /// bills are the records of the entity looked up (`supplier.id`, `supplier.name`,
    /// `invoice_number`, `total`, `date`, `status`, `line_items[].account_code`).
    pub fn enable_look_ups(&self) {
        self.lock().look_ups = true;
    }

    /// The look-ups asked for so far, in order.
    pub fn look_up_requests(&self) -> Vec<BillQuery> {
        self.lock().look_up_requests.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Draws faults from a generator seeded with `seed` from now on.
    pub fn set_seed(&self, seed: u64) {
        self.lock().rng = Some(StdRng::seed_from_u64(seed));
    }

    /// A uniform draw in `[0, 1)`: seeded when [`Sandbox::set_seed`] was called.
    fn roll(&self) -> f64 {
        match self.lock().rng.as_mut() {
            Some(rng) => rng.random(),
            None => rand::rng().random(),
        }
    }

    /// The router, for embedding or serving.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/{entity}", get(list))
            .route("/api/{entity}/batch", post(batch))
            .route("/api/{entity}/look_up", post(look_up))
            .route("/organisation", get(organisation))
            .route("/oauth/token", post(token))
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks a free port) in a background task; returns the bound address.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "teststore sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// Applies auth and faults; `Some(response)` when the request ends here.
    async fn gate(&self, headers: &HeaderMap) -> Option<Response> {
        let faults = self.lock().faults.clone();
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let issued = |t: &str| self.lock().oauth.as_ref().is_some_and(|o| o.access_tokens.iter().any(|a| a == t));
        if !given.is_some_and(|t| t == &*self.token || issued(t)) {
            return Some(error(StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid bearer token."));
        }
        let roll = self.roll();
        if roll < faults.rate_limit_rate {
            self.lock().stats.rejected_by_faults += 1;
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests.");
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            return Some(response);
        }
        if roll < faults.rate_limit_rate + faults.server_error_rate {
            self.lock().stats.rejected_by_faults += 1;
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The store is temporarily unavailable.",
            ));
        }
        if roll < faults.rate_limit_rate + faults.server_error_rate + faults.timeout_rate {
            self.lock().stats.hung += 1;
            tokio::time::sleep(faults.hang()).await;
            return Some(error(StatusCode::GATEWAY_TIMEOUT, "timeout", "The request timed out."));
        }
        None
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "data": {"status": status.as_u16()}}))).into_response()
}

fn wire(id: u64, record: &Stored) -> Value {
    json!({"id": id.to_string(), "version": record.version.to_string(), "fields": record.fields})
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<String>,
    per_page: Option<String>,
    ids: Option<String>,
}

async fn list(
    State(sandbox): State<Sandbox>,
    Path(entity): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = sandbox.gate(&headers).await {
        return response;
    }
    let mut inner = sandbox.lock();
    if let Some(ids) = q.ids {
        inner.stats.fetch_requests += 1;
        let Some(records) = inner.entities.get(&entity) else {
            return Json(Vec::<Value>::new()).into_response();
        };
        let found: Vec<Value> = ids
            .split(',')
            .filter_map(|id| id.trim().parse::<u64>().ok())
            .filter_map(|id| records.get(&id).map(|r| wire(id, r)))
            .collect();
        return Json(found).into_response();
    }
    inner.stats.list_requests += 1;
    let parse = |v: Option<String>, default: u64, name: &str| -> Result<u64, String> {
        match v {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{name} must be a positive integer, got {v:?}")),
        }
    };
    let (page, per_page) = match (parse(q.page, 1, "page"), parse(q.per_page, 10, "per_page")) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, "invalid_param", &m),
    };
    if per_page > MAX_PER_PAGE as u64 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_param",
            &format!("per_page must be between 1 and {MAX_PER_PAGE}"),
        );
    }
    let offset = (page - 1) * per_page;
    let resume = match &inner.list_resume {
        Some((e, at, next)) if *e == entity && *at == offset => Some(*next),
        _ => None,
    };
    let records = inner.entities.get(&entity);
    let total = records.map_or(0, |r| r.len() as u64);
    let body: Vec<(u64, Value)> = records
        .map(|r| {
            let page: Box<dyn Iterator<Item = (&u64, &Stored)>> = match resume {
                Some(next) => Box::new(r.range(next..)),
                None => Box::new(r.iter().skip(offset as usize)),
            };
            page.take(per_page as usize).map(|(id, rec)| (*id, wire(*id, rec))).collect()
        })
        .unwrap_or_default();
    if let Some((last, _)) = body.last() {
        inner.list_resume = Some((entity.clone(), offset + body.len() as u64, last.saturating_add(1)));
    }
    let body: Vec<Value> = body.into_iter().map(|(_, v)| v).collect();
    let mut response = Json(body).into_response();
    let h = response.headers_mut();
    h.insert("X-Total", total.into());
    h.insert("X-Total-Pages", total.div_ceil(per_page).into());
    response
}

async fn organisation(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    if let Some(response) = sandbox.gate(&headers).await {
        return response;
    }
    match sandbox.lock().organisation.clone() {
        Some(org) => Json(org).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "This store has no organisation."),
    }
}

async fn look_up(
    State(sandbox): State<Sandbox>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Json(query): Json<BillQuery>,
) -> Response {
    if let Some(response) = sandbox.gate(&headers).await {
        return response;
    }
    let mut inner = sandbox.lock();
    if !inner.look_ups {
        return error(StatusCode::NOT_FOUND, "not_found", "This store answers no look-ups.");
    }
    inner.look_up_requests.push(query.clone());
    let empty = BTreeMap::new();
    let suppliers = inner.entities.get("suppliers").unwrap_or(&empty);
    let bills = inner.entities.get(&entity).unwrap_or(&empty);
    Json(answer_look_up(suppliers, bills, &query)).into_response()
}

/// Letters and digits only, upper case: how tax numbers and invoice numbers are compared.
fn plain(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// Trimmed, runs of whitespace as one space, lower case: how names are compared.
fn name_key(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn answer_look_up(suppliers: &BTreeMap<u64, Stored>, bills: &BTreeMap<u64, Stored>, q: &BillQuery) -> LookUp {
    let by_tax =
        q.supplier_tax_number.as_deref().map(plain).filter(|t| !t.is_empty()).and_then(|tax| {
            suppliers.iter().find(|(_, s)| text(&s.fields, "tax_number").is_some_and(|t| plain(t) == tax))
        });
    let by_name = || {
        q.supplier_name.as_deref().map(name_key).and_then(|name| {
            suppliers.iter().find(|(_, s)| text(&s.fields, "name").is_some_and(|n| name_key(n) == name))
        })
    };
    let supplier = match by_tax {
        Some(found) => Some((found, "tax_number")),
        None => by_name().map(|found| (found, "name")),
    }
    .map(|((id, s), matched_by)| SupplierMatch {
        id: id.to_string(),
        name: text(&s.fields, "name").unwrap_or_default().to_owned(),
        matched_by: matched_by.to_owned(),
    });
    // A bill is the same supplier's by its supplier id, or by name when nobody was matched.
    let same_supplier = |fields: &Map<String, Value>| match &supplier {
        Some(m) => fields
            .get("supplier.id")
            .is_some_and(|v| v.as_str() == Some(m.id.as_str()) || v.as_u64().is_some_and(|n| n.to_string() == m.id)),
        None => match (q.supplier_name.as_deref(), text(fields, "supplier.name")) {
            (Some(a), Some(b)) => name_key(a) == name_key(b),
            _ => false,
        },
    };
    let mut duplicates = Vec::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (id, bill) in bills {
        if id.to_string() == q.record_id || !same_supplier(&bill.fields) {
            continue;
        }
        let f = &bill.fields;
        let number = text(f, "invoice_number");
        let reason = match (q.invoice_number.as_deref(), number) {
            (Some(a), Some(b)) if plain(a) == plain(b) => Some(format!("same supplier and invoice number {b}")),
            _ => match (q.total, f.get("total").and_then(Value::as_f64), q.date.as_deref(), text(f, "date")) {
                (Some(a), Some(b), Some(x), Some(y)) if (a - b).abs() < 0.005 && x == y => {
                    Some(format!("same supplier, total {b:.2} and date {y}"))
                }
                _ => None,
            },
        };
        if let Some(reason) = reason {
            duplicates.push(Duplicate {
                id: id.to_string(),
                invoice_number: number.map(str::to_owned),
                status: text(f, "status").unwrap_or("DRAFT").to_owned(),
                reason,
            });
        }
        if supplier.is_some() {
            for line in f.get("line_items").and_then(Value::as_array).into_iter().flatten() {
                if let Some(code) = line.get("account_code").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                    *codes.entry(code.to_owned()).or_default() += 1;
                }
            }
        }
    }
    // The most used code; the smallest of equally used ones.
    let account_code = codes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(c, _)| c.clone());
    LookUp { supplier, duplicates, account_code }
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    refresh_token: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

async fn token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    let mut inner = sandbox.lock();
    let Some(oauth) = inner.oauth.as_mut() else { return oauth_error(StatusCode::NOT_FOUND, "not_enabled") };
    let client = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(decode_basic);
    if client != Some((oauth.client_id.clone(), oauth.client_secret.clone())) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.grant_type != "refresh_token" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if form.refresh_token.as_deref() != Some(oauth.refresh_token.as_str()) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    oauth.refreshes += 1;
    let n: u64 = rand::rng().random();
    oauth.refresh_token = format!("refresh-{n:016x}");
    let access = format!("access-{:016x}", rand::rng().random::<u64>());
    oauth.access_tokens.push(access.clone());
    Json(json!({
        "access_token": access,
        "refresh_token": oauth.refresh_token,
        "expires_in": oauth.lifetime_secs,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// `Authorization: Basic ...` → (id, secret).
fn decode_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(header.strip_prefix("Basic ")?.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&bytes).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(default)]
    update: Vec<Value>,
}

async fn batch(
    State(sandbox): State<Sandbox>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = sandbox.gate(&headers).await {
        return response;
    }
    let lose_response = {
        let rate = sandbox.lock().faults.lost_response_rate;
        rate > 0.0 && sandbox.roll() < rate
    };
    let response = apply_batch(&sandbox, entity, body);
    if lose_response {
        let hang = {
            let mut inner = sandbox.lock();
            inner.stats.lost_responses += 1;
            inner.faults.hang()
        };
        tokio::time::sleep(hang).await;
    }
    response
}

fn apply_batch(sandbox: &Sandbox, entity: String, body: axum::body::Bytes) -> Response {
    let mut inner = sandbox.lock();
    inner.stats.batch_requests += 1;
    let body: BatchBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "invalid_json", &format!("Body is not valid JSON: {e}"));
        }
    };
    if body.update.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_entity_too_large",
            &format!("Unable to accept more than {MAX_BATCH} items for this request."),
        );
    }
    let Inner { entities, writes, .. } = &mut *inner;
    let records = entities.entry(entity.clone()).or_default();
    let results: Vec<Value> = body
        .update
        .into_iter()
        .map(|item| {
            let id_text = item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let item_error = |status: u16, code: &str, message: String| {
                json!({"id": id_text, "error": {"code": code, "message": message, "status": status}})
            };
            let Some(record) = id_text.parse::<u64>().ok().and_then(|id| records.get_mut(&id)) else {
                return item_error(400, "invalid_id", "Invalid ID.".into());
            };
            let Some(fields) = item.get("fields").and_then(Value::as_object) else {
                return item_error(400, "invalid_fields", "fields must be an object".into());
            };
            if let Some((key, _)) = fields.iter().find(|(_, v)| v.is_object()) {
                return item_error(400, "invalid_type", format!("{key} must be a string, number, boolean or list"));
            }
            for (key, value) in fields {
                record.fields.insert(key.clone(), value.clone());
            }
            record.version += 1;
            writes.push(AppliedWrite { entity: entity.clone(), id: id_text.clone(), fields: fields.clone(), version: record.version });
            json!({"id": id_text, "version": record.version.to_string()})
        })
        .collect();
    Json(json!({"update": results})).into_response()
}
