//! Errors of the HSM layer. None of them carries the PIN; the core wraps them in
//! `CoreError::Hsm` with [`HsmError::what`] as its summary and the error itself as the source.

use std::path::PathBuf;

use thiserror::Error;

/// Why the PKCS#11 protector could not open, wrap or unwrap.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("cannot find PKCS#11 module {}", module.display())]
    ModuleMissing {
        module: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load PKCS#11 module {}", module.display())]
    ModuleLoad {
        module: PathBuf,
        #[source]
        source: cryptoki::error::Error,
    },
    #[error("no PKCS#11 token labelled '{token}' in module {}", module.display())]
    TokenNotFound { token: String, module: PathBuf },
    #[error("{count} PKCS#11 tokens are labelled '{token}' in module {}", module.display())]
    AmbiguousToken {
        token: String,
        module: PathBuf,
        count: usize,
    },
    #[error("cannot log in to PKCS#11 token '{token}' as user")]
    Login {
        token: String,
        #[source]
        source: cryptoki::error::Error,
    },
    #[error(
        "no AES secret key labelled '{key}' on PKCS#11 token '{token}', and creating it is not allowed"
    )]
    KeyNotFound { token: String, key: String },
    #[error("{count} AES secret keys are labelled '{key}' on PKCS#11 token '{token}'")]
    AmbiguousKey {
        token: String,
        key: String,
        count: usize,
    },
    #[error("key '{key}' on PKCS#11 token '{token}' is unfit to wrap master keys: {reason}")]
    UnfitKey {
        token: String,
        key: String,
        reason: &'static str,
    },
    #[error("PKCS#11 {operation} failed on token '{token}'")]
    Pkcs11 {
        token: String,
        operation: &'static str,
        #[source]
        source: cryptoki::error::Error,
    },
    #[error("{operation} returned {actual} bytes, expected {expected}")]
    UnexpectedOutput {
        operation: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("a master key must be {expected} bytes, got {actual}")]
    MasterKeyLength { expected: usize, actual: usize },
    #[error("wrapped master key is malformed: {reason}")]
    MalformedWrappedKey { reason: &'static str },
    #[error(
        "PKCS#11 token '{token}' rejected the wrapped master key of instance {instance}: \
         wrong instance, altered blob or wrong wrapping key"
    )]
    Rejected {
        token: String,
        instance: String,
        #[source]
        source: cryptoki::error::Error,
    },
    #[error("cannot draw a random IV")]
    Rng(#[source] keyfort_crypto::Error),
}

impl HsmError {
    /// A fixed summary of the failure, for `CoreError::Hsm { what, .. }`.
    pub fn what(&self) -> &'static str {
        match self {
            HsmError::ModuleMissing { .. } | HsmError::ModuleLoad { .. } => {
                "PKCS#11 module unavailable"
            }
            HsmError::TokenNotFound { .. } | HsmError::AmbiguousToken { .. } => {
                "PKCS#11 token not found"
            }
            HsmError::Login { .. } => "PKCS#11 login failed",
            HsmError::KeyNotFound { .. }
            | HsmError::AmbiguousKey { .. }
            | HsmError::UnfitKey { .. } => "PKCS#11 wrapping key unavailable",
            HsmError::Pkcs11 { .. } | HsmError::UnexpectedOutput { .. } => {
                "PKCS#11 operation failed"
            }
            HsmError::MasterKeyLength { .. } => "master key has the wrong length",
            HsmError::MalformedWrappedKey { .. } | HsmError::Rejected { .. } => {
                "wrapped master key rejected"
            }
            HsmError::Rng(_) => "random number generation failed",
        }
    }
}

impl From<HsmError> for keyfort_core::CoreError {
    fn from(e: HsmError) -> Self {
        keyfort_core::CoreError::Hsm {
            what: e.what(),
            source: Box::new(e),
        }
    }
}
