//! The SQLite implementation of [`Store`]: the embedded default (DESIGN §4), one database file in
//! the data directory, in WAL mode with `synchronous=FULL`.
//!
//! # Connections
//!
//! SQLite lets one connection write at a time. With one shared pool of several connections, two
//! transactions that each read and then write cannot both upgrade to the write lock: the loser
//! fails at once with `SQLITE_BUSY` (`SQLITE_BUSY_SNAPSHOT` in WAL mode), whatever the
//! busy timeout. So the store keeps two pools:
//!
//! * the **writer**: exactly one connection. In-process writers queue for it in the pool (async,
//!   fair, no spinning) and never meet `SQLITE_BUSY` among themselves. Every write transaction
//!   starts with `BEGIN IMMEDIATE`, taking the write lock up front, where the busy timeout applies
//!   if another process (a CLI on the same data directory) holds it.
//! * the **readers**: a few `query_only` connections. WAL lets them read concurrently with the
//!   writer; each read is one statement, hence one consistent snapshot.
//!
//! # Which fields an update replaces
//!
//! The identity and provenance of a row never change: for a key `instance_id`, `id`,
//! `object_type`, `algorithm`, `bit_length`, `imported`, `created_at`, `created_by`; for a
//! principal `id`, `instance_id`, `kind`, `created_at`; for an API key `id`, `principal_id`,
//! `hash`, `created_at`; for an instance `id`, `created_at`. Every other field is replaced.

mod audit;
mod instances;
mod keys;
mod migrate;
mod principals;
mod rows;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    ApiKeyRecord, AuditEventInput, AuditEventRecord, InstanceRecord, InstanceSecretRecord,
    KeyFilter, KeyRecord, KeyRingRecord, KeyVersionRecord, PrincipalRecord, Result, Store,
    StoreError,
};

/// How long a connection waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a task waits for a pooled connection (the writer is shared by every writing task).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read-only connections.
const READERS: u32 = 4;

/// A [`Store`] on one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one connection that writes (see the module documentation).
    writer: SqlitePool,
    /// Connections for single-statement reads.
    reader: SqlitePool,
}

/// A write transaction on the writer connection.
type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

impl SqliteStore {
    /// Opens the database at `path`, creating the file if it is missing (not its directory), and
    /// brings its schema up to date.
    ///
    /// [`StoreError::Open`] if the file cannot be opened or created,
    /// [`StoreError::SchemaTooNew`] if a newer Keyfort wrote it, [`StoreError::Migration`] if a
    /// migration fails (that migration is then rolled back entirely).
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        migrate::run(&writer).await?;
        // The file exists and is in WAL mode (a persistent setting) by now.
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(base.pragma("query_only", "ON"));
        Ok(SqliteStore { writer, reader })
    }

    /// A fresh database in memory, for tests: one connection serves reads and writes, and the
    /// data lives as long as the store. Not durable.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The database disappears with its connection: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: ":memory:".to_owned(),
                source,
            })?;
        migrate::run(&pool).await?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// Closes every connection, waiting for them to finish (the last one checkpoints the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction holding the database's write lock.
    async fn begin(&self) -> Result<Tx> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert_instance(&self, instance: &InstanceRecord) -> Result<()> {
        instances::insert(self, instance).await
    }

    async fn instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        instances::get(self, id).await
    }

    async fn list_instances(&self) -> Result<Vec<InstanceRecord>> {
        instances::list(self).await
    }

    async fn update_instance(&self, instance: &InstanceRecord) -> Result<i64> {
        instances::update(self, instance).await
    }

    async fn insert_key_ring(&self, ring: &KeyRingRecord) -> Result<()> {
        instances::insert_key_ring(self, ring).await
    }

    async fn key_ring(&self, instance_id: &str, id: &str) -> Result<Option<KeyRingRecord>> {
        instances::key_ring(self, instance_id, id).await
    }

    async fn list_key_rings(&self, instance_id: &str) -> Result<Vec<KeyRingRecord>> {
        instances::list_key_rings(self, instance_id).await
    }

    async fn delete_key_ring(&self, instance_id: &str, id: &str) -> Result<()> {
        instances::delete_key_ring(self, instance_id, id).await
    }

    async fn insert_key(&self, key: &KeyRecord, first_version: &KeyVersionRecord) -> Result<()> {
        keys::insert(self, key, first_version).await
    }

    async fn key(&self, instance_id: &str, id: &str) -> Result<Option<KeyRecord>> {
        keys::get(self, instance_id, id).await
    }

    async fn key_by_alias(&self, instance_id: &str, alias: &str) -> Result<Option<KeyRecord>> {
        keys::by_alias(self, instance_id, alias).await
    }

    async fn list_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<Vec<KeyRecord>> {
        keys::list(self, instance_id, filter).await
    }

    async fn count_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<u64> {
        keys::count(self, instance_id, filter).await
    }

    async fn update_key(&self, key: &KeyRecord) -> Result<i64> {
        keys::update(self, key).await
    }

    async fn add_key_version(&self, key: &KeyRecord, version: &KeyVersionRecord) -> Result<i64> {
        keys::add_version(self, key, version).await
    }

    async fn key_versions(&self, instance_id: &str, key_id: &str) -> Result<Vec<KeyVersionRecord>> {
        keys::versions(self, instance_id, key_id).await
    }

    async fn key_version(
        &self,
        instance_id: &str,
        key_id: &str,
        version_id: &str,
    ) -> Result<Option<KeyVersionRecord>> {
        keys::version(self, instance_id, key_id, version_id).await
    }

    async fn purge_key(&self, instance_id: &str, id: &str) -> Result<()> {
        keys::purge(self, instance_id, id).await
    }

    async fn key_versions_below_mk(
        &self,
        instance_id: &str,
        mk_version: i64,
        limit: u64,
    ) -> Result<Vec<KeyVersionRecord>> {
        keys::versions_below_mk(self, instance_id, mk_version, limit).await
    }

    async fn count_key_versions_below_mk(&self, instance_id: &str, mk_version: i64) -> Result<u64> {
        keys::count_below_mk(self, instance_id, mk_version).await
    }

    async fn reseal_key_version(
        &self,
        version: &KeyVersionRecord,
        expected_mk_version: i64,
    ) -> Result<()> {
        keys::reseal(self, version, expected_mk_version).await
    }

    async fn instance_secret(
        &self,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<InstanceSecretRecord>> {
        instances::secret(self, instance_id, name).await
    }

    async fn delete_instance_secret(&self, instance_id: &str, name: &str) -> Result<()> {
        instances::delete_secret(self, instance_id, name).await
    }

    async fn update_instance_with(
        &self,
        instance: &InstanceRecord,
        secret: Option<&InstanceSecretRecord>,
        audit: Option<&AuditEventInput>,
    ) -> Result<i64> {
        instances::update_with(self, instance, secret, audit).await
    }

    async fn use_command_nonce(
        &self,
        instance_id: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<()> {
        instances::use_nonce(self, instance_id, nonce, expires_at, now).await
    }

    async fn zeroize_instance(
        &self,
        instance: &InstanceRecord,
        audit: &AuditEventInput,
    ) -> Result<i64> {
        instances::zeroize(self, instance, audit).await
    }

    async fn append_audit_event(&self, event: &AuditEventInput) -> Result<AuditEventRecord> {
        audit::append(self, event).await
    }

    async fn audit_events(
        &self,
        instance_id: &str,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEventRecord>> {
        audit::events(self, instance_id, after_seq, limit).await
    }

    async fn insert_principal(&self, principal: &PrincipalRecord) -> Result<()> {
        principals::insert(self, principal).await
    }

    async fn principal(&self, id: &str) -> Result<Option<PrincipalRecord>> {
        principals::get(self, id).await
    }

    async fn principal_by_name(
        &self,
        instance_id: Option<&str>,
        name: &str,
    ) -> Result<Option<PrincipalRecord>> {
        principals::by_name(self, instance_id, name).await
    }

    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>> {
        principals::list(self).await
    }

    async fn update_principal(&self, principal: &PrincipalRecord) -> Result<i64> {
        principals::update(self, principal).await
    }

    async fn insert_api_key(&self, api_key: &ApiKeyRecord) -> Result<()> {
        principals::insert_api_key(self, api_key).await
    }

    async fn api_key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>> {
        principals::api_key_by_hash(self, hash).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        principals::api_key(self, id).await
    }

    async fn list_api_keys(&self, principal_id: &str) -> Result<Vec<ApiKeyRecord>> {
        principals::list_api_keys(self, principal_id).await
    }

    async fn update_api_key(&self, api_key: &ApiKeyRecord) -> Result<i64> {
        principals::update_api_key(self, api_key).await
    }
}

/// After an optimistic `UPDATE` changed no row: [`StoreError::NotFound`] if the row is gone,
/// [`StoreError::Conflict`] if it has another version. `exists` is the result of a read inside the
/// same transaction.
fn stale(what: &'static str, id: &str, exists: bool, expected: i64) -> StoreError {
    if exists {
        StoreError::Conflict {
            what,
            id: id.to_owned(),
            expected,
        }
    } else {
        rows::not_found(what, id)
    }
}
