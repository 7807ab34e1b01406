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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ResultReason;
    use crate::ttlv::BigInt;

    const FIELDS: [Tag; 11] = [
        Tag::MODULUS,
        Tag::PUBLIC_EXPONENT,
        Tag::PRIVATE_EXPONENT,
        Tag::P,
        Tag::Q,
        Tag::PRIME_EXPONENT_P,
        Tag::PRIME_EXPONENT_Q,
        Tag::CRT_COEFFICIENT,
        Tag::D,
        Tag::Q_STRING,
        Tag::RECOMMENDED_CURVE,
    ];

    const FORMATS: [(ObjectType, KeyFormatType); 8] = [
        (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY,
        ),
        (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_RSA_PUBLIC_KEY,
        ),
        (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_EC_PRIVATE_KEY,
        ),
        (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY,
        ),
        (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_ECDH_PRIVATE_KEY,
        ),
        (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_ECDSA_PUBLIC_KEY,
        ),
        (
            ObjectType::SYMMETRIC_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY,
        ),
        (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY,
        ),
    ];

    fn field(tag: Tag, bytes: Vec<u8>, kind: u8) -> Item {
        let value = match kind % 4 {
            0 | 1 => Value::BigInteger(BigInt::from_be_bytes(&bytes)),
            2 => Value::ByteString(bytes),
            _ => Value::Enumeration(u32::from(bytes.first().copied().unwrap_or(7)) % 16),
        };
        Item::new(tag, value)
    }

    proptest! {
        /// Whatever a client puts in the structure, the answer is a key or a typed error.
        #[test]
        fn any_structure_answers_without_panicking(
            fields in proptest::collection::vec(
                (0..FIELDS.len(), proptest::collection::vec(any::<u8>(), 0..48), any::<u8>()),
                0..12,
            ),
            format in 0..FORMATS.len(),
        ) {
            let items = fields
                .into_iter()
                .map(|(i, bytes, kind)| field(FIELDS[i], bytes, kind))
                .collect();
            let (t, f) = FORMATS[format];
            let material = Item::new(Tag::KEY_MATERIAL, Value::Structure(items));
            if let Ok(key) = read(t, f, &material) {
                prop_assert!(!key.material.is_empty());
            }
        }
    }

    #[test]
    fn reasons_of_malformed_components() {
        let material = |items: Vec<Item>| Item::new(Tag::KEY_MATERIAL, Value::Structure(items));
        let rsa = (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY,
        );
        let reason =
            |(t, f): (ObjectType, KeyFormatType), m: &Item| read(t, f, m).err().unwrap().reason;
        assert_eq!(reason(rsa, &material(vec![])), ResultReason::MISSING_DATA);
        let n = Item::new(
            Tag::MODULUS,
            Value::BigInteger(BigInt::from_be_bytes(&[0, 0xC5])),
        );
        assert_eq!(
            reason(rsa, &material(vec![n.clone()])),
            ResultReason::MISSING_DATA
        );
        let d = Item::new(
            Tag::PRIVATE_EXPONENT,
            Value::BigInteger(BigInt::from_be_bytes(&[3])),
        );
        assert_eq!(
            reason(rsa, &material(vec![n, d])),
            ResultReason::INVALID_FIELD
        );
        let negative = Item::new(
            Tag::MODULUS,
            Value::BigInteger(BigInt::from_be_bytes(&[0x80])),
        );
        assert_eq!(
            reason(rsa, &material(vec![negative])),
            ResultReason::INVALID_FIELD
        );
        let not_big = Item::new(Tag::MODULUS, Value::ByteString(vec![1]));
        assert_eq!(
            reason(rsa, &material(vec![not_big])),
            ResultReason::INVALID_FIELD
        );
        let bytes = Item::new(Tag::KEY_MATERIAL, Value::ByteString(vec![1]));
        assert_eq!(reason(rsa, &bytes), ResultReason::INVALID_MESSAGE);
        let symmetric = (
            ObjectType::SYMMETRIC_KEY,
            KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY,
        );
        assert_eq!(
            reason(symmetric, &material(vec![])),
            ResultReason::INVALID_FIELD
        );
        let ec = (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY,
        );
        let curve =
            |c: RecommendedCurve| Item::new(Tag::RECOMMENDED_CURVE, Value::Enumeration(c.0));
        let q = Item::new(Tag::Q_STRING, Value::ByteString(vec![4; 65]));
        assert_eq!(
            reason(
                ec,
                &material(vec![curve(RecommendedCurve::P_256), q.clone()])
            ),
            ResultReason::INVALID_FIELD
        );
        assert_eq!(
            reason(ec, &material(vec![curve(RecommendedCurve::P_192), q])),
            ResultReason::INVALID_FIELD
        );
        assert_eq!(
            reason(ec, &material(vec![curve(RecommendedCurve::P_256)])),
            ResultReason::MISSING_DATA
        );
    }
}
