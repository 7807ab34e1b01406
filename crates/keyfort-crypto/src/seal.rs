//! Instance master keys and sealing (DESIGN.md §2).
//!
//! Everything secret that reaches storage is sealed: AES-256-GCM (NIST SP 800-38D) under a key
//! derived from the instance master key (MK), with the blob header, the instance id, the object
//! id and the security-relevant attributes as associated data. A blob therefore cannot be moved
//! to another object or instance, be replayed under another MK version, or have its attributes
//! edited, without unsealing failing.
//!
//! # Key derivation
//!
//! The AES-256-GCM key is HKDF-SHA-256 (RFC 5869) of the MK with salt `"keyfort-seal-v1"` and
//! info `"aes-256-gcm"`, derived once when the [`MasterKey`] is built.
//!
//! # Sealed blob format, version 1
//!
//! | offset | length | field |
//! |---:|---:|---|
//! | 0 | 3 | magic `"KFS"` (`4B 46 53`) |
//! | 3 | 1 | format version `0x01` |
//! | 4 | 4 | MK version, u32 big-endian |
//! | 8 | 12 | random nonce (GCM IV, NIST SP 800-38D §8.2.2) |
//! | 20 | n | AES-256-GCM ciphertext (n = plaintext length) |
//! | 20 + n | 16 | GCM tag |
//!
//! The associated data is:
//!
//! | field | encoding |
//! |---|---|
//! | header | the 8 bytes at offset 0–7 above |
//! | instance id | u32 big-endian byte length, then the UTF-8 bytes |
//! | object id | u32 big-endian byte length, then the UTF-8 bytes |
//! | attributes | u32 big-endian byte length, then the bytes |
//!
//! Random 96-bit nonces keep the collision probability under 2⁻³² for up to 2³² seals per MK
//! (NIST SP 800-38D §8.3); rotate the MK well before that.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroizing;

use crate::{Error, Result, UnsealError};

/// Length of a master key: 256 bits.
pub const MASTER_KEY_LEN: usize = 32;

/// The magic at the start of every sealed blob.
pub const MAGIC: &[u8; 3] = b"KFS";
/// The sealed blob format version this module writes.
pub const FORMAT_V1: u8 = 0x01;
/// Length of the blob header (magic, format version, MK version).
pub const HEADER_LEN: usize = 8;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

const HKDF_SALT: &[u8] = b"keyfort-seal-v1";
const HKDF_INFO: &[u8] = b"aes-256-gcm";
const CHECK_VALUE_LABEL: &[u8] = b"keyfort mk check value v1";

/// A 256-bit instance master key with its version. Zeroized on drop, redacting `Debug`, no `Clone`.
pub struct MasterKey {
    version: u32,
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    /// The sealing key, derived once (AWS-LC wipes it on free).
    aead: LessSafeKey,
}

impl MasterKey {
    /// Generates a fresh random master key.
    pub fn generate(version: u32) -> Result<MasterKey> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        crate::rng::fill(&mut bytes[..])?;
        Self::build(version, bytes)
    }

    /// Builds a master key from its 32 raw bytes (custodian shares combined, dev key file).
    pub fn from_bytes(version: u32, bytes: &[u8]) -> Result<MasterKey> {
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        if bytes.len() != MASTER_KEY_LEN {
            return Err(Error::InvalidKey {
                what: "master key must be 32 bytes",
            });
        }
        key.copy_from_slice(bytes);
        Self::build(version, key)
    }

    fn build(version: u32, bytes: Zeroizing<[u8; MASTER_KEY_LEN]>) -> Result<MasterKey> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&bytes[..]);
        let info = [HKDF_INFO];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| Error::Internal {
                what: "seal key derivation",
            })?;
        let aead = LessSafeKey::new(UnboundKey::from(okm));
        Ok(MasterKey {
            version,
            bytes,
            aead,
        })
    }

    /// The master key's version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Key check value: the first 8 bytes of HMAC-SHA-256(MK, `"keyfort mk check value v1"`).
    ///
    /// Lets a server recognise a loaded MK without storing it.
    #[must_use]
    pub fn check_value(&self) -> [u8; 8] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.bytes[..]);
        let tag = hmac::sign(&key, CHECK_VALUE_LABEL);
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]); // An HMAC-SHA-256 tag is 32 bytes.
        out
    }

    /// The raw bytes, for the dev key file and for splitting into custodian shares.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a sealed blob is bound to (its AEAD associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    /// The instance (tenant) the object belongs to.
    pub instance_id: &'a str,
    /// The object the blob belongs to.
    pub object_id: &'a str,
    /// The security-relevant attributes, canonically encoded by the caller.
    pub attributes: &'a [u8],
}

/// Seals `plaintext` under `mk`, bound to `ctx`. Returns the blob (format v1, see module docs).
pub fn seal(mk: &MasterKey, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
    let header = header(mk.version);
    let mut nonce = [0u8; NONCE_LEN];
    crate::rng::fill(&mut nonce)?;
    let aad = associated_data(&header, ctx)?;

    let mut blob = Vec::with_capacity(OVERHEAD + plaintext.len());
    blob.extend_from_slice(&header);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(plaintext);
    let tag = mk
        .aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut blob[HEADER_LEN + NONCE_LEN..],
        )
        .map_err(|_| Error::Internal { what: "seal" })?;
    blob.extend_from_slice(tag.as_ref());
    Ok(blob)
}

/// Unseals a blob made by [`seal`] with the same master key and context.
pub fn unseal(mk: &MasterKey, ctx: &SealContext<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let blob_version = sealed_mk_version(blob)?;
    if blob_version != mk.version {
        return Err(UnsealError::MasterKeyVersion {
            blob: blob_version,
            key: mk.version,
        }
        .into());
    }
    if blob.len() < OVERHEAD {
        return Err(UnsealError::Truncated { len: blob.len() }.into());
    }
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Internal {
        what: "unseal nonce",
    })?;
    let aad = associated_data(header, ctx)?;

    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = mk
        .aead
        .open_in_place(nonce, Aad::from(&aad), &mut buf[..])
        .map_err(|_| UnsealError::AuthFailed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The MK version recorded in a blob's header, to pick the right MK during rotation.
///
/// Errors if the header is truncated, has the wrong magic or an unknown format version.
pub fn sealed_mk_version(blob: &[u8]) -> Result<u32> {
    let Some(header) = blob.get(..HEADER_LEN) else {
        return Err(UnsealError::Truncated { len: blob.len() }.into());
    };
    if &header[..3] != MAGIC {
        return Err(UnsealError::BadMagic.into());
    }
    if header[3] != FORMAT_V1 {
        return Err(UnsealError::UnknownFormat { version: header[3] }.into());
    }
    Ok(u32::from_be_bytes([
        header[4], header[5], header[6], header[7],
    ]))
}

fn header(mk_version: u32) -> [u8; HEADER_LEN] {
    let v = mk_version.to_be_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], FORMAT_V1, v[0], v[1], v[2], v[3],
    ]
}

/// header ‖ len ‖ instance id ‖ len ‖ object id ‖ len ‖ attributes, lengths u32 big-endian.
fn associated_data(header: &[u8], ctx: &SealContext<'_>) -> Result<Vec<u8>> {
    let fields: [&[u8]; 3] = [
        ctx.instance_id.as_bytes(),
        ctx.object_id.as_bytes(),
        ctx.attributes,
    ];
    let mut aad =
        Vec::with_capacity(header.len() + 12 + fields.iter().map(|f| f.len()).sum::<usize>());
    aad.extend_from_slice(header);
    for field in fields {
        let len = u32::try_from(field.len()).map_err(|_| Error::InvalidInput {
            what: "seal context field longer than 4 GiB",
        })?;
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field);
    }
    Ok(aad)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CTX: SealContext<'static> = SealContext {
        instance_id: "inst-1",
        object_id: "key-42",
        attributes: b"extractable=false",
    };

    fn mk(version: u32) -> MasterKey {
        MasterKey::from_bytes(version, &[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let mk = mk(3);
        let blob = seal(&mk, &CTX, b"secret key bytes").unwrap();
        assert_eq!(blob.len(), OVERHEAD + 16);
        assert_eq!(&blob[..4], b"KFS\x01");
        assert_eq!(&blob[4..8], &3u32.to_be_bytes());
        assert_eq!(sealed_mk_version(&blob).unwrap(), 3);
        assert_eq!(&unseal(&mk, &CTX, &blob).unwrap()[..], b"secret key bytes");
        let empty = seal(&mk, &CTX, b"").unwrap();
        assert!(unseal(&mk, &CTX, &empty).unwrap().is_empty());
    }

    #[test]
    fn nonces_are_fresh() {
        let mk = mk(1);
        let a = seal(&mk, &CTX, b"x").unwrap();
        let b = seal(&mk, &CTX, b"x").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn context_changes_fail() {
        let mk = mk(1);
        let blob = seal(&mk, &CTX, b"payload").unwrap();
        let auth = Err(Error::Unseal(UnsealError::AuthFailed));
        let other_instance = SealContext {
            instance_id: "inst-2",
            ..CTX
        };
        assert_eq!(unseal(&mk, &other_instance, &blob), auth);
        let other_object = SealContext {
            object_id: "key-43",
            ..CTX
        };
        assert_eq!(unseal(&mk, &other_object, &blob), auth);
        let other_attrs = SealContext {
            attributes: b"extractable=true",
            ..CTX
        };
        assert_eq!(unseal(&mk, &other_attrs, &blob), auth);
        // Moving bytes between length-prefixed fields must not collide.
        let shifted = SealContext {
            instance_id: "inst-1k",
            object_id: "ey-42",
            ..CTX
        };
        assert_eq!(unseal(&mk, &shifted, &blob), auth);
    }

    #[test]
    fn other_master_key_or_version_fails() {
        let blob = seal(&mk(1), &CTX, b"payload").unwrap();
        let other = MasterKey::from_bytes(1, &[8u8; 32]).unwrap();
        assert_eq!(
            unseal(&other, &CTX, &blob),
            Err(Error::Unseal(UnsealError::AuthFailed))
        );
        assert_eq!(
            unseal(&mk(2), &CTX, &blob),
            Err(Error::Unseal(UnsealError::MasterKeyVersion {
                blob: 1,
                key: 2
            }))
        );
        // Rewriting the header's version to match another key version breaks the AAD.
        let mut moved = blob.clone();
        moved[4..8].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(
            unseal(&mk(2), &CTX, &moved),
            Err(Error::Unseal(UnsealError::AuthFailed))
        );
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let mk = mk(5);
        let blob = seal(&mk, &CTX, b"0123456789abcdef").unwrap();
        for pos in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[pos] ^= 1 << bit;
                let err = unseal(&mk, &CTX, &bad).unwrap_err();
                let expected = match pos {
                    0..=2 => UnsealError::BadMagic,
                    3 => UnsealError::UnknownFormat {
                        version: FORMAT_V1 ^ (1 << bit),
                    },
                    4..=7 => UnsealError::MasterKeyVersion {
                        blob: 5 ^ (1 << (8 * (7 - pos) + bit)),
                        key: 5,
                    },
                    _ => UnsealError::AuthFailed,
                };
                assert_eq!(err, Error::Unseal(expected), "pos {pos} bit {bit}");
            }
        }
    }

    #[test]
    fn malformed_blobs_are_typed_errors() {
        let mk = mk(1);
        let blob = seal(&mk, &CTX, b"abc").unwrap();
        for len in 0..OVERHEAD {
            let err = unseal(&mk, &CTX, &blob[..len]).unwrap_err();
            assert_eq!(err, Error::Unseal(UnsealError::Truncated { len }));
        }
        // Truncating the tag of a valid blob fails authentication.
        assert_eq!(
            unseal(&mk, &CTX, &blob[..blob.len() - 1]),
            Err(Error::Unseal(UnsealError::AuthFailed))
        );
        let mut appended = blob.clone();
        appended.push(0);
        assert_eq!(
            unseal(&mk, &CTX, &appended),
            Err(Error::Unseal(UnsealError::AuthFailed))
        );
        assert_eq!(
            sealed_mk_version(b"KFX\x01\0\0\0\x01"),
            Err(Error::Unseal(UnsealError::BadMagic))
        );
        assert_eq!(
            sealed_mk_version(b"KFS\x02\0\0\0\x01"),
            Err(Error::Unseal(UnsealError::UnknownFormat { version: 2 }))
        );
        assert_eq!(
            sealed_mk_version(b"KFS\x01"),
            Err(Error::Unseal(UnsealError::Truncated { len: 4 }))
        );
    }

    #[test]
    fn master_key_basics() {
        assert!(matches!(
            MasterKey::from_bytes(1, &[0u8; 31]),
            Err(Error::InvalidKey { .. })
        ));
        let a = MasterKey::generate(9).unwrap();
        let b = MasterKey::generate(9).unwrap();
        assert_eq!(a.version(), 9);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.check_value(), b.check_value());
        let a2 = MasterKey::from_bytes(10, a.expose_secret()).unwrap();
        assert_eq!(a.check_value(), a2.check_value());
        let dbg = format!("{a:?}");
        assert!(dbg.contains("redacted") && dbg.contains('9'));
    }

    #[test]
    fn check_value_is_hmac_of_label() {
        // Independent computation through the crate's own HMAC wrapper.
        let mk = mk(1);
        let tag = crate::hmac::sign(
            crate::hmac::Algorithm::Sha256,
            &[7u8; 32],
            b"keyfort mk check value v1",
        );
        assert_eq!(&mk.check_value()[..], &tag[..8]);
    }
}
