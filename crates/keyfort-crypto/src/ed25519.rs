//! Ed25519 signatures (RFC 8032 §5.1), used for access tokens (JWT `EdDSA`, RFC 8037).

use aws_lc_rs::signature::{self as lc, KeyPair as _};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a private key seed (RFC 8032 §5.1.5).
pub const SEED_LEN: usize = 32;

/// An Ed25519 private key. Held in AWS-LC memory (wiped on free); `Debug` shows only the public key.
pub struct SigningKey {
    inner: lc::Ed25519KeyPair,
}

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate() -> Result<SigningKey> {
        let inner = lc::Ed25519KeyPair::generate().map_err(|_| Error::Rng)?;
        Ok(SigningKey { inner })
    }

    /// Parses an unencrypted PKCS #8 v1 or v2 `PrivateKeyInfo` (RFC 5958, RFC 8410).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey> {
        let inner = lc::Ed25519KeyPair::from_pkcs8(der).map_err(|e| Error::key_rejected(&e))?;
        Ok(SigningKey { inner })
    }

    /// Builds a key from its 32-byte seed (the RFC 8032 §5.1.5 private key).
    pub fn from_seed(seed: &[u8]) -> Result<SigningKey> {
        if seed.len() != SEED_LEN {
            return Err(Error::InvalidKey {
                what: "Ed25519 seed must be 32 bytes",
            });
        }
        let inner =
            lc::Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| Error::key_rejected(&e))?;
        Ok(SigningKey { inner })
    }

    /// Serialises the key as PKCS #8 v1 (RFC 5208 / RFC 8410), the form OpenSSL writes.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = self.inner.to_pkcs8v1().map_err(|_| Error::Internal {
            what: "Ed25519 PKCS#8 encoding",
        })?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The 32-byte public key (RFC 8032 §5.1.5).
    #[must_use]
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        // An Ed25519 public key is always 32 bytes.
        out.copy_from_slice(self.inner.public_key().as_ref());
        out
    }

    /// Signs `msg` (PureEdDSA, RFC 8032 §5.1.6).
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        // An Ed25519 signature is always 64 bytes.
        out.copy_from_slice(self.inner.sign(msg).as_ref());
        out
    }
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ed25519::SigningKey")
            .field("public_key", &PublicHex(&self.public_key()))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

struct PublicHex<'a>(&'a [u8]);

impl core::fmt::Debug for PublicHex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Verifies an Ed25519 signature (RFC 8032 §5.1.7) over `msg` with a 32-byte public key.
pub fn verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<()> {
    if public_key.len() != PUBLIC_KEY_LEN {
        return Err(Error::InvalidKey {
            what: "Ed25519 public key must be 32 bytes",
        });
    }
    lc::UnparsedPublicKey::new(&lc::ED25519, public_key)
        .verify(msg, signature)
        .map_err(|_| Error::VerifyFailed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"token");
        let pk = key.public_key();
        assert!(verify(&pk, b"token", &sig).is_ok());
        assert_eq!(verify(&pk, b"tokem", &sig), Err(Error::VerifyFailed));
        let mut bad = sig;
        bad[10] ^= 4;
        assert_eq!(verify(&pk, b"token", &bad), Err(Error::VerifyFailed));
        assert_eq!(verify(&pk, b"token", &sig[..63]), Err(Error::VerifyFailed));
        assert!(matches!(
            verify(&pk[..31], b"token", &sig),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = SigningKey::generate().unwrap();
        let der = key.to_pkcs8().unwrap();
        let again = SigningKey::from_pkcs8(&der).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        // Ed25519 is deterministic: same key, same signature.
        assert_eq!(key.sign(b"m"), again.sign(b"m"));
        assert!(SigningKey::from_pkcs8(&der[..der.len() - 1]).is_err());
        let dbg = format!("{key:?}");
        assert!(dbg.contains("redacted"));
    }
}
