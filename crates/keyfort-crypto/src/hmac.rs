//! HMAC (RFC 2104, FIPS 198-1) with SHA-256/384/512.

use aws_lc_rs::hmac as lc;

use crate::{Error, Result};

/// An HMAC hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// The tag length in bytes (the hash output length).
    #[must_use]
    pub fn tag_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    fn lc(self) -> lc::Algorithm {
        match self {
            Algorithm::Sha256 => lc::HMAC_SHA256,
            Algorithm::Sha384 => lc::HMAC_SHA384,
            Algorithm::Sha512 => lc::HMAC_SHA512,
        }
    }
}

/// An HMAC key. The key schedule lives in AWS-LC memory, wiped on drop; `Debug` is redacted.
pub struct Key {
    algorithm: Algorithm,
    inner: lc::Key,
}

impl Key {
    /// Creates a key. Any length is accepted (RFC 2104 §3; keys longer than the block are hashed).
    #[must_use]
    pub fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        Key {
            algorithm,
            inner: lc::Key::new(algorithm.lc(), key),
        }
    }

    /// The key's hash function.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Computes the full-length tag of `data`.
    #[must_use]
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        lc::sign(&self.inner, data).as_ref().to_vec()
    }

    /// Checks a full-length tag in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> Result<()> {
        lc::verify(&self.inner, data, tag).map_err(|_| Error::VerifyFailed)
    }

    /// Starts a multi-part computation (e.g. PKCS #11 `C_SignUpdate`).
    #[must_use]
    pub fn context(&self) -> Context {
        Context {
            inner: lc::Context::with_key(&self.inner),
        }
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("hmac::Key")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A multi-part HMAC computation.
pub struct Context {
    inner: lc::Context,
}

impl Context {
    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// Finishes and returns the full-length tag.
    #[must_use]
    pub fn sign(self) -> Vec<u8> {
        self.inner.sign().as_ref().to_vec()
    }

    /// Finishes and checks `tag` (full length) in constant time.
    pub fn verify(self, tag: &[u8]) -> Result<()> {
        let computed = self.inner.sign();
        if crate::ct_eq(computed.as_ref(), tag) {
            Ok(())
        } else {
            Err(Error::VerifyFailed)
        }
    }
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("hmac::Context { .. }")
    }
}

/// One-shot HMAC: the full-length tag of `data` under `key`.
#[must_use]
pub fn sign(algorithm: Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    Key::new(algorithm, key).sign(data)
}

/// One-shot constant-time verification of a full-length tag.
pub fn verify(algorithm: Algorithm, key: &[u8], data: &[u8], tag: &[u8]) -> Result<()> {
    Key::new(algorithm, key).verify(data, tag)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verify_rejects_changed_tag_data_and_truncation() {
        let key = Key::new(Algorithm::Sha384, b"k");
        let tag = key.sign(b"data");
        assert_eq!(tag.len(), 48);
        assert!(key.verify(b"data", &tag).is_ok());
        assert_eq!(key.verify(b"datb", &tag), Err(Error::VerifyFailed));
        assert_eq!(key.verify(b"data", &tag[..47]), Err(Error::VerifyFailed));
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert_eq!(key.verify(b"data", &bad), Err(Error::VerifyFailed));
    }

    #[test]
    fn multi_part_equals_one_shot() {
        let key = Key::new(Algorithm::Sha256, b"key");
        let mut ctx = key.context();
        ctx.update(b"hello ");
        ctx.update(b"world");
        assert_eq!(ctx.sign(), key.sign(b"hello world"));
        let mut ctx = key.context();
        ctx.update(b"hello world");
        assert!(ctx.verify(&key.sign(b"hello world")).is_ok());
    }
}
