//! Registering keys in the Transparent Key Formats (KMIP 1.4 §2.1.7.3–§2.1.7.11, KMIP 2.1
//! §2.1.7): the components are turned, through `keyfort-crypto`, into the form the core stores
//! (PKCS #8 for private keys, SubjectPublicKeyInfo for RSA public keys, the uncompressed point
//! for EC public keys), so the object is the same as one registered in PKCS #8, X.509 or Raw.

use keyfort_core::CoreError;
use keyfort_crypto::components::{self, RsaPrivateComponents};
use keyfort_crypto::ec::Curve;
use zeroize::Zeroizing;

use crate::message::{Invalid, Struct};
use crate::ttlv::{Item, Tag, Value};
use crate::{CryptographicAlgorithm, KeyFormatType, ObjectType, RecommendedCurve};

/// A key read from Transparent components, in the core's stored form.
pub struct Transparent {
    pub material: Zeroizing<Vec<u8>>,
    pub algorithm: CryptographicAlgorithm,
    pub bits: u32,
}

/// Whether `format` is a Transparent asymmetric key format this module reads for `t`.
pub fn handles(t: ObjectType, format: KeyFormatType) -> bool {
    matches!(
        (t, format),
        (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY
                | KeyFormatType::TRANSPARENT_EC_PRIVATE_KEY
                | KeyFormatType::TRANSPARENT_ECDSA_PRIVATE_KEY
                | KeyFormatType::TRANSPARENT_ECDH_PRIVATE_KEY
        ) | (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_RSA_PUBLIC_KEY
                | KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY
                | KeyFormatType::TRANSPARENT_ECDSA_PUBLIC_KEY
                | KeyFormatType::TRANSPARENT_ECDH_PUBLIC_KEY
        )
    )
}

fn crypto(e: keyfort_crypto::Error) -> Invalid {
    crate::error::from_core(&CoreError::Crypto(e))
}

/// A Big Integer component as an unsigned big-endian number (negative values are refused).
fn unsigned<'a>(s: &Struct<'a>, tag: Tag) -> Result<Option<&'a [u8]>, Invalid> {
    let Some(item) = s.get(tag) else {
        return Ok(None);
    };
    let Value::BigInteger(b) = &item.value else {
        return Err(Invalid::field(format!(
            "{} must be a Big Integer",
            crate::message::tag_name(tag)
        )));
    };
    let bytes = b.as_bytes();
    if bytes.first().is_some_and(|x| x & 0x80 != 0) {
        return Err(Invalid::field(format!(
            "{} must not be negative",
            crate::message::tag_name(tag)
        )));
    }
    let zeros = bytes.iter().take_while(|x| **x == 0).count();
    Ok(Some(&bytes[zeros..]))
}

fn required<'a>(s: &Struct<'a>, tag: Tag) -> Result<&'a [u8], Invalid> {
    unsigned(s, tag)?.ok_or_else(|| Invalid::missing(tag))
}

fn curve(s: &Struct<'_>) -> Result<Curve, Invalid> {
    match RecommendedCurve(s.enumeration(Tag::RECOMMENDED_CURVE)?) {
        RecommendedCurve::P_256 => Ok(Curve::P256),
        RecommendedCurve::P_384 => Ok(Curve::P384),
        RecommendedCurve::P_521 => Ok(Curve::P521),
        other => Err(Invalid::field(format!("curve {other:?} is not supported"))),
    }
}

fn curve_bits(c: Curve) -> u32 {
    match c {
        Curve::P384 => 384,
        Curve::P521 => 521,
        _ => 256,
    }
}

/// Reads the Key Material of a Transparent asymmetric key of a Register request. Formats that
/// [`handles`] does not accept for `t` are refused as Invalid Field; a Key Material that is not
/// a Structure is an Invalid Message; missing components are Missing Data; components that do
/// not form a key (inconsistent RSA components, a point off the curve, a scalar out of range)
/// are Invalid Field. Never panics, whatever the item holds.
pub fn read(t: ObjectType, format: KeyFormatType, material: &Item) -> Result<Transparent, Invalid> {
    if !handles(t, format) {
        return Err(Invalid::field(format!(
            "{format:?} is not a Transparent format of {t:?}"
        )));
    }
    let s = Struct::of(material)?;
    match (t, format) {
        (ObjectType::PRIVATE_KEY, KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY) => {
            let c = RsaPrivateComponents {
                n: required(&s, Tag::MODULUS)?,
                e: unsigned(&s, Tag::PUBLIC_EXPONENT)?,
                d: unsigned(&s, Tag::PRIVATE_EXPONENT)?,
                p: unsigned(&s, Tag::P)?,
                q: unsigned(&s, Tag::Q)?,
                dp: unsigned(&s, Tag::PRIME_EXPONENT_P)?,
                dq: unsigned(&s, Tag::PRIME_EXPONENT_Q)?,
                qinv: unsigned(&s, Tag::CRT_COEFFICIENT)?,
            };
            if c.d.is_none() && (c.p.is_none() || c.q.is_none()) && c.dp.is_none() && c.dq.is_none()
            {
                return Err(Invalid::missing(Tag::PRIVATE_EXPONENT));
            }
            let key = components::rsa_private_key(&c).map_err(crypto)?;
            Ok(Transparent {
                bits: rsa_bits(key.modulus_len()),
                material: key.to_pkcs8(),
                algorithm: CryptographicAlgorithm::RSA,
            })
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::TRANSPARENT_RSA_PUBLIC_KEY) => {
            let key = components::rsa_public_key(
                required(&s, Tag::MODULUS)?,
                required(&s, Tag::PUBLIC_EXPONENT)?,
            )
            .map_err(crypto)?;
            Ok(Transparent {
                bits: rsa_bits(key.modulus_len()),
                material: Zeroizing::new(key.to_spki_der().to_vec()),
                algorithm: CryptographicAlgorithm::RSA,
            })
        }
        (ObjectType::PRIVATE_KEY, _) => {
            let c = curve(&s)?;
            let key = components::ec_private_key(c, required(&s, Tag::D)?).map_err(crypto)?;
            Ok(Transparent {
                material: key.to_pkcs8(),
                algorithm: CryptographicAlgorithm::EC,
                bits: curve_bits(c),
            })
        }
        _ => {
            let c = curve(&s)?;
            let q = components::ec_public_point(c, s.bytes(Tag::Q_STRING)?).map_err(crypto)?;
            Ok(Transparent {
                material: Zeroizing::new(q),
                algorithm: CryptographicAlgorithm::EC,
                bits: curve_bits(c),
            })
        }
    }
}

fn rsa_bits(modulus_len: usize) -> u32 {
    u32::try_from(modulus_len * 8).unwrap_or(u32::MAX)
}
