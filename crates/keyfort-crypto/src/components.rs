//! Keys from their mathematical components, as the KMIP Transparent key formats carry them
//! (KMIP 1.4 §2.1.7.3–§2.1.7.11, KMIP 2.1 §2.1.7.6–§2.1.7.9):
//!
//! * RSA private keys from the modulus and any set of the other components from which the rest
//!   follows (RFC 8017 §3.2, KMIP's "one of: Private Exponent; P and Q; Prime Exponent P and
//!   Prime Exponent Q"): missing primes are recovered from (e, d) as NIST SP 800-56B r2
//!   Appendix C.2 does, or from a CRT exponent; missing exponents are computed; the whole key
//!   is then checked for consistency by AWS-LC before it is accepted;
//! * RSA public keys from (n, e);
//! * EC private keys on P-256/384/521 from their scalar, with the public point derived;
//! * EC public points, checked to lie on their curve.
//!
//! Every input is an unsigned big-endian number (leading zeros allowed).

use aws_lc_rs::agreement as lc_agree;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa as lc_rsa;
use aws_lc_rs::signature as lc_sig;
use zeroize::Zeroizing;

use crate::ec::{Curve, SigningKey};
use crate::raw::{self, Bn, BnCtx};
use crate::rsa::{PrivateKey, PublicKey};
use crate::{Error, Result};

/// Largest RSA modulus accepted, in bits (AWS-LC's own limit).
pub const MAX_RSA_BITS: usize = 8192;

/// Largest modulus whose primes are recovered from exponents, in bits: recovery costs up to one
/// modular exponentiation per base in [`BASES`], so an inconsistent 8192-bit key would cost
/// seconds; keys that large must come with their primes.
pub const MAX_FACTORED_BITS: usize = 4096;

/// Public exponents tried, in order, when a key gives only n and d.
const COMMON_EXPONENTS: [u64; 3] = [65_537, 3, 17];

/// Bases tried by the factoring of n; for a consistent key each succeeds with probability at
/// least 1/2, so failing all of them means the components are inconsistent.
const BASES: [u64; 24] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
];

fn inconsistent() -> Error {
    Error::InvalidKey {
        what: "inconsistent RSA components",
    }
}

/// The components of an RSA private key, any of which but `n` may be missing.
#[derive(Default)]
pub struct RsaPrivateComponents<'a> {
    /// Modulus.
    pub n: &'a [u8],
    /// Public exponent.
    pub e: Option<&'a [u8]>,
    /// Private exponent.
    pub d: Option<&'a [u8]>,
    /// First prime factor.
    pub p: Option<&'a [u8]>,
    /// Second prime factor.
    pub q: Option<&'a [u8]>,
    /// d mod (p − 1).
    pub dp: Option<&'a [u8]>,
    /// d mod (q − 1).
    pub dq: Option<&'a [u8]>,
    /// q⁻¹ mod p.
    pub qinv: Option<&'a [u8]>,
}

impl core::fmt::Debug for RsaPrivateComponents<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RsaPrivateComponents")
            .field("modulus_bytes", &self.n.len())
            .field("components", &"<redacted>")
            .finish()
    }
}

fn strip(b: &[u8]) -> &[u8] {
    let zeros = b.iter().take_while(|x| **x == 0).count();
    &b[zeros..]
}

fn bn(b: Option<&[u8]>) -> Result<Option<Bn>> {
    b.map(Bn::from_be).transpose()
}

/// An RSA private key from its components; see the module docs for what may be missing.
pub fn rsa_private_key(c: &RsaPrivateComponents<'_>) -> Result<PrivateKey> {
    let ctx = BnCtx::new()?;
    let n = Bn::from_be(c.n)?;
    if n.bits() < 2048 || n.bits() > MAX_RSA_BITS || !n.is_odd() {
        return Err(Error::InvalidKey {
            what: "RSA modulus must be odd and 2048 to 8192 bits",
        });
    }
    // Bounds first, so that no component makes the recovery below costly: every private
    // component is below n, and AWS-LC takes public exponents of at most 33 bits.
    for x in [c.d, c.p, c.q, c.dp, c.dq, c.qinv].into_iter().flatten() {
        if Bn::from_be(x)?.bits() > n.bits() {
            return Err(inconsistent());
        }
    }
    if let Some(e) = c.e
        && Bn::from_be(e)?.bits() > 33
    {
        return Err(Error::InvalidKey {
            what: "RSA public exponent longer than 33 bits",
        });
    }
    let one = Bn::word(1)?;
    let e = bn(c.e)?;
    let d = bn(c.d)?;
    let (p, q) = match (bn(c.p)?, bn(c.q)?) {
        (Some(p), Some(q)) => (p, q),
        (Some(f), None) | (None, Some(f)) => {
            let other = cofactor(&ctx, &n, &f)?;
            if c.p.is_some() {
                (f, other)
            } else {
                (other, f)
            }
        }
        (None, None) => {
            if n.bits() > MAX_FACTORED_BITS {
                return Err(Error::InvalidKey {
                    what: "RSA keys over 4096 bits need their primes P and Q",
                });
            }
            let (dp, dq, qinv) = (bn(c.dp)?, bn(c.dq)?, bn(c.qinv)?);
            // A prime factor, and whether it is the second prime (q) of the key.
            let (found, is_q) = match (&d, &e, &dp, &dq) {
                (Some(d), Some(e), _, _) => (factor_with_exponents(&ctx, &n, e, d)?, false),
                (Some(d), None, _, _) => (
                    COMMON_EXPONENTS
                        .iter()
                        .find_map(|w| {
                            let e = Bn::word(*w).ok()?;
                            factor_with_exponents(&ctx, &n, &e, d).ok()
                        })
                        .ok_or(Error::InvalidKey {
                            what: "RSA key without public exponent or primes",
                        })?,
                    false,
                ),
                (None, Some(e), Some(dp), _) => (factor_with_crt_exponent(&ctx, &n, e, dp)?, false),
                (None, Some(e), None, Some(dq)) => {
                    (factor_with_crt_exponent(&ctx, &n, e, dq)?, true)
                }
                _ => {
                    return Err(Error::InvalidKey {
                        what: "RSA key needs d, p and q, or a public exponent and dP or dQ",
                    });
                }
            };
            let other = cofactor(&ctx, &n, &found)?;
            let (p, q) = if is_q { (other, found) } else { (found, other) };
            // Recovered from (e, d), which factor is "p" is decided by the CRT components the
            // client gave, if any.
            let swap = match (&d, &dp, &dq, &qinv) {
                (Some(d), Some(dp), _, _) => !congruent(&ctx, d, dp, &p)?,
                (Some(d), None, Some(dq), _) => !congruent(&ctx, d, dq, &q)?,
                (Some(_), None, None, Some(qinv)) => ctx.mod_inverse(&q, &p)?.cmp(qinv).is_ne(),
                // Without a hint, p > q, as key generators order them.
                (Some(_), None, None, None) => p.cmp(&q).is_lt(),
                _ => false,
            };
            if swap { (q, p) } else { (p, q) }
        }
    };
    let p1 = ctx.sub(&p, &one)?;
    let q1 = ctx.sub(&q, &one)?;
    let g = ctx.gcd(&p1, &q1)?;
    let lambda = ctx.div_rem(&ctx.mul(&p1, &q1)?, &g)?.0;
    let (e, d) = match (e, d) {
        (Some(e), Some(d)) => (e, d),
        (Some(e), None) => {
            let d = ctx.mod_inverse(&e, &lambda).map_err(|_| inconsistent())?;
            (e, d)
        }
        (None, Some(d)) => {
            let e = ctx.mod_inverse(&d, &lambda).map_err(|_| inconsistent())?;
            (e, d)
        }
        (None, None) => {
            return Err(Error::InvalidKey {
                what: "RSA key needs a public or a private exponent",
            });
        }
    };
    let given_or = |given: Option<&[u8]>, derive: &dyn Fn() -> Result<Bn>| match given {
        Some(b) => Bn::from_be(b),
        None => derive(),
    };
    let dp = given_or(c.dp, &|| ctx.modulo(&d, &p1))?;
    let dq = given_or(c.dq, &|| ctx.modulo(&d, &q1))?;
    let qinv = given_or(c.qinv, &|| {
        ctx.mod_inverse(&q, &p).map_err(|_| inconsistent())
    })?;
    let (n_b, e_b) = (n.to_be(), e.to_be());
    let (d_b, p_b, q_b) = (d.to_be(), p.to_be(), q.to_be());
    let (dp_b, dq_b, qinv_b) = (dp.to_be(), dq.to_be(), qinv.to_be());
    let components = lc_rsa::KeyPairComponents {
        public_key: lc_rsa::PublicKeyComponents {
            n: n_b.as_slice(),
            e: e_b.as_slice(),
        },
        d: d_b.as_slice(),
        p: p_b.as_slice(),
        q: q_b.as_slice(),
        dP: dp_b.as_slice(),
        dQ: dq_b.as_slice(),
        qInv: qinv_b.as_slice(),
    };
    let pair = lc_rsa::KeyPair::from_components(&components).map_err(|_| inconsistent())?;
    let der = pair.as_der().map_err(|_| Error::Internal {
        what: "RSA PKCS#8 encoding",
    })?;
    let pkcs8 = Zeroizing::new(der.as_ref().to_vec());
    PrivateKey::from_pkcs8(&pkcs8)
}

/// Whether a ≡ b (mod m − 1).
fn congruent(ctx: &BnCtx, a: &Bn, b: &Bn, m: &Bn) -> Result<bool> {
    let m1 = ctx.sub(m, &Bn::word(1)?)?;
    Ok(ctx.modulo(a, &m1)?.cmp(&ctx.modulo(b, &m1)?).is_eq())
}

/// n / f, if f is a proper factor of n.
fn cofactor(ctx: &BnCtx, n: &Bn, f: &Bn) -> Result<Bn> {
    let one = Bn::word(1)?;
    if f.cmp(&one).is_le() || f.cmp(n).is_ge() {
        return Err(inconsistent());
    }
    let (q, r) = ctx.div_rem(n, f)?;
    if !r.is_zero() {
        return Err(inconsistent());
    }
    Ok(q)
}

/// A prime factor of n from e and d (NIST SP 800-56B r2 Appendix C.2): with k = d·e − 1 =
/// 2^t·r, some g^(2^i·r) is a non-trivial square root of 1 mod n, which shares a factor with n.
fn factor_with_exponents(ctx: &BnCtx, n: &Bn, e: &Bn, d: &Bn) -> Result<Bn> {
    let one = Bn::word(1)?;
    let n1 = ctx.sub(n, &one)?;
    let k = ctx.sub(&ctx.mul(d, e)?, &one)?;
    if k.is_zero() || k.is_odd() {
        return Err(inconsistent());
    }
    let t = k.low_zero_bits();
    let r = ctx.rshift(&k, t)?;
    let two = Bn::word(2)?;
    for base in BASES {
        let mut y = ctx.mod_exp(&Bn::word(base)?, &r, n)?;
        if y.is_one() || y.cmp(&n1).is_eq() {
            continue;
        }
        let mut reached_minus_one = false;
        for _ in 0..t {
            let x = ctx.mod_exp(&y, &two, n)?;
            if x.is_one() {
                let p = ctx.gcd(&ctx.sub(&y, &one)?, n)?;
                return if p.cmp(&one).is_gt() && p.cmp(n).is_lt() {
                    Ok(p)
                } else {
                    Err(inconsistent())
                };
            }
            if x.cmp(&n1).is_eq() {
                reached_minus_one = true;
                break;
            }
            y = x;
        }
        // g^k ≠ 1 (mod n), although k is a multiple of λ(n) for a real key: not one.
        if !reached_minus_one {
            return Err(inconsistent());
        }
    }
    Err(inconsistent())
}

/// The prime p from e and dP = d mod (p − 1): e·dP ≡ 1 (mod p − 1), so g^(e·dP − 1) ≡ 1 (mod p)
/// and gcd(g^(e·dP − 1) − 1, n) = p for almost every g.
fn factor_with_crt_exponent(ctx: &BnCtx, n: &Bn, e: &Bn, dp: &Bn) -> Result<Bn> {
    let one = Bn::word(1)?;
    let k = ctx.sub(&ctx.mul(e, dp)?, &one)?;
    for base in BASES {
        let g = Bn::word(base)?;
        let y = ctx.mod_exp(&g, &k, n)?;
        if y.is_zero() {
            continue;
        }
        let p = ctx.gcd(&ctx.sub(&y, &one)?, n)?;
        if p.cmp(&one).is_gt() && p.cmp(n).is_lt() {
            return Ok(p);
        }
    }
    Err(inconsistent())
}

/// An RSA public key from its modulus and public exponent.
pub fn rsa_public_key(n: &[u8], e: &[u8]) -> Result<PublicKey> {
    let bits = Bn::from_be(n)?.bits();
    if !(2048..=MAX_RSA_BITS).contains(&bits) {
        return Err(Error::InvalidKey {
            what: "RSA modulus must be 2048 to 8192 bits",
        });
    }
    let components = lc_rsa::PublicKeyComponents {
        n: strip(n),
        e: strip(e),
    };
    let key: lc_rsa::PublicEncryptingKey =
        components
            .try_into()
            .map_err(|_: aws_lc_rs::error::Unspecified| Error::InvalidKey {
                what: "RSA public key components",
            })?;
    let spki = key.as_der().map_err(|_| Error::Internal {
        what: "RSA SPKI encoding",
    })?;
    PublicKey::from_der(spki.as_ref())
}

fn agreement(curve: Curve) -> Result<&'static lc_agree::Algorithm> {
    match curve {
        Curve::P256 => Ok(&lc_agree::ECDH_P256),
        Curve::P384 => Ok(&lc_agree::ECDH_P384),
        Curve::P521 => Ok(&lc_agree::ECDH_P521),
        Curve::Secp256k1 => Err(Error::Unsupported {
            what: "secp256k1 keys from components",
        }),
    }
}

fn verification(curve: Curve) -> Result<&'static lc_sig::EcdsaVerificationAlgorithm> {
    match curve {
        Curve::P256 => Ok(&lc_sig::ECDSA_P256_SHA256_ASN1),
        Curve::P384 => Ok(&lc_sig::ECDSA_P384_SHA384_ASN1),
        Curve::P521 => Ok(&lc_sig::ECDSA_P521_SHA512_ASN1),
        Curve::Secp256k1 => Ok(&lc_sig::ECDSA_P256K1_SHA256_ASN1),
    }
}

fn signing(curve: Curve) -> &'static lc_sig::EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &lc_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        Curve::P384 => &lc_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        Curve::P521 | Curve::Secp256k1 => &lc_sig::ECDSA_P521_SHA512_ASN1_SIGNING,
    }
}

/// An EC private key on `curve` from its scalar d (1 ≤ d < order), the public point derived.
pub fn ec_private_key(curve: Curve, d: &[u8]) -> Result<SigningKey> {
    let alg = agreement(curve)?;
    let d = strip(d);
    let len = curve.order_len();
    if d.len() > len {
        return Err(Error::InvalidKey {
            what: "EC private scalar longer than the curve order",
        });
    }
    let mut fixed = Zeroizing::new(vec![0u8; len]);
    fixed[len - d.len()..].copy_from_slice(d);
    let private =
        lc_agree::PrivateKey::from_private_key(alg, &fixed).map_err(|e| Error::key_rejected(&e))?;
    let public = private
        .compute_public_key()
        .map_err(|_| Error::InvalidKey {
            what: "EC private scalar",
        })?;
    let pair = lc_sig::EcdsaKeyPair::from_private_key_and_public_key(
        signing(curve),
        &fixed,
        public.as_ref(),
    )
    .map_err(|e| Error::key_rejected(&e))?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| Error::Internal {
        what: "EC PKCS#8 encoding",
    })?;
    SigningKey::from_pkcs8(curve, pkcs8.as_ref())
}

/// A public point on `curve` (SEC 1 §2.3.4: uncompressed `04 ‖ X ‖ Y` or compressed
/// `02/03 ‖ X`), checked to lie on the curve and not be the point at infinity, returned
/// uncompressed.
pub fn ec_public_point(curve: Curve, point: &[u8]) -> Result<Vec<u8>> {
    let alg = verification(curve)?;
    let uncompressed = raw::ec_point_uncompressed(curve.nid(), point)?;
    lc_sig::ParsedPublicKey::new(alg, &uncompressed).map_err(|_| Error::InvalidKey {
        what: "EC point is not on the curve",
    })?;
    Ok(uncompressed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rsa::{Hash, KeySize, SignatureScheme};

    /// The components of a PKCS #1 `RSAPrivateKey` inside a PKCS #8 (n, e, d, p, q, dP, dQ,
    /// qInv), read with a minimal DER walk (test only).
    fn components(pkcs8: &[u8]) -> Vec<Vec<u8>> {
        fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = b[0];
            let (len, rest) = if b[1] < 0x80 {
                (usize::from(b[1]), &b[2..])
            } else {
                let n = usize::from(b[1] & 0x7f);
                let len = b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, x| (a << 8) | usize::from(*x));
                (len, &b[2 + n..])
            };
            (tag, &rest[..len], &rest[len..])
        }
        let (_, body, _) = tlv(pkcs8);
        let (_, _, rest) = tlv(body);
        let (_, _, rest) = tlv(rest);
        let (_, pkcs1, _) = tlv(rest);
        let (_, mut body, _) = tlv(pkcs1);
        let mut out = Vec::new();
        while !body.is_empty() {
            let (_, int, rest) = tlv(body);
            out.push(strip(int).to_vec());
            body = rest;
        }
        out.remove(0);
        out
    }

    fn sample() -> (PrivateKey, Vec<Vec<u8>>) {
        let key = PrivateKey::generate(KeySize::Rsa2048).unwrap();
        let c = components(&key.to_pkcs8());
        (key, c)
    }

    fn same_key(a: &PrivateKey, b: &PrivateKey) {
        assert_eq!(a.public_key().to_spki_der(), b.public_key().to_spki_der());
        let sig = b.sign(SignatureScheme::Pss(Hash::Sha256), b"m").unwrap();
        a.public_key()
            .verify(SignatureScheme::Pss(Hash::Sha256), b"m", &sig)
            .unwrap();
        assert_eq!(components(&a.to_pkcs8()), components(&b.to_pkcs8()));
    }

    #[test]
    fn rsa_from_every_allowed_subset() {
        let (key, c) = sample();
        let all = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            d: Some(&c[2]),
            p: Some(&c[3]),
            q: Some(&c[4]),
            dp: Some(&c[5]),
            dq: Some(&c[6]),
            qinv: Some(&c[7]),
        };
        same_key(&rsa_private_key(&all).unwrap(), &key);
        let ned = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            d: Some(&c[2]),
            ..Default::default()
        };
        let from_ned = rsa_private_key(&ned).unwrap();
        assert_eq!(
            from_ned.public_key().to_spki_der(),
            key.public_key().to_spki_der()
        );
        let nd = RsaPrivateComponents {
            n: &c[0],
            d: Some(&c[2]),
            ..Default::default()
        };
        assert_eq!(
            rsa_private_key(&nd).unwrap().public_key().to_spki_der(),
            key.public_key().to_spki_der()
        );
        let pq = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            p: Some(&c[3]),
            q: Some(&c[4]),
            ..Default::default()
        };
        let from_pq = rsa_private_key(&pq).unwrap();
        let sig = from_pq
            .sign(SignatureScheme::Pss(Hash::Sha256), b"m")
            .unwrap();
        key.public_key()
            .verify(SignatureScheme::Pss(Hash::Sha256), b"m", &sig)
            .unwrap();
        let crt = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            dp: Some(&c[5]),
            dq: Some(&c[6]),
            ..Default::default()
        };
        let from_crt = rsa_private_key(&crt).unwrap();
        assert_eq!(components(&from_crt.to_pkcs8())[3], c[3]);
        let dq_only = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            dq: Some(&c[6]),
            ..Default::default()
        };
        let from_dq = rsa_private_key(&dq_only).unwrap();
        assert_eq!(components(&from_dq.to_pkcs8())[3..5], c[3..5]);
        for (i, tag) in [(5, "dP"), (6, "dQ")] {
            let mut with_crt = RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                d: Some(&c[2]),
                ..Default::default()
            };
            if i == 5 {
                with_crt.dp = Some(&c[5]);
            } else {
                with_crt.dq = Some(&c[6]);
            }
            let key2 = rsa_private_key(&with_crt).unwrap();
            assert_eq!(components(&key2.to_pkcs8())[3..5], c[3..5], "{tag}");
        }
        let with_qinv = RsaPrivateComponents {
            n: &c[0],
            e: Some(&c[1]),
            d: Some(&c[2]),
            qinv: Some(&c[7]),
            ..Default::default()
        };
        same_key(&rsa_private_key(&with_qinv).unwrap(), &key);
    }

    #[test]
    fn inconsistent_rsa_components_are_refused() {
        let (_, c) = sample();
        let mut bad_d = c[2].clone();
        let last = bad_d.len() - 1;
        bad_d[last] ^= 2;
        for comps in [
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                d: Some(&bad_d),
                p: Some(&c[3]),
                q: Some(&c[4]),
                dp: Some(&c[5]),
                dq: Some(&c[6]),
                qinv: Some(&c[7]),
            },
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                d: Some(&bad_d),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                p: Some(&c[3]),
                q: Some(&c[3]),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &c[3],
                e: Some(&c[1]),
                d: Some(&c[2]),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &[],
                ..Default::default()
            },
        ] {
            assert!(rsa_private_key(&comps).is_err(), "{comps:?}");
        }
    }

    #[test]
    fn oversized_components_are_refused_before_any_work() {
        let (_, c) = sample();
        let long = vec![0x01; 300];
        for comps in [
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                dp: Some(&long),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&c[1]),
                d: Some(&long),
                ..Default::default()
            },
            RsaPrivateComponents {
                n: &c[0],
                e: Some(&[2, 0, 0, 0, 1]),
                d: Some(&c[2]),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                rsa_private_key(&comps),
                Err(Error::InvalidKey { .. })
            ));
        }
    }

    #[test]
    fn large_moduli_need_their_primes() {
        let n = vec![0xFF; 520];
        let c = RsaPrivateComponents {
            n: &n,
            e: Some(&[1, 0, 1]),
            d: Some(&[3; 500]),
            ..Default::default()
        };
        assert_eq!(
            rsa_private_key(&c).err(),
            Some(Error::InvalidKey {
                what: "RSA keys over 4096 bits need their primes P and Q"
            })
        );
    }

    #[test]
    fn rsa_public_from_components() {
        let (key, c) = sample();
        let mut n = vec![0];
        n.extend_from_slice(&c[0]);
        let public = rsa_public_key(&n, &c[1]).unwrap();
        assert_eq!(public.to_spki_der(), key.public_key().to_spki_der());
        assert!(rsa_public_key(&c[0][..10], &c[1]).is_err());
    }

    #[test]
    fn ec_from_scalar_and_point_checks() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let key = SigningKey::generate(curve).unwrap();
            let d = crate::rng::random_bytes(curve.order_len()).unwrap();
            let mut d = d.to_vec();
            d[0] &= 0x7f;
            if curve == Curve::P521 {
                d[0] &= 0x01;
            }
            let derived = ec_private_key(curve, &d).unwrap();
            ec_public_point(curve, derived.public_key()).unwrap();
            let again = ec_private_key(curve, &d).unwrap();
            assert_eq!(again.public_key(), derived.public_key());
            assert!(ec_private_key(curve, &[0]).is_err());
            assert!(ec_private_key(curve, &vec![0xff; curve.order_len()]).is_err());
            assert_eq!(
                ec_public_point(curve, key.public_key()).unwrap(),
                key.public_key()
            );
            let q = key.public_key();
            let half = (q.len() - 1) / 2;
            let mut compressed = vec![2 | (q[q.len() - 1] & 1)];
            compressed.extend_from_slice(&q[1..=half]);
            assert_eq!(ec_public_point(curve, &compressed).unwrap(), q);
            compressed[0] ^= 1;
            assert_ne!(ec_public_point(curve, &compressed).unwrap(), q);
            let mut off = key.public_key().to_vec();
            let last = off.len() - 1;
            off[last] ^= 1;
            assert!(ec_public_point(curve, &off).is_err());
            assert!(ec_public_point(curve, &off[..off.len() - 1]).is_err());
        }
        // secp256k1 points are checked the same way (its private keys do not come from
        // components).
        let k1 = SigningKey::generate(Curve::Secp256k1).unwrap();
        let q = k1.public_key();
        assert_eq!(ec_public_point(Curve::Secp256k1, q).unwrap(), q);
        let mut compressed = vec![2 | (q[64] & 1)];
        compressed.extend_from_slice(&q[1..=32]);
        assert_eq!(ec_public_point(Curve::Secp256k1, &compressed).unwrap(), q);
        let mut off = q.to_vec();
        off[64] ^= 1;
        assert!(ec_public_point(Curve::Secp256k1, &off).is_err());
        let p256 = SigningKey::generate(Curve::P256).unwrap();
        assert!(ec_public_point(Curve::Secp256k1, p256.public_key()).is_err());
        assert!(ec_public_point(Curve::P384, p256.public_key()).is_err());
        assert!(ec_public_point(Curve::P256, &[0]).is_err());
        assert!(ec_public_point(Curve::P256, &[]).is_err());
    }
}
