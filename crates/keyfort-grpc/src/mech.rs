//! Mechanisms: parsing a request's `Mechanism` into what the door can run, and the advertised
//! list with real key sizes and flags (GetMechanismList / GetMechanismInfo).

use keyfort_crypto::digest::Algorithm as Digest;
use keyfort_crypto::{hmac, rsa};

use crate::ck::{flag, mech as m, rv};
use crate::error::{Result, ck};
use crate::proto::{self, mechanism::Parameter};

/// A parsed mechanism with its parameters.
#[derive(Clone, Debug)]
pub enum Mech {
    Digest(Digest),
    AesEcb,
    AesCbc {
        iv: [u8; 16],
        pad: bool,
    },
    /// A 128-bit counter: the whole block.
    AesCtr {
        counter: [u8; 16],
    },
    /// A counter of the block's low `bits` (1 to 127, `CK_AES_CTR_PARAMS.ulCounterBits`); the
    /// bits above it are a nonce that the counter must not wrap into.
    AesCtrBits {
        counter: [u8; 16],
        bits: u32,
    },
    AesGcm {
        iv: Vec<u8>,
    },
    AesKeyWrap {
        pad: bool,
    },
    RsaPkcs,
    RsaOaep {
        hash: rsa::OaepHash,
        label: Option<Vec<u8>>,
    },
    RsaPkcsHash(rsa::Hash),
    RsaPss {
        hash: rsa::Hash,
    },
    RsaPssHash(rsa::Hash),
    Ecdsa,
    EcdsaHash(Digest),
    EdDsa,
    MlDsa,
    Hmac(hmac::Algorithm),
}

fn param_bytes(p: &proto::Mechanism) -> &[u8] {
    match &p.parameter {
        Some(Parameter::ParameterB(b)) => b,
        _ => &[],
    }
}

fn bad_param(what: &'static str) -> crate::error::Error {
    ck(rv::CKR_MECHANISM_PARAM_INVALID, what)
}

fn rsa_hash(h: u64) -> Result<rsa::Hash> {
    match h {
        m::SHA256 => Ok(rsa::Hash::Sha256),
        m::SHA384 => Ok(rsa::Hash::Sha384),
        m::SHA512 => Ok(rsa::Hash::Sha512),
        _ => Err(bad_param("unsupported hash")),
    }
}

/// The MGF1 mask enum value that goes with a hash mechanism.
fn mgf_for(h: u64) -> i32 {
    match h {
        0x220 => 1,
        m::SHA256 => 2,
        m::SHA384 => 3,
        m::SHA512 => 4,
        _ => -1,
    }
}

impl Mech {
    /// Parses a request's mechanism.
    pub fn parse(p: Option<&proto::Mechanism>) -> Result<Mech> {
        let p = p.ok_or(ck(rv::CKR_MECHANISM_INVALID, "no mechanism given"))?;
        let pb = param_bytes(p);
        Ok(match p.mechanism {
            m::SHA224 => Mech::Digest(Digest::Sha224),
            m::SHA256 => Mech::Digest(Digest::Sha256),
            m::SHA384 => Mech::Digest(Digest::Sha384),
            m::SHA512 => Mech::Digest(Digest::Sha512),
            m::SHA3_224 | m::IBM_SHA3_224 => Mech::Digest(Digest::Sha3_224),
            m::SHA3_256 | m::IBM_SHA3_256 => Mech::Digest(Digest::Sha3_256),
            m::SHA3_384 | m::IBM_SHA3_384 => Mech::Digest(Digest::Sha3_384),
            m::SHA3_512 | m::IBM_SHA3_512 => Mech::Digest(Digest::Sha3_512),
            m::AES_ECB => Mech::AesEcb,
            m::AES_CBC | m::AES_CBC_PAD => Mech::AesCbc {
                iv: pb
                    .try_into()
                    .map_err(|_| bad_param("AES-CBC needs a 16-byte IV"))?,
                pad: p.mechanism == m::AES_CBC_PAD,
            },
            m::AES_CTR => {
                // CK_AES_CTR_PARAMS: the counter block, optionally after a ulCounterBits word
                // (a CK_ULONG, in either byte order).
                let (bits, cb) = match pb.len() {
                    16 => (128, pb),
                    24 => {
                        let word: [u8; 8] = pb[..8]
                            .try_into()
                            .map_err(|_| bad_param("AES-CTR counter bits"))?;
                        let bits = [u64::from_be_bytes(word), u64::from_le_bytes(word)]
                            .into_iter()
                            .find(|b| (1..=128).contains(b))
                            .ok_or(bad_param("AES-CTR counter bits must be 1 to 128"))?;
                        (bits as u32, &pb[8..])
                    }
                    _ => return Err(bad_param("AES-CTR needs a 16-byte counter block")),
                };
                let counter = cb
                    .try_into()
                    .map_err(|_| bad_param("AES-CTR counter block"))?;
                if bits == 128 {
                    Mech::AesCtr { counter }
                } else {
                    Mech::AesCtrBits { counter, bits }
                }
            }
            m::AES_GCM => {
                if pb.len() != 12 {
                    return Err(bad_param("AES-GCM needs a 12-byte IV"));
                }
                Mech::AesGcm { iv: pb.to_vec() }
            }
            m::AES_KEY_WRAP => Mech::AesKeyWrap { pad: false },
            m::AES_KEY_WRAP_KWP => Mech::AesKeyWrap { pad: true },
            m::RSA_PKCS => Mech::RsaPkcs,
            m::RSA_PKCS_OAEP => {
                let Some(Parameter::RsaoaepParameter(o)) = &p.parameter else {
                    return Err(bad_param("RSA-OAEP needs RSAOAEPParm"));
                };
                let hash = match o.hash_mech {
                    0x220 => rsa::OaepHash::Sha1,
                    m::SHA256 => rsa::OaepHash::Sha256,
                    m::SHA384 => rsa::OaepHash::Sha384,
                    m::SHA512 => rsa::OaepHash::Sha512,
                    _ => return Err(bad_param("unsupported OAEP hash")),
                };
                if o.mgf != mgf_for(o.hash_mech) {
                    return Err(bad_param("OAEP MGF1 must use the OAEP hash"));
                }
                let label = (o.encoding_parm_type == 1 && !o.encoding_parm.is_empty())
                    .then(|| o.encoding_parm.clone());
                Mech::RsaOaep { hash, label }
            }
            m::SHA256_RSA_PKCS => Mech::RsaPkcsHash(rsa::Hash::Sha256),
            m::SHA384_RSA_PKCS => Mech::RsaPkcsHash(rsa::Hash::Sha384),
            m::SHA512_RSA_PKCS => Mech::RsaPkcsHash(rsa::Hash::Sha512),
            m::RSA_PKCS_PSS
            | m::SHA256_RSA_PKCS_PSS
            | m::SHA384_RSA_PKCS_PSS
            | m::SHA512_RSA_PKCS_PSS => {
                let Some(Parameter::RsapssParameter(s)) = &p.parameter else {
                    return Err(bad_param("RSA-PSS needs RSAPSSParm"));
                };
                let hash = rsa_hash(s.hash_mech)?;
                let hash_len = match hash {
                    rsa::Hash::Sha256 => 32,
                    rsa::Hash::Sha384 => 48,
                    _ => 64,
                };
                if s.mgf != mgf_for(s.hash_mech) || s.salt_byte_count != hash_len {
                    return Err(bad_param(
                        "PSS needs MGF1 of its hash and a salt of the hash length",
                    ));
                }
                let named = match p.mechanism {
                    m::SHA256_RSA_PKCS_PSS => Some(rsa::Hash::Sha256),
                    m::SHA384_RSA_PKCS_PSS => Some(rsa::Hash::Sha384),
                    m::SHA512_RSA_PKCS_PSS => Some(rsa::Hash::Sha512),
                    _ => None,
                };
                match named {
                    None => Mech::RsaPss { hash },
                    Some(h) if h == hash => Mech::RsaPssHash(h),
                    Some(_) => return Err(bad_param("PSS parameters name another hash")),
                }
            }
            m::ECDSA => Mech::Ecdsa,
            m::ECDSA_SHA256 | m::IBM_ECDSA_SHA256 => Mech::EcdsaHash(Digest::Sha256),
            m::ECDSA_SHA384 | m::IBM_ECDSA_SHA384 => Mech::EcdsaHash(Digest::Sha384),
            m::ECDSA_SHA512 | m::IBM_ECDSA_SHA512 => Mech::EcdsaHash(Digest::Sha512),
            m::EDDSA | m::IBM_ED25519_SHA512 => Mech::EdDsa,
            m::ML_DSA => Mech::MlDsa,
            m::SHA256_HMAC => Mech::Hmac(hmac::Algorithm::Sha256),
            m::SHA384_HMAC => Mech::Hmac(hmac::Algorithm::Sha384),
            m::SHA512_HMAC => Mech::Hmac(hmac::Algorithm::Sha512),
            _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "mechanism not supported")),
        })
    }
}

impl Mech {
    /// The counter block and counter width of AES-CTR.
    pub fn counter(&self) -> Option<([u8; 16], u32)> {
        match self {
            Mech::AesCtr { counter } => Some((*counter, 128)),
            Mech::AesCtrBits { counter, bits } => Some((*counter, *bits)),
            _ => None,
        }
    }
}

/// How many counter values an AES-CTR counter block has left before its low `bits` would wrap
/// into the nonce above them (the current value included; saturates at `u128::MAX`).
pub fn ctr_room(counter: &[u8; 16], bits: u32) -> u128 {
    let mask = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    (mask - (u128::from_be_bytes(*counter) & mask)).saturating_add(1)
}

const ED: u64 = flag::ENCRYPT | flag::DECRYPT;
const SV: u64 = flag::SIGN | flag::VERIFY;
const WU: u64 = flag::WRAP | flag::UNWRAP;
const EC: u64 = flag::EC_F_P | flag::EC_NAMEDCURVE | flag::EC_UNCOMPRESS;

/// Every mechanism served: (mechanism, min key size, max key size, flags). Sizes in bytes for
/// AES and generic secrets, in bits for RSA and EC, per PKCS#11 `CK_MECHANISM_INFO`.
pub const MECHANISMS: &[(u64, u64, u64, u64)] = &[
    (
        m::RSA_PKCS_KEY_PAIR_GEN,
        2048,
        4096,
        flag::GENERATE_KEY_PAIR,
    ),
    (m::RSA_PKCS, 2048, 4096, ED | SV | WU),
    (m::RSA_PKCS_OAEP, 2048, 4096, ED | WU),
    (m::RSA_PKCS_PSS, 2048, 4096, SV),
    (m::ML_KEM_KEY_PAIR_GEN, 768, 1024, flag::GENERATE_KEY_PAIR),
    (m::ML_KEM, 768, 1024, flag::DERIVE),
    (m::ML_DSA_KEY_PAIR_GEN, 44, 87, flag::GENERATE_KEY_PAIR),
    (m::ML_DSA, 44, 87, SV),
    (m::SHA256_RSA_PKCS, 2048, 4096, SV),
    (m::SHA384_RSA_PKCS, 2048, 4096, SV),
    (m::SHA512_RSA_PKCS, 2048, 4096, SV),
    (m::SHA256_RSA_PKCS_PSS, 2048, 4096, SV),
    (m::SHA384_RSA_PKCS_PSS, 2048, 4096, SV),
    (m::SHA512_RSA_PKCS_PSS, 2048, 4096, SV),
    (m::SHA256, 0, 0, flag::DIGEST),
    (m::SHA256_HMAC, 16, 512, SV),
    (m::SHA224, 0, 0, flag::DIGEST),
    (m::SHA384, 0, 0, flag::DIGEST),
    (m::SHA384_HMAC, 16, 512, SV),
    (m::SHA512, 0, 0, flag::DIGEST),
    (m::SHA512_HMAC, 16, 512, SV),
    (m::SHA3_256, 0, 0, flag::DIGEST),
    (m::SHA3_224, 0, 0, flag::DIGEST),
    (m::SHA3_384, 0, 0, flag::DIGEST),
    (m::SHA3_512, 0, 0, flag::DIGEST),
    (m::GENERIC_SECRET_KEY_GEN, 16, 512, flag::GENERATE),
    (m::EC_KEY_PAIR_GEN, 256, 521, flag::GENERATE_KEY_PAIR | EC),
    (m::ECDSA, 256, 521, SV | EC),
    (m::ECDSA_SHA256, 256, 521, SV | EC),
    (m::ECDSA_SHA384, 256, 521, SV | EC),
    (m::ECDSA_SHA512, 256, 521, SV | EC),
    (m::ECDH1_DERIVE, 256, 521, flag::DERIVE | EC),
    (
        m::EC_EDWARDS_KEY_PAIR_GEN,
        255,
        255,
        flag::GENERATE_KEY_PAIR,
    ),
    (m::EDDSA, 255, 255, SV),
    (m::AES_KEY_GEN, 16, 32, flag::GENERATE),
    (m::AES_ECB, 16, 32, ED | WU),
    (m::AES_CBC, 16, 32, ED | WU),
    (m::AES_CBC_PAD, 16, 32, ED | WU),
    (m::AES_CTR, 16, 32, ED),
    (m::AES_GCM, 16, 32, ED | WU),
    (m::AES_KEY_WRAP, 16, 32, WU),
    (m::AES_KEY_WRAP_KWP, 16, 32, WU),
    (m::IBM_SHA3_224, 0, 0, flag::DIGEST),
    (m::IBM_SHA3_256, 0, 0, flag::DIGEST),
    (m::IBM_SHA3_384, 0, 0, flag::DIGEST),
    (m::IBM_SHA3_512, 0, 0, flag::DIGEST),
    (m::IBM_ECDSA_SHA256, 256, 521, SV | EC),
    (m::IBM_ECDSA_SHA384, 256, 521, SV | EC),
    (m::IBM_ECDSA_SHA512, 256, 521, SV | EC),
    (m::IBM_ED25519_SHA512, 255, 255, SV),
    (m::IBM_TRANSPORTKEY, 0, 0, flag::UNWRAP),
];

/// `CK_MECHANISM_INFO` of a served mechanism.
pub fn info(mechanism: u64) -> Result<proto::MechanismInfo> {
    MECHANISMS
        .iter()
        .find(|e| e.0 == mechanism)
        .map(|&(_, min, max, flags)| proto::MechanismInfo {
            min_key_size: min,
            max_key_size: max,
            flags: flags | flag::HW,
        })
        .ok_or(ck(rv::CKR_MECHANISM_INVALID, "mechanism not supported"))
}
