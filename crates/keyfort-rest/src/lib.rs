//! Keyfort's HTTPS door (axum): health, metrics, the IAM-compatible token endpoint, the admin
//! API with the Keep-Your-Own-Key ceremony ([`kyok`]).
//! The Key Protect v2 API ([`kp`], `/api/v2`); UKO v4 joins here.
//!
//! Every handler is thin: decode → one core call → encode. Core errors become HTTP answers in
//! exactly one place ([`error::ApiError`]).

#![forbid(unsafe_code)]

mod admin;
mod auth;
mod error;
mod health;
mod iam;
mod json;
mod kmip_clients;
mod kp;
mod kyok;
mod metrics;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use keyfort_core::Keyfort;

pub use error::ApiError;
pub use metrics::MetricsAccess;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP API of a Keyfort server, `/metrics` for deployment administrators only.
pub fn router(core: Keyfort) -> Router {
    router_with(core, MetricsAccess::default())
}

/// [`router`], with `/metrics` readable by `metrics`.
pub fn router_with(core: Keyfort, metrics: MetricsAccess) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(iam::routes())
        .merge(metrics::routes(metrics))
        .nest(
            "/api/keyfort/v1",
            admin::routes()
                .merge(kyok::routes())
                .merge(kp::admin_routes())
                .merge(kmip_clients::routes()),
        )
        .nest("/api/v2", kp::routes())
        .layer(axum::middleware::map_response(no_store))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(core)
}

/// Answers may carry tokens, API keys or key material: no cache keeps them (RFC 6749 §5.1).
async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
