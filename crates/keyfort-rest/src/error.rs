//! How failures become HTTP answers on the admin API: the one place where a core error gets its
//! status and code. (The Key Protect v2 door has its own envelope and reason codes.)

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyfort_core::CoreError;
use serde_json::json;

/// An error answer of the admin API.
#[derive(Debug)]
pub enum ApiError {
    /// A core operation failed.
    Core(CoreError),
    /// The request could not be decoded.
    BadRequest { code: &'static str, message: String },
    /// The request body is larger than [`crate::MAX_BODY_BYTES`].
    PayloadTooLarge,
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::Core(e)
    }
}

/// Status and stable code of a core error.
fn classify(e: &CoreError) -> (StatusCode, &'static str) {
    use CoreError as E;
    match e {
        E::InstanceNotFound { .. } => (StatusCode::NOT_FOUND, "INSTANCE_NOT_FOUND"),
        E::KeyNotFound { .. } => (StatusCode::NOT_FOUND, "KEY_NOT_FOUND"),
        E::KeyRingNotFound { .. } => (StatusCode::NOT_FOUND, "KEY_RING_NOT_FOUND"),
        E::InstanceSealed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "INSTANCE_SEALED"),
        E::InstanceUninitialized { .. } => (StatusCode::CONFLICT, "INSTANCE_UNINITIALIZED"),
        E::InstanceAlreadyInitialized { .. } => {
            (StatusCode::CONFLICT, "INSTANCE_ALREADY_INITIALIZED")
        }
        E::InstanceZeroized { .. } => (StatusCode::GONE, "INSTANCE_ZEROIZED"),
        E::WrongMasterKey { .. } => (StatusCode::BAD_REQUEST, "WRONG_MASTER_KEY"),
        E::AlreadyExists { .. } => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        E::InvalidField { .. } => (StatusCode::BAD_REQUEST, "INVALID_FIELD"),
        E::InvalidTransition { .. } => (StatusCode::CONFLICT, "INVALID_STATE"),
        E::KeyNotUsable { .. } => (StatusCode::CONFLICT, "KEY_NOT_USABLE"),
        E::NotExtractable { .. } => (StatusCode::BAD_REQUEST, "KEY_NOT_EXTRACTABLE"),
        E::Conflict { .. } => (StatusCode::CONFLICT, "CONFLICT"),
        E::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        E::Forbidden { .. } => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        E::SealedObjectRejected { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "SEALED_OBJECT_REJECTED")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let correlation_id = keyfort_core::new_id().unwrap_or_else(|_| "unavailable".to_owned());
        let (status, code, message) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, *code, message.clone())
            }
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("request body exceeds {} bytes", crate::MAX_BODY_BYTES),
            ),
            ApiError::Core(e) => {
                let (status, code) = classify(e);
                if status.is_server_error() {
                    tracing::error!(correlation_id, error = ?e, "request failed");
                    (status, code, "internal error".to_owned())
                } else {
                    if let CoreError::Unauthenticated(reason) = e {
                        tracing::info!(correlation_id, %reason, "authentication refused");
                    }
                    let message = match e {
                        // The reason stays in the log: callers learn only that they are refused.
                        CoreError::Unauthenticated(_) => "not authenticated".to_owned(),
                        other => other.to_string(),
                    };
                    (status, code, message)
                }
            }
        };
        let body =
            json!({"error": {"code": code, "message": message, "correlation_id": correlation_id}});
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
