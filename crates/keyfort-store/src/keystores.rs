//! Keystores: named containers of persistent token objects (the keystore service of the gRPC
//! door), their records and writes, and the attribute encoding both backends share.
//!
//! An object is an opaque blob (already sealed by the client's GREP11 calls; the store never
//! looks inside) and a set of public attributes `(type, value)`. The attributes are kept twice,
//! in one transaction: encoded in the object's row (what reads return) and one row each in
//! `keystore_attributes`, indexed by `(instance_id, keystore_id, attr_type, value)`, which is
//! what [`crate::Store::find_keystore_objects`] searches.

use crate::{Result, StoreError};

/// A keystore. Immutable once created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreRecord {
    pub instance_id: String,
    pub id: String,
    /// Unique within the instance.
    pub name: String,
    pub created_at: i64,
    pub created_by: String,
}

/// One public attribute of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectAttribute {
    /// The PKCS#11 attribute type (`CK_ATTRIBUTE_TYPE`).
    pub attr_type: u64,
    pub value: Vec<u8>,
}

/// A token object of a keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreObjectRecord {
    pub instance_id: String,
    pub keystore_id: String,
    pub id: String,
    /// The client's opaque (sealed) blob.
    pub blob: Vec<u8>,
    /// Sorted by type, no type twice (the core guarantees it; the store keeps the order).
    pub attributes: Vec<ObjectAttribute>,
    pub created_at: i64,
    pub updated_at: i64,
    pub row_version: i64,
}

/// Which objects [`crate::Store::find_keystore_objects`] returns: those having every attribute
/// of `template` with exactly that value, with an id greater than `after`, ordered by id, at
/// most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectQuery {
    pub template: Vec<ObjectAttribute>,
    pub after: Option<String>,
    pub limit: u64,
}

/// The keystore writes of a [`crate::WriteBatch`] (`Write::Keystore`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeystoreWrite {
    /// Inserts a keystore. [`StoreError::AlreadyExists`] (`"keystore"`, its name) if the
    /// instance has one of that name or id; [`StoreError::NotFound`] if the instance is absent.
    Insert(KeystoreRecord),
    /// Deletes a keystore; [`StoreError::NotFound`] if absent, [`StoreError::InUse`] if it holds
    /// objects, unless `force`, which deletes them too.
    Delete {
        instance_id: String,
        id: String,
        force: bool,
    },
    /// Inserts an object and its attribute rows. [`StoreError::NotFound`] (`"keystore"`) if
    /// the keystore is absent; [`StoreError::AlreadyExists`] if the id is taken.
    InsertObject(KeystoreObjectRecord),
    /// Replaces an object's blob, attributes and `updated_at` if its stored `row_version`
    /// equals `object.row_version` ([`StoreError::Conflict`] otherwise,
    /// [`StoreError::NotFound`] if absent); applied as the new row version.
    UpdateObject(KeystoreObjectRecord),
    /// Deletes an object and its attribute rows; [`StoreError::NotFound`] if absent
    /// (`"keystore"` when the keystore is absent too), [`StoreError::Conflict`] if
    /// `row_version` is given and is not the stored one.
    DeleteObject {
        instance_id: String,
        keystore_id: String,
        id: String,
        row_version: Option<i64>,
    },
}

/// Largest encoded attribute set the decoder accepts (a damaged row beyond it is corrupt).
const MAX_ENCODED_ATTRIBUTES: usize = 1 << 20;

/// Encodes attributes for the object row: per attribute, type (u64 BE), length (u32 BE), value.
pub(crate) fn encode_attributes(attributes: &[ObjectAttribute]) -> Vec<u8> {
    let mut out = Vec::with_capacity(attributes.iter().map(|a| 12 + a.value.len()).sum::<usize>());
    for a in attributes {
        out.extend_from_slice(&a.attr_type.to_be_bytes());
        // The core bounds values far below 4 GiB; a longer one would be cut here, never wrap.
        let len = u32::try_from(a.value.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&a.value);
    }
    out
}

/// Decodes [`encode_attributes`]; a malformed encoding is [`StoreError::Corrupt`].
pub(crate) fn decode_attributes(id: &str, mut bytes: &[u8]) -> Result<Vec<ObjectAttribute>> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        table: "keystore_objects",
        id: id.to_owned(),
        detail: format!("column attributes: {detail}"),
    };
    if bytes.len() > MAX_ENCODED_ATTRIBUTES {
        return Err(corrupt("too long"));
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (Some(t), Some(l)) = (bytes.get(..8), bytes.get(8..12)) else {
            return Err(corrupt("truncated header"));
        };
        let mut tb = [0u8; 8];
        tb.copy_from_slice(t);
        let mut lb = [0u8; 4];
        lb.copy_from_slice(l);
        let len = usize::try_from(u32::from_be_bytes(lb)).map_err(|_| corrupt("length"))?;
        let end = 12usize.checked_add(len).ok_or_else(|| corrupt("length"))?;
        let Some(value) = bytes.get(12..end) else {
            return Err(corrupt("truncated value"));
        };
        out.push(ObjectAttribute {
            attr_type: u64::from_be_bytes(tb),
            value: value.to_vec(),
        });
        bytes = &bytes[end..];
    }
    Ok(out)
}

/// An attribute type as stored in a signed 64-bit column (the same 64 bits).
pub(crate) fn type_to_column(t: u64) -> i64 {
    i64::from_be_bytes(t.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_damage_is_corrupt() {
        let attrs = vec![
            ObjectAttribute {
                attr_type: 0,
                value: vec![3, 0, 0, 0, 0, 0, 0, 0],
            },
            ObjectAttribute {
                attr_type: 0x8000_0001,
                value: Vec::new(),
            },
            ObjectAttribute {
                attr_type: u64::MAX,
                value: b"label".to_vec(),
            },
        ];
        let enc = encode_attributes(&attrs);
        assert_eq!(decode_attributes("o", &enc).unwrap(), attrs);
        assert!(decode_attributes("o", &[]).unwrap().is_empty());
        for cut in 1..enc.len() {
            let r = decode_attributes("o", &enc[..cut]);
            // Every proper prefix that is not at an attribute boundary is refused.
            if ![20usize, 32].contains(&cut) {
                assert!(matches!(r, Err(StoreError::Corrupt { .. })), "cut {cut}");
            }
        }
        assert_eq!(type_to_column(u64::MAX), -1);
        assert_eq!(type_to_column(0x102), 0x102);
    }
}
