//! The store suite on SQLite (a file, and in memory), plus SQLite-only checks: corrupted rows,
//! reopening a file, schema versions, open errors.

#[macro_use]
mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyfort_store::sqlite::SqliteStore;
use keyfort_store::{KeyFilter, Store, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row, SqliteConnection};
use tempfile::TempDir;

use suite::{fails, insert, instance_with_ring, key};

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("keyfort.db")
}

/// A fresh database file in a temporary directory (removed when the guard drops).
async fn file_store() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&db_path(&dir)).await.expect("open");
    (dir, Arc::new(store))
}

async fn memory_store() -> ((), Arc<dyn Store>) {
    let store = SqliteStore::open_in_memory().await.expect("open in memory");
    ((), Arc::new(store))
}

mod file {
    store_suite!(super::file_store);
}

mod memory {
    store_suite!(super::memory_store);
}

/// A plain connection to the file, bypassing the store, as an operator with `sqlite3` would.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("raw connection")
}

async fn exec(path: &Path, sql: &'static str) {
    let mut conn = raw(path).await;
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
}

#[track_caller]
fn assert_corrupt(e: StoreError, want_table: &str, want_id: &str, column: &str) {
    match &e {
        StoreError::Corrupt { table, id, detail } => {
            assert_eq!((*table, id.as_str()), (want_table, want_id), "{e:?}");
            assert!(detail.contains(column), "detail names the column: {e:?}");
        }
        other => panic!("expected Corrupt in {want_table}/{want_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupted_rows_are_reported_not_panicked_on() {
    let (dir, store) = file_store().await;
    let path = db_path(&dir);
    instance_with_ring(&*store, "inst-a", 1).await;
    insert(&*store, &key("inst-a", "k-bad", &["bad"], 10)).await;
    insert(&*store, &key("inst-a", "k-good", &["good"], 20)).await;

    exec(
        &path,
        "UPDATE keys SET tags = '{{not json' WHERE id = 'k-bad'",
    )
    .await;
    assert_corrupt(
        fails(store.key("inst-a", "k-bad").await),
        "keys",
        "k-bad",
        "tags",
    );
    assert_corrupt(
        fails(store.key_by_alias("inst-a", "bad").await),
        "keys",
        "k-bad",
        "tags",
    );
    assert_corrupt(
        fails(store.list_keys("inst-a", &KeyFilter::default()).await),
        "keys",
        "k-bad",
        "tags",
    );
    // Other rows still read, and counting does not decode rows.
    assert!(store.key("inst-a", "k-good").await.expect("get").is_some());
    assert_eq!(
        store
            .count_keys("inst-a", &KeyFilter::default())
            .await
            .expect("count"),
        2
    );

    exec(&path, "UPDATE keys SET tags = '[1, 2]' WHERE id = 'k-bad'").await;
    assert_corrupt(
        fails(store.key("inst-a", "k-bad").await),
        "keys",
        "k-bad",
        "tags",
    );
    exec(
        &path,
        "UPDATE keys SET tags = '[]', bit_length = -1 WHERE id = 'k-bad'",
    )
    .await;
    assert_corrupt(
        fails(store.key("inst-a", "k-bad").await),
        "keys",
        "k-bad",
        "bit_length",
    );
    exec(
        &path,
        "UPDATE keys SET bit_length = 128, extractable = 7 WHERE id = 'k-bad'",
    )
    .await;
    assert_corrupt(
        fails(store.key("inst-a", "k-bad").await),
        "keys",
        "k-bad",
        "extractable",
    );
    exec(&path, "UPDATE keys SET extractable = 1 WHERE id = 'k-bad'").await;
    assert!(
        store
            .key("inst-a", "k-bad")
            .await
            .expect("repaired")
            .is_some()
    );

    exec(
        &path,
        "UPDATE key_versions SET seq = 0 WHERE id = 'k-good-v1'",
    )
    .await;
    assert_corrupt(
        fails(store.key_versions("inst-a", "k-good").await),
        "key_versions",
        "k-good-v1",
        "seq",
    );
    exec(
        &path,
        "UPDATE instances SET mk_version = -3 WHERE id = 'inst-a'",
    )
    .await;
    assert_corrupt(
        fails(store.instance("inst-a").await),
        "instances",
        "inst-a",
        "mk_version",
    );
    assert_corrupt(
        fails(store.list_instances().await),
        "instances",
        "inst-a",
        "mk_version",
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    assert!(!path.exists());
    let store = SqliteStore::open(&path).await.expect("open");
    assert!(path.exists(), "open creates the file");
    instance_with_ring(&store, "inst-a", 1).await;
    let k = key("inst-a", "k1", &["a"], 10);
    insert(&store, &k).await;
    store.close().await;

    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            store.key("inst-a", "k1").await.expect("get"),
            Some(k.clone())
        );
        assert_eq!(
            store.key_by_alias("inst-a", "a").await.expect("get"),
            Some(k.clone())
        );
        assert_eq!(store.list_instances().await.expect("list").len(), 1);
        store.close().await;
    }

    let mut conn = raw(&path).await;
    let row = sqlx::query("SELECT COUNT(*), MAX(version), MIN(version) FROM schema_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("schema_migrations");
    let (count, max, min): (i64, i64, i64) = (
        row.try_get(0).expect("count"),
        row.try_get(1).expect("max"),
        row.try_get(2).expect("min"),
    );
    assert!(max >= 1);
    assert_eq!(
        (count, min),
        (max, 1),
        "each migration recorded exactly once"
    );
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode")
        .try_get(0)
        .expect("text");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    SqliteStore::open(&path).await.expect("open").close().await;
    let mut conn = raw(&path).await;
    let supported: i64 = sqlx::query("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("max")
        .try_get(0)
        .expect("int");
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)",
    )
    .bind(supported + 1000)
    .execute(&mut conn)
    .await
    .expect("insert");
    drop(conn);

    let e = fails(SqliteStore::open(&path).await.map(|_| ()));
    assert!(
        matches!(e, StoreError::SchemaTooNew { found, supported: s } if found == supported + 1000 && s == supported),
        "{e:?}"
    );
}

#[tokio::test]
async fn opening_in_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-dir").join("keyfort.db");
    let e = fails(SqliteStore::open(&path).await.map(|_| ()));
    match &e {
        StoreError::Open { path: p, .. } => assert!(p.contains("no-such-dir"), "{e:?}"),
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(
        e.to_string().contains("no-such-dir"),
        "the message names the path: {e}"
    );
    assert!(!path.exists());
}

#[tokio::test]
async fn constraints_are_named() {
    let (dir, store) = file_store().await;
    drop(store);
    let mut conn = raw(&db_path(&dir)).await;
    let rows = sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
        .bind("keys")
        .fetch_all(&mut conn)
        .await
        .expect("schema");
    let sql: String = rows[0].try_get(0).expect("sql");
    for name in ["pk_keys", "fk_keys_ring"] {
        assert!(
            sql.contains(&format!("CONSTRAINT {name} ")),
            "{name} in {sql}"
        );
    }
    let fks: i64 = sqlx::query("SELECT COUNT(*) FROM pragma_foreign_key_check")
        .fetch_one(&mut conn)
        .await
        .expect("fk check")
        .try_get(0)
        .expect("int");
    assert_eq!(fks, 0);
}

/// The schema as Keyfort 0.1 created it (migration 1 only).
const SCHEMA_V1: &str = include_str!("../src/migrations/sqlite/0001_initial.sql");

#[tokio::test]
async fn a_version_1_database_is_upgraded_with_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    // Build a database at schema version 1 by hand, with data, as the previous release left it.
    {
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        sqlx::raw_sql(SCHEMA_V1)
            .execute(&mut conn)
            .await
            .expect("schema v1");
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (
                version     INTEGER NOT NULL,
                name        TEXT    NOT NULL,
                applied_at  INTEGER NOT NULL,
                CONSTRAINT pk_schema_migrations PRIMARY KEY (version)
            ) STRICT;
            INSERT INTO schema_migrations VALUES (1, 'initial', 1);
            INSERT INTO instances VALUES
                ('inst-a', 'alpha', 'initialized', 1, 'dev_key_file', x'0102', '{}', 1, 2, 3);
            INSERT INTO key_rings VALUES ('inst-a', 'default', 1000, 'admin');
            INSERT INTO keys (instance_id, id, key_ring_id, name, description, tags, object_type,
                algorithm, bit_length, extractable, imported, state, created_at, created_by,
                updated_at, current_version_id, attributes, row_version)
            VALUES ('inst-a', 'k1', 'default', 'old key', NULL, '[\"t\"]', 'symmetric_key',
                'AES', 256, 0, 0, 1, 10, 'alice', 10, 'k1-v1', '{}', 1);
            INSERT INTO key_aliases VALUES ('inst-a', 'k1', 0, 'legacy');
            INSERT INTO key_versions VALUES ('inst-a', 'k1', 'k1-v1', 1, x'A5A5', 1, 11);",
        )
        .execute(&mut conn)
        .await
        .expect("data v1");
    }

    let store = SqliteStore::open(&path).await.expect("open upgrades");
    // The data is kept.
    let i = store
        .instance("inst-a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (i.name.as_str(), i.mk_version, i.row_version),
        ("alpha", 1, 3)
    );
    let k = store
        .key_by_alias("inst-a", "legacy")
        .await
        .expect("alias")
        .expect("present");
    assert_eq!(
        (k.id.as_str(), k.tags.as_slice()),
        ("k1", &["t".to_owned()][..])
    );
    let versions = store
        .key_versions_below_mk("inst-a", 2, 10)
        .await
        .expect("scan");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].sealed, [0xA5, 0xA5]);
    // The new tables work.
    let audit = keyfort_store::AuditEventInput {
        instance_id: "inst-a".to_owned(),
        at: 5,
        body: "{}".to_owned(),
    };
    let secret = keyfort_store::InstanceSecretRecord {
        instance_id: "inst-a".to_owned(),
        name: "archived-mk/1".to_owned(),
        sealed: vec![1, 2, 3],
        mk_version: 1,
        created_at: 4,
    };
    assert_eq!(
        store
            .update_instance_with(&i, Some(&secret), Some(&audit))
            .await
            .expect("update"),
        4
    );
    assert_eq!(
        store.audit_events("inst-a", 0, 10).await.expect("audit")[0].seq,
        1
    );
    store
        .use_command_nonce("inst-a", "n", 10, 1)
        .await
        .expect("nonce");
    store.close().await;

    let mut conn = raw(&path).await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("schema_migrations");
    assert_eq!(
        versions,
        [(1, "initial".to_owned()), (2, "kyok_audit".to_owned())]
    );
    let fks: i64 = sqlx::query("SELECT COUNT(*) FROM pragma_foreign_key_check")
        .fetch_one(&mut conn)
        .await
        .expect("fk check")
        .try_get(0)
        .expect("int");
    assert_eq!(fks, 0);
    drop(conn);

    // Reopening applies nothing more.
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert!(
        store
            .instance_secret("inst-a", "archived-mk/1")
            .await
            .expect("get")
            .is_some()
    );
    store.close().await;
}

#[tokio::test]
async fn version_2_tables_are_strict_with_named_constraints() {
    let (dir, store) = file_store().await;
    drop(store);
    let mut conn = raw(&db_path(&dir)).await;
    for (table, names) in [
        (
            "instance_secrets",
            &["pk_instance_secrets", "fk_instance_secrets_instance"][..],
        ),
        ("command_nonces", &["pk_command_nonces"][..]),
        (
            "audit_events",
            &[
                "pk_audit_events",
                "ck_audit_events_seq",
                "ck_audit_events_prev_hash",
                "ck_audit_events_hash",
            ][..],
        ),
    ] {
        let sql: String =
            sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(table)
                .fetch_one(&mut conn)
                .await
                .expect(table)
                .try_get(0)
                .expect("sql");
        assert!(sql.trim_end().ends_with("STRICT"), "{sql}");
        for name in names {
            assert!(
                sql.contains(&format!("CONSTRAINT {name} ")),
                "{name} in {sql}"
            );
        }
    }
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name IN \
         ('ix_key_versions_mk', 'ix_command_nonces_expires') ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        [
            ("ix_command_nonces_expires".to_owned(),),
            ("ix_key_versions_mk".to_owned(),)
        ]
    );

    // The chain's invariants hold even against raw SQL.
    for bad in [
        "INSERT INTO audit_events VALUES ('i', 1, 0, '{}', x'00', zeroblob(32))",
        "INSERT INTO audit_events VALUES ('i', 1, 0, '{}', zeroblob(32), zeroblob(31))",
        "INSERT INTO audit_events VALUES ('i', 0, 0, '{}', zeroblob(32), zeroblob(32))",
        "INSERT INTO audit_events VALUES ('i', 1, 'zero', '{}', zeroblob(32), zeroblob(32))",
    ] {
        assert!(sqlx::query(bad).execute(&mut conn).await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn expired_nonces_are_deleted() {
    let (dir, store) = file_store().await;
    store
        .use_command_nonce("inst-a", "old", 100, 50)
        .await
        .expect("use");
    store
        .use_command_nonce("inst-a", "new", 1_000, 200)
        .await
        .expect("use");
    let mut conn = raw(&db_path(&dir)).await;
    let left: Vec<(String,)> = sqlx::query_as("SELECT nonce FROM command_nonces")
        .fetch_all(&mut conn)
        .await
        .expect("nonces");
    assert_eq!(left, [("new".to_owned(),)]);
}
