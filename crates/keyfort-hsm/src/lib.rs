//! HSM-backed protection of instance master keys through PKCS#11.
//!
//! [`Pkcs11Protector`] keeps one non-extractable AES-256 key on a PKCS#11 token (a "wrapping
//! key", found by `CKA_LABEL`) and encrypts each instance's master key under it with
//! `CKM_AES_GCM`, binding the instance id as associated data. The master keys themselves never
//! reach the token's storage; the wrapping key never leaves the token.
//!
//! Wrapped format, version 1 ([`blob`]):
//!
//! ```text
//! 0x01 ‖ IV (12 bytes, random, drawn by Keyfort) ‖ AES-256-GCM(master key) ‖ tag (16 bytes)
//! AAD = "keyfort-hsm-mk-v1\n" ‖ instance id
//! ```
//!
//! [`Pkcs11Protector`] implements [`keyfort_core::MasterKeyProtector`]; its failures reach the
//! core as `CoreError::Hsm` with the [`HsmError`] as source. Tested against SoftHSM2 (Debian
//! package `softhsm2`).

#![forbid(unsafe_code)]

mod blob;
mod config;
mod error;
mod module;
mod protector;

pub use blob::{MASTER_KEY_LEN, WRAPPED_LEN};
pub use config::HsmConfig;
pub use error::HsmError;
pub use protector::{KeyProperties, Pkcs11Protector};
