//! The store suite on SQLite (a file, and in memory), plus SQLite-only checks: corrupted rows,
//! reopening a file, schema versions, open errors.

#[macro_use]
mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyfort_store::sqlite::SqliteStore;
use keyfort_store::{AuditFilter, KeyFilter, Store, StoreError, Write, WriteBatch};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row, SqliteConnection};
use tempfile::TempDir;

use suite::{assert_chain, fails, insert, instance_with_ring, key, registration};

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

/// Asserts that `table`'s definition ends with `tail` (its table options) and names each of
/// `constraints`.
async fn assert_table(conn: &mut SqliteConnection, table: &str, tail: &str, constraints: &[&str]) {
    let sql: String =
        sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(table)
            .fetch_one(conn)
            .await
            .expect(table)
            .try_get(0)
            .expect("sql");
    assert!(sql.trim_end().ends_with(tail), "{sql}");
    for name in constraints {
        assert!(
            sql.contains(&format!("CONSTRAINT {name} ")),
            "{name} in {sql}"
        );
    }
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
        fields: None,
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
        [
            (1, "initial".to_owned()),
            (2, "kyok_audit".to_owned()),
            (3, "kms".to_owned()),
            (4, "keystores".to_owned()),
            (5, "kmip_adapters".to_owned()),
            (6, "write_path".to_owned()),
            (7, "audit_blocks".to_owned())
        ]
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
    ] {
        assert_table(&mut conn, table, "STRICT", names).await;
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

#[tokio::test]
async fn corrupted_registrations_are_reported() {
    let (dir, store) = file_store().await;
    instance_with_ring(&*store, "inst-a", 1).await;
    let k = key("inst-a", "k1", &[], 10);
    insert(&*store, &k).await;
    store
        .apply(&WriteBatch {
            writes: vec![Write::PutRegistration(registration(&k, "crn:a", 1))],
        })
        .await
        .expect("put");
    // One store per database at a time.
    drop(store);
    // The CHECK constraint refuses a non-boolean: drop it the hard way, as a damaged file would.
    let mut conn = raw(&db_path(&dir)).await;
    sqlx::raw_sql(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = replace(sql,
             'CONSTRAINT ck_registrations_prevent_key_deletion CHECK (prevent_key_deletion IN (0, 1))',
             'CONSTRAINT ck_registrations_prevent_key_deletion CHECK (1)')
         WHERE name = 'registrations';
         PRAGMA writable_schema = OFF;",
    )
    .execute(&mut conn)
    .await
    .expect("drop check");
    drop(conn);
    exec(
        &db_path(&dir),
        "UPDATE registrations SET prevent_key_deletion = 7",
    )
    .await;
    let store = SqliteStore::open(&db_path(&dir)).await.expect("reopen");
    assert_corrupt(
        fails(store.registrations("inst-a", None).await),
        "registrations",
        "inst-a/k1/crn:a",
        "prevent_key_deletion",
    );
}

#[tokio::test]
async fn version_3_schema_is_strict_with_named_constraints() {
    let (dir, store) = file_store().await;
    drop(store);
    let mut conn = raw(&db_path(&dir)).await;
    for (table, names) in [
        (
            "registrations",
            &[
                "pk_registrations",
                "fk_registrations_key",
                "ck_registrations_prevent_key_deletion",
            ][..],
        ),
        ("instances", &["pk_instances"][..]),
    ] {
        assert_table(&mut conn, table, "STRICT", names).await;
    }
}

/// Version 7: audit events are stored in blocks, and the chain's invariants hold even against
/// raw SQL: a block continues its chain, without a gap, a fork or an overlap.
#[tokio::test]
async fn version_7_audit_blocks_continue_their_chains() {
    let (dir, store) = file_store().await;
    drop(store);
    let mut conn = raw(&db_path(&dir)).await;
    for (table, names, tail) in [
        (
            "audit_blocks",
            &[
                "pk_audit_blocks",
                "ck_audit_blocks_seq",
                "ck_audit_blocks_at",
                "ck_audit_blocks_hash",
            ][..],
            "STRICT",
        ),
        ("audit_terms", &["pk_audit_terms"][..], "WITHOUT ROWID"),
    ] {
        assert_table(&mut conn, table, tail, names).await;
    }
    let block = |first: i64, last: i64, at: &str, hash: &str| {
        format!("INSERT INTO audit_blocks VALUES ('i', {first}, {last}, {at}, {hash}, '[]')")
    };
    for (sql, ok) in [
        (block(1, 1, "0, 0", "x'00'"), false),
        (block(0, 0, "0, 0", "zeroblob(32)"), false),
        (block(1, 1, "'zero', 0", "zeroblob(32)"), false),
        (block(1, 1, "5, 4", "zeroblob(32)"), false),
        (block(2, 2, "0, 0", "zeroblob(32)"), false),
        (block(1, 3, "0, 0", "zeroblob(32)"), true),
        (block(3, 4, "0, 0", "zeroblob(32)"), false),
        (block(1, 1, "0, 0", "zeroblob(32)"), false),
        (block(5, 5, "0, 0", "zeroblob(32)"), false),
        (block(5, 4, "0, 0", "zeroblob(32)"), false),
        (block(4, 6, "0, 0", "zeroblob(32)"), true),
    ] {
        let result = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await;
        assert_eq!(result.is_ok(), ok, "{sql}: {result:?}");
    }
}

/// Version 6: key versions are stored in the order of their primary key (no rowid table beside
/// it), and the KMIP adapter index holds only adapter objects, yet the adapter's object listing
/// still uses it.
#[tokio::test]
async fn version_6_clustered_key_versions_and_the_partial_adapter_index() {
    let (dir, store) = file_store().await;
    drop(store);
    let mut conn = raw(&db_path(&dir)).await;
    let sql: String =
        sqlx::query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'key_versions'")
            .fetch_one(&mut conn)
            .await
            .expect("key_versions")
            .try_get(0)
            .expect("sql");
    assert!(sql.trim_end().ends_with("STRICT, WITHOUT ROWID"), "{sql}");
    let index: String = sqlx::query(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_keys_kmip_adapter'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("index")
    .try_get(0)
    .expect("sql");
    assert!(
        index.contains("WHERE json_extract(attributes, '$.kmip_adapter.adapter_id') IS NOT NULL"),
        "{index}"
    );
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT k.id FROM keys k WHERE k.instance_id = 'i' \
         AND json_extract(k.attributes, '$.kmip_adapter.adapter_id') = 'a' \
         AND json_extract(k.attributes, '$.kmip_adapter.adapter_id') IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .expect("plan");
    assert!(
        plan.iter()
            .any(|(_, _, _, detail)| detail.contains("ix_keys_kmip_adapter")),
        "{plan:?}"
    );
}

/// The schema as Keyfort left it at version 2.
const SCHEMA_V2: &str = include_str!("../src/migrations/sqlite/0002_kyok_audit.sql");

#[tokio::test]
async fn a_version_2_database_is_upgraded_and_audit_columns_backfilled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
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
        sqlx::raw_sql(SCHEMA_V2)
            .execute(&mut conn)
            .await
            .expect("schema v2");
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (
                version     INTEGER NOT NULL,
                name        TEXT    NOT NULL,
                applied_at  INTEGER NOT NULL,
                CONSTRAINT pk_schema_migrations PRIMARY KEY (version)
            ) STRICT;
            INSERT INTO schema_migrations VALUES (1, 'initial', 1), (2, 'kyok_audit', 2);
            INSERT INTO instances VALUES
                ('inst-a', 'alpha', 'initialized', 1, 'dev_key_file', x'0102', '{}', 1, 2, 3);
            INSERT INTO key_rings VALUES ('inst-a', 'default', 1000, 'admin');
            INSERT INTO keys (instance_id, id, key_ring_id, name, description, tags, object_type,
                algorithm, bit_length, extractable, imported, state, created_at, created_by,
                updated_at, current_version_id, attributes, row_version)
            VALUES ('inst-a', 'k1', 'default', 'old key', NULL, '[]', 'symmetric_key',
                'AES', 256, 0, 0, 1, 10, 'alice', 10, 'k1-v1', '{}', 1);
            INSERT INTO key_versions VALUES ('inst-a', 'k1', 'k1-v1', 1, x'A5A5', 1, 11);
            INSERT INTO instance_secrets VALUES ('inst-a', 'archived-mk/0', x'01', 0, 5);",
        )
        .execute(&mut conn)
        .await
        .expect("data v2");
    }
    // Audit events written by version 2, chained as it did (through the store's own hashing,
    // reproduced by the suite's helper).
    let bodies = [
        r#"{"target":"k1","action":"create","outcome":"success","who":"alice"}"#,
        r#"{"target":7,"action":["x"],"outcome":null}"#,
        "not json at all",
        r#"["target","action"]"#,
        r#"{"action":"wrap","nested":{"target":"no"}}"#,
    ];
    let mut prev = vec![0_u8; 32];
    {
        let mut conn = raw(&path).await;
        for (seq, body) in (1_i64..).zip(bodies) {
            let hash = suite::chain_hash(&prev, seq, seq * 10, body);
            sqlx::query("INSERT INTO audit_events VALUES ('inst-a', ?, ?, ?, ?, ?)")
                .bind(seq)
                .bind(seq * 10)
                .bind(body)
                .bind(&prev)
                .bind(&hash)
                .execute(&mut conn)
                .await
                .expect("audit v2");
            prev = hash;
        }
    }

    let store = SqliteStore::open(&path).await.expect("open upgrades");
    // The data is kept.
    assert_eq!(
        store
            .instance("inst-a")
            .await
            .expect("get")
            .map(|i| (i.name, i.row_version)),
        Some(("alpha".to_owned(), 3))
    );
    assert!(store.key("inst-a", "k1").await.expect("key").is_some());
    assert!(
        store
            .instance_secret("inst-a", "archived-mk/0")
            .await
            .expect("secret")
            .is_some()
    );
    // The audit columns are backfilled from the bodies.
    let events = store.audit_events("inst-a", 0, 100).await.expect("audit");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.target.as_str(), e.action.as_str(), e.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("k1", "create", "success"),
            ("", "", ""),
            ("", "", ""),
            ("", "", ""),
            ("", "wrap", ""),
        ]
    );
    assert_chain("inst-a", &events);
    let by_action = store
        .query_audit_events(
            "inst-a",
            &AuditFilter {
                action: Some("wrap".to_owned()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("query");
    assert_eq!(by_action.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
    // The chain continues across the upgrade.
    let next = store
        .append_audit_event(&keyfort_store::AuditEventInput {
            instance_id: "inst-a".to_owned(),
            at: 60,
            body: r#"{"target":"k1","action":"rotate","outcome":"success"}"#.to_owned(),
            fields: None,
        })
        .await
        .expect("append");
    assert_eq!((next.seq, &next.prev_hash), (6, &prev));
    assert_chain(
        "inst-a",
        &store.audit_events("inst-a", 0, 100).await.expect("audit"),
    );
    // The new parts work: default policies, registrations.
    assert_eq!(store.instance_policies("inst-a").await.expect("get"), "{}");
    let k = store
        .key("inst-a", "k1")
        .await
        .expect("key")
        .expect("present");
    store
        .apply(&WriteBatch {
            writes: vec![Write::PutRegistration(registration(&k, "crn:a", 1))],
        })
        .await
        .expect("put");
    assert_eq!(
        store
            .registrations("inst-a", None)
            .await
            .expect("list")
            .len(),
        1
    );
    store.close().await;

    let mut conn = raw(&path).await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("schema_migrations");
    assert_eq!(
        versions.last(),
        Some(&(7, "audit_blocks".to_owned())),
        "{versions:?}"
    );
    assert_eq!(versions.len(), 7);
    let fks: i64 = sqlx::query("SELECT COUNT(*) FROM pragma_foreign_key_check")
        .fetch_one(&mut conn)
        .await
        .expect("fk check")
        .try_get(0)
        .expect("int");
    assert_eq!(fks, 0);
}

/// Dropping every handle of a store ends its writer task: nothing hangs, and the file can be
/// opened again at once.
#[tokio::test]
async fn dropping_the_store_ends_the_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    for round in 0..3 {
        let store = SqliteStore::open(&path).await.expect("open");
        let clone = store.clone();
        let task = tokio::spawn(async move {
            clone
                .append_audit_event(&keyfort_store::AuditEventInput {
                    instance_id: "inst-a".to_owned(),
                    at: round,
                    body: "{}".to_owned(),
                    fields: None,
                })
                .await
        });
        task.await.expect("join").expect("append");
        if round == 2 {
            store.close().await;
        }
        drop(store);
    }
    let store = SqliteStore::open(&path).await.expect("open");
    assert_chain(
        "inst-a",
        &store.audit_events("inst-a", 0, 10).await.expect("audit"),
    );
    assert_eq!(
        store
            .audit_events("inst-a", 0, 10)
            .await
            .expect("audit")
            .len(),
        3
    );
    // After close, writes fail rather than hang.
    store.close().await;
    let e = fails(
        store
            .append_audit_event(&keyfort_store::AuditEventInput {
                instance_id: "inst-a".to_owned(),
                at: 9,
                body: "{}".to_owned(),
                fields: None,
            })
            .await,
    );
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");
}

/// Attribute searches go through `ix_keystore_attributes_value`, never a scan of the objects:
/// without the index, a search by template cannot run at all (`INDEXED BY`), while listing a
/// keystore (no template) still can. A damaged encoded attribute set is reported as corrupt.
#[tokio::test]
async fn keystore_searches_need_the_attribute_index() {
    use keyfort_store::{KeystoreWrite, ObjectQuery};
    use suite::{attr, keystore, token_object};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await.expect("open");
    instance_with_ring(&store, "inst-a", 1).await;
    let ks = keystore("inst-a", "ks", "tokens");
    let o = token_object(&ks, "o1", vec![attr(3, b"label")]);
    for w in [
        KeystoreWrite::Insert(ks.clone()),
        KeystoreWrite::InsertObject(o.clone()),
    ] {
        store
            .apply(&WriteBatch {
                writes: vec![Write::Keystore(w)],
            })
            .await
            .expect("write");
    }
    let by_label = ObjectQuery {
        template: vec![attr(3, b"label")],
        after: None,
        limit: 10,
    };
    let everything = ObjectQuery {
        limit: 10,
        ..ObjectQuery::default()
    };
    let found = store
        .find_keystore_objects("inst-a", "ks", &by_label)
        .await
        .expect("find");
    assert_eq!(found, vec![o.clone()]);

    exec(&path, "DROP INDEX ix_keystore_attributes_value").await;
    let e = fails(store.find_keystore_objects("inst-a", "ks", &by_label).await);
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");
    let all = store
        .find_keystore_objects("inst-a", "ks", &everything)
        .await
        .expect("list");
    assert_eq!(all, vec![o]);

    exec(
        &path,
        "UPDATE keystore_objects SET attributes = x'0000' WHERE id = 'o1'",
    )
    .await;
    let e = fails(store.keystore_object("inst-a", "ks", "o1").await);
    assert_corrupt(e, "keystore_objects", "o1", "attributes");
}

/// Events drained from the journal in large blocks (several per drain, of many events each,
/// several instances interleaved) come back from every query exactly as a plain filter over all
/// of them would: filters on the term index, within a block, across blocks, with an `after_seq`
/// or a limit that falls inside a block, and page boundaries of the scan.
#[tokio::test]
async fn queries_over_large_blocks_match_a_plain_filter() {
    let (dir, store) = file_store().await;
    let s = &*store;
    let targets = ["k0", "k1", "k2", "k3", "k4", "k5", "k6"];
    let actions = ["wrap", "unwrap", "rewrap"];
    let outcomes = ["success", "denied", "failure", "success"];
    // 1,700 events of inst-a in three drains (one of 1,000), and inst-b's between them.
    let mut n: usize = 0;
    for drain in [1_000_usize, 400, 300] {
        for _ in 0..drain {
            let body = suite::event_body(targets[n * 5 % 7], actions[n / 3 % 3], outcomes[n % 4]);
            let at = i64::try_from(n).expect("n") * 10;
            s.append_audit_event(&suite::audit("inst-a", at, &body))
                .await
                .expect("append a");
            if n.is_multiple_of(50) {
                s.append_audit_event(&suite::audit("inst-b", at, &body))
                    .await
                    .expect("append b");
            }
            n += 1;
        }
        // A read drains the journal first.
        s.audit_events("inst-a", i64::MAX, 1).await.expect("drain");
    }
    let all = s.audit_events("inst-a", 0, 100_000).await.expect("all");
    assert_eq!(all.len(), n);
    assert_chain("inst-a", &all);
    assert_eq!(
        s.audit_events("inst-b", 0, 100_000).await.expect("b").len(),
        n.div_ceil(50)
    );
    let largest: i64 = sqlx::query_scalar("SELECT max(last_seq - first_seq + 1) FROM audit_blocks")
        .fetch_one(&mut raw(&db_path(&dir)).await)
        .await
        .expect("blocks");
    assert!(largest >= 64, "the blocks hold many events: {largest}");

    let text = |v: &str| Some(v.to_owned());
    let mut filters = Vec::new();
    for after_seq in [0, 1, 63, 64, 65, 255, 256, 257, 700, 1_699, 1_700] {
        for limit in [1, 3, 300, 10_000] {
            filters.push(AuditFilter {
                after_seq,
                limit,
                ..AuditFilter::default()
            });
            filters.push(AuditFilter {
                after_seq,
                limit,
                target: text("k3"),
                ..AuditFilter::default()
            });
            filters.push(AuditFilter {
                after_seq,
                limit,
                action: text("rewrap"),
                outcome: text("denied"),
                ..AuditFilter::default()
            });
            filters.push(AuditFilter {
                after_seq,
                limit,
                target: text("k6"),
                action: text("unwrap"),
                from: Some(2_000),
                until: Some(14_000),
                ..AuditFilter::default()
            });
            filters.push(AuditFilter {
                after_seq,
                limit,
                target: text("nobody"),
                ..AuditFilter::default()
            });
        }
    }
    for filter in &filters {
        let limit = usize::try_from(filter.limit).expect("limit");
        let expected: Vec<&keyfort_store::AuditEventRecord> =
            all.iter().filter(|e| filter.keeps(e)).take(limit).collect();
        let got = s.query_audit_events("inst-a", filter).await.expect("query");
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{filter:?}");
        if filter.target.is_none() && filter.action.is_none() && filter.outcome.is_none() {
            let page = s
                .audit_events("inst-a", filter.after_seq, filter.limit)
                .await
                .expect("page");
            assert_eq!(page.iter().collect::<Vec<_>>(), expected, "{filter:?}");
        }
    }
}

/// Two stores of one process on one database share its audit journal but each has its own
/// writer connection. One store's drain of the journal and the other's direct write with an
/// event (an instance update) run concurrently, again and again: every write succeeds and the
/// chain has no gap (the schema would refuse one).
#[tokio::test]
async fn two_stores_of_one_database_keep_one_chain() {
    let (dir, a) = file_store().await;
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&db_path(&dir)).await.expect("open b"));
    instance_with_ring(&*a, "inst-a", 1).await;
    let mut record = a.instance("inst-a").await.expect("get").expect("there");
    for n in 0..100_i64 {
        a.append_audit_event(&suite::audit("inst-a", n, r#"{"action":"read"}"#))
            .await
            .expect("read event");
        let (drained, updated) = tokio::join!(b.audit_events("inst-a", i64::MAX, 1), async {
            record.updated_at = n;
            a.update_instance_with(
                &record,
                None,
                Some(&suite::audit("inst-a", n, r#"{"action":"update"}"#)),
            )
            .await
        });
        drained.expect("drain through b");
        record.row_version = updated.expect("update through a");
    }
    let events = a.audit_events("inst-a", 0, 1_000).await.expect("events");
    assert_eq!(events.len(), 200, "100 reads and 100 updates");
    assert_chain("inst-a", &events);
}
