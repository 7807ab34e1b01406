//! The cryptographic operations over opened keys, in their single-part form. Multi-part calls
//! buffer their input in the sealed state blob and end here too.

use keyfort_crypto::ec::{self, SignatureFormat};
use keyfort_crypto::{aes, digest, ed25519, hmac, pq, rsa};
use zeroize::Zeroizing;

use crate::blob::{Key, Material, Private, Public};
use crate::ck::{attr, obj, rv};
use crate::error::{Result, ck};
use crate::mech::Mech;

fn wrong_key() -> crate::error::Error {
    ck(
        rv::CKR_KEY_TYPE_INCONSISTENT,
        "the key does not fit the mechanism",
    )
}

fn aes_key(key: &Key) -> Result<&[u8]> {
    if key.key_type() != obj::CKK_AES {
        return Err(wrong_key());
    }
    key.secret()
}

/// A digest (DigestSingle, Digest, DigestFinal).
pub fn digest(m: &Mech, data: &[u8]) -> Result<Vec<u8>> {
    match m {
        Mech::Digest(a) => Ok(digest::digest(*a, data).as_bytes().to_vec()),
        _ => Err(ck(rv::CKR_MECHANISM_INVALID, "not a digest mechanism")),
    }
}

/// Encryption without the usage check (shared by Encrypt* and WrapKey).
pub fn encrypt_raw(key: &Key, m: &Mech, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match m {
        Mech::AesEcb => {
            block_multiple(data)?;
            aes::ecb_encrypt(aes_key(key)?, data)?
        }
        Mech::AesCbc { iv, pad: false } => {
            block_multiple(data)?;
            aes::cbc_encrypt(aes_key(key)?, iv, data)?
        }
        Mech::AesCbc { iv, pad: true } => aes::cbc_pad_encrypt(aes_key(key)?, iv, data)?,
        Mech::AesCtr { .. } | Mech::AesCtrBits { .. } => {
            let counter = ctr_fits(m, data, rv::CKR_DATA_LEN_RANGE)?;
            aes::ctr_apply(aes_key(key)?, &counter, data)?.to_vec()
        }
        Mech::AesGcm { iv } => aes::gcm_encrypt(aes_key(key)?, iv, &[], data)?,
        Mech::AesKeyWrap { pad: false } => aes::key_wrap(aes_key(key)?, data)?,
        Mech::AesKeyWrap { pad: true } => aes::key_wrap_pad(aes_key(key)?, data)?,
        Mech::RsaPkcs | Mech::RsaOaep { .. } => {
            let Material::Public(Public::Rsa(pk), _) = &key.material else {
                return Err(wrong_key());
            };
            match m {
                Mech::RsaOaep { hash, label } => pk.encrypt_oaep(*hash, data, label.as_deref())?,
                _ => pk
                    .encrypt_pkcs1v15(data)
                    .map_err(|_| ck(rv::CKR_DATA_LEN_RANGE, "too long for the modulus"))?,
            }
        }
        _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "not an encryption mechanism")),
    })
}

/// Decryption without the usage check (shared by Decrypt* and UnwrapKey).
pub fn decrypt_raw(key: &Key, m: &Mech, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let bad_len = || {
        ck(
            rv::CKR_ENCRYPTED_DATA_LEN_RANGE,
            "not a whole number of blocks",
        )
    };
    Ok(match m {
        Mech::AesEcb => {
            block_multiple(data).map_err(|_| bad_len())?;
            aes::ecb_decrypt(aes_key(key)?, data)?
        }
        Mech::AesCbc { iv, pad: false } => {
            block_multiple(data).map_err(|_| bad_len())?;
            aes::cbc_decrypt(aes_key(key)?, iv, data)?
        }
        Mech::AesCbc { iv, pad: true } => {
            if data.is_empty() {
                return Err(bad_len());
            }
            block_multiple(data).map_err(|_| bad_len())?;
            aes::cbc_pad_decrypt(aes_key(key)?, iv, data)?
        }
        Mech::AesCtr { .. } | Mech::AesCtrBits { .. } => {
            let counter = ctr_fits(m, data, rv::CKR_ENCRYPTED_DATA_LEN_RANGE)?;
            aes::ctr_apply(aes_key(key)?, &counter, data)?
        }
        Mech::AesGcm { iv } => aes::gcm_decrypt(aes_key(key)?, iv, &[], data)?,
        Mech::AesKeyWrap { pad: false } => aes::key_unwrap(aes_key(key)?, data)?,
        Mech::AesKeyWrap { pad: true } => aes::key_unwrap_pad(aes_key(key)?, data)?,
        Mech::RsaPkcs | Mech::RsaOaep { .. } => {
            let Material::Private(p) = &key.material else {
                return Err(wrong_key());
            };
            let Private::Rsa(k) = p.as_ref() else {
                return Err(wrong_key());
            };
            if data.len() != k.modulus_len() {
                return Err(ck(
                    rv::CKR_ENCRYPTED_DATA_LEN_RANGE,
                    "not the modulus length",
                ));
            }
            match m {
                Mech::RsaOaep { hash, label } => k.decrypt_oaep(*hash, data, label.as_deref())?,
                _ => k.decrypt_pkcs1v15(data)?,
            }
        }
        _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "not a decryption mechanism")),
    })
}

/// The counter block of AES-CTR mechanism `m`, refusing data whose keystream would wrap the
/// counter into the nonce (and so repeat the keystream of another counter block).
fn ctr_fits(m: &Mech, data: &[u8], code: u64) -> Result<[u8; 16]> {
    let (counter, bits) = m
        .counter()
        .ok_or(ck(rv::CKR_MECHANISM_INVALID, "not AES-CTR"))?;
    let blocks = data.len().div_ceil(aes::BLOCK_LEN) as u128;
    if blocks > crate::mech::ctr_room(&counter, bits) {
        return Err(ck(code, "the data would wrap the AES-CTR counter"));
    }
    Ok(counter)
}

fn block_multiple(data: &[u8]) -> Result<()> {
    if data.len().is_multiple_of(aes::BLOCK_LEN) {
        Ok(())
    } else {
        Err(ck(
            rv::CKR_DATA_LEN_RANGE,
            "not a whole number of AES blocks",
        ))
    }
}

/// Encrypt with a key whose `CKA_ENCRYPT` is true.
pub fn encrypt(key: &Key, m: &Mech, data: &[u8]) -> Result<Vec<u8>> {
    key.require(attr::ENCRYPT)?;
    encrypt_raw(key, m, data)
}

/// Decrypt with a key whose `CKA_DECRYPT` is true.
pub fn decrypt(key: &Key, m: &Mech, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    key.require(attr::DECRYPT)?;
    decrypt_raw(key, m, data)
}

fn hmac_key(key: &Key) -> Result<&[u8]> {
    match key.key_type() {
        obj::CKK_AES | obj::CKK_GENERIC_SECRET => key.secret(),
        _ => Err(wrong_key()),
    }
}

/// Sign with a key whose `CKA_SIGN` is true. ECDSA signatures are raw r ‖ s.
pub fn sign(key: &Key, m: &Mech, data: &[u8]) -> Result<Vec<u8>> {
    key.require(attr::SIGN)?;
    if let Mech::Hmac(a) = m {
        return Ok(hmac::sign(*a, hmac_key(key)?, data));
    }
    let Material::Private(p) = &key.material else {
        return Err(wrong_key());
    };
    Ok(match (m, p.as_ref()) {
        (Mech::RsaPkcs, Private::Rsa(k)) => k
            .sign_pkcs1v15_raw(data)
            .map_err(|_| ck(rv::CKR_DATA_LEN_RANGE, "too long for the modulus"))?,
        (Mech::RsaPkcsHash(h), Private::Rsa(k)) => {
            k.sign(rsa::SignatureScheme::Pkcs1v15(*h), data)?
        }
        (Mech::RsaPss { hash }, Private::Rsa(k)) => k
            .sign_digest(rsa::SignatureScheme::Pss(*hash), data)
            .map_err(|_| {
                ck(
                    rv::CKR_DATA_LEN_RANGE,
                    "the data must be a digest of the PSS hash",
                )
            })?,
        (Mech::RsaPssHash(h), Private::Rsa(k)) => k.sign(rsa::SignatureScheme::Pss(*h), data)?,
        (Mech::Ecdsa, Private::Ec(k)) => k.sign_digest(data, SignatureFormat::Fixed)?,
        (Mech::EcdsaHash(h), Private::Ec(k)) => k.sign(*h, SignatureFormat::Fixed, data)?,
        (Mech::EdDsa, Private::Ed25519(k)) => k.sign(data).to_vec(),
        (Mech::MlDsa, Private::MlDsa(k)) => k.sign(data)?,
        (
            Mech::RsaPkcs
            | Mech::RsaPkcsHash(_)
            | Mech::RsaPss { .. }
            | Mech::RsaPssHash(_)
            | Mech::Ecdsa
            | Mech::EcdsaHash(_)
            | Mech::EdDsa
            | Mech::MlDsa,
            _,
        ) => return Err(wrong_key()),
        _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "not a signature mechanism")),
    })
}

/// Verify with a key whose `CKA_VERIFY` is true; a bad signature is `CKR_SIGNATURE_INVALID`.
pub fn verify(key: &Key, m: &Mech, data: &[u8], signature: &[u8]) -> Result<()> {
    key.require(attr::VERIFY)?;
    let invalid = || ck(rv::CKR_SIGNATURE_INVALID, "signature invalid");
    if let Mech::Hmac(a) = m {
        return hmac::verify(*a, hmac_key(key)?, data, signature).map_err(|_| invalid());
    }
    let Material::Public(p, _) = &key.material else {
        return Err(wrong_key());
    };
    let checked = match (m, p) {
        (Mech::RsaPkcs, Public::Rsa(k)) => k.verify_pkcs1v15_raw(data, signature),
        (Mech::RsaPkcsHash(h), Public::Rsa(k)) => {
            k.verify(rsa::SignatureScheme::Pkcs1v15(*h), data, signature)
        }
        (Mech::RsaPss { hash }, Public::Rsa(k)) => {
            k.verify_digest(rsa::SignatureScheme::Pss(*hash), data, signature)
        }
        (Mech::RsaPssHash(h), Public::Rsa(k)) => {
            k.verify(rsa::SignatureScheme::Pss(*h), data, signature)
        }
        (Mech::Ecdsa, Public::Ec(c, point)) => {
            ec::verify_digest(*c, point, data, SignatureFormat::Fixed, signature)
        }
        (Mech::EcdsaHash(h), Public::Ec(c, point)) => {
            ec::verify(*c, point, *h, SignatureFormat::Fixed, data, signature)
        }
        (Mech::EdDsa, Public::Ed25519(k)) => ed25519::verify(k, data, signature),
        (Mech::MlDsa, Public::MlDsa(set, k)) => pq::ml_dsa_verify(*set, k, data, signature),
        (
            Mech::RsaPkcs
            | Mech::RsaPkcsHash(_)
            | Mech::RsaPss { .. }
            | Mech::RsaPssHash(_)
            | Mech::Ecdsa
            | Mech::EcdsaHash(_)
            | Mech::EdDsa
            | Mech::MlDsa,
            _,
        ) => return Err(wrong_key()),
        _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "not a signature mechanism")),
    };
    checked.map_err(|_| invalid())
}

/// The 3-byte key check value of an AES key: AES-ECB(key, 0¹⁶)[..3] (empty for other keys).
pub fn check_value(key_type: i64, value: &[u8]) -> Result<Vec<u8>> {
    if key_type != obj::CKK_AES {
        return Ok(Vec::new());
    }
    let block = aes::ecb_encrypt(value, &[0u8; aes::BLOCK_LEN])?;
    Ok(block[..3].to_vec())
}
