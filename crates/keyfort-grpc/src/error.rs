//! The door's one error type and its one mapping to gRPC (grep11 spec §8): every failure is a
//! `google.rpc.Status` whose single detail is a `grep11.Grep11Error` carrying the `CK_RV`.

use std::borrow::Cow;

use keyfort_core::CoreError;
use keyfort_core::grep11::BlobRejection;
use keyfort_core::keystores::KeystoreRefusal;
use prost::Message;

use crate::ck::rv;
use crate::proto;

/// A failed GREP11 call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PKCS#11 failure decided by the door, with a short public detail.
    #[error("{}: {detail}", rv::name(*rv))]
    Ck { rv: u64, detail: Cow<'static, str> },
    /// The core refused or failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A primitive failed.
    #[error(transparent)]
    Crypto(#[from] keyfort_crypto::Error),
    /// A blob could not be opened.
    #[error(transparent)]
    Blob(#[from] BlobRejection),
}

/// Result of a door operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A PKCS#11 error with a fixed detail.
pub fn ck(rv: u64, detail: &'static str) -> Error {
    Error::Ck {
        rv,
        detail: Cow::Borrowed(detail),
    }
}

const GREP11_ERROR_TYPE: &str = "type.googleapis.com/grep11.Grep11Error";

/// `google.rpc.Status`, as the `grpc-status-details-bin` trailer carries it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

impl Error {
    /// The `CK_RV`, gRPC code, public detail and retry hint of this error. The one place where
    /// core and crypto errors become GREP11 codes.
    fn wire(&self) -> (u64, tonic::Code, Cow<'static, str>, bool) {
        use keyfort_crypto::Error as C;
        use tonic::Code;
        let unknown = Code::Unknown;
        match self {
            Error::Ck { rv, detail } => (*rv, unknown, detail.clone(), false),
            Error::Blob(BlobRejection::WrappingKeyMismatch) => (
                rv::CKR_IBM_WKID_MISMATCH,
                unknown,
                "the blob was sealed under another wrapping key".into(),
                false,
            ),
            Error::Blob(_) => (
                rv::CKR_IBM_BLOB_ERROR,
                unknown,
                "the blob failed its integrity check".into(),
                false,
            ),
            Error::Crypto(e) => match e {
                C::InvalidKey { what } => (
                    rv::CKR_KEY_TYPE_INCONSISTENT,
                    unknown,
                    (*what).into(),
                    false,
                ),
                C::InvalidInput { what } => (rv::CKR_DATA_INVALID, unknown, (*what).into(), false),
                C::Unsupported { what } => (
                    rv::CKR_MECHANISM_PARAM_INVALID,
                    unknown,
                    (*what).into(),
                    false,
                ),
                C::DecryptFailed => (
                    rv::CKR_ENCRYPTED_DATA_INVALID,
                    unknown,
                    "decryption failed".into(),
                    false,
                ),
                C::VerifyFailed => (
                    rv::CKR_SIGNATURE_INVALID,
                    unknown,
                    "signature invalid".into(),
                    false,
                ),
                C::Unseal(_) => (
                    rv::CKR_IBM_BLOB_ERROR,
                    unknown,
                    "the blob failed its integrity check".into(),
                    false,
                ),
                _ => (
                    rv::CKR_FUNCTION_FAILED,
                    unknown,
                    "internal error".into(),
                    true,
                ),
            },
            Error::Core(e) => match e {
                CoreError::Unauthenticated(_) => (
                    rv::CKR_IBM_GREP11_NOT_AUTHENTICATED,
                    Code::Unauthenticated,
                    "missing, invalid or expired bearer token".into(),
                    false,
                ),
                CoreError::Forbidden { .. } => (
                    rv::CKR_USER_NOT_LOGGED_IN,
                    Code::PermissionDenied,
                    "the caller has no role for this operation in this instance".into(),
                    false,
                ),
                CoreError::InstanceSealed { .. } => (
                    rv::CKR_IBM_WK_NOT_INITIALIZED,
                    unknown,
                    "the instance is sealed: its master key is not loaded".into(),
                    true,
                ),
                CoreError::InstanceUninitialized { .. } | CoreError::InstanceZeroized { .. } => (
                    rv::CKR_IBM_WK_NOT_INITIALIZED,
                    unknown,
                    "the instance has no master key".into(),
                    false,
                ),
                CoreError::InstanceNotFound { .. } => (
                    rv::CKR_IBM_WK_NOT_INITIALIZED,
                    Code::NotFound,
                    "no such instance".into(),
                    false,
                ),
                CoreError::InvalidField { field, rule } => (
                    rv::CKR_ARGUMENTS_BAD,
                    unknown,
                    format!("{field}: {rule}").into(),
                    false,
                ),
                CoreError::Conflict { .. } => (
                    rv::CKR_IBM_GREP11_CONFLICT,
                    unknown,
                    "changed concurrently; retry".into(),
                    true,
                ),
                CoreError::KeystoreRefused { reason, .. } => keystore_refusal(*reason),
                CoreError::Crypto(c) => Error::Crypto(*c).wire(),
                _ => (
                    rv::CKR_IBM_INTERNAL_ERROR,
                    unknown,
                    "internal error".into(),
                    true,
                ),
            },
        }
    }

    /// The gRPC status: code, `CKR_<NAME>: detail`, and one `Grep11Error` detail.
    pub fn into_status(self) -> tonic::Status {
        let (code_rv, code, detail, retry) = self.wire();
        if matches!(self, Error::Core(_) | Error::Crypto(_))
            && code_rv == rv::CKR_IBM_INTERNAL_ERROR
        {
            tracing::warn!(error = %self, "grep11 request failed");
        }
        let message = format!("{}: {detail}", rv::name(code_rv));
        let grep11 = proto::Grep11Error {
            code: code_rv,
            detail: detail.into_owned(),
            retry,
        };
        let status = RpcStatus {
            code: code as i32,
            message: message.clone(),
            details: vec![Any {
                type_url: GREP11_ERROR_TYPE.to_owned(),
                value: grep11.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, message, status.encode_to_vec().into())
    }
}

/// The codes of the keystore service's refusals (part of [`Error::wire`]).
fn keystore_refusal(reason: KeystoreRefusal) -> (u64, tonic::Code, Cow<'static, str>, bool) {
    use KeystoreRefusal as R;
    use tonic::Code;
    let (rv, code) = match reason {
        R::KeystoreNotFound => (rv::CKR_TOKEN_NOT_PRESENT, Code::NotFound),
        R::ObjectNotFound => (rv::CKR_OBJECT_HANDLE_INVALID, Code::NotFound),
        R::NameTaken => (rv::CKR_IBM_GREP11_CONFLICT, Code::AlreadyExists),
        R::TooManyKeystores => (rv::CKR_DEVICE_MEMORY, Code::ResourceExhausted),
        R::NotEmpty => (rv::CKR_ACTION_PROHIBITED, Code::FailedPrecondition),
        R::BlobTooLarge => (rv::CKR_DATA_LEN_RANGE, Code::InvalidArgument),
        R::TooManyAttributes | R::DuplicateAttribute | R::TemplateTooLarge => {
            (rv::CKR_TEMPLATE_INCONSISTENT, Code::InvalidArgument)
        }
        R::AttributeTooLarge => (rv::CKR_ATTRIBUTE_VALUE_INVALID, Code::InvalidArgument),
        _ => (rv::CKR_ARGUMENTS_BAD, Code::InvalidArgument),
    };
    (rv, code, reason.to_string().into(), false)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

/// Decodes the `Grep11Error` of a status made by [`Error::into_status`] (clients and tests).
pub fn grep11_error(status: &tonic::Status) -> Option<proto::Grep11Error> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    let [any] = rpc.details.as_slice() else {
        return None;
    };
    if any.type_url != GREP11_ERROR_TYPE {
        return None;
    }
    proto::Grep11Error::decode(any.value.as_slice()).ok()
}
