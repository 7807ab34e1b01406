//! Keystores: persistent token objects of an instance, for PKCS#11 libraries (the gRPC door's
//! keystore service).
//!
//! A keystore is a named container in an instance. An object is the client's opaque blob (a key
//! blob it got from the GREP11 crypto service, already sealed under the instance master key, or
//! nothing for a public object; the server never opens it) with public attributes
//! (`CK_ATTRIBUTE_TYPE` → value bytes) that [`Keyfort::find_token_objects`] matches exactly,
//! through the store's attribute index.
//!
//! Rules: the instance is named as for GREP11 calls (the `bluemix-instance` header, or the
//! caller's only instance) and must be unsealed; Readers list, get and find
//! ([`Action::ReadKey`]); Writers create keystores ([`Action::CreateKeyRing`]) and store, update
//! and delete objects ([`Action::CreateKey`]); deleting a keystore that still holds objects needs
//! `force` and a Manager ([`Action::ManageKey`]). Every update names the object's row version.
//! Every change is written with its audit event in one transaction; reads and refusals are
//! audited too.

use std::collections::BTreeMap;

use keyfort_store::{
    KeystoreObjectRecord, KeystoreRecord, KeystoreWrite, ObjectAttribute, ObjectQuery, StoreError,
    Write,
};
use serde_json::json;

use crate::auth::{Action, Caller};
use crate::{CoreError, Keyfort, Result, new_id};

/// Most keystores in one instance.
pub const MAX_KEYSTORES: usize = 256;
/// Longest keystore name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest object blob (a GREP11 key blob is at most 9 KiB).
pub const MAX_BLOB_LEN: usize = 64 * 1024;
/// Most attributes on one object.
pub const MAX_ATTRIBUTES: usize = 128;
/// Largest value of one attribute (room for a certificate's `CKA_VALUE`).
pub const MAX_ATTRIBUTE_LEN: usize = 32 * 1024;
/// Largest sum of an object's attribute values.
pub const MAX_ATTRIBUTES_TOTAL: usize = 128 * 1024;
/// Most attributes in one find template.
pub const MAX_TEMPLATE: usize = 16;
/// Page size of a find without a limit.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page of a find.
pub const MAX_PAGE: u32 = 1000;

/// A keystore as the keystore service shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keystore {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub created_by: String,
    pub object_count: u64,
}

/// One public attribute: a PKCS#11 attribute type and its value bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenAttribute {
    pub attr_type: u64,
    pub value: Vec<u8>,
}

/// A token object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenObject {
    pub id: String,
    pub keystore_id: String,
    /// The client's opaque blob.
    pub blob: Vec<u8>,
    /// Sorted by type, no type twice.
    pub attributes: Vec<TokenAttribute>,
    pub row_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A change to an object (C_SetAttributeValue, or a re-sealed blob).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectUpdate {
    /// The row version the client read.
    pub row_version: i64,
    /// The new blob, if it changes.
    pub blob: Option<Vec<u8>>,
    /// Attributes added or replaced.
    pub set: Vec<TokenAttribute>,
    /// Attribute types removed.
    pub remove: Vec<u64>,
}

/// One page of a find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPage {
    pub objects: Vec<TokenObject>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why the keystore service refused a request. Doors map each to their own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreRefusal {
    #[error("no such keystore")]
    KeystoreNotFound,
    #[error("no such object")]
    ObjectNotFound,
    #[error("a keystore of that name exists")]
    NameTaken,
    #[error("the name must be 1 to 64 of letters, digits, '.', '-' and '_'")]
    InvalidName,
    #[error("the instance has the most keystores allowed")]
    TooManyKeystores,
    #[error("the keystore holds objects; delete them or force")]
    NotEmpty,
    #[error("the blob is larger than allowed")]
    BlobTooLarge,
    #[error("more attributes than allowed")]
    TooManyAttributes,
    #[error("an attribute type appears twice")]
    DuplicateAttribute,
    #[error("an attribute value is larger than allowed")]
    AttributeTooLarge,
    #[error("the template has more attributes than allowed")]
    TemplateTooLarge,
    #[error("the limit must be 0 to 1000")]
    InvalidLimit,
    #[error("the cursor is not one this service returned")]
    InvalidCursor,
    #[error("the row version is not a version the object had")]
    InvalidRowVersion,
}

fn refuse(id: &str, reason: KeystoreRefusal) -> CoreError {
    CoreError::KeystoreRefused {
        id: id.to_owned(),
        reason,
    }
}

impl Keyfort {
    /// Creates a keystore (Writer).
    pub async fn create_keystore(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        name: &str,
    ) -> Result<Keystore> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(caller, &instance_id, "keystore.create", name, async {
            self.keystore_access(caller, &instance_id, Action::CreateKeyRing)
                .await?;
            if !valid_name(name) {
                return Err(refuse(name, KeystoreRefusal::InvalidName));
            }
            if self.store().list_keystores(&instance_id).await?.len() >= MAX_KEYSTORES {
                return Err(refuse(name, KeystoreRefusal::TooManyKeystores));
            }
            let record = KeystoreRecord {
                instance_id: instance_id.clone(),
                id: new_id()?,
                name: name.to_owned(),
                created_at: self.now_ms(),
                created_by: caller.principal.name.clone(),
            };
            let event = self.audit_event(
                caller,
                &instance_id,
                "keystore.create",
                &record.id,
                "success",
                json!({"name": name}),
            );
            self.apply_audited(
                vec![Write::Keystore(KeystoreWrite::Insert(record.clone()))],
                event,
            )
            .await
            .map_err(|e| match e {
                CoreError::AlreadyExists { .. } => refuse(name, KeystoreRefusal::NameTaken),
                other => other,
            })?;
            Ok(keystore_from(record, 0))
        })
        .await
    }

    /// The keystores of the instance, by name (Reader).
    pub async fn keystores(
        &self,
        caller: &Caller,
        instance: Option<&str>,
    ) -> Result<Vec<Keystore>> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(caller, &instance_id, "keystore.list", &instance_id, async {
            self.keystore_access(caller, &instance_id, Action::ReadKey)
                .await?;
            let mut out = Vec::new();
            for record in self.store().list_keystores(&instance_id).await? {
                let n = self
                    .store()
                    .count_keystore_objects(&instance_id, &record.id)
                    .await?;
                out.push(keystore_from(record, n));
            }
            self.audit_read(
                caller,
                &instance_id,
                "keystore.list",
                &instance_id,
                json!({"count": out.len()}),
            )
            .await?;
            Ok(out)
        })
        .await
    }

    /// Deletes a keystore: refused while it holds objects, unless `force` (Manager), which
    /// deletes them with it.
    pub async fn delete_keystore(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        force: bool,
    ) -> Result<()> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(
            caller,
            &instance_id,
            "keystore.delete",
            keystore_id,
            async {
                let action = if force {
                    Action::ManageKey
                } else {
                    Action::CreateKeyRing
                };
                self.keystore_access(caller, &instance_id, action).await?;
                let event = self.audit_event(
                    caller,
                    &instance_id,
                    "keystore.delete",
                    keystore_id,
                    "success",
                    json!({"force": force}),
                );
                let write = KeystoreWrite::Delete {
                    instance_id: instance_id.clone(),
                    id: keystore_id.to_owned(),
                    force,
                };
                self.keystore_write(keystore_id, write, event).await?;
                Ok(())
            },
        )
        .await
    }

    /// Stores a new object in a keystore (Writer).
    pub async fn store_token_object(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        blob: Vec<u8>,
        attributes: Vec<TokenAttribute>,
    ) -> Result<TokenObject> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(
            caller,
            &instance_id,
            "keystore.object.store",
            keystore_id,
            async {
                self.keystore_access(caller, &instance_id, Action::CreateKey)
                    .await?;
                check_blob(keystore_id, &blob)?;
                let attributes = canonical(keystore_id, attributes)?;
                let now = self.now_ms();
                let record = KeystoreObjectRecord {
                    instance_id: instance_id.clone(),
                    keystore_id: keystore_id.to_owned(),
                    id: crate::service::new_key_id(now)?,
                    blob,
                    attributes,
                    created_at: now,
                    updated_at: now,
                    row_version: 1,
                };
                let event = self.audit_event(
                caller,
                &instance_id,
                "keystore.object.store",
                &record.id,
                "success",
                json!({"keystore": keystore_id, "attributes": attribute_types(&record.attributes)}),
            );
                let write = KeystoreWrite::InsertObject(record.clone());
                self.keystore_write(keystore_id, write, event).await?;
                Ok(object_from(record))
            },
        )
        .await
    }

    /// One object (Reader).
    pub async fn token_object(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        id: &str,
    ) -> Result<TokenObject> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(caller, &instance_id, "keystore.object.get", id, async {
            self.keystore_access(caller, &instance_id, Action::ReadKey)
                .await?;
            let record = self.object_record(&instance_id, keystore_id, id).await?;
            self.audit_read(
                caller,
                &instance_id,
                "keystore.object.get",
                id,
                json!({"keystore": keystore_id}),
            )
            .await?;
            Ok(object_from(record))
        })
        .await
    }

    /// The objects of a keystore having every attribute of `template` with exactly that value,
    /// by id, one page of at most `limit` (0: [`DEFAULT_PAGE`]) after `cursor` (Reader).
    pub async fn find_token_objects(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        template: Vec<TokenAttribute>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<ObjectPage> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(
            caller,
            &instance_id,
            "keystore.object.find",
            keystore_id,
            async {
                self.keystore_access(caller, &instance_id, Action::ReadKey)
                    .await?;
                if template.len() > MAX_TEMPLATE {
                    return Err(refuse(keystore_id, KeystoreRefusal::TemplateTooLarge));
                }
                let mut template = canonical(keystore_id, template)?;
                // The store searches by the first attribute: make it the most selective one.
                template.sort_by_key(|a| low_cardinality(a.attr_type));
                let limit = match limit {
                    0 => DEFAULT_PAGE,
                    n if n <= MAX_PAGE => n,
                    _ => return Err(refuse(keystore_id, KeystoreRefusal::InvalidLimit)),
                };
                if cursor.is_some_and(|c| !valid_cursor(c)) {
                    return Err(refuse(keystore_id, KeystoreRefusal::InvalidCursor));
                }
                if self
                    .store()
                    .keystore(&instance_id, keystore_id)
                    .await?
                    .is_none()
                {
                    return Err(refuse(keystore_id, KeystoreRefusal::KeystoreNotFound));
                }
                let types = attribute_types(&template);
                // One more than the page tells whether another page follows.
                let query = ObjectQuery {
                    template,
                    after: cursor.map(str::to_owned),
                    limit: u64::from(limit) + 1,
                };
                let mut records = self
                    .store()
                    .find_keystore_objects(&instance_id, keystore_id, &query)
                    .await?;
                let more = records.len() > limit as usize;
                records.truncate(limit as usize);
                let next_cursor = if more {
                    records.last().map(|r| r.id.clone())
                } else {
                    None
                };
                self.audit_read(
                    caller,
                    &instance_id,
                    "keystore.object.find",
                    keystore_id,
                    json!({"template": types, "found": records.len()}),
                )
                .await?;
                Ok(ObjectPage {
                    objects: records.into_iter().map(object_from).collect(),
                    next_cursor,
                })
            },
        )
        .await
    }

    /// Changes an object if `update.row_version` is its current version (Writer); a stale
    /// version is a [`CoreError::Conflict`] and changes nothing.
    pub async fn update_token_object(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        id: &str,
        update: ObjectUpdate,
    ) -> Result<TokenObject> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(caller, &instance_id, "keystore.object.update", id, async {
            self.keystore_access(caller, &instance_id, Action::CreateKey)
                .await?;
            if update.row_version < 1 {
                return Err(refuse(id, KeystoreRefusal::InvalidRowVersion));
            }
            if let Some(blob) = &update.blob {
                check_blob(id, blob)?;
            }
            if update.set.len() > MAX_ATTRIBUTES || update.remove.len() > MAX_ATTRIBUTES {
                return Err(refuse(id, KeystoreRefusal::TooManyAttributes));
            }
            let set = canonical(id, update.set)?;
            let mut record = self.object_record(&instance_id, keystore_id, id).await?;
            if record.row_version != update.row_version {
                return Err(CoreError::Conflict {
                    what: "keystore object",
                    id: id.to_owned(),
                });
            }
            let mut merged: BTreeMap<u64, Vec<u8>> = record
                .attributes
                .drain(..)
                .map(|a| (a.attr_type, a.value))
                .collect();
            for t in &update.remove {
                merged.remove(t);
            }
            for a in &set {
                merged.insert(a.attr_type, a.value.clone());
            }
            let attributes: Vec<TokenAttribute> = merged
                .into_iter()
                .map(|(attr_type, value)| TokenAttribute { attr_type, value })
                .collect();
            record.attributes = canonical(id, attributes)?;
            let blob_changed = update.blob.is_some();
            if let Some(blob) = update.blob {
                record.blob = blob;
            }
            record.updated_at = self.now_ms();
            let event = self.audit_event(
                caller,
                &instance_id,
                "keystore.object.update",
                id,
                "success",
                json!({
                    "keystore": keystore_id,
                    "set": attribute_types(&set),
                    "removed": update.remove,
                    "blob": blob_changed,
                }),
            );
            let write = KeystoreWrite::UpdateObject(record.clone());
            let applied = self.keystore_write(keystore_id, write, event).await?;
            record.row_version = applied.unwrap_or(record.row_version + 1);
            Ok(object_from(record))
        })
        .await
    }

    /// Deletes an object (Writer); with `row_version`, only if it is the current one.
    pub async fn delete_token_object(
        &self,
        caller: &Caller,
        instance: Option<&str>,
        keystore_id: &str,
        id: &str,
        row_version: Option<i64>,
    ) -> Result<()> {
        let instance_id = self.keystore_instance(caller, instance)?;
        self.audited(caller, &instance_id, "keystore.object.delete", id, async {
            self.keystore_access(caller, &instance_id, Action::CreateKey)
                .await?;
            let event = self.audit_event(
                caller,
                &instance_id,
                "keystore.object.delete",
                id,
                "success",
                json!({"keystore": keystore_id}),
            );
            let write = KeystoreWrite::DeleteObject {
                instance_id: instance_id.clone(),
                keystore_id: keystore_id.to_owned(),
                id: id.to_owned(),
                row_version,
            };
            self.keystore_write(id, write, event).await?;
            Ok(())
        })
        .await
    }

    // ---- helpers --------------------------------------------------------------------------

    /// The instance a keystore request is for (as for GREP11 calls), before authorization.
    fn keystore_instance(&self, caller: &Caller, instance: Option<&str>) -> Result<String> {
        match instance {
            Some(id) => Ok(id.to_owned()),
            None => crate::grep11::implied_instance(caller)
                .or_else(|| {
                    crate::grep11::caller_is_deployment_wide(caller)
                        .then(|| self.inner.master_keys.only_loaded())
                        .flatten()
                })
                .ok_or(CoreError::InvalidField {
                    field: "bluemix-instance",
                    rule: "required: the caller is not bound to a single instance",
                }),
        }
    }

    /// Authorizes `action` and checks that the instance is unsealed.
    async fn keystore_access(
        &self,
        caller: &Caller,
        instance_id: &str,
        action: Action,
    ) -> Result<()> {
        caller.authorize(action, instance_id, None)?;
        self.unsealed(instance_id).await?;
        Ok(())
    }

    async fn object_record(
        &self,
        instance_id: &str,
        keystore_id: &str,
        id: &str,
    ) -> Result<KeystoreObjectRecord> {
        if let Some(record) = self
            .store()
            .keystore_object(instance_id, keystore_id, id)
            .await?
        {
            return Ok(record);
        }
        if self
            .store()
            .keystore(instance_id, keystore_id)
            .await?
            .is_none()
        {
            return Err(refuse(keystore_id, KeystoreRefusal::KeystoreNotFound));
        }
        Err(refuse(id, KeystoreRefusal::ObjectNotFound))
    }

    /// Applies one keystore write with its audit event, in one transaction; returns the new
    /// row version of an update. Store refusals become [`KeystoreRefusal`]s.
    async fn keystore_write(
        &self,
        target: &str,
        write: KeystoreWrite,
        event: keyfort_store::AuditEventInput,
    ) -> Result<Option<i64>> {
        match self
            .apply_audited(vec![Write::Keystore(write)], event)
            .await
        {
            Ok(applied) => Ok(applied.iter().find_map(|a| match a {
                keyfort_store::Applied::RowVersion(v) => Some(*v),
                _ => None,
            })),
            Err(CoreError::Store(StoreError::NotFound { what, id })) => Err(refuse(
                &id,
                if what == "keystore" {
                    KeystoreRefusal::KeystoreNotFound
                } else {
                    KeystoreRefusal::ObjectNotFound
                },
            )),
            Err(CoreError::Store(StoreError::InUse { .. })) => {
                Err(refuse(target, KeystoreRefusal::NotEmpty))
            }
            Err(e) => Err(e),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Cursors are object ids (lowercase UUIDs); anything else was not made by this service.
fn valid_cursor(c: &str) -> bool {
    c.len() == 36 && c.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn check_blob(target: &str, blob: &[u8]) -> Result<()> {
    if blob.len() > MAX_BLOB_LEN {
        return Err(refuse(target, KeystoreRefusal::BlobTooLarge));
    }
    Ok(())
}

/// Checks the attribute limits and sorts by type; a type given twice is refused.
fn canonical(target: &str, mut attributes: Vec<TokenAttribute>) -> Result<Vec<ObjectAttribute>> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(refuse(target, KeystoreRefusal::TooManyAttributes));
    }
    let mut total = 0usize;
    for a in &attributes {
        if a.value.len() > MAX_ATTRIBUTE_LEN {
            return Err(refuse(target, KeystoreRefusal::AttributeTooLarge));
        }
        total += a.value.len();
    }
    if total > MAX_ATTRIBUTES_TOTAL {
        return Err(refuse(target, KeystoreRefusal::AttributeTooLarge));
    }
    attributes.sort_by_key(|a| a.attr_type);
    if attributes
        .windows(2)
        .any(|w| w[0].attr_type == w[1].attr_type)
    {
        return Err(refuse(target, KeystoreRefusal::DuplicateAttribute));
    }
    Ok(attributes
        .into_iter()
        .map(|a| ObjectAttribute {
            attr_type: a.attr_type,
            value: a.value,
        })
        .collect())
}

/// Attribute types whose values most objects of a token share (class, key type, flags): a
/// search should not start from them when the template has another.
fn low_cardinality(attr_type: u64) -> bool {
    matches!(
        attr_type,
        // CKA_CLASS, CKA_TOKEN, CKA_PRIVATE; CKA_CERTIFICATE_TYPE, CKA_TRUSTED; CKA_KEY_TYPE;
        // CKA_SENSITIVE ..= CKA_DERIVE; CKA_EXTRACTABLE ..= CKA_ALWAYS_SENSITIVE;
        // CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE; CKA_ALWAYS_AUTHENTICATE,
        // CKA_WRAP_WITH_TRUSTED.
        0x0..=0x2
            | 0x80
            | 0x86
            | 0x100
            | 0x103..=0x10C
            | 0x162..=0x165
            | 0x170..=0x172
            | 0x202
            | 0x210
    )
}

fn attribute_types(attributes: &[ObjectAttribute]) -> Vec<u64> {
    attributes.iter().map(|a| a.attr_type).collect()
}

fn keystore_from(r: KeystoreRecord, object_count: u64) -> Keystore {
    Keystore {
        id: r.id,
        name: r.name,
        created_at: r.created_at,
        created_by: r.created_by,
        object_count,
    }
}

fn object_from(r: KeystoreObjectRecord) -> TokenObject {
    TokenObject {
        id: r.id,
        keystore_id: r.keystore_id,
        blob: r.blob,
        attributes: r
            .attributes
            .into_iter()
            .map(|a| TokenAttribute {
                attr_type: a.attr_type,
                value: a.value,
            })
            .collect(),
        row_version: r.row_version,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(t: u64, v: &[u8]) -> TokenAttribute {
        TokenAttribute {
            attr_type: t,
            value: v.to_vec(),
        }
    }

    #[test]
    fn attributes_are_sorted_bounded_and_unique() {
        let c = canonical("x", vec![a(3, b"l"), a(0, &[1]), a(0x102, b"")]).unwrap();
        assert_eq!(
            c.iter().map(|x| x.attr_type).collect::<Vec<_>>(),
            [0, 3, 0x102]
        );
        let refusal = |r: Result<Vec<ObjectAttribute>>| match r {
            Err(CoreError::KeystoreRefused { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refusal(canonical("x", vec![a(3, b"l"), a(3, b"m")])),
            KeystoreRefusal::DuplicateAttribute
        );
        assert_eq!(
            refusal(canonical("x", vec![a(1, &vec![0; MAX_ATTRIBUTE_LEN + 1])])),
            KeystoreRefusal::AttributeTooLarge
        );
        let many = (0..=MAX_ATTRIBUTES as u64).map(|t| a(t, b"")).collect();
        assert_eq!(
            refusal(canonical("x", many)),
            KeystoreRefusal::TooManyAttributes
        );
        let heavy = (0..5).map(|t| a(t, &vec![0; MAX_ATTRIBUTE_LEN])).collect();
        assert_eq!(
            refusal(canonical("x", heavy)),
            KeystoreRefusal::AttributeTooLarge
        );
    }

    #[test]
    fn searches_start_from_a_selective_attribute() {
        let mut t = canonical(
            "x",
            vec![a(0, &[3]), a(0x102, &[1]), a(3, b"l"), a(0x100, &[0])],
        )
        .unwrap();
        t.sort_by_key(|a| low_cardinality(a.attr_type));
        // Stable: CKA_LABEL, CKA_ID, then CKA_CLASS, CKA_KEY_TYPE.
        assert_eq!(
            t.iter().map(|x| x.attr_type).collect::<Vec<_>>(),
            [3, 0x102, 0, 0x100]
        );
    }

    #[test]
    fn names_and_cursors() {
        assert!(valid_name("tokens.v1-a_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        assert!(valid_cursor("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!valid_cursor("' OR 1=1 --"));
        assert!(!valid_cursor(""));
    }
}
