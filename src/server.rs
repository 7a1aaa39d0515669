//! The daemon's HTTP server: the review UI, `/healthz` and the JSON API over runs, all behind the
//! access rules of [`access`] (sessions, sign-in, bearer tokens, CSRF, the loopback-only default).

mod access;
mod diff;
mod pages;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{Store, StoreError};

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

/// The router, on `store`. Handlers that act for someone take `Extension<Reviewer>`: the access
/// layer puts the signed-in reviewer (or `api` for a bearer token) there.
pub fn router(store: Store, site: Site) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .with_state(store.clone())
        .merge(pages::routes(store, site.access.clone(), site.html_fields))
        .layer(axum::middleware::from_fn_with_state(site.access, access::guard))
}

/// Binds `addr` and serves until `stop`. Refuses a non-loopback address without `[server.auth]`;
/// binding errors are returned before serving starts.
pub async fn serve(
    store: Store,
    site: Site,
    addr: &str,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    check_bind(addr, &site.access).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("server.bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, router(store, site))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}

struct ApiError(StoreError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

async fn healthz(State(store): State<Store>) -> Response {
    match store.ping().await {
        Ok(()) => Json(json!({"status": "ok", "database": "ok"})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "database": e.to_string()})))
            .into_response(),
    }
}

async fn runs(State(store): State<Store>) -> Result<Response, ApiError> {
    let runs = store.runs(&[], 100).await.map_err(ApiError)?;
    Ok(Json(json!({ "runs": runs })).into_response())
}

async fn run(State(store): State<Store>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let run = store.run(id).await.map_err(ApiError)?;
    let counts = store.counts(id).await.map_err(ApiError)?;
    Ok(Json(json!({ "run": run, "counts": counts })).into_response())
}
