//! The PostgreSQL implementation of [`Store`]: for several Keyfort nodes on one database
//! (DESIGN §4).
//!
//! # Transactions
//!
//! Every write runs in one `READ COMMITTED` transaction on a pooled connection; `COMMIT` returns
//! once the server has made it durable (the server's `synchronous_commit`, `on` by default), so an
//! `Ok` is durable. PostgreSQL commits concurrent transactions together on its own (its WAL
//! writer flushes many commits at once), so there is no group-commit writer as for SQLite.
//!
//! Optimistic updates name the `row_version` they read (`... WHERE row_version = $n`): a
//! concurrent update of the same row waits for the other transaction, re-reads the row and then
//! matches nothing, which is reported as [`StoreError::Conflict`]. Constraint violations are
//! mapped by the violated constraint's name (`pk_keys`, `uq_key_aliases`, ...), never by message.
//! A transaction the server aborts to break a deadlock (or a serialization failure) is retried
//! from the start a few times before its error is returned.
//!
//! # The audit chain across nodes
//!
//! Each instance's chain head (last seq and hash) lives in `audit_heads`. An append upserts that
//! row (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), which locks it until the transaction
//! ends and returns the head the last committed append left; so appends from any number of nodes
//! are serialized per instance, each chained to the one before, without gaps or forks. The
//! primary key `(instance_id, seq)` of `audit_events` would refuse a fork anyway.
//!
//! Lone audit appends (the events of reads) are committed in groups by one task per store
//! ([`appender`]): one head lock and one commit for every append waiting.
//!
//! # Change notifications
//!
//! A transaction that changes a key, an instance (record, policies, secrets, zeroization), a
//! principal or an API key also sends a `NOTIFY` on [`CHANGES_CHANNEL`] naming what changed
//! ([`Change`]); PostgreSQL delivers it to every listening node when, and only if, the
//! transaction commits. [`PgStore::changes`] follows them (see [`listen`]).

mod appender;
mod audit;
mod keystores;
mod kmip_adapters;
pub mod listen;
mod lock;
mod migrate;
mod reads;
mod rows;
mod writes;

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{
    ApiKeyRecord, Applied, AuditEventInput, AuditEventRecord, AuditFilter, InstanceRecord,
    InstanceSecretRecord, KeyFilter, KeyRecord, KeyRingRecord, KeyVersionRecord,
    KeystoreObjectRecord, KeystoreRecord, KmipAdapterRecord, KmipCertificateRecord,
    KmipObjectFilter, ObjectQuery, PrincipalRecord, RegistrationRecord, Result, Store, StoreError,
    Write, WriteBatch,
};
pub use listen::{Change, Changes};
pub use lock::ClusterLock;

/// The `LISTEN`/`NOTIFY` channel of change notifications.
pub const CHANGES_CHANNEL: &str = "keyfort_changes";
/// How long a task waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per node.
const MAX_CONNECTIONS: u32 = 16;
/// How many times a transaction aborted by a deadlock or serialization failure is run.
const ATTEMPTS: u32 = 5;

/// A [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Group commit of lone audit appends ([`appender`]).
    appender: appender::Appender,
    /// Where the database is, without its password (for logs and errors).
    display: String,
}

/// A write transaction.
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// What one write transaction has changed, announced on [`CHANGES_CHANNEL`] just before its
/// `COMMIT` (PostgreSQL delivers it with the commit).
#[derive(Debug, Default)]
pub(crate) struct Touched(BTreeSet<String>);

impl Touched {
    fn key(&mut self, instance_id: &str, key_id: &str) {
        self.0.insert(
            Change::Key {
                instance_id: instance_id.to_owned(),
                key_id: key_id.to_owned(),
            }
            .payload(),
        );
    }

    fn instance(&mut self, instance_id: &str) {
        self.0.insert(
            Change::Instance {
                instance_id: instance_id.to_owned(),
            }
            .payload(),
        );
    }

    fn principals(&mut self) {
        self.0.insert(Change::Principals.payload());
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or with
    /// `?host=/socket/dir`) and brings its schema up to date. Several nodes may open the same
    /// database at once: migrations run under an advisory lock.
    ///
    /// [`StoreError::Open`] if the URL is malformed or the server cannot be reached,
    /// [`StoreError::SchemaTooNew`] if a newer Keyfort migrated it, [`StoreError::Migration`] if a
    /// migration fails (that migration is then rolled back entirely).
    pub async fn open(url: &str) -> Result<PgStore> {
        let display = redact_url(url);
        let open_error = |source| StoreError::Open {
            path: display.clone(),
            source,
        };
        let options: PgConnectOptions = url.parse().map_err(open_error)?;
        Self::connect(options, display).await
    }

    /// [`PgStore::open`] with parsed options; `display` names the database in errors and logs.
    pub async fn connect(options: PgConnectOptions, display: String) -> Result<PgStore> {
        let options = options.application_name("keyfort");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: display.clone(),
                source,
            })?;
        migrate::run(&pool).await?;
        let appender = appender::Appender::start(pool.clone());
        Ok(PgStore {
            pool,
            appender,
            display,
        })
    }

    /// Where the database is, its password left out.
    pub fn location(&self) -> &str {
        &self.display
    }

    /// Follows the change notifications of every node (this one included); see [`listen`].
    pub fn changes(&self) -> Changes {
        listen::start(self.pool.clone())
    }

    /// Takes the cluster-wide lock named `name` if no node holds it; `None` if one does. See
    /// [`lock`].
    pub async fn try_lock(&self, name: &str) -> Result<Option<ClusterLock>> {
        lock::try_lock(&self.pool, lock::key_of(name)).await
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// Commits `tx` after announcing `touched`.
    async fn commit(mut tx: Tx, touched: &Touched) -> Result<()> {
        notify(&mut tx, touched).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a batch in one transaction, retried when the server aborts it to break a deadlock.
    async fn run_batch(&self, batch: &WriteBatch) -> Result<Vec<Applied>> {
        let mut attempt = 1;
        loop {
            let mut tx = self.begin().await?;
            let mut touched = Touched::default();
            let result = writes::apply_in(&mut tx, batch, &mut touched).await;
            let result = match result {
                Ok(applied) => Self::commit(tx, &touched).await.map(|()| applied),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    attempt += 1;
                    tracing::debug!(attempt, "write transaction aborted by the server; retrying");
                }
                other => return other,
            }
        }
    }

    async fn apply_one(&self, write: Write) -> Result<Applied> {
        let batch = WriteBatch {
            writes: vec![write],
        };
        self.run_batch(&batch)
            .await?
            .pop()
            .ok_or_else(|| unexpected("no result"))
    }

    async fn apply_done(&self, write: Write) -> Result<()> {
        match self.apply_one(write).await? {
            Applied::Done => Ok(()),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }

    async fn apply_row_version(&self, write: Write) -> Result<i64> {
        match self.apply_one(write).await? {
            Applied::RowVersion(v) => Ok(v),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }
}

/// Sends one notification per changed thing, in one statement.
async fn notify(conn: &mut PgConnection, touched: &Touched) -> Result<()> {
    if touched.0.is_empty() {
        return Ok(());
    }
    let payloads: Vec<&str> = touched.0.iter().map(String::as_str).collect();
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANGES_CHANNEL)
        .bind(payloads)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A deadlock or serialization failure: the server rolled the transaction back, and running it
/// again may succeed.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(d)) => {
            matches!(d.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// `url` with its password replaced by `***` (and its query parameters left out), for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<postgres url>".to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    // Query parameters may carry a password too.
    let tail = tail.split('?').next().unwrap_or_default();
    format!("{scheme}://{authority}{tail}")
}

/// A single write answered with another kind of result than its kind gives: a bug in this
/// module, reported rather than panicked on.
fn unexpected(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!(
        "unexpected result of a single write: {what}"
    )))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_instance(&self, instance: &InstanceRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        writes::insert_instance_in(&mut tx, instance).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        reads::instance(&self.pool, id).await
    }

    async fn list_instances(&self) -> Result<Vec<InstanceRecord>> {
        reads::list_instances(&self.pool).await
    }

    async fn update_instance(&self, instance: &InstanceRecord) -> Result<i64> {
        self.apply_row_version(Write::UpdateInstance(instance.clone()))
            .await
    }

    async fn insert_key_ring(&self, ring: &KeyRingRecord) -> Result<()> {
        self.apply_done(Write::InsertKeyRing(ring.clone())).await
    }

    async fn key_ring(&self, instance_id: &str, id: &str) -> Result<Option<KeyRingRecord>> {
        reads::key_ring(&self.pool, instance_id, id).await
    }

    async fn list_key_rings(&self, instance_id: &str) -> Result<Vec<KeyRingRecord>> {
        reads::list_key_rings(&self.pool, instance_id).await
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
        reads::key(&self.pool, instance_id, id).await
    }

    async fn key_by_alias(&self, instance_id: &str, alias: &str) -> Result<Option<KeyRecord>> {
        reads::key_by_alias(&self.pool, instance_id, alias).await
    }

    async fn list_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<Vec<KeyRecord>> {
        reads::list_keys(&self.pool, instance_id, filter).await
    }

    async fn count_keys(&self, instance_id: &str, filter: &KeyFilter) -> Result<u64> {
        reads::count_keys(&self.pool, instance_id, filter).await
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
        reads::key_versions(&self.pool, instance_id, key_id).await
    }

    async fn key_version(
        &self,
        instance_id: &str,
        key_id: &str,
        version_id: &str,
    ) -> Result<Option<KeyVersionRecord>> {
        reads::key_version(&self.pool, instance_id, key_id, version_id).await
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
        reads::key_versions_below_mk(&self.pool, instance_id, mk_version, limit).await
    }

    async fn count_key_versions_below_mk(&self, instance_id: &str, mk_version: i64) -> Result<u64> {
        reads::count_key_versions_below_mk(&self.pool, instance_id, mk_version).await
    }

    async fn reseal_key_version(
        &self,
        version: &KeyVersionRecord,
        expected_mk_version: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut touched = Touched::default();
        writes::reseal_in(&mut tx, version, expected_mk_version, &mut touched).await?;
        Self::commit(tx, &touched).await
    }

    async fn instance_secret(
        &self,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<InstanceSecretRecord>> {
        reads::instance_secret(&self.pool, instance_id, name).await
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
        let mut writes = vec![Write::UpdateInstance(instance.clone())];
        writes.extend(secret.cloned().map(Write::PutInstanceSecret));
        writes.extend(audit.cloned().map(Write::AppendAudit));
        match self.run_batch(&WriteBatch { writes }).await?.first() {
            Some(Applied::RowVersion(v)) => Ok(*v),
            other => Err(unexpected(&format!("{other:?}"))),
        }
    }

    async fn use_command_nonce(
        &self,
        instance_id: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        writes::use_nonce_in(&mut tx, instance_id, nonce, expires_at, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn zeroize_instance(
        &self,
        instance: &InstanceRecord,
        audit: &AuditEventInput,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let mut touched = Touched::default();
        let row_version = writes::zeroize_in(&mut tx, instance, audit, &mut touched).await?;
        Self::commit(tx, &touched).await?;
        Ok(row_version)
    }

    async fn append_audit_event(&self, event: &AuditEventInput) -> Result<AuditEventRecord> {
        self.appender.append(event.clone()).await
    }

    async fn audit_events(
        &self,
        instance_id: &str,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEventRecord>> {
        audit::events(&self.pool, instance_id, after_seq, limit).await
    }

    async fn query_audit_events(
        &self,
        instance_id: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventRecord>> {
        audit::query(&self.pool, instance_id, filter).await
    }

    async fn apply(&self, batch: &WriteBatch) -> Result<Vec<Applied>> {
        if batch.writes.is_empty() {
            return Ok(Vec::new());
        }
        self.run_batch(batch).await
    }

    async fn instance_policies(&self, instance_id: &str) -> Result<String> {
        reads::instance_policies(&self.pool, instance_id).await
    }

    async fn set_instance_policies(
        &self,
        instance_id: &str,
        policies: &str,
        audit: &AuditEventInput,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut touched = Touched::default();
        writes::set_policies_in(&mut tx, instance_id, policies, &mut touched).await?;
        audit::append_in(&mut tx, audit, &mut audit::ChainHeads::new()).await?;
        Self::commit(tx, &touched).await
    }

    async fn registrations(
        &self,
        instance_id: &str,
        key_id: Option<&str>,
    ) -> Result<Vec<RegistrationRecord>> {
        reads::registrations(&self.pool, instance_id, key_id).await
    }

    async fn registrations_after(
        &self,
        instance_id: &str,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<RegistrationRecord>> {
        reads::registrations_after(&self.pool, instance_id, after, limit).await
    }

    async fn kmip_adapters(&self, instance_id: &str) -> Result<Vec<KmipAdapterRecord>> {
        kmip_adapters::adapters(&self.pool, instance_id).await
    }

    async fn kmip_certificates(
        &self,
        instance_id: &str,
        adapter_id: &str,
    ) -> Result<Vec<KmipCertificateRecord>> {
        kmip_adapters::certificates(&self.pool, instance_id, adapter_id).await
    }

    async fn kmip_certificate_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<KmipCertificateRecord>> {
        kmip_adapters::certificate_by_fingerprint(&self.pool, fingerprint).await
    }

    async fn kmip_objects(
        &self,
        instance_id: &str,
        adapter_id: &str,
        filter: &KmipObjectFilter,
    ) -> Result<(Vec<KeyRecord>, u64)> {
        kmip_adapters::objects(&self.pool, instance_id, adapter_id, filter).await
    }

    async fn insert_principal(&self, principal: &PrincipalRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        writes::insert_principal_in(&mut tx, principal).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal(&self, id: &str) -> Result<Option<PrincipalRecord>> {
        reads::principal(&self.pool, id).await
    }

    async fn principal_by_name(
        &self,
        instance_id: Option<&str>,
        name: &str,
    ) -> Result<Option<PrincipalRecord>> {
        reads::principal_by_name(&self.pool, instance_id, name).await
    }

    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>> {
        reads::list_principals(&self.pool).await
    }

    async fn update_principal(&self, principal: &PrincipalRecord) -> Result<i64> {
        let mut tx = self.begin().await?;
        let mut touched = Touched::default();
        let v = writes::update_principal_in(&mut tx, principal, &mut touched).await?;
        Self::commit(tx, &touched).await?;
        Ok(v)
    }

    async fn insert_api_key(&self, api_key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        writes::insert_api_key_in(&mut tx, api_key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>> {
        reads::api_key_by_hash(&self.pool, hash).await
    }

    async fn list_all_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        reads::list_all_api_keys(&self.pool).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        reads::api_key(&self.pool, id).await
    }

    async fn list_api_keys(&self, principal_id: &str) -> Result<Vec<ApiKeyRecord>> {
        reads::list_api_keys(&self.pool, principal_id).await
    }

    async fn update_api_key(&self, api_key: &ApiKeyRecord) -> Result<i64> {
        let mut tx = self.begin().await?;
        let mut touched = Touched::default();
        let v = writes::update_api_key_in(&mut tx, api_key, &mut touched).await?;
        Self::commit(tx, &touched).await?;
        Ok(v)
    }

    async fn keystore(&self, instance_id: &str, id: &str) -> Result<Option<KeystoreRecord>> {
        keystores::keystore(&self.pool, instance_id, id).await
    }

    async fn list_keystores(&self, instance_id: &str) -> Result<Vec<KeystoreRecord>> {
        keystores::list(&self.pool, instance_id).await
    }

    async fn count_keystore_objects(&self, instance_id: &str, keystore_id: &str) -> Result<u64> {
        keystores::count_objects(&self.pool, instance_id, keystore_id).await
    }

    async fn keystore_object(
        &self,
        instance_id: &str,
        keystore_id: &str,
        id: &str,
    ) -> Result<Option<KeystoreObjectRecord>> {
        keystores::object(&self.pool, instance_id, keystore_id, id).await
    }

    async fn find_keystore_objects(
        &self,
        instance_id: &str,
        keystore_id: &str,
        query: &ObjectQuery,
    ) -> Result<Vec<KeystoreObjectRecord>> {
        keystores::find(&self.pool, instance_id, keystore_id, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password() {
        assert_eq!(
            redact_url("postgres://kf:s3cret@db.example:5432/keyfort?sslmode=require&password=x"),
            "postgres://kf:***@db.example:5432/keyfort"
        );
        assert_eq!(
            redact_url("postgres://localhost/keyfort"),
            "postgres://localhost/keyfort"
        );
        assert_eq!(redact_url("not a url with s3cret"), "<postgres url>");
    }
}
