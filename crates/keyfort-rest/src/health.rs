//! `/healthz` (the process answers) and `/readyz` (it can serve: the store answers).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use keyfort_core::Keyfort;
use serde_json::{Value, json};

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(core): State<Keyfort>) -> (StatusCode, Json<Value>) {
    match core.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": core.store_backend()})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "store": core.store_backend()})),
            )
        }
    }
}
