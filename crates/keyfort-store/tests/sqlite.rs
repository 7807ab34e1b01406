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
