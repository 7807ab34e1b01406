//! Batch Error Continuation Option Undo (KMIP 1.4 §6.7; KMIP 2.0 §8.8): when an item of the
//! batch fails, the effects of the items before it are undone and those items are answered
//! with Result Status Operation Undone.
//!
//! Undo is done by compensating operations through the core, each audited like any other
//! change: an object the batch created is purged (`Keyfort::undo_object_creation`, only if it
//! is unchanged since and was created by this client), and an attribute the batch changed gets
//! its previous values back (only if the object is unchanged since the batch's edit). Items that
//! change nothing (Get, Locate, Encrypt, …) have nothing to undo; Re-key is undone as the
//! creation of its new object and the change of the old one's Link. Activate, Revoke and Destroy
//! are undone by putting the object's state and lifecycle dates back as they were (Destroy keeps
//! the sealed material until the object is purged, so nothing is lost); only if the object is
//! unchanged since the batch's transition, which must itself have followed the state read just
//! before it. Import replacing an object cannot be compensated: it may only be the last item of
//! an Undo batch, otherwise the batch is refused before any item runs.
//!
//! The same compensations take back every item of a message whose answer would exceed its
//! Maximum Response Size, since each item is then answered Response Too Large (an Import that
//! replaced an object is the one change that stays).

use keyfort_core::{CoreError, Key, KeyState};

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
    /// The item moved this object through its lifecycle (Activate, Revoke, Destroy); `previous`
    /// is its lifecycle right before (`None` if another change came between the read and the
    /// transition: then it cannot be undone), and `row_version` its version right after.
    Transition {
        id: String,
        previous: Option<Lifecycle>,
        row_version: i64,
    },
}

/// What a lifecycle transition changes on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    state: KeyState,
    activation_at: Option<i64>,
    deactivated_at: Option<i64>,
    deleted_at: Option<i64>,
    deleted_by: Option<String>,
}

impl Lifecycle {
    pub fn of(key: &Key) -> Lifecycle {
        Lifecycle {
            state: key.state,
            activation_at: key.activation_at,
            deactivated_at: key.deactivated_at,
            deleted_at: key.deleted_at,
            deleted_by: key.deleted_by.clone(),
        }
    }

    fn restore(&self, key: &mut Key) {
        key.state = self.state;
        key.activation_at = self.activation_at;
        key.deactivated_at = self.deactivated_at;
        key.deleted_at = self.deleted_at;
        key.deleted_by.clone_from(&self.deleted_by);
    }
}

/// Whether an operation's effect can be undone (or it has none).
pub fn undoable(operation: Operation, payload: &Item) -> bool {
    match operation {
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
            Undo::Created { id, .. } | Undo::Attribute { id, .. } | Undo::Transition { id, .. } => {
                id
            }
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
        Undo::Transition {
            id,
            previous,
            row_version,
        } => {
            let Some(previous) = previous else {
                return Err(Invalid::new(
                    ResultReason::GENERAL_FAILURE,
                    "the object changed while the batch moved it through its lifecycle",
                ));
            };
            let row_version = expected.unwrap_or(*row_version);
            ctx.core
                .update_object(
                    ctx.caller(),
                    ctx.instance(),
                    id,
                    "key.lifecycle.undo",
                    |k| {
                        if k.row_version != row_version {
                            return Err(CoreError::Conflict {
                                what: "key",
                                id: k.id.clone(),
                            });
                        }
                        previous.restore(k);
                        Ok(())
                    },
                )
                .await
                .map(|key| Some(key.row_version))
                .map_err(core)
        }
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
