//! Elliptic curves: ECDSA (FIPS 186-5 §6, SEC 1 v2 §4.1) on P-256, P-384, P-521 and secp256k1;
//! ECDH (NIST SP 800-56A r3 §5.7.1.2) on P-256/384/521 and X25519 (RFC 7748 §5, §6.1).
//!
//! Public keys are SEC 1 §2.3.3 points (uncompressed `04 ‖ X ‖ Y`; compressed points are also
//! accepted for verification) or, for X25519, the 32-byte u-coordinate. Private keys travel as
//! PKCS #8 `PrivateKeyInfo` (RFC 5208, RFC 5915).
//!
//! Signatures come in two encodings ([`SignatureFormat`]): DER `ECDSA-Sig-Value` (X.509, TLS)
//! and fixed-length r ‖ s (PKCS #11, JOSE). Any hash can be combined with any curve; the digest
//! is truncated to the order's bit length as FIPS 186-5 §6.4.1 prescribes. Where `aws-lc-rs`
//! offers the exact curve/hash pair it is used directly, otherwise the same AWS-LC ECDSA is
//! called on the digest through the `raw` module.

use aws_lc_rs::agreement as lc_agree;
use aws_lc_rs::encoding::{AsBigEndian as _, Curve25519SeedBin, EcPrivateKeyBin};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as lc_sig, KeyPair as _};
use zeroize::Zeroizing;

use crate::digest::{self, Algorithm as Hash};
use crate::raw::{self, EcdsaEncoding};
use crate::{Error, Result};

/// An ECDSA curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// secp256k1 (SEC 2 §2.4.1).
    Secp256k1,
}

impl Curve {
    /// The byte length of the group order (half a fixed-format signature).
    #[must_use]
    pub fn order_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    pub(crate) fn nid(self) -> core::ffi::c_int {
        match self {
            Curve::P256 => raw::nid::P256,
            Curve::P384 => raw::nid::P384,
            Curve::P521 => raw::nid::P521,
            Curve::Secp256k1 => raw::nid::SECP256K1,
        }
    }

    /// Any signing algorithm of this curve, for key generation and PKCS #8 parsing.
    fn any_signing(self) -> &'static lc_sig::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &lc_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &lc_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &lc_sig::ECDSA_P521_SHA512_ASN1_SIGNING,
            Curve::Secp256k1 => &lc_sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        }
    }

    /// The hash `aws-lc-rs` pairs with this curve.
    fn native_hash(self) -> Hash {
        match self {
            Curve::P256 | Curve::Secp256k1 => Hash::Sha256,
            Curve::P384 => Hash::Sha384,
            Curve::P521 => Hash::Sha512,
        }
    }

    /// [`Curve::native_hash`] as an `aws-lc-rs` digest algorithm.
    fn native_digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            Curve::P256 | Curve::Secp256k1 => &aws_lc_rs::digest::SHA256,
            Curve::P384 => &aws_lc_rs::digest::SHA384,
            Curve::P521 => &aws_lc_rs::digest::SHA512,
        }
    }

    /// The `aws-lc-rs` signing algorithm for this curve, hash and format, if it has one.
    fn signing(
        self,
        hash: Hash,
        format: SignatureFormat,
    ) -> Option<&'static lc_sig::EcdsaSigningAlgorithm> {
        use SignatureFormat::{Der, Fixed};
        Some(match (self, hash, format) {
            (Curve::P256, Hash::Sha256, Der) => &lc_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            (Curve::P256, Hash::Sha256, Fixed) => &lc_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            (Curve::P384, Hash::Sha384, Der) => &lc_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            (Curve::P384, Hash::Sha384, Fixed) => &lc_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            (Curve::P521, Hash::Sha512, Der) => &lc_sig::ECDSA_P521_SHA512_ASN1_SIGNING,
            (Curve::P521, Hash::Sha512, Fixed) => &lc_sig::ECDSA_P521_SHA512_FIXED_SIGNING,
            (Curve::Secp256k1, Hash::Sha256, Der) => &lc_sig::ECDSA_P256K1_SHA256_ASN1_SIGNING,
            (Curve::Secp256k1, Hash::Sha256, Fixed) => &lc_sig::ECDSA_P256K1_SHA256_FIXED_SIGNING,
            _ => return None,
        })
    }

    /// The `aws-lc-rs` verification algorithm for this curve, hash and format, if it has one.
    fn verification(
        self,
        hash: Hash,
        format: SignatureFormat,
    ) -> Option<&'static lc_sig::EcdsaVerificationAlgorithm> {
        use SignatureFormat::{Der, Fixed};
        Some(match (self, hash, format) {
            (Curve::P256, Hash::Sha256, Der) => &lc_sig::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, Hash::Sha256, Fixed) => &lc_sig::ECDSA_P256_SHA256_FIXED,
            (Curve::P384, Hash::Sha384, Der) => &lc_sig::ECDSA_P384_SHA384_ASN1,
            (Curve::P384, Hash::Sha384, Fixed) => &lc_sig::ECDSA_P384_SHA384_FIXED,
            (Curve::P521, Hash::Sha512, Der) => &lc_sig::ECDSA_P521_SHA512_ASN1,
            (Curve::P521, Hash::Sha512, Fixed) => &lc_sig::ECDSA_P521_SHA512_FIXED,
            (Curve::Secp256k1, Hash::Sha256, Der) => &lc_sig::ECDSA_P256K1_SHA256_ASN1,
            (Curve::Secp256k1, Hash::Sha256, Fixed) => &lc_sig::ECDSA_P256K1_SHA256_FIXED,
            _ => return None,
        })
    }
}

/// An ECDSA signature encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureFormat {
    /// DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3).
    Der,
    /// r ‖ s, each the order's byte length (PKCS #11 `CKM_ECDSA`, RFC 7518 §3.4).
    Fixed,
}

impl SignatureFormat {
    fn raw(self) -> EcdsaEncoding {
        match self {
            SignatureFormat::Der => EcdsaEncoding::Der,
            SignatureFormat::Fixed => EcdsaEncoding::Fixed,
        }
    }
}

/// An ECDSA private key. Zeroized on drop; redacting `Debug`; no `Clone`.
///
/// Keeps the key parsed for the `aws-lc-rs` algorithms of its curve (DER and fixed signatures
/// with the curve's own hash), each parsed at most once: parsing validates the key pair, a
/// scalar multiplication that costs as much as a signature.
pub struct SigningKey {
    curve: Curve,
    pkcs8: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    /// The key parsed for the curve's DER (`[0]`) and fixed (`[1]`) signing algorithm.
    parsed: [std::sync::OnceLock<lc_sig::EcdsaKeyPair>; 2],
}

impl SigningKey {
    /// Generates a key on `curve`.
    pub fn generate(curve: Curve) -> Result<SigningKey> {
        let kp =
            lc_sig::EcdsaKeyPair::generate(curve.any_signing()).map_err(|_| Error::Internal {
                what: "EC key generation",
            })?;
        SigningKey::with_parsed(curve, kp)
    }

    /// A key from its pair parsed for `curve.any_signing()` (the curve's DER algorithm).
    fn with_parsed(curve: Curve, kp: lc_sig::EcdsaKeyPair) -> Result<SigningKey> {
        let doc = kp.to_pkcs8v1().map_err(|_| Error::Internal {
            what: "EC PKCS#8 encoding",
        })?;
        let public = kp.public_key().as_ref().to_vec();
        Ok(SigningKey {
            curve,
            pkcs8: Zeroizing::new(doc.as_ref().to_vec()),
            public,
            parsed: [std::sync::OnceLock::from(kp), std::sync::OnceLock::new()],
        })
    }

    /// Parses a PKCS #8 `PrivateKeyInfo` holding a key on `curve`.
    pub fn from_pkcs8(curve: Curve, der: &[u8]) -> Result<SigningKey> {
        let kp = lc_sig::EcdsaKeyPair::from_pkcs8(curve.any_signing(), der)
            .map_err(|e| Error::key_rejected(&e))?;
        SigningKey::with_parsed(curve, kp)
    }

    /// The key as PKCS #8 v1 DER.
    #[must_use]
    pub fn to_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The key's curve.
    #[must_use]
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The public key as an uncompressed SEC 1 point.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Hashes `msg` with `hash` and signs the digest.
    pub fn sign(&self, hash: Hash, format: SignatureFormat, msg: &[u8]) -> Result<Vec<u8>> {
        if self.curve.signing(hash, format).is_some() {
            let sig = self
                .parsed(format)?
                .sign(&SystemRandom::new(), msg)
                .map_err(|_| Error::Internal { what: "ECDSA sign" })?;
            return Ok(sig.as_ref().to_vec());
        }
        self.sign_digest(digest::digest(hash, msg).as_bytes(), format)
    }

    /// Signs a caller-supplied digest of any length (PKCS #11 `CKM_ECDSA`). A digest as long as
    /// the curve's own hash is signed with the kept key pair, any other length through `raw`.
    pub fn sign_digest(&self, digest: &[u8], format: SignatureFormat) -> Result<Vec<u8>> {
        let native = self.curve.native_digest();
        if digest.len() == native.output_len() {
            let d = aws_lc_rs::digest::Digest::import_less_safe(digest, native).map_err(|_| {
                Error::Internal {
                    what: "ECDSA digest",
                }
            })?;
            let sig = self
                .parsed(format)?
                .sign_digest(&d)
                .map_err(|_| Error::Internal { what: "ECDSA sign" })?;
            return Ok(sig.as_ref().to_vec());
        }
        raw::ecdsa_sign_digest(&self.pkcs8, digest, format.raw())
    }

    /// The key pair parsed for the curve's own hash and `format`, parsed on first use.
    fn parsed(&self, format: SignatureFormat) -> Result<&lc_sig::EcdsaKeyPair> {
        let slot = &self.parsed[usize::from(format == SignatureFormat::Fixed)];
        if let Some(kp) = slot.get() {
            return Ok(kp);
        }
        let alg = self
            .curve
            .signing(self.curve.native_hash(), format)
            .ok_or(Error::Internal {
                what: "ECDSA algorithm",
            })?;
        let kp = lc_sig::EcdsaKeyPair::from_pkcs8(alg, &self.pkcs8)
            .map_err(|e| Error::key_rejected(&e))?;
        // Another thread may have won the race; its pair is the same key.
        let _ = slot.set(kp);
        slot.get().ok_or(Error::Internal { what: "ECDSA key" })
    }
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ec::SigningKey")
            .field("curve", &self.curve)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Verifies an ECDSA signature over `msg` hashed with `hash`.
pub fn verify(
    curve: Curve,
    public_key: &[u8],
    hash: Hash,
    format: SignatureFormat,
    msg: &[u8],
    signature: &[u8],
) -> Result<()> {
    if let Some(alg) = curve.verification(hash, format) {
        return lc_sig::UnparsedPublicKey::new(alg, public_key)
            .verify(msg, signature)
            .map_err(|_| Error::VerifyFailed);
    }
    verify_digest(
        curve,
        public_key,
        digest::digest(hash, msg).as_bytes(),
        format,
        signature,
    )
}

/// Verifies an ECDSA signature over a caller-supplied digest of any length.
pub fn verify_digest(
    curve: Curve,
    public_key: &[u8],
    digest: &[u8],
    format: SignatureFormat,
    signature: &[u8],
) -> Result<()> {
    raw::ecdsa_verify_digest(curve.nid(), public_key, digest, signature, format.raw())
}

/// A key-agreement curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AgreementCurve {
    /// ECDH on P-256.
    P256,
    /// ECDH on P-384.
    P384,
    /// ECDH on P-521.
    P521,
    /// X25519 (RFC 7748 §5).
    X25519,
}

impl AgreementCurve {
    fn lc(self) -> &'static lc_agree::Algorithm {
        match self {
            AgreementCurve::P256 => &lc_agree::ECDH_P256,
            AgreementCurve::P384 => &lc_agree::ECDH_P384,
            AgreementCurve::P521 => &lc_agree::ECDH_P521,
            AgreementCurve::X25519 => &lc_agree::X25519,
        }
    }
}

/// A static key-agreement private key. Zeroized on free; redacting `Debug`; no `Clone`.
pub struct AgreementKey {
    curve: AgreementCurve,
    inner: lc_agree::PrivateKey,
}

impl AgreementKey {
    /// Generates a key.
    pub fn generate(curve: AgreementCurve) -> Result<AgreementKey> {
        let inner = lc_agree::PrivateKey::generate(curve.lc()).map_err(|_| Error::Internal {
            what: "ECDH key generation",
        })?;
        Ok(AgreementKey { curve, inner })
    }

    /// Builds a key from its private scalar: big-endian, the field's byte length, for the NIST
    /// curves; the 32-byte string k of RFC 7748 §5 for X25519.
    pub fn from_private_bytes(curve: AgreementCurve, bytes: &[u8]) -> Result<AgreementKey> {
        let inner = lc_agree::PrivateKey::from_private_key(curve.lc(), bytes)
            .map_err(|e| Error::key_rejected(&e))?;
        Ok(AgreementKey { curve, inner })
    }

    /// The private scalar in the form [`AgreementKey::from_private_bytes`] takes.
    pub fn to_private_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let err = |_| Error::Internal {
            what: "ECDH private key encoding",
        };
        let bytes = if self.curve == AgreementCurve::X25519 {
            let b: Curve25519SeedBin<'static> = self.inner.as_be_bytes().map_err(err)?;
            b.as_ref().to_vec()
        } else {
            let b: EcPrivateKeyBin<'static> = self.inner.as_be_bytes().map_err(err)?;
            b.as_ref().to_vec()
        };
        Ok(Zeroizing::new(bytes))
    }

    /// The curve.
    #[must_use]
    pub fn curve(&self) -> AgreementCurve {
        self.curve
    }

    /// The public key: an uncompressed SEC 1 point, or the 32-byte X25519 u-coordinate.
    pub fn public_key(&self) -> Result<Vec<u8>> {
        let pk = self
            .inner
            .compute_public_key()
            .map_err(|_| Error::Internal {
                what: "ECDH public key",
            })?;
        Ok(pk.as_ref().to_vec())
    }

    /// The raw shared secret with `peer_public_key` (the x-coordinate Z for ECDH, SP 800-56A
    /// §5.7.1.2; the X25519 output, RFC 7748 §6.1). Feed it to a KDF such as [`crate::hkdf`].
    pub fn agree(&self, peer_public_key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let peer = lc_agree::UnparsedPublicKey::new(self.curve.lc(), peer_public_key);
        lc_agree::agree(
            &self.inner,
            peer,
            Error::InvalidKey {
                what: "peer public key rejected",
            },
            |secret| Ok(Zeroizing::new(secret.to_vec())),
        )
    }
}

impl core::fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ec::AgreementKey")
            .field("curve", &self.curve)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CURVES: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];
    const HASHES: [Hash; 4] = [Hash::Sha256, Hash::Sha384, Hash::Sha512, Hash::Sha3_256];

    #[test]
    fn sign_verify_every_curve_hash_and_format() {
        for curve in CURVES {
            let key = SigningKey::generate(curve).unwrap();
            let again = SigningKey::from_pkcs8(curve, &key.to_pkcs8()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let pk = key.public_key();
            assert_eq!(pk.len(), 1 + 2 * curve.order_len());
            for hash in HASHES {
                for format in [SignatureFormat::Der, SignatureFormat::Fixed] {
                    let sig = key.sign(hash, format, b"msg").unwrap();
                    if format == SignatureFormat::Fixed {
                        assert_eq!(sig.len(), 2 * curve.order_len());
                    } else {
                        assert_eq!(sig[0], 0x30);
                    }
                    let ctx = format!("{curve:?} {hash:?} {format:?}");
                    assert!(
                        verify(curve, pk, hash, format, b"msg", &sig).is_ok(),
                        "{ctx}"
                    );
                    // The raw digest path agrees with the hashed path.
                    let d = digest::digest(hash, b"msg");
                    assert!(
                        verify_digest(curve, pk, d.as_bytes(), format, &sig).is_ok(),
                        "{ctx}"
                    );
                    assert_eq!(
                        verify(curve, pk, hash, format, b"msh", &sig),
                        Err(Error::VerifyFailed),
                        "{ctx}"
                    );
                    let mut bad = sig.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    assert_eq!(
                        verify(curve, pk, hash, format, b"msg", &bad),
                        Err(Error::VerifyFailed),
                        "{ctx}"
                    );
                }
            }
            // Wrong-curve PKCS#8 is rejected.
            let other = if curve == Curve::P256 {
                Curve::P384
            } else {
                Curve::P256
            };
            assert!(SigningKey::from_pkcs8(other, &key.to_pkcs8()).is_err());
        }
    }

    #[test]
    fn parsed_pair_is_kept_and_shared_between_threads() {
        for curve in CURVES {
            let key = SigningKey::generate(curve).unwrap();
            let parsed =
                std::sync::Arc::new(SigningKey::from_pkcs8(curve, &key.to_pkcs8()).unwrap());
            let hash = match curve {
                Curve::P384 => Hash::Sha384,
                Curve::P521 => Hash::Sha512,
                _ => Hash::Sha256,
            };
            // Only the DER form is parsed at first; the fixed form is parsed on first use, once.
            assert!(parsed.parsed[0].get().is_some());
            assert!(parsed.parsed[1].get().is_none());
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let k = parsed.clone();
                    std::thread::spawn(move || {
                        let format = if i % 2 == 0 {
                            SignatureFormat::Fixed
                        } else {
                            SignatureFormat::Der
                        };
                        (format, k.sign(hash, format, b"shared").unwrap())
                    })
                })
                .collect();
            for t in threads {
                let (format, sig) = t.join().unwrap();
                assert!(verify(curve, key.public_key(), hash, format, b"shared", &sig).is_ok());
            }
            let kept = parsed.parsed[1].get().unwrap() as *const lc_sig::EcdsaKeyPair;
            parsed.sign(hash, SignatureFormat::Fixed, b"again").unwrap();
            assert_eq!(
                parsed.parsed[1].get().unwrap() as *const lc_sig::EcdsaKeyPair,
                kept
            );
        }
    }

    #[test]
    fn digest_of_the_curve_hash_length_signs_with_the_kept_pair() {
        for curve in CURVES {
            let key =
                SigningKey::from_pkcs8(curve, &SigningKey::generate(curve).unwrap().to_pkcs8())
                    .unwrap();
            let len = curve.native_digest().output_len();
            for format in [SignatureFormat::Der, SignatureFormat::Fixed] {
                for (digest, short) in [(vec![0x3c; len - 1], true), (vec![0x3c; len], false)] {
                    let sig = key.sign_digest(&digest, format).unwrap();
                    let pk = key.public_key();
                    assert!(verify_digest(curve, pk, &digest, format, &sig).is_ok());
                    // Only the curve-hash length uses (and parses) the kept pair; the DER one is
                    // kept from the start.
                    let kept = key.parsed[usize::from(format == SignatureFormat::Fixed)].get();
                    assert_eq!(kept.is_some(), !short || format == SignatureFormat::Der);
                    let mut other = digest.clone();
                    other[len / 2] ^= 1;
                    assert_eq!(
                        verify_digest(curve, pk, &other, format, &sig),
                        Err(Error::VerifyFailed)
                    );
                }
            }
        }
    }

    #[test]
    fn raw_digest_any_length() {
        let key = SigningKey::generate(Curve::P256).unwrap();
        for len in [1usize, 20, 32, 64, 100] {
            let digest = vec![0xa5; len];
            let sig = key.sign_digest(&digest, SignatureFormat::Fixed).unwrap();
            assert!(
                verify_digest(
                    Curve::P256,
                    key.public_key(),
                    &digest,
                    SignatureFormat::Fixed,
                    &sig
                )
                .is_ok()
            );
            let mut other = digest.clone();
            other[0] ^= 1;
            assert_eq!(
                verify_digest(
                    Curve::P256,
                    key.public_key(),
                    &other,
                    SignatureFormat::Fixed,
                    &sig
                ),
                Err(Error::VerifyFailed)
            );
        }
        assert!(matches!(
            verify_digest(
                Curve::P256,
                &[4u8; 65],
                &[0; 32],
                SignatureFormat::Der,
                &[0x30, 0]
            ),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn ecdh_agreement_every_curve() {
        for curve in [
            AgreementCurve::P256,
            AgreementCurve::P384,
            AgreementCurve::P521,
            AgreementCurve::X25519,
        ] {
            let a = AgreementKey::generate(curve).unwrap();
            let b = AgreementKey::generate(curve).unwrap();
            let ab = a.agree(&b.public_key().unwrap()).unwrap();
            let ba = b.agree(&a.public_key().unwrap()).unwrap();
            assert_eq!(ab, ba);
            let a2 =
                AgreementKey::from_private_bytes(curve, &a.to_private_bytes().unwrap()).unwrap();
            assert_eq!(a2.public_key().unwrap(), a.public_key().unwrap());
            assert!(a.agree(&[1, 2, 3]).is_err());
        }
    }
}
