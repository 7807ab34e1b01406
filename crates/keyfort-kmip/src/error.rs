//! The one mapping from core errors to KMIP Result Reasons (KMIP 1.4 §11; KMIP 2.0 §11), and
//! the downgrade of KMIP 2.x reasons for 1.x clients.

use keyfort_core::CoreError;

use crate::ResultReason;
use crate::message::{Invalid, ProtocolVersion};

/// The Result Reason and message of a core error. Messages never carry key material; internal
/// failures say only "internal error" (details go to the log).
pub fn from_core(e: &CoreError) -> Invalid {
    use CoreError as E;
    let (reason, message) = match e {
        E::KeyNotFound { .. } => (ResultReason::ITEM_NOT_FOUND, e.to_string()),
        E::InstanceNotFound { .. } => (ResultReason::PERMISSION_DENIED, e.to_string()),
        E::InstanceSealed { .. } | E::InstanceUninitialized { .. } | E::InstanceZeroized { .. } => {
            (ResultReason::PERMISSION_DENIED, e.to_string())
        }
        E::Forbidden { .. } => (ResultReason::PERMISSION_DENIED, e.to_string()),
        E::Unauthenticated(_) => (
            ResultReason::AUTHENTICATION_NOT_SUCCESSFUL,
            "authentication not successful".to_owned(),
        ),
        E::InvalidField { .. } => (ResultReason::INVALID_FIELD, e.to_string()),
        E::InvalidTransition { .. } | E::KeyNotUsable { .. } => {
            (ResultReason::WRONG_KEY_LIFECYCLE_STATE, e.to_string())
        }
        E::NotExtractable { .. } => (ResultReason::NOT_EXTRACTABLE, e.to_string()),
        E::AlreadyExists { .. } => (ResultReason::OBJECT_ALREADY_EXISTS, e.to_string()),
        E::Conflict { .. } => (ResultReason::GENERAL_FAILURE, e.to_string()),
        // An instance policy, not the object's state, refuses it.
        E::KeyRefused {
            reason: keyfort_core::kms::KmsRefusal::CreateImportAccess,
            ..
        } => (ResultReason::PERMISSION_DENIED, e.to_string()),
        E::KeyRefused { .. } => (ResultReason::ILLEGAL_OPERATION, e.to_string()),
        E::Crypto(c) => match c {
            keyfort_crypto::Error::DecryptFailed | keyfort_crypto::Error::VerifyFailed => {
                (ResultReason::CRYPTOGRAPHIC_FAILURE, c.to_string())
            }
            keyfort_crypto::Error::InvalidKey { .. }
            | keyfort_crypto::Error::InvalidInput { .. } => {
                (ResultReason::INVALID_FIELD, c.to_string())
            }
            keyfort_crypto::Error::Unsupported { .. } => {
                (ResultReason::FEATURE_NOT_SUPPORTED, c.to_string())
            }
            _ => (
                ResultReason::CRYPTOGRAPHIC_FAILURE,
                "cryptographic failure".to_owned(),
            ),
        },
        _ => (ResultReason::GENERAL_FAILURE, "internal error".to_owned()),
    };
    Invalid::new(reason, message)
}

/// The reason to send a client of `version`: KMIP 1.x clients get the nearest 1.x reason for
/// the reasons KMIP 2.0 added.
pub fn for_version(reason: ResultReason, version: ProtocolVersion) -> ResultReason {
    if version.is_v2() || reason.0 <= 0x18 || reason == ResultReason::GENERAL_FAILURE {
        return reason;
    }
    match reason {
        ResultReason::OBJECT_NOT_FOUND | ResultReason::ATTRIBUTE_NOT_FOUND => {
            ResultReason::ITEM_NOT_FOUND
        }
        ResultReason::READ_ONLY_ATTRIBUTE | ResultReason::ATTRIBUTE_READ_ONLY => {
            ResultReason::PERMISSION_DENIED
        }
        ResultReason::WRONG_KEY_LIFECYCLE_STATE | ResultReason::OBJECT_DESTROYED => {
            ResultReason::ILLEGAL_OPERATION
        }
        ResultReason::BAD_CRYPTOGRAPHIC_PARAMETERS => ResultReason::CRYPTOGRAPHIC_FAILURE,
        ResultReason::UNSUPPORTED_PROTOCOL_VERSION => ResultReason::OPERATION_NOT_SUPPORTED,
        _ => ResultReason::INVALID_FIELD,
    }
}
