//! The `grep11.Crypto` service: every rpc of grep11 spec §4, over stateless sealed blobs.

use keyfort_core::grep11::Grep11Sealer;
use keyfort_core::{Action, AuthFailure, CoreError, Keyfort};
use keyfort_crypto::ec::{AgreementCurve, AgreementKey, Curve};
use keyfort_crypto::{digest, ec, ed25519, pq, rng, rsa};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::attrs::{Attr, Attrs};
use crate::blob::{self, Material, Private, Public};
use crate::ck::{attr, flag, mech as m, obj, rv};
use crate::der;
use crate::error::{Error, Result, ck};
use crate::mech::{self, Mech};
use crate::ops;
use crate::proto::{self, crypto_server::Crypto, mechanism::Parameter};
use crate::state::{Op, State};

/// Most random bytes one GenerateRandom call returns.
pub const MAX_RANDOM: u64 = 1024 * 1024;

/// The GREP11-compatible crypto service.
#[derive(Clone, Debug)]
pub struct CryptoService {
    core: Keyfort,
}

impl CryptoService {
    pub fn new(core: Keyfort) -> CryptoService {
        CryptoService { core }
    }

    /// Authenticates the caller (`authorization: Bearer <token>`) and, for operations on an
    /// instance, opens its sealer (`bluemix-instance`, or the caller's only instance).
    async fn sealer<T>(&self, req: &Request<T>, action: Action) -> Result<Grep11Sealer> {
        let caller = self.caller(req).await?;
        let instance = req
            .metadata()
            .get("bluemix-instance")
            .map(|v| {
                v.to_str()
                    .map_err(|_| ck(rv::CKR_ARGUMENTS_BAD, "bluemix-instance is not text"))
            })
            .transpose()?;
        Ok(self.core.grep11_sealer(&caller, instance, action).await?)
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<std::sync::Arc<keyfort_core::Caller>> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(CoreError::Unauthenticated(AuthFailure::Missing))?;
        Ok(self.core.authenticate(token.trim()).await?)
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(r: Result<T>) -> Reply<T> {
    r.map(Response::new).map_err(Error::into_status)
}

/// The raw blob of a request key: `KeyBlob.KeyBlobs[0]` (current generation) or the old
/// generation's plain bytes field.
fn key_bytes<'a>(blob: Option<&'a proto::KeyBlob>, bytes: &'a [u8]) -> &'a [u8] {
    blob.and_then(|b| b.key_blobs.first())
        .filter(|b| !b.is_empty())
        .map_or(bytes, Vec::as_slice)
}

/// The `KeyBlob` form of a blob: raw blob in `KeyBlobs[0]`, a display copy of the attributes.
fn key_blob(raw: &[u8], attrs: &Attrs) -> proto::KeyBlob {
    proto::KeyBlob {
        key_blob_id: digest::sha256(raw)[..16].to_vec(),
        version: 0,
        tx_id: Vec::new(),
        attributes: attrs.to_proto(),
        key_blobs: vec![raw.to_vec()],
    }
}

fn open_state(s: &Grep11Sealer, blob: &[u8], op: Op) -> Result<State> {
    State::decode(&blob::open_state(s, blob)?, op)
}

fn seal_state(s: &Grep11Sealer, state: &State) -> Result<Vec<u8>> {
    blob::seal_state(s, &state.encode())
}

/// Runs the single-part form of a multi-part operation.
fn finish(s: &Grep11Sealer, st: &State, signature: &[u8]) -> Result<Vec<u8>> {
    let mech = Mech::parse(Some(&st.mech))?;
    if st.op == Op::Digest {
        return ops::digest(&mech, &st.data);
    }
    let key = blob::open(s, &st.key)?;
    match st.op {
        Op::Encrypt => ops::encrypt(&key, &mech, &st.data),
        Op::Decrypt => Ok(ops::decrypt(&key, &mech, &st.data)?.to_vec()),
        Op::Sign => ops::sign(&key, &mech, &st.data),
        Op::Verify => ops::verify(&key, &mech, &st.data, signature).map(|()| Vec::new()),
        Op::Digest => Err(ck(rv::CKR_OPERATION_NOT_INITIALIZED, "digest")),
    }
}

/// EncryptUpdate / DecryptUpdate: the block modes (ECB, CBC, CBC-PAD, CTR) process every whole
/// block they can and carry the chaining value (next IV or counter block) and the remaining
/// bytes in the state; CBC-PAD decryption keeps its last block for DecryptFinal, and CTR keeps
/// the block that would take its counter's last value (so that only the final call may, and
/// the counter never wraps into the nonce). GCM (and RSA) buffer their input until the final
/// call.
fn update_crypt(s: &Grep11Sealer, st: &mut State, input: &[u8]) -> Result<Vec<u8>> {
    const BLOCK: usize = 16;
    st.push(input)?;
    let mech = Mech::parse(Some(&st.mech))?;
    let encrypt = st.op == Op::Encrypt;
    let len = st.data.len();
    let n = match mech {
        Mech::AesCtr { .. } | Mech::AesCtrBits { .. } => {
            let (counter, bits) = mech.counter().unwrap_or_default();
            let blocks = (len / BLOCK) as u128;
            let room = mech::ctr_room(&counter, bits);
            if blocks > room {
                let code = if encrypt {
                    rv::CKR_DATA_LEN_RANGE
                } else {
                    rv::CKR_ENCRYPTED_DATA_LEN_RANGE
                };
                return Err(ck(code, "the data would wrap the AES-CTR counter"));
            }
            // At most `room` blocks here, so `room - 1` leaves the last one for later.
            (blocks.min(room - 1) as usize) * BLOCK
        }
        Mech::AesEcb | Mech::AesCbc { pad: false, .. } => len / BLOCK * BLOCK,
        Mech::AesCbc { pad: true, .. } if encrypt => len / BLOCK * BLOCK,
        Mech::AesCbc { pad: true, .. } => len.saturating_sub(1) / BLOCK * BLOCK,
        _ => return Ok(Vec::new()),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let key = blob::open(s, &st.key)?;
    let head = Zeroizing::new(st.data[..n].to_vec());
    let (block_mech, next) = match mech {
        Mech::AesCbc { iv, .. } => (Mech::AesCbc { iv, pad: false }, None),
        Mech::AesCtr { counter } | Mech::AesCtrBits { counter, .. } => {
            // Within the counter bits: fewer blocks than the counter has values left.
            let blocks = (n / BLOCK) as u128;
            let next = u128::from_be_bytes(counter).wrapping_add(blocks);
            // The ulCounterBits word, if the client gave one, stays in front.
            let word = match &st.mech.parameter {
                Some(Parameter::ParameterB(p)) if p.len() == 24 => p[..8].to_vec(),
                _ => Vec::new(),
            };
            (
                mech.clone(),
                Some([word, next.to_be_bytes().to_vec()].concat()),
            )
        }
        other => (other, None),
    };
    let out = if encrypt {
        ops::encrypt(&key, &block_mech, &head)?
    } else {
        ops::decrypt(&key, &block_mech, &head)?.to_vec()
    };
    let next = match block_mech {
        // The next IV is the last ciphertext block.
        Mech::AesCbc { .. } if encrypt => Some(out[n - BLOCK..].to_vec()),
        Mech::AesCbc { .. } => Some(head[n - BLOCK..].to_vec()),
        _ => next,
    };
    if let Some(param) = next {
        st.mech.parameter = Some(Parameter::ParameterB(param));
    }
    st.data = Zeroizing::new(st.data[n..].to_vec());
    Ok(out)
}

/// Starts a keyed multi-part operation after checking mechanism, key and usage.
fn init(s: &Grep11Sealer, op: Op, mech: Option<&proto::Mechanism>, key: &[u8]) -> Result<Vec<u8>> {
    let parsed = Mech::parse(mech)?;
    let k = blob::open(s, key)?;
    let usage = match op {
        Op::Encrypt => attr::ENCRYPT,
        Op::Decrypt => attr::DECRYPT,
        Op::Sign => attr::SIGN,
        Op::Verify => attr::VERIFY,
        Op::Digest => return Err(ck(rv::CKR_MECHANISM_INVALID, "digest takes no key")),
    };
    k.require(usage)?;
    if matches!(parsed, Mech::Digest(_)) {
        return Err(ck(
            rv::CKR_MECHANISM_INVALID,
            "a digest mechanism needs DigestInit",
        ));
    }
    let mech = mech.cloned().unwrap_or_default();
    // Refused at Init, as GetMechanismInfo describes it, not only at the last call.
    let needed = match op {
        Op::Encrypt => flag::ENCRYPT,
        Op::Decrypt => flag::DECRYPT,
        Op::Sign => flag::SIGN,
        Op::Verify => flag::VERIFY,
        Op::Digest => flag::DIGEST,
    };
    if mech::info(mech.mechanism)?.flags & needed == 0 {
        return Err(ck(
            rv::CKR_MECHANISM_INVALID,
            "the mechanism does not serve this operation",
        ));
    }
    seal_state(s, &State::new(op, mech, key.to_vec()))
}

/// Defaults for a new key's attributes, then the template over them.
pub fn key_attrs(template: &Attrs, class: i64, key_type: i64, local: bool) -> Result<Attrs> {
    if let Some(c) = template.int(attr::CLASS)?
        && c as i64 != class
    {
        return Err(ck(
            rv::CKR_TEMPLATE_INCONSISTENT,
            "CKA_CLASS does not fit the mechanism",
        ));
    }
    if let Some(t) = template.int(attr::KEY_TYPE)?
        && t as i64 != key_type
    {
        return Err(ck(
            rv::CKR_TEMPLATE_INCONSISTENT,
            "CKA_KEY_TYPE does not fit the mechanism",
        ));
    }
    // PKCS#11 lets only the security officer mark a key trusted; no caller here is one.
    if template.flag(attr::TRUSTED, false)? {
        return Err(ck(rv::CKR_ATTRIBUTE_READ_ONLY, "CKA_TRUSTED cannot be set"));
    }
    template.bool(attr::WRAP_WITH_TRUSTED)?;
    // Restrictions the service does not enforce are refused, not kept as if they held.
    for t in [
        attr::WRAP_TEMPLATE,
        attr::UNWRAP_TEMPLATE,
        attr::DERIVE_TEMPLATE,
        attr::ALLOWED_MECHANISMS,
    ] {
        if template.get(t).is_some() {
            return Err(ck(
                rv::CKR_ATTRIBUTE_TYPE_INVALID,
                "wrap, unwrap and derive templates and allowed mechanisms are not supported",
            ));
        }
    }
    let mut a = Attrs::default();
    let usages: &[u64] = match class {
        obj::CKO_SECRET_KEY => &[
            attr::ENCRYPT,
            attr::DECRYPT,
            attr::SIGN,
            attr::VERIFY,
            attr::WRAP,
            attr::UNWRAP,
            attr::DERIVE,
        ],
        obj::CKO_PRIVATE_KEY => &[attr::SIGN, attr::DECRYPT, attr::UNWRAP, attr::DERIVE],
        _ => &[attr::VERIFY, attr::ENCRYPT, attr::WRAP, attr::DERIVE],
    };
    for u in usages {
        a.set(*u, Attr::Bool(true));
    }
    if class != obj::CKO_PUBLIC_KEY {
        a.set(attr::EXTRACTABLE, Attr::Bool(true));
        a.set(attr::SENSITIVE, Attr::Bool(true));
    }
    a.set(attr::MODIFIABLE, Attr::Bool(true));
    for (k, v) in &template.0 {
        a.set(*k, v.clone());
    }
    // What the service decides, and what describes the key's value: never the template's.
    for k in [
        attr::LOCAL,
        attr::NEVER_EXTRACTABLE,
        attr::ALWAYS_SENSITIVE,
        attr::VALUE,
        attr::CHECK_VALUE,
        attr::MODULUS,
        attr::PRIVATE_EXPONENT,
        attr::PRIME_1,
        attr::PRIME_2,
        attr::EXPONENT_1,
        attr::EXPONENT_2,
        attr::COEFFICIENT,
        attr::EC_POINT,
    ] {
        a.0.remove(&k);
    }
    a.set(attr::CLASS, Attr::Int(class));
    a.set(attr::KEY_TYPE, Attr::Int(key_type));
    a.set(attr::LOCAL, Attr::Bool(local));
    if !local {
        // Only a key generated here has a generation mechanism (set by the caller of this), and
        // only there was a template's public exponent checked against the key.
        a.0.remove(&attr::KEY_GEN_MECHANISM);
        a.0.remove(&attr::PUBLIC_EXPONENT);
    }
    if class != obj::CKO_PUBLIC_KEY {
        let extractable = a.flag(attr::EXTRACTABLE, true)?;
        let sensitive = a.flag(attr::SENSITIVE, true)?;
        a.set(attr::NEVER_EXTRACTABLE, Attr::Bool(local && !extractable));
        a.set(attr::ALWAYS_SENSITIVE, Attr::Bool(local && sensitive));
    }
    Ok(a)
}

/// Checks the length of a new secret key's value for its type.
pub fn secret_len(key_type: i64, template: &Attrs, default: Option<usize>) -> Result<usize> {
    let len = match template.int(attr::VALUE_LEN)? {
        Some(l) => usize::try_from(l).unwrap_or(usize::MAX),
        None => default.ok_or(ck(rv::CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE_LEN is required"))?,
    };
    let fits = match key_type {
        obj::CKK_AES => matches!(len, 16 | 24 | 32),
        obj::CKK_GENERIC_SECRET => (16..=512).contains(&len),
        _ => {
            return Err(ck(
                rv::CKR_TEMPLATE_INCONSISTENT,
                "unsupported secret key type",
            ));
        }
    };
    if fits {
        Ok(len)
    } else {
        Err(ck(
            rv::CKR_KEY_SIZE_RANGE,
            "key length out of range for its type",
        ))
    }
}

fn new_secret(
    s: &Grep11Sealer,
    template: &Attrs,
    key_type: i64,
    value: &[u8],
    local: bool,
) -> Result<(Vec<u8>, Attrs)> {
    let mut a = key_attrs(template, obj::CKO_SECRET_KEY, key_type, local)?;
    a.set(attr::VALUE_LEN, Attr::Int(value.len() as i64));
    Ok((blob::seal_secret(s, &a, value)?, a))
}

fn key_pair(mech: u64, pub_t: &Attrs, priv_t: &Attrs) -> Result<Private> {
    let either = |t: u64| -> Result<Option<Vec<u8>>> {
        Ok(pub_t.bytes(t)?.or(priv_t.bytes(t)?).map(<[u8]>::to_vec))
    };
    Ok(match mech {
        m::RSA_PKCS_KEY_PAIR_GEN => {
            let bits = pub_t.int(attr::MODULUS_BITS)?.ok_or(ck(
                rv::CKR_TEMPLATE_INCOMPLETE,
                "CKA_MODULUS_BITS is required",
            ))?;
            let size = rsa::KeySize::from_bits(usize::try_from(bits).unwrap_or(0)).ok_or(ck(
                rv::CKR_KEY_SIZE_RANGE,
                "RSA keys are 2048, 3072 or 4096 bits",
            ))?;
            if let Some(e) = pub_t.int(attr::PUBLIC_EXPONENT)?
                && e != 65537
            {
                return Err(ck(
                    rv::CKR_TEMPLATE_INCONSISTENT,
                    "the public exponent must be 65537",
                ));
            }
            Private::Rsa(rsa::PrivateKey::generate(size)?)
        }
        m::EC_KEY_PAIR_GEN => match either(attr::EC_PARAMS)?.as_deref() {
            Some(der::OID_ED25519) => Private::Ed25519(ed25519::SigningKey::generate()?),
            Some(oid) => Private::Ec(ec::SigningKey::generate(
                der::curve_of(oid)
                    .ok_or(ck(rv::CKR_ATTRIBUTE_VALUE_INVALID, "unsupported curve"))?,
            )?),
            None => return Err(ck(rv::CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS is required")),
        },
        m::EC_EDWARDS_KEY_PAIR_GEN => Private::Ed25519(ed25519::SigningKey::generate()?),
        m::ML_DSA_KEY_PAIR_GEN => {
            let t = if pub_t.get(attr::PARAMETER_SET).is_some() {
                pub_t
            } else {
                priv_t
            };
            Private::MlDsa(pq::MlDsaSigningKey::generate(blob::ml_dsa_set(t)?)?)
        }
        m::ML_KEM_KEY_PAIR_GEN => {
            let t = if pub_t.get(attr::PARAMETER_SET).is_some() {
                pub_t
            } else {
                priv_t
            };
            Private::MlKem(pq::DecapsulationKey::generate(blob::ml_kem_set(t)?)?)
        }
        _ => {
            return Err(ck(
                rv::CKR_MECHANISM_INVALID,
                "not a key pair generation mechanism",
            ));
        }
    })
}

/// Seals a private key and its public key; returns (private blob, attrs, public blob, attrs).
fn seal_pair(
    s: &Grep11Sealer,
    key: &Private,
    priv_t: &Attrs,
    pub_t: &Attrs,
    local: bool,
) -> Result<(Vec<u8>, Attrs, Vec<u8>, Attrs)> {
    let public = key.public()?;
    let type_attrs = public.type_attrs();
    let key_type = match type_attrs.first() {
        Some((_, Attr::Int(t))) => *t,
        _ => obj::CKK_EC,
    };
    let mut pa = key_attrs(priv_t, obj::CKO_PRIVATE_KEY, key_type, local)?;
    let mut qa = key_attrs(pub_t, obj::CKO_PUBLIC_KEY, key_type, local)?;
    for (k, v) in type_attrs {
        pa.set(k, v.clone());
        qa.set(k, v);
    }
    Ok((
        blob::seal_private(s, &pa, key)?,
        pa,
        blob::seal_public(s, &qa, &public)?,
        qa,
    ))
}

/// ANSI X9.63 KDF (SEC 1 §3.6.1), as PKCS#11 `CKD_SHA*_KDF`.
fn x963_kdf(alg: digest::Algorithm, z: &[u8], shared: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = digest::Context::new(alg);
        ctx.update(z);
        ctx.update(&counter.to_be_bytes());
        ctx.update(shared);
        out.extend_from_slice(ctx.finish().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn agreement_curve(c: Curve) -> Result<AgreementCurve> {
    match c {
        Curve::P256 => Ok(AgreementCurve::P256),
        Curve::P384 => Ok(AgreementCurve::P384),
        Curve::P521 => Ok(AgreementCurve::P521),
        _ => Err(ck(
            rv::CKR_KEY_TYPE_INCONSISTENT,
            "ECDH is served on P-256, P-384 and P-521",
        )),
    }
}

fn derive(s: &Grep11Sealer, req: &proto::DeriveKeyRequest) -> Result<proto::DeriveKeyResponse> {
    let mechanism = req
        .mech
        .as_ref()
        .ok_or(ck(rv::CKR_MECHANISM_INVALID, "no mechanism given"))?;
    let base = blob::open(s, key_bytes(req.base_key.as_ref(), &req.base_key_bytes))?;
    base.require(attr::DERIVE)?;
    let template = Attrs::from_proto(&req.template)?;
    let key_type = template
        .int(attr::KEY_TYPE)?
        .map_or(obj::CKK_AES, |t| t as i64);
    let (value, mut checksum) = match mechanism.mechanism {
        m::ECDH1_DERIVE => {
            let Material::Private(p) = &base.material else {
                return Err(ck(
                    rv::CKR_KEY_TYPE_INCONSISTENT,
                    "ECDH needs an EC private key",
                ));
            };
            let Private::Ec(k) = p.as_ref() else {
                return Err(ck(
                    rv::CKR_KEY_TYPE_INCONSISTENT,
                    "ECDH needs an EC private key",
                ));
            };
            let (kdf, shared, peer) = match &mechanism.parameter {
                Some(Parameter::Ecdh1DeriveParameter(p)) => {
                    (p.kdf, p.shared_data.as_slice(), p.public_data.as_slice())
                }
                Some(Parameter::ParameterB(peer)) => (1, &[][..], peer.as_slice()),
                _ => {
                    return Err(ck(
                        rv::CKR_MECHANISM_PARAM_INVALID,
                        "ECDH needs the peer's public point",
                    ));
                }
            };
            let pkcs8 = k.to_pkcs8();
            let scalar = der::ec_private_scalar(&pkcs8)
                .ok_or(ck(rv::CKR_IBM_INTERNAL_ERROR, "EC key encoding"))?;
            let agreement = AgreementKey::from_private_bytes(agreement_curve(k.curve())?, scalar)?;
            let z = agreement.agree(peer).map_err(|_| {
                ck(
                    rv::CKR_MECHANISM_PARAM_INVALID,
                    "the peer point is not on the curve",
                )
            })?;
            let len = secret_len(key_type, &template, Some(z.len().min(32)))?;
            let value = match kdf {
                0 | 1 => {
                    if len > z.len() {
                        return Err(ck(rv::CKR_KEY_SIZE_RANGE, "longer than the shared secret"));
                    }
                    Zeroizing::new(z[..len].to_vec())
                }
                6 => x963_kdf(digest::Algorithm::Sha256, &z, shared, len),
                7 => x963_kdf(digest::Algorithm::Sha384, &z, shared, len),
                8 => x963_kdf(digest::Algorithm::Sha512, &z, shared, len),
                _ => return Err(ck(rv::CKR_MECHANISM_PARAM_INVALID, "unsupported KDF")),
            };
            (value, Vec::new())
        }
        m::ML_KEM => {
            let Some(Parameter::KyberKemParameter(p)) = &mechanism.parameter else {
                return Err(ck(
                    rv::CKR_MECHANISM_PARAM_INVALID,
                    "ML-KEM needs KyberKEMParm",
                ));
            };
            let private = match &base.material {
                Material::Private(k) => Some(k.as_ref()),
                _ => None,
            };
            let public = match &base.material {
                Material::Public(k, _) => Some(k),
                _ => None,
            };
            match (p.mode, public, private) {
                (1, Some(Public::MlKem(set, ek)), _) => {
                    let (ct, ss) = pq::encapsulate(*set, ek)?;
                    let len = secret_len(key_type, &template, Some(32))?;
                    if len > ss.len() {
                        return Err(ck(rv::CKR_KEY_SIZE_RANGE, "longer than the shared secret"));
                    }
                    (Zeroizing::new(ss[..len].to_vec()), ct)
                }
                (2, _, Some(Private::MlKem(dk))) => {
                    let ss = dk.decapsulate(&p.cipher_text).map_err(|_| {
                        ck(
                            rv::CKR_MECHANISM_PARAM_INVALID,
                            "not an ML-KEM ciphertext of this key",
                        )
                    })?;
                    let len = secret_len(key_type, &template, Some(32))?;
                    if len > ss.len() {
                        return Err(ck(rv::CKR_KEY_SIZE_RANGE, "longer than the shared secret"));
                    }
                    (Zeroizing::new(ss[..len].to_vec()), Vec::new())
                }
                _ => {
                    return Err(ck(
                        rv::CKR_MECHANISM_PARAM_INVALID,
                        "encapsulate with a public key, decapsulate with a private key",
                    ));
                }
            }
        }
        _ => return Err(ck(rv::CKR_MECHANISM_INVALID, "not a derivation mechanism")),
    };
    let (raw, attrs) = new_secret(s, &template, key_type, &value, false)?;
    let mut sum = ops::check_value(key_type, &value)?;
    sum.resize(3, 0);
    sum.extend_from_slice(&((value.len() * 8) as u32).to_be_bytes());
    if !checksum.is_empty() {
        // ML-KEM encapsulation: 7 bytes of check value and length, then the ciphertext.
        sum.append(&mut checksum);
    }
    Ok(proto::DeriveKeyResponse {
        new_key: Some(key_blob(&raw, &attrs)),
        new_key_bytes: raw,
        check_sum: sum,
    })
}

fn wrap(s: &Grep11Sealer, req: &proto::WrapKeyRequest) -> Result<proto::WrapKeyResponse> {
    let mech = Mech::parse(req.mech.as_ref())?;
    let key = blob::open(s, key_bytes(req.key.as_ref(), &req.key_bytes))?;
    let kek = blob::open(s, key_bytes(req.ke_k.as_ref(), &req.ke_k_bytes))?;
    kek.require(attr::WRAP)?;
    let content: Zeroizing<Vec<u8>> = match &key.material {
        Material::Secret(v) => v.clone(),
        Material::Private(p) => p.to_bytes()?,
        Material::Public(_, spki) => Zeroizing::new(spki.clone()),
    };
    if !matches!(key.material, Material::Public(..)) && !key.attrs.flag(attr::EXTRACTABLE, false)? {
        return Err(ck(rv::CKR_KEY_UNEXTRACTABLE, "the key is not extractable"));
    }
    // Only a trusted key may wrap it, and the service has none (a CKA_TRUSTED in a blob was
    // claimed by its maker, not granted).
    if !matches!(key.material, Material::Public(..))
        && key.attrs.flag(attr::WRAP_WITH_TRUSTED, false)?
    {
        return Err(ck(
            rv::CKR_KEY_NOT_WRAPPABLE,
            "the key may only be wrapped by a trusted key",
        ));
    }
    let wrapped = ops::encrypt_raw(&kek, &mech, &content).map_err(|e| match e {
        Error::Ck {
            rv: rv::CKR_KEY_TYPE_INCONSISTENT,
            ..
        } => ck(
            rv::CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            "the wrapping key does not fit the mechanism",
        ),
        other => other,
    })?;
    Ok(proto::WrapKeyResponse { wrapped })
}

/// An imported public key, refused unless its value is a key of its type: an EC point on its
/// curve (not the point at infinity; a compressed point comes back uncompressed), an Ed25519 or
/// ML-DSA key of its length, an ML-KEM key that encapsulates. RSA keys were checked by parsing.
fn checked_public(public: Public) -> Result<Public> {
    let bad = || {
        ck(
            rv::CKR_WRAPPED_KEY_INVALID,
            "the public key is not a valid key of its type",
        )
    };
    Ok(match public {
        Public::Ec(curve, point) => Public::Ec(
            curve,
            keyfort_crypto::components::ec_public_point(curve, &point).map_err(|_| bad())?,
        ),
        Public::Ed25519(k) if k.len() != ed25519::PUBLIC_KEY_LEN => return Err(bad()),
        Public::MlDsa(set, k) if k.len() != set.public_key_len() => return Err(bad()),
        Public::MlKem(set, k) => {
            pq::encapsulate(set, &k).map_err(|_| bad())?;
            Public::MlKem(set, k)
        }
        other => other,
    })
}

fn unwrap(s: &Grep11Sealer, req: &proto::UnwrapKeyRequest) -> Result<proto::UnwrapKeyResponse> {
    let mechanism = req
        .mech
        .as_ref()
        .ok_or(ck(rv::CKR_MECHANISM_INVALID, "no mechanism given"))?;
    let template = Attrs::from_proto(&req.template)?;
    if mechanism.mechanism == m::IBM_TRANSPORTKEY {
        // Public key import: the "wrapped" bytes are a plain SPKI.
        let public = checked_public(Public::from_spki(&req.wrapped)?)?;
        let type_attrs = public.type_attrs();
        let key_type = match type_attrs.first() {
            Some((_, Attr::Int(t))) => *t,
            _ => obj::CKK_EC,
        };
        let mut a = key_attrs(&template, obj::CKO_PUBLIC_KEY, key_type, false)?;
        for (k, v) in type_attrs {
            a.set(k, v);
        }
        let raw = blob::seal_public(s, &a, &public)?;
        return Ok(proto::UnwrapKeyResponse {
            unwrapped: Some(key_blob(&raw, &a)),
            unwrapped_bytes: raw,
            check_sum: Vec::new(),
        });
    }
    let mech = Mech::parse(Some(mechanism))?;
    let kek = blob::open(s, key_bytes(req.ke_k.as_ref(), &req.ke_k_bytes))?;
    kek.require(attr::UNWRAP)?;
    let plain = ops::decrypt_raw(&kek, &mech, &req.wrapped).map_err(|e| match e {
        Error::Ck {
            rv: rv::CKR_KEY_TYPE_INCONSISTENT,
            ..
        } => ck(
            rv::CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            "the unwrapping key does not fit the mechanism",
        ),
        Error::Crypto(_) => ck(
            rv::CKR_WRAPPED_KEY_INVALID,
            "the wrapped key does not decrypt",
        ),
        other => other,
    })?;
    let class = template
        .int(attr::CLASS)?
        .ok_or(ck(rv::CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is required"))? as i64;
    let key_type = template
        .int(attr::KEY_TYPE)?
        .ok_or(ck(rv::CKR_TEMPLATE_INCOMPLETE, "CKA_KEY_TYPE is required"))?
        as i64;
    match class {
        obj::CKO_SECRET_KEY => {
            let mut t = template.clone();
            t.0.remove(&attr::VALUE_LEN);
            secret_len(key_type, &t, Some(plain.len()))
                .map_err(|_| ck(rv::CKR_WRAPPED_KEY_INVALID, "wrong length for the key type"))?;
            let (raw, attrs) = new_secret(s, &t, key_type, &plain, false)?;
            let mut sum = ops::check_value(key_type, &plain)?;
            sum.resize(3, 0);
            sum.extend_from_slice(&((plain.len() * 8) as u32).to_be_bytes());
            Ok(proto::UnwrapKeyResponse {
                unwrapped: Some(key_blob(&raw, &attrs)),
                unwrapped_bytes: raw,
                check_sum: sum,
            })
        }
        obj::CKO_PRIVATE_KEY => {
            let key = Private::from_bytes(&template, &plain)?;
            let (raw, attrs, _, _) = seal_pair(s, &key, &template, &Attrs::default(), false)?;
            Ok(proto::UnwrapKeyResponse {
                unwrapped: Some(key_blob(&raw, &attrs)),
                unwrapped_bytes: raw,
                check_sum: Vec::new(),
            })
        }
        _ => Err(ck(
            rv::CKR_TEMPLATE_INCONSISTENT,
            "only secret and private keys unwrap",
        )),
    }
}

fn get_attributes(
    s: &Grep11Sealer,
    req: &proto::GetAttributeValueRequest,
) -> Result<proto::GetAttributeValueResponse> {
    let key = blob::open(s, &req.object)?;
    let mut all = key.attrs.clone();
    if let Material::Public(p, spki) = &key.material {
        if let Public::Ec(_, point) = p {
            all.set(attr::EC_POINT, Attr::Bytes(der::tlv(0x04, point)));
        }
        all.set(0x8002_0002, Attr::Bytes(spki.clone()));
    }
    let mut wanted: Vec<u64> = req
        .attributes_bytes
        .keys()
        .chain(req.attributes.keys())
        .copied()
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = Attrs::default();
    if wanted.is_empty() {
        out = all;
    } else {
        for t in wanted {
            if t == attr::VALUE && !matches!(key.material, Material::Public(..)) {
                return Err(ck(0x11, "CKA_VALUE is sensitive"));
            }
            let v = all.get(t).ok_or(ck(
                rv::CKR_ATTRIBUTE_TYPE_INVALID,
                "the key has no such attribute",
            ))?;
            out.set(t, v.clone());
        }
    }
    Ok(proto::GetAttributeValueResponse {
        attributes_bytes: out
            .0
            .iter()
            .map(|(k, v)| (*k, Attrs::raw_bytes(v)))
            .collect(),
        attributes: out.to_proto(),
    })
}

fn set_attributes(
    s: &Grep11Sealer,
    req: &proto::SetAttributeValueRequest,
) -> Result<proto::SetAttributeValueResponse> {
    let key = blob::open(s, &req.object)?;
    let changes = Attrs::from_proto(&req.attributes)?;
    if !key.attrs.flag(attr::MODIFIABLE, false)? {
        return Err(ck(rv::CKR_ATTRIBUTE_READ_ONLY, "the key is not modifiable"));
    }
    for (t, v) in &changes.0 {
        let mut one = Attrs::default();
        one.set(*t, v.clone());
        match *t {
            attr::LABEL | attr::ID => {
                one.bytes(*t)?;
            }
            attr::TOKEN
            | attr::PRIVATE
            | attr::ENCRYPT
            | attr::DECRYPT
            | attr::WRAP
            | attr::UNWRAP
            | attr::SIGN
            | attr::VERIFY
            | attr::DERIVE => {
                one.bool(*t)?;
            }
            attr::EXTRACTABLE | attr::MODIFIABLE => {
                if one.bool(*t)? == Some(true) && !key.attrs.flag(*t, false)? {
                    return Err(ck(
                        rv::CKR_ATTRIBUTE_READ_ONLY,
                        "can only be changed to false",
                    ));
                }
            }
            attr::SENSITIVE => {
                if one.bool(*t)? == Some(false) && key.attrs.flag(*t, false)? {
                    return Err(ck(
                        rv::CKR_ATTRIBUTE_READ_ONLY,
                        "can only be changed to true",
                    ));
                }
            }
            attr::CLASS
            | attr::KEY_TYPE
            | attr::VALUE_LEN
            | attr::EC_PARAMS
            | attr::MODULUS_BITS
            | attr::LOCAL
            | attr::NEVER_EXTRACTABLE
            | attr::ALWAYS_SENSITIVE
            | attr::PARAMETER_SET
            | attr::VALUE => {
                return Err(ck(
                    rv::CKR_ATTRIBUTE_READ_ONLY,
                    "the attribute cannot be changed",
                ));
            }
            _ => {
                return Err(ck(
                    rv::CKR_ATTRIBUTE_TYPE_INVALID,
                    "the attribute cannot be set",
                ));
            }
        }
    }
    let mut attrs = key.attrs.clone();
    for (t, v) in changes.0 {
        attrs.set(t, v);
    }
    if attrs.0.len() > crate::attrs::MAX_ATTRS {
        return Err(ck(rv::CKR_TEMPLATE_INCONSISTENT, "too many attributes"));
    }
    Ok(proto::SetAttributeValueResponse {
        object: blob::reseal(s, &attrs, &key.material)?,
    })
}

fn reencrypt(
    s: &Grep11Sealer,
    req: &proto::ReencryptSingleRequest,
) -> Result<proto::ReencryptSingleResponse> {
    let dec_mech = Mech::parse(req.dec_mech.as_ref())?;
    let enc_mech = Mech::parse(req.enc_mech.as_ref())?;
    let dec_key = blob::open(s, key_bytes(req.dec_key.as_ref(), &[]))?;
    let enc_key = blob::open(s, key_bytes(req.enc_key.as_ref(), &[]))?;
    let plain = ops::decrypt(&dec_key, &dec_mech, &req.ciphered)?;
    Ok(proto::ReencryptSingleResponse {
        reciphered: ops::encrypt(&enc_key, &enc_mech, &plain)?,
    })
}

fn rewrap(
    s: &Grep11Sealer,
    req: &proto::RewrapKeyBlobRequest,
) -> Result<proto::RewrapKeyBlobResponse> {
    let key = blob::open(
        s,
        key_bytes(req.wrapped_key.as_ref(), &req.wrapped_key_bytes),
    )?;
    let raw = blob::reseal(s, &key.attrs, &key.material)?;
    Ok(proto::RewrapKeyBlobResponse {
        rewrapped_key: Some(key_blob(&raw, &key.attrs)),
        rewrapped_key_bytes: raw,
    })
}

#[tonic::async_trait]
impl Crypto for CryptoService {
    async fn generate_random(
        &self,
        req: Request<proto::GenerateRandomRequest>,
    ) -> Reply<proto::GenerateRandomResponse> {
        ok(async {
            self.caller(&req).await?;
            let len = req.get_ref().len;
            if len == 0 || len > MAX_RANDOM {
                return Err(ck(rv::CKR_ARGUMENTS_BAD, "length must be 1 to 1048576"));
            }
            Ok(proto::GenerateRandomResponse {
                rnd: rng::random_bytes(len as usize)?.to_vec(),
            })
        }
        .await)
    }

    async fn digest_init(
        &self,
        req: Request<proto::DigestInitRequest>,
    ) -> Reply<proto::DigestInitResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let mech = req.get_ref().mech.clone();
            if !matches!(Mech::parse(mech.as_ref())?, Mech::Digest(_)) {
                return Err(ck(rv::CKR_MECHANISM_INVALID, "not a digest mechanism"));
            }
            let state = State::new(Op::Digest, mech.unwrap_or_default(), Vec::new());
            Ok(proto::DigestInitResponse {
                state: seal_state(&s, &state)?,
            })
        }
        .await)
    }

    async fn digest(&self, req: Request<proto::DigestRequest>) -> Reply<proto::DigestResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Digest)?;
            st.push(&r.data)?;
            Ok(proto::DigestResponse {
                digest: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn digest_update(
        &self,
        req: Request<proto::DigestUpdateRequest>,
    ) -> Reply<proto::DigestUpdateResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Digest)?;
            st.push(&r.data)?;
            Ok(proto::DigestUpdateResponse {
                state: seal_state(&s, &st)?,
            })
        }
        .await)
    }

    async fn digest_key(
        &self,
        req: Request<proto::DigestKeyRequest>,
    ) -> Reply<proto::DigestKeyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Digest)?;
            let key = blob::open(&s, key_bytes(r.key.as_ref(), &r.key_bytes))?;
            if !key.attrs.flag(attr::EXTRACTABLE, false)? {
                return Err(ck(
                    rv::CKR_KEY_UNEXTRACTABLE,
                    "only extractable secret keys can be digested",
                ));
            }
            st.push(key.secret()?)?;
            Ok(proto::DigestKeyResponse {
                state: seal_state(&s, &st)?,
            })
        }
        .await)
    }

    async fn digest_final(
        &self,
        req: Request<proto::DigestFinalRequest>,
    ) -> Reply<proto::DigestFinalResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let st = open_state(&s, &req.get_ref().state, Op::Digest)?;
            Ok(proto::DigestFinalResponse {
                digest: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn digest_single(
        &self,
        req: Request<proto::DigestSingleRequest>,
    ) -> Reply<proto::DigestSingleResponse> {
        ok(async {
            self.caller(&req).await?;
            let r = req.get_ref();
            Ok(proto::DigestSingleResponse {
                digest: ops::digest(&Mech::parse(r.mech.as_ref())?, &r.data)?,
            })
        }
        .await)
    }

    async fn encrypt_init(
        &self,
        req: Request<proto::EncryptInitRequest>,
    ) -> Reply<proto::EncryptInitResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let state = init(
                &s,
                Op::Encrypt,
                r.mech.as_ref(),
                key_bytes(r.key.as_ref(), &r.key_bytes),
            )?;
            Ok(proto::EncryptInitResponse { state })
        }
        .await)
    }

    async fn decrypt_init(
        &self,
        req: Request<proto::DecryptInitRequest>,
    ) -> Reply<proto::DecryptInitResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let state = init(
                &s,
                Op::Decrypt,
                r.mech.as_ref(),
                key_bytes(r.key.as_ref(), &r.key_bytes),
            )?;
            Ok(proto::DecryptInitResponse { state })
        }
        .await)
    }

    async fn encrypt_update(
        &self,
        req: Request<proto::EncryptUpdateRequest>,
    ) -> Reply<proto::EncryptUpdateResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Encrypt)?;
            let ciphered = update_crypt(&s, &mut st, &r.plain)?;
            Ok(proto::EncryptUpdateResponse {
                state: seal_state(&s, &st)?,
                ciphered,
            })
        }
        .await)
    }

    async fn decrypt_update(
        &self,
        req: Request<proto::DecryptUpdateRequest>,
    ) -> Reply<proto::DecryptUpdateResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Decrypt)?;
            let plain = update_crypt(&s, &mut st, &r.ciphered)?;
            Ok(proto::DecryptUpdateResponse {
                state: seal_state(&s, &st)?,
                plain,
            })
        }
        .await)
    }

    async fn encrypt(&self, req: Request<proto::EncryptRequest>) -> Reply<proto::EncryptResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Encrypt)?;
            st.push(&r.plain)?;
            Ok(proto::EncryptResponse {
                ciphered: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn decrypt(&self, req: Request<proto::DecryptRequest>) -> Reply<proto::DecryptResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Decrypt)?;
            st.push(&r.ciphered)?;
            Ok(proto::DecryptResponse {
                plain: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn encrypt_final(
        &self,
        req: Request<proto::EncryptFinalRequest>,
    ) -> Reply<proto::EncryptFinalResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let st = open_state(&s, &req.get_ref().state, Op::Encrypt)?;
            Ok(proto::EncryptFinalResponse {
                ciphered: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn decrypt_final(
        &self,
        req: Request<proto::DecryptFinalRequest>,
    ) -> Reply<proto::DecryptFinalResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let st = open_state(&s, &req.get_ref().state, Op::Decrypt)?;
            Ok(proto::DecryptFinalResponse {
                plain: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn encrypt_single(
        &self,
        req: Request<proto::EncryptSingleRequest>,
    ) -> Reply<proto::EncryptSingleResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let key = blob::open(&s, key_bytes(r.key.as_ref(), &r.key_bytes))?;
            Ok(proto::EncryptSingleResponse {
                ciphered: ops::encrypt(&key, &Mech::parse(r.mech.as_ref())?, &r.plain)?,
            })
        }
        .await)
    }

    async fn decrypt_single(
        &self,
        req: Request<proto::DecryptSingleRequest>,
    ) -> Reply<proto::DecryptSingleResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let key = blob::open(&s, key_bytes(r.key.as_ref(), &r.key_bytes))?;
            Ok(proto::DecryptSingleResponse {
                plain: ops::decrypt(&key, &Mech::parse(r.mech.as_ref())?, &r.ciphered)?.to_vec(),
            })
        }
        .await)
    }

    async fn sign_init(
        &self,
        req: Request<proto::SignInitRequest>,
    ) -> Reply<proto::SignInitResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let state = init(
                &s,
                Op::Sign,
                r.mech.as_ref(),
                key_bytes(r.priv_key.as_ref(), &r.priv_key_bytes),
            )?;
            Ok(proto::SignInitResponse { state })
        }
        .await)
    }

    async fn verify_init(
        &self,
        req: Request<proto::VerifyInitRequest>,
    ) -> Reply<proto::VerifyInitResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let state = init(
                &s,
                Op::Verify,
                r.mech.as_ref(),
                key_bytes(r.pub_key.as_ref(), &r.pub_key_bytes),
            )?;
            Ok(proto::VerifyInitResponse { state })
        }
        .await)
    }

    async fn sign_update(
        &self,
        req: Request<proto::SignUpdateRequest>,
    ) -> Reply<proto::SignUpdateResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Sign)?;
            st.push(&r.data)?;
            Ok(proto::SignUpdateResponse {
                state: seal_state(&s, &st)?,
            })
        }
        .await)
    }

    async fn verify_update(
        &self,
        req: Request<proto::VerifyUpdateRequest>,
    ) -> Reply<proto::VerifyUpdateResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Verify)?;
            st.push(&r.data)?;
            Ok(proto::VerifyUpdateResponse {
                state: seal_state(&s, &st)?,
            })
        }
        .await)
    }

    async fn sign_final(
        &self,
        req: Request<proto::SignFinalRequest>,
    ) -> Reply<proto::SignFinalResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let st = open_state(&s, &req.get_ref().state, Op::Sign)?;
            Ok(proto::SignFinalResponse {
                signature: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn verify_final(
        &self,
        req: Request<proto::VerifyFinalRequest>,
    ) -> Reply<proto::VerifyFinalResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let st = open_state(&s, &r.state, Op::Verify)?;
            finish(&s, &st, &r.signature)?;
            Ok(proto::VerifyFinalResponse {})
        }
        .await)
    }

    async fn sign(&self, req: Request<proto::SignRequest>) -> Reply<proto::SignResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Sign)?;
            st.push(&r.data)?;
            Ok(proto::SignResponse {
                signature: finish(&s, &st, &[])?,
            })
        }
        .await)
    }

    async fn verify(&self, req: Request<proto::VerifyRequest>) -> Reply<proto::VerifyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let mut st = open_state(&s, &r.state, Op::Verify)?;
            st.push(&r.data)?;
            finish(&s, &st, &r.signature)?;
            Ok(proto::VerifyResponse {})
        }
        .await)
    }

    async fn sign_single(
        &self,
        req: Request<proto::SignSingleRequest>,
    ) -> Reply<proto::SignSingleResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let key = blob::open(&s, key_bytes(r.priv_key.as_ref(), &r.priv_key_bytes))?;
            Ok(proto::SignSingleResponse {
                signature: ops::sign(&key, &Mech::parse(r.mech.as_ref())?, &r.data)?,
            })
        }
        .await)
    }

    async fn verify_single(
        &self,
        req: Request<proto::VerifySingleRequest>,
    ) -> Reply<proto::VerifySingleResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            let r = req.get_ref();
            let key = blob::open(&s, key_bytes(r.pub_key.as_ref(), &r.pub_key_bytes))?;
            ops::verify(&key, &Mech::parse(r.mech.as_ref())?, &r.data, &r.signature)?;
            Ok(proto::VerifySingleResponse {})
        }
        .await)
    }

    async fn reencrypt_single(
        &self,
        req: Request<proto::ReencryptSingleRequest>,
    ) -> Reply<proto::ReencryptSingleResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            reencrypt(&s, req.get_ref())
        }
        .await)
    }

    async fn generate_key(
        &self,
        req: Request<proto::GenerateKeyRequest>,
    ) -> Reply<proto::GenerateKeyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::CreateKey).await?;
            let r = req.get_ref();
            let mechanism = r
                .mech
                .as_ref()
                .ok_or(ck(rv::CKR_MECHANISM_INVALID, "no mechanism given"))?;
            let template = Attrs::from_proto(&r.template)?;
            let key_type = match mechanism.mechanism {
                m::AES_KEY_GEN => obj::CKK_AES,
                m::GENERIC_SECRET_KEY_GEN => obj::CKK_GENERIC_SECRET,
                _ => {
                    return Err(ck(
                        rv::CKR_MECHANISM_INVALID,
                        "not a key generation mechanism",
                    ));
                }
            };
            let len = secret_len(key_type, &template, None)?;
            let value = rng::random_bytes(len)?;
            let mut t = template;
            t.set(
                attr::KEY_GEN_MECHANISM,
                Attr::Int(mechanism.mechanism as i64),
            );
            let (raw, attrs) = new_secret(&s, &t, key_type, &value, true)?;
            Ok(proto::GenerateKeyResponse {
                key: Some(key_blob(&raw, &attrs)),
                key_bytes: raw,
                check_sum: ops::check_value(key_type, &value)?,
            })
        }
        .await)
    }

    async fn generate_key_pair(
        &self,
        req: Request<proto::GenerateKeyPairRequest>,
    ) -> Reply<proto::GenerateKeyPairResponse> {
        ok(async {
            let s = self.sealer(&req, Action::CreateKey).await?;
            let r = req.into_inner();
            let mechanism = r
                .mech
                .as_ref()
                .ok_or(ck(rv::CKR_MECHANISM_INVALID, "no mechanism given"))?
                .mechanism;
            let mut priv_t = Attrs::from_proto(&r.priv_key_template)?;
            let mut pub_t = Attrs::from_proto(&r.pub_key_template)?;
            priv_t.set(attr::KEY_GEN_MECHANISM, Attr::Int(mechanism as i64));
            pub_t.set(attr::KEY_GEN_MECHANISM, Attr::Int(mechanism as i64));
            // Key generation (RSA especially) is slow: off the async workers.
            tokio::task::spawn_blocking(move || {
                let key = key_pair(mechanism, &pub_t, &priv_t)?;
                let (pk, pa, qk, qa) = seal_pair(&s, &key, &priv_t, &pub_t, true)?;
                Ok(proto::GenerateKeyPairResponse {
                    priv_key: Some(key_blob(&pk, &pa)),
                    pub_key: Some(key_blob(&qk, &qa)),
                    priv_key_bytes: pk,
                    pub_key_bytes: qk,
                })
            })
            .await
            .map_err(|_| ck(rv::CKR_IBM_INTERNAL_ERROR, "key generation task failed"))?
        }
        .await)
    }

    async fn wrap_key(&self, req: Request<proto::WrapKeyRequest>) -> Reply<proto::WrapKeyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            wrap(&s, req.get_ref())
        }
        .await)
    }

    async fn unwrap_key(
        &self,
        req: Request<proto::UnwrapKeyRequest>,
    ) -> Reply<proto::UnwrapKeyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::CreateKey).await?;
            unwrap(&s, req.get_ref())
        }
        .await)
    }

    async fn derive_key(
        &self,
        req: Request<proto::DeriveKeyRequest>,
    ) -> Reply<proto::DeriveKeyResponse> {
        ok(async {
            let s = self.sealer(&req, Action::CreateKey).await?;
            derive(&s, req.get_ref())
        }
        .await)
    }

    async fn get_mechanism_list(
        &self,
        req: Request<proto::GetMechanismListRequest>,
    ) -> Reply<proto::GetMechanismListResponse> {
        ok(async {
            self.caller(&req).await?;
            Ok(proto::GetMechanismListResponse {
                mechs: mech::MECHANISMS.iter().map(|e| e.0).collect(),
            })
        }
        .await)
    }

    async fn get_mechanism_info(
        &self,
        req: Request<proto::GetMechanismInfoRequest>,
    ) -> Reply<proto::GetMechanismInfoResponse> {
        ok(async {
            self.caller(&req).await?;
            Ok(proto::GetMechanismInfoResponse {
                mech_info: Some(mech::info(req.get_ref().mech)?),
            })
        }
        .await)
    }

    async fn get_attribute_value(
        &self,
        req: Request<proto::GetAttributeValueRequest>,
    ) -> Reply<proto::GetAttributeValueResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            get_attributes(&s, req.get_ref())
        }
        .await)
    }

    async fn set_attribute_value(
        &self,
        req: Request<proto::SetAttributeValueRequest>,
    ) -> Reply<proto::SetAttributeValueResponse> {
        ok(async {
            let s = self.sealer(&req, Action::CreateKey).await?;
            set_attributes(&s, req.get_ref())
        }
        .await)
    }

    async fn login(&self, req: Request<proto::LoginRequest>) -> Reply<proto::LoginResponse> {
        ok(async {
            self.caller(&req).await?;
            Err(ck(
                rv::CKR_FUNCTION_NOT_SUPPORTED,
                "EP11 login sessions are not served; authenticate with a bearer token",
            ))
        }
        .await)
    }

    async fn logout(&self, req: Request<proto::LogoutRequest>) -> Reply<proto::LogoutResponse> {
        ok(async {
            self.caller(&req).await?;
            Err(ck(
                rv::CKR_FUNCTION_NOT_SUPPORTED,
                "EP11 login sessions are not served",
            ))
        }
        .await)
    }

    async fn rewrap_key_blob(
        &self,
        req: Request<proto::RewrapKeyBlobRequest>,
    ) -> Reply<proto::RewrapKeyBlobResponse> {
        ok(async {
            let s = self.sealer(&req, Action::UseKey).await?;
            rewrap(&s, req.get_ref())
        }
        .await)
    }
}
