//! The SQLite implementation of [`Store`]: the embedded default (DESIGN §4), one database file in
//! the data directory, in WAL mode with `synchronous=FULL` (the group-commit writer flushes the
//! WAL itself, with the same guarantee, see [`writer`]).
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
//! # Group commit
//!
//! [`Store::apply`], [`Store::set_instance_policies`] and the
//! single-write methods a [`crate::Write`] mirrors (`insert_key`, `update_key`,
//! `add_key_version`, `purge_key`, `insert_key_ring`, `delete_key_ring`, `update_instance`,
//! `delete_instance_secret`) are queued to one writer task that commits every job waiting in one
//! transaction, each job in its own savepoint (see [`writer`]). A write has one implementation,
//! a `*_in` function taking the connection inside a transaction, whichever path runs it. The
//! other writes (rarer, or several statements specific to them) take the writer connection
//! directly with `BEGIN IMMEDIATE`, queueing in the pool with the writer task.
//!
//! [`Store::append_audit_event`] (the event of a read or a refusal) goes to the audit journal
//! ([`journal`]) of a database file, and through the writer for a store in memory.
//!
//! # Which fields an update replaces
//!
//! The identity and provenance of a row never change: for a key `instance_id`, `id`,
//! `object_type`, `algorithm`, `bit_length`, `imported`, `created_at`, `created_by`; for a
//! principal `id`, `instance_id`, `kind`, `created_at`; for an API key `id`, `principal_id`,
//! `hash`, `created_at`; for an instance `id`, `created_at`. Every other field is replaced.

mod audit;
mod instances;
mod journal;
mod keys;
mod keystores;
mod kmip_adapters;
mod migrate;
mod padded;
mod principals;
mod registrations;
mod rows;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::{
    ApiKeyRecord, Applied, AuditEventInput, AuditEventRecord, AuditFilter, InstanceRecord,
    InstanceSecretRecord, KeyFilter, KeyRecord, KeyRingRecord, KeyVersionRecord,
    KeystoreObjectRecord, KeystoreRecord, KmipAdapterRecord, KmipCertificateRecord,
    KmipObjectFilter, ObjectQuery, PrincipalRecord, RegistrationRecord, Result, Store, StoreError,
    Write, WriteBatch,
};
use journal::{ChainLock, Journal};
use writer::{Job, SyncFiles, Writer};

use crate::shared::stale;

/// How long a connection waits for another process's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a task waits for a pooled connection (the writer is shared by every writing task).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read-only connections.
const READERS: u32 = 4;
/// How every write transaction on the writer connection begins, except the group writer's: with
/// `synchronous=FULL` and the write lock, in one round trip. The connection has no standing
/// level: the group writer begins its own with `synchronous=NORMAL` (it flushes the WAL itself,
/// see [`writer`]), so each transaction sets the level it needs.
pub(crate) const BEGIN_DURABLE: &str = "PRAGMA synchronous = FULL; BEGIN IMMEDIATE";

/// A [`Store`] on one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one connection that writes (see the module documentation).
    writer: SqlitePool,
    /// Connections for single-statement reads.
    reader: SqlitePool,
    /// The group-commit writer task's queue (it writes through `writer`).
    queue: Writer,
    /// Where the events of reads go first (a database file only; see [`journal`]).
    journal: Option<Arc<Journal>>,
}

/// A write transaction on the writer connection.
type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// The writer connection, inside a write transaction, as the `*_in` write functions take it.
type Conn = sqlx::SqliteConnection;

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
            // A connection to a local file does not go stale: no ping (a round trip to the
            // connection's thread) before each use.
            .test_before_acquire(false)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // Savepoint and statement journals in memory, not in a temporary file: the
                    // writer's savepoints (one per batch of a group) would otherwise cost a
                    // `pwrite` for every page they touch. They hold one group's changes at most.
                    .pragma("temp_store", "MEMORY")
                    // Checkpoints every 8192 WAL pages (32 MiB) rather than SQLite's 1000: a
                    // checkpoint runs in a commit of the writer and flushes the database file,
                    // and a page changed by many groups is copied back once.
                    .pragma("wal_autocheckpoint", "8192"),
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
            .test_before_acquire(false)
            .connect_lazy_with(base.pragma("query_only", "ON"));
        let journal = Journal::open_shared(path, &writer).await?;
        let queue = Writer::start(
            writer.clone(),
            Some(SyncFiles::new(path.to_path_buf())),
            Some(journal.clone()),
        );
        tokio::spawn(journal::drain_loop(
            Arc::downgrade(&journal),
            queue.downgrade(),
        ));
        Ok(SqliteStore {
            writer,
            reader,
            queue,
            journal: Some(journal),
        })
    }

    /// The journal's events could no longer be moved into the database (and would pile up in
    /// memory): a broken store refuses reads too, as their events cannot be kept.
    fn refuse_if_broken(&self) -> Result<()> {
        if self.queue.is_broken() {
            return Err(writer::refused_after_failed_flush());
        }
        Ok(())
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
            queue: Writer::start(pool.clone(), None, None),
            reader: pool,
            journal: None,
        })
    }

    /// Closes every connection, waiting for them to finish (the last one checkpoints the WAL).
    /// A group commit under way completes first; writes queued after fail.
    pub async fn close(&self) {
        if let Some(journal) = &self.journal {
            // The journal's events into the database, so that the next open has none to move.
            match self.queue.drain(true).await {
                Ok(()) => journal.prune(journal.current_segment().await),
                Err(e) => tracing::warn!(error = %e, "audit journal events left for the next open"),
            }
            journal.close().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    /// The audit journal's writer turn ([`journal::Journal::writer_turn`]), for a direct write
    /// transaction that appends events; taken before the writer connection.
    async fn writer_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.journal {
            Some(journal) => Some(journal.writer_turn().await),
            None => None,
        }
    }

    /// The audit journal's lock, for a write transaction that appends events (see
    /// [`journal::ChainLock`]); taken once the transaction has begun: the writer connection
    /// first, then this lock.
    async fn chain_lock(&self) -> ChainLock {
        match &self.journal {
            Some(journal) => journal.lock().await,
            None => ChainLock::none(),
        }
    }

    /// Moves the audit journal's waiting events into the database, so that a query sees them.
    async fn catch_up(&self) -> Result<()> {
        match &self.journal {
            Some(journal) if journal.has_pending() => self.queue.drain(false).await,
            _ => Ok(()),
        }
    }

    /// Starts a write transaction holding the database's write lock.
    async fn begin(&self) -> Result<Tx> {
        // As the group-commit writer (see `Writer::is_broken`).
        if self.queue.is_broken() {
            return Err(writer::refused_after_failed_flush());
        }
        Ok(self.writer.begin_with(BEGIN_DURABLE).await?)
    }

    /// Runs one write through the group-commit writer.
    async fn apply_one(&self, write: Write) -> Result<Applied> {
        let batch = WriteBatch {
            writes: vec![write],
        };
        let mut applied = self.queue.submit(Job::Batch(batch)).await?;
        applied.pop().ok_or_else(|| unexpected("no result"))
    }

    /// [`Self::apply_one`] for a write answering [`Applied::Done`].
    async fn apply_done(&self, write: Write) -> Result<()> {
        match self.apply_one(write).await? {
            Applied::Done => Ok(()),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }

    /// [`Self::apply_one`] for a write answering [`Applied::RowVersion`].
    async fn apply_row_version(&self, write: Write) -> Result<i64> {
        match self.apply_one(write).await? {
            Applied::RowVersion(v) => Ok(v),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }
}

/// A single write answered with another kind of result than its kind gives: a bug in this
/// module, reported rather than panicked on.
fn unexpected(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!(
        "unexpected result of a single write: {what}"
    )))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        if self.queue.is_broken() {
            return Err(writer::refused_after_failed_flush());
        }
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
        self.apply_row_version(Write::UpdateInstance(instance.clone()))
            .await
    }

    async fn insert_key_ring(&self, ring: &KeyRingRecord) -> Result<()> {
        self.apply_done(Write::InsertKeyRing(ring.clone())).await
    }

    async fn key_ring(&self, instance_id: &str, id: &str) -> Result<Option<KeyRingRecord>> {
        instances::key_ring(self, instance_id, id).await
    }

    async fn list_key_rings(&self, instance_id: &str) -> Result<Vec<KeyRingRecord>> {
        instances::list_key_rings(self, instance_id).await
    }

    async fn delete_key_ring(&self, instance_id: &str, id: &str) -> Result<()> {
        self.apply_done(Write::DeleteKeyRing {
            instance_id: instance_id.to_owned(),
            id: id.to_owned(),
        })
        .await
    }

    async fn insert_key(&self, key: &KeyRecord, first_version: &KeyVersionRecord) -> Result<()> {
        self.apply_done(Write::InsertKey {
            key: key.clone(),
            first_version: first_version.clone(),
        })
        .await
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
        self.apply_row_version(Write::UpdateKey(key.clone())).await
    }

    async fn add_key_version(&self, key: &KeyRecord, version: &KeyVersionRecord) -> Result<i64> {
        self.apply_row_version(Write::AddKeyVersion {
            key: key.clone(),
            version: version.clone(),
        })
        .await
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
        self.apply_done(Write::PurgeKey {
            instance_id: instance_id.to_owned(),
            key_id: id.to_owned(),
        })
        .await
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
        self.apply_done(Write::DeleteInstanceSecret {
            instance_id: instance_id.to_owned(),
            name: name.to_owned(),
        })
        .await
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
        if let Some(journal) = &self.journal {
            self.refuse_if_broken()?;
            return journal.append(&self.reader, event).await;
        }
        match self.apply_one(Write::AppendAudit(event.clone())).await? {
            Applied::Audit(record) => Ok(record),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }

    async fn record_audit_event(&self, event: &AuditEventInput) -> Result<()> {
        match &self.journal {
            Some(journal) => {
                self.refuse_if_broken()?;
                journal.record(&self.reader, event).await
            }
            None => self.append_audit_event(event).await.map(drop),
        }
    }

    async fn audit_events(
        &self,
        instance_id: &str,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEventRecord>> {
        self.catch_up().await?;
        audit::events(self, instance_id, after_seq, limit).await
    }

    async fn query_audit_events(
        &self,
        instance_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventRecord>> {
        self.catch_up().await?;
        audit::query(self, instance_id, filter).await
    }

    async fn apply(&self, batch: &WriteBatch) -> Result<Vec<Applied>> {
        if batch.writes.is_empty() {
            return Ok(Vec::new());
        }
        self.queue.submit(Job::Batch(batch.clone())).await
    }

    async fn instance_policies(&self, instance_id: &str) -> Result<String> {
        instances::policies(self, instance_id).await
    }

    async fn set_instance_policies(
        &self,
        instance_id: &str,
        policies: &str,
        audit: &AuditEventInput,
    ) -> Result<()> {
        self.queue
            .submit(Job::SetPolicies {
                instance_id: instance_id.to_owned(),
                policies: policies.to_owned(),
                audit: audit.clone(),
            })
            .await
            .map(|_| ())
    }

    async fn registrations(
        &self,
        instance_id: &str,
        key_id: Option<&str>,
    ) -> Result<Vec<RegistrationRecord>> {
        registrations::list(self, instance_id, key_id).await
    }

    async fn registrations_after(
        &self,
        instance_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<RegistrationRecord>> {
        registrations::after(self, instance_id, after, limit).await
    }

    async fn kmip_adapters(&self, instance_id: &str) -> Result<Vec<KmipAdapterRecord>> {
        kmip_adapters::adapters(self, instance_id).await
    }

    async fn kmip_certificates(
        &self,
        instance_id: &str,
        adapter_id: &str,
    ) -> Result<Vec<KmipCertificateRecord>> {
        kmip_adapters::certificates(self, instance_id, adapter_id).await
    }

    async fn kmip_certificate_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<KmipCertificateRecord>> {
        kmip_adapters::certificate_by_fingerprint(self, fingerprint).await
    }

    async fn kmip_objects(
        &self,
        instance_id: &str,
        adapter_id: &str,
        filter: &KmipObjectFilter,
    ) -> Result<(Vec<KeyRecord>, u64)> {
        kmip_adapters::objects(self, instance_id, adapter_id, filter).await
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

    async fn list_all_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        principals::list_all_api_keys(self).await
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

    async fn keystore(&self, instance_id: &str, id: &str) -> Result<Option<KeystoreRecord>> {
        keystores::keystore(self, instance_id, id).await
    }

    async fn list_keystores(&self, instance_id: &str) -> Result<Vec<KeystoreRecord>> {
        keystores::list(self, instance_id).await
    }

    async fn count_keystore_objects(&self, instance_id: &str, keystore_id: &str) -> Result<u64> {
        keystores::count_objects(self, instance_id, keystore_id).await
    }

    async fn keystore_object(
        &self,
        instance_id: &str,
        keystore_id: &str,
        id: &str,
    ) -> Result<Option<KeystoreObjectRecord>> {
        keystores::object(self, instance_id, keystore_id, id).await
    }

    async fn find_keystore_objects(
        &self,
        instance_id: &str,
        keystore_id: &str,
        query: &ObjectQuery,
    ) -> Result<Vec<KeystoreObjectRecord>> {
        keystores::find(self, instance_id, keystore_id, query).await
    }
}
