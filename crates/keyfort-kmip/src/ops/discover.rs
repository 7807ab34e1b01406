//! Discover Versions (KMIP 1.4 §4.26) and Query (§4.25).

use super::{Ctx, OpResult, SUPPORTED};
use crate::message::{ProtocolVersion, SUPPORTED_VERSIONS, Struct, structure};
use crate::ttlv::{Item, Tag, Value};
use crate::{ObjectType, QueryFunction};

/// Operations only KMIP 2.x messages may use.
const V2_ONLY: [crate::Operation; 3] = [
    crate::Operation::SET_ATTRIBUTE,
    crate::Operation::IMPORT,
    crate::Operation::EXPORT,
];

/// The object types the server stores and Query lists.
pub const OBJECT_TYPES: [ObjectType; 6] = [
    ObjectType::CERTIFICATE,
    ObjectType::SYMMETRIC_KEY,
    ObjectType::PUBLIC_KEY,
    ObjectType::PRIVATE_KEY,
    ObjectType::SECRET_DATA,
    ObjectType::OPAQUE_OBJECT,
];

/// The Vendor Identification returned by Query.
pub const VENDOR: &str = concat!("Keyfort ", env!("CARGO_PKG_VERSION"));

/// The supported versions the client listed (in the server's order of preference), or all of
/// them when it listed none.
pub fn discover_versions(p: &Struct<'_>) -> OpResult {
    let offered = p
        .all(Tag::PROTOCOL_VERSION)
        .map(ProtocolVersion::from_item)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SUPPORTED_VERSIONS
        .iter()
        .filter(|v| offered.is_empty() || offered.contains(v))
        .map(|v| v.to_item())
        .collect())
}

pub fn query(ctx: &Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let functions: Vec<QueryFunction> = p
        .all(Tag::QUERY_FUNCTION)
        .map(|i| match i.value {
            Value::Enumeration(v) => Ok(QueryFunction(v)),
            _ => Err(crate::message::Invalid::field(
                "Query Function must be an Enumeration",
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    if functions.contains(&QueryFunction::QUERY_OPERATIONS) {
        out.extend(
            SUPPORTED
                .iter()
                .filter(|op| ctx.version.is_v2() || !V2_ONLY.contains(op))
                .map(|op| Item::new(Tag::OPERATION, Value::Enumeration(op.0))),
        );
    }
    if functions.contains(&QueryFunction::QUERY_OBJECTS) {
        out.extend(
            OBJECT_TYPES
                .iter()
                .map(|t| Item::new(Tag::OBJECT_TYPE, Value::Enumeration(t.0))),
        );
    }
    if functions.contains(&QueryFunction::QUERY_SERVER_INFORMATION) {
        out.push(Item::new(
            Tag::VENDOR_IDENTIFICATION,
            Value::TextString(VENDOR.to_owned()),
        ));
        out.push(structure(Tag::SERVER_INFORMATION, Vec::new()));
    }
    // Capability Information (KMIP 1.3 §2.1.21; the batch capabilities since 1.4).
    if functions.contains(&QueryFunction::QUERY_CAPABILITIES)
        && ctx.version >= ProtocolVersion::new(1, 3)
    {
        let flag = |tag, on| Item::new(tag, Value::Boolean(on));
        let mut capabilities = vec![
            flag(Tag::STREAMING_CAPABILITY, false),
            flag(Tag::ASYNCHRONOUS_CAPABILITY, false),
            flag(Tag::ATTESTATION_CAPABILITY, false),
        ];
        if ctx.version >= ProtocolVersion::new(1, 4) {
            capabilities.push(flag(Tag::BATCH_UNDO_CAPABILITY, true));
            capabilities.push(flag(Tag::BATCH_CONTINUE_CAPABILITY, true));
        }
        out.push(structure(Tag::CAPABILITY_INFORMATION, capabilities));
    }
    Ok(out)
}
