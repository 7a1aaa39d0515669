//! The daemon's HTTP server: the review UI, `/healthz` and the JSON API — runs, the review queue
//! (filters, item history, approve / reject / edit, bulk actions with a count first), the sample gate
//! (stats, release) and undo — all behind the access rules of [`access`] (accounts and roles,
//! sessions, throttled sign-in, API tokens, CSRF, the loopback-only default). JSON handlers are thin:
//! each is one store or engine call.

mod access;
mod conversation;
mod diff;
mod hooks;
mod item_page;
mod pages;
mod throttle;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, RevertOutcome, revert, revert_run as revert_written, tally};
use crate::roles::{Refusal, Role};
use crate::store::{Item, ItemState, ReviewAction, ReviewFilter, StoreError, reviewer_name};

type Shared = Arc<Engine>;

/// What the JSON handlers share: the engine (who the caller is comes from the access layer, in the
/// request's extensions).
#[derive(Clone)]
struct ApiState {
    engine: Shared,
    /// This process's metrics recorder, rendered by `/metrics`.
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl FromRef<ApiState> for Shared {
    fn from_ref(state: &ApiState) -> Shared {
        state.engine.clone()
    }
}

use crate::config::Config;

pub use access::{Access, CsrfToken, Mode, Reviewer, check_bind, shared_auth_deprecation};

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
    site.access.use_store(engine.store.clone());
    let state = ApiState { engine: engine.clone(), metrics: crate::telemetry::install() };
    Router::new()
        .route("/healthz", get(healthz))
        .route(access::METRICS_PATH, get(metrics))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/sample", get(sample))
        .route("/api/runs/{id}/release", post(release))
        .route("/api/runs/{id}/resume", post(resume))
        .route("/api/runs/{id}/report", get(report))
        .route("/api/runs/{id}/notifications", get(notifications))
        .route("/api/runs/{id}/revert", post(revert_run))
        .route("/api/pipelines/{name}/evals", get(evals))
        .route("/api/review", get(queue))
        .route("/api/review/bulk", post(bulk))
        .route("/api/items/{id}", get(item))
        .route("/api/items/{id}/approve", post(approve))
        .route("/api/items/{id}/reject", post(reject))
        .route("/api/items/{id}/edit", post(edit))
        .route("/api/items/{id}/revert", post(revert_item))
        .route("/api/items/{id}/regenerate", post(regenerate_item))
        // Public in the access layer (`access::HOOKS_PREFIX`): the handler verifies signatures.
        .route("/hooks/{pipeline}", post(hooks::receive))
        .with_state(state)
        .merge(pages::routes(engine, site.access.clone(), site.html_fields))
        .layer(axum::middleware::from_fn_with_state(site.access, access::guard))
}

/// Binds `addr` and serves until `stop`. Refuses a non-loopback address when nobody has to sign in
/// (no accounts, no `[server.auth]`);
/// binding errors are returned before serving starts.
pub async fn serve(
    engine: Shared,
    site: Site,
    addr: &str,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    site.access.use_store(engine.store.clone());
    check_bind(addr, &site.access).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("server.bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // The router is built here, not in the task: building it installs the metrics recorder, and
    // whatever the caller starts next (the upkeep's first reclaim of a killed daemon's leases) must
    // be counted, not recorded before any recorder exists.
    let app = router(engine, site);
    let handle = tokio::spawn(async move {
        // The peer's address: sign-in throttling counts failures per client address, and an open
        // server answers loopback peers only.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}

/// An API failure, mapped once to a status and a JSON body `{"error": ...}`.
enum ApiError {
    Store(StoreError),
    /// A confirmed count no longer matches: 409 with the count as it is now.
    CountChanged {
        matching: i64,
        confirmed: i64,
    },
    BadRequest(String),
    /// The caller's role does not allow the action: 403 naming the role it needs.
    Forbidden(Refusal),
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        ApiError::Forbidden(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CountChanged { matching, confirmed } => ApiError::CountChanged { matching, confirmed },
            e => ApiError::Store(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::CountChanged { matching, confirmed } => {
                let message = StoreError::CountChanged { matching, confirmed }.to_string();
                return (StatusCode::CONFLICT, Json(json!({ "error": message, "matching": matching }))).into_response();
            }
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Forbidden(refusal) => {
                let body = json!({ "error": refusal.to_string(), "needs_role": refusal.needed });
                return (StatusCode::FORBIDDEN, Json(body)).into_response();
            }
            ApiError::Store(StoreError::SampleNotReviewed { run, reviewed, of, making }) => {
                let message = StoreError::SampleNotReviewed { run, reviewed, of, making }.to_string();
                let body = json!({ "error": message, "reviewed": reviewed, "of": of });
                return (StatusCode::CONFLICT, Json(body)).into_response();
            }
            ApiError::Store(e) => (
                match e {
                    StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                    StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    StoreError::IllegalTransition { .. }
                    | StoreError::LeaseLost { .. }
                    | StoreError::Refused(_)
                    | StoreError::SampleNotReviewed { .. } => StatusCode::CONFLICT,
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

/// The Prometheus scrape: this process's counters, then item and run gauges read from the store.
async fn metrics(State(state): State<ApiState>) -> Response {
    let store = &state.engine.store;
    match (store.item_state_counts().await, store.run_status_counts().await) {
        (Ok(items), Ok(runs)) => (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::telemetry::render(&state.metrics, &items, &runs),
        )
            .into_response(),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "/metrics: reading item counts failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("the database could not answer: {e}\n")).into_response()
        }
    }
}

async fn runs(State(engine): State<Shared>) -> ApiResult {
    ok(json!({ "runs": engine.store.runs(&[], 100).await? }))
}

/// The pipeline's stored `enrichd eval` reports, newest first (each as `enrichd eval --json` printed it).
async fn evals(State(engine): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let reports: Vec<Value> = engine
        .store
        .eval_reports(&name, 100)
        .await?
        .into_iter()
        .map(|r| {
            let mut report = r.report;
            report["id"] = json!(r.id);
            report
        })
        .collect();
    ok(json!({ "pipeline": name, "reports": reports }))
}

async fn run(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    let run = engine.store.run(id).await?;
    let counts = engine.store.counts(id).await?;
    ok(json!({ "run": run, "counts": counts }))
}

/// Queue filters as query parameters: `pipeline`, `run`, `state` (comma-separated), `warnings`
/// (`true`/`false`), `q` (text), `proposed` (`FIELD=VALUE`: the value the item would write),
/// `confidence` (`LOW..HIGH`, either end open: `..0.5`, `0.5..0.8`, `0.8..`), `warning` (a warning
/// kind: `too_long:seo_description`, `rule:NAME`, `supplier_not_found`, `duplicate`, …).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    pipeline: Option<String>,
    run: Option<i64>,
    state: Option<String>,
    warnings: Option<bool>,
    q: Option<String>,
    proposed: Option<String>,
    confidence: Option<String>,
    warning: Option<String>,
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
        let proposed = match self.proposed.as_deref() {
            None | Some("") => None,
            Some(p) => Some(p.parse().map_err(|e| ApiError::BadRequest(format!("proposed: {e}")))?),
        };
        let confidence = match self.confidence.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(c.parse().map_err(|e| ApiError::BadRequest(format!("confidence: {e}")))?),
        };
        let warning = match self.warning.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(w) => Some(w.parse().map_err(ApiError::BadRequest)?),
        };
        Ok(ReviewFilter {
            pipeline: self.pipeline,
            run_id: self.run,
            states,
            warnings: self.warnings,
            text: self.q,
            proposed,
            confidence,
            warning,
            order: Default::default(),
        })
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
    proposed: Option<String>,
    confidence: Option<String>,
    warning: Option<String>,
    /// `oldest` (the default), `confidence` (high to low), `confidence-asc`, `warnings` (most
    /// first) or `record` (by name); ties by item id.
    sort: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// The queue: `total` matching, a page of `items` in the `sort` order, `values`: for each field
/// whose values come from a closed list, the values the matching items would write with their
/// counts (what a `proposed` filter can ask for); and `warning_kinds`: each kind of warning the
/// matching items carry (the `warning` filter aside) with how many items carry it.
async fn queue(State(engine): State<Shared>, Query(params): Query<QueueParams>) -> ApiResult {
    let mut filter = FilterParams {
        pipeline: params.pipeline,
        run: params.run,
        state: params.state,
        warnings: params.warnings,
        q: params.q,
        proposed: params.proposed,
        confidence: params.confidence,
        warning: params.warning,
    }
    .filter()?;
    filter.order = params.sort.as_deref().unwrap_or_default().parse().map_err(ApiError::BadRequest)?;
    let limit = params.limit.unwrap_or(50).clamp(1, 500);
    let offset = params.offset.unwrap_or(0).max(0);
    let total = engine.store.review_count(&filter).await?;
    let items = engine.store.review_queue(&filter, limit, offset).await?;
    let fields = enum_fields(&engine, filter.pipeline.as_deref()).await?;
    let values = engine.store.review_values(&filter, &fields).await?;
    let warning_kinds: Vec<Value> = engine
        .store
        .review_warning_kinds(&filter)
        .await?
        .into_iter()
        .map(|k| json!({ "kind": k.kind, "label": k.warning_kind.label(str::to_owned), "count": k.count }))
        .collect();
    ok(json!({
        "total": total, "limit": limit, "offset": offset, "sort": filter.order.as_str(), "items": items,
        "values": values, "warning_kinds": warning_kinds,
    }))
}

/// The record fields whose proposed values come from a closed list, for the queue's value filter:
/// fields a task's output schema gives an `enum`, and fields the pipeline's `allowed` lists or the
/// platform (a helpdesk's Category dropdown, read when a run starts) restrict. Of `pipeline`, or of
/// every configured pipeline.
async fn enum_fields(engine: &Engine, pipeline: Option<&str>) -> Result<Vec<String>, StoreError> {
    let mut fields = BTreeSet::new();
    for (name, task) in engine.tasks.iter().filter(|(name, _)| pipeline.is_none_or(|p| p == name.as_str())) {
        let properties = &task.schema["properties"];
        for (property, field) in &task.fields {
            if properties[property].get("enum").is_some() {
                fields.insert(field.clone());
            }
        }
        if let Some(p) = engine.pipelines.get(name) {
            fields.extend(p.config.allowed.keys().cloned());
        }
        fields.extend(engine.store.pipeline_state(name).await?.allowed_values.into_keys());
    }
    Ok(fields.into_iter().collect())
}

async fn item(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    let item = engine.store.item(id).await?;
    let events = engine.store.item_events(id).await?;
    ok(json!({ "item": item, "events": events }))
}

/// The body of calls that only need someone to act.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    reviewer: Option<String>,
}

/// Who the request is from, as the access layer saw it: the signed-in reviewer, the account of a
/// per-account token, or `api` for the `[server.auth]` token (on an open server, `local` for a call
/// without a session).
struct Caller {
    reviewer: Option<Reviewer>,
    /// People sign in (accounts or `[server.auth]`): the actor is who signed in, never a name claimed.
    auth: bool,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Self, Self::Rejection> {
        let open = parts.extensions.get::<Mode>() == Some(&Mode::Open);
        Ok(Caller { reviewer: parts.extensions.get::<Reviewer>().cloned(), auth: !open })
    }
}

impl Caller {
    /// Checks that the caller's role allows `action` (words for people: "approve a proposal").
    fn require(&self, needed: Role, action: &str) -> Result<(), ApiError> {
        match &self.reviewer {
            Some(r) => r.require(needed, action).map_err(ApiError::Forbidden),
            None => Err(ApiError::BadRequest("no authenticated reviewer on this request".into())),
        }
    }

    /// The actor written to the audit trail. With accounts or `[server.auth]` it is who signed in
    /// (or whose token it is) and a `reviewer` in the body is ignored: nobody acts under another's
    /// name. Open to this machine only, it is the body's `reviewer` (a script on the machine names
    /// its person), else a signed-in browser session's reviewer.
    fn actor(&self, claimed: Option<&str>) -> Result<String, ApiError> {
        let signed = self.reviewer.as_ref().filter(|r| r.actor != "local");
        match (self.auth, claimed, signed) {
            (true, _, Some(r)) => Ok(r.actor.clone()),
            (true, _, None) => Err(ApiError::BadRequest("no authenticated reviewer on this request".into())),
            (false, Some(name), _) => reviewer_name(name).map_err(ApiError::BadRequest),
            (false, None, Some(r)) => Ok(r.actor.clone()),
            (false, None, None) => reviewer_name("").map_err(ApiError::BadRequest),
        }
    }
}

async fn approve(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<ActorBody>,
) -> ApiResult {
    caller.require(Role::Reviewer, "approve a proposal")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    ok(json!({ "item": engine.store.approve(id, &actor).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reviewer: Option<String>,
    reason: Option<String>,
}

async fn reject(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<RejectBody>,
) -> ApiResult {
    caller.require(Role::Reviewer, "reject a proposal")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    ok(json!({ "item": engine.store.reject(id, &actor, body.reason.as_deref()).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    reviewer: Option<String>,
    field: String,
    value: Value,
}

async fn edit(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<EditBody>,
) -> ApiResult {
    caller.require(Role::Reviewer, "edit a proposal")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    ok(json!({ "item": edit_item(&engine, id, &actor, &body.field, body.value).await? }))
}

/// A reviewer's edit, from the API or the review UI: held by the store to the rules of the task of
/// the item's pipeline (see [`crate::store::Store::edit`]).
async fn edit_item(engine: &Engine, id: i64, actor: &str, field: &str, value: Value) -> Result<Item, StoreError> {
    let item = engine.store.item(id).await?;
    let task = engine.tasks.get(&item.pipeline).ok_or_else(|| {
        StoreError::Refused(format!(
            "item {id}: pipeline {:?} is not in the config, so an edit of its proposal cannot be checked",
            item.pipeline
        ))
    })?;
    engine.store.edit(id, actor, task, field, value).await
}

/// A regeneration: the reviewer's note to the model (empty: another try), at most
/// [`crate::engine::MAX_NOTE_CHARS`] characters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegenerateBody {
    reviewer: Option<String>,
    #[serde(default)]
    note: String,
}

/// Sends a proposal waiting for review back to the model with the reviewer's note and returns the
/// item with its new proposal, waiting for review again. Nothing changes on a refusal: 409 when the
/// item is not waiting for review, its run's budget is spent or it changed meanwhile; 422 for a note
/// too long; 502 when the model failed or answered unusably; 503 from `daemon --ui-only`.
async fn regenerate_item(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<RegenerateBody>,
) -> ApiResult {
    use crate::engine::RegenerateError;
    caller.require(Role::Reviewer, "regenerate a proposal")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    let status = match crate::engine::regenerate(&engine, id, &body.note, &actor).await {
        Ok(item) => return ok(json!({ "item": item })),
        Err(RegenerateError::Store(e)) => return Err(e.into()),
        Err(e @ RegenerateError::Invalid(_)) => (StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e @ RegenerateError::Refused(_)) => (StatusCode::CONFLICT, e),
        Err(e @ RegenerateError::Model(_)) => (StatusCode::BAD_GATEWAY, e),
        Err(e @ RegenerateError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, e),
    };
    Ok((status.0, Json(json!({ "error": status.1.to_string() }))).into_response())
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

async fn bulk(State(engine): State<Shared>, caller: Caller, Json(body): Json<BulkBody>) -> ApiResult {
    let action = match body.action.as_str() {
        "approve" => ReviewAction::Approve,
        "reject" => ReviewAction::Reject { reason: body.reason.clone() },
        other => return Err(ApiError::BadRequest(format!("action: {other:?} is not approve or reject"))),
    };
    caller.require(Role::Reviewer, "approve or reject in bulk")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    let (outcome, matching) = match (body.ids, body.filter) {
        (Some(ids), None) => (engine.store.bulk_review(&ids, &action, &actor).await?, ids.len() as i64),
        (None, Some(filter)) => {
            let filter = filter.filter()?;
            match body.confirm {
                None => return ok(json!({ "matching": engine.store.review_count(&filter).await?, "applied": false })),
                Some(n) => (engine.store.bulk_review_matching(&filter, &action, &actor, n).await?, n),
            }
        }
        _ => return Err(ApiError::BadRequest("give either `ids` or `filter`".into())),
    };
    ok(json!({ "matching": matching, "applied": true, "done": outcome.done, "skipped": outcome.skipped }))
}

async fn sample(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    ok(json!({ "sample": engine.store.sample_stats(id).await? }))
}

/// A release of the sample gate; `force` with a `reason` releases a sample not reviewed yet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    reviewer: Option<String>,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
}

async fn release(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<ReleaseBody>,
) -> ApiResult {
    caller.require(Role::Operator, "release a sample")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    let anyway = match (body.force, body.reason.as_deref()) {
        (true, Some(reason)) => Some(reason),
        (true, None) => return Err(ApiError::BadRequest("force: give the `reason` for the audit trail".into())),
        (false, Some(_)) => return Err(ApiError::BadRequest("reason: goes with `force: true`".into())),
        (false, None) => None,
    };
    let run = engine.store.release_sample(id, &actor, anyway).await?;
    ok(json!({ "run": run, "sample": engine.store.sample_stats(id).await? }))
}

/// Resumes a paused run (by the caller, as the audit trail records it).
async fn resume(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<ActorBody>,
) -> ApiResult {
    caller.require(Role::Operator, "resume a run")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    ok(json!({ "run": engine.store.resume_run(id, &actor).await? }))
}

/// The run's report (totals, outcomes, retries, tokens, cost, time per item), as `enrichd status RUN --json`.
async fn report(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    ok(serde_json::to_value(engine.store.report(id).await?).expect("serialisable"))
}

/// The run's notifications (webhooks) and every delivery attempt: what a viewer sees on the run page.
async fn notifications(State(engine): State<Shared>, Path(id): Path<i64>) -> ApiResult {
    engine.store.run(id).await?;
    let list = engine.store.run_notifications(id).await?;
    ok(json!({ "run_id": id, "notifications": list }))
}

/// Undoes one written item: 200 reverted, 207 partially reverted (`result.left` says what is left
/// and why), 409 conflict or not revertible, 502 the write back failed.
async fn revert_item(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<ActorBody>,
) -> ApiResult {
    caller.require(Role::Operator, "revert a write")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    let result =
        revert(&engine, &[id], &actor).await?.pop().ok_or_else(|| StoreError::NotFound(format!("item {id}")))?;
    let status = match result.outcome {
        RevertOutcome::Reverted => StatusCode::OK,
        // Written, but part of our write is still there: not a success, not a refusal.
        RevertOutcome::PartiallyReverted { .. } => StatusCode::MULTI_STATUS,
        RevertOutcome::Conflict { .. } | RevertOutcome::NotRevertible { .. } => StatusCode::CONFLICT,
        RevertOutcome::Failed { .. } => StatusCode::BAD_GATEWAY,
    };
    Ok((status, Json(json!({ "result": result }))).into_response())
}

/// Undoing a whole run counts first: without `confirm` it returns how many items are written and
/// changes nothing; `confirm` must repeat that count (a different count is a 409 with the new one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevertRunBody {
    reviewer: Option<String>,
    confirm: Option<i64>,
}

async fn revert_run(
    State(engine): State<Shared>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<RevertRunBody>,
) -> ApiResult {
    caller.require(Role::Operator, "revert a run")?;
    let actor = caller.actor(body.reviewer.as_deref())?;
    let Some(confirm) = body.confirm else {
        engine.store.run(id).await?;
        return ok(json!({ "matching": engine.store.written_ids(id).await?.len(), "applied": false }));
    };
    let results = revert_written(&engine, id, &actor, confirm).await?;
    let t = tally(&results);
    ok(json!({
        "matching": confirm,
        "applied": true,
        "reverted": t.reverted,
        "partially_reverted": t.partially_reverted,
        "conflicts": t.conflicts,
        "failed": t.failed,
        "results": results,
    }))
}
