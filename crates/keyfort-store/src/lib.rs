//! Keyfort's persistence layer.
//!
//! The [`Store`] trait is what `keyfort-core` calls; it is implemented on SQLite
//! ([`sqlite::SqliteStore`], the embedded default) and is shaped so that a PostgreSQL
//! implementation can pass the same test suite (`tests/suite.rs`).
//!
//! Records here are plain rows: strings, integers and byte strings. The core owns the domain types
//! and converts at this edge. Key material only ever reaches a record already sealed by the core;
//! this crate never sees a secret in the clear.
//!
//! Every mutable row carries a `row_version`. An update names the version it read; if the row has
//! changed since, the update fails with [`StoreError::Conflict`] and changes nothing (optimistic
//! concurrency).

#![forbid(unsafe_code)]

pub mod records;
pub mod sqlite;

mod error;
mod migrations;

pub use error::StoreError;
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

    /// One API key by id.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// The API keys of a principal, ordered by creation time then id.
    async fn list_api_keys(&self, principal_id: &str) -> Result<Vec<ApiKeyRecord>>;

    /// Replaces the mutable fields of an API key (optimistic); returns the new row version.
    async fn update_api_key(&self, api_key: &ApiKeyRecord) -> Result<i64>;
}
