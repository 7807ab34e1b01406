//! Sealing to a public key: an ECIES-style hybrid of X25519 (RFC 7748), HKDF-SHA-256
//! (RFC 5869) and AES-256-GCM (NIST SP 800-38D), for handing key parts to custodians.
//!
//! Anyone holding a recipient's 32-byte X25519 public key can [`seal_to`] it; only the holder
//! of the matching [`X25519Secret`] can [`open`] the box. The sender is anonymous: a box proves
//! nothing about who made it, so authenticate the sender separately (e.g. sign the box) where
//! that matters. `aad` binds the box to a context (a ceremony id, a custodian name…) that must
//! be presented again, unchanged, to open it.
//!
//! # Construction, version 1
//!
//! With the recipient's public key R (32 bytes):
//!
//! 1. generate a fresh ephemeral X25519 key e with public key E = X25519(e, 9);
//! 2. Z = X25519(e, R) (RFC 7748 §6.1); an all-zero Z — R of small order — is rejected;
//! 3. K = HKDF-SHA-256(IKM = Z, salt = E ‖ R, info = `"keyfort sealbox v1"`, L = 32);
//! 4. pick a random 96-bit nonce n and compute C ‖ T = AES-256-GCM(K, n, `aad`, plaintext).
//!
//! The recipient computes Z = X25519(r, E) and proceeds likewise. e is discarded after
//! sealing, so K is unique per box; the random nonce is belt and braces.
//!
//! # Byte layout, version 1
//!
//! | offset | length | field |
//! |---:|---:|---|
//! | 0 | 1 | version `0x01` |
//! | 1 | 32 | ephemeral public key E (RFC 7748 u-coordinate, little-endian) |
//! | 33 | 12 | nonce n |
//! | 45 | m | AES-256-GCM ciphertext C (m = plaintext length) |
//! | 45 + m | 16 | GCM tag T |
//!
//! The version byte and E are not GCM associated data; E and R are bound through the HKDF
//! salt, and any other version byte is refused before decryption.
//!
//! # Example
//!
//! ```
//! use keyfort_crypto::sealbox::{self, X25519Secret};
//!
//! let custodian = X25519Secret::generate()?;
//! let boxed = sealbox::seal_to(&custodian.public_key(), b"ceremony 42", b"key part")?;
//! let part = sealbox::open(&custodian, b"ceremony 42", &boxed)?;
//! assert_eq!(&part[..], b"key part");
//! # Ok::<(), keyfort_crypto::Error>(())
//! ```

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::ec::{AgreementCurve, AgreementKey};
use crate::{Error, Result};

/// The version byte this module writes and reads.
pub const VERSION_V1: u8 = 0x01;
/// Length of an X25519 public or private key.
pub const KEY_LEN: usize = 32;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a box adds to its plaintext: version, ephemeral public key, nonce and tag (61).
pub const OVERHEAD: usize = 1 + KEY_LEN + NONCE_LEN + TAG_LEN;

const HKDF_INFO: &[u8] = b"keyfort sealbox v1";

/// A static X25519 private key (RFC 7748 §5): 32 raw bytes, zeroized on drop, redacting
/// `Debug`, no `Clone`.
pub struct X25519Secret {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    key: AgreementKey,
    public: [u8; KEY_LEN],
}

impl X25519Secret {
    /// Generates a fresh key from the AWS-LC DRBG.
    pub fn generate() -> Result<X25519Secret> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        crate::rng::fill(&mut bytes[..])?;
        Self::build(bytes)
    }

    /// Builds a key from its 32 raw bytes: the string k of RFC 7748 §5 (clamped when used, so
    /// every 32-byte string is a valid key).
    pub fn from_bytes(bytes: &[u8]) -> Result<X25519Secret> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(Error::InvalidKey {
                what: "X25519 private key must be 32 bytes",
            });
        }
        key.copy_from_slice(bytes);
        Self::build(key)
    }

    fn build(bytes: Zeroizing<[u8; KEY_LEN]>) -> Result<X25519Secret> {
        let key = AgreementKey::from_private_bytes(AgreementCurve::X25519, &bytes[..])?;
        let public = key.public_key()?;
        let public: [u8; KEY_LEN] = public.as_slice().try_into().map_err(|_| Error::Internal {
            what: "X25519 public key length",
        })?;
        Ok(X25519Secret { bytes, key, public })
    }

    /// The 32 raw bytes, exactly as given to [`X25519Secret::from_bytes`] (for storage, sealed).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        self.bytes.clone()
    }

    /// The public key X25519(k, 9): the 32-byte u-coordinate to give to senders.
    #[must_use]
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// The X25519 shared secret with `peer`; fails for a small-order `peer` (all-zero output).
    fn agree(&self, peer: &[u8; KEY_LEN]) -> Result<Zeroizing<Vec<u8>>> {
        self.key.agree(peer)
    }
}

impl core::fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("sealbox::X25519Secret")
            .field("public_key", &Hex(&self.public))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Lower-case hex for `Debug` output of public values.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// K = HKDF-SHA-256(IKM = Z, salt = E ‖ R, info = "keyfort sealbox v1") as an AES-256-GCM key.
fn derive_key(
    shared: &[u8],
    ephemeral_public: &[u8; KEY_LEN],
    recipient_public: &[u8; KEY_LEN],
) -> Result<LessSafeKey> {
    let mut salt = [0u8; 2 * KEY_LEN];
    salt[..KEY_LEN].copy_from_slice(ephemeral_public);
    salt[KEY_LEN..].copy_from_slice(recipient_public);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
    let info = [HKDF_INFO];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| Error::Internal {
            what: "sealbox key derivation",
        })?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seals `plaintext` to the holder of the X25519 private key for `recipient_x25519_public`,
/// bound to `aad`. Returns the box (version 1, see the module docs): 61 bytes longer than
/// `plaintext`.
///
/// A small-order recipient key (one that would make the shared secret all zeros) is
/// [`Error::InvalidKey`].
pub fn seal_to(
    recipient_x25519_public: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let ephemeral = X25519Secret::generate()?;
    let ephemeral_public = ephemeral.public_key();
    let shared = ephemeral
        .agree(recipient_x25519_public)
        .map_err(|_| Error::InvalidKey {
            what: "recipient X25519 public key rejected (small order)",
        })?;
    drop(ephemeral);
    let key = derive_key(&shared, &ephemeral_public, recipient_x25519_public)?;

    let mut nonce = [0u8; NONCE_LEN];
    crate::rng::fill(&mut nonce)?;
    let mut boxed = Vec::with_capacity(OVERHEAD + plaintext.len());
    boxed.push(VERSION_V1);
    boxed.extend_from_slice(&ephemeral_public);
    boxed.extend_from_slice(&nonce);
    boxed.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut boxed[1 + KEY_LEN + NONCE_LEN..],
        )
        .map_err(|_| Error::InvalidInput {
            what: "sealbox plaintext too long",
        })?;
    boxed.extend_from_slice(tag.as_ref());
    Ok(boxed)
}

/// Opens a box made by [`seal_to`] for `recipient` with the same `aad`.
///
/// An unknown version byte is [`Error::Unsupported`]; every other failure — truncation, a
/// small-order ephemeral key, the wrong recipient or `aad`, any tampering — is
/// [`Error::DecryptFailed`].
pub fn open(recipient: &X25519Secret, aad: &[u8], boxed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let Some((&version, rest)) = boxed.split_first() else {
        return Err(Error::DecryptFailed);
    };
    if version != VERSION_V1 {
        return Err(Error::Unsupported {
            what: "unknown sealbox version",
        });
    }
    if boxed.len() < OVERHEAD {
        return Err(Error::DecryptFailed);
    }
    let (ephemeral_public, rest) = rest.split_at(KEY_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let ephemeral_public: &[u8; KEY_LEN] = ephemeral_public
        .try_into()
        .map_err(|_| Error::DecryptFailed)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::DecryptFailed)?;

    let shared = recipient
        .agree(ephemeral_public)
        .map_err(|_| Error::DecryptFailed)?;
    let key = derive_key(&shared, ephemeral_public, &recipient.public)?;

    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf[..])
        .map_err(|_| Error::DecryptFailed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Small-order X25519 u-coordinates: 0, 1, the two points of order 8, p − 1, p, p + 1.
    const SMALL_ORDER: [&str; 7] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    fn small_order_points() -> impl Iterator<Item = [u8; KEY_LEN]> {
        SMALL_ORDER
            .iter()
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
    }

    #[test]
    fn round_trip_and_layout() {
        let r = X25519Secret::generate().unwrap();
        for len in [0usize, 1, 32, 100] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = seal_to(&r.public_key(), b"ceremony-7", &pt).unwrap();
            assert_eq!(b.len(), OVERHEAD + len);
            assert_eq!(b[0], VERSION_V1);
            assert_eq!(&open(&r, b"ceremony-7", &b).unwrap()[..], &pt[..]);
        }
        // Fresh ephemeral key and nonce every time.
        let a = seal_to(&r.public_key(), b"", b"same").unwrap();
        let b = seal_to(&r.public_key(), b"", b"same").unwrap();
        assert_ne!(a[1..33], b[1..33]);
        assert_ne!(a[33..45], b[33..45]);
    }

    /// Opens a box with separately written code following the module docs step by step.
    #[test]
    fn construction_matches_documentation() {
        let r = X25519Secret::generate().unwrap();
        let b = seal_to(&r.public_key(), b"aad", b"key part 1 of 3").unwrap();
        let (e, rest) = b[1..].split_at(32);
        let (nonce, ct) = rest.split_at(12);
        let recipient =
            AgreementKey::from_private_bytes(AgreementCurve::X25519, &r.to_bytes()[..]).unwrap();
        let z = recipient.agree(e).unwrap();
        let salt = [e, &r.public_key()[..]].concat();
        let k = crate::hkdf::derive(
            crate::hkdf::Algorithm::Sha256,
            &salt,
            &z,
            b"keyfort sealbox v1",
            32,
        )
        .unwrap();
        let pt = crate::aes::gcm_decrypt(&k, nonce, b"aad", ct).unwrap();
        assert_eq!(&pt[..], b"key part 1 of 3");
    }

    #[test]
    fn wrong_recipient_or_aad_fails() {
        let r = X25519Secret::generate().unwrap();
        let other = X25519Secret::generate().unwrap();
        let b = seal_to(&r.public_key(), b"custodian alice", b"share").unwrap();
        assert_eq!(
            open(&other, b"custodian alice", &b),
            Err(Error::DecryptFailed)
        );
        assert_eq!(open(&r, b"custodian bob", &b), Err(Error::DecryptFailed));
        assert_eq!(open(&r, b"", &b), Err(Error::DecryptFailed));
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let r = X25519Secret::generate().unwrap();
        let b = seal_to(&r.public_key(), b"aad", b"0123456789abcdef").unwrap();
        for pos in 0..b.len() {
            for bit in 0..8 {
                let mut bad = b.clone();
                bad[pos] ^= 1 << bit;
                let err = open(&r, b"aad", &bad).unwrap_err();
                if pos == 0 {
                    assert!(matches!(err, Error::Unsupported { .. }), "bit {bit}");
                } else {
                    assert_eq!(err, Error::DecryptFailed, "pos {pos} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn truncated_or_extended_boxes_fail() {
        let r = X25519Secret::generate().unwrap();
        let b = seal_to(&r.public_key(), b"", b"abc").unwrap();
        for len in 0..b.len() {
            assert_eq!(open(&r, b"", &b[..len]), Err(Error::DecryptFailed), "{len}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(open(&r, b"", &longer), Err(Error::DecryptFailed));
        // The shortest well-formed box carries an empty plaintext.
        let empty = seal_to(&r.public_key(), b"", b"").unwrap();
        assert_eq!(empty.len(), OVERHEAD);
        assert!(open(&r, b"", &empty).unwrap().is_empty());
    }

    #[test]
    fn small_order_ephemeral_keys_are_rejected_without_panic() {
        let r = X25519Secret::generate().unwrap();
        let genuine = seal_to(&r.public_key(), b"", b"payload").unwrap();
        for point in small_order_points() {
            // The X25519 step itself refuses the point (not just the GCM tag check after it).
            assert!(r.agree(&point).is_err(), "{point:02x?}");
            let mut forged = genuine.clone();
            forged[1..33].copy_from_slice(&point);
            assert_eq!(open(&r, b"", &forged), Err(Error::DecryptFailed));
            // The all-zero key the forger would derive from Z = 0 does not help either.
            let zero_key = derive_key(&[0u8; 32], &point, &r.public_key()).unwrap();
            let mut body = b"payload".to_vec();
            let tag = zero_key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
                    Aad::empty(),
                    &mut body,
                )
                .unwrap();
            let forged = [
                &[VERSION_V1][..],
                &point,
                &[0u8; NONCE_LEN],
                &body,
                tag.as_ref(),
            ]
            .concat();
            assert_eq!(open(&r, b"", &forged), Err(Error::DecryptFailed));
        }
    }

    #[test]
    fn small_order_recipient_is_rejected() {
        for point in small_order_points() {
            assert!(matches!(
                seal_to(&point, b"", b"x"),
                Err(Error::InvalidKey { .. })
            ));
        }
    }

    #[test]
    fn secret_key_basics() {
        let a = X25519Secret::generate().unwrap();
        let a2 = X25519Secret::from_bytes(&a.to_bytes()[..]).unwrap();
        assert_eq!(a.public_key(), a2.public_key());
        assert_eq!(*a.to_bytes(), *a2.to_bytes());
        let b = X25519Secret::generate().unwrap();
        assert_ne!(*a.to_bytes(), *b.to_bytes());
        assert_ne!(a.public_key(), b.public_key());
        // A box sealed to a re-imported key's public key opens with the original.
        let boxed = seal_to(&a2.public_key(), b"", b"x").unwrap();
        assert_eq!(&open(&a, b"", &boxed).unwrap()[..], b"x");
        for len in [0, 31, 33, 64] {
            assert!(matches!(
                X25519Secret::from_bytes(&vec![1u8; len]),
                Err(Error::InvalidKey { .. })
            ));
        }
        let dbg = format!("{a:?}");
        assert!(dbg.contains("redacted"));
        let secret_hex: String = a.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&secret_hex));
        let public_hex: String = a.public_key().iter().map(|b| format!("{b:02x}")).collect();
        assert!(dbg.contains(&public_hex));
    }
}
