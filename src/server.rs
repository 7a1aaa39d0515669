//! The daemon's HTTP server: `/healthz` and the JSON API over runs.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// The router, on `store`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .with_state(store)
}

/// Binds `addr` and serves until `stop`. Binding errors are returned before serving starts.
pub async fn serve(
    store: Store,
    addr: &str,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("server.bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = tokio::spawn(async move {
        let result =
            axum::serve(listener, router(store)).with_graceful_shutdown(async move { stop.cancelled().await }).await;
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
