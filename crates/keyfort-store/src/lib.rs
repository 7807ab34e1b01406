//! Keyfort's persistence layer.
//!
//! The [`Store`] trait is what `keyfort-core` calls; it is implemented on SQLite
//! ([`sqlite::SqliteStore`], the embedded default) and on PostgreSQL ([`postgres::PgStore`], for
//! several nodes); both pass the same test suite (`tests/suite.rs`).
//!
//! Records here are plain rows: strings, integers and byte strings. The core owns the domain types
//! and converts at this edge. Key material only ever reaches a record already sealed by the core;
//! this crate never sees a secret in the clear.
//!
//! Every mutable row carries a `row_version`. An update names the version it read; if the row has
//! changed since, the update fails with [`StoreError::Conflict`] and changes nothing (optimistic
//! concurrency).

#![forbid(unsafe_code)]

pub mod postgres;
pub mod records;
pub mod sqlite;

mod chain;
mod error;
mod keystores;
mod migrations;
mod row_read;
mod shared;

pub use error::StoreError;
pub use keystores::{
    KeystoreObjectRecord, KeystoreRecord, KeystoreWrite, ObjectAttribute, ObjectQuery,
};
pub use records::*;

use async_trait::async_trait;

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Keyfort persists. Implementations must be durable: when a write returns `Ok`, it
/// survives a crash of the process or the machine.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name of the backend, for logs and `/readyz` ("sqlite", "postgres").
    fn backend(&self) -> &'static str;

    /// Checks that the database answers (a trivial query).
    async fn ping(&self) -> Result<()>;

    // ---- instances -------------------------------------------------------------------------

    /// Inserts a new instance. [`StoreError::AlreadyExists`] if the id or the name is taken.
    async fn insert_instance(&self, instance: &InstanceRecord) -> Result<()>;

    /// One instance by id.
    async fn instance(&self, id: &str) -> Result<Option<InstanceRecord>>;

    /// All instances, ordered by creation time then id.
    async fn list_instances(&self) -> Result<Vec<InstanceRecord>>;

    /// Replaces the mutable fields of an instance if its stored `row_version` equals
    /// `instance.row_version`; returns the new row version (old + 1).
    async fn update_instance(&self, instance: &InstanceRecord) -> Result<i64>;

    // ---- key rings -------------------------------------------------------------------------

    /// Inserts a key ring. [`StoreError::AlreadyExists`] if `(instance_id, id)` exists.
    async fn insert_key_ring(&self, ring: &KeyRingRecord) -> Result<()>;

    /// One key ring.
    async fn key_ring(&self, instance_id: &str, id: &str) -> Result<Option<KeyRingRecord>>;

    /// The key rings of an instance, ordered by id.
    async fn list_key_rings(&self, instance_id: &str) -> Result<Vec<KeyRingRecord>>;

    /// Deletes a key ring; [`StoreError::NotFound`] if absent, [`StoreError::InUse`] if keys
    /// (in any state) still belong to it.
    async fn delete_key_ring(&self, instance_id: &str, id: &str) -> Result<()>;

    // ---- keys ------------------------------------------------------------------------------

    /// Inserts a key, its aliases and its first version in one transaction.
    /// [`StoreError::AlreadyExists`] if the key id or one of its aliases is taken in the instance;
    /// [`StoreError::NotFound`] if its key ring does not exist.
    async fn insert_key(&self, key: &KeyRecord, first_version: &KeyVersionRecord) -> Result<()>;

    /// One key by id.
    async fn key(&self, instance_id: &str, id: &str) -> Result<Option<KeyRecord>>;

    /// One key by one of its aliases.
    async fn key_by_alias(&self, instance_id: &str, alias: &str) -> Result<Option<KeyRecord>>;

    /// The keys of an instance matching `filter`, ordered by creation time then id, paged by
    /// `filter.offset` / `filter.limit`.
    async fn list_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<Vec<KeyRecord>>;

    /// How many keys match `filter` (ignoring its offset and limit).
    async fn count_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<u64>;

    /// Replaces the mutable fields of a key, and its alias set, if its stored `row_version`
    /// equals `key.row_version`; returns the new row version.
    async fn update_key(&self, key: &KeyRecord) -> Result<i64>;

    /// Rotation: updates the key row exactly as [`Store::update_key`] does and inserts
    /// `version`, in one transaction. Returns the key's new row version.
    async fn add_key_version(&self, key: &KeyRecord, version: &KeyVersionRecord) -> Result<i64>;

    /// The versions of a key, oldest first.
    async fn key_versions(&self, instance_id: &str, key_id: &str) -> Result<Vec<KeyVersionRecord>>;

    /// One version of a key.
    async fn key_version(
        &self,
        instance_id: &str,
        key_id: &str,
        version_id: &str,
    ) -> Result<Option<KeyVersionRecord>>;

    /// Removes a key, its aliases and all its versions (purge). [`StoreError::NotFound`] if absent.
    async fn purge_key(&self, instance_id: &str, id: &str) -> Result<()>;

    // ---- master key rotation ---------------------------------------------------------------

    /// Key versions of an instance sealed under a master key version lower than `mk_version`,
    /// ordered by `(key_id, seq)`, at most `limit` (the re-seal job's batches).
    async fn key_versions_below_mk(
        &self,
        instance_id: &str,
        mk_version: i64,
        limit: u64,
    ) -> Result<Vec<KeyVersionRecord>>;

    /// How many key versions of an instance are sealed under a master key lower than `mk_version`.
    async fn count_key_versions_below_mk(&self, instance_id: &str, mk_version: i64) -> Result<u64>;

    /// Replaces a key version's `sealed` blob and `mk_version` if its stored `mk_version` is
    /// still `expected_mk_version`; [`StoreError::Conflict`] otherwise (someone re-sealed it
    /// first), [`StoreError::NotFound`] if the version is gone (its key was purged).
    async fn reseal_key_version(
        &self,
        version: &KeyVersionRecord,
        expected_mk_version: i64,
    ) -> Result<()>;

    /// Instance-level sealed secrets (an archived master key during rotation, ...).
    async fn instance_secret(
        &self,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<InstanceSecretRecord>>;

    /// Deletes an instance secret; `Ok` if it did not exist.
    async fn delete_instance_secret(&self, instance_id: &str, name: &str) -> Result<()>;

    /// Updates an instance exactly as [`Store::update_instance`] does and, in the same
    /// transaction, inserts or replaces `secret` (if given) and appends `audit` (if given).
    async fn update_instance_with(
        &self,
        instance: &InstanceRecord,
        secret: Option<&InstanceSecretRecord>,
        audit: Option<&AuditEventInput>,
    ) -> Result<i64>;

    /// Records a signed command's nonce as used. [`StoreError::AlreadyExists`] if it was used
    /// before (a replay). Nonces whose `expires_at` is past `now` may be forgotten.
    async fn use_command_nonce(
        &self,
        instance_id: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<()>;

    /// Zeroization: in one transaction, deletes every key, alias, key version, key ring other
    /// than `default`, instance secret, keystore and token object, KMIP adapter and KMIP
    /// certificate of the instance, updates the instance record as [`Store::update_instance`]
    /// does (optimistic), and appends `audit`. Principals and the audit trail remain.
    async fn zeroize_instance(
        &self,
        instance: &InstanceRecord,
        audit: &AuditEventInput,
    ) -> Result<i64>;

    // ---- audit -----------------------------------------------------------------------------

    /// Appends an event to the instance's hash chain: in one transaction, reads the last event
    /// of the instance, assigns `seq = last + 1` (1 for the first), `prev_hash` = the last
    /// event's hash (32 zero bytes for the first), and
    /// `hash = SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)` (computed with
    /// `keyfort_crypto::digest::sha256`).
    async fn append_audit_event(&self, event: &AuditEventInput) -> Result<AuditEventRecord>;

    /// [`Store::append_audit_event`] for a caller that needs nothing back (the event of a
    /// read, of a refusal): a store may spare the copy of the event it would return.
    async fn record_audit_event(&self, event: &AuditEventInput) -> Result<()> {
        self.append_audit_event(event).await.map(drop)
    }

    /// Events of an instance with `seq > after_seq`, in order, at most `limit`.
    async fn audit_events(
        &self,
        instance_id: &str,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEventRecord>>;

    /// Audit events of an instance matching `filter`, in `seq` order.
    async fn query_audit_events(
        &self,
        instance_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventRecord>>;

    // ---- batches, policies, registrations --------------------------------------------------

    /// Applies every write of `batch` in one transaction, in order; if any fails, none is
    /// applied and its error is returned. Concurrent batches may be committed together (group
    /// commit), each still atomic and isolated from the others' failures; `Ok` means durable.
    async fn apply(&self, batch: &WriteBatch) -> Result<Vec<Applied>>;

    /// The instance's Key Protect instance policies as JSON (`"{}"` if never set).
    async fn instance_policies(&self, instance_id: &str) -> Result<String>;

    /// Replaces the instance policies JSON and appends `audit`, in one transaction.
    async fn set_instance_policies(
        &self,
        instance_id: &str,
        policies: &str,
        audit: &AuditEventInput,
    ) -> Result<()>;

    /// Registrations of one key (or of every key of the instance when `key_id` is `None`),
    /// ordered by key then CRN.
    async fn registrations(
        &self,
        instance_id: &str,
        key_id: Option<&str>,
    ) -> Result<Vec<RegistrationRecord>>;

    /// At most `limit` registrations of the instance, after the one `after` names (key id,
    /// resource CRN; both compared as bytes), ordered by key then CRN: a walk through every
    /// registration a page at a time.
    async fn registrations_after(
        &self,
        instance_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<RegistrationRecord>>;

    // ---- KMIP adapters (written through `apply`) -------------------------------------------

    /// The KMIP adapters of an instance, ordered by creation time then id.
    async fn kmip_adapters(&self, instance_id: &str) -> Result<Vec<KmipAdapterRecord>>;

    /// The client certificates of one adapter, ordered by creation time then id.
    async fn kmip_certificates(
        &self,
        instance_id: &str,
        adapter_id: &str,
    ) -> Result<Vec<KmipCertificateRecord>>;

    /// The client certificate with this fingerprint, in any instance.
    async fn kmip_certificate_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<KmipCertificateRecord>>;

    /// The objects of one adapter matching `filter` (paged), and how many match in all.
    async fn kmip_objects(
        &self,
        instance_id: &str,
        adapter_id: &str,
        filter: &KmipObjectFilter,
    ) -> Result<(Vec<KeyRecord>, u64)>;

    // ---- principals and API keys -----------------------------------------------------------

    /// Inserts a principal. [`StoreError::AlreadyExists`] if its id or `(instance_id, name)` exists.
    async fn insert_principal(&self, principal: &PrincipalRecord) -> Result<()>;

    /// One principal by id.
    async fn principal(&self, id: &str) -> Result<Option<PrincipalRecord>>;

    /// One principal by name, within an instance (`None` = deployment-wide principals).
    async fn principal_by_name(
        &self,
        instance_id: Option<&str>,
        name: &str,
    ) -> Result<Option<PrincipalRecord>>;

    /// All principals, ordered by creation time then id.
    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>>;

    /// Replaces the mutable fields of a principal (optimistic); returns the new row version.
    async fn update_principal(&self, principal: &PrincipalRecord) -> Result<i64>;

    /// Inserts an API key (its hash only). [`StoreError::AlreadyExists`] if id or hash exists;
    /// [`StoreError::NotFound`] if the principal does not exist.
    async fn insert_api_key(&self, api_key: &ApiKeyRecord) -> Result<()>;

    /// The API key whose hash is `hash`.
    async fn api_key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>>;

    /// Every API key, ordered by creation time then id.
    async fn list_all_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;

    /// One API key by id.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// The API keys of a principal, ordered by creation time then id.
    async fn list_api_keys(&self, principal_id: &str) -> Result<Vec<ApiKeyRecord>>;

    /// Replaces the mutable fields of an API key (optimistic); returns the new row version.
    async fn update_api_key(&self, api_key: &ApiKeyRecord) -> Result<i64>;

    // ---- keystores (written through `apply` with `Write::Keystore`) --------------------------

    /// One keystore by id.
    async fn keystore(&self, instance_id: &str, id: &str) -> Result<Option<KeystoreRecord>>;

    /// The keystores of an instance, ordered by name.
    async fn list_keystores(&self, instance_id: &str) -> Result<Vec<KeystoreRecord>>;

    /// How many objects a keystore holds.
    async fn count_keystore_objects(&self, instance_id: &str, keystore_id: &str) -> Result<u64>;

    /// One object of a keystore.
    async fn keystore_object(
        &self,
        instance_id: &str,
        keystore_id: &str,
        id: &str,
    ) -> Result<Option<KeystoreObjectRecord>>;

    /// The objects of a keystore matching `query` (see [`ObjectQuery`]), found through the
    /// attribute index, never by reading every object.
    async fn find_keystore_objects(
        &self,
        instance_id: &str,
        keystore_id: &str,
        query: &ObjectQuery,
    ) -> Result<Vec<KeystoreObjectRecord>>;
}
