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
        E::PartRejected { .. } => (StatusCode::BAD_REQUEST, "PART_REJECTED"),
        E::CommandRejected { .. } => (StatusCode::FORBIDDEN, "COMMAND_REJECTED"),
        E::RotationInProgress { .. } => (StatusCode::CONFLICT, "ROTATION_IN_PROGRESS"),
        E::Hsm { .. } => (StatusCode::SERVICE_UNAVAILABLE, "HSM_UNAVAILABLE"),
        E::KeyRefused { reason, .. } => {
            use keyfort_core::KmsRefusal as R;
            let status = match reason {
                R::RootKeyRequired
                | R::UnprocessableCiphertext
                | R::PayloadRequired
                | R::IncorrectNonce
                | R::IncorrectNonceIv
                | R::KeyExpired
                | R::RestoreExpired
                | R::ImportedKeyRequired
                | R::SearchTooBroad => StatusCode::BAD_REQUEST,
                R::ServiceOnly => StatusCode::FORBIDDEN,
                R::KeyDeleted => StatusCode::GONE,
                R::ImportTokenMissing => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            (status, "KEY_REFUSED")
        }
        E::CorruptRecord { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "CORRUPT_RECORD"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

/// What the caller is told about a core error; anything more stays in the log under the
/// correlation id.
fn public_message(e: &CoreError, status: StatusCode, correlation_id: &str) -> String {
    match e {
        // The reason stays in the log: callers learn only that they are refused.
        CoreError::Unauthenticated(reason) => {
            tracing::info!(correlation_id, %reason, "authentication refused");
            "not authenticated".to_owned()
        }
        // The module's own words may name slots, labels or paths.
        CoreError::Hsm { .. } => {
            tracing::error!(correlation_id, error = ?e, "HSM failure");
            "HSM unavailable".to_owned()
        }
        // An expected state, not a fault: the message names the instance and nothing secret.
        CoreError::InstanceSealed { .. } => e.to_string(),
        _ if status.is_server_error() => {
            tracing::error!(correlation_id, error = ?e, "request failed");
            "internal error".to_owned()
        }
        other => other.to_string(),
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
                (status, code, public_message(e, status, &correlation_id))
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

#[cfg(test)]
mod tests {
    use keyfort_core::PartRejection;

    use super::*;

    async fn answer(e: CoreError) -> (StatusCode, serde_json::Value) {
        let response = ApiError::Core(e).into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn kyok_errors_have_their_codes() {
        let (status, body) = answer(CoreError::PartRejected {
            instance: "i1".into(),
            reason: PartRejection::Duplicate,
        })
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "PART_REJECTED");
        assert_eq!(
            body["error"]["message"],
            "key part refused for instance i1: this custodian's part is already loaded"
        );

        let (status, body) = answer(CoreError::CommandRejected {
            instance: "i1".into(),
            reason: "not enough custodian signatures",
        })
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "COMMAND_REJECTED");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not enough custodian signatures")
        );

        let (status, body) = answer(CoreError::RotationInProgress { id: "i1".into() }).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "ROTATION_IN_PROGRESS");

        let (status, body) = answer(CoreError::InstanceSealed { id: "i1".into() }).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("is sealed")
        );
    }

    #[tokio::test]
    async fn hsm_details_stay_in_the_log() {
        let (status, body) = answer(CoreError::Hsm {
            what: "unwrap",
            source: Box::new(std::io::Error::other(
                "slot 3 label secret-kek: CKR_PIN_INCORRECT",
            )),
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "HSM_UNAVAILABLE");
        assert_eq!(body["error"]["message"], "HSM unavailable");
        assert!(!body.to_string().contains("slot"), "{body}");
        assert!(body["error"]["correlation_id"].is_string());
    }
}
