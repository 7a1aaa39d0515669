//! The daemon's HTTP server: the review UI, `/healthz` and the JSON API — runs, the review queue
//! (filters, item history, approve / reject / edit, bulk actions with a count first), the sample gate
//! (stats, release) and undo — all behind the access rules of [`access`] (sessions, sign-in, bearer
//! tokens, CSRF, the loopback-only default). JSON handlers are thin: each is one store or engine call.

mod access;
mod diff;
mod pages;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, RevertOutcome, revert};
use crate::store::{ItemState, ReviewAction, ReviewFilter, StoreError, reviewer_name};

type Shared = Arc<Engine>;

use crate::config::Config;

pub use access::{Access, CsrfToken, Reviewer, check_bind};

/// What the server needs besides the store: who may use it, and which record fields hold HTML.
#[derive(Clone)]
pub struct Site {
    pub access: Access,
    /// Pipeline → record fields holding HTML (reviewer edits to them are cleaned like answers).
    pub html_fields: BTreeMap<String, BTreeSet<String>>,
}

impl Site {
    /// From the config's `[server]` section and its pipelines' tasks.
    pub fn from_config(config: &Config) -> Site {
        let html_fields = config
            .pipelines
            .iter()
            .map(|(name, p)| {
                let fields = config
                    .tasks
                    .get(&p.task)
                    .map(|t| t.html.iter().filter_map(|prop| t.fields.get(prop).cloned()).collect())
                    .unwrap_or_default();
                (name.clone(), fields)
            })
            .collect();
        Site { access: Access::new(config.server.auth.as_ref()), html_fields }
    }
}

/// The router, over `engine` (its store, and its connectors for undo). Pages that act for someone
/// take `Extension<Reviewer>`: the access layer puts the signed-in reviewer (or `api` for a bearer
/// token) there.
pub fn router(engine: Shared, site: Site) -> Router {
    let store = engine.store.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/sample", get(sample))
        .route("/api/runs/{id}/release", post(release))
        .route("/api/runs/{id}/revert", post(revert_run))
        .route("/api/review", get(queue))
        .route("/api/review/bulk", post(bulk))
        .route("/api/items/{id}", get(item))
        .route("/api/items/{id}/approve", post(approve))
        .route("/api/items/{id}/reject", post(reject))
        .route("/api/items/{id}/edit", post(edit))
        .route("/api/items/{id}/revert", post(revert_item))
        .with_state(engine)
        .merge(pages::routes(store, site.access.clone(), site.html_fields))
        .layer(axum::middleware::from_fn_with_state(site.access, access::guard))
}

/// Binds `addr` and serves until `stop`. Refuses a non-loopback address without `[server.auth]`;
/// binding errors are returned before serving starts.
pub async fn serve(
    engine: Shared,
    site: Site,
    addr: &str,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    check_bind(addr, &site.access).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("server.bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, router(engine, site))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}

/// An API failure, mapped once to a status and a JSON body `{"error": ...}`.
enum ApiError {
    Store(StoreError),
    BadRequest(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Store(e) => (
                match e {
                    StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                    StoreError::IllegalTransition { .. } | StoreError::LeaseLost { .. } | StoreError::Refused(_) => {
                        StatusCode::CONFLICT
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                },
                e.to_string(),
            ),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

async fn healthz(State(engine): State<Shared>) -> Response {
    match engine.store.ping().await {
        Ok(()) => Json(json!({"status": "ok", "database": "ok"})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "database": e.to_string()})))
            .into_response(),
    }
}

async fn runs(State(engine): State<Shared>) -> ApiResult {
    ok(json!({ "runs": engine.store.runs(&[], 100).await? }))
}

async fn run(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    let run = engine.store.run(id).await?;
    let counts = engine.store.counts(id).await?;
    ok(json!({ "run": run, "counts": counts }))
}

/// Queue filters as query parameters: `pipeline`, `run`, `state` (comma-separated), `warnings`
/// (`true`/`false`), `q` (text).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    pipeline: Option<String>,
    run: Option<i64>,
    state: Option<String>,
    warnings: Option<bool>,
    q: Option<String>,
}

impl FilterParams {
    fn filter(self) -> Result<ReviewFilter, ApiError> {
        let states = match self.state.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<ItemState>().map_err(|e| ApiError::BadRequest(format!("state: {e}"))))
                .collect::<Result<_, _>>()?,
        };
        Ok(ReviewFilter { pipeline: self.pipeline, run_id: self.run, states, warnings: self.warnings, text: self.q })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueParams {
    pipeline: Option<String>,
    run: Option<i64>,
    state: Option<String>,
    warnings: Option<bool>,
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn queue(State(engine): State<Shared>, Query(params): Query<QueueParams>) -> ApiResult {
    let filter = FilterParams {
        pipeline: params.pipeline,
        run: params.run,
        state: params.state,
        warnings: params.warnings,
        q: params.q,
    }
    .filter()?;
    let limit = params.limit.unwrap_or(50).clamp(1, 500);
    let offset = params.offset.unwrap_or(0).max(0);
    let total = engine.store.review_count(&filter).await?;
    let items = engine.store.review_queue(&filter, limit, offset).await?;
    ok(json!({ "total": total, "limit": limit, "offset": offset, "items": items }))
}

async fn item(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    let item = engine.store.item(id).await?;
    let events = engine.store.item_events(id).await?;
    ok(json!({ "item": item, "events": events }))
}

/// The reviewer acting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    reviewer: Option<String>,
}

fn actor(name: Option<&str>) -> Result<String, ApiError> {
    reviewer_name(name.unwrap_or_default()).map_err(ApiError::BadRequest)
}

async fn approve(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<ActorBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    ok(json!({ "item": engine.store.approve(id, &actor).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reviewer: Option<String>,
    reason: Option<String>,
}

async fn reject(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<RejectBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    ok(json!({ "item": engine.store.reject(id, &actor, body.reason.as_deref()).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    reviewer: Option<String>,
    field: String,
    value: Value,
}

async fn edit(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<EditBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    ok(json!({ "item": engine.store.edit(id, &actor, &body.field, body.value).await? }))
}

/// A bulk decision over a selection (`ids`) or everything matching `filter`. Over a filter, a
/// request without `confirm` only counts; `confirm` must then repeat that count, so nobody approves
/// more than they were shown (a different count is a 409 with the new one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    action: String,
    reviewer: Option<String>,
    reason: Option<String>,
    ids: Option<Vec<i64>>,
    filter: Option<FilterParams>,
    confirm: Option<i64>,
}

async fn bulk(State(engine): State<Shared>, Json(body): Json<BulkBody>) -> ApiResult {
    let action = match body.action.as_str() {
        "approve" => ReviewAction::Approve,
        "reject" => ReviewAction::Reject { reason: body.reason.clone() },
        other => return Err(ApiError::BadRequest(format!("action: {other:?} is not approve or reject"))),
    };
    let actor = actor(body.reviewer.as_deref())?;
    let (ids, matching) = match (body.ids, body.filter) {
        (Some(ids), None) => (ids, None),
        (None, Some(filter)) => {
            let filter = filter.filter()?;
            let count = engine.store.review_count(&filter).await?;
            match body.confirm {
                None => return ok(json!({ "matching": count, "applied": false })),
                Some(n) if n != count => {
                    let message = format!("{count} items match the filter now, not {n}; nothing was changed");
                    return Ok(
                        (StatusCode::CONFLICT, Json(json!({ "error": message, "matching": count }))).into_response()
                    );
                }
                Some(_) => (engine.store.review_ids(&filter).await?, Some(count)),
            }
        }
        _ => return Err(ApiError::BadRequest("give either `ids` or `filter`".into())),
    };
    let outcome = engine.store.bulk_review(&ids, &action, &actor).await?;
    ok(
        json!({ "matching": matching.unwrap_or(ids.len() as i64), "applied": true, "done": outcome.done, "skipped": outcome.skipped }),
    )
}

async fn sample(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    ok(json!({ "sample": engine.store.sample_stats(id).await? }))
}

async fn release(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<ActorBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    let run = engine.store.release_sample(id, &actor).await?;
    ok(json!({ "run": run, "sample": engine.store.sample_stats(id).await? }))
}

async fn revert_item(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<ActorBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    let result =
        revert(&engine, &[id], &actor).await?.pop().ok_or_else(|| StoreError::NotFound(format!("item {id}")))?;
    let status = match result.outcome {
        RevertOutcome::Reverted => StatusCode::OK,
        RevertOutcome::Conflict { .. } | RevertOutcome::NotRevertible { .. } => StatusCode::CONFLICT,
        RevertOutcome::Failed { .. } => StatusCode::BAD_GATEWAY,
    };
    Ok((status, Json(json!({ "result": result }))).into_response())
}

async fn revert_run(State(engine): State<Shared>, Path(id): Path<i64>, Json(body): Json<ActorBody>) -> ApiResult {
    let actor = actor(body.reviewer.as_deref())?;
    engine.store.run(id).await?;
    let ids = engine.store.written_ids(id).await?;
    let results = revert(&engine, &ids, &actor).await?;
    let count = |f: fn(&RevertOutcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    ok(json!({
        "reverted": count(|o| matches!(o, RevertOutcome::Reverted)),
        "conflicts": count(|o| matches!(o, RevertOutcome::Conflict { .. })),
        "failed": count(|o| matches!(o, RevertOutcome::Failed { .. } | RevertOutcome::NotRevertible { .. })),
        "results": results,
    }))
}
