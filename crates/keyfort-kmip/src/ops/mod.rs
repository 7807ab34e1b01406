//! The operations (KMIP 1.4 §4; KMIP 2.0 §6): one file per family. Each reads its request
//! payload, calls one core operation, and returns the response payload's children or an
//! [`Invalid`] naming the Result Reason. Unsupported operations answer Operation Not Supported.

pub mod attributes;
pub mod create;
pub mod crypto;
pub mod discover;
pub mod get;
mod lifecycle;
pub mod locate;
pub mod undo;

use keyfort_core::{CoreError, Keyfort, KmipSession};

use crate::message::{Invalid, ProtocolVersion, Struct};
use crate::ttlv::{Item, Tag, Value};
use crate::{Operation, ResultReason};

/// Response payload children, or the failure to answer.
pub type OpResult = Result<Vec<Item>, Invalid>;

/// What an operation runs with: the core, the authenticated client, the message's version,
/// and the ID Placeholder (KMIP 1.4 §3.1: the last Unique Identifier a batch produced).
pub struct Ctx<'a> {
    pub core: &'a Keyfort,
    pub session: &'a KmipSession,
    pub version: ProtocolVersion,
    pub placeholder: Option<String>,
    /// With the Undo continuation option: the compensations of the changes made so far, each
    /// with the index of the batch item that made it.
    pub undo: Option<Vec<(usize, undo::Undo)>>,
    /// The index of the batch item running.
    pub item: usize,
}

impl Ctx<'_> {
    pub fn instance(&self) -> &str {
        &self.session.instance_id
    }

    pub fn caller(&self) -> &keyfort_core::Caller {
        &self.session.caller
    }

    /// Records the compensation of a change, when the batch may have to be undone.
    pub fn record(&mut self, undo: undo::Undo) {
        let item = self.item;
        if let Some(log) = &mut self.undo {
            log.push((item, undo));
        }
    }

    /// The request's Unique Identifier, or the ID Placeholder when it has none.
    pub fn uid(&self, payload: &Struct<'_>) -> Result<String, Invalid> {
        match payload.opt_text(Tag::UNIQUE_IDENTIFIER)? {
            Some(id) => Ok(id.to_owned()),
            None => self
                .placeholder
                .clone()
                .ok_or_else(|| Invalid::missing(Tag::UNIQUE_IDENTIFIER)),
        }
    }
}

/// A core error as a KMIP failure.
pub fn core(e: CoreError) -> Invalid {
    if matches!(
        e,
        CoreError::Store(_) | CoreError::CorruptRecord { .. } | CoreError::Io { .. }
    ) {
        tracing::error!(error = ?e, "KMIP operation failed");
    }
    crate::error::from_core(&e)
}

/// The uses the object's Cryptographic Usage Mask allows, if it limits them. A mask naming
/// none of the uses the key's algorithm has counts as no mask: PyKMIP registers objects without
/// masks with a mask of 0, and creates every key, HMAC keys included, with Encrypt | Decrypt.
pub fn usage_mask(key: &keyfort_core::Key) -> Option<i32> {
    let mask = crate::attributes::stored_values(key, "Cryptographic Usage Mask")
        .into_iter()
        .find_map(|v| match v {
            Value::Integer(m) => Some(m),
            _ => None,
        })?;
    let uses = if key.algorithm.starts_with("HMAC-") {
        i32::try_from(
            crate::CryptographicUsageMask::MAC_GENERATE.0
                | crate::CryptographicUsageMask::MAC_VERIFY.0,
        )
        .unwrap_or(i32::MAX)
    } else {
        -1
    };
    (mask & uses != 0).then_some(mask)
}

/// Refuses a use of `key` its Cryptographic Usage Mask does not allow (KMIP 1.4 §3.19).
pub fn allow_usage(
    key: &keyfort_core::Key,
    wanted: crate::CryptographicUsageMask,
) -> Result<(), Invalid> {
    let wanted = i32::try_from(wanted.0).unwrap_or(i32::MAX);
    match usage_mask(key) {
        Some(m) if wanted & !m != 0 => Err(Invalid::new(
            ResultReason::INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
            "the object's usage mask does not allow that use",
        )),
        _ => Ok(()),
    }
}

pub fn uid_item(id: &str) -> Item {
    Item::new(Tag::UNIQUE_IDENTIFIER, Value::TextString(id.to_owned()))
}

/// Runs one batch item's operation.
pub async fn dispatch(ctx: &mut Ctx<'_>, operation: Operation, payload: &Item) -> OpResult {
    let p = Struct::of(payload)?;
    match operation {
        Operation::DISCOVER_VERSIONS => discover::discover_versions(&p),
        Operation::QUERY => discover::query(ctx, &p),
        Operation::CREATE => create::create(ctx, &p).await,
        Operation::CREATE_KEY_PAIR => create::create_key_pair(ctx, &p).await,
        Operation::REGISTER => create::register(ctx, &p).await,
        Operation::RE_KEY => create::rekey(ctx, &p).await,
        Operation::GET => get::get(ctx, &p).await,
        Operation::GET_ATTRIBUTES => attributes::get_attributes(ctx, &p).await,
        Operation::GET_ATTRIBUTE_LIST => attributes::get_attribute_list(ctx, &p).await,
        Operation::ADD_ATTRIBUTE => attributes::add_attribute(ctx, &p).await,
        Operation::MODIFY_ATTRIBUTE => attributes::modify_attribute(ctx, &p).await,
        Operation::DELETE_ATTRIBUTE => attributes::delete_attribute(ctx, &p).await,
        Operation::SET_ATTRIBUTE if ctx.version.is_v2() => attributes::set_attribute(ctx, &p).await,
        Operation::LOCATE => locate::locate(ctx, &p).await,
        Operation::ACTIVATE => lifecycle::activate(ctx, &p).await,
        Operation::REVOKE => lifecycle::revoke(ctx, &p).await,
        Operation::DESTROY => lifecycle::destroy(ctx, &p).await,
        Operation::CHECK => lifecycle::check(ctx, &p).await,
        Operation::ENCRYPT => crypto::encrypt(ctx, &p).await,
        Operation::DECRYPT => crypto::decrypt(ctx, &p).await,
        Operation::SIGN => crypto::sign(ctx, &p).await,
        Operation::SIGNATURE_VERIFY => crypto::signature_verify(ctx, &p).await,
        Operation::MAC => crypto::mac(ctx, &p).await,
        Operation::MAC_VERIFY => crypto::mac_verify(ctx, &p).await,
        Operation::RNG_RETRIEVE => crypto::rng_retrieve(ctx, &p),
        Operation::IMPORT if ctx.version.is_v2() => create::import(ctx, &p).await,
        Operation::EXPORT if ctx.version.is_v2() => get::export(ctx, &p).await,
        other => Err(Invalid::new(
            ResultReason::OPERATION_NOT_SUPPORTED,
            format!("operation {other:?} is not supported"),
        )),
    }
}

/// The operations this server answers (for Query).
pub const SUPPORTED: [Operation; 27] = [
    Operation::CREATE,
    Operation::CREATE_KEY_PAIR,
    Operation::REGISTER,
    Operation::RE_KEY,
    Operation::LOCATE,
    Operation::CHECK,
    Operation::GET,
    Operation::GET_ATTRIBUTES,
    Operation::GET_ATTRIBUTE_LIST,
    Operation::ADD_ATTRIBUTE,
    Operation::MODIFY_ATTRIBUTE,
    Operation::DELETE_ATTRIBUTE,
    Operation::ACTIVATE,
    Operation::REVOKE,
    Operation::DESTROY,
    Operation::QUERY,
    Operation::DISCOVER_VERSIONS,
    Operation::ENCRYPT,
    Operation::DECRYPT,
    Operation::SIGN,
    Operation::SIGNATURE_VERIFY,
    Operation::MAC,
    Operation::MAC_VERIFY,
    Operation::RNG_RETRIEVE,
    Operation::SET_ATTRIBUTE,
    Operation::IMPORT,
    Operation::EXPORT,
];
