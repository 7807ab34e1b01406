//! Message digests: SHA-2 (FIPS 180-4) and SHA-3 (FIPS 202), one-shot and incremental.

use aws_lc_rs::digest as lc;

use crate::raw;

/// The largest digest output, in bytes (SHA-512, SHA3-512).
pub const MAX_OUTPUT_LEN: usize = 64;

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-224, FIPS 180-4.
    Sha224,
    /// SHA-256, FIPS 180-4.
    Sha256,
    /// SHA-384, FIPS 180-4.
    Sha384,
    /// SHA-512, FIPS 180-4.
    Sha512,
    /// SHA3-224, FIPS 202.
    Sha3_224,
    /// SHA3-256, FIPS 202.
    Sha3_256,
    /// SHA3-384, FIPS 202.
    Sha3_384,
    /// SHA3-512, FIPS 202.
    Sha3_512,
}

impl Algorithm {
    /// The digest length in bytes.
    #[must_use]
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha224 | Algorithm::Sha3_224 => 28,
            Algorithm::Sha256 | Algorithm::Sha3_256 => 32,
            Algorithm::Sha384 | Algorithm::Sha3_384 => 48,
            Algorithm::Sha512 | Algorithm::Sha3_512 => 64,
        }
    }

    /// The `aws-lc-rs` algorithm, where `aws-lc-rs` has one (all but SHA3-224).
    pub(crate) fn lc(self) -> Option<&'static lc::Algorithm> {
        match self {
            Algorithm::Sha224 => Some(&lc::SHA224),
            Algorithm::Sha256 => Some(&lc::SHA256),
            Algorithm::Sha384 => Some(&lc::SHA384),
            Algorithm::Sha512 => Some(&lc::SHA512),
            Algorithm::Sha3_224 => None,
            Algorithm::Sha3_256 => Some(&lc::SHA3_256),
            Algorithm::Sha3_384 => Some(&lc::SHA3_384),
            Algorithm::Sha3_512 => Some(&lc::SHA3_512),
        }
    }
}

/// A digest value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    algorithm: Algorithm,
    value: [u8; MAX_OUTPUT_LEN],
}

impl Digest {
    fn new(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let mut value = [0u8; MAX_OUTPUT_LEN];
        let n = bytes.len().min(MAX_OUTPUT_LEN);
        value[..n].copy_from_slice(&bytes[..n]);
        Digest { algorithm, value }
    }

    /// The algorithm that produced this digest.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The digest bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.value[..self.algorithm.output_len()]
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl core::fmt::Debug for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Digest({:?}, ", self.algorithm)?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Computes the digest of `data` in one call.
#[must_use]
pub fn digest(algorithm: Algorithm, data: &[u8]) -> Digest {
    let mut ctx = Context::new(algorithm);
    ctx.update(data);
    ctx.finish()
}

/// SHA-256 of `data` (FIPS 180-4 §6.2).
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = lc::digest(&lc::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref()); // SHA-256 output is always 32 bytes.
    out
}

/// An incremental digest computation.
pub struct Context {
    algorithm: Algorithm,
    inner: Inner,
}

enum Inner {
    Lc(lc::Context),
    Sha3_224(raw::Sha3_224),
}

impl Context {
    /// Starts a digest computation.
    #[must_use]
    pub fn new(algorithm: Algorithm) -> Self {
        let inner = match algorithm.lc() {
            Some(alg) => Inner::Lc(lc::Context::new(alg)),
            None => Inner::Sha3_224(raw::Sha3_224::new()),
        };
        Context { algorithm, inner }
    }

    /// The algorithm being computed.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Lc(ctx) => ctx.update(data),
            Inner::Sha3_224(ctx) => ctx.update(data),
        }
    }

    /// Finishes the computation and returns the digest.
    #[must_use]
    pub fn finish(self) -> Digest {
        match self.inner {
            Inner::Lc(ctx) => Digest::new(self.algorithm, ctx.finish().as_ref()),
            Inner::Sha3_224(ctx) => Digest::new(self.algorithm, &ctx.finish()),
        }
    }
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        let data = b"the quick brown fox jumps over the lazy dog";
        for alg in [
            Algorithm::Sha224,
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
            Algorithm::Sha3_224,
            Algorithm::Sha3_256,
            Algorithm::Sha3_384,
            Algorithm::Sha3_512,
        ] {
            let mut ctx = Context::new(alg);
            for chunk in data.chunks(7) {
                ctx.update(chunk);
            }
            let d = ctx.finish();
            assert_eq!(d, digest(alg, data));
            assert_eq!(d.as_bytes().len(), alg.output_len());
        }
    }

    #[test]
    fn sha256_matches_general_api() {
        assert_eq!(
            &sha256(b"abc")[..],
            digest(Algorithm::Sha256, b"abc").as_bytes()
        );
    }
}
