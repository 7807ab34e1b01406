//! Password-based key derivation: scrypt (RFC 7914), a memory-hard KDF.
//!
//! Use it to turn a human password or passphrase (a custodian's, an operator's) into a key. For
//! deriving keys from keys, use [`crate::hkdf`] instead.
//!
//! # Cost
//!
//! scrypt (RFC 7914 §6) needs a table of N × 128·r bytes plus (p + 1) × 128·r bytes of working
//! blocks, and about 4·N·r·p Salsa20/8 core evaluations. [`ScryptParams::INTERACTIVE`]
//! (N = 2¹⁷, r = 8, p = 1) takes 128 MiB and a few hundred milliseconds, and suits a login or an
//! unlock that a person waits for. This module accepts `log_n` in 10..=22, `r` in 1..=32 and `p`
//! in 1..=16, needing at most [`MAX_MEMORY`] bytes; anything else is [`Error::InvalidInput`].
//!
//! The parameters, salt and output length are not secret; store them next to whatever the
//! derived key protects. Use a fresh random salt of at least 16 bytes per password.
//!
//! AWS-LC's scrypt is not a FIPS-approved algorithm and is called through `aws-lc-sys`, outside
//! the FIPS module in a `fips` build.
//!
//! # Example
//!
//! ```
//! use keyfort_crypto::kdf::{self, ScryptParams};
//!
//! let salt = keyfort_crypto::rng::random_bytes(16)?;
//! let mut key = zeroize::Zeroizing::new([0u8; 32]);
//! // Real code uses ScryptParams::INTERACTIVE (or stronger); TEST keeps the example fast.
//! kdf::scrypt(b"correct horse battery staple", &salt, ScryptParams::TEST, &mut key[..])?;
//! # Ok::<(), keyfort_crypto::Error>(())
//! ```

use crate::{Error, Result, raw};

/// The most memory an accepted parameter set may need: 1 GiB for the N × 128·r-byte table plus
/// 1 MiB for the working blocks (so that N = 2²⁰, r = 8 — 1 GiB — is accepted).
pub const MAX_MEMORY: u64 = (1 << 30) + (1 << 20);

/// Extra memory allowance passed to AWS-LC on top of its exact requirement.
const MEMORY_SLACK: u64 = 64 * 1024;

/// scrypt cost parameters (RFC 7914 §2): N = 2^`log_n` (CPU/memory cost), `r` (block size) and
/// `p` (parallelisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScryptParams {
    /// log₂ of the CPU/memory cost N; accepted: 10..=22 (and below 16·r, RFC 7914 §2).
    pub log_n: u8,
    /// The block size r; accepted: 1..=32.
    pub r: u32,
    /// The parallelisation parameter p; accepted: 1..=16.
    pub p: u32,
}

impl ScryptParams {
    /// N = 2¹⁷, r = 8, p = 1: 128 MiB, for interactive use (a person waits for it).
    pub const INTERACTIVE: Self = ScryptParams {
        log_n: 17,
        r: 8,
        p: 1,
    };

    /// N = 2¹⁰, r = 8, p = 1: 1 MiB and fast. **For tests only**; far too cheap for real
    /// passwords.
    pub const TEST: Self = ScryptParams {
        log_n: 10,
        r: 8,
        p: 1,
    };

    /// The cost parameter N = 2^`log_n` (saturating for out-of-range `log_n`).
    #[must_use]
    pub fn n(&self) -> u64 {
        1u64.checked_shl(u32::from(self.log_n)).unwrap_or(u64::MAX)
    }

    /// The memory AWS-LC's scrypt allocates for these parameters, in bytes:
    /// 128·r·(N + p + 1), saturating.
    #[must_use]
    pub fn memory_bytes(&self) -> u64 {
        let blocks = self.n().saturating_add(u64::from(self.p)).saturating_add(1);
        (128 * u64::from(self.r)).saturating_mul(blocks)
    }

    /// Checks the parameters against this module's accepted ranges and RFC 7914 §2.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what| Err(Error::InvalidInput { what });
        if !(10..=22).contains(&self.log_n) {
            return invalid("scrypt log_n must be in 10..=22");
        }
        if !(1..=32).contains(&self.r) {
            return invalid("scrypt r must be in 1..=32");
        }
        if !(1..=16).contains(&self.p) {
            return invalid("scrypt p must be in 1..=16");
        }
        // RFC 7914 §2: N < 2^(128·r/8).
        if u32::from(self.log_n) >= 16 * self.r {
            return invalid("scrypt N must be less than 2^(16 r)");
        }
        if self.memory_bytes() > MAX_MEMORY {
            return invalid("scrypt parameters need more than 1 GiB of memory");
        }
        Ok(())
    }
}

/// scrypt (RFC 7914 §6) of `password` and `salt` under `params`, filling `out` (1 byte up to
/// (2³² − 1) × 32 bytes, RFC 7914 §6).
///
/// Parameters outside the accepted ranges (see [`ScryptParams::validate`]) or an empty `out`
/// are [`Error::InvalidInput`]. On any error `out` is zeroed.
pub fn scrypt(password: &[u8], salt: &[u8], params: ScryptParams, out: &mut [u8]) -> Result<()> {
    const MAX_OUT: u64 = ((1 << 32) - 1) * 32;
    let checked = params.validate().and_then(|()| {
        if out.is_empty() || !u64::try_from(out.len()).is_ok_and(|len| len <= MAX_OUT) {
            return Err(Error::InvalidInput {
                what: "scrypt output must be 1 to (2^32 - 1) * 32 bytes",
            });
        }
        Ok(())
    });
    if let Err(e) = checked {
        out.fill(0);
        return Err(e);
    }
    let max_mem = params
        .memory_bytes()
        .saturating_add(MEMORY_SLACK)
        .min(MAX_MEMORY);
    // MAX_MEMORY fits in a 32-bit usize too.
    let max_mem = usize::try_from(max_mem).map_err(|_| Error::InvalidInput {
        what: "scrypt parameters need more memory than addressable",
    })?;
    raw::scrypt(
        password,
        salt,
        params.n(),
        u64::from(params.r),
        u64::from(params.p),
        max_mem,
        out,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// All RFC 7914 §12 vectors in the data file, including vector 1 (N = 16) that the public
    /// function refuses as too cheap, straight through AWS-LC.
    #[test]
    fn rfc7914_vectors_through_aws_lc() {
        let data: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/rfc7914_scrypt.json")).unwrap();
        let cases = data["cases"].as_array().unwrap();
        for case in cases {
            let expected = hex::decode(case["dk"].as_str().unwrap()).unwrap();
            let mut out = vec![0u8; expected.len()];
            raw::scrypt(
                case["password_text"].as_str().unwrap().as_bytes(),
                case["salt_text"].as_str().unwrap().as_bytes(),
                case["n"].as_u64().unwrap(),
                case["r"].as_u64().unwrap(),
                case["p"].as_u64().unwrap(),
                usize::try_from(MAX_MEMORY).unwrap(),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, expected, "vector {}", case["vector"]);
        }
        assert_eq!(cases.len(), 3);
    }

    #[test]
    fn deterministic_and_salt_password_sensitive() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        scrypt(b"pw", b"salt-0123456789ab", ScryptParams::TEST, &mut a).unwrap();
        scrypt(b"pw", b"salt-0123456789ab", ScryptParams::TEST, &mut b).unwrap();
        assert_eq!(a, b);
        scrypt(b"pw", b"salt-0123456789aB", ScryptParams::TEST, &mut b).unwrap();
        assert_ne!(a, b);
        scrypt(b"pW", b"salt-0123456789ab", ScryptParams::TEST, &mut b).unwrap();
        assert_ne!(a, b);
        // A shorter output is a prefix of a longer one (PBKDF2-HMAC-SHA-256 output stage).
        let mut long = [0u8; 80];
        scrypt(b"pw", b"salt-0123456789ab", ScryptParams::TEST, &mut long).unwrap();
        assert_eq!(&long[..32], &a[..]);
        // Empty password and salt are allowed (RFC 7914 vector 1 uses them).
        scrypt(b"", b"", ScryptParams::TEST, &mut b).unwrap();
    }

    #[test]
    fn parameter_ranges() {
        let ok = |log_n, r, p| ScryptParams { log_n, r, p }.validate().is_ok();
        assert!(ScryptParams::INTERACTIVE.validate().is_ok());
        assert!(ScryptParams::TEST.validate().is_ok());
        assert_eq!(ScryptParams::INTERACTIVE.n(), 1 << 17);
        assert_eq!(
            ScryptParams::INTERACTIVE.memory_bytes(),
            128 * 8 * ((1 << 17) + 2)
        );
        assert!(ok(10, 1, 1) && ok(15, 1, 16) && ok(20, 8, 1) && ok(22, 2, 16));
        assert!(!ok(9, 8, 1) && !ok(23, 1, 1) && !ok(0, 8, 1) && !ok(u8::MAX, 8, 1));
        assert!(!ok(10, 0, 1) && !ok(10, 33, 1) && !ok(10, 8, 0) && !ok(10, 8, 17));
        // RFC 7914 §2: N < 2^(16 r).
        assert!(!ok(16, 1, 1));
        // Memory cap: N = 2^21 with r = 8 needs 2 GiB.
        assert!(!ok(21, 8, 1) && !ok(22, 32, 16));
        assert_eq!(
            ScryptParams {
                log_n: u8::MAX,
                r: u32::MAX,
                p: u32::MAX
            }
            .memory_bytes(),
            u64::MAX
        );
    }

    #[test]
    fn rejected_calls_are_typed_and_wipe_output() {
        let mut out = [0xaau8; 16];
        let bad = ScryptParams {
            log_n: 9,
            ..ScryptParams::TEST
        };
        assert!(matches!(
            scrypt(b"pw", b"salt", bad, &mut out),
            Err(Error::InvalidInput { .. })
        ));
        assert_eq!(out, [0u8; 16]);
        assert!(matches!(
            scrypt(b"pw", b"salt", ScryptParams::TEST, &mut []),
            Err(Error::InvalidInput { .. })
        ));
    }
}
