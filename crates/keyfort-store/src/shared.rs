//! Helpers every backend shares: the store's error constructors and column encodings.

use crate::StoreError;

pub(crate) fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_owned(),
    }
}

/// The [`StoreError::NotFound`] of a keystore object that is not there: of its keystore when
/// `keystore_found` says that is not there either (both backends answer alike).
pub(crate) fn missing_keystore_object(
    keystore_found: Result<bool, sqlx::Error>,
    keystore_id: &str,
    id: &str,
) -> StoreError {
    match keystore_found {
        Ok(true) => not_found("keystore object", id),
        Ok(false) => not_found("keystore", keystore_id),
        Err(e) => e.into(),
    }
}

pub(crate) fn already_exists(what: &'static str, id: &str) -> StoreError {
    StoreError::AlreadyExists {
        what,
        id: id.to_owned(),
    }
}

/// After an optimistic `UPDATE` changed no row: [`StoreError::NotFound`] if the row is gone,
/// [`StoreError::Conflict`] if it has another version.
pub(crate) fn stale(what: &'static str, id: &str, exists: bool, expected: i64) -> StoreError {
    if exists {
        StoreError::Conflict {
            what,
            id: id.to_owned(),
            expected,
        }
    } else {
        not_found(what, id)
    }
}

/// Encodes a list of strings (tags) as the JSON array stored in the row.
pub(crate) fn json_strings(values: &[String]) -> String {
    // Serializing a slice of strings cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}
