//! Rows as the store keeps them. Times are Unix milliseconds (UTC); ids are strings (UUIDs in
//! their hyphenated lower-case form, or names such as the key ring `default`).

/// An instance (tenant). Whether it is sealed is not stored: that is the core's runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    /// Unique across the deployment.
    pub name: String,
    /// Persistent state: `"uninitialized"`, `"initialized"` or `"zeroized"`.
    pub state: String,
    /// Version of the current master key (0 before initialization).
    pub mk_version: i64,
    /// How the master key is loaded: `"dev_key_file"`, `"custodians"`, `"hsm"` (or empty).
    pub unseal_method: String,
    /// Key check value of the current master key, to recognise it when it is loaded.
    pub mk_check_value: Vec<u8>,
    /// Non-secret unseal configuration as JSON (custodian public keys, HSM key label, ...).
    pub unseal_config: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub row_version: i64,
}

/// A key ring of an instance. Ring `default` exists in every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingRecord {
    pub instance_id: String,
    pub id: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A managed object's metadata (keys and, later, other KMIP objects). Never holds material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub instance_id: String,
    pub id: String,
    pub key_ring_id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Unique within the instance.
    pub aliases: Vec<String>,
    /// `"symmetric_key"`, `"private_key"`, `"public_key"`, `"secret_data"`, ...
    pub object_type: String,
    /// `"AES"`, `"RSA"`, `"EC"`, ...
    pub algorithm: String,
    pub bit_length: i64,
    /// Root keys are not extractable; standard keys are.
    pub extractable: bool,
    pub imported: bool,
    /// The core's lifecycle state code.
    pub state: i64,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub activation_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub deactivated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub deleted_by: Option<String>,
    pub last_rotated_at: Option<i64>,
    pub current_version_id: String,
    /// Other non-secret attributes as a JSON object (policies, protocol-specific attributes).
    pub attributes: String,
    pub row_version: i64,
}

/// One version of a key's material, sealed under the instance master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionRecord {
    pub instance_id: String,
    pub key_id: String,
    pub id: String,
    /// 1 for the first version, then +1 per rotation.
    pub seq: i64,
    /// The sealed blob (see `keyfort-crypto`'s `seal` module); never plaintext.
    pub sealed: Vec<u8>,
    /// Master key version the blob is sealed under.
    pub mk_version: i64,
    pub created_at: i64,
}

/// Which keys [`crate::Store::list_keys`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub key_ring_id: Option<String>,
    /// Only these states; empty means every state.
    pub states: Vec<i64>,
    pub extractable: Option<bool>,
    /// Case-insensitive substring of the name or of an alias (see `search_mode`).
    pub search: Option<String>,
    /// How `search` matches.
    pub search_mode: SearchMode,
    /// Only the key with this id.
    pub id: Option<String>,
    /// Conditions on key dates, all of which must hold.
    pub dates: Vec<DateCondition>,
    /// Sort order, first term first; empty means by creation time. Ties go by id.
    pub sort: Vec<KeySort>,
    pub offset: u64,
    /// `None` means no limit.
    pub limit: Option<u64>,
    /// Leave out the objects of KMIP adapters (keys whose attributes carry `kmip_adapter`, see
    /// [`crate::Store::kmip_objects`]): Key Protect does not count them as keys.
    pub without_kmip_adapter_objects: bool,
    /// Only keys after this one in the default order (creation time, then id as bytes): the
    /// next page of a walk through every key, each page as cheap as the first (unlike
    /// `offset`). Meant with `sort` empty.
    pub after: Option<KeyCursor>,
}

/// A position in the default key order (see [`KeyFilter::after`]): the last key of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    pub created_at: i64,
    pub id: String,
}

/// How [`KeyFilter::search`] matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchMode {
    /// Whole-value, case-sensitive equality rather than a case-insensitive substring.
    pub exact: bool,
    /// Keys that do not match.
    pub negate: bool,
    pub scope: SearchScope,
}

/// Where [`KeyFilter::search`] looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchScope {
    /// The name or any alias.
    #[default]
    NameOrAlias,
    Name,
    Alias,
}

/// A date of a key that lists can filter and sort on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDate {
    Created,
    Updated,
    Rotated,
    Deleted,
    Expires,
}

/// A comparison of a [`DateCondition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// `date <comparison> value` (ms); `value: None` means the key has no such date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateCondition {
    pub date: KeyDate,
    pub comparison: Comparison,
    pub value: Option<i64>,
}

/// A property keys can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySortField {
    Id,
    State,
    Extractable,
    Imported,
    Date(KeyDate),
}

/// One term of a sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySort {
    pub field: KeySortField,
    pub descending: bool,
}

/// A user or service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub id: String,
    /// `None` for deployment-wide principals (administrators).
    pub instance_id: Option<String>,
    pub name: String,
    /// `"user"` or `"service"`.
    pub kind: String,
    /// Role grants as JSON, owned by the core.
    pub roles: String,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub row_version: i64,
}

/// An API key of a principal: only a hash of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub principal_id: String,
    pub name: String,
    /// SHA-256 of the API key secret.
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub row_version: i64,
}

/// A secret of an instance itself (not of a key), sealed under its master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSecretRecord {
    pub instance_id: String,
    /// What it is, e.g. `"archived-mk/3"`.
    pub name: String,
    pub sealed: Vec<u8>,
    /// Master key version the blob is sealed under.
    pub mk_version: i64,
    pub created_at: i64,
}

/// An audit event to append; the store chains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventInput {
    pub instance_id: String,
    pub at: i64,
    /// The event as canonical JSON, built by the core (who, what, which key, outcome,
    /// correlation id, source address).
    pub body: String,
    /// The body's `target`, `action` and `outcome` members, when whoever wrote the body gives
    /// them (they must be the body's own: the store indexes them); `None` makes the store read
    /// them from the body.
    pub fields: Option<AuditFields>,
}

/// The members of an event's body that the store indexes; each `""` when absent or not a
/// string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFields {
    pub target: String,
    pub action: String,
    pub outcome: String,
}

/// A stored, chained audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventRecord {
    pub instance_id: String,
    /// 1, 2, 3, ... per instance, without gaps.
    pub seq: i64,
    pub at: i64,
    /// Copies of the body's `target`, `action` and `outcome` string fields (empty when absent),
    /// kept in their own columns for queries.
    pub target: String,
    pub action: String,
    pub outcome: String,
    pub body: String,
    /// The previous event's `hash` (32 zero bytes for the first event).
    pub prev_hash: Vec<u8>,
    /// `SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)`.
    pub hash: Vec<u8>,
}

/// A registration: a cloud resource protected by a key (Key Protect registrations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    pub instance_id: String,
    pub key_id: String,
    /// The resource's CRN; unique per key.
    pub resource_crn: String,
    pub description: Option<String>,
    pub registration_metadata: Option<String>,
    /// WORM: a registration with this flag blocks the key's deletion, even forced.
    pub prevent_key_deletion: bool,
    pub key_version_id: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_by: String,
    pub updated_at: i64,
}

/// A KMIP adapter of an instance (Key Protect `kmip_adapters`): a named group of KMIP client
/// certificates whose objects are wrapped by one root key. Written once, never updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipAdapterRecord {
    pub instance_id: String,
    pub id: String,
    /// Unique within the instance.
    pub name: String,
    pub description: Option<String>,
    /// The adapter profile, `"native_1.0"`.
    pub profile: String,
    /// The root key (customer root key) of the profile.
    pub crk_id: String,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A client certificate of a KMIP adapter. Written once, never updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipCertificateRecord {
    pub instance_id: String,
    pub adapter_id: String,
    /// Unique in the deployment.
    pub id: String,
    /// Unique within the adapter.
    pub name: String,
    /// Lower-case hex SHA-256 of the certificate's DER; unique in the deployment.
    pub fingerprint: String,
    /// The certificate as PEM text.
    pub certificate: String,
    pub created_at: i64,
    pub created_by: String,
}

/// Which objects of an adapter [`crate::Store::kmip_objects`] returns: keys whose attributes
/// JSON names the adapter at `kmip_adapter.adapter_id`, ordered by creation time then id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmipObjectFilter {
    /// Only these states; empty means every state.
    pub states: Vec<i64>,
    pub offset: u64,
    /// `None` means no limit.
    pub limit: Option<u64>,
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// As [`crate::Store::insert_key`].
    InsertKey {
        key: KeyRecord,
        first_version: KeyVersionRecord,
    },
    /// As [`crate::Store::update_key`] (optimistic on `key.row_version`).
    UpdateKey(KeyRecord),
    /// As [`crate::Store::add_key_version`] (optimistic on `key.row_version`).
    AddKeyVersion {
        key: KeyRecord,
        version: KeyVersionRecord,
    },
    /// As [`crate::Store::purge_key`]; also deletes the key's registrations.
    PurgeKey { instance_id: String, key_id: String },
    /// As [`crate::Store::insert_key_ring`].
    InsertKeyRing(KeyRingRecord),
    /// As [`crate::Store::delete_key_ring`].
    DeleteKeyRing { instance_id: String, id: String },
    /// As [`crate::Store::update_instance`] (optimistic).
    UpdateInstance(InstanceRecord),
    /// Inserts or replaces an instance secret.
    PutInstanceSecret(InstanceSecretRecord),
    /// Deletes an instance secret (no error if absent).
    DeleteInstanceSecret { instance_id: String, name: String },
    /// Inserts or replaces a registration (by instance, key and CRN); NotFound if the key is gone.
    PutRegistration(RegistrationRecord),
    /// Deletes a registration; NotFound if absent.
    DeleteRegistration {
        instance_id: String,
        key_id: String,
        resource_crn: String,
    },
    /// Inserts a KMIP adapter; AlreadyExists if its id or its name is taken in the instance.
    InsertKmipAdapter(KmipAdapterRecord),
    /// Deletes a KMIP adapter and its certificates; NotFound if absent.
    DeleteKmipAdapter { instance_id: String, id: String },
    /// Inserts a KMIP client certificate; AlreadyExists if its id, its fingerprint or its name
    /// within the adapter is taken; NotFound if the adapter does not exist.
    InsertKmipCertificate(KmipCertificateRecord),
    /// Deletes a KMIP client certificate; NotFound if absent.
    DeleteKmipCertificate {
        instance_id: String,
        adapter_id: String,
        id: String,
    },
    /// Appends an audit event to the instance's chain (as [`crate::Store::append_audit_event`]).
    AppendAudit(AuditEventInput),
    /// A keystore or token object change (see [`crate::KeystoreWrite`]).
    Keystore(crate::KeystoreWrite),
}

/// Writes applied atomically, in order: all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub writes: Vec<Write>,
}

/// The result of one write of an applied batch, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// An insert, delete or put.
    Done,
    /// An optimistic update: the row's new version.
    RowVersion(i64),
    /// An appended audit event.
    Audit(AuditEventRecord),
}

/// Which audit events [`crate::Store::query_audit_events`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events with `seq > after_seq`.
    pub after_seq: i64,
    /// Only events at or after this time (ms).
    pub from: Option<i64>,
    /// Only events before this time (ms).
    pub until: Option<i64>,
    /// Only events whose `target` is this (a key id, ring id or the instance id).
    pub target: Option<String>,
    /// Only events whose `action` is this.
    pub action: Option<String>,
    /// Only events whose `outcome` is this (`success`, `denied`, `failure`, ...).
    pub outcome: Option<String>,
    /// At most this many (1 to 10 000).
    pub limit: u64,
}

impl AuditFilter {
    /// Whether `event` passes every condition of the filter but its limit.
    pub fn keeps(&self, event: &AuditEventRecord) -> bool {
        event.seq > self.after_seq
            && self.from.is_none_or(|from| event.at >= from)
            && self.until.is_none_or(|until| event.at < until)
            && self.target.as_ref().is_none_or(|t| event.target == *t)
            && self.action.as_ref().is_none_or(|a| event.action == *a)
            && self.outcome.as_ref().is_none_or(|o| event.outcome == *o)
    }
}
