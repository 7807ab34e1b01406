//! AES (FIPS 197) modes: GCM (NIST SP 800-38D), CBC, CTR and ECB (NIST SP 800-38A), CBC with
//! PKCS #7 padding (RFC 5652 §6.3), key wrap KW (RFC 3394) and KWP (RFC 5649).
//!
//! Keys are passed as raw bytes of 16, 24 or 32 bytes (AES-128/192/256). Outputs that may hold
//! plaintext or key material are returned in [`Zeroizing`] buffers.
//!
//! Limits of this build: GCM takes 96-bit IVs and produces 128-bit tags only; CTR increments the
//! whole 128-bit counter block (PKCS #11 `ulCounterBits` = 128).
//!
//! KW and KWP take AES-128, AES-192 and AES-256 key-encryption keys. `aws-lc-rs` offers only
//! AES-128 and AES-256 there, so those two run through it (inside the FIPS module in a `fips`
//! build) and AES-192 runs through the same AWS-LC implementation called via `aws-lc-sys`
//! (`AES_wrap_key` and friends), which a `fips` build links outside the module. The unit tests
//! check the two paths agree for AES-128 and AES-256.
//!
//! CBC-PAD decryption reports bad padding as [`Error::DecryptFailed`]; like every unauthenticated
//! padded mode it can act as a padding oracle if its errors reach an attacker — prefer GCM or KWP.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::key_wrap::{self, KeyEncryptionKey, KeyWrap as _, KeyWrapPadded as _};
use zeroize::Zeroizing;

use crate::{Error, Result, raw};

/// The AES block length in bytes.
pub const BLOCK_LEN: usize = 16;
/// The GCM IV length this module accepts (NIST SP 800-38D §8.2 recommends 96 bits).
pub const GCM_IV_LEN: usize = 12;
/// The GCM tag length.
pub const GCM_TAG_LEN: usize = 16;

/// AES-GCM encryption with a caller-chosen 96-bit IV: returns ciphertext ‖ tag.
///
/// The caller must never reuse an IV with the same key (NIST SP 800-38D §8); prefer
/// [`gcm_encrypt_random_iv`].
pub fn gcm_encrypt(key: &[u8], iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let key = gcm_key(key)?;
    let nonce = gcm_nonce(iv)?;
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out)
        .map_err(|_| Error::InvalidInput {
            what: "AES-GCM plaintext too long",
        })?;
    Ok(out)
}

/// AES-GCM encryption with a fresh random 96-bit IV (NIST SP 800-38D §8.2.2): returns
/// `(iv, ciphertext ‖ tag)`.
pub fn gcm_encrypt_random_iv(
    key: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; GCM_IV_LEN], Vec<u8>)> {
    let mut iv = [0u8; GCM_IV_LEN];
    crate::rng::fill(&mut iv)?;
    let ct = gcm_encrypt(key, &iv, aad, plaintext)?;
    Ok((iv, ct))
}

/// AES-GCM authenticated decryption of ciphertext ‖ tag; [`Error::DecryptFailed`] if the tag
/// does not verify.
pub fn gcm_decrypt(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let key = gcm_key(key)?;
    let nonce = gcm_nonce(iv)?;
    if ciphertext_and_tag.len() < GCM_TAG_LEN {
        return Err(Error::DecryptFailed);
    }
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf[..])
        .map_err(|_| Error::DecryptFailed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn gcm_key(key: &[u8]) -> Result<LessSafeKey> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(bad_key_len()),
    };
    let key = UnboundKey::new(alg, key).map_err(|_| bad_key_len())?;
    Ok(LessSafeKey::new(key))
}

fn gcm_nonce(iv: &[u8]) -> Result<Nonce> {
    if iv.len() != GCM_IV_LEN {
        return Err(Error::Unsupported {
            what: "AES-GCM IV must be 12 bytes",
        });
    }
    Nonce::try_assume_unique_for_key(iv).map_err(|_| Error::Unsupported {
        what: "AES-GCM IV must be 12 bytes",
    })
}

fn bad_key_len() -> Error {
    Error::InvalidKey {
        what: "AES key must be 16, 24 or 32 bytes",
    }
}

fn cipher_key(key: &[u8]) -> Result<UnboundCipherKey> {
    let alg = match key.len() {
        16 => &cipher::AES_128,
        24 => &cipher::AES_192,
        32 => &cipher::AES_256,
        _ => return Err(bad_key_len()),
    };
    UnboundCipherKey::new(alg, key).map_err(|_| bad_key_len())
}

fn iv16(iv: &[u8]) -> Result<FixedLength<BLOCK_LEN>> {
    FixedLength::<BLOCK_LEN>::try_from(iv).map_err(|_| Error::InvalidInput {
        what: "AES IV must be 16 bytes",
    })
}

fn check_blocks(data: &[u8]) -> Result<()> {
    if !data.len().is_multiple_of(BLOCK_LEN) {
        return Err(Error::InvalidInput {
            what: "data length must be a multiple of the AES block size",
        });
    }
    Ok(())
}

fn op_failed() -> Error {
    Error::Internal { what: "AES" }
}

/// AES-CBC encryption without padding (NIST SP 800-38A §6.2); `data` must be block-aligned.
pub fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    check_blocks(data)?;
    let key = EncryptingKey::cbc(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = data.to_vec();
    key.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv16(iv)?))
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// AES-CBC decryption without padding (NIST SP 800-38A §6.2); `data` must be block-aligned.
pub fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    check_blocks(data)?;
    let key = DecryptingKey::cbc(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = Zeroizing::new(data.to_vec());
    key.decrypt(&mut out, DecryptionContext::Iv128(iv16(iv)?))
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// AES-CBC with PKCS #7 padding (RFC 5652 §6.3; PKCS #11 `CKM_AES_CBC_PAD`) encryption.
pub fn cbc_pad_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = data.to_vec();
    key.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv16(iv)?))
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// AES-CBC with PKCS #7 padding decryption; bad padding is [`Error::DecryptFailed`].
pub fn cbc_pad_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if data.is_empty() {
        return Err(Error::DecryptFailed);
    }
    check_blocks(data)?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = Zeroizing::new(data.to_vec());
    let len = key
        .decrypt(&mut out, DecryptionContext::Iv128(iv16(iv)?))
        .map_err(|_| Error::DecryptFailed)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// AES-CTR (NIST SP 800-38A §6.5) with `counter_block` as the initial 128-bit counter,
/// incremented as a 128-bit big-endian integer. Encryption and decryption are the same operation.
pub fn ctr_apply(key: &[u8], counter_block: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let key = EncryptingKey::ctr(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = Zeroizing::new(data.to_vec());
    key.less_safe_encrypt(&mut out, EncryptionContext::Iv128(iv16(counter_block)?))
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// AES-ECB encryption (NIST SP 800-38A §6.1); `data` must be block-aligned. Only for
/// interoperability (PKCS #11 `CKM_AES_ECB`, key check values).
pub fn ecb_encrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    check_blocks(data)?;
    let key = EncryptingKey::ecb(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = data.to_vec();
    key.less_safe_encrypt(&mut out, EncryptionContext::None)
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// AES-ECB decryption (NIST SP 800-38A §6.1); `data` must be block-aligned.
pub fn ecb_decrypt(key: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    check_blocks(data)?;
    let key = DecryptingKey::ecb(cipher_key(key)?).map_err(|_| op_failed())?;
    let mut out = Zeroizing::new(data.to_vec());
    key.decrypt(&mut out, DecryptionContext::None)
        .map_err(|_| op_failed())?;
    Ok(out)
}

/// The `aws-lc-rs` key-encryption key for an AES-128 or AES-256 KEK, or `None` for AES-192,
/// which goes through [`crate::raw`] instead.
fn lc_kek(key: &[u8]) -> Result<Option<KeyEncryptionKey<key_wrap::AesBlockCipher>>> {
    let cipher = match key.len() {
        16 => &key_wrap::AES_128,
        32 => &key_wrap::AES_256,
        24 => return Ok(None),
        _ => return Err(bad_key_len()),
    };
    KeyEncryptionKey::new(cipher, key)
        .map(Some)
        .map_err(|_| bad_key_len())
}

/// AES Key Wrap (RFC 3394 §2.2.1, NIST SP 800-38F KW) of `key_data`, which must be a multiple
/// of 8 bytes and at least 16 bytes, under a 128-, 192- or 256-bit KEK. The output is 8 bytes
/// longer.
pub fn key_wrap(kek_bytes: &[u8], key_data: &[u8]) -> Result<Vec<u8>> {
    if key_data.len() < 16 || !key_data.len().is_multiple_of(8) {
        return Err(Error::InvalidInput {
            what: "AES-KW input must be a multiple of 8 bytes, at least 16",
        });
    }
    let Some(kek) = lc_kek(kek_bytes)? else {
        return raw::aes_key_wrap(kek_bytes, key_data);
    };
    let mut out = vec![0u8; key_data.len() + 8];
    let len = kek.wrap(key_data, &mut out).map_err(|_| op_failed())?.len();
    out.truncate(len);
    Ok(out)
}

/// AES Key Unwrap (RFC 3394 §2.2.2); an integrity-check failure is [`Error::DecryptFailed`].
pub fn key_unwrap(kek_bytes: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kek = lc_kek(kek_bytes)?;
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::DecryptFailed);
    }
    let Some(kek) = kek else {
        return raw::aes_key_unwrap(kek_bytes, wrapped);
    };
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek
        .unwrap(wrapped, &mut out)
        .map_err(|_| Error::DecryptFailed)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// AES Key Wrap with Padding (RFC 5649 §4.1, NIST SP 800-38F KWP) of 1 or more bytes under a
/// 128-, 192- or 256-bit KEK. The output is the input rounded up to 8 bytes, plus 8.
pub fn key_wrap_pad(kek_bytes: &[u8], key_data: &[u8]) -> Result<Vec<u8>> {
    if key_data.is_empty() {
        return Err(Error::InvalidInput {
            what: "AES-KWP input must not be empty",
        });
    }
    let Some(kek) = lc_kek(kek_bytes)? else {
        return raw::aes_key_wrap_pad(kek_bytes, key_data);
    };
    let mut out = vec![0u8; key_data.len().div_ceil(8) * 8 + 8];
    let len = kek
        .wrap_with_padding(key_data, &mut out)
        .map_err(|_| op_failed())?
        .len();
    out.truncate(len);
    Ok(out)
}

/// AES Key Unwrap with Padding (RFC 5649 §4.2); failures are [`Error::DecryptFailed`].
pub fn key_unwrap_pad(kek_bytes: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kek = lc_kek(kek_bytes)?;
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::DecryptFailed);
    }
    let Some(kek) = kek else {
        return raw::aes_key_unwrap_pad(kek_bytes, wrapped);
    };
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| Error::DecryptFailed)?
        .len();
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const K: [u8; 32] = [0x11; 32];

    #[test]
    fn gcm_round_trip_and_tamper() {
        let (iv, ct) = gcm_encrypt_random_iv(&K, b"aad", b"hello").unwrap();
        assert_eq!(ct.len(), 5 + GCM_TAG_LEN);
        assert_eq!(&gcm_decrypt(&K, &iv, b"aad", &ct).unwrap()[..], b"hello");
        assert_eq!(gcm_decrypt(&K, &iv, b"aaD", &ct), Err(Error::DecryptFailed));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            gcm_decrypt(&K, &iv, b"aad", &bad),
            Err(Error::DecryptFailed)
        );
        assert_eq!(
            gcm_decrypt(&K, &iv, b"aad", &ct[..15]),
            Err(Error::DecryptFailed)
        );
        assert!(matches!(
            gcm_encrypt(&K, &[0u8; 16], b"", b"x"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            gcm_encrypt(&K[..20], &iv, b"", b"x"),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn cbc_pad_round_trip_all_lengths() {
        let iv = [3u8; 16];
        for len in 0..40 {
            let data = vec![0x5a; len];
            let ct = cbc_pad_encrypt(&K[..24], &iv, &data).unwrap();
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            assert_eq!(&cbc_pad_decrypt(&K[..24], &iv, &ct).unwrap()[..], &data[..]);
        }
        assert!(cbc_pad_decrypt(&K, &iv, &[]).is_err());
    }

    #[test]
    fn unaligned_inputs_rejected() {
        let iv = [0u8; 16];
        assert!(matches!(
            cbc_encrypt(&K, &iv, &[0; 15]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            ecb_encrypt(&K, &[0; 17]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            cbc_encrypt(&K, &iv[..8], &[0; 16]),
            Err(Error::InvalidInput { .. })
        ));
        assert_eq!(ctr_apply(&K, &iv, &[1, 2, 3]).unwrap().len(), 3);
    }

    #[test]
    fn key_wrap_round_trip_and_tamper() {
        let data = [0x42u8; 32];
        let w = key_wrap(&K, &data).unwrap();
        assert_eq!(w.len(), 40);
        assert_eq!(&key_unwrap(&K, &w).unwrap()[..], &data);
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert_eq!(key_unwrap(&K, &bad), Err(Error::DecryptFailed));
        let wp = key_wrap_pad(&K[..16], &data[..5]).unwrap();
        assert_eq!(wp.len(), 16);
        assert_eq!(&key_unwrap_pad(&K[..16], &wp).unwrap()[..], &data[..5]);
        let mut bad = wp.clone();
        bad[3] ^= 0x80;
        assert_eq!(key_unwrap_pad(&K[..16], &bad), Err(Error::DecryptFailed));
        assert!(matches!(
            key_wrap(&K[..20], &data),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            key_unwrap_pad(&K[..31], &wp),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn key_wrap_all_kek_sizes_round_trip_and_tamper() {
        for kek_len in [16, 24, 32] {
            let kek = &K[..kek_len];
            for len in (16..=64).step_by(8) {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let w = key_wrap(kek, &data).unwrap();
                assert_eq!(w.len(), len + 8);
                assert_eq!(&key_unwrap(kek, &w).unwrap()[..], &data[..]);
                for pos in [0, w.len() / 2, w.len() - 1] {
                    let mut bad = w.clone();
                    bad[pos] ^= 0x01;
                    assert_eq!(key_unwrap(kek, &bad), Err(Error::DecryptFailed));
                }
                assert_eq!(
                    key_unwrap(&[0x22; 32][..kek_len], &w),
                    Err(Error::DecryptFailed)
                );
            }
            for len in 1..=40usize {
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let w = key_wrap_pad(kek, &data).unwrap();
                assert_eq!(w.len(), len.div_ceil(8) * 8 + 8, "kek {kek_len} len {len}");
                assert_eq!(&key_unwrap_pad(kek, &w).unwrap()[..], &data[..]);
                let mut bad = w.clone();
                bad[w.len() - 1] ^= 0x40;
                assert_eq!(key_unwrap_pad(kek, &bad), Err(Error::DecryptFailed));
            }
            // Malformed lengths are decryption failures, not panics.
            for len in [0, 8, 15, 17, 23, 25] {
                let junk = vec![0u8; len];
                assert_eq!(key_unwrap(kek, &junk), Err(Error::DecryptFailed));
                assert_eq!(key_unwrap_pad(kek, &junk), Err(Error::DecryptFailed));
            }
            assert!(matches!(
                key_wrap(kek, &[0u8; 12]),
                Err(Error::InvalidInput { .. })
            ));
            assert!(matches!(
                key_wrap_pad(kek, &[]),
                Err(Error::InvalidInput { .. })
            ));
        }
    }

    /// The raw AWS-LC path (used for AES-192) agrees with `aws-lc-rs` on AES-128 and AES-256.
    #[test]
    fn raw_key_wrap_matches_aws_lc_rs() {
        for kek_len in [16, 32] {
            let kek = &K[..kek_len];
            for len in (16..=48).step_by(8) {
                let data = vec![0x5cu8; len];
                let w = key_wrap(kek, &data).unwrap();
                assert_eq!(raw::aes_key_wrap(kek, &data).unwrap(), w);
                assert_eq!(&raw::aes_key_unwrap(kek, &w).unwrap()[..], &data[..]);
            }
            for len in 1..=33 {
                let data = vec![0xc5u8; len];
                let w = key_wrap_pad(kek, &data).unwrap();
                assert_eq!(raw::aes_key_wrap_pad(kek, &data).unwrap(), w);
                assert_eq!(&raw::aes_key_unwrap_pad(kek, &w).unwrap()[..], &data[..]);
                let mut bad = w.clone();
                bad[0] ^= 1;
                assert_eq!(
                    raw::aes_key_unwrap_pad(kek, &bad),
                    Err(Error::DecryptFailed)
                );
            }
        }
        // The raw path validates lengths itself too.
        assert!(raw::aes_key_wrap(&K[..24], &[0u8; 12]).is_err());
        assert!(raw::aes_key_wrap_pad(&K[..24], &[]).is_err());
        assert!(matches!(
            raw::aes_key_wrap(&K[..20], &[0u8; 16]),
            Err(Error::InvalidKey { .. })
        ));
    }
}
