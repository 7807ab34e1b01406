//! Key and state blobs: what clients hold instead of server-side objects (grep11 spec §7, §9).
//!
//! Secret and private key blob:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `KF11` |
//! | 1 | kind: 1 secret key, 2 private key, 4 operation state |
//! | 8 | wrapping key id (the instance master key's check value) |
//! | 4 | attribute length n, u32 big-endian |
//! | n | attributes, canonical encoding (`Attrs::encode`) |
//! | rest | `keyfort-crypto` sealed blob of the key material (PKCS #8 or raw bytes) |
//!
//! A public key blob is the DER SubjectPublicKeyInfo followed by the same trailer with kind 3
//! and a sealed blob of nothing: its GCM tag authenticates the SPKI and the attributes ("MACed
//! SPKI"). Clients that parse the leading DER see a plain SPKI. The sealed part binds the
//! instance, the blob kind, the attributes (and the SPKI), so any edit or a blob from another
//! instance fails to open.

use std::sync::Arc;

use keyfort_core::grep11::{BlobRejection, Grep11Sealer, WKID_LEN};
use keyfort_crypto::ec::{self, Curve};
use keyfort_crypto::pq::{DecapsulationKey, MlDsa, MlDsaSigningKey, MlKem};
use keyfort_crypto::{ed25519, rsa};
use zeroize::Zeroizing;

use crate::attrs::{Attrs, MAX_ATTRS, take};
use crate::ck::{attr, obj, rv};
use crate::der;
use crate::error::{Error, Result, ck};

const MAGIC: &[u8; 4] = b"KF11";
const KIND_SECRET: u8 = 1;
const KIND_PRIVATE: u8 = 2;
const KIND_PUBLIC: u8 = 3;
const KIND_STATE: u8 = 4;
/// Largest blob accepted (the largest key is an ML-DSA-87 private key in PKCS #8).
pub const MAX_BLOB: usize = 16 * 1024;
/// Largest operation state accepted (buffered multi-part data included).
pub const MAX_STATE: usize = 1024 * 1024 + 64 * 1024;

const OBJECT_KEY: &str = "grep11/key";
const OBJECT_PUBLIC: &str = "grep11/public-key";
const OBJECT_STATE: &str = "grep11/state";

/// A private key of any supported type.
pub enum Private {
    Rsa(rsa::PrivateKey),
    Ec(ec::SigningKey),
    Ed25519(ed25519::SigningKey),
    MlDsa(MlDsaSigningKey),
    MlKem(DecapsulationKey),
}

/// A public key of any supported type.
pub enum Public {
    Rsa(rsa::PublicKey),
    Ec(Curve, Vec<u8>),
    Ed25519(Vec<u8>),
    MlDsa(MlDsa, Vec<u8>),
    MlKem(MlKem, Vec<u8>),
}

/// Opened key material.
pub enum Material {
    Secret(Zeroizing<Vec<u8>>),
    Private(Arc<Private>),
    Public(Public, Vec<u8>),
}

/// An opened key blob.
pub struct Key {
    pub attrs: Attrs,
    pub material: Material,
    /// Sealed under the current master key (false: RewrapKeyBlob would renew it).
    pub current: bool,
}

/// Restrictions the service does not enforce, with the use each governs (`None`: every use).
/// New keys cannot carry them (their templates are refused), but a blob sealed before that may.
const UNENFORCED: [(u64, Option<u64>); 4] = [
    (attr::ALLOWED_MECHANISMS, None),
    (attr::WRAP_TEMPLATE, Some(attr::WRAP)),
    (attr::UNWRAP_TEMPLATE, Some(attr::UNWRAP)),
    (attr::DERIVE_TEMPLATE, Some(attr::DERIVE)),
];

impl Key {
    /// Refuses the key unless its usage attribute `usage` is true, and unless it carries no
    /// restriction on that use that the service does not enforce ([`UNENFORCED`]): such a key
    /// is refused the use rather than used as if the restriction held.
    pub fn require(&self, usage: u64) -> Result<()> {
        if !self.attrs.flag(usage, false)? {
            return Err(ck(
                rv::CKR_KEY_FUNCTION_NOT_PERMITTED,
                "the key's attributes do not allow this use",
            ));
        }
        let unenforced = UNENFORCED
            .iter()
            .any(|(t, governs)| self.attrs.get(*t).is_some() && governs.is_none_or(|g| g == usage));
        if unenforced {
            return Err(ck(
                rv::CKR_KEY_FUNCTION_NOT_PERMITTED,
                "the key carries allowed mechanisms or a wrap, unwrap or derive template, which \
                 this service does not enforce: make the key again without them",
            ));
        }
        Ok(())
    }

    pub fn key_type(&self) -> i64 {
        self.attrs
            .int(attr::KEY_TYPE)
            .ok()
            .flatten()
            .map_or(-1, |v| v as i64)
    }

    pub fn secret(&self) -> Result<&[u8]> {
        match &self.material {
            Material::Secret(s) => Ok(s),
            _ => Err(ck(
                rv::CKR_KEY_TYPE_INCONSISTENT,
                "a secret key is required",
            )),
        }
    }
}

impl Private {
    /// The PKCS #8 form (raw bytes for ML-KEM), as sealed and as wrapped.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(match self {
            Private::Rsa(k) => k.to_pkcs8(),
            Private::Ec(k) => k.to_pkcs8(),
            Private::Ed25519(k) => k.to_pkcs8()?,
            Private::MlDsa(k) => k.to_pkcs8()?,
            Private::MlKem(k) => k.to_bytes()?,
        })
    }

    /// Parses the private key an attribute set describes.
    pub fn from_bytes(attrs: &Attrs, bytes: &[u8]) -> Result<Private> {
        let bad = |_| {
            ck(
                rv::CKR_WRAPPED_KEY_INVALID,
                "the key does not match its key type",
            )
        };
        let kt = attrs.int(attr::KEY_TYPE)?.map(|v| v as i64);
        Ok(match kt {
            Some(obj::CKK_RSA) => Private::Rsa(rsa::PrivateKey::from_pkcs8(bytes).map_err(bad)?),
            Some(obj::CKK_EC_EDWARDS) => {
                Private::Ed25519(ed25519::SigningKey::from_pkcs8(bytes).map_err(bad)?)
            }
            Some(obj::CKK_EC) => match attrs.bytes(attr::EC_PARAMS)? {
                Some(der::OID_ED25519) => {
                    Private::Ed25519(ed25519::SigningKey::from_pkcs8(bytes).map_err(bad)?)
                }
                Some(oid) => {
                    let curve = der::curve_of(oid)
                        .ok_or(ck(rv::CKR_ATTRIBUTE_VALUE_INVALID, "unsupported curve"))?;
                    Private::Ec(ec::SigningKey::from_pkcs8(curve, bytes).map_err(bad)?)
                }
                None => return Err(ck(rv::CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS is required")),
            },
            Some(obj::CKK_ML_DSA) => {
                Private::MlDsa(MlDsaSigningKey::from_pkcs8(ml_dsa_set(attrs)?, bytes).map_err(bad)?)
            }
            Some(obj::CKK_ML_KEM) => Private::MlKem(
                DecapsulationKey::from_bytes(ml_kem_set(attrs)?, bytes).map_err(bad)?,
            ),
            _ => {
                return Err(ck(
                    rv::CKR_TEMPLATE_INCONSISTENT,
                    "unsupported private key type",
                ));
            }
        })
    }

    /// The matching public key.
    pub fn public(&self) -> Result<Public> {
        Ok(match self {
            Private::Rsa(k) => Public::Rsa(rsa::PublicKey::from_der(k.public_key().to_spki_der())?),
            Private::Ec(k) => Public::Ec(k.curve(), k.public_key().to_vec()),
            Private::Ed25519(k) => Public::Ed25519(k.public_key().to_vec()),
            Private::MlDsa(k) => Public::MlDsa(k.parameter_set(), k.public_key()),
            Private::MlKem(k) => Public::MlKem(k.parameter_set(), k.encapsulation_key()?),
        })
    }
}

impl Public {
    /// The DER SubjectPublicKeyInfo (Ed25519 in the id-ecPublicKey shape GREP11 clients parse).
    pub fn spki(&self) -> Vec<u8> {
        match self {
            Public::Rsa(k) => k.to_spki_der().to_vec(),
            Public::Ec(c, point) => der::spki(
                &[der::OID_EC_PUBLIC_KEY, der::curve_oid(*c)].concat(),
                point,
            ),
            Public::Ed25519(k) => {
                der::spki(&[der::OID_EC_PUBLIC_KEY, der::OID_ED25519].concat(), k)
            }
            Public::MlDsa(p, k) => der::spki(&der::ml_dsa_oid(*p), k),
            Public::MlKem(p, k) => der::spki(&der::ml_kem_oid(*p), k),
        }
    }

    /// Parses a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Result<Public> {
        let bad = || {
            ck(
                rv::CKR_WRAPPED_KEY_INVALID,
                "not a supported SubjectPublicKeyInfo",
            )
        };
        let p = der::parse_spki(spki).ok_or_else(bad)?;
        const RSA: &[u8] = &[
            0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
        ];
        Ok(match p.algorithm {
            RSA => Public::Rsa(rsa::PublicKey::from_der(spki).map_err(|_| bad())?),
            der::OID_ED25519 => Public::Ed25519(p.key.to_vec()),
            der::OID_EC_PUBLIC_KEY if p.parameters == der::OID_ED25519 => {
                Public::Ed25519(p.key.to_vec())
            }
            der::OID_EC_PUBLIC_KEY => {
                Public::Ec(der::curve_of(p.parameters).ok_or_else(bad)?, p.key.to_vec())
            }
            oid => {
                let set = [MlDsa::MlDsa44, MlDsa::MlDsa65, MlDsa::MlDsa87]
                    .into_iter()
                    .find(|s| der::ml_dsa_oid(*s) == oid);
                let kem = [MlKem::MlKem768, MlKem::MlKem1024]
                    .into_iter()
                    .find(|s| der::ml_kem_oid(*s) == oid);
                match (set, kem) {
                    (Some(s), _) => Public::MlDsa(s, p.key.to_vec()),
                    (_, Some(k)) => Public::MlKem(k, p.key.to_vec()),
                    _ => return Err(bad()),
                }
            }
        })
    }

    /// The attributes a public key of this type carries.
    pub fn type_attrs(&self) -> Vec<(u64, crate::attrs::Attr)> {
        use crate::attrs::Attr::{Bytes, Int};
        match self {
            Public::Rsa(k) => vec![
                (attr::KEY_TYPE, Int(obj::CKK_RSA)),
                (attr::MODULUS_BITS, Int((k.modulus_len() * 8) as i64)),
            ],
            Public::Ec(c, _) => vec![
                (attr::KEY_TYPE, Int(obj::CKK_EC)),
                (attr::EC_PARAMS, Bytes(der::curve_oid(*c).to_vec())),
            ],
            Public::Ed25519(_) => vec![
                (attr::KEY_TYPE, Int(obj::CKK_EC)),
                (attr::EC_PARAMS, Bytes(der::OID_ED25519.to_vec())),
            ],
            Public::MlDsa(p, _) => vec![
                (attr::KEY_TYPE, Int(obj::CKK_ML_DSA)),
                (attr::PARAMETER_SET, Int(ml_dsa_code(*p))),
            ],
            Public::MlKem(p, _) => vec![
                (attr::KEY_TYPE, Int(obj::CKK_ML_KEM)),
                (attr::PARAMETER_SET, Int(ml_kem_code(*p))),
            ],
        }
    }
}

pub fn ml_dsa_code(p: MlDsa) -> i64 {
    match p {
        MlDsa::MlDsa44 => obj::CKP_ML_DSA_44,
        MlDsa::MlDsa65 => obj::CKP_ML_DSA_65,
        _ => obj::CKP_ML_DSA_87,
    }
}

pub fn ml_kem_code(p: MlKem) -> i64 {
    match p {
        MlKem::MlKem768 => obj::CKP_ML_KEM_768,
        _ => obj::CKP_ML_KEM_1024,
    }
}

/// The ML-DSA parameter set of `CKA_PARAMETER_SET` (default ML-DSA-65).
pub fn ml_dsa_set(attrs: &Attrs) -> Result<MlDsa> {
    match attrs.int(attr::PARAMETER_SET)?.map(|v| v as i64) {
        Some(obj::CKP_ML_DSA_44) => Ok(MlDsa::MlDsa44),
        Some(obj::CKP_ML_DSA_65) | None => Ok(MlDsa::MlDsa65),
        Some(obj::CKP_ML_DSA_87) => Ok(MlDsa::MlDsa87),
        Some(_) => Err(ck(
            rv::CKR_ATTRIBUTE_VALUE_INVALID,
            "unsupported ML-DSA parameter set",
        )),
    }
}

/// The ML-KEM parameter set of `CKA_PARAMETER_SET` (default ML-KEM-768).
pub fn ml_kem_set(attrs: &Attrs) -> Result<MlKem> {
    match attrs.int(attr::PARAMETER_SET)?.map(|v| v as i64) {
        Some(obj::CKP_ML_KEM_768) | None => Ok(MlKem::MlKem768),
        Some(obj::CKP_ML_KEM_1024) => Ok(MlKem::MlKem1024),
        Some(_) => Err(ck(
            rv::CKR_ATTRIBUTE_VALUE_INVALID,
            "unsupported ML-KEM parameter set",
        )),
    }
}

fn header(kind: u8, attrs: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(9 + attrs.len());
    h.extend_from_slice(MAGIC);
    h.push(kind);
    h.extend_from_slice(&u32::try_from(attrs.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.extend_from_slice(attrs);
    h
}

fn assemble(prefix: &[u8], kind: u8, wkid: &[u8], attrs: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 17 + attrs.len() + sealed.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(wkid);
    out.extend_from_slice(&u32::try_from(attrs.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(attrs);
    out.extend_from_slice(sealed);
    out
}

/// The canonical encoding of a blob's attributes; refused beyond [`MAX_ATTRS`], which
/// [`Attrs::decode`] would not read back (the defaults of a new key come on top of its template).
fn encode_attrs(attrs: &Attrs) -> Result<Vec<u8>> {
    if attrs.0.len() > MAX_ATTRS {
        return Err(ck(rv::CKR_TEMPLATE_INCONSISTENT, "too many attributes"));
    }
    Ok(attrs.encode())
}

/// Seals a secret key (raw value).
pub fn seal_secret(s: &Grep11Sealer, attrs: &Attrs, value: &[u8]) -> Result<Vec<u8>> {
    let a = encode_attrs(attrs)?;
    let (wkid, sealed) = s.seal(OBJECT_KEY, &header(KIND_SECRET, &a), value)?;
    Ok(assemble(&[], KIND_SECRET, &wkid, &a, &sealed))
}

/// Seals a private key.
pub fn seal_private(s: &Grep11Sealer, attrs: &Attrs, key: &Private) -> Result<Vec<u8>> {
    let a = encode_attrs(attrs)?;
    let (wkid, sealed) = s.seal(OBJECT_KEY, &header(KIND_PRIVATE, &a), &key.to_bytes()?)?;
    Ok(assemble(&[], KIND_PRIVATE, &wkid, &a, &sealed))
}

/// Makes a public key blob: SPKI ‖ authenticated trailer.
pub fn seal_public(s: &Grep11Sealer, attrs: &Attrs, key: &Public) -> Result<Vec<u8>> {
    let spki = key.spki();
    let a = encode_attrs(attrs)?;
    let bound = [spki.as_slice(), &header(KIND_PUBLIC, &a)].concat();
    let (wkid, sealed) = s.seal(OBJECT_PUBLIC, &bound, &[])?;
    Ok(assemble(&spki, KIND_PUBLIC, &wkid, &a, &sealed))
}

/// Re-seals an opened key's material under the current master key with attributes `attrs`
/// (RewrapKeyBlob, SetAttributeValue).
pub fn reseal(s: &Grep11Sealer, attrs: &Attrs, material: &Material) -> Result<Vec<u8>> {
    match material {
        Material::Secret(v) => seal_secret(s, attrs, v),
        Material::Private(p) => seal_private(s, attrs, p),
        Material::Public(p, _) => seal_public(s, attrs, p),
    }
}

/// The clear parts of a blob (see the module docs), before anything is authenticated.
pub struct Parsed<'a> {
    /// The SPKI of a public key blob (empty otherwise).
    pub spki: &'a [u8],
    pub kind: u8,
    pub wkid: &'a [u8],
    pub attrs: &'a [u8],
    pub sealed: &'a [u8],
}

/// Splits a blob into its parts; `None` if it is malformed or larger than [`MAX_STATE`].
pub fn parse(blob: &[u8]) -> Option<Parsed<'_>> {
    if blob.len() > MAX_STATE {
        return None;
    }
    let mut b = blob;
    let spki = if b.first() == Some(&0x30) {
        der::read(&mut b)?.2
    } else {
        &[]
    };
    if take(&mut b, 4)? != MAGIC {
        return None;
    }
    let kind = take(&mut b, 1)?[0];
    let wkid = take(&mut b, WKID_LEN)?;
    let len = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let attrs = take(&mut b, len)?;
    Some(Parsed {
        spki,
        kind,
        wkid,
        attrs,
        sealed: b,
    })
}

/// Opens a key blob of any kind. A blob that opened before under the same loaded master keys
/// (the same bytes: keyed by the SHA-256 of the whole blob) is not authenticated and parsed
/// again: what it opened to is kept with the instance's loaded master keys
/// ([`Grep11Sealer::opened`]) and dropped when they are (seal, master key change).
pub fn open(s: &Grep11Sealer, blob: &[u8]) -> Result<Arc<Key>> {
    if blob.is_empty() {
        return Err(ck(rv::CKR_KEY_HANDLE_INVALID, "no key given"));
    }
    if blob.len() > MAX_BLOB {
        return Err(Error::Blob(BlobRejection::Invalid));
    }
    let digest = keyfort_crypto::digest::sha256(blob);
    if let Some(key) = s.opened::<Key>(&digest) {
        return Ok(key);
    }
    let key = Arc::new(open_uncached(s, blob)?);
    s.remember_opened(digest, key.clone());
    Ok(key)
}

/// Authenticates and parses a key blob.
fn open_uncached(s: &Grep11Sealer, blob: &[u8]) -> Result<Key> {
    let p = parse(blob).ok_or(Error::Blob(BlobRejection::Invalid))?;
    let attrs = Attrs::decode(p.attrs).ok_or(Error::Blob(BlobRejection::Invalid))?;
    let h = header(p.kind, p.attrs);
    let (material, current) = match (p.kind, p.spki.is_empty()) {
        (KIND_SECRET, true) => {
            let (v, current) = s.unseal(OBJECT_KEY, &h, p.wkid, p.sealed)?;
            (Material::Secret(v), current)
        }
        (KIND_PRIVATE, true) => {
            let (v, current) = s.unseal(OBJECT_KEY, &h, p.wkid, p.sealed)?;
            let key =
                Private::from_bytes(&attrs, &v).map_err(|_| Error::Blob(BlobRejection::Invalid))?;
            (Material::Private(Arc::new(key)), current)
        }
        (KIND_PUBLIC, false) => {
            let bound = [p.spki, &h].concat();
            let (_, current) = s.unseal(OBJECT_PUBLIC, &bound, p.wkid, p.sealed)?;
            let key = Public::from_spki(p.spki).map_err(|_| Error::Blob(BlobRejection::Invalid))?;
            (Material::Public(key, p.spki.to_vec()), current)
        }
        _ => return Err(Error::Blob(BlobRejection::Invalid)),
    };
    Ok(Key {
        attrs,
        material,
        current,
    })
}

/// Seals an operation state.
pub fn seal_state(s: &Grep11Sealer, state: &[u8]) -> Result<Vec<u8>> {
    let h = header(KIND_STATE, &[]);
    let (wkid, sealed) = s.seal(OBJECT_STATE, &h, state)?;
    Ok(assemble(&[], KIND_STATE, &wkid, &[], &sealed))
}

/// Opens an operation state.
pub fn open_state(s: &Grep11Sealer, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if blob.is_empty() {
        return Err(ck(rv::CKR_OPERATION_NOT_INITIALIZED, "no state given"));
    }
    let p = parse(blob).ok_or(ck(rv::CKR_SAVED_STATE_INVALID, "not a state blob"))?;
    if p.kind != KIND_STATE || !p.spki.is_empty() || !p.attrs.is_empty() {
        return Err(ck(rv::CKR_SAVED_STATE_INVALID, "not a state blob"));
    }
    let h = header(KIND_STATE, &[]);
    Ok(s.unseal(OBJECT_STATE, &h, p.wkid, p.sealed)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attr;

    fn secret_key(extra: &[(u64, Attr)]) -> Key {
        let mut attrs = Attrs::default();
        for usage in [attr::ENCRYPT, attr::WRAP, attr::UNWRAP, attr::DERIVE] {
            attrs.set(usage, Attr::Bool(true));
        }
        for (t, v) in extra {
            attrs.set(*t, v.clone());
        }
        Key {
            attrs,
            material: Material::Secret(Zeroizing::new(vec![0; 32])),
            current: true,
        }
    }

    fn refused(key: &Key, usage: u64) -> bool {
        matches!(
            key.require(usage),
            Err(Error::Ck {
                rv: rv::CKR_KEY_FUNCTION_NOT_PERMITTED,
                ..
            })
        )
    }

    /// A blob sealed before such restrictions were refused at creation is not used as if they
    /// held: allowed mechanisms refuse every use, a template the use it governs.
    #[test]
    fn restrictions_the_service_does_not_enforce_refuse_the_uses_they_govern() {
        let plain = secret_key(&[]);
        for usage in [attr::ENCRYPT, attr::WRAP, attr::UNWRAP, attr::DERIVE] {
            assert!(plain.require(usage).is_ok());
        }
        assert!(refused(&plain, attr::SIGN), "a usage flag that is not set");

        let mechanisms = secret_key(&[(attr::ALLOWED_MECHANISMS, Attr::Bytes(vec![0; 8]))]);
        for usage in [attr::ENCRYPT, attr::WRAP, attr::UNWRAP, attr::DERIVE] {
            assert!(refused(&mechanisms, usage));
        }
        for (template, governs) in [
            (attr::WRAP_TEMPLATE, attr::WRAP),
            (attr::UNWRAP_TEMPLATE, attr::UNWRAP),
            (attr::DERIVE_TEMPLATE, attr::DERIVE),
        ] {
            let key = secret_key(&[(template, Attr::Bytes(vec![1]))]);
            for usage in [attr::ENCRYPT, attr::WRAP, attr::UNWRAP, attr::DERIVE] {
                assert_eq!(
                    refused(&key, usage),
                    usage == governs,
                    "{template:#x} {usage:#x}"
                );
            }
        }
    }
}
