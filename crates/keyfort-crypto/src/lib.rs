//! Keyfort's crypto boundary: every primitive, sealing and master keys (DESIGN.md §2–§3).
//!
//! This is the only crate in Keyfort that touches cryptographic primitives. Everything is
//! provided by [AWS-LC](https://github.com/aws/aws-lc) through `aws-lc-rs`; the few operations
//! `aws-lc-rs` does not expose (raw `CKM_RSA_PKCS` over a caller's DigestInfo, PKCS #1 v1.5
//! decryption with implicit rejection, raw ECDSA over a caller's digest, SHA3-224, AES key wrap
//! under an AES-192 KEK, scrypt) come from the same library through `aws-lc-sys`, confined to
//! the private `raw` module. That module is the only place with `unsafe` code and every `unsafe`
//! block there carries a `// SAFETY:` comment.
//!
//! | module | what |
//! |---|---|
//! | [`seal`] | instance master keys and the sealed-blob format (AES-256-GCM, NIST SP 800-38D) |
//! | [`sealbox`] | sealing to an X25519 public key (X25519 + HKDF-SHA-256 + AES-256-GCM), for custodians |
//! | [`aes`] | AES GCM / CBC / CBC-PAD / CTR / ECB (NIST SP 800-38A/D), KW and KWP (RFC 3394, RFC 5649) |
//! | [`rsa`] | RSA keys, PKCS #1 v1.5 and PSS signatures, OAEP and PKCS #1 v1.5 encryption (RFC 8017) |
//! | [`ec`] | ECDSA on P-256/384/521 and secp256k1 (FIPS 186-5, SEC 1), ECDH and X25519 (RFC 7748) |
//! | [`ed25519`] | Ed25519 signatures (RFC 8032) |
//! | [`hmac`], [`hkdf`], [`digest`] | HMAC (RFC 2104), HKDF (RFC 5869), SHA-2 (FIPS 180-4), SHA-3 (FIPS 202) |
//! | [`kdf`] | scrypt password-based key derivation (RFC 7914) |
//! | [`pq`] | ML-KEM (FIPS 203) and ML-DSA (FIPS 204) |
//! | [`rng`] | the AWS-LC DRBG |
//!
//! # Secrets
//!
//! Key material is held in [`zeroize::Zeroizing`] buffers or in AWS-LC objects that are wiped on
//! free; secret key types have a redacting `Debug` and no `Clone`. Errors never carry material.
//!
//! # FIPS build
//!
//! The `fips` cargo feature builds `aws-lc-rs` on the AWS-LC FIPS module (`aws-lc-fips-sys`).
//! That build needs, at build time, **cmake**, **Go** and a C compiler (**clang** or gcc;
//! Debian: `apt-get install cmake golang clang`), and takes noticeably longer. Note that the
//! `raw` module still links the non-FIPS `aws-lc-sys` for the few operations `aws-lc-rs` does not
//! expose; those operations (raw RSA, raw ECDSA, SHA3-224, AES-192 KW/KWP, scrypt) are therefore
//! outside the FIPS boundary in a `fips` build.
#![deny(unsafe_code)]

pub mod aes;
pub mod components;
pub mod digest;
pub mod ec;
pub mod ed25519;
mod error;
pub mod hkdf;
pub mod hmac;
pub mod kdf;
pub mod pq;
mod raw;
pub mod rng;
pub mod rsa;
pub mod seal;
pub mod sealbox;
pub mod shamir;

pub use error::{Error, Result, UnsealError};

/// Compares two byte strings in time that depends only on their lengths, not their contents.
///
/// Slices of different lengths compare unequal (lengths are not treated as secret).
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
