//! The raw SQLite baseline for durable key creation: the rows Keyfort writes for a new key (the
//! key's metadata, ~500 bytes, and its sealed version, ~60 bytes) inserted straight into a
//! separate database in WAL mode with `synchronous=FULL`, over one writer connection, as the
//! store does. Two modes:
//!
//! * [`Mode::PerKey`]: one transaction (so one fsync) per key; every concurrent caller waits for
//!   the single connection. The honest "durable per acknowledged row" floor.
//! * [`Mode::GroupCommit`]: callers queue their key to one writer task that commits everything
//!   waiting (at most [`MAX_GROUP`]) in one transaction, then answers them all; still durable
//!   per acknowledged key, one fsync per group.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

use crate::ops::OpError;

/// The most keys one group commit takes.
const MAX_GROUP: usize = 256;

/// The two tables as Keyfort's store declares them, without the key ring foreign key.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    instance_id         TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    key_ring_id         TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    description         TEXT,
    tags                TEXT    NOT NULL,
    object_type         TEXT    NOT NULL,
    algorithm           TEXT    NOT NULL,
    bit_length          INTEGER NOT NULL,
    extractable         INTEGER NOT NULL,
    imported            INTEGER NOT NULL,
    state               INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    created_by          TEXT    NOT NULL,
    updated_at          INTEGER NOT NULL,
    activation_at       INTEGER,
    expires_at          INTEGER,
    deactivated_at      INTEGER,
    deleted_at          INTEGER,
    deleted_by          TEXT,
    last_rotated_at     INTEGER,
    current_version_id  TEXT    NOT NULL,
    attributes          TEXT    NOT NULL,
    row_version         INTEGER NOT NULL,
    CONSTRAINT pk_keys PRIMARY KEY (instance_id, id)
) STRICT;
CREATE INDEX IF NOT EXISTS ix_keys_created ON keys (instance_id, created_at, id);
CREATE INDEX IF NOT EXISTS ix_keys_ring ON keys (instance_id, key_ring_id);
CREATE TABLE IF NOT EXISTS key_versions (
    instance_id     TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    sealed          BLOB    NOT NULL,
    mk_version      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    CONSTRAINT pk_key_versions PRIMARY KEY (instance_id, key_id, id),
    CONSTRAINT uq_key_versions_seq UNIQUE (instance_id, key_id, seq),
    CONSTRAINT fk_key_versions_key FOREIGN KEY (instance_id, key_id)
        REFERENCES keys (instance_id, id)
) STRICT;
";

const INSERT_KEY: &str = "INSERT INTO keys (instance_id, id, key_ring_id, name, description, \
    tags, object_type, algorithm, bit_length, extractable, imported, state, created_at, \
    created_by, updated_at, activation_at, expires_at, deactivated_at, deleted_at, deleted_by, \
    last_rotated_at, current_version_id, attributes, row_version) \
    VALUES (?, ?, 'default', ?, NULL, '[]', 'symmetric_key', 'AES', 256, 0, 0, 1, ?, ?, ?, ?, \
    NULL, NULL, NULL, NULL, NULL, ?, ?, 1)";
const INSERT_VERSION: &str = "INSERT INTO key_versions (instance_id, key_id, id, seq, sealed, \
    mk_version, created_at) VALUES (?, ?, ?, 1, ?, 1, ?)";

const INSTANCE_ID: &str = "7f3c2a10-5d4e-4b8a-9c61-0e2f4a6b8d01";
const CREATED_BY: &str = "iam-ServiceId-2b1f7c9e-4d3a-4e5f-8a6b-1c2d3e4f5a6b";

/// How keys are committed; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PerKey,
    GroupCommit,
}

/// One key insert of the baseline, as an [`crate::ops::Op`].
pub struct RawSqlite {
    pool: SqlitePool,
    seq: AtomicU64,
    run: u64,
    writer: Option<mpsc::Sender<Job>>,
}

struct Job {
    seq: u64,
    reply: oneshot::Sender<Result<(), sqlx::Error>>,
}

/// Opens (creating) the baseline database `path` with one writer connection.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    Ok(pool)
}

impl RawSqlite {
    /// `run` makes the ids of this process unique in a database reused across runs. Must be
    /// called inside the runtime (group commit spawns its writer task).
    pub fn new(pool: &SqlitePool, mode: Mode, run: u64) -> Self {
        let writer = (mode == Mode::GroupCommit).then(|| {
            let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
            tokio::spawn(group_writer(pool.clone(), run, rx));
            tx
        });
        Self {
            pool: pool.clone(),
            seq: AtomicU64::new(0),
            run,
            writer,
        }
    }

    pub async fn call(&self) -> Result<(), OpError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match &self.writer {
            None => {
                let mut tx = self.pool.begin().await.map_err(OpError::Sqlite)?;
                insert_key(&mut tx, self.run, seq, false)
                    .await
                    .map_err(OpError::Sqlite)?;
                tx.commit().await.map_err(OpError::Sqlite)
            }
            Some(writer) => {
                let (reply, answer) = oneshot::channel();
                writer
                    .send(Job { seq, reply })
                    .await
                    .map_err(|_| OpError::WriterGone)?;
                match answer.await {
                    Ok(result) => result.map_err(OpError::Sqlite),
                    Err(_) => Err(OpError::WriterGone),
                }
            }
        }
    }
}

/// Commits every job waiting, up to [`MAX_GROUP`], in one transaction; answers after `COMMIT`.
async fn group_writer(pool: SqlitePool, run: u64, mut queue: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let result = commit_group(&pool, run, &group).await;
        for job in group.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(()),
                // sqlx errors are not `Clone`; every caller gets the same description.
                Err(e) => Err(sqlx::Error::Protocol(format!("group commit failed: {e}"))),
            };
            // A caller that stopped waiting needs no answer.
            let _ = job.reply.send(answer);
        }
    }
}

async fn commit_group(pool: &SqlitePool, run: u64, group: &[Job]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for job in group {
        insert_key(&mut tx, run, job.seq, true).await?;
    }
    tx.commit().await
}

/// The two rows of one key. Ids are UUID-shaped; `grouped` keeps the two modes' ids apart.
async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    run: u64,
    seq: u64,
    grouped: bool,
) -> Result<(), sqlx::Error> {
    let mode = if grouped { 0xb } else { 0xa };
    let key_id = format!("{:08x}-{mode:x}000-4000-8000-{seq:012x}", run & 0xffff_ffff);
    let version_id = format!("{:08x}-{mode:x}000-4000-9000-{seq:012x}", run & 0xffff_ffff);
    let now = i64::try_from(seq).unwrap_or(i64::MAX);
    sqlx::query(INSERT_KEY)
        .bind(INSTANCE_ID)
        .bind(&key_id)
        .bind(format!("k{seq}"))
        .bind(now)
        .bind(CREATED_BY)
        .bind(now)
        .bind(now)
        .bind(&version_id)
        .bind(attributes(seq))
        .execute(&mut **tx)
        .await?;
    sqlx::query(INSERT_VERSION)
        .bind(INSTANCE_ID)
        .bind(&key_id)
        .bind(&version_id)
        .bind(sealed(seq))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The key's attribute JSON, sized so the whole key row is about 500 bytes.
fn attributes(seq: u64) -> String {
    format!(
        "{{\"origin\":\"generated\",\"rotation\":{{\"enabled\":false,\"interval_month\":null}},\
         \"dual_auth_delete\":false,\"policies\":[],\"crn\":\"crn:v1:keyfort:public:kms:local:\
         a/00000000000000000000000000000000:{INSTANCE_ID}:key:{seq:012x}\"}}"
    )
}

/// A stand-in for the sealed key version: 12-byte nonce, 32-byte key, 16-byte tag.
fn sealed(seq: u64) -> Vec<u8> {
    let mut blob = vec![0u8; 60];
    for (i, b) in blob.iter_mut().enumerate() {
        *b = (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 8 * 8)) as u8 ^ i as u8;
    }
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_the_sizes_of_a_key() {
        let metadata = INSTANCE_ID.len() * 2
            + 36 * 2
            + "default".len()
            + "k12345".len()
            + "[]symmetric_keyAES".len()
            + CREATED_BY.len()
            + 8 * 8
            + attributes(12345).len();
        assert!((450..=560).contains(&metadata), "{metadata}");
        assert_eq!(sealed(7).len(), 60);
    }

    #[tokio::test]
    async fn both_modes_insert_two_rows_per_key() {
        let dir = std::env::temp_dir().join(format!("keyfort-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let pool = open(&dir.join("raw.db")).await.ok();
        let Some(pool) = pool else {
            panic!("cannot open the baseline database in {}", dir.display());
        };
        for mode in [Mode::PerKey, Mode::GroupCommit] {
            let op = RawSqlite::new(&pool, mode, 1);
            for _ in 0..3 {
                assert!(op.call().await.is_ok());
            }
        }
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM keys")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM key_versions")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        pool.close().await;
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!((keys, versions), (6, 6));
    }
}
