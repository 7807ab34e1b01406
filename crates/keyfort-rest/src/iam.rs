//! The IAM-compatible token endpoint (`specs/keyprotect-api.md` §14): `POST /identity/token`
//! (IBM's Python SDK core) and `POST /oidc/token` (redstone, the Go client), with the API-key
//! grant in a form body or in the query string.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keyfort_core::{CoreError, Keyfort};
use serde::Deserialize;
use serde_json::json;

/// The only grant type served.
pub(crate) const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

pub(crate) fn routes() -> Router<Keyfort> {
    Router::new()
        .route("/identity/token", post(token))
        .route("/oidc/token", post(token))
}

/// Form fields of a token request; others (`response_type`, `scope`, `uaa_client_id`, …) are
/// accepted and ignored.
#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    apikey: Option<String>,
}

impl TokenRequest {
    /// Fields of `other` fill the ones this request lacks.
    fn or(self, other: TokenRequest) -> TokenRequest {
        TokenRequest {
            grant_type: self.grant_type.or(other.grant_type),
            apikey: self.apikey.or(other.apikey),
        }
    }
}

async fn token(State(core): State<Keyfort>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let from_body = match serde_urlencoded::from_bytes::<TokenRequest>(&body) {
        Ok(r) => r,
        Err(_) => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "Malformed form body.",
            );
        }
    };
    let from_query = match query
        .as_deref()
        .map(serde_urlencoded::from_str::<TokenRequest>)
    {
        Some(Ok(r)) => r,
        Some(Err(_)) => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "Malformed query string.",
            );
        }
        None => TokenRequest::default(),
    };
    let request = from_body.or(from_query);
    match request.grant_type.as_deref() {
        Some(APIKEY_GRANT) => {}
        Some(_) => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0103E",
                "Unsupported grant type.",
            );
        }
        None => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "Property missing: grant_type.",
            );
        }
    }
    let Some(apikey) = request.apikey.filter(|k| !k.is_empty()) else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "Property missing: apikey.",
        );
    };
    match core.exchange_api_key(&apikey).await {
        Ok(t) => Json(json!({
            "access_token": t.token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "expiration": t.expiration,
            "scope": "ibm openid",
        }))
        .into_response(),
        Err(CoreError::Unauthenticated(reason)) => {
            tracing::info!(%reason, "API key refused at the token endpoint");
            iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0415E",
                "Provided API key could not be found.",
            )
        }
        Err(e) => {
            let correlation_id = keyfort_core::new_id().unwrap_or_default();
            tracing::error!(correlation_id, error = ?e, "token exchange failed");
            iam_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "BXNIM0000E",
                "internal error",
            )
        }
    }
}

/// An error in IAM's shape: `{"errorCode", "errorMessage", "context"}`.
fn iam_error(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    let request_id = keyfort_core::new_id().unwrap_or_default();
    (
        status,
        Json(json!({
            "errorCode": code,
            "errorMessage": message,
            "context": {"requestId": request_id},
        })),
    )
        .into_response()
}
