//! Get (KMIP 1.4 §4.11): managed objects in the requested Key Format Type, optionally wrapped
//! (Key Wrapping Specification, §2.1.6); and reading the objects Register carries (§2.2).

use keyfort_core::Key;
use zeroize::Zeroizing;

use super::{Ctx, OpResult, core, uid_item};
use crate::attributes;
use crate::der;
use crate::message::{Invalid, ProtocolVersion, Struct, structure};
use crate::ttlv::{BigInt, Item, Tag, Value, encode};
use crate::{
    BlockCipherMode, CertificateType, CryptographicAlgorithm, EncodingOption, KeyFormatType,
    ObjectType, RecommendedCurve, ResultReason, WrappingMethod,
};

/// An object read from a Register request, in the core's stored form.
pub struct ParsedObject {
    pub material: Zeroizing<Vec<u8>>,
    /// The Secret Data Type or Opaque Data Type, echoed by Get.
    pub data_type: Option<u32>,
    pub algorithm: Option<CryptographicAlgorithm>,
    pub bits: Option<u32>,
}

fn unsupported_format(f: KeyFormatType) -> Invalid {
    Invalid::new(
        ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
        format!("key format {f:?} is not supported for this object"),
    )
}

/// Reads the object of a Register request.
pub fn read_object(
    p: &Struct<'_>,
    t: ObjectType,
    version: ProtocolVersion,
) -> Result<ParsedObject, Invalid> {
    let raw = |bytes: &[u8]| ParsedObject {
        material: Zeroizing::new(bytes.to_vec()),
        data_type: None,
        algorithm: None,
        bits: None,
    };
    match t {
        ObjectType::CERTIFICATE => {
            let c = p
                .child(Tag::CERTIFICATE)?
                .ok_or_else(|| Invalid::missing(Tag::CERTIFICATE))?;
            if CertificateType(c.enumeration(Tag::CERTIFICATE_TYPE)?) != CertificateType::X_509 {
                return Err(Invalid::new(
                    ResultReason::FEATURE_NOT_SUPPORTED,
                    "only X.509 certificates",
                ));
            }
            Ok(raw(c.bytes(Tag::CERTIFICATE_VALUE)?))
        }
        ObjectType::OPAQUE_OBJECT => {
            let o = p
                .child(Tag::OPAQUE_OBJECT)?
                .ok_or_else(|| Invalid::missing(Tag::OPAQUE_OBJECT))?;
            Ok(ParsedObject {
                data_type: Some(o.enumeration(Tag::OPAQUE_DATA_TYPE)?),
                ..raw(o.bytes(Tag::OPAQUE_DATA_VALUE)?)
            })
        }
        _ => {
            let tag = match t {
                ObjectType::SYMMETRIC_KEY => Tag::SYMMETRIC_KEY,
                ObjectType::PUBLIC_KEY => Tag::PUBLIC_KEY,
                ObjectType::PRIVATE_KEY => Tag::PRIVATE_KEY,
                _ => Tag::SECRET_DATA,
            };
            let o = p.child(tag)?.ok_or_else(|| Invalid::missing(tag))?;
            let block = o
                .child(Tag::KEY_BLOCK)?
                .ok_or_else(|| Invalid::missing(Tag::KEY_BLOCK))?;
            let mut parsed = read_key_block(&block, t, version)?;
            if t == ObjectType::SECRET_DATA {
                parsed.data_type = Some(o.enumeration(Tag::SECRET_DATA_TYPE)?);
            }
            Ok(parsed)
        }
    }
}

fn read_key_block(
    block: &Struct<'_>,
    t: ObjectType,
    version: ProtocolVersion,
) -> Result<ParsedObject, Invalid> {
    if block.get(Tag::KEY_WRAPPING_DATA).is_some() {
        return Err(Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "registering wrapped keys is not supported",
        ));
    }
    let format = KeyFormatType(block.enumeration(Tag::KEY_FORMAT_TYPE)?);
    let algorithm = block
        .opt_enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM)?
        .map(CryptographicAlgorithm);
    let bits = block
        .opt_integer(Tag::CRYPTOGRAPHIC_LENGTH)?
        .map(|b| u32::try_from(b).map_err(|_| Invalid::field("negative Cryptographic Length")))
        .transpose()?;
    let value = block
        .child(Tag::KEY_VALUE)?
        .ok_or_else(|| Invalid::missing(Tag::KEY_VALUE))?;
    let material_item = value.require(Tag::KEY_MATERIAL)?;
    if crate::transparent::handles(t, format) {
        if !format_in_version(format, version) {
            return Err(unsupported_format(format));
        }
        let key = crate::transparent::read(t, format, material_item)?;
        let same_family = |a: CryptographicAlgorithm| {
            a == key.algorithm
                || (key.algorithm == CryptographicAlgorithm::EC
                    && matches!(
                        a,
                        CryptographicAlgorithm::ECDSA | CryptographicAlgorithm::ECDH
                    ))
        };
        if algorithm.is_some_and(|a| !same_family(a)) {
            return Err(Invalid::field(
                "Cryptographic Algorithm does not match the key format",
            ));
        }
        if bits.is_some_and(|b| b != key.bits) {
            return Err(Invalid::field(
                "Cryptographic Length does not match the key",
            ));
        }
        return Ok(ParsedObject {
            material: key.material,
            data_type: None,
            algorithm: Some(key.algorithm),
            bits: Some(key.bits),
        });
    }
    let bytes = |item: &Item| match &item.value {
        Value::ByteString(b) => Ok(b.clone()),
        _ => Err(Invalid::field(
            "Key Material must be a Byte String for this format",
        )),
    };
    let is_ec = matches!(
        algorithm,
        Some(CryptographicAlgorithm::EC | CryptographicAlgorithm::ECDSA)
    );
    let material = match (t, format) {
        (
            ObjectType::SYMMETRIC_KEY | ObjectType::SECRET_DATA,
            KeyFormatType::RAW | KeyFormatType::OPAQUE,
        ) => bytes(material_item)?,
        (ObjectType::SYMMETRIC_KEY, KeyFormatType::TRANSPARENT_SYMMETRIC_KEY) => {
            Struct::of(material_item)?.bytes(Tag::KEY)?.to_vec()
        }
        (ObjectType::PRIVATE_KEY, KeyFormatType::PKCS_8) => bytes(material_item)?,
        (ObjectType::PRIVATE_KEY, KeyFormatType::PKCS_1) if !is_ec => {
            der::pkcs1_to_pkcs8(&bytes(material_item)?)
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::X_509) if !is_ec => bytes(material_item)?,
        (ObjectType::PUBLIC_KEY, KeyFormatType::PKCS_1) if !is_ec => {
            der::rsa_spki(&bytes(material_item)?)
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::X_509) => der::spki_key(&bytes(material_item)?)
            .ok_or_else(|| Invalid::field("unreadable SubjectPublicKeyInfo"))?,
        (ObjectType::PUBLIC_KEY, KeyFormatType::RAW) if is_ec => bytes(material_item)?,
        (_, f) => return Err(unsupported_format(f)),
    };
    let bits = match (t, bits) {
        (ObjectType::SYMMETRIC_KEY | ObjectType::SECRET_DATA, None) => {
            u32::try_from(material.len() * 8).ok()
        }
        (_, b) => b,
    };
    Ok(ParsedObject {
        material: Zeroizing::new(material),
        data_type: None,
        algorithm,
        bits,
    })
}

/// Where the registered Secret Data Type or Opaque Data Type is kept in `Key::attributes`.
pub const DATA_TYPE_KEY: &str = "kmip_data_type";
/// Opaque Data Type when none was registered (an extension value, as the spec defines none).
const OPAQUE_DEFAULT: u32 = 0x8000_0000;
/// Secret Data Type when none was registered: Password.
const SECRET_DEFAULT: u32 = 1;

fn data_type(key: &Key) -> Option<u32> {
    key.attributes
        .get(DATA_TYPE_KEY)
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// The default Key Format Type of an object (KMIP 1.4 §9.1.3.2.3 practice).
fn default_format(key: &Key) -> KeyFormatType {
    match (attributes::object_type(key), key.algorithm.as_str()) {
        (ObjectType::PRIVATE_KEY, _) => KeyFormatType::PKCS_8,
        (ObjectType::PUBLIC_KEY, "RSA") => KeyFormatType::PKCS_1,
        (ObjectType::PUBLIC_KEY, _) => KeyFormatType::X_509,
        _ => KeyFormatType::RAW,
    }
}

fn unreadable() -> Invalid {
    Invalid::new(ResultReason::GENERAL_FAILURE, "stored key unreadable")
}

fn big(tag: Tag, twos_complement: Vec<u8>) -> Item {
    Item::new(
        tag,
        Value::BigInteger(BigInt::from_be_bytes(&twos_complement)),
    )
}

/// An unsigned big-endian number as a (positive) Big Integer.
fn big_unsigned(tag: Tag, bytes: &[u8]) -> Item {
    let mut v = vec![0];
    v.extend(bytes.iter().skip_while(|b| **b == 0));
    big(tag, v)
}

/// The Recommended Curve of an EC key (by its length: the core's curves are P-256/384/521).
fn recommended_curve(key: &Key) -> Result<Item, Invalid> {
    let curve = match key.bit_length {
        256 => RecommendedCurve::P_256,
        384 => RecommendedCurve::P_384,
        521 => RecommendedCurve::P_521,
        _ => return Err(Invalid::field("unsupported curve")),
    };
    Ok(Item::new(
        Tag::RECOMMENDED_CURVE,
        Value::Enumeration(curve.0),
    ))
}

/// Whether a Key Format Type exists in a protocol version: the Transparent EC formats came in
/// KMIP 1.3; the Transparent ECDSA/ECDH/ECMQV ones were deprecated by them and are reserved in
/// KMIP 2.0.
fn format_in_version(format: KeyFormatType, version: ProtocolVersion) -> bool {
    match format {
        KeyFormatType::TRANSPARENT_EC_PRIVATE_KEY | KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY => {
            version >= ProtocolVersion::new(1, 3)
        }
        KeyFormatType::TRANSPARENT_ECDSA_PRIVATE_KEY
        | KeyFormatType::TRANSPARENT_ECDSA_PUBLIC_KEY
        | KeyFormatType::TRANSPARENT_ECDH_PRIVATE_KEY
        | KeyFormatType::TRANSPARENT_ECDH_PUBLIC_KEY => !version.is_v2(),
        _ => true,
    }
}

/// The Key Material in `format` (KMIP 1.4 §2.1.7: the Transparent key structures).
fn material_in(
    key: &Key,
    stored: &[u8],
    format: KeyFormatType,
    version: ProtocolVersion,
) -> Result<Value, Invalid> {
    let t = attributes::object_type(key);
    let rsa = key.algorithm == "RSA";
    let ec = key.algorithm == "EC";
    let bytes = |b: Vec<u8>| Ok(Value::ByteString(b));
    if !format_in_version(format, version) {
        return Err(unsupported_format(format));
    }
    match (t, format) {
        (ObjectType::PRIVATE_KEY, KeyFormatType::TRANSPARENT_RSA_PRIVATE_KEY) if rsa => {
            let pkcs1 = Zeroizing::new(der::pkcs8_to_pkcs1(stored).ok_or_else(unreadable)?);
            let [n, e, d, p, q, dp, dq, qinv] =
                der::rsa_private_components(&pkcs1).ok_or_else(unreadable)?;
            Ok(Value::Structure(vec![
                big(Tag::MODULUS, n),
                big(Tag::PRIVATE_EXPONENT, d),
                big(Tag::PUBLIC_EXPONENT, e),
                big(Tag::P, p),
                big(Tag::Q, q),
                big(Tag::PRIME_EXPONENT_P, dp),
                big(Tag::PRIME_EXPONENT_Q, dq),
                big(Tag::CRT_COEFFICIENT, qinv),
            ]))
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::TRANSPARENT_RSA_PUBLIC_KEY) if rsa => {
            let pkcs1 = der::spki_key(stored).ok_or_else(unreadable)?;
            let (n, e) = der::rsa_public_components(&pkcs1).ok_or_else(unreadable)?;
            Ok(Value::Structure(vec![
                big(Tag::MODULUS, n),
                big(Tag::PUBLIC_EXPONENT, e),
            ]))
        }
        (
            ObjectType::PRIVATE_KEY,
            KeyFormatType::TRANSPARENT_EC_PRIVATE_KEY
            | KeyFormatType::TRANSPARENT_ECDSA_PRIVATE_KEY
            | KeyFormatType::TRANSPARENT_ECDH_PRIVATE_KEY,
        ) if ec => {
            let d = Zeroizing::new(der::ec_private_scalar(stored).ok_or_else(unreadable)?);
            Ok(Value::Structure(vec![
                recommended_curve(key)?,
                big_unsigned(Tag::D, &d),
            ]))
        }
        (
            ObjectType::PUBLIC_KEY,
            KeyFormatType::TRANSPARENT_EC_PUBLIC_KEY
            | KeyFormatType::TRANSPARENT_ECDSA_PUBLIC_KEY
            | KeyFormatType::TRANSPARENT_ECDH_PUBLIC_KEY,
        ) if ec => Ok(Value::Structure(vec![
            recommended_curve(key)?,
            Item::new(Tag::Q_STRING, Value::ByteString(stored.to_vec())),
        ])),
        (
            ObjectType::SYMMETRIC_KEY | ObjectType::SECRET_DATA,
            KeyFormatType::RAW | KeyFormatType::OPAQUE,
        ) => bytes(stored.to_vec()),
        (ObjectType::SYMMETRIC_KEY, KeyFormatType::TRANSPARENT_SYMMETRIC_KEY) => {
            Ok(Value::Structure(vec![Item::new(
                Tag::KEY,
                Value::ByteString(stored.to_vec()),
            )]))
        }
        (ObjectType::PRIVATE_KEY, KeyFormatType::PKCS_8) => bytes(stored.to_vec()),
        (ObjectType::PRIVATE_KEY, KeyFormatType::PKCS_1) if rsa => {
            bytes(der::pkcs8_to_pkcs1(stored).ok_or_else(|| {
                Invalid::new(ResultReason::GENERAL_FAILURE, "stored key unreadable")
            })?)
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::X_509) if rsa => bytes(stored.to_vec()),
        (ObjectType::PUBLIC_KEY, KeyFormatType::PKCS_1) if rsa => {
            bytes(der::spki_key(stored).ok_or_else(|| {
                Invalid::new(ResultReason::GENERAL_FAILURE, "stored key unreadable")
            })?)
        }
        (ObjectType::PUBLIC_KEY, KeyFormatType::X_509) => bytes(
            der::ec_spki(key.bit_length, stored)
                .ok_or_else(|| Invalid::field("unsupported curve"))?,
        ),
        (ObjectType::PUBLIC_KEY, KeyFormatType::RAW) => bytes(stored.to_vec()),
        (_, f) => Err(unsupported_format(f)),
    }
}

fn key_block(key: &Key, format: KeyFormatType, key_value: Value, wrapping: Option<Item>) -> Item {
    let mut items = vec![
        Item::new(Tag::KEY_FORMAT_TYPE, Value::Enumeration(format.0)),
        Item::new(Tag::KEY_VALUE, key_value),
    ];
    let t = attributes::object_type(key);
    if t != ObjectType::SECRET_DATA {
        if let Some(a) = attributes::algorithm_of(key) {
            items.push(Item::new(
                Tag::CRYPTOGRAPHIC_ALGORITHM,
                Value::Enumeration(a.0),
            ));
        }
        if key.bit_length > 0 {
            items.push(Item::new(
                Tag::CRYPTOGRAPHIC_LENGTH,
                Value::Integer(i32::try_from(key.bit_length).unwrap_or(i32::MAX)),
            ));
        }
    }
    items.extend(wrapping);
    structure(Tag::KEY_BLOCK, items)
}

pub async fn get(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    if p.get(Tag::KEY_COMPRESSION_TYPE).is_some() {
        return Err(Invalid::new(
            ResultReason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED,
            "key compression is not supported",
        ));
    }
    let requested = p.opt_enumeration(Tag::KEY_FORMAT_TYPE)?.map(KeyFormatType);
    let wrapping = p.child(Tag::KEY_WRAPPING_SPECIFICATION)?;
    let (key, stored) = ctx
        .core
        .object_material(ctx.caller(), ctx.instance(), &id)
        .await
        .map_err(core)?;
    if attributes::flag(&key, "Extractable") == Some(false) {
        return Err(Invalid::new(
            ResultReason::NOT_EXTRACTABLE,
            "the object is not extractable",
        ));
    }
    if wrapping.is_none() && attributes::flag(&key, "Sensitive") == Some(true) {
        return Err(Invalid::new(
            ResultReason::SENSITIVE,
            "a sensitive object is only returned wrapped",
        ));
    }
    let t = attributes::object_type(&key);
    let object = match t {
        ObjectType::CERTIFICATE => structure(
            Tag::CERTIFICATE,
            vec![
                Item::new(
                    Tag::CERTIFICATE_TYPE,
                    Value::Enumeration(CertificateType::X_509.0),
                ),
                Item::new(Tag::CERTIFICATE_VALUE, Value::ByteString(stored.to_vec())),
            ],
        ),
        ObjectType::OPAQUE_OBJECT => structure(
            Tag::OPAQUE_OBJECT,
            vec![
                Item::new(
                    Tag::OPAQUE_DATA_TYPE,
                    Value::Enumeration(data_type(&key).unwrap_or(OPAQUE_DEFAULT)),
                ),
                Item::new(Tag::OPAQUE_DATA_VALUE, Value::ByteString(stored.to_vec())),
            ],
        ),
        _ => {
            let format = requested.unwrap_or_else(|| default_format(&key));
            let material = material_in(&key, &stored, format, ctx.version)?;
            let key_value = structure(Tag::KEY_VALUE, vec![Item::new(Tag::KEY_MATERIAL, material)]);
            let (value, wrapping_data) = match wrapping {
                None => (key_value.value, None),
                Some(spec) => {
                    let (wrapped, data) = wrap(ctx, &spec, &key_value).await?;
                    (Value::ByteString(wrapped), Some(data))
                }
            };
            let block = key_block(&key, format, value, wrapping_data);
            let tag = match t {
                ObjectType::PUBLIC_KEY => Tag::PUBLIC_KEY,
                ObjectType::PRIVATE_KEY => Tag::PRIVATE_KEY,
                ObjectType::SECRET_DATA => Tag::SECRET_DATA,
                _ => Tag::SYMMETRIC_KEY,
            };
            let mut children = Vec::new();
            if t == ObjectType::SECRET_DATA {
                children.push(Item::new(
                    Tag::SECRET_DATA_TYPE,
                    Value::Enumeration(data_type(&key).unwrap_or(SECRET_DEFAULT)),
                ));
            }
            children.push(block);
            structure(tag, children)
        }
    };
    ctx.placeholder = Some(key.id.clone());
    Ok(vec![
        Item::new(Tag::OBJECT_TYPE, Value::Enumeration(t.0)),
        uid_item(&key.id),
        object,
    ])
}

/// Export (KMIP 2.0 §6.1.20): Get, plus every attribute of the object.
pub async fn export(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let mut out = get(ctx, p).await?;
    let id = ctx.uid(p)?;
    let key = ctx
        .core
        .key(ctx.caller(), ctx.instance(), &id)
        .await
        .map_err(core)?;
    let attrs = attributes::encode_attrs(&attributes::all(&key), true);
    let object = out.pop();
    out.push(structure(Tag::ATTRIBUTES, attrs));
    out.extend(object);
    Ok(out)
}

/// A Key Wrapping Specification (KMIP 1.4 §2.1.6), as far as Get serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrappingSpec<'a> {
    pub method: WrappingMethod,
    /// The Unique Identifier of the wrapping key.
    pub key_id: &'a str,
    pub mode: Option<BlockCipherMode>,
    /// AES Key Wrap with Padding (RFC 5649) rather than without (RFC 3394).
    pub padded: bool,
    pub encoding: EncodingOption,
}

/// Reads a Key Wrapping Specification: the Encrypt method with an AES key wrap mode only.
pub fn wrapping_spec<'a>(spec: &Struct<'a>) -> Result<WrappingSpec<'a>, Invalid> {
    let method = WrappingMethod(spec.enumeration(Tag::WRAPPING_METHOD)?);
    if method != WrappingMethod::ENCRYPT {
        return Err(Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "only the Encrypt wrapping method is supported",
        ));
    }
    if spec.get(Tag::MAC_SIGNATURE_KEY_INFORMATION).is_some() {
        return Err(Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "MAC/signature wrapping is not supported",
        ));
    }
    let info = spec
        .child(Tag::ENCRYPTION_KEY_INFORMATION)?
        .ok_or_else(|| Invalid::missing(Tag::ENCRYPTION_KEY_INFORMATION))?;
    let key_id = info.text(Tag::UNIQUE_IDENTIFIER)?;
    let mode = match info.child(Tag::CRYPTOGRAPHIC_PARAMETERS)? {
        Some(params) => params
            .opt_enumeration(Tag::BLOCK_CIPHER_MODE)?
            .map(BlockCipherMode),
        None => None,
    };
    let padded = match mode {
        None | Some(BlockCipherMode::NIST_KEY_WRAP) => false,
        Some(BlockCipherMode::AES_KEY_WRAP_PADDING) => true,
        Some(other) => {
            return Err(Invalid::new(
                ResultReason::FEATURE_NOT_SUPPORTED,
                format!("wrapping mode {other:?} is not supported"),
            ));
        }
    };
    let encoding = spec
        .opt_enumeration(Tag::ENCODING_OPTION)?
        .map(EncodingOption)
        .unwrap_or(EncodingOption::TTLV_ENCODING);
    Ok(WrappingSpec {
        method,
        key_id,
        mode,
        padded,
        encoding,
    })
}

/// Wraps a Key Value per a Key Wrapping Specification: the wrapped bytes and the Key Wrapping
/// Data to return.
async fn wrap(
    ctx: &Ctx<'_>,
    spec: &Struct<'_>,
    key_value: &Item,
) -> Result<(Vec<u8>, Item), Invalid> {
    let WrappingSpec {
        method,
        key_id: wrapping_id,
        mode,
        padded,
        encoding,
    } = wrapping_spec(spec)?;
    let plaintext = Zeroizing::new(match encoding {
        EncodingOption::NO_ENCODING => match &key_value.value {
            Value::Structure(items) => match items.first().map(|i| &i.value) {
                Some(Value::ByteString(b)) => b.clone(),
                _ => encode(key_value),
            },
            _ => encode(key_value),
        },
        _ => encode(key_value),
    });
    let wrapping_key = ctx
        .core
        .key(ctx.caller(), ctx.instance(), wrapping_id)
        .await
        .map_err(core)?;
    super::allow_usage(&wrapping_key, crate::CryptographicUsageMask::WRAP_KEY)?;
    let wrapped = ctx
        .core
        .object_wrap(
            ctx.caller(),
            ctx.instance(),
            wrapping_id,
            &plaintext,
            padded,
        )
        .await
        .map_err(core)?;
    let mut info_items = vec![uid_item(wrapping_id)];
    if let Some(m) = mode {
        info_items.push(structure(
            Tag::CRYPTOGRAPHIC_PARAMETERS,
            vec![Item::new(Tag::BLOCK_CIPHER_MODE, Value::Enumeration(m.0))],
        ));
    }
    let data = structure(
        Tag::KEY_WRAPPING_DATA,
        vec![
            Item::new(Tag::WRAPPING_METHOD, Value::Enumeration(method.0)),
            structure(Tag::ENCRYPTION_KEY_INFORMATION, info_items),
            Item::new(Tag::ENCODING_OPTION, Value::Enumeration(encoding.0)),
        ],
    );
    Ok((wrapped, data))
}
