//! The review UI: server-rendered HTML over the store (runs with their sample gate, the queue with
//! bulk actions, one item at a time, an item's history, undo) and the sign-in pages. Templates live
//! in `templates/` and are escaped by default: record text is untrusted and must render as text.
//! Everything works without JavaScript; the one script only adds keyboard shortcuts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod regenerate;

use super::access::{Access, CsrfToken, Reviewer, SessionId, SignInError, cleared_cookie, form_pairs, session_cookie};
use super::{diff, item_page};
use crate::engine::{Engine, RevertOutcome, RevertResult, revert, revert_run, tally};
use crate::roles::Role;
use crate::store::{
    ConfidenceRange, Item, ItemState, ProposedValue, ReviewAction, ReviewFilter, ReviewOrder, ReviewPhase, Run,
    RunCounts, RunStatus, Store, StoreError, WarningKind, now_ms,
};

// The pipelines page is a child of this module so it shares the pages' state, visitor and errors.
#[path = "pipelines_page.rs"]
mod pipelines_page;

/// Runs shown on the runs page and offered by the queue's run filter.
const RUNS_LIMIT: i64 = 200;
/// Items listed on the queue page.
const QUEUE_LIMIT: i64 = 500;

/// What the pages need.
#[derive(Clone)]
struct Pages {
    /// For undo, which writes through the pipelines' connectors.
    engine: Arc<Engine>,
    store: Store,
    access: Access,
    templates: Arc<Environment<'static>>,
    /// Pipeline → record fields that hold HTML (reviewer edits to them are cleaned like answers).
    html_fields: Arc<BTreeMap<String, BTreeSet<String>>>,
}

/// The UI's routes.
pub fn routes(engine: Arc<Engine>, access: Access, html_fields: BTreeMap<String, BTreeSet<String>>) -> Router {
    let store = engine.store.clone();
    let pages = Pages { engine, store, access, templates: Arc::new(templates()), html_fields: Arc::new(html_fields) };
    Router::new()
        .route("/", get(|| async { Redirect::to("/pipelines") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/release", post(release))
        .route("/runs/{id}/resume", post(resume))
        .route("/runs/{id}/revert", get(revert_run_page).post(revert_run_action))
        .route("/pipelines/{name}/eval", get(eval_page))
        .route("/queue", get(queue_page))
        .route("/queue/bulk", post(bulk))
        .route("/items/{id}", get(item_page))
        .route("/items/{id}/history", get(history_page))
        .route("/items/{id}/documents/{n}", get(document_file))
        .route("/items/{id}/approve", post(approve))
        .route("/items/{id}/reject", post(reject))
        .route("/items/{id}/edit", post(edit))
        .route("/items/{id}/revert", post(revert_item))
        .route("/users", get(users_page))
        .route("/items/{id}/regenerate", post(regenerate::regenerate))
        .merge(pipelines_page::routes())
        .route("/assets/style.css", get(|| async { asset("text/css", STYLESHEET) }))
        .route(
            "/assets/review.js",
            get(|| async { asset("text/javascript", include_str!("../../templates/assets/review.js")) }),
        )
        .route(
            "/assets/queue.js",
            get(|| async { asset("text/javascript", include_str!("../../templates/assets/queue.js")) }),
        )
        .with_state(pages)
}

/// The one stylesheet, from its parts: the layout and shared pieces first, then each page's own.
const STYLESHEET: &str = concat!(
    include_str!("../../templates/assets/style.css"),
    include_str!("../../templates/assets/item.css"),
    include_str!("../../templates/assets/queue.css"),
    include_str!("../../templates/assets/pipelines.css"),
    include_str!("../../templates/assets/notifications.css"),
    include_str!("../../templates/assets/accounts.css"),
);

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// The templates, HTML-escaped by file name (every page is `.html`).
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
    // `{{ item.state | plain }}`: an item state or run status in the words people read.
    env.add_filter("plain", |code: String| -> String { plain_words(&code) });
    // `{{ event.actor | actor }}`: who did it, named as the CLI names them.
    env.add_filter("actor", |actor: String| -> String { crate::store::plain_actor(&actor) });
    for (name, source) in [
        ("base.html", include_str!("../../templates/base.html")),
        ("login.html", include_str!("../../templates/login.html")),
        ("runs.html", include_str!("../../templates/runs.html")),
        ("run.html", include_str!("../../templates/run.html")),
        ("run_notifications.html", include_str!("../../templates/run_notifications.html")),
        ("queue.html", include_str!("../../templates/queue.html")),
        ("item.html", include_str!("../../templates/item.html")),
        ("history.html", include_str!("../../templates/history.html")),
        ("bulk.html", include_str!("../../templates/bulk.html")),
        ("revert.html", include_str!("../../templates/revert.html")),
        ("release.html", include_str!("../../templates/release.html")),
        ("error.html", include_str!("../../templates/error.html")),
        ("eval.html", include_str!("../../templates/eval.html")),
        ("users.html", include_str!("../../templates/users.html")),
        ("pipelines.html", include_str!("../../templates/pipelines.html")),
    ] {
        env.add_template(name, source).unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

/// An item state or a run status (`awaiting_review`, `write_failed`) in plain words; anything else
/// as it is, underscores read as spaces.
fn plain_words(code: &str) -> String {
    if let Ok(state) = code.parse::<ItemState>() {
        return state.plain().to_owned();
    }
    if let Ok(status) = code.parse::<RunStatus>() {
        return status.plain().to_owned();
    }
    code.replace('_', " ")
}

/// Errors of the UI, each rendered as a page.
#[derive(Debug)]
enum PageError {
    Store(StoreError),
    BadRequest(String),
    Render(minijinja::Error),
    /// The visitor's role does not allow the action: 403 naming the role it needs.
    Forbidden(crate::roles::Refusal),
}

impl From<crate::roles::Refusal> for PageError {
    fn from(e: crate::roles::Refusal) -> Self {
        PageError::Forbidden(e)
    }
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
            PageError::Store(
                e @ (StoreError::Refused(_) | StoreError::CountChanged { .. } | StoreError::SampleNotReviewed { .. }),
            ) => (StatusCode::CONFLICT, e.to_string()),
            PageError::Store(StoreError::Invalid(m)) => (StatusCode::UNPROCESSABLE_ENTITY, m.clone()),
            PageError::Store(e) => {
                tracing::error!(error = %e, "review UI: store error");
                (StatusCode::INTERNAL_SERVER_ERROR, "the database could not answer; see the daemon's log".to_owned())
            }
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            PageError::Forbidden(refusal) => (StatusCode::FORBIDDEN, refusal.to_string()),
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

/// The visitor: who is signed in (if anyone), their session's CSRF token, and their address (sign-in
/// throttling counts failures per address).
struct Visitor {
    reviewer: Option<Reviewer>,
    csrf: String,
    session: Option<String>,
    client: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Visitor {
            reviewer: parts.extensions.get::<Reviewer>().cloned(),
            csrf: parts.extensions.get::<CsrfToken>().map(|c| c.0.clone()).unwrap_or_default(),
            session: parts.extensions.get::<SessionId>().map(|s| s.0.clone()),
            client: parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()),
        })
    }
}

impl Visitor {
    /// Checks that the visitor's role allows `action` (words for people: "approve a proposal").
    fn require(&self, needed: Role, action: &str) -> Result<(), PageError> {
        let reviewer = self.reviewer.as_ref().ok_or_else(|| PageError::BadRequest("sign in first".into()))?;
        reviewer.require(needed, action).map_err(PageError::Forbidden)
    }

    /// Whether the visitor may do what `needed` may (for showing or hiding a button).
    fn may(&self, needed: Role) -> bool {
        self.reviewer.as_ref().is_some_and(|r| r.role.allows(needed))
    }

    fn actor(&self) -> Result<&str, PageError> {
        self.reviewer.as_ref().map(|r| r.actor.as_str()).ok_or_else(|| PageError::BadRequest("sign in first".into()))
    }
}

impl Pages {
    fn render(&self, name: &str, nav: &str, visitor: &Visitor, mut ctx: Value) -> Result<Html<String>, PageError> {
        let map = ctx.as_object_mut().expect("page contexts are objects");
        map.insert("nav".into(), json!(nav));
        map.insert("reviewer".into(), json!(visitor.reviewer.as_ref().map(|r| r.name.clone())));
        map.insert("role".into(), json!(visitor.reviewer.as_ref().map(|r| r.role.as_str())));
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
    login_view(&pages, &visitor, local_path(&query.next), "", None).await
}

async fn login_view(
    pages: &Pages,
    visitor: &Visitor,
    next: &str,
    name: &str,
    error: Option<&str>,
) -> Result<Html<String>, PageError> {
    let form = pages.access.sign_in_page().await?;
    pages.render(
        "login.html",
        "",
        visitor,
        json!({
            "next": next,
            "name": name,
            "error": error,
            "accounts": form.accounts,
            "needs_password": form.needs_password,
            "can_sign_in": form.can_sign_in,
            "deprecation": form.deprecation,
        }),
    )
}

async fn login(State(pages): State<Pages>, visitor: Visitor, Form(form): Form<LoginForm>) -> Response {
    let next = local_path(&form.next).to_owned();
    let signed =
        pages.access.sign_in(visitor.session.as_deref(), &form.name, form.password.as_deref(), visitor.client).await;
    let (status, message, retry_after) = match signed {
        Ok(session) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, session_cookie(&session));
            return response;
        }
        Err(SignInError::Refused(message)) => (StatusCode::UNAUTHORIZED, message, None),
        Err(SignInError::Throttled(wait)) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message = format!(
                "too many failed sign-ins for this account or from this address: try again in {}",
                duration_words(seconds)
            );
            (StatusCode::TOO_MANY_REQUESTS, message, Some(seconds))
        }
        Err(SignInError::Unavailable(e)) => {
            tracing::error!(error = %e, "review UI: sign-in could not be checked");
            (StatusCode::SERVICE_UNAVAILABLE, "the database could not answer; see the daemon's log".to_owned(), None)
        }
    };
    tracing::warn!(name = %form.name, client = ?visitor.client, "review UI: sign-in refused: {message}");
    let mut response = match login_view(&pages, &visitor, &next, &form.name, Some(&message)).await {
        Ok(page) => (status, page).into_response(),
        Err(e) => return e.into_response(),
    };
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// "1 minute", "90 seconds", "2 minutes": how long to wait, in words.
fn duration_words(seconds: u64) -> String {
    match seconds {
        1 => "1 second".into(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
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

// ---- evaluations ----

/// Reports listed on a pipeline's evaluation page.
const EVALS_LIMIT: i64 = 100;

#[derive(Deserialize, Default)]
#[serde(default)]
struct EvalQuery {
    report: Option<i64>,
}

/// `/pipelines/{name}/eval`: the pipeline's latest `enrichd eval` report in full (or the one asked
/// for with `?report=ID`), and the list of its reports.
async fn eval_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(name): Path<String>,
    Query(q): Query<EvalQuery>,
) -> Result<Html<String>, PageError> {
    let stored = pages.store.eval_reports(&name, EVALS_LIMIT).await?;
    if stored.is_empty() && !pages.engine.tasks.contains_key(&name) {
        return Err(PageError::Store(StoreError::NotFound(format!("pipeline {name:?}"))));
    }
    let shown = match q.report {
        Some(id) => {
            let one = pages.store.eval_report(id).await?;
            if one.pipeline != name {
                return Err(PageError::Store(StoreError::NotFound(format!("eval report {id} of pipeline {name:?}"))));
            }
            Some(one)
        }
        None => stored.first().cloned(),
    };
    let list: Vec<Value> = stored
        .iter()
        .map(|r| {
            let summary: Vec<String> = r.report["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["evaluated"] == true)
                .map(|f| {
                    format!(
                        "{} {}",
                        f["field"].as_str().unwrap_or(""),
                        crate::eval::report::percent(f["accuracy"].as_f64())
                    )
                })
                .collect();
            json!({
                "id": r.id,
                "created": utc(r.created_at),
                "model": r.model,
                "sampled": r.sampled,
                "summary": summary.join(" · "),
                "current": shown.as_ref().is_some_and(|s| s.id == r.id),
            })
        })
        .collect();
    let report = match &shown {
        Some(s) => Some(eval_view(s)?),
        None => None,
    };
    pages.render("eval.html", "pipelines", &visitor, json!({ "pipeline": name, "reports": list, "report": report }))
}

/// A stored report as the page shows it: figures as percentages, the matrix with numbered columns.
fn eval_view(stored: &crate::store::StoredEval) -> Result<Value, PageError> {
    let report: crate::eval::EvalReport = serde_json::from_value(stored.report.clone())
        .map_err(|e| PageError::Store(StoreError::Corrupt(format!("eval report {}: {e}", stored.id))))?;
    let pct = |v: Option<f64>| crate::eval::report::percent(v);
    let fields: Vec<Value> = report
        .fields
        .iter()
        .map(|f| {
            let Some(s) = f.scores.as_ref().filter(|_| f.evaluated) else {
                return json!({ "field": f.field, "property": f.property, "evaluated": false, "reason": f.reason });
            };
            let labels: Vec<Value> =
                s.confusion.labels.iter().enumerate().map(|(i, l)| json!({ "n": i + 1, "label": l })).collect();
            let rows: Vec<Value> = s
                .confusion
                .labels
                .iter()
                .zip(&s.confusion.matrix)
                .enumerate()
                .map(|(i, (l, row))| {
                    let cells: Vec<Value> =
                        row.iter().enumerate().map(|(j, n)| json!({ "n": n, "diagonal": i == j })).collect();
                    json!({ "n": i + 1, "label": l, "cells": cells })
                })
                .collect();
            json!({
                "field": f.field,
                "property": f.property,
                "evaluated": true,
                "compared_as": f.compared_as,
                "lines": f.lines.as_ref().map(|l| json!({
                    "records": l.records, "count_right": l.count_right, "lines": l.lines, "lines_right": l.lines_right,
                    "keys": l.keys.iter().map(|k| json!({
                        "key": k.key, "scored": k.scored, "correct": k.correct, "accuracy": pct(k.accuracy),
                    })).collect::<Vec<_>>(),
                })),
                "items": f.items,
                "failed": f.failed,
                "scored": s.scored,
                "correct": s.correct,
                "accuracy": pct(s.accuracy),
                "classes": s.classes.iter().map(|c| json!({
                    "class": c.class, "truth": c.truth, "predicted": c.predicted, "correct": c.correct,
                    "precision": pct(c.precision), "recall": pct(c.recall),
                })).collect::<Vec<_>>(),
                "labels": labels,
                "rows": rows,
                "thresholds": s.thresholds.iter().map(|t| json!({
                    "threshold": t.threshold, "approved": t.approved, "share": pct(Some(t.share)),
                    "correct": t.correct, "accuracy": pct(t.accuracy),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "id": stored.id,
        "created": utc(report.created_at),
        "task": report.task,
        "task_version": report.task_version,
        "provider": report.provider,
        "model": report.model,
        "records_read": report.records_read,
        "records_found": report.records_found,
        "sampled": report.sampled,
        "requests": report.requests,
        "answered": report.answered,
        "failed": report.failed,
        "not_sent": report.not_sent,
        "problems": report.problems,
        "tokens_in": report.tokens_in,
        "tokens_out": report.tokens_out,
        "cost": report.cost_usd.map_or_else(|| "unknown (no price for this model)".to_owned(), |c| format!("${c:.4}")),
        "confidence_field": report.confidence_field,
        "fields": fields,
    }))
}

// ---- runs ----

#[derive(Serialize)]
struct RunView {
    id: i64,
    pipeline: String,
    /// The status code, for styling (`data-status`, `phase-paused`) and links.
    status: String,
    /// Where the run is, in one phrase: status and sample gate together ([`Run::plain_state`]).
    state: String,
    /// The status reason, less what `state` already says.
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
        state: run.plain_state(),
        status_reason: run.reason_beyond_state(),
        total: counts.total(),
        done: counts.terminal(),
        review: counts.awaiting_review(),
        failures: failures_text(counts),
        spend: run.spent_text(),
        eta,
        started: utc(run.created_at),
    }
}

/// A run's failures in words, only the kinds it has: "2 failed · 1 not written (changed on the
/// platform)", or "none".
fn failures_text(counts: &RunCounts) -> String {
    let parts: Vec<String> = [
        (ItemState::Dead, "failed"),
        (ItemState::Conflict, "not written (changed on the platform)"),
        (ItemState::WriteFailed, "write failed, to retry"),
    ]
    .into_iter()
    .filter_map(|(state, words)| Some(counts.get(state)).filter(|n| *n > 0).map(|n| format!("{n} {words}")))
    .collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(" · ") }
}

/// A run's sample-gate phase in words.
fn phase_label(phase: Option<ReviewPhase>) -> &'static str {
    phase.map_or("full run", ReviewPhase::plain)
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.0}%", r * 100.0))
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
    let can_act = visitor.may(Role::Operator);
    let pipelines: Vec<&String> = pages.engine.tasks.keys().collect();
    pages.render("runs.html", "runs", &visitor, json!({ "runs": views, "can_act": can_act, "pipelines": pipelines }))
}

async fn run_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    let report = pages.store.report(id).await?;
    let counts: Vec<Value> =
        report.counts.0.iter().map(|(s, n)| json!({ "state": s.as_str(), "words": s.plain(), "n": n })).collect();
    let gate = match report.run.review_phase {
        None => None,
        Some(phase) => {
            let s = pages.store.sample_stats(id).await?;
            Some(json!({
                "phase": phase_label(Some(phase)),
                "open": matches!(phase, ReviewPhase::Sampling | ReviewPhase::SampleReview),
                "size": s.sample_size,
                "total": s.total,
                "reviewed": s.reviewed,
                "waiting": s.total - s.reviewed,
                "approved": s.approved,
                "rejected": s.rejected,
                "edited": s.edited,
                "approve_rate": percent(s.approve_rate),
                "reject_rate": percent(s.reject_rate),
                "edit_rate": percent(s.edit_rate),
                "threshold": s.auto_release_max_reject_rate.map(|r| percent(Some(r))),
                "released_by": s.released_by,
                "released_at": s.released_at.map(utc),
                "sample_reviewed": s.sample_reviewed,
                "to_review": s.to_review(),
                "released_unreviewed": s.released_unreviewed.as_ref().map(ToString::to_string),
            }))
        }
    };
    pages.render(
        "run.html",
        "runs",
        &visitor,
        json!({
            "run": run_view(&report.run, &report.counts),
            "counts": counts,
            "finished": report.run.status.is_finished(),
            "report": report.lines(),
            "gate": gate,
            "written": report.counts.get(ItemState::Written),
            "paused": report.run.status == RunStatus::Paused,
            "can_act": visitor.may(Role::Operator),
            "notifications": crate::notify::view::run_page(&pages.store, id).await?,
        }),
    )
}

/// The release forms: "release the rest of the run" (the sample reviewed), or "release anyway"
/// with a reason, asked a second time (`confirm=yes`) before it is done.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ReleaseForm {
    reason: String,
    confirm: String,
}

/// "Release the rest of the run": the sample gate opens, by the signed-in reviewer. Before the
/// sample is reviewed only with a reason, after a confirmation page.
async fn release(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, PageError> {
    visitor.require(Role::Operator, "release a sample")?;
    let actor = visitor.actor()?;
    let stats = pages.store.sample_stats(id).await?;
    let reason = form.reason.trim();
    if !stats.sample_reviewed {
        if reason.is_empty() {
            return Err(PageError::BadRequest(format!(
                "run {id}: {} of {} sample proposals are reviewed; give a reason to release it anyway",
                stats.reviewed,
                stats.to_review()
            )));
        }
        if form.confirm != "yes" {
            let ctx = json!({ "run_id": id, "reviewed": stats.reviewed, "of": stats.to_review(), "reason": reason });
            return Ok(pages.render("release.html", "runs", &visitor, ctx)?.into_response());
        }
    }
    pages.store.release_sample(id, actor, (!reason.is_empty()).then_some(reason)).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// "Resume the run": a paused run claims work again, by the signed-in reviewer.
async fn resume(State(pages): State<Pages>, visitor: Visitor, Path(id): Path<i64>) -> Result<Response, PageError> {
    visitor.require(Role::Operator, "resume a run")?;
    pages.store.resume_run(id, visitor.actor()?).await?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
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
    /// `FIELD=VALUE`: only items that would write that value (e.g. `custom.Category=billing`).
    proposed: String,
    /// `LOW..HIGH` (either end open): only items whose answer's confidence is in that band.
    confidence: String,
    /// A warning kind (`too_long:seo_description`, `rule:NAME`, `duplicate`, …): only items with one.
    warning: String,
    /// The order: `oldest` (empty), `confidence`, `confidence-asc`, `warnings`, `record`.
    sort: String,
}

impl QueueFilter {
    fn run_id(&self) -> Result<Option<i64>, PageError> {
        let run = self.run.trim();
        if run.is_empty() {
            return Ok(None);
        }
        run.parse().map(Some).map_err(|_| PageError::BadRequest(format!("run {run:?} is not a run id")))
    }

    /// The store's filter: `review` (or nothing) is the items waiting for review, `all` every state.
    fn review_filter(&self) -> Result<ReviewFilter, PageError> {
        let states = match self.state.as_str() {
            "" | "review" => Vec::new(),
            "all" => ItemState::ALL.to_vec(),
            s => vec![s.parse().map_err(PageError::BadRequest)?],
        };
        let warnings = match self.warnings.as_str() {
            "with" => Some(true),
            "without" => Some(false),
            "" => None,
            other => return Err(PageError::BadRequest(format!("warnings {other:?}: use with or without"))),
        };
        let q = self.q.trim();
        let proposed = match self.proposed.as_str() {
            "" => None,
            p => Some(p.parse().map_err(|e| PageError::BadRequest(format!("proposed: {e}")))?),
        };
        let confidence = match self.confidence.trim() {
            "" => None,
            c => Some(c.parse().map_err(|e| PageError::BadRequest(format!("confidence: {e}")))?),
        };
        let warning = match self.warning.trim() {
            "" => None,
            w => Some(w.parse().map_err(PageError::BadRequest)?),
        };
        Ok(ReviewFilter {
            pipeline: Some(self.pipeline.clone()).filter(|p| !p.is_empty()),
            run_id: self.run_id()?,
            states,
            warnings,
            text: (!q.is_empty()).then(|| q.to_owned()),
            proposed,
            confidence,
            warning,
            order: self.sort.parse().map_err(PageError::BadRequest)?,
        })
    }

    /// Whether the filter selects only items waiting for review (what bulk decisions apply to).
    fn awaits_review(&self) -> bool {
        matches!(self.state.as_str(), "" | "review" | "proposed" | "edited")
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
            ("proposed", &self.proposed),
            ("confidence", &self.confidence),
            ("warning", &self.warning),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
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

/// The record's name for people: its `name`, `title` or `subject`, else its id.
fn title(item: &Item) -> String {
    item.record_name().unwrap_or_else(|| item.external_id.clone())
}

/// How many characters of a proposed value a queue row shows before "…" (the rest on hover and
/// when the row's value is opened).
const SHORT_TEXT: usize = 120;
/// How many chips of a list a queue row shows before "+N more".
const SHORT_LIST: usize = 8;

/// The name people read for a record field or task property of `pipeline` (with `None`, the first
/// configured task that labels it): the task's `[labels]`, its schema's `title`, else the name humanised.
fn field_label(pages: &Pages, pipeline: Option<&str>, name: &str) -> String {
    let task = match pipeline {
        Some(p) => pages.engine.tasks.get(p),
        None => pages.engine.tasks.values().find(|t| t.label_of(name).is_some()),
    };
    item_page::label(task.map(|t| t.as_ref()), name)
}

/// `text` cut to about `max` characters at a word boundary, with "…" when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    // Back to the last space, unless that loses more than a fifth of the room.
    let at = cut.rfind(' ').filter(|&i| cut[..i].chars().count() >= max * 4 / 5).unwrap_or(cut.len());
    format!("{}…", cut[..at].trim_end_matches(|c: char| c.is_whitespace() || ",;:.".contains(c)))
}

/// A proposed value as one line of text: HTML as the text a customer reads, lists and objects
/// by their text.
fn value_text(value: &Value, html: bool) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if html => crate::select::visible_text(s),
        Value::String(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
        Value::Array(list) => list.iter().map(|v| value_text(v, html)).collect::<Vec<_>>().join(", "),
        // An entry such as an image's alt text (`{id, alt}`): its text, else the whole of it.
        Value::Object(map) => {
            let texts: Vec<String> =
                map.values().filter(|v| v.is_string()).map(|v| value_text(v, html)).filter(|t| !t.is_empty()).collect();
            if texts.is_empty() { value.to_string() } else { texts.join(" · ") }
        }
        other => other.to_string(),
    }
}

/// What an item would write, field by field, for its queue row: the value a reviewer's edit
/// made, else the model's; text shortened with the whole of it beside, lists as chips.
fn proposed_view(pages: &Pages, item: &Item) -> Vec<Value> {
    let Some(proposal) = &item.proposal else { return Vec::new() };
    let html = pages.html_fields.get(&item.pipeline);
    proposal
        .fields
        .iter()
        .map(|(name, change)| {
            let is_html = html.is_some_and(|h| h.contains(name));
            let label = field_label(pages, Some(&item.pipeline), name);
            match change.value() {
                Value::Array(list) => {
                    let chips: Vec<String> =
                        list.iter().map(|v| value_text(v, is_html)).filter(|t| !t.is_empty()).collect();
                    let shown: Vec<String> = chips.iter().take(SHORT_LIST).map(|c| shorten(c, SHORT_TEXT)).collect();
                    json!({
                        "field": name, "label": label, "kind": "list", "chips": shown,
                        "rest": chips.iter().skip(SHORT_LIST).collect::<Vec<_>>(), "full": chips.join(", "),
                    })
                }
                value => {
                    let full = value_text(value, is_html);
                    let short = shorten(&full, SHORT_TEXT);
                    json!({ "field": name, "label": label, "kind": "text", "cut": short != full, "short": short, "full": full })
                }
            }
        })
        .collect()
}

async fn queue_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Query(filter): Query<QueueFilter>,
) -> Result<Html<String>, PageError> {
    let review = filter.review_filter()?;
    let total = pages.store.review_count(&review).await?;
    let items = pages.store.review_queue(&review, QUEUE_LIMIT, 0).await?;
    let truncated = total > items.len() as i64;
    let runs = pages.store.runs(&[], RUNS_LIMIT).await?;
    let pipelines: BTreeSet<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    // The value and confidence choices, each counted with every other filter applied.
    let fields = super::enum_fields(&pages.engine, review.pipeline.as_deref()).await?;
    let values = pages.store.review_values(&ReviewFilter { proposed: None, ..review.clone() }, &fields).await?;
    let mut value_options: Vec<Value> = values
        .iter()
        .map(|v| {
            let key = ProposedValue { field: v.field.clone(), value: v.value.clone() }.to_string();
            json!({ "key": key, "field": v.field, "value": v.value, "count": v.count, "selected": key == filter.proposed })
        })
        .collect();
    if !filter.proposed.is_empty() && !value_options.iter().any(|o| o["selected"] == true) {
        // A value no item matches now (a shared link, say) stays chosen, with its count of none.
        let (field, value) = filter.proposed.split_once('=').unwrap_or((&filter.proposed, ""));
        value_options
            .push(json!({ "key": filter.proposed, "field": field, "value": value, "count": 0, "selected": true }));
    }
    let mut bands = Vec::new();
    for band in ConfidenceRange::BANDS {
        let n = pages.store.review_count(&ReviewFilter { confidence: Some(band), ..review.clone() }).await?;
        let key = band.to_string();
        bands.push(
            json!({ "key": key, "label": band.label(), "count": n, "selected": key == filter.confidence.trim() }),
        );
    }
    if !filter.confidence.trim().is_empty() && !bands.iter().any(|b| b["selected"] == true) {
        let label = review.confidence.map(|c| c.label()).unwrap_or_default();
        let n = total;
        bands.push(json!({ "key": filter.confidence.trim(), "label": label, "count": n, "selected": true }));
    }
    // Each kind of warning with its count (the other filters applied) and the link that filters on it.
    let label = |name: &str| field_label(&pages, review.pipeline.as_deref(), name);
    let mut kinds: Vec<Value> = pages
        .store
        .review_warning_kinds(&review)
        .await?
        .into_iter()
        .map(|k| {
            let selected = review.warning.as_ref() == Some(&k.warning_kind);
            let with = QueueFilter { warning: if selected { String::new() } else { k.kind.clone() }, ..filter.clone() };
            json!({
                "key": k.kind, "label": k.warning_kind.label(label), "count": k.count, "selected": selected,
                "href": format!("/queue?{}", with.query()),
            })
        })
        .collect();
    if let Some(kind) = review.warning.as_ref().filter(|_| !kinds.iter().any(|k| k["selected"] == true)) {
        let without = QueueFilter { warning: String::new(), ..filter.clone() };
        kinds.push(json!({
            "key": kind.key(), "label": kind.label(label), "count": 0, "selected": true,
            "href": format!("/queue?{}", without.query()),
        }));
    }
    let sorts: Vec<Value> = ReviewOrder::ALL
        .iter()
        .map(|o| json!({ "key": o.as_str(), "label": o.label(), "selected": *o == review.order }))
        .collect();
    let mut states = vec!["review".to_owned(), "all".to_owned()];
    states.extend(ItemState::ALL.iter().map(|s| s.as_str().to_owned()));
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            let warnings = i.proposal.as_ref().map(|p| p.warnings.clone()).unwrap_or_default();
            json!({
                "id": i.id,
                "external_id": i.external_id,
                "title": title(i),
                "run_id": i.run_id,
                "pipeline": i.pipeline,
                "state": i.state.as_str(),
                "proposed": proposed_view(&pages, i),
                "warnings": warnings,
                "confidence": i.proposal.as_ref().and_then(|p| p.confidence).map(|c| format!("{c:.2}")),
            })
        })
        .collect();
    let mut shown = filter.clone();
    if shown.state.is_empty() {
        shown.state = "review".into();
    }
    // A state every row shares is said by the filter; the rows do not repeat it.
    let states_listed: BTreeSet<&str> = items.iter().map(|i| i.state.as_str()).collect();
    pages.render(
        "queue.html",
        "queue",
        &visitor,
        json!({
            "items": rows,
            "total": total,
            "truncated": truncated,
            "can_bulk": visitor.may(Role::Reviewer) && filter.awaits_review(),
            "filter": {
                "pipeline": shown.pipeline,
                "run": filter.run_id().ok().flatten(),
                "state": shown.state,
                "warnings": shown.warnings,
                "q": shown.q,
                "proposed": shown.proposed,
                "confidence": shown.confidence,
                "warning": shown.warning,
            },
            "values": value_options,
            "show_confidence": !filter.confidence.trim().is_empty() || bands.iter().any(|b| b["count"] != 0),
            "bands": bands,
            "kinds": kinds,
            "sorts": sorts,
            "show_state": states_listed.len() > 1,
            "any_confidence": rows.iter().any(|r| !r["confidence"].is_null()),
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

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{} KB", n.div_ceil(1 << 10)),
        n => format!("{n} bytes"),
    }
}

/// One of an item's documents as kept in our database, for the browser's own viewer (PDF) or an
/// `img`. Only the media types a document was accepted as (PDF, PNG, JPEG, checked against the
/// file's first bytes when it was read) are ever served, never sniffed into anything else.
async fn document_file(
    State(pages): State<Pages>,
    _visitor: Visitor,
    Path((id, n)): Path<(i64, usize)>,
) -> Result<Response, PageError> {
    let documents = pages.store.documents_of(id).await?;
    let Some(stored) = documents.get(n) else {
        return Ok((StatusCode::NOT_FOUND, format!("item {id} has no document {n}")).into_response());
    };
    let doc = &stored.document;
    let media_type = match doc.media_type.as_str() {
        "application/pdf" => "application/pdf",
        "image/png" => "image/png",
        "image/jpeg" => "image/jpeg",
        _ => return Ok((StatusCode::NOT_FOUND, format!("item {id}: document {n} is not viewable")).into_response()),
    };
    let name: String =
        doc.name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    let mut response = doc.bytes.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// What a proposal's rules and look-ups found, for the item page: each check's outcome, the
/// supplier matched in the organisation's own data (or that none was), duplicates, suggested
/// account codes. `None` when there is nothing to show (tasks without rules or look-ups).
fn findings_view(proposal: &crate::store::Proposal) -> Option<Value> {
    let f = &proposal.findings;
    if f.checks.is_empty() && f.look_up.is_none() && f.look_up_error.is_none() {
        return None;
    }
    let checks: Vec<Value> = f
        .checks
        .iter()
        .map(|c| {
            let (class, word) = match c.outcome {
                crate::checks::Outcome::Passed => ("passed", "passed"),
                crate::checks::Outcome::Failed => ("failed", "failed"),
                crate::checks::Outcome::NotChecked => ("not-checked", "not checked"),
            };
            json!({ "rule": c.rule.replace('_', " "), "class": class, "word": word, "message": c.message })
        })
        .collect();
    let look_up = f.look_up.as_ref().map(|l| {
        json!({
            "supplier": l.supplier.as_ref().map(|s| json!({
                "id": s.id,
                "name": s.name,
                "by": if s.matched_by == "tax_number" { "tax number" } else { "name" },
            })),
            "duplicates": l.duplicates.iter().map(crate::checks::duplicate_text).collect::<Vec<_>>(),
            "account_code": l.account_code,
        })
    });
    let suggested: Vec<usize> = f.suggested_accounts.iter().map(|i| i + 1).collect();
    Some(json!({
        "checks": checks,
        "look_up": look_up,
        "look_up_error": f.look_up_error,
        "suggested_lines": suggested,
    }))
}

/// A list of flat objects (an invoice's line items) as a table a reviewer reads and edits cell by
/// cell: the columns in first-seen order, whether each holds numbers, and each row's cells as text.
/// `None` for anything else (it is edited as JSON).
pub(super) fn rows_table(value: &Value) -> Option<Value> {
    let rows = value.as_array().filter(|rows| !rows.is_empty())?;
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for (key, cell) in row.as_object()? {
            if cell.is_object() || cell.is_array() {
                return None;
            }
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| {
            rows.iter().all(|r| r.get(c).is_none_or(|v| v.is_null() || v.is_number()))
                && rows.iter().any(|r| r.get(c).is_some_and(Value::is_number))
        })
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match r.get(c) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    Some(json!({ "columns": columns, "numeric": numeric, "rows": cells }))
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
    item_view(&pages, &visitor, id, &filter, None).await
}

/// An edit the store refused, shown on the item page at its field with the value as typed.
struct RefusedEdit {
    field: String,
    value: String,
    message: String,
}

/// The item page; with `refused`, the field's editor stays open holding the refused value and why.
async fn item_view(
    pages: &Pages,
    visitor: &Visitor,
    id: i64,
    filter: &QueueFilter,
    refused: Option<&RefusedEdit>,
) -> Result<Html<String>, PageError> {
    let item = pages.store.item(id).await?;
    let review = filter.review_filter()?;
    let (prev, next, before) = pages.store.review_neighbours(&review, id).await?;
    let listed = pages.store.review_count(&review).await?;
    let at = (pages.store.review_queue(&review, 1, before).await?.first().map(|i| i.id) == Some(id)).then_some(before);
    let query = filter.query();
    let task = pages.engine.tasks.get(&item.pipeline).map(|t| t.as_ref());
    let revert_fields: Vec<Value> = match (&item.replaced, &item.proposal) {
        (Some(replaced), Some(proposal)) if item.state == ItemState::Written => replaced
            .iter()
            .map(|(name, old)| {
                let written = proposal.fields.get(name).map(|c| c.value().clone()).unwrap_or(Value::Null);
                let now = text_of(&written).0;
                let chips = item_page::restore_chips(&written, old);
                json!({ "name": name, "label": item_page::label(task, name), "now": now, "back": text_of(old).0, "chips": chips })
            })
            .collect(),
        _ => Vec::new(),
    };
    let html = pages.html_fields.get(&item.pipeline);
    let is_html = |field: &str| html.is_some_and(|h| h.contains(field));
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
                    let refused = refused.filter(|r| &r.field == name);
                    let value = refused.map_or(value, |r| r.value.clone());
                    // HTML as the shop shows it, cleaned again here: the value at pull time never was.
                    let preview = is_html(name.as_str()).then(|| {
                        let shown = |v: &Value| v.as_str().map(item_page::rendered).unwrap_or_default();
                        json!({ "before": shown(&change.before), "value": shown(change.value()) })
                    });
                    let chips = item_page::chips(&change.before, change.value());
                    json!({
                        "label": item_page::label(task, name),
                        "count": item_page::count(change.value(), task.and_then(|t| t.check_of(name))),
                        "before_count": item_page::count(&change.before, None),
                        "note": chips.as_ref().and_then(|_| item_page::merge_note(name)),
                        "chips": chips,
                        "preview": preview,
                        "refused": refused.map(|r| r.message.clone()),
                        "table": rows_table(change.value()),
                        "before_table": rows_table(&change.before),
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
    let input = item.input_fields()?;
    // A helpdesk ticket's conversation, message by message; other records show every field as pulled.
    let messages = input.get("conversation").and_then(Value::as_str).and_then(super::conversation::parse);
    let conversation = messages.map(|messages| {
        let subject = input.get("subject").and_then(Value::as_str).map_or_else(|| title(&item), str::to_owned);
        json!({ "subject": subject, "messages": messages })
    });
    let facts: Vec<Value> = input
        .iter()
        .filter(|(name, _)| conversation.is_none() || name.as_str() != "conversation")
        .map(|(name, value)| item_page::fact(task, name, value, is_html(name.as_str())))
        .collect();
    let raw = serde_json::to_string_pretty(&input).expect("JSON values serialise");
    // Links to the record on the platform, from the pipeline's connector (none in `--ui-only`).
    let links = pages.engine.pipelines.get(&item.pipeline).map_or_else(Vec::new, |p| {
        p.connector.record_links(&item.entity, &item.external_id, &Value::Object(input.clone()))
    });
    let thumbnail = item_page::thumbnail(&input);
    let reverted =
        if matches!(item.state, ItemState::Reverted | ItemState::PartiallyReverted | ItemState::RevertConflict) {
            let events = pages.store.item_events(id).await?;
            item_page::reverted(&events, task, &is_html, &utc)
        } else {
            None
        };
    // The record's documents (a bill's PDF) as kept when the item was enriched, shown beside the proposal.
    let documents: Vec<Value> = pages
        .store
        .documents_of(id)
        .await?
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let doc = &d.document;
            json!({
                "url": format!("/items/{id}/documents/{n}"),
                "name": doc.name,
                "pdf": doc.media_type == "application/pdf",
                "pages": doc.pages,
                "size": human_bytes(doc.bytes.len()),
                "text_layer": doc.text.is_some(),
            })
        })
        .collect();
    let proposal = item.proposal.as_ref();
    let findings = proposal.and_then(findings_view);
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
        "raw": raw,
        "links": links,
        "thumbnail": thumbnail,
        "reverted": reverted,
        "conversation": conversation,
        "confidence": proposal.and_then(|p| p.confidence).map(|c| format!("{c:.2}")),
        "findings": findings,
        "documents": documents,
        "held": proposal.and_then(|p| p.held.clone()),
    });
    pages.render(
        "item.html",
        "queue",
        visitor,
        json!({
            "item": view,
            "can_review": item.state.awaits_review() && visitor.may(Role::Reviewer),
            "can_revert": !revert_fields.is_empty() && visitor.may(Role::Operator),
            "revert_fields": revert_fields,
            "regenerate": regenerate::section(pages, visitor, &item).await?,
            "query": query,
            "position": at.map(|p| p + 1),
            "listed": listed,
            "prev_url": prev.map(|p| item_url(p, &query)),
            "next_url": next.map(|n| item_url(n, &query)),
        }),
    )
}

/// Where to go after acting on `id`: the next item the filter still selects, else the queue.
async fn after_action(store: &Store, id: i64, filter: &QueueFilter) -> Result<Response, PageError> {
    let (prev, next, _) = store.review_neighbours(&filter.review_filter()?, id).await?;
    let query = filter.query();
    let to = match next.or(prev) {
        Some(i) => item_url(i, &query),
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
    visitor.require(Role::Reviewer, "approve a proposal")?;
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
    visitor.require(Role::Reviewer, "reject a proposal")?;
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
    visitor.require(Role::Reviewer, "edit a proposal")?;
    let actor = visitor.actor()?;
    // Browsers send textarea line breaks as CRLF.
    let text = form.value.replace("\r\n", "\n");
    let value = if form.kind == "json" {
        serde_json::from_str(&text).map_err(|e| format!("field {}: not valid JSON: {e}", form.field))
    } else {
        Ok(Value::String(text.clone()))
    };
    let result = match value {
        Ok(value) => super::edit_item(&pages.engine, id, actor, &form.field, value).await.map_err(|e| match e {
            StoreError::Invalid(m) => Ok(m),
            e => Err(PageError::Store(e)),
        }),
        Err(m) => Err(Ok(format!("item {id}: {m}"))),
    };
    if let Err(refusal) = result {
        let message = refusal?;
        let refused = RefusedEdit { field: form.field, value: text, message };
        let page = item_view(&pages, &visitor, id, &filter, Some(&refused)).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let mut response = Redirect::to(&item_url(id, &filter.query())).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---- bulk ----

/// A bulk form as posted: `do` is `approve-selected`, `reject-selected`, `approve-filter` or
/// `reject-filter`; `ids` the checked items (repeated); `confirm` the count the reviewer was shown.
struct BulkForm {
    verb: &'static str,
    over_filter: bool,
    ids: Vec<i64>,
    reason: String,
    confirm: Option<i64>,
}

impl BulkForm {
    /// From the form body (`ids` repeats, which serde's form decoding does not take).
    fn parse(body: &[u8]) -> Result<BulkForm, PageError> {
        let mut form = BulkForm { verb: "", over_filter: false, ids: Vec::new(), reason: String::new(), confirm: None };
        for (key, value) in form_pairs(body) {
            match key.as_str() {
                "do" => {
                    (form.verb, form.over_filter) = match value.as_str() {
                        "approve-selected" => ("approve", false),
                        "reject-selected" => ("reject", false),
                        "approve-filter" => ("approve", true),
                        "reject-filter" => ("reject", true),
                        other => return Err(PageError::BadRequest(format!("bulk action {other:?} is unknown"))),
                    }
                }
                "ids" => form.ids.push(
                    value.parse().map_err(|_| PageError::BadRequest(format!("item {value:?} is not an item id")))?,
                ),
                "reason" => form.reason = value.trim().to_owned(),
                "confirm" => {
                    form.confirm = Some(
                        value
                            .parse()
                            .map_err(|_| PageError::BadRequest(format!("confirm {value:?} is not a count")))?,
                    )
                }
                _ => {}
            }
        }
        if form.verb.is_empty() {
            return Err(PageError::BadRequest("bulk action: choose approve or reject".into()));
        }
        if !form.over_filter && form.ids.is_empty() {
            return Err(PageError::BadRequest(format!(
                "{} selected: no item was selected; tick the items first",
                form.verb
            )));
        }
        Ok(form)
    }

    fn action(&self) -> ReviewAction {
        match self.verb {
            "approve" => ReviewAction::Approve,
            _ => ReviewAction::Reject { reason: (!self.reason.is_empty()).then(|| self.reason.clone()) },
        }
    }
}

/// A bulk decision in two steps. Without `confirm` it only counts and asks ("Approve 37 items?");
/// with it, it acts — over the filter only if exactly that many still match (else it asks again
/// with the new count and changes nothing).
async fn bulk(
    State(pages): State<Pages>,
    visitor: Visitor,
    Query(filter): Query<QueueFilter>,
    body: Bytes,
) -> Result<Response, PageError> {
    visitor.require(Role::Reviewer, "approve or reject in bulk")?;
    let actor = visitor.actor()?.to_owned();
    let form = BulkForm::parse(&body)?;
    let review = filter.review_filter()?;
    if form.over_filter && !filter.awaits_review() {
        return Err(PageError::BadRequest(
            "bulk decisions over a filter apply to items waiting for review: set the state filter to review".into(),
        ));
    }
    let query = filter.query();
    let mut ctx = json!({
        "verb": form.verb,
        "past": if form.verb == "approve" { "approved" } else { "rejected" },
        "do": format!("{}-{}", form.verb, if form.over_filter { "filter" } else { "selected" }),
        "over_filter": form.over_filter,
        "ids": form.ids,
        "reason": form.reason,
        "query": query,
        "filter_text": describe(&filter, |name| field_label(&pages, review.pipeline.as_deref(), name)),
    });
    let count = if form.over_filter { pages.store.review_count(&review).await? } else { form.ids.len() as i64 };
    let confirm = match form.confirm {
        None => {
            ctx["count"] = json!(count);
            return Ok(pages.render("bulk.html", "queue", &visitor, ctx)?.into_response());
        }
        Some(n) => n,
    };
    let outcome = if form.over_filter {
        pages.store.bulk_review_matching(&review, &form.action(), &actor, confirm).await
    } else if confirm != count {
        Err(StoreError::CountChanged { matching: count, confirmed: confirm })
    } else {
        pages.store.bulk_review(&form.ids, &form.action(), &actor).await
    };
    match outcome {
        Ok(outcome) => {
            ctx["done"] = json!(outcome.done.len());
            ctx["skipped"] = json!(outcome.skipped);
            Ok(pages.render("bulk.html", "queue", &visitor, ctx)?.into_response())
        }
        Err(StoreError::CountChanged { matching, confirmed }) => {
            ctx["count"] = json!(matching);
            ctx["stale"] = json!(format!(
                "{matching} items match this filter now, not the {confirmed} you confirmed: someone or something \
                 changed the queue meanwhile. Nothing was changed. Check the new count and confirm again."
            ));
            Ok((StatusCode::CONFLICT, pages.render("bulk.html", "queue", &visitor, ctx)?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The filter in words, for the confirmation page.
fn describe(filter: &QueueFilter, label: impl Fn(&str) -> String) -> String {
    let mut parts = Vec::new();
    if !filter.pipeline.is_empty() {
        parts.push(format!("pipeline {}", filter.pipeline));
    }
    if !filter.run.is_empty() {
        parts.push(format!("run #{}", filter.run.trim()));
    }
    parts.push(match filter.state.as_str() {
        "" | "review" => "waiting for review".to_owned(),
        s => format!("state {s}"),
    });
    match filter.warnings.as_str() {
        "with" => parts.push("with validator warnings".into()),
        "without" => parts.push("without validator warnings".into()),
        _ => {}
    }
    if !filter.q.trim().is_empty() {
        parts.push(format!("text \"{}\"", filter.q.trim()));
    }
    if let Ok(p) = filter.proposed.parse::<ProposedValue>() {
        parts.push(format!("proposed {} = {}", p.field, p.value));
    }
    if let Ok(range) = filter.confidence.trim().parse::<ConfidenceRange>() {
        parts.push(format!("confidence {}", range.label()));
    }
    if let Ok(kind) = filter.warning.trim().parse::<WarningKind>() {
        parts.push(format!("warning: {}", kind.label(label)));
    }
    parts.join(" · ")
}

// ---- undo ----

fn revert_rows(results: &[RevertResult]) -> Vec<Value> {
    results
        .iter()
        .map(|r| {
            let (outcome, reason) = match &r.outcome {
                RevertOutcome::Reverted => ("reverted", None),
                RevertOutcome::PartiallyReverted { reason, .. } => {
                    ("partially reverted: part of our write is still there", Some(reason))
                }
                RevertOutcome::Conflict { reason } => ("conflict: the record was edited since our write", Some(reason)),
                RevertOutcome::Failed { reason } => ("failed (still written; try again)", Some(reason)),
                RevertOutcome::NotRevertible { reason } => ("not reverted", Some(reason)),
            };
            json!({ "item": r.item, "record": r.external_id, "outcome": outcome, "reason": reason })
        })
        .collect()
}

fn revert_outcome_ctx(results: &[RevertResult], back: &str) -> Value {
    let t = tally(results);
    json!({
        "done": true,
        "back": back,
        "reverted": t.reverted,
        "partially_reverted": t.partially_reverted,
        "conflicts": t.conflicts,
        "failed": t.failed,
        "results": revert_rows(results),
    })
}

/// "Revert this write": the kept old values go back through the connector, unless the record was
/// edited since our write (a conflict; nothing is written).
async fn revert_item(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    visitor.require(Role::Operator, "revert a write")?;
    let actor = visitor.actor()?.to_owned();
    let results = revert(&pages.engine, &[id], &actor).await?;
    let mut ctx = revert_outcome_ctx(&results, &format!("/items/{id}"));
    ctx["title"] = json!(format!("Revert item #{id}"));
    pages.render("revert.html", "queue", &visitor, ctx)
}

/// "Revert the whole run", first step: how many written items it would revert.
async fn revert_run_page(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
) -> Result<Html<String>, PageError> {
    pages.store.run(id).await?;
    let count = pages.store.written_ids(id).await?.len();
    let ctx =
        json!({ "title": format!("Revert run #{id}"), "run_id": id, "count": count, "back": format!("/runs/{id}") });
    pages.render("revert.html", "runs", &visitor, ctx)
}

#[derive(Deserialize)]
struct ConfirmForm {
    confirm: i64,
}

/// "Revert the whole run", second step: only if the confirmed count is still how many are written.
async fn revert_run_action(
    State(pages): State<Pages>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, PageError> {
    visitor.require(Role::Operator, "revert a run")?;
    let actor = visitor.actor()?.to_owned();
    let back = format!("/runs/{id}");
    match revert_run(&pages.engine, id, &actor, form.confirm).await {
        Ok(results) => {
            let mut ctx = revert_outcome_ctx(&results, &back);
            ctx["title"] = json!(format!("Revert run #{id}"));
            Ok(pages.render("revert.html", "runs", &visitor, ctx)?.into_response())
        }
        Err(StoreError::CountChanged { matching, confirmed }) => {
            let ctx = json!({
                "title": format!("Revert run #{id}"),
                "run_id": id,
                "count": matching,
                "back": back,
                "stale": format!(
                    "{matching} items of the run are written now, not the {confirmed} you confirmed. Nothing was \
                     reverted. Check the new count and confirm again."
                ),
            });
            Ok((StatusCode::CONFLICT, pages.render("revert.html", "runs", &visitor, ctx)?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// ---- accounts ----

/// `/users` (admins): the accounts and their API tokens, never a hash. They are managed with
/// `enrichd user …` and `enrichd token …`.
async fn users_page(State(pages): State<Pages>, visitor: Visitor) -> Result<Html<String>, PageError> {
    visitor.require(Role::Admin, "see the accounts")?;
    let accounts: Vec<Value> = pages
        .store
        .accounts()
        .await?
        .into_iter()
        .map(|a| {
            json!({ "name": a.name, "role": a.role.as_str(), "created": utc(a.created_at), "password_set": utc(a.password_set_at) })
        })
        .collect();
    let tokens: Vec<Value> = pages
        .store
        .api_tokens()
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "id": t.id,
                "account": t.account,
                "label": if t.label.is_empty() { "-".to_owned() } else { t.label },
                "created": utc(t.created_at),
                "last_used": t.last_used_at.map_or_else(|| "never".to_owned(), utc),
                "revoked": t.revoked_at.map_or_else(String::new, utc),
            })
        })
        .collect();
    pages.render("users.html", "users", &visitor, json!({ "accounts": accounts, "tokens": tokens }))
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
            let regeneration = regenerate::history_view(&e);
            json!({
                "at": utc(e.at),
                "kind": e.kind,
                "what": crate::store::plain_event(&e.kind, e.from_state.as_deref(), e.to_state.as_deref()),
                "to_state": e.to_state,
                "actor": crate::store::plain_actor(&e.actor),
                "regeneration": regeneration,
                "detail": e.detail.as_ref().map(detail_rows).unwrap_or_default(),
            })
        })
        .collect();
    pages.render("history.html", "queue", &visitor, json!({ "item_id": id, "title": title(&item), "events": events }))
}

/// An event's detail as rows a person reads: each key of an object with its value (text as it is,
/// anything else as JSON), keys' underscores as spaces; any other value as one row.
fn detail_rows(detail: &Value) -> Vec<Value> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => serde_json::to_string_pretty(other).expect("JSON values serialise"),
    };
    match detail {
        Value::Object(map) => {
            map.iter().map(|(k, v)| json!({ "key": k.replace('_', " "), "value": text(v) })).collect()
        }
        Value::Null => Vec::new(),
        other => vec![json!({ "key": "", "value": text(other) })],
    }
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
