//! Batch Error Continuation Option Undo (KMIP 1.4 §6.7; KMIP 2.0 §8.8): when an item of the
//! batch fails, the effects of the items before it are undone and those items are answered
//! with Result Status Operation Undone.
//!
//! Undo is done by compensating operations through the core, each audited like any other
//! change: an object the batch created is purged (`Keyfort::undo_object_creation`, only if it
//! is unchanged since and was created by this client), and an attribute the batch changed gets
//! its previous values back (only if the object is unchanged since the batch's edit). Items that
//! change nothing (Get, Locate, Encrypt, …) have nothing to undo; Re-key is undone as the
//! creation of its new object and the change of the old one's Link. Operations whose effect
//! cannot be compensated (Activate, Revoke, Destroy, Import replacing an object) may only be the
//! last item of an Undo batch: otherwise the batch is refused before any item runs.

use keyfort_core::CoreError;

use super::{Ctx, core};
use crate::attributes;
use crate::message::Invalid;
use crate::ttlv::{Item, Tag, Value};
use crate::{Operation, ResultReason};

/// The compensation of one change a batch item made.
#[derive(Debug, Clone)]
pub enum Undo {
    /// The item created this object.
    Created { id: String, row_version: i64 },
    /// The item changed this attribute; `previous` are its values before, and `row_version`
    /// the object's version right after the change.
    Attribute {
        id: String,
        name: String,
        previous: Vec<Value>,
        row_version: i64,
    },
}

/// Whether an operation's effect can be undone (or it has none).
pub fn undoable(operation: Operation, payload: &Item) -> bool {
    match operation {
        Operation::ACTIVATE | Operation::REVOKE | Operation::DESTROY => false,
        Operation::IMPORT => !matches!(
            &payload.value,
            Value::Structure(items) if items.iter().any(|i| i.tag == Tag::REPLACE_EXISTING
                && i.value == Value::Boolean(true))
        ),
        _ => true,
    }
}

/// The refusal of a batch that asks for Undo but holds an operation that cannot be undone
/// before its last item.
pub fn refusal(operation: Operation) -> Invalid {
    Invalid::new(
        ResultReason::FEATURE_NOT_SUPPORTED,
        format!(
            "{operation:?} cannot be undone, so it may only be the last item of a batch with \
             the Undo continuation option"
        ),
    )
}

impl Undo {
    /// The object this compensation changes.
    pub fn id(&self) -> &str {
        match self {
            Undo::Created { id, .. } | Undo::Attribute { id, .. } => id,
        }
    }
}

/// Runs one compensation. The object must be at `expected` (the row version the batch, or a
/// compensation run just before, left it at) or at the version recorded with the change;
/// returns the object's version afterwards (`None` once purged).
pub async fn apply(
    ctx: &Ctx<'_>,
    undo: &Undo,
    expected: Option<i64>,
) -> Result<Option<i64>, Invalid> {
    match undo {
        Undo::Created { id, row_version } => ctx
            .core
            .undo_object_creation(
                ctx.caller(),
                ctx.instance(),
                id,
                expected.unwrap_or(*row_version),
            )
            .await
            .map(|()| None)
            .map_err(core),
        Undo::Attribute {
            id,
            name,
            previous,
            row_version,
        } => {
            let row_version = &expected.unwrap_or(*row_version);
            let mut refusal = None;
            let outcome = ctx
                .core
                .update_object(
                    ctx.caller(),
                    ctx.instance(),
                    id,
                    "key.attributes.undo",
                    |k| {
                        if k.row_version != *row_version {
                            return Err(CoreError::Conflict {
                                what: "key",
                                id: k.id.clone(),
                            });
                        }
                        attributes::set_stored(k, name, previous).map_err(|e| {
                            refusal = Some(e);
                            CoreError::InvalidField {
                                field: "attribute",
                                rule: "refused by the KMIP attribute rules",
                            }
                        })
                    },
                )
                .await;
            match (outcome, refusal) {
                (_, Some(e)) => Err(e),
                (Err(e), None) => Err(core(e)),
                (Ok(key), None) => Ok(Some(key.row_version)),
            }
        }
    }
}
