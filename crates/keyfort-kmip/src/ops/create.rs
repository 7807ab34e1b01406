//! Create (KMIP 1.4 §4.1), Create Key Pair (§4.2), Register (§4.3) and Re-key (§4.4).

use keyfort_core::objects::{
    EcCurve, KeyPairAlgorithm, NewObject, ObjectType as CoreType, PairHalf,
};
use keyfort_core::{CoreError, KeyState};

use super::undo::Undo;
use super::{Ctx, OpResult, core, uid_item};
use crate::attributes::{self, Attr};
use crate::message::{Invalid, Struct};
use crate::ttlv::{Item, Tag, Value};
use crate::{CryptographicAlgorithm, LinkType, ObjectType, RecommendedCurve, ResultReason};

/// Attributes a create or register request describes rather than stores.
pub const DESCRIBES: [&str; 4] = [
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Activation Date",
    "Object Type",
];

fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Value> {
    attrs.iter().find(|a| a.name == name).map(|a| &a.value)
}

pub fn algorithm(attrs: &[Attr]) -> Result<Option<CryptographicAlgorithm>, Invalid> {
    match find(attrs, "Cryptographic Algorithm") {
        None => Ok(None),
        Some(Value::Enumeration(v)) => Ok(Some(CryptographicAlgorithm(*v))),
        Some(_) => Err(Invalid::field(
            "Cryptographic Algorithm must be an Enumeration",
        )),
    }
}

pub fn length(attrs: &[Attr]) -> Result<Option<u32>, Invalid> {
    match find(attrs, "Cryptographic Length") {
        None => Ok(None),
        Some(Value::Integer(v)) => u32::try_from(*v)
            .map(Some)
            .map_err(|_| Invalid::field("Cryptographic Length must be positive")),
        Some(_) => Err(Invalid::field("Cryptographic Length must be an Integer")),
    }
}

/// Pre-active, unless the request sets an Activation Date that has come.
fn initial_state(attrs: &[Attr]) -> KeyState {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match find(attrs, "Activation Date") {
        Some(Value::DateTime(t)) if *t <= now => KeyState::Active,
        _ => KeyState::PreActive,
    }
}

pub fn object_type(p: &Struct<'_>) -> Result<ObjectType, Invalid> {
    Ok(ObjectType(p.enumeration(Tag::OBJECT_TYPE)?))
}

pub async fn create(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let t = object_type(p)?;
    if t != ObjectType::SYMMETRIC_KEY {
        return Err(Invalid::new(
            ResultReason::INVALID_FIELD,
            "Create makes symmetric keys; use Create Key Pair or Register",
        ));
    }
    let attrs = attributes::read_template(p, Tag::TEMPLATE_ATTRIBUTE, Tag::ATTRIBUTES)?;
    let alg = algorithm(&attrs)?.ok_or_else(|| Invalid::missing(Tag::CRYPTOGRAPHIC_ALGORITHM))?;
    let bits = length(&attrs)?.ok_or_else(|| Invalid::missing(Tag::CRYPTOGRAPHIC_LENGTH))?;
    let algorithm = match alg {
        CryptographicAlgorithm::AES
        | CryptographicAlgorithm::HMAC_SHA256
        | CryptographicAlgorithm::HMAC_SHA384
        | CryptographicAlgorithm::HMAC_SHA512 => attributes::algorithm_name(alg).unwrap_or("AES"),
        _ => {
            return Err(Invalid::new(
                ResultReason::INVALID_FIELD,
                format!("cannot create {alg:?} keys"),
            ));
        }
    };
    let key = ctx
        .core
        .create_object(
            ctx.caller(),
            ctx.instance(),
            NewObject {
                object_type: CoreType::SymmetricKey,
                algorithm: algorithm.to_owned(),
                bit_length: bits,
                name: attributes::first_name(&attrs),
                attributes: attributes::initial(&attrs, &DESCRIBES)?,
                material: None,
                initial_state: initial_state(&attrs),
                id: None,
            },
        )
        .await
        .map_err(core)?;
    ctx.record(Undo::Created {
        id: key.id.clone(),
        row_version: key.row_version,
    });
    ctx.placeholder = Some(key.id.clone());
    Ok(vec![
        Item::new(Tag::OBJECT_TYPE, Value::Enumeration(t.0)),
        uid_item(&key.id),
    ])
}

pub async fn create_key_pair(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let common =
        attributes::read_template(p, Tag::COMMON_TEMPLATE_ATTRIBUTE, Tag::COMMON_ATTRIBUTES)?;
    let private = attributes::read_template(
        p,
        Tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
        Tag::PRIVATE_KEY_ATTRIBUTES,
    )?;
    let public = attributes::read_template(
        p,
        Tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
        Tag::PUBLIC_KEY_ATTRIBUTES,
    )?;
    let merged = |own: &[Attr]| -> Vec<Attr> {
        let mut all = common.clone();
        all.extend_from_slice(own);
        all
    };
    let private = merged(&private);
    let public = merged(&public);
    let alg = algorithm(&private)?.ok_or_else(|| Invalid::missing(Tag::CRYPTOGRAPHIC_ALGORITHM))?;
    let bits = length(&private)?;
    let curve = curve(&private)?;
    let pair = match alg {
        CryptographicAlgorithm::RSA => {
            KeyPairAlgorithm::Rsa(bits.ok_or_else(|| Invalid::missing(Tag::CRYPTOGRAPHIC_LENGTH))?)
        }
        CryptographicAlgorithm::EC | CryptographicAlgorithm::ECDSA => {
            let c = curve
                .or_else(|| bits.and_then(EcCurve::from_bits))
                .ok_or_else(|| Invalid::field("EC key pairs need P-256, P-384 or P-521"))?;
            KeyPairAlgorithm::Ec(c)
        }
        _ => {
            return Err(Invalid::field(format!("cannot create {alg:?} key pairs")));
        }
    };
    let describes: Vec<&str> = DESCRIBES
        .iter()
        .copied()
        .chain(["Cryptographic Domain Parameters"])
        .collect();
    let half = |attrs: &[Attr]| -> Result<PairHalf, Invalid> {
        Ok(PairHalf {
            name: attributes::first_name(attrs),
            attributes: attributes::initial(attrs, &describes)?,
        })
    };
    let (private_key, public_key) = ctx
        .core
        .create_key_pair(
            ctx.caller(),
            ctx.instance(),
            pair,
            half(&private)?,
            half(&public)?,
            initial_state(&private),
        )
        .await
        .map_err(core)?;
    for k in [&private_key, &public_key] {
        ctx.record(Undo::Created {
            id: k.id.clone(),
            row_version: k.row_version,
        });
    }
    ctx.placeholder = Some(private_key.id.clone());
    Ok(vec![
        Item::new(
            Tag::PRIVATE_KEY_UNIQUE_IDENTIFIER,
            Value::TextString(private_key.id),
        ),
        Item::new(
            Tag::PUBLIC_KEY_UNIQUE_IDENTIFIER,
            Value::TextString(public_key.id),
        ),
    ])
}

pub fn curve(attrs: &[Attr]) -> Result<Option<EcCurve>, Invalid> {
    let Some(Value::Structure(items)) = find(attrs, "Cryptographic Domain Parameters") else {
        return Ok(None);
    };
    let c = items.iter().find_map(|i| match i.value {
        Value::Enumeration(v) if i.tag == Tag::RECOMMENDED_CURVE => Some(RecommendedCurve(v)),
        _ => None,
    });
    match c {
        None => Ok(None),
        Some(RecommendedCurve::P_256) => Ok(Some(EcCurve::P256)),
        Some(RecommendedCurve::P_384) => Ok(Some(EcCurve::P384)),
        Some(RecommendedCurve::P_521) => Ok(Some(EcCurve::P521)),
        Some(other) => Err(Invalid::field(format!("curve {other:?} is not supported"))),
    }
}

pub async fn register(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    store(ctx, p, None, false).await
}

/// Import (KMIP 2.0 §6.1.28): Register with the client's Unique Identifier (a UUID).
pub async fn import(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = p.text(Tag::UNIQUE_IDENTIFIER)?.to_owned();
    let replace = p.opt_bool(Tag::REPLACE_EXISTING)? == Some(true);
    if p.get(Tag::KEY_WRAP_TYPE).is_some() {
        return Err(Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "importing wrapped objects is not supported",
        ));
    }
    store(ctx, p, Some(id), replace).await
}

/// Registers (or with `replace`, replaces: the object with that id is purged and the new one
/// takes its id in the same transaction; a missing one is simply created).
async fn store(ctx: &mut Ctx<'_>, p: &Struct<'_>, id: Option<String>, replace: bool) -> OpResult {
    let t = object_type(p)?;
    let core_type = attributes::core_type(t).ok_or_else(|| {
        Invalid::new(
            ResultReason::FEATURE_NOT_SUPPORTED,
            format!("cannot register {t:?} objects"),
        )
    })?;
    let attrs = attributes::read_template(p, Tag::TEMPLATE_ATTRIBUTE, Tag::ATTRIBUTES)?;
    let object = super::get::read_object(p, t, ctx.version)?;
    let algorithm = match object.algorithm.or(algorithm(&attrs)?) {
        Some(a) => attributes::algorithm_name(a)
            .ok_or_else(|| Invalid::field(format!("algorithm {a:?} is not supported")))?,
        None => "",
    };
    let bits = object.bits.or(length(&attrs)?).unwrap_or(0);
    let mut stored = attributes::initial(&attrs, &DESCRIBES)?;
    if let Some(d) = object.data_type {
        stored.insert(super::get::DATA_TYPE_KEY.to_owned(), d.into());
    }
    let new = NewObject {
        object_type: core_type,
        algorithm: algorithm.to_owned(),
        bit_length: bits,
        name: attributes::first_name(&attrs),
        attributes: stored,
        material: Some(object.material),
        initial_state: initial_state(&attrs),
        id,
    };
    let exists = match (&new.id, replace) {
        (Some(id), true) => match ctx.core.key(ctx.caller(), ctx.instance(), id).await {
            Ok(old) => {
                check_replaceable(&old)?;
                true
            }
            Err(CoreError::KeyNotFound { .. }) => false,
            Err(e) => return Err(core(e)),
        },
        _ => false,
    };
    let key = if exists {
        ctx.core
            .replace_object(ctx.caller(), ctx.instance(), new)
            .await
            .map_err(core)?
    } else {
        let key = ctx
            .core
            .create_object(ctx.caller(), ctx.instance(), new)
            .await
            .map_err(core)?;
        ctx.record(Undo::Created {
            id: key.id.clone(),
            row_version: key.row_version,
        });
        key
    };
    ctx.placeholder = Some(key.id.clone());
    Ok(vec![uid_item(&key.id)])
}

/// Replacing purges the object with all its versions: refused when that material exists
/// nowhere else, i.e. it may not leave the server (a root key, an object made Extractable
/// false) or older versions of it exist (a rotated key). Such an object is destroyed and purged
/// through its lifecycle instead.
fn check_replaceable(old: &keyfort_core::Key) -> Result<(), Invalid> {
    if !old.extractable
        || attributes::flag(old, "Extractable") == Some(false)
        || old.last_rotated_at.is_some()
    {
        return Err(Invalid::new(
            ResultReason::PERMISSION_DENIED,
            "replacing this object would destroy key material that exists nowhere else",
        ));
    }
    Ok(())
}

pub async fn rekey(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let link = |t: LinkType, id: &str| {
        Value::Structure(vec![
            Item::new(Tag::LINK_TYPE, Value::Enumeration(t.0)),
            Item::new(
                Tag::LINKED_OBJECT_IDENTIFIER,
                Value::TextString(id.to_owned()),
            ),
        ])
    };
    let new = ctx
        .core
        .rekey_object(ctx.caller(), ctx.instance(), &id, |old| {
            let mut copy = old.clone();
            let mut links = attributes::stored_values(&copy, "Link");
            links.retain(|l| !is_link(l, LinkType::REPLACEMENT_OBJECT_LINK));
            links.push(link(LinkType::REPLACED_OBJECT_LINK, &old.id));
            // Only attribute bookkeeping: an error here cannot happen for a bounded list.
            let _ = attributes::set_stored(&mut copy, "Link", &links);
            copy.attributes
        })
        .await
        .map_err(core)?;
    let new_id = new.id.clone();
    let mut previous = Vec::new();
    let old = ctx
        .core
        .update_object(
            ctx.caller(),
            ctx.instance(),
            &id,
            "key.attributes.update",
            |k| {
                let mut links = attributes::stored_values(k, "Link");
                previous.clone_from(&links);
                links.push(link(LinkType::REPLACEMENT_OBJECT_LINK, &new_id));
                attributes::set_stored(k, "Link", &links).map_err(|_| {
                    keyfort_core::CoreError::InvalidField {
                        field: "Link",
                        rule: "too many links",
                    }
                })
            },
        )
        .await;
    let old = match old {
        Ok(old) => old,
        Err(e) => {
            // The old object could not be linked (e.g. a role that may re-key but not change
            // attributes): the new object goes again, so that the refused Re-key changes nothing.
            if let Err(undo) = ctx
                .core
                .undo_object_creation(ctx.caller(), ctx.instance(), &new.id, new.row_version)
                .await
            {
                tracing::warn!(error = ?undo, id = %new.id, "KMIP Re-key: removing the new object failed");
            }
            return Err(core(e));
        }
    };
    ctx.record(Undo::Created {
        id: new.id.clone(),
        row_version: new.row_version,
    });
    ctx.record(Undo::Attribute {
        id: old.id,
        name: "Link".to_owned(),
        previous,
        row_version: old.row_version,
    });
    ctx.placeholder = Some(new.id.clone());
    Ok(vec![uid_item(&new.id)])
}

fn is_link(v: &Value, t: LinkType) -> bool {
    matches!(v, Value::Structure(items) if items.iter().any(|i| i.tag == Tag::LINK_TYPE && i.value == Value::Enumeration(t.0)))
}
