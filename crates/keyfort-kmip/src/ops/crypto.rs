//! Encrypt / Decrypt (KMIP 1.4 §4.29–4.30), Sign / Signature Verify (§4.31–4.32), MAC / MAC
//! Verify (§4.33–4.34) and RNG Retrieve (§4.35). Single-part only: Correlation Value, Init and
//! Final Indicators answer Feature Not Supported.

use keyfort_core::objects::{Cipher, SignatureScheme};
use keyfort_core::{CoreError, Key};
use keyfort_crypto::digest::Algorithm as Digest;
use keyfort_crypto::hmac::Algorithm as Hmac;
use keyfort_crypto::rsa::{Hash as RsaHash, OaepHash, SignatureScheme as RsaScheme};

use super::{Ctx, OpResult, allow_usage, core, uid_item};
use crate::message::{Invalid, ProtocolVersion, Struct};
use crate::ttlv::{Item, Tag, Value};
use crate::{
    BlockCipherMode, CryptographicAlgorithm, CryptographicUsageMask as Usage,
    DigitalSignatureAlgorithm, HashingAlgorithm, PaddingMethod, ResultReason, ValidityIndicator,
};

/// Cryptographic Parameters (KMIP 1.4 §3.6), the fields this server uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Params {
    mode: Option<BlockCipherMode>,
    padding: Option<PaddingMethod>,
    hash: Option<HashingAlgorithm>,
    signature: Option<DigitalSignatureAlgorithm>,
    algorithm: Option<CryptographicAlgorithm>,
    tag_length: Option<i32>,
}

fn bad(message: impl Into<String>) -> Invalid {
    Invalid::new(ResultReason::BAD_CRYPTOGRAPHIC_PARAMETERS, message)
}

pub fn params(p: &Struct<'_>) -> Result<Params, Invalid> {
    let Some(s) = p.child(Tag::CRYPTOGRAPHIC_PARAMETERS)? else {
        return Ok(Params::default());
    };
    Ok(Params {
        mode: s
            .opt_enumeration(Tag::BLOCK_CIPHER_MODE)?
            .map(BlockCipherMode),
        padding: s.opt_enumeration(Tag::PADDING_METHOD)?.map(PaddingMethod),
        hash: s
            .opt_enumeration(Tag::HASHING_ALGORITHM)?
            .map(HashingAlgorithm),
        signature: s
            .opt_enumeration(Tag::DIGITAL_SIGNATURE_ALGORITHM)?
            .map(DigitalSignatureAlgorithm),
        algorithm: s
            .opt_enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM)?
            .map(CryptographicAlgorithm),
        tag_length: s.opt_integer(Tag::TAG_LENGTH)?,
    })
}

pub fn single_part(p: &Struct<'_>) -> Result<(), Invalid> {
    if p.get(Tag::CORRELATION_VALUE).is_some()
        || p.opt_bool(Tag::INIT_INDICATOR)? == Some(true)
        || p.opt_bool(Tag::FINAL_INDICATOR)? == Some(false)
    {
        return Err(Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "multi-part (streaming) operations are not supported",
        ));
    }
    Ok(())
}

fn oaep_hash(h: Option<HashingAlgorithm>) -> Result<OaepHash, Invalid> {
    match h {
        None | Some(HashingAlgorithm::SHA_1) => Ok(OaepHash::Sha1),
        Some(HashingAlgorithm::SHA_256) => Ok(OaepHash::Sha256),
        Some(HashingAlgorithm::SHA_384) => Ok(OaepHash::Sha384),
        Some(HashingAlgorithm::SHA_512) => Ok(OaepHash::Sha512),
        Some(other) => Err(bad(format!("OAEP with {other:?} is not supported"))),
    }
}

/// The cipher for a key and its parameters.
pub fn cipher(key_is_rsa: bool, p: &Params) -> Result<Cipher, Invalid> {
    if key_is_rsa || p.algorithm == Some(CryptographicAlgorithm::RSA) {
        return match p.padding {
            None | Some(PaddingMethod::OAEP) => Ok(Cipher::RsaOaep(oaep_hash(p.hash)?)),
            Some(other) => Err(bad(format!(
                "RSA encryption with {other:?} padding is not supported (OAEP only)"
            ))),
        };
    }
    if p.tag_length.is_some_and(|t| t != 16) {
        return Err(bad("only 16-byte authentication tags are supported"));
    }
    Ok(match (p.mode, p.padding) {
        (None | Some(BlockCipherMode::GCM), _) => Cipher::AesGcm,
        (Some(BlockCipherMode::CBC), Some(PaddingMethod::PKCS5)) => Cipher::AesCbcPad,
        (Some(BlockCipherMode::CBC), None | Some(PaddingMethod::NONE)) => Cipher::AesCbc,
        (Some(BlockCipherMode::CTR), _) => Cipher::AesCtr,
        (Some(BlockCipherMode::ECB), None | Some(PaddingMethod::NONE)) => Cipher::AesEcb,
        (m, pad) => {
            return Err(bad(format!(
                "mode {m:?} with padding {pad:?} is not supported"
            )));
        }
    })
}

/// Lets the core choose parameters for the key it loaded, keeping the KMIP reason of a
/// refusal: `chooser` wraps a door function for the core, `finish` picks the error to answer.
struct Chooser(std::sync::Mutex<Option<Invalid>>);

impl Chooser {
    fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn with<'a, T>(
        &'a self,
        f: impl FnOnce(&Key) -> Result<T, Invalid> + 'a,
    ) -> impl FnOnce(&Key) -> Result<T, CoreError> + 'a {
        move |key| {
            f(key).map_err(|e| {
                *self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                CoreError::InvalidField {
                    field: "cryptographic parameters",
                    rule: "do not fit the key",
                }
            })
        }
    }

    fn finish<T>(self, result: Result<T, CoreError>) -> Result<T, Invalid> {
        let refusal = self
            .0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (result, refusal) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(core(e)),
            (Ok(v), None) => Ok(v),
        }
    }
}

pub async fn encrypt(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let params = params(p)?;
    let data = p.bytes(Tag::DATA)?;
    let iv = p.opt_bytes(Tag::IV_COUNTER_NONCE)?;
    let aad = p
        .opt_bytes(Tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA)?
        .unwrap_or_default();
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_encrypt(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::ENCRYPT)?;
                cipher(k.algorithm == "RSA", &params)
            }),
            iv,
            aad,
            data,
        )
        .await;
    let out = chooser.finish(result)?;
    // KMIP 1.4 added the Authenticated Encryption Tag; earlier clients get it after the data.
    let separate_tag = ctx.version >= ProtocolVersion::new(1, 4);
    let mut data = out.data;
    if let (false, Some(tag)) = (separate_tag, &out.tag) {
        data.extend_from_slice(tag);
    }
    let mut items = vec![uid_item(&id), Item::new(Tag::DATA, Value::ByteString(data))];
    if let Some(iv) = out.generated_iv {
        items.push(Item::new(Tag::IV_COUNTER_NONCE, Value::ByteString(iv)));
    }
    if let (true, Some(tag)) = (separate_tag, out.tag) {
        items.push(Item::new(
            Tag::AUTHENTICATED_ENCRYPTION_TAG,
            Value::ByteString(tag),
        ));
    }
    Ok(items)
}

pub async fn decrypt(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let params = params(p)?;
    let data = p.bytes(Tag::DATA)?;
    let iv = p.opt_bytes(Tag::IV_COUNTER_NONCE)?;
    let aad = p
        .opt_bytes(Tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA)?
        .unwrap_or_default();
    let tag = p.opt_bytes(Tag::AUTHENTICATED_ENCRYPTION_TAG)?;
    // Before KMIP 1.4 an AES-GCM tag travels after the ciphertext.
    let explicit_gcm = params.mode == Some(BlockCipherMode::GCM)
        || (params.mode.is_none() && params.algorithm == Some(CryptographicAlgorithm::AES));
    let gcm_without_tag = tag.is_none() && explicit_gcm;
    let split = data
        .len()
        .checked_sub(keyfort_crypto::aes::GCM_TAG_LEN)
        .map(|at| data.split_at(at));
    let (data, tag) = match (gcm_without_tag, split) {
        (true, Some((body, t))) => (body, Some(t)),
        (true, None) => return Err(Invalid::field("AES-GCM data shorter than its tag")),
        (false, _) => (data, tag),
    };
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_decrypt(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::DECRYPT)?;
                cipher(k.algorithm == "RSA", &params)
            }),
            iv,
            aad,
            tag,
            data,
        )
        .await;
    let plain = chooser.finish(result)?;
    Ok(vec![
        uid_item(&id),
        Item::new(Tag::DATA, Value::ByteString(plain.to_vec())),
    ])
}

fn digest(h: HashingAlgorithm) -> Option<Digest> {
    Some(match h {
        HashingAlgorithm::SHA_224 => Digest::Sha224,
        HashingAlgorithm::SHA_256 => Digest::Sha256,
        HashingAlgorithm::SHA_384 => Digest::Sha384,
        HashingAlgorithm::SHA_512 => Digest::Sha512,
        HashingAlgorithm::SHA_3_256 => Digest::Sha3_256,
        HashingAlgorithm::SHA_3_384 => Digest::Sha3_384,
        HashingAlgorithm::SHA_3_512 => Digest::Sha3_512,
        _ => return None,
    })
}

fn rsa_hash(h: HashingAlgorithm) -> Result<RsaHash, Invalid> {
    match h {
        HashingAlgorithm::SHA_256 => Ok(RsaHash::Sha256),
        HashingAlgorithm::SHA_384 => Ok(RsaHash::Sha384),
        HashingAlgorithm::SHA_512 => Ok(RsaHash::Sha512),
        other => Err(bad(format!(
            "RSA signatures with {other:?} are not supported"
        ))),
    }
}

/// The signature scheme from Digital Signature Algorithm, or Padding Method + Hashing
/// Algorithm, for an RSA or EC key.
pub fn scheme(key: &Key, p: &Params) -> Result<SignatureScheme, Invalid> {
    use DigitalSignatureAlgorithm as D;
    let (hash, pss) = match p.signature {
        Some(D::SHA_256_WITH_RSA_ENCRYPTION | D::ECDSA_WITH_SHA256) => {
            (HashingAlgorithm::SHA_256, false)
        }
        Some(D::SHA_384_WITH_RSA_ENCRYPTION | D::ECDSA_WITH_SHA384) => {
            (HashingAlgorithm::SHA_384, false)
        }
        Some(D::SHA_512_WITH_RSA_ENCRYPTION | D::ECDSA_WITH_SHA512) => {
            (HashingAlgorithm::SHA_512, false)
        }
        Some(D::RSASSA_PSS) => (p.hash.unwrap_or(HashingAlgorithm::SHA_256), true),
        Some(other) => return Err(bad(format!("{other:?} is not supported"))),
        None => (
            p.hash.unwrap_or(HashingAlgorithm::SHA_256),
            p.padding == Some(PaddingMethod::PSS),
        ),
    };
    match key.algorithm.as_str() {
        "RSA" => {
            let h = rsa_hash(hash)?;
            Ok(SignatureScheme::Rsa(if pss {
                RsaScheme::Pss(h)
            } else {
                RsaScheme::Pkcs1v15(h)
            }))
        }
        "EC" => Ok(SignatureScheme::Ecdsa(digest(hash).ok_or_else(|| {
            bad(format!("ECDSA with {hash:?} is not supported"))
        })?)),
        _ => Err(Invalid::new(
            ResultReason::INVALID_FIELD,
            "signing needs an RSA or EC key",
        )),
    }
}

pub async fn sign(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let data = p.bytes(Tag::DATA)?;
    let params = params(p)?;
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_sign(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::SIGN)?;
                scheme(k, &params)
            }),
            data,
        )
        .await;
    let signature = chooser.finish(result)?;
    Ok(vec![
        uid_item(&id),
        Item::new(Tag::SIGNATURE_DATA, Value::ByteString(signature)),
    ])
}

fn validity(valid: bool) -> Item {
    let v = if valid {
        ValidityIndicator::VALID
    } else {
        ValidityIndicator::INVALID
    };
    Item::new(Tag::VALIDITY_INDICATOR, Value::Enumeration(v.0))
}

pub async fn signature_verify(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let data = p.bytes(Tag::DATA)?;
    let signature = p.bytes(Tag::SIGNATURE_DATA)?;
    let params = params(p)?;
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_verify(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::VERIFY)?;
                scheme(k, &params)
            }),
            data,
            signature,
        )
        .await;
    let valid = chooser.finish(result)?;
    Ok(vec![uid_item(&id), validity(valid)])
}

pub fn hmac(key: &Key, p: &Params) -> Result<Hmac, Invalid> {
    let alg = p
        .algorithm
        .or_else(|| crate::attributes::algorithm_of(key))
        .ok_or_else(|| bad("a MAC needs a Cryptographic Algorithm"))?;
    match alg {
        CryptographicAlgorithm::HMAC_SHA256 => Ok(Hmac::Sha256),
        CryptographicAlgorithm::HMAC_SHA384 => Ok(Hmac::Sha384),
        CryptographicAlgorithm::HMAC_SHA512 => Ok(Hmac::Sha512),
        other => Err(bad(format!("MAC algorithm {other:?} is not supported"))),
    }
}

pub async fn mac(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let data = p.bytes(Tag::DATA)?;
    let params = params(p)?;
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_mac(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::MAC_GENERATE)?;
                hmac(k, &params)
            }),
            data,
        )
        .await;
    let mac = chooser.finish(result)?;
    Ok(vec![
        uid_item(&id),
        Item::new(Tag::MAC_DATA, Value::ByteString(mac)),
    ])
}

pub async fn mac_verify(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    single_part(p)?;
    let id = ctx.uid(p)?;
    let data = p.bytes(Tag::DATA)?;
    let mac = p.bytes(Tag::MAC_DATA)?;
    let params = params(p)?;
    let chooser = Chooser::new();
    let result = ctx
        .core
        .object_mac_verify(
            ctx.caller(),
            ctx.instance(),
            &id,
            chooser.with(|k: &Key| {
                allow_usage(k, Usage::MAC_VERIFY)?;
                hmac(k, &params)
            }),
            data,
            mac,
        )
        .await;
    let valid = chooser.finish(result)?;
    Ok(vec![uid_item(&id), validity(valid)])
}

pub fn rng_retrieve(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let len = p.integer(Tag::DATA_LENGTH)?;
    let len = usize::try_from(len).map_err(|_| Invalid::field("Data Length must be positive"))?;
    let bytes = ctx.core.random_bytes(len).map_err(core)?;
    Ok(vec![Item::new(
        Tag::DATA,
        Value::ByteString(bytes.to_vec()),
    )])
}
