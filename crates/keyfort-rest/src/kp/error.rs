//! The one place where a core error becomes a Key Protect status and reason code (§12).

use axum::http::StatusCode;
use keyfort_core::{CoreError, KmipAdapterRefusal, KmsRefusal};

use super::envelope::KpError;

/// The operation named in `errorMsg`: "<what> could not be <verb>".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op {
    pub what: &'static str,
    pub verb: &'static str,
}

impl Op {
    pub const REQUEST: Op = Op::new("Request", "processed");
    pub const KEY_CREATE: Op = Op::new("Key", "created");
    pub const KEY_GET: Op = Op::new("Key", "retrieved");
    pub const KEY_LIST: Op = Op::new("Keys", "retrieved");
    pub const KEY_PATCH: Op = Op::new("Key", "updated");
    pub const KEY_DELETE: Op = Op::new("Key", "deleted");
    pub const KEY_PURGE: Op = Op::new("Key", "purged");
    pub const KEY_RESTORE: Op = Op::new("Key", "restored");
    pub const VERSIONS: Op = Op::new("Key versions", "retrieved");
    pub const WRAP: Op = Op::new("Wrap with key", "performed");
    pub const UNWRAP: Op = Op::new("Unwrap with key", "performed");
    pub const REWRAP: Op = Op::new("Rewrap with key", "performed");
    pub const ROTATE: Op = Op::new("Key", "rotated");
    pub const ENABLE: Op = Op::new("Key", "enabled");
    pub const DISABLE: Op = Op::new("Key", "disabled");
    pub const SET_DELETION: Op = Op::new("Key", "set for deletion");
    pub const UNSET_DELETION: Op = Op::new("Key", "unset for deletion");
    pub const SYNC: Op = Op::new("Key", "synced");
    pub const POLICY_GET: Op = Op::new("Policies", "retrieved");
    pub const POLICY_SET: Op = Op::new("Policies", "set");
    pub const ALIAS_CREATE: Op = Op::new("Alias", "created");
    pub const ALIAS_DELETE: Op = Op::new("Alias", "deleted");
    pub const RING_LIST: Op = Op::new("Key rings", "retrieved");
    pub const RING_CREATE: Op = Op::new("Key ring", "created");
    pub const RING_DELETE: Op = Op::new("Key ring", "deleted");
    pub const REGISTRATION_GET: Op = Op::new("Registrations", "retrieved");
    pub const REGISTRATION_SET: Op = Op::new("Registration", "set");
    pub const REGISTRATION_DELETE: Op = Op::new("Registration", "deleted");
    pub const IMPORT_TOKEN_CREATE: Op = Op::new("Import token", "created");
    pub const IMPORT_TOKEN_GET: Op = Op::new("Import token", "retrieved");
    pub const ALLOWED_IP_PORT: Op = Op::new("Allowed IP port", "retrieved");
    pub const EVENT_ACK: Op = Op::new("Event", "acknowledged");
    pub const KMIP_ADAPTER_CREATE: Op = Op::new("KMIP adapter", "created");
    pub const KMIP_ADAPTER_LIST: Op = Op::new("KMIP adapters", "retrieved");
    pub const KMIP_ADAPTER_GET: Op = Op::new("KMIP adapter", "retrieved");
    pub const KMIP_ADAPTER_DELETE: Op = Op::new("KMIP adapter", "deleted");
    pub const KMIP_CERT_CREATE: Op = Op::new("KMIP client certificate", "created");
    pub const KMIP_CERT_LIST: Op = Op::new("KMIP client certificates", "retrieved");
    pub const KMIP_CERT_GET: Op = Op::new("KMIP client certificate", "retrieved");
    pub const KMIP_CERT_DELETE: Op = Op::new("KMIP client certificate", "deleted");
    pub const KMIP_OBJECT_LIST: Op = Op::new("KMIP objects", "retrieved");
    pub const KMIP_OBJECT_GET: Op = Op::new("KMIP object", "retrieved");
    pub const KMIP_OBJECT_DELETE: Op = Op::new("KMIP object", "deleted");

    const fn new(what: &'static str, verb: &'static str) -> Op {
        Op { what, verb }
    }
}

/// Status, reason code and public message of a core error. 5xx messages say "internal error"
/// plus the correlation id; the details go to the log.
pub(crate) fn classify(e: &CoreError, op: Op, correlation_id: &str) -> KpError {
    use CoreError as E;
    let new = |status, code, message: String| KpError::new(status, code, message, op);
    match e {
        E::Unauthenticated(reason) => {
            tracing::info!(correlation_id, %reason, "authentication refused");
            unauthorized(op)
        }
        E::Forbidden { .. } => {
            tracing::info!(correlation_id, error = %e, "access refused");
            unauthorized(op)
        }
        // To a caller, an unknown instance is one it has no access to (no existence oracle).
        E::InstanceNotFound { .. } => unauthorized(op),
        E::KeyNotFound { .. } => new(
            StatusCode::NOT_FOUND,
            "KEY_NOT_FOUND_ERR",
            "Key does not exist".into(),
        ),
        E::KeyRingNotFound { id } => new(
            StatusCode::NOT_FOUND,
            "KEY_RING_NOT_FOUND_ERR",
            format!("Key ring {id} does not exist"),
        ),
        E::AlreadyExists { what, id } => new(
            StatusCode::CONFLICT,
            "RESOURCE_ALREADY_EXISTS_ERR",
            format!("The {what} {id} already exists"),
        ),
        E::Conflict { .. } => new(
            StatusCode::CONFLICT,
            "CONFLICT_ERR",
            "The resource was changed concurrently: please retry".into(),
        ),
        E::InvalidField { field, rule } => new(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD_ERR",
            format!("The field `{field}` must be: {rule}"),
        )
        .with_target("field", *field),
        E::InvalidTransition { state, .. } | E::KeyNotUsable { state, .. } => new(
            StatusCode::CONFLICT,
            "KEY_ACTION_INVALID_STATE_ERR",
            format!(
                "Key is not in a valid state for this action (state {})",
                state.key_protect()
            ),
        ),
        E::NotExtractable { .. } => new(
            StatusCode::BAD_REQUEST,
            "KEY_NOT_EXTRACTABLE_ERR",
            "The key material of a root key cannot be retrieved".into(),
        ),
        E::KeyRefused { reason, .. } => refusal(*reason, op),
        E::KmipAdapterRefused { reason, .. } => kmip_refusal(*reason, op),
        E::InstanceSealed { id } => new(
            StatusCode::SERVICE_UNAVAILABLE,
            "INSTANCE_SEALED_ERR",
            format!("Instance {id} is sealed: it must be unsealed by its custodians first"),
        ),
        E::InstanceUninitialized { id } => new(
            StatusCode::SERVICE_UNAVAILABLE,
            "INSTANCE_UNINITIALIZED_ERR",
            format!("Instance {id} has no master key yet"),
        ),
        E::InstanceZeroized { id } => new(
            StatusCode::GONE,
            "INSTANCE_ZEROIZED_ERR",
            format!("Instance {id} has been zeroized"),
        ),
        E::RotationInProgress { id } => new(
            StatusCode::SERVICE_UNAVAILABLE,
            "INSTANCE_RESEALING_ERR",
            format!("Instance {id} is re-sealing under a new master key: retry later"),
        ),
        E::Hsm { .. } => {
            tracing::error!(correlation_id, error = ?e, "HSM failure");
            new(
                StatusCode::SERVICE_UNAVAILABLE,
                "HSM_UNAVAILABLE_ERR",
                format!("HSM unavailable (correlation id {correlation_id})"),
            )
        }
        _ => {
            tracing::error!(correlation_id, error = ?e, "request failed");
            new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERR",
                format!("internal error (correlation id {correlation_id})"),
            )
        }
    }
}

fn unauthorized(op: Op) -> KpError {
    KpError::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED_ERR",
        "Unauthorized: The user does not have access to the specified resource",
        op,
    )
}

/// KMIP adapter refusals (reason codes as Key Protect names them).
fn kmip_refusal(reason: KmipAdapterRefusal, op: Op) -> KpError {
    use KmipAdapterRefusal as R;
    let (status, code) = match reason {
        R::AdapterNotFound => (StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR"),
        R::CertificateNotFound => (StatusCode::NOT_FOUND, "KMIP_CERT_NOT_FOUND_ERR"),
        R::ObjectNotFound => (StatusCode::NOT_FOUND, "KMIP_OBJECT_NOT_FOUND_ERR"),
        R::UnsupportedProfile => (StatusCode::BAD_REQUEST, "KMIP_PROFILE_NOT_SUPPORTED_ERR"),
        R::AdapterHasObjects => (StatusCode::CONFLICT, "KMIP_ADAPTER_HAS_OBJECTS_ERR"),
        R::TooManyCertificates => (StatusCode::CONFLICT, "KMIP_CERT_LIMIT_ERR"),
        R::TooManyAdapters => (StatusCode::CONFLICT, "KMIP_ADAPTER_LIMIT_ERR"),
        R::DuplicateAdapterName => (StatusCode::CONFLICT, "KMIP_ADAPTER_DUPLICATE_NAME_ERR"),
        R::DuplicateCertificate => (StatusCode::CONFLICT, "KMIP_CERT_DUPLICATE_ERR"),
        R::DuplicateCertificateName => (StatusCode::CONFLICT, "KMIP_CERT_DUPLICATE_NAME_ERR"),
        R::CrkNotFound => (StatusCode::NOT_FOUND, "NATIVE_CRK_ID_NOT_FOUND_ERR"),
        R::InvalidCrk => (StatusCode::BAD_REQUEST, "NATIVE_INVALID_CRK_ERR"),
        _ => (StatusCode::BAD_REQUEST, "BAD_BODY_ERR"),
    };
    let mut message = reason.to_string();
    if let Some(first) = message.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    KpError::new(status, code, message, op)
}

/// Key Protect rule refusals (§7–§10, §12).
fn refusal(reason: KmsRefusal, op: Op) -> KpError {
    use KmsRefusal as R;
    let (status, code) = match reason {
        R::RootKeyRequired => (StatusCode::BAD_REQUEST, "KEY_ROOT_REQ_ERR"),
        R::KeyExpired => (StatusCode::BAD_REQUEST, "KEY_EXPIRED_ERR"),
        R::RestoreExpired => (StatusCode::BAD_REQUEST, "KEY_RESTORE_EXPIRED"),
        R::PayloadRequired => (StatusCode::BAD_REQUEST, "KEY_PAYLOAD_REQ_ERR"),
        R::KeyDeleted => (StatusCode::GONE, "KEY_DELETED_ERR"),
        R::AuthorizationsNotMet => (StatusCode::CONFLICT, "AUTHORIZATIONS_NOT_MET"),
        R::NotDualAuth => (StatusCode::CONFLICT, "NOT_DUAL_AUTH_ERR"),
        R::ProtectedResource => (StatusCode::CONFLICT, "PROTECTED_RESOURCE_ERR"),
        R::PreventKeyDeletion => (StatusCode::CONFLICT, "PREV_KEY_DEL_ERR"),
        R::TooEarly => (StatusCode::CONFLICT, "REQ_TOO_EARLY_ERR"),
        R::RotationNotPermitted => (StatusCode::CONFLICT, "KEY_ROTATION_NOT_PERMITTED"),
        R::CreateImportAccess => (StatusCode::CONFLICT, "KEY_CREATE_IMPORT_ACCESS_ERR"),
        R::ImportTokenExpired => (StatusCode::CONFLICT, "IMPORT_TOKEN_EXPIRED_ERR"),
        R::ImportTokenMissing => (StatusCode::NOT_FOUND, "IMPORT_TOKEN_NOT_FOUND_ERR"),
        R::IncorrectNonce => (StatusCode::BAD_REQUEST, "INCORRECT_NONCE_ERR"),
        R::IncorrectNonceIv => (StatusCode::BAD_REQUEST, "INCORRECT_NONCE_IV_ERR"),
        R::DualAuthCannotBeDisabled => (StatusCode::BAD_REQUEST, "POLICY_CANNOT_BE_DISABLED_ERR"),
        R::KeyNotActive => (StatusCode::UNPROCESSABLE_ENTITY, "KEY_INVALID_STATE_ERR"),
        R::KeyRingNotEmpty => (StatusCode::CONFLICT, "KEY_RING_KEYS_NOT_DELETED"),
        R::DefaultKeyRing => (StatusCode::BAD_REQUEST, "KEY_RING_RESERVED_ERR"),
        R::ImportedKeyRequired => (StatusCode::BAD_REQUEST, "KEY_IMPT_REQ_ERR"),
        R::ServiceOnly => (StatusCode::FORBIDDEN, "SERVICE_ONLY_ERR"),
        R::SearchTooBroad => (StatusCode::BAD_REQUEST, "KEY_SEARCH_TOO_BROAD"),
        R::UnprocessableCiphertext => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        ),
        _ => (StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR"),
    };
    let mut message = reason.to_string();
    if let Some(first) = message.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    KpError::new(status, code, message, op)
}

#[cfg(test)]
mod tests {
    use keyfort_core::{AuthFailure, KeyState, Transition};

    use super::*;

    fn code(e: CoreError) -> (u16, &'static str, String) {
        let k = classify(&e, Op::REQUEST, "c1");
        (k.status.as_u16(), k.code, k.message.clone())
    }

    #[test]
    fn each_core_error_has_its_kp_code() {
        let refused = |reason| CoreError::KeyRefused {
            id: "k".into(),
            reason,
        };
        let kmip = |reason| CoreError::KmipAdapterRefused {
            id: "a".into(),
            reason,
        };
        let cases: Vec<(CoreError, u16, &str)> = vec![
            (
                CoreError::KeyNotFound { id: "k".into() },
                404,
                "KEY_NOT_FOUND_ERR",
            ),
            (
                CoreError::Unauthenticated(AuthFailure::Expired),
                401,
                "UNAUTHORIZED_ERR",
            ),
            (
                CoreError::Forbidden {
                    principal: "p".into(),
                    action: "x",
                },
                401,
                "UNAUTHORIZED_ERR",
            ),
            (
                CoreError::InvalidTransition {
                    id: "k".into(),
                    state: KeyState::Active,
                    transition: Transition::Enable,
                },
                409,
                "KEY_ACTION_INVALID_STATE_ERR",
            ),
            (
                refused(KmsRefusal::UnprocessableCiphertext),
                422,
                "UNPROCESSABLE_CIPHERTEXT_ERR",
            ),
            (
                CoreError::InvalidField {
                    field: "name",
                    rule: "x",
                },
                400,
                "INVALID_FIELD_ERR",
            ),
            (
                refused(KmsRefusal::RootKeyRequired),
                400,
                "KEY_ROOT_REQ_ERR",
            ),
            (refused(KmsRefusal::KeyExpired), 400, "KEY_EXPIRED_ERR"),
            (
                refused(KmsRefusal::RestoreExpired),
                400,
                "KEY_RESTORE_EXPIRED",
            ),
            (
                refused(KmsRefusal::PayloadRequired),
                400,
                "KEY_PAYLOAD_REQ_ERR",
            ),
            (refused(KmsRefusal::KeyDeleted), 410, "KEY_DELETED_ERR"),
            (
                refused(KmsRefusal::AuthorizationsNotMet),
                409,
                "AUTHORIZATIONS_NOT_MET",
            ),
            (refused(KmsRefusal::NotDualAuth), 409, "NOT_DUAL_AUTH_ERR"),
            (
                refused(KmsRefusal::ProtectedResource),
                409,
                "PROTECTED_RESOURCE_ERR",
            ),
            (
                refused(KmsRefusal::PreventKeyDeletion),
                409,
                "PREV_KEY_DEL_ERR",
            ),
            (refused(KmsRefusal::TooEarly), 409, "REQ_TOO_EARLY_ERR"),
            (
                refused(KmsRefusal::RotationNotPermitted),
                409,
                "KEY_ROTATION_NOT_PERMITTED",
            ),
            (
                refused(KmsRefusal::CreateImportAccess),
                409,
                "KEY_CREATE_IMPORT_ACCESS_ERR",
            ),
            (
                refused(KmsRefusal::ImportTokenExpired),
                409,
                "IMPORT_TOKEN_EXPIRED_ERR",
            ),
            (
                refused(KmsRefusal::IncorrectNonce),
                400,
                "INCORRECT_NONCE_ERR",
            ),
            (
                refused(KmsRefusal::IncorrectNonceIv),
                400,
                "INCORRECT_NONCE_IV_ERR",
            ),
            (refused(KmsRefusal::ServiceOnly), 403, "SERVICE_ONLY_ERR"),
            (
                refused(KmsRefusal::SearchTooBroad),
                400,
                "KEY_SEARCH_TOO_BROAD",
            ),
            (
                refused(KmsRefusal::ImportedKeyRequired),
                400,
                "KEY_IMPT_REQ_ERR",
            ),
            (
                refused(KmsRefusal::KeyNotActive),
                422,
                "KEY_INVALID_STATE_ERR",
            ),
            (
                CoreError::InstanceSealed { id: "i".into() },
                503,
                "INSTANCE_SEALED_ERR",
            ),
            (
                kmip(KmipAdapterRefusal::DuplicateAdapterName),
                409,
                "KMIP_ADAPTER_DUPLICATE_NAME_ERR",
            ),
            (
                kmip(KmipAdapterRefusal::CrkNotFound),
                404,
                "NATIVE_CRK_ID_NOT_FOUND_ERR",
            ),
            (
                kmip(KmipAdapterRefusal::InvalidCrk),
                400,
                "NATIVE_INVALID_CRK_ERR",
            ),
            (
                kmip(KmipAdapterRefusal::AdapterHasObjects),
                409,
                "KMIP_ADAPTER_HAS_OBJECTS_ERR",
            ),
            (
                kmip(KmipAdapterRefusal::DuplicateCertificate),
                409,
                "KMIP_CERT_DUPLICATE_ERR",
            ),
        ];
        for (e, status, reason) in cases {
            let (s, c, _) = code(e);
            assert_eq!((s, c), (status, reason));
        }
    }

    #[test]
    fn internal_errors_say_only_internal_error() {
        let (status, code, message) = code(CoreError::Io {
            path: "/secret/path".into(),
            source: std::io::Error::other("disk on fire"),
        });
        assert_eq!((status, code), (500, "INTERNAL_SERVER_ERR"));
        assert_eq!(message, "internal error (correlation id c1)");
    }
}
