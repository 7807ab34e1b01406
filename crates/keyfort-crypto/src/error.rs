//! The crate's one error type.

/// Errors of the crypto boundary. Variants carry data, never key material or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key was malformed, of the wrong size or type, or otherwise unacceptable.
    #[error("invalid key: {what}")]
    InvalidKey {
        /// What was wrong, e.g. "AES key length".
        what: &'static str,
    },
    /// An input (IV, data length, ciphertext, digest…) was unacceptable.
    #[error("invalid input: {what}")]
    InvalidInput {
        /// What was wrong.
        what: &'static str,
    },
    /// The mechanism or parameter combination is not supported.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// Authenticated decryption or unwrapping failed (wrong key, tampered data, bad padding).
    #[error("decryption failed")]
    DecryptFailed,
    /// A signature or MAC did not verify.
    #[error("verification failed")]
    VerifyFailed,
    /// A sealed blob could not be unsealed.
    #[error("cannot unseal: {0}")]
    Unseal(#[from] UnsealError),
    /// The random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// AWS-LC failed where it should not have.
    #[error("internal crypto error: {what}")]
    Internal {
        /// Which operation failed.
        what: &'static str,
    },
}

/// Why a sealed blob (see [`crate::seal`]) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The blob is shorter than the fixed header, nonce and tag.
    #[error("sealed blob truncated ({len} bytes)")]
    Truncated {
        /// The blob's length.
        len: usize,
    },
    /// The blob does not start with the `KFS` magic.
    #[error("not a sealed blob (bad magic)")]
    BadMagic,
    /// The blob's format version is not one this build understands.
    #[error("unknown sealed blob format version {version}")]
    UnknownFormat {
        /// The format version byte found.
        version: u8,
    },
    /// The blob was sealed under another master-key version.
    #[error("blob sealed under master key version {blob}, key has version {key}")]
    MasterKeyVersion {
        /// The version recorded in the blob.
        blob: u32,
        /// The version of the master key offered.
        key: u32,
    },
    /// AES-GCM authentication failed: wrong master key, wrong context, or tampered blob.
    #[error("sealed blob failed authentication")]
    AuthFailed,
}

/// Result with [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an `aws-lc-rs` key rejection to [`Error::InvalidKey`], keeping its static reason.
    pub(crate) fn key_rejected(e: &aws_lc_rs::error::KeyRejected) -> Self {
        Error::InvalidKey {
            what: e.description_(),
        }
    }
}
