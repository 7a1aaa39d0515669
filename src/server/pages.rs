//! The review UI: server-rendered HTML over the store (runs, the queue, one item at a time, an
//! item's history) and the sign-in pages. Templates live in `templates/` and are escaped by default:
//! record text is untrusted and must render as text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::{Access, CsrfToken, Reviewer, SessionId, cleared_cookie, session_cookie};
use super::diff;
use crate::store::{Item, ItemState, Run, RunCounts, Store, StoreError, now_ms};

/// Runs shown on the runs page and searched by the queue.
const RUNS_LIMIT: i64 = 200;
/// Items read per run and state when filtering the queue.
const ITEMS_PER_RUN: i64 = 5000;
/// Items listed on the queue page.
const QUEUE_LIMIT: usize = 500;

/// What the pages need.
#[derive(Clone)]
struct Pages {
    store: Store,
    access: Access,
    templates: Arc<Environment<'static>>,
    /// Pipeline → record fields that hold HTML (reviewer edits to them are cleaned like answers).
    html_fields: Arc<BTreeMap<String, BTreeSet<String>>>,
}

/// The UI's routes.
pub fn routes(store: Store, access: Access, html_fields: BTreeMap<String, BTreeSet<String>>) -> Router {
    let pages = Pages { store, access, templates: Arc::new(templates()), html_fields: Arc::new(html_fields) };
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/queue", get(queue_page))
        .route("/items/{id}", get(item_page))
        .route("/items/{id}/history", get(history_page))
        .route("/items/{id}/approve", post(approve))
        .route("/items/{id}/reject", post(reject))
        .route("/items/{id}/edit", post(edit))
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css", include_str!("../../templates/assets/style.css")) }),
        )
        .route(
            "/assets/review.js",
            get(|| async { asset("text/javascript", include_str!("../../templates/assets/review.js")) }),
        )
        .with_state(pages)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// The templates, HTML-escaped by file name (every page is `.html`).
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("runs.html", include_str!("../../templates/runs.html")),
        ("run.html", include_str!("../../templates/run.html")),
        ("queue.html", include_str!("../../templates/queue.html")),
        ("item.html", include_str!("../../templates/item.html")),
        ("history.html", include_str!("../../templates/history.html")),
        ("error.html", include_str!("../../templates/error.html")),
    ] {
        env.add_template(name, source).unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

/// Errors of the UI, each rendered as a page.
#[derive(Debug)]
enum PageError {
    Store(StoreError),
    BadRequest(String),
    Render(minijinja::Error),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Store(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            PageError::Store(StoreError::NotFound(what)) => (StatusCode::NOT_FOUND, format!("{what} not found")),
            PageError::Store(e @ StoreError::IllegalTransition { .. }) => {
                (StatusCode::CONFLICT, format!("{e} (someone else may have acted on it; reload the page)"))
            }
            PageError::Store(e) => {
                tracing::error!(error = %e, "review UI: store error");
                (StatusCode::INTERNAL_SERVER_ERROR, "the database could not answer; see the daemon's log".to_owned())
            }
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            PageError::Render(e) => {
                tracing::error!(error = %e, "review UI: template error");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered; see the daemon's log".to_owned())
            }
        };
        let env = templates();
        let body = env
            .get_template("error.html")
            .and_then(|t| t.render(json!({ "status": status.to_string(), "message": message })))
            .unwrap_or_else(|_| message.clone());
        (status, Html(body)).into_response()
    }
}

/// The visitor: who is signed in (if anyone) and their session's CSRF token.
struct Visitor {
    reviewer: Option<Reviewer>,
    csrf: String,
    session: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Visitor {
            reviewer: parts.extensions.get::<Reviewer>().cloned(),
            csrf: parts.extensions.get::<CsrfToken>().map(|c| c.0.clone()).unwrap_or_default(),
            session: parts.extensions.get::<SessionId>().map(|s| s.0.clone()),
        })
    }
}

impl Visitor {
    fn actor(&self) -> Result<&str, PageError> {
        self.reviewer.as_ref().map(|r| r.actor.as_str()).ok_or_else(|| PageError::BadRequest("sign in first".into()))
    }
}

impl Pages {
    fn render(&self, name: &str, nav: &str, visitor: &Visitor, mut ctx: Value) -> Result<Html<String>, PageError> {
        let map = ctx.as_object_mut().expect("page contexts are objects");
        map.insert("nav".into(), json!(nav));
        map.insert("reviewer".into(), json!(visitor.reviewer.as_ref().map(|r| r.name.clone())));
        map.insert("csrf".into(), json!(visitor.csrf));
        let template = self.templates.get_template(name).map_err(PageError::Render)?;
        template.render(ctx).map(Html).map_err(PageError::Render)
    }
}

// ---- sign-in ----

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    password: Option<String>,
    #[serde(default)]
    next: String,
}

/// Only paths on this server are followed after signing in.
fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") { next } else { "/runs" }
}

async fn login_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Query(query): Query<LoginQuery>,
) -> Result<Html<String>, PageError> {
    login_view(&pages, &visitor, local_path(&query.next), "", None)
}

fn login_view(
    pages: &Pages,
    visitor: &Visitor,
    next: &str,
    name: &str,
    error: Option<&str>,
) -> Result<Html<String>, PageError> {
    pages.render(
        "login.html",
        "",
        visitor,
        json!({
            "next": next,
            "name": name,
            "error": error,
            "needs_password": pages.access.needs_password(),
            "can_sign_in": pages.access.can_sign_in(),
        }),
    )
}

async fn login(State(pages): State<Pages>, visitor: Visitor, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(&form.next).to_owned();
    match pages.access.sign_in(visitor.session.as_deref(), &form.name, form.password.as_deref()) {
        Ok(session) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, session_cookie(&session));
            response
        }
        Err(message) => {
            if pages.access.needs_password() {
                // Slows guessing down; the password is shared, so this is what stands between a
                // reachable server and a brute-force loop.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            tracing::warn!(name = %form.name, "review UI: sign-in refused: {message}");
            match login_view(&pages, &visitor, &next, &form.name, Some(&message)) {
                Ok(page) => (StatusCode::UNAUTHORIZED, page).into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}

async fn logout(State(pages): State<Pages>, visitor: Visitor) -> Response {
    if let Some(session) = &visitor.session {
        pages.access.sign_out(session);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cleared_cookie());
    response
}

// ---- runs ----

#[derive(Serialize)]
struct RunView {
    id: i64,
    pipeline: String,
    status: String,
    status_reason: Option<String>,
    total: i64,
    done: i64,
    review: i64,
    failures: String,
    spend: String,
    eta: String,
    started: String,
}

fn run_view(run: &Run, counts: &RunCounts) -> RunView {
    let pending = counts.machine_pending();
    let eta = if !run.status.is_active() {
        "—".to_owned()
    } else if pending == 0 {
        if counts.awaiting_review() > 0 { "waiting for review".to_owned() } else { "—".to_owned() }
    } else {
        let processed = counts.total() - pending;
        let elapsed = (now_ms() - run.created_at).max(1);
        if processed <= 0 {
            "estimating…".to_owned()
        } else {
            let remaining_ms = pending as f64 * elapsed as f64 / processed as f64;
            format!("about {}", human_duration(remaining_ms / 1000.0))
        }
    };
    RunView {
        id: run.id,
        pipeline: run.pipeline.clone(),
        status: run.status.to_string(),
        status_reason: run.status_reason.clone(),
        total: counts.total(),
        done: counts.terminal(),
        review: counts.awaiting_review(),
        failures: format!(
            "{} dead · {} conflicts · {} write failed",
            counts.get(ItemState::Dead),
            counts.get(ItemState::Conflict),
            counts.get(ItemState::WriteFailed)
        ),
        spend: format!("${:.4}", run.cost_micros as f64 / 1e6),
        eta,
        started: utc(run.created_at),
    }
}

fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

async fn runs_page(State(pages): State<Pages>, visitor: Visitor) -> Result<Html<String>, PageError> {
    let mut views = Vec::new();
    for run in pages.store.runs(&[], RUNS_LIMIT).await? {
        let counts = pages.store.counts(run.id).await?;
        views.push(run_view(&run, &counts));
    }
    pages.render("runs.html", "runs", &visitor, json!({ "runs": views }))
}

async fn run_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    let report = pages.store.report(id).await?;
    let counts: Vec<Value> = report.counts.0.iter().map(|(s, n)| json!({ "state": s.as_str(), "n": n })).collect();
    pages.render(
        "run.html",
        "runs",
        &visitor,
        json!({
            "run": run_view(&report.run, &report.counts),
            "counts": counts,
            "finished": report.run.status.is_finished(),
            "report": report.lines(),
        }),
    )
}

// ---- the queue ----

/// The queue's filter, as the query string carries it (empty means "any").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
struct QueueFilter {
    pipeline: String,
    run: String,
    /// `review` (proposed or edited; the default), `all`, or one state.
    state: String,
    /// `with`, `without` or empty.
    warnings: String,
    q: String,
}

impl QueueFilter {
    fn run_id(&self) -> Result<Option<i64>, PageError> {
        let run = self.run.trim();
        if run.is_empty() {
            return Ok(None);
        }
        run.parse().map(Some).map_err(|_| PageError::BadRequest(format!("run {run:?} is not a run id")))
    }

    /// The states to list; `None` is every state.
    fn states(&self) -> Result<Option<Vec<ItemState>>, PageError> {
        match self.state.as_str() {
            "" | "review" => Ok(Some(vec![ItemState::Proposed, ItemState::Edited])),
            "all" => Ok(None),
            s => s.parse().map(|s| Some(vec![s])).map_err(PageError::BadRequest),
        }
    }

    /// The filter as a query string, to carry it from page to page.
    fn query(&self) -> String {
        let mut out = url_pairs();
        for (k, v) in [
            ("pipeline", &self.pipeline),
            ("run", &self.run),
            ("state", &self.state),
            ("warnings", &self.warnings),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }

    fn keeps(&self, item: &Item) -> bool {
        let warned = item.proposal.as_ref().is_some_and(|p| !p.warnings.is_empty());
        let warnings_ok = match self.warnings.as_str() {
            "with" => warned,
            "without" => !warned,
            _ => true,
        };
        let q = self.q.trim().to_lowercase();
        let text_ok = q.is_empty()
            || item.external_id.to_lowercase().contains(&q)
            || item.input.to_lowercase().contains(&q)
            || item.proposal.as_ref().is_some_and(|p| {
                serde_json::to_string(&p.values()).unwrap_or_default().to_lowercase().contains(&q)
                    || p.warnings.iter().any(|w| w.to_lowercase().contains(&q))
            });
        warnings_ok && text_ok
    }
}

/// A small query-string writer (everything but unreserved characters percent-encoded).
struct UrlPairs(String);

fn url_pairs() -> UrlPairs {
    UrlPairs(String::new())
}

impl UrlPairs {
    fn append_pair(&mut self, key: &str, value: &str) {
        const SET: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&percent_encoding::utf8_percent_encode(key, SET).to_string());
        self.0.push('=');
        self.0.push_str(&percent_encoding::utf8_percent_encode(value, SET).to_string());
    }

    fn finish(self) -> String {
        self.0
    }
}

/// The items the filter selects, oldest first, at most [`QUEUE_LIMIT`]; and whether there were more.
async fn filtered(store: &Store, filter: &QueueFilter) -> Result<(Vec<Item>, bool), PageError> {
    let run_id = filter.run_id()?;
    let states = filter.states()?;
    let mut runs: Vec<Run> = store
        .runs(&[], RUNS_LIMIT)
        .await?
        .into_iter()
        .filter(|r| filter.pipeline.is_empty() || r.pipeline == filter.pipeline)
        .filter(|r| run_id.is_none_or(|id| r.id == id))
        .collect();
    if let Some(id) = run_id
        && runs.is_empty()
    {
        let run = store.run(id).await?;
        if filter.pipeline.is_empty() || run.pipeline == filter.pipeline {
            runs.push(run);
        }
    }
    let mut items = Vec::new();
    for run in &runs {
        match &states {
            None => items.extend(store.items(run.id, None, ITEMS_PER_RUN).await?),
            Some(states) => {
                for s in states {
                    items.extend(store.items(run.id, Some(*s), ITEMS_PER_RUN).await?);
                }
            }
        }
    }
    items.retain(|i| filter.keeps(i));
    items.sort_by_key(|i| i.id);
    let truncated = items.len() > QUEUE_LIMIT;
    items.truncate(QUEUE_LIMIT);
    Ok((items, truncated))
}

/// The record's name for people: its `name`, `title` or `subject`, else its id.
fn title(item: &Item) -> String {
    let fields = item.input_fields().unwrap_or_default();
    ["name", "title", "subject"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
        .map_or_else(|| item.external_id.clone(), str::to_owned)
}

async fn queue_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Query(filter): Query<QueueFilter>,
) -> Result<Html<String>, PageError> {
    let (items, truncated) = filtered(&pages.store, &filter).await?;
    let runs = pages.store.runs(&[], RUNS_LIMIT).await?;
    let pipelines: BTreeSet<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    let mut states = vec!["review".to_owned(), "all".to_owned()];
    states.extend(ItemState::ALL.iter().map(|s| s.as_str().to_owned()));
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            let (fields, warnings) = i
                .proposal
                .as_ref()
                .map(|p| (p.fields.keys().cloned().collect::<Vec<_>>(), p.warnings.clone()))
                .unwrap_or_default();
            json!({
                "id": i.id,
                "external_id": i.external_id,
                "title": title(i),
                "run_id": i.run_id,
                "pipeline": i.pipeline,
                "state": i.state.as_str(),
                "fields": fields,
                "warnings": warnings,
            })
        })
        .collect();
    let mut shown = filter.clone();
    if shown.state.is_empty() {
        shown.state = "review".into();
    }
    pages.render(
        "queue.html",
        "queue",
        &visitor,
        json!({
            "items": rows,
            "truncated": truncated,
            "filter": {
                "pipeline": shown.pipeline,
                "run": filter.run_id().ok().flatten(),
                "state": shown.state,
                "warnings": shown.warnings,
                "q": shown.q,
            },
            "query": filter.query(),
            "pipelines": pipelines,
            "runs": runs.iter().map(|r| json!({ "id": r.id, "pipeline": r.pipeline })).collect::<Vec<_>>(),
            "states": states,
        }),
    )
}

// ---- one item ----

fn text_of(value: &Value) -> (String, &'static str) {
    match value {
        Value::Null => (String::new(), "text"),
        Value::String(s) => (s.clone(), "text"),
        other => (serde_json::to_string_pretty(other).expect("JSON values serialise"), "json"),
    }
}

fn item_url(id: i64, query: &str) -> String {
    if query.is_empty() { format!("/items/{id}") } else { format!("/items/{id}?{query}") }
}

async fn item_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(filter): Query<QueueFilter>,
) -> Result<Html<String>, PageError> {
    let item = pages.store.item(id).await?;
    let (listed, _) = filtered(&pages.store, &filter).await?;
    let query = filter.query();
    let at = listed.iter().position(|i| i.id == id);
    let prev = match at {
        Some(p) => p.checked_sub(1).map(|p| listed[p].id),
        None => listed.iter().rev().find(|i| i.id < id).map(|i| i.id),
    };
    let next = match at {
        Some(p) => listed.get(p + 1).map(|i| i.id),
        None => listed.iter().find(|i| i.id > id).map(|i| i.id),
    };
    let html = pages.html_fields.get(&item.pipeline);
    let fields: Vec<Value> = item
        .proposal
        .as_ref()
        .map(|p| {
            p.fields
                .iter()
                .map(|(name, change)| {
                    let (before, _) = text_of(&change.before);
                    let (proposed, _) = text_of(&change.proposed);
                    let (value, kind) = text_of(change.value());
                    let (left, right) = diff::sides(&before, &proposed);
                    json!({
                        "name": name,
                        "before": left,
                        "proposed": right,
                        "edited": change.edited.is_some(),
                        "value": value,
                        "kind": kind,
                        "html": html.is_some_and(|h| h.contains(name)),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let facts: Vec<Value> =
        item.input_fields()?.iter().map(|(name, value)| json!({ "name": name, "value": text_of(value).0 })).collect();
    let proposal = item.proposal.as_ref();
    let view = json!({
        "id": item.id,
        "title": title(&item),
        "external_id": item.external_id,
        "entity": item.entity,
        "run_id": item.run_id,
        "pipeline": item.pipeline,
        "state": item.state.as_str(),
        "model": proposal.map_or("—", |p| p.model.as_str()),
        "task_version": proposal.map_or(item.task_version.as_str(), |p| p.task_version.as_str()),
        "warnings": proposal.map(|p| p.warnings.clone()).unwrap_or_default(),
        "last_error": item.last_error,
        "verify_issues": item.verify_issues.iter().flatten()
            .map(|v| format!("{}: {} (stored: {})", v.field, v.reason, v.stored))
            .collect::<Vec<_>>(),
        "fields": fields,
        "facts": facts,
    });
    pages.render(
        "item.html",
        "queue",
        &visitor,
        json!({
            "item": view,
            "can_review": item.state.awaits_review() && visitor.reviewer.is_some(),
            "query": query,
            "position": at.map(|p| p + 1),
            "listed": listed.len(),
            "prev_url": prev.map(|p| item_url(p, &query)),
            "next_url": next.map(|n| item_url(n, &query)),
        }),
    )
}

/// Where to go after acting on `id`: the next item the filter still selects, else the queue.
async fn after_action(store: &Store, id: i64, filter: &QueueFilter) -> Result<Response, PageError> {
    let (listed, _) = filtered(store, filter).await?;
    let query = filter.query();
    let next = listed.iter().find(|i| i.id > id).or_else(|| listed.iter().find(|i| i.id != id));
    let to = match next {
        Some(i) => item_url(i.id, &query),
        None if query.is_empty() => "/queue".to_owned(),
        None => format!("/queue?{query}"),
    };
    Ok(Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
struct RejectForm {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct EditForm {
    field: String,
    value: String,
    /// `text` (the value is a string) or `json`.
    #[serde(default)]
    kind: String,
}

async fn approve(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(filter): Query<QueueFilter>,
) -> Result<Response, PageError> {
    pages.store.approve(id, visitor.actor()?).await?;
    after_action(&pages.store, id, &filter).await
}

async fn reject(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(filter): Query<QueueFilter>,
    Form(form): Form<RejectForm>,
) -> Result<Response, PageError> {
    let reason = form.reason.trim();
    pages.store.reject(id, visitor.actor()?, (!reason.is_empty()).then_some(reason)).await?;
    after_action(&pages.store, id, &filter).await
}

async fn edit(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(filter): Query<QueueFilter>,
    Form(form): Form<EditForm>,
) -> Result<Response, PageError> {
    let actor = visitor.actor()?;
    let item = pages.store.item(id).await?;
    // Browsers send textarea line breaks as CRLF.
    let text = form.value.replace("\r\n", "\n");
    let value = if form.kind == "json" {
        serde_json::from_str(&text)
            .map_err(|e| PageError::BadRequest(format!("item {id}: field {}: not valid JSON: {e}", form.field)))?
    } else if pages.html_fields.get(&item.pipeline).is_some_and(|h| h.contains(&form.field)) {
        Value::String(crate::task::clean_html(&text))
    } else {
        Value::String(text)
    };
    pages.store.edit(id, actor, &form.field, value).await?;
    let mut response = Redirect::to(&item_url(id, &filter.query())).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---- history ----

async fn history_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    let item = pages.store.item(id).await?;
    let events: Vec<Value> = pages
        .store
        .item_events(id)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "at": utc(e.at),
                "kind": e.kind,
                "from_state": e.from_state,
                "to_state": e.to_state,
                "actor": e.actor,
                "detail": e.detail.map(|d| serde_json::to_string_pretty(&d).expect("JSON values serialise")),
            })
        })
        .collect();
    pages.render("history.html", "queue", &visitor, json!({ "item_id": id, "title": title(&item), "events": events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_record_text() {
        let env = templates();
        let visitor = json!({ "nav": "", "reviewer": "<b>me</b>", "csrf": "t" });
        let mut ctx = visitor.as_object().unwrap().clone();
        ctx.insert("error".into(), json!("<script>alert(1)</script>"));
        ctx.insert("next".into(), json!("/x\"><script>"));
        ctx.insert("name".into(), json!(""));
        ctx.insert("needs_password".into(), json!(true));
        ctx.insert("can_sign_in".into(), json!(true));
        let html = env.get_template("login.html").unwrap().render(Value::Object(ctx)).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{html}");
        assert!(!html.contains("<b>me</b>"));
        assert!(!html.contains("\"><script>"));
    }

    #[test]
    fn filter_round_trips_through_the_query() {
        let f = QueueFilter { pipeline: "cat alog".into(), q: "a&b=c".into(), ..Default::default() };
        assert_eq!(f.query(), "pipeline=cat%20alog&q=a%26b%3Dc");
        let back: QueueFilter = serde_json::from_value(json!({"pipeline": "cat alog", "q": "a&b=c"})).unwrap();
        assert_eq!(back.query(), f.query());
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/queue?run=1"), "/queue?run=1");
        assert_eq!(local_path("//evil.example"), "/runs");
        assert_eq!(local_path("https://evil.example"), "/runs");
        assert_eq!(local_path("/\\evil.example"), "/runs");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(42.4), "42s");
        assert_eq!(human_duration(125.0), "2m 5s");
        assert_eq!(human_duration(7300.0), "2h 1m");
    }
}
