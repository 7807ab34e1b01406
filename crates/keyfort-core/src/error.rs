//! The error enum of the core layer. Each door maps it to its wire codes in one function.

use thiserror::Error;

use crate::lifecycle::{KeyState, Transition, Usage};

/// Why a caller was not authenticated. Doors answer all of these with their "unauthenticated"
/// code; the reason is for logs and audit, never a hint to the caller beyond that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credentials were presented.
    Missing,
    /// The token is not a well-formed Keyfort access token.
    Malformed,
    /// The token's signature does not verify.
    BadSignature,
    /// The token has expired (or is not yet valid).
    Expired,
    /// The API key is unknown.
    UnknownApiKey,
    /// The API key was revoked or has expired.
    RevokedApiKey,
    /// The principal is disabled or no longer exists.
    PrincipalDisabled,
    /// The TLS client certificate is not registered.
    UnknownCertificate,
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthFailure::Missing => "no credentials",
            AuthFailure::Malformed => "malformed token",
            AuthFailure::BadSignature => "token signature does not verify",
            AuthFailure::Expired => "token expired",
            AuthFailure::UnknownApiKey => "unknown API key",
            AuthFailure::RevokedApiKey => "API key revoked or expired",
            AuthFailure::PrincipalDisabled => "principal disabled",
            AuthFailure::UnknownCertificate => "unknown client certificate",
        })
    }
}

/// Errors of the core layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("instance not found: {id}")]
    InstanceNotFound { id: String },
    #[error("instance {id} is sealed: its master key must be loaded before any key operation")]
    InstanceSealed { id: String },
    #[error("instance {id} is not initialized: it has no master key yet")]
    InstanceUninitialized { id: String },
    #[error("instance {id} is already initialized")]
    InstanceAlreadyInitialized { id: String },
    #[error("instance {id} has been zeroized")]
    InstanceZeroized { id: String },
    #[error("the master key offered for instance {id} is not its current master key")]
    WrongMasterKey { id: String },
    #[error("key not found: {id}")]
    KeyNotFound { id: String },
    #[error("key ring not found: {id}")]
    KeyRingNotFound { id: String },
    #[error("{what} already exists: {id}")]
    AlreadyExists { what: &'static str, id: String },
    #[error("invalid {field}: {rule}")]
    InvalidField {
        field: &'static str,
        rule: &'static str,
    },
    #[error("key {id} is {state}: cannot {transition}")]
    InvalidTransition {
        id: String,
        state: KeyState,
        transition: Transition,
    },
    #[error("key {id} is {state}: it cannot be used to {usage:?}")]
    KeyNotUsable {
        id: String,
        state: KeyState,
        usage: Usage,
    },
    #[error("key {id} is not extractable")]
    NotExtractable { id: String },
    #[error("{what} {id} was changed concurrently; retry")]
    Conflict { what: &'static str, id: String },
    #[error("not authenticated: {0}")]
    Unauthenticated(AuthFailure),
    #[error("{principal} may not {action}")]
    Forbidden {
        principal: String,
        action: &'static str,
    },
    /// A sealed object failed to unseal: moved from another object or instance, edited, or
    /// sealed under a master key that is not loaded.
    #[error("sealed material of {object} in instance {instance} was rejected")]
    SealedObjectRejected {
        instance: String,
        object: String,
        #[source]
        source: keyfort_crypto::Error,
    },
    /// A custodian's key part was refused; it does not count toward the threshold.
    #[error("key part refused for instance {instance}: {reason}")]
    PartRejected {
        instance: String,
        reason: crate::kyok::PartRejection,
    },
    /// A command signed by custodians was refused; nothing changed.
    #[error("command refused for instance {instance}: {reason}")]
    CommandRejected {
        instance: String,
        reason: &'static str,
    },
    #[error("instance {id} is still re-sealing under its new master key")]
    RotationInProgress { id: String },
    /// The HSM protecting master keys failed or refused.
    #[error("HSM error: {what}")]
    Hsm {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Key Protect rule refused the request.
    #[error("{id}: {reason}")]
    KeyRefused {
        id: String,
        reason: crate::kms::KmsRefusal,
    },
    /// The keystore service refused the request.
    #[error("{id}: {reason}")]
    KeystoreRefused {
        id: String,
        reason: crate::keystores::KeystoreRefusal,
    },
    /// A KMIP adapter request was refused (Key Protect `kmip_adapters`).
    #[error("{id}: {reason}")]
    KmipAdapterRefused {
        id: String,
        reason: crate::kmip_adapters::KmipAdapterRefusal,
    },
    #[error("cryptographic operation failed")]
    Crypto(#[from] keyfort_crypto::Error),
    #[error("corrupted record in {table}: {id}")]
    CorruptRecord {
        table: &'static str,
        id: String,
        #[source]
        source: keyfort_store::StoreError,
    },
    #[error("cannot access {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage error")]
    Store(#[source] keyfort_store::StoreError),
}

impl From<keyfort_store::StoreError> for CoreError {
    fn from(e: keyfort_store::StoreError) -> Self {
        use keyfort_store::StoreError as S;
        match e {
            S::AlreadyExists { what, id } => CoreError::AlreadyExists { what, id },
            S::Conflict { what, id, .. } => CoreError::Conflict { what, id },
            S::Corrupt { table, ref id, .. } => CoreError::CorruptRecord {
                table,
                id: id.clone(),
                source: e,
            },
            other => CoreError::Store(other),
        }
    }
}
