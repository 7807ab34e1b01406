//! HKDF (RFC 5869) with SHA-256/384/512: extract, expand, or both.

use aws_lc_rs::hkdf as lc;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The hash function of an HKDF instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HKDF-SHA-256.
    Sha256,
    /// HKDF-SHA-384.
    Sha384,
    /// HKDF-SHA-512.
    Sha512,
}

impl Algorithm {
    /// HashLen (RFC 5869 §2.1): the PRK length.
    #[must_use]
    pub fn hash_len(self) -> usize {
        self.hmac().tag_len()
    }

    /// The longest output `expand` can produce: 255 × HashLen (RFC 5869 §2.3).
    #[must_use]
    pub fn max_output_len(self) -> usize {
        255 * self.hash_len()
    }

    fn hmac(self) -> crate::hmac::Algorithm {
        match self {
            Algorithm::Sha256 => crate::hmac::Algorithm::Sha256,
            Algorithm::Sha384 => crate::hmac::Algorithm::Sha384,
            Algorithm::Sha512 => crate::hmac::Algorithm::Sha512,
        }
    }

    fn lc(self) -> lc::Algorithm {
        match self {
            Algorithm::Sha256 => lc::HKDF_SHA256,
            Algorithm::Sha384 => lc::HKDF_SHA384,
            Algorithm::Sha512 => lc::HKDF_SHA512,
        }
    }
}

/// An output length for `aws-lc-rs`'s typed `expand`.
struct OutLen(usize);

impl lc::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Extract (RFC 5869 §2.2): PRK = HMAC-Hash(salt, IKM). An empty salt means HashLen zeros,
/// which HMAC treats identically.
#[must_use]
pub fn extract(algorithm: Algorithm, salt: &[u8], ikm: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(crate::hmac::sign(algorithm.hmac(), salt, ikm))
}

/// HKDF-Expand (RFC 5869 §2.3): `len` bytes of output keying material from `prk` and `info`.
///
/// `prk` must be at least HashLen bytes; `len` at most 255 × HashLen.
pub fn expand(
    algorithm: Algorithm,
    prk: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    if prk.len() < algorithm.hash_len() {
        return Err(Error::InvalidKey {
            what: "HKDF PRK shorter than HashLen",
        });
    }
    if len > algorithm.max_output_len() {
        return Err(Error::InvalidInput {
            what: "HKDF output longer than 255 * HashLen",
        });
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    if len == 0 {
        return Ok(out);
    }
    let prk = lc::Prk::new_less_safe(algorithm.lc(), prk);
    let info = [info];
    let okm = prk
        .expand(&info, OutLen(len))
        .map_err(|_| Error::Internal {
            what: "HKDF expand",
        })?;
    okm.fill(&mut out).map_err(|_| Error::Internal {
        what: "HKDF expand",
    })?;
    Ok(out)
}

/// HKDF (RFC 5869 §2): extract then expand.
pub fn derive(
    algorithm: Algorithm,
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let prk = extract(algorithm, salt, ikm);
    expand(algorithm, &prk, info, len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn length_limits() {
        let prk = extract(Algorithm::Sha256, b"salt", b"ikm");
        assert_eq!(prk.len(), 32);
        assert_eq!(
            expand(Algorithm::Sha256, &prk, b"", 255 * 32)
                .unwrap()
                .len(),
            8160
        );
        assert!(matches!(
            expand(Algorithm::Sha256, &prk, b"", 255 * 32 + 1),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            expand(Algorithm::Sha256, &prk[..31], b"", 16),
            Err(Error::InvalidKey { .. })
        ));
        assert!(
            expand(Algorithm::Sha512, &[0u8; 64], b"x", 0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn prefix_property() {
        let a = derive(Algorithm::Sha384, b"s", b"k", b"i", 100).unwrap();
        let b = derive(Algorithm::Sha384, b"s", b"k", b"i", 40).unwrap();
        assert_eq!(&a[..40], &b[..]);
    }
}
