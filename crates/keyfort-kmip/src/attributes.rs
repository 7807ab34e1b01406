//! Object attributes (KMIP 1.4 §3): read from requests in the 1.x (Template-Attribute /
//! Attribute Name + Value) and 2.x (Attributes of tagged items) encodings, kept with the object,
//! and derived from the core's key record.
//!
//! Client-settable attributes (Name, Cryptographic Usage Mask, Object Group, custom `x-`
//! attributes, …) live in `Key::attributes["kmip"]` as `{name: [value, …]}`: a Text String as a
//! JSON string, any other value as `{"ttlv": "<hex of its TTLV encoding>"}`, so every type
//! round-trips. Attributes the server maintains (Unique Identifier, State, dates, …) come from
//! the key record and are read-only.

use std::collections::HashMap;
use std::sync::OnceLock;

use keyfort_core::Key;
use keyfort_core::key::NO_CLEAR_EXPORT;
use keyfort_core::objects::ObjectType as CoreType;
use serde_json::{Map, Value as Json, json};

use crate::message::{Invalid, Struct, structure};
use crate::ttlv::{Item, Limits, Tag, Value, decode, encode};
use crate::{CryptographicAlgorithm, LinkType, ObjectType, ResultReason};

/// The key of the KMIP attributes in `Key::attributes`.
pub const STORE_KEY: &str = "kmip";
/// Most values one attribute may have, and most attributes an object may have.
pub const MAX_VALUES: usize = 64;
/// Largest stored form (JSON) of an object's KMIP attributes, all values together.
pub const MAX_STORED_LEN: usize = 64 * 1024;

/// Refuses a stored attribute map over [`MAX_VALUES`] attributes or [`MAX_STORED_LEN`] bytes.
fn check_bounds(map: &Map<String, Json>) -> Result<(), Invalid> {
    if map.len() > MAX_VALUES
        || map
            .values()
            .any(|v| v.as_array().is_some_and(|a| a.len() > MAX_VALUES))
    {
        return Err(Invalid::field("too many attribute values"));
    }
    let len = serde_json::to_vec(map).map_or(usize::MAX, |v| v.len());
    if len > MAX_STORED_LEN {
        return Err(Invalid::field(format!(
            "the object's attributes would take {len} bytes, more than {MAX_STORED_LEN}"
        )));
    }
    Ok(())
}

/// Attributes the server maintains; requests may not set or change them.
pub const READ_ONLY: [&str; 14] = [
    "Unique Identifier",
    "Object Type",
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "State",
    "Initial Date",
    "Activation Date",
    "Deactivation Date",
    "Destroy Date",
    "Compromise Date",
    "Compromise Occurrence Date",
    "Last Change Date",
    "Original Creation Date",
    "Digest",
];

/// One attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// The KMIP 1.x attribute name, e.g. `Cryptographic Algorithm` or `x-Vendor`.
    pub name: String,
    /// The Attribute Index (1.x), if given.
    pub index: Option<i32>,
    pub value: Value,
}

/// `CryptographicAlgorithm` → `Cryptographic Algorithm`.
fn spaced(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c);
    }
    out
}

/// The tag of a 1.x attribute name (spaces and punctuation ignored), if it has one.
pub fn tag_of(name: &str) -> Option<Tag> {
    static TAGS: OnceLock<HashMap<String, Tag>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        (0x42_0001..0x42_0200)
            .filter_map(Tag::new)
            .filter_map(|t| t.name().map(|n| (n.to_ascii_lowercase(), t)))
            .collect()
    });
    let key: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    tags.get(&key).copied()
}

/// The 1.x attribute name of a tag.
pub fn name_of(tag: Tag) -> Option<String> {
    tag.name().map(spaced)
}

/// Reads one 1.x Attribute structure.
pub fn read_attribute(item: &Item) -> Result<Attr, Invalid> {
    let s = Struct::of(item)?;
    let name = s.text(Tag::ATTRIBUTE_NAME)?.to_owned();
    let index = s.opt_integer(Tag::ATTRIBUTE_INDEX)?;
    let value = s.require(Tag::ATTRIBUTE_VALUE)?.value.clone();
    Ok(Attr { name, index, value })
}

/// The 1.x custom attribute name of a 2.x Vendor Attribute (KMIP 2.0 §4.53): Vendor
/// Identification `x` (client) or `y` (server) stands for the 1.x `x-` and `y-` custom
/// attributes; other vendors' attributes are not kept.
pub fn vendor_name(vendor: &str, name: &str) -> Result<String, Invalid> {
    match vendor {
        "x" | "y" if !name.is_empty() => Ok(format!("{vendor}-{name}")),
        "x" | "y" => Err(Invalid::field("empty vendor Attribute Name")),
        other => Err(Invalid::new(
            ResultReason::UNSUPPORTED_ATTRIBUTE,
            format!("attributes of vendor {other:?} are not supported"),
        )),
    }
}

/// The Vendor Identification and Attribute Name of a custom attribute name (`x-Foo` → `x`,
/// `Foo`).
pub fn vendor_parts(name: &str) -> Option<(&str, &str)> {
    let (vendor, rest) = name.split_at_checked(1)?;
    let rest = rest.strip_prefix('-')?;
    (vendor == "x" || vendor == "y").then_some((vendor, rest))
}

/// A 2.x Vendor Attribute item: `Attribute {Vendor Identification, Attribute Name, Attribute
/// Value}`. KMIP 2.0 gives the Vendor Attribute no tag of its own: it is encoded under the
/// Attribute tag (0x420008), with Vendor Identification (0x42009D), Attribute Name (0x42000A)
/// and Attribute Value (0x42000B), as the OASIS KMIP 2.1 profile test cases SASED-M-2-21 and
/// SASED-M-3-21 show; an Attribute Reference to it is `{Vendor Identification, Attribute Name}`
/// under the Attribute Reference tag (0x42013B). So the generated tables need no addition.
fn vendor_item(tag: Tag, vendor: &str, name: &str, value: Option<&Value>) -> Item {
    let mut c = vec![
        Item::new(
            Tag::VENDOR_IDENTIFICATION,
            Value::TextString(vendor.to_owned()),
        ),
        Item::new(Tag::ATTRIBUTE_NAME, Value::TextString(name.to_owned())),
    ];
    if let Some(v) = value {
        c.push(Item::new(Tag::ATTRIBUTE_VALUE, v.clone()));
    }
    structure(tag, c)
}

/// A 2.x Attribute Reference for a name: the tag as an Enumeration, or for a custom attribute
/// the `{Vendor Identification, Attribute Name}` structure.
pub fn reference_item(name: &str) -> Option<Item> {
    if let Some((vendor, n)) = vendor_parts(name) {
        return Some(vendor_item(Tag::ATTRIBUTE_REFERENCE, vendor, n, None));
    }
    tag_of(name).map(|t| Item::new(Tag::ATTRIBUTE_REFERENCE, Value::Enumeration(t.value())))
}

/// A 2.x attribute item (a tagged value, or a Vendor Attribute) as an [`Attr`].
pub fn from_v2_item(item: &Item) -> Result<Attr, Invalid> {
    if item.tag == Tag::ATTRIBUTE {
        let s = Struct::of(item)?;
        let Some(vendor) = s.opt_text(Tag::VENDOR_IDENTIFICATION)? else {
            return read_attribute(item);
        };
        return Ok(Attr {
            name: vendor_name(vendor, s.text(Tag::ATTRIBUTE_NAME)?)?,
            index: None,
            value: s.require(Tag::ATTRIBUTE_VALUE)?.value.clone(),
        });
    }
    let name = name_of(item.tag).ok_or_else(|| {
        Invalid::new(
            ResultReason::INVALID_FIELD,
            format!("unknown attribute tag 0x{:06X}", item.tag.value()),
        )
    })?;
    Ok(Attr {
        name,
        index: None,
        value: item.value.clone(),
    })
}

/// The attributes of a request payload: a Template-Attribute (1.x; with its Names) or an
/// Attributes structure (2.x) under `tag`, or none.
pub fn read_template(payload: &Struct<'_>, v1_tag: Tag, v2_tag: Tag) -> Result<Vec<Attr>, Invalid> {
    let mut out = Vec::new();
    if let Some(t) = payload.child(v1_tag)? {
        if t.get(Tag::NAME).is_some() {
            return Err(Invalid::new(
                ResultReason::FEATURE_NOT_SUPPORTED,
                "templates by name are not supported",
            ));
        }
        for a in t.all(Tag::ATTRIBUTE) {
            out.push(read_attribute(a)?);
        }
    }
    if let Some(t) = payload.child(v2_tag)? {
        for item in t.items {
            out.push(from_v2_item(item)?);
        }
    }
    if out.len() > MAX_VALUES {
        return Err(Invalid::field("too many attributes"));
    }
    Ok(out)
}

/// A 2.x Attribute Reference or 1.x Attribute Name as a name.
pub fn reference_name(item: &Item) -> Result<String, Invalid> {
    match &item.value {
        Value::TextString(s) => Ok(s.clone()),
        Value::Enumeration(t) => Tag::new(*t)
            .and_then(name_of)
            .ok_or_else(|| Invalid::field("unknown Attribute Reference")),
        Value::Structure(_) => {
            // Vendor attribute reference: {Vendor Identification, Attribute Name}.
            let s = Struct::of(item)?;
            let name = s.text(Tag::ATTRIBUTE_NAME)?;
            match s.opt_text(Tag::VENDOR_IDENTIFICATION)? {
                Some(vendor) => vendor_name(vendor, name),
                None => Ok(name.to_owned()),
            }
        }
        _ => Err(Invalid::field("Attribute Name must be a Text String")),
    }
}

/// Encodes attribute values for a response: 1.x Attribute structures, or for 2.x the tagged
/// items, custom attributes as Vendor Attributes.
pub fn encode_attrs(attrs: &[Attr], v2: bool) -> Vec<Item> {
    let mut out = Vec::new();
    for a in attrs {
        if v2 {
            if let Some((vendor, name)) = vendor_parts(&a.name) {
                out.push(vendor_item(Tag::ATTRIBUTE, vendor, name, Some(&a.value)));
            } else if let Some(tag) = tag_of(&a.name) {
                out.push(Item::new(tag, a.value.clone()));
            }
        } else {
            let mut c = vec![Item::new(
                Tag::ATTRIBUTE_NAME,
                Value::TextString(a.name.clone()),
            )];
            if let Some(i) = a.index.filter(|i| *i > 0) {
                c.push(Item::new(Tag::ATTRIBUTE_INDEX, Value::Integer(i)));
            }
            c.push(Item::new(Tag::ATTRIBUTE_VALUE, a.value.clone()));
            out.push(structure(Tag::ATTRIBUTE, c));
        }
    }
    out
}

/// Whether an attribute name is a custom attribute (`x-` client, `y-` server), with a name after
/// the prefix (KMIP 2.x carries it as a vendor attribute of that name, which may not be empty).
pub fn is_custom(name: &str) -> bool {
    name.len() > 2 && (name.starts_with("x-") || name.starts_with("y-"))
}

/// Whether a name is one this server keeps for clients.
pub fn is_settable(name: &str) -> bool {
    is_custom(name)
        || matches!(
            name,
            "Name"
                | "Cryptographic Usage Mask"
                | "Cryptographic Parameters"
                | "Cryptographic Domain Parameters"
                | "Object Group"
                | "Contact Information"
                | "Application Specific Information"
                | "Link"
                | "Description"
                | "Comment"
                | "Operation Policy Name"
                | "Process Start Date"
                | "Protect Stop Date"
                | "Sensitive"
                | "Extractable"
                | "Key Value Location"
                | "Usage Limits"
                | "Revocation Reason"
                | "Certificate Type"
                | "Certificate Length"
                | "Digital Signature Algorithm"
                | "Lease Time"
                | "Alternative Name"
                | "Fresh"
                | "Key Format Type"
        )
}

fn value_to_json(v: &Value) -> Json {
    match v {
        Value::TextString(s) => Json::String(s.clone()),
        other => {
            json!({"ttlv": hex::encode(encode(&Item::new(Tag::ATTRIBUTE_VALUE, other.clone())))})
        }
    }
}

fn json_to_value(j: &Json) -> Option<Value> {
    match j {
        Json::String(s) => Some(Value::TextString(s.clone())),
        Json::Object(o) => {
            let bytes = hex::decode(o.get("ttlv")?.as_str()?).ok()?;
            Some(decode(&bytes, &Limits::default()).ok()?.value)
        }
        _ => None,
    }
}

/// The client attributes kept with a key, as `(name, values)`.
pub fn stored(key: &Key) -> Vec<(String, Vec<Value>)> {
    let Some(Json::Object(map)) = key.attributes.get(STORE_KEY) else {
        return Vec::new();
    };
    map.iter()
        .map(|(name, values)| {
            let values = values
                .as_array()
                .map(|a| a.iter().filter_map(json_to_value).collect())
                .unwrap_or_default();
            (name.clone(), values)
        })
        .collect()
}

/// Values of one stored attribute.
pub fn stored_values(key: &Key, name: &str) -> Vec<Value> {
    values_in(&key.attributes, name)
}

/// [`stored_values`] of a key's attribute map: only that attribute's values are decoded.
fn values_in(attributes: &Map<String, Json>, name: &str) -> Vec<Value> {
    let Some(Json::Object(map)) = attributes.get(STORE_KEY) else {
        return Vec::new();
    };
    map.get(name)
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(json_to_value).collect())
        .unwrap_or_default()
}

/// The value of a stored Boolean attribute (Extractable, Sensitive), if it has one.
pub fn flag(key: &Key, name: &str) -> Option<bool> {
    flag_in(&key.attributes, name)
}

/// [`flag`] of a key's attribute map.
fn flag_in(attributes: &Map<String, Json>, name: &str) -> Option<bool> {
    values_in(attributes, name)
        .into_iter()
        .find_map(|v| match v {
            Value::Boolean(b) => Some(b),
            _ => None,
        })
}

/// Keeps the core's [`NO_CLEAR_EXPORT`] mark of a key's attribute map in step with its stored
/// Extractable and Sensitive attributes, so that the doors that give material only in the clear
/// (Key Protect, the admin API) refuse what KMIP Get would not give in the clear either.
fn mark_clear_export(attributes: &mut Map<String, Json>) {
    if flag_in(attributes, "Extractable") == Some(false)
        || flag_in(attributes, "Sensitive") == Some(true)
    {
        attributes.insert(NO_CLEAR_EXPORT.to_owned(), Json::Bool(true));
    } else {
        attributes.remove(NO_CLEAR_EXPORT);
    }
}

/// Replaces one stored attribute's values (an empty list removes it).
pub fn set_stored(key: &mut Key, name: &str, values: &[Value]) -> Result<(), Invalid> {
    let entry = key
        .attributes
        .entry(STORE_KEY)
        .or_insert_with(|| Json::Object(Map::new()));
    if !entry.is_object() {
        *entry = Json::Object(Map::new());
    }
    let Json::Object(map) = entry else {
        return Err(Invalid::new(
            ResultReason::GENERAL_FAILURE,
            "attribute store",
        ));
    };
    if values.is_empty() {
        map.remove(name);
    } else {
        if values.len() > MAX_VALUES || (!map.contains_key(name) && map.len() >= MAX_VALUES) {
            return Err(Invalid::field("too many attribute values"));
        }
        map.insert(
            name.to_owned(),
            Json::Array(values.iter().map(value_to_json).collect()),
        );
    }
    check_bounds(map)?;
    mark_clear_export(&mut key.attributes);
    Ok(())
}

/// The initial attribute map of a new object from request attributes (read-only and
/// unsupported attributes refused, except the ones the request itself describes).
pub fn initial(attrs: &[Attr], describes: &[&str]) -> Result<Map<String, Json>, Invalid> {
    let mut grouped: Vec<(String, Vec<Value>)> = Vec::new();
    for a in attrs {
        if describes.contains(&a.name.as_str()) {
            continue;
        }
        if READ_ONLY.contains(&a.name.as_str()) {
            return Err(Invalid::new(
                ResultReason::ATTRIBUTE_READ_ONLY,
                format!("{} is set by the server", a.name),
            ));
        }
        if !is_settable(&a.name) {
            return Err(Invalid::new(
                ResultReason::UNSUPPORTED_ATTRIBUTE,
                format!("attribute {} is not supported", a.name),
            ));
        }
        match grouped.iter_mut().find(|(n, _)| *n == a.name) {
            Some((_, v)) => v.push(a.value.clone()),
            None => grouped.push((a.name.clone(), vec![a.value.clone()])),
        }
    }
    let mut map = Map::new();
    for (name, values) in grouped {
        map.insert(
            name,
            Json::Array(values.iter().map(value_to_json).collect()),
        );
    }
    check_bounds(&map)?;
    let mut out = Map::new();
    if !map.is_empty() {
        out.insert(STORE_KEY.to_owned(), Json::Object(map));
    }
    mark_clear_export(&mut out);
    Ok(out)
}

/// The first Name's text, for the key's listing name.
pub fn first_name(attrs: &[Attr]) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.name == "Name")
        .and_then(|a| match &a.value {
            Value::Structure(items) => items.iter().find_map(|i| match &i.value {
                Value::TextString(s) if i.tag == Tag::NAME_VALUE => Some(s.clone()),
                _ => None,
            }),
            _ => None,
        })
}

/// The KMIP object type of a key record.
pub fn object_type(key: &Key) -> ObjectType {
    match CoreType::parse(&key.object_type) {
        Some(CoreType::PublicKey) => ObjectType::PUBLIC_KEY,
        Some(CoreType::PrivateKey) => ObjectType::PRIVATE_KEY,
        Some(CoreType::Certificate) => ObjectType::CERTIFICATE,
        Some(CoreType::SecretData) => ObjectType::SECRET_DATA,
        Some(CoreType::OpaqueObject) => ObjectType::OPAQUE_OBJECT,
        Some(CoreType::SymmetricKey) | None => ObjectType::SYMMETRIC_KEY,
    }
}

/// The core's type for a KMIP object type.
pub fn core_type(t: ObjectType) -> Option<CoreType> {
    Some(match t {
        ObjectType::SYMMETRIC_KEY => CoreType::SymmetricKey,
        ObjectType::PUBLIC_KEY => CoreType::PublicKey,
        ObjectType::PRIVATE_KEY => CoreType::PrivateKey,
        ObjectType::CERTIFICATE => CoreType::Certificate,
        ObjectType::SECRET_DATA => CoreType::SecretData,
        ObjectType::OPAQUE_OBJECT => CoreType::OpaqueObject,
        _ => return None,
    })
}

/// The algorithm name kept in `Key::algorithm` for a KMIP algorithm.
pub fn algorithm_name(a: CryptographicAlgorithm) -> Option<&'static str> {
    Some(match a {
        CryptographicAlgorithm::AES => "AES",
        CryptographicAlgorithm::RSA => "RSA",
        CryptographicAlgorithm::EC | CryptographicAlgorithm::ECDSA => "EC",
        CryptographicAlgorithm::HMAC_SHA1 => "HMAC-SHA1",
        CryptographicAlgorithm::HMAC_SHA224 => "HMAC-SHA224",
        CryptographicAlgorithm::HMAC_SHA256 => "HMAC-SHA256",
        CryptographicAlgorithm::HMAC_SHA384 => "HMAC-SHA384",
        CryptographicAlgorithm::HMAC_SHA512 => "HMAC-SHA512",
        CryptographicAlgorithm::TRIPLE_DES => "3DES",
        CryptographicAlgorithm::DES => "DES",
        CryptographicAlgorithm::CHA_CHA20 => "ChaCha20",
        _ => return None,
    })
}

/// The KMIP algorithm of a `Key::algorithm`.
pub fn algorithm_of(key: &Key) -> Option<CryptographicAlgorithm> {
    Some(match key.algorithm.as_str() {
        "AES" => CryptographicAlgorithm::AES,
        "RSA" => CryptographicAlgorithm::RSA,
        "EC" => CryptographicAlgorithm::EC,
        "HMAC-SHA1" => CryptographicAlgorithm::HMAC_SHA1,
        "HMAC-SHA224" => CryptographicAlgorithm::HMAC_SHA224,
        "HMAC-SHA256" => CryptographicAlgorithm::HMAC_SHA256,
        "HMAC-SHA384" => CryptographicAlgorithm::HMAC_SHA384,
        "HMAC-SHA512" => CryptographicAlgorithm::HMAC_SHA512,
        "3DES" => CryptographicAlgorithm::TRIPLE_DES,
        "DES" => CryptographicAlgorithm::DES,
        "ChaCha20" => CryptographicAlgorithm::CHA_CHA20,
        _ => return None,
    })
}

fn secs(ms: i64) -> Value {
    Value::DateTime(ms.div_euclid(1000))
}

fn link(link_type: LinkType, id: &str) -> Value {
    Value::Structure(vec![
        Item::new(Tag::LINK_TYPE, Value::Enumeration(link_type.0)),
        Item::new(
            Tag::LINKED_OBJECT_IDENTIFIER,
            Value::TextString(id.to_owned()),
        ),
    ])
}

/// Every attribute of an object: the ones the server maintains, then the stored ones, each
/// multi-valued attribute with its indexes.
pub fn all(key: &Key) -> Vec<Attr> {
    let mut out: Vec<(String, Value)> = vec![
        (
            "Unique Identifier".into(),
            Value::TextString(key.id.clone()),
        ),
        ("Object Type".into(), Value::Enumeration(object_type(key).0)),
    ];
    if let Some(a) = algorithm_of(key) {
        out.push(("Cryptographic Algorithm".into(), Value::Enumeration(a.0)));
    }
    if key.bit_length > 0 {
        out.push((
            "Cryptographic Length".into(),
            Value::Integer(i32::try_from(key.bit_length).unwrap_or(i32::MAX)),
        ));
    }
    out.push(("State".into(), Value::Enumeration(key.state.kmip())));
    out.push(("Initial Date".into(), secs(key.created_at)));
    if let Some(t) = key.activation_at {
        out.push(("Activation Date".into(), secs(t)));
    }
    if let Some(t) = key.deactivated_at {
        out.push(("Deactivation Date".into(), secs(t)));
    }
    if let (true, Some(t)) = (key.state.is_destroyed(), key.deleted_at) {
        out.push(("Destroy Date".into(), secs(t)));
    }
    out.push(("Last Change Date".into(), secs(key.updated_at)));
    let mut attrs: Vec<Attr> = out
        .into_iter()
        .map(|(name, value)| Attr {
            name,
            index: None,
            value,
        })
        .collect();
    let mut links = Vec::new();
    if let Some(Json::String(id)) = key.attributes.get("public_key_id") {
        links.push(link(LinkType::PUBLIC_KEY_LINK, id));
    }
    if let Some(Json::String(id)) = key.attributes.get("private_key_id") {
        links.push(link(LinkType::PRIVATE_KEY_LINK, id));
    }
    let mut stored = stored(key);
    if !links.is_empty() {
        match stored.iter_mut().find(|(n, _)| n == "Link") {
            Some((_, v)) => v.extend(links),
            None => stored.push(("Link".into(), links)),
        }
    }
    for (name, values) in stored {
        let multi = values.len() > 1;
        for (i, value) in values.into_iter().enumerate() {
            attrs.push(Attr {
                name: name.clone(),
                index: multi.then(|| i32::try_from(i).unwrap_or(i32::MAX)),
                value,
            });
        }
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_map_both_ways() {
        assert_eq!(
            tag_of("Cryptographic Algorithm"),
            Some(Tag::CRYPTOGRAPHIC_ALGORITHM)
        );
        assert_eq!(
            tag_of("Cryptographic Usage Mask"),
            Some(Tag::CRYPTOGRAPHIC_USAGE_MASK)
        );
        assert_eq!(tag_of("x-Vendor"), None);
        assert_eq!(
            name_of(Tag::CRYPTOGRAPHIC_LENGTH).as_deref(),
            Some("Cryptographic Length")
        );
        assert_eq!(name_of(Tag::OBJECT_GROUP).as_deref(), Some("Object Group"));
    }

    #[test]
    fn a_custom_name_has_something_after_its_prefix() {
        assert!(is_custom("x-Vendor") && is_custom("y-k"));
        for name in ["x-", "y-", "x", "", "Name", "z-a"] {
            assert!(!is_custom(name), "{name}");
        }
        assert!(!is_settable("x-"));
    }

    #[test]
    fn stored_values_round_trip_every_type() {
        let values = [
            Value::TextString("VMware, Inc.".into()),
            Value::Integer(12),
            Value::Enumeration(3),
            Value::DateTime(1_700_000_000),
            Value::Structure(vec![
                Item::new(Tag::NAME_VALUE, Value::TextString("k".into())),
                Item::new(Tag::NAME_TYPE, Value::Enumeration(1)),
            ]),
        ];
        for v in values {
            assert_eq!(json_to_value(&value_to_json(&v)), Some(v));
        }
    }
}
