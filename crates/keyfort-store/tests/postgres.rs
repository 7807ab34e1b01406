//! The store suite on PostgreSQL, plus PostgreSQL-only checks: change notifications, the audit
//! chain under writers on several connection pools (nodes), schema versions, named constraints.
//!
//! Needs a server: `KEYFORT_TEST_PG_URL` (scripts/test.sh starts a throwaway one). Without it,
//! or if the server does not answer, every test here fails.

#[macro_use]
mod suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keyfort_store::postgres::{Change, PgStore};
use keyfort_store::{AuditEventInput, Store, StoreError};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use suite::{assert_chain, fails, insert, instance_with_ring, key};

/// The server's URL, or a failure saying how to get one.
fn server_url() -> String {
    std::env::var("KEYFORT_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "KEYFORT_TEST_PG_URL is not set: these tests need a PostgreSQL server \
             (scripts/test.sh starts one; see scripts/pg.sh)"
        )
    })
}

/// A fresh, empty database on the test server, dropped when the guard drops.
pub struct Db {
    pub options: PgConnectOptions,
    name: String,
}

impl Db {
    async fn create() -> Db {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base: PgConnectOptions = server_url().parse().expect("KEYFORT_TEST_PG_URL parses");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "kf_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect_with(&base)
            .await
            .expect("the PostgreSQL server of KEYFORT_TEST_PG_URL answers");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        Db {
            options: base.database(&name),
            name,
        }
    }

    async fn store(&self) -> PgStore {
        PgStore::connect(self.options.clone(), self.name.clone())
            .await
            .expect("open")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // The server is throwaway; dropping the database keeps it small during a long run.
        let name = self.name.clone();
        let base: Option<PgConnectOptions> = std::env::var("KEYFORT_TEST_PG_URL")
            .ok()
            .and_then(|u| u.parse().ok());
        if let Some(base) = base {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut c) = PgConnection::connect_with(&base).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    });
                }
            });
        }
    }
}

async fn pg_store() -> (Db, Arc<dyn Store>) {
    let db = Db::create().await;
    let store = db.store().await;
    (db, Arc::new(store))
}

mod pg {
    store_suite!(super::pg_store);
}

async fn raw(db: &Db) -> PgConnection {
    PgConnection::connect_with(&db.options)
        .await
        .expect("raw connection")
}

/// Several stores on one database (as several nodes) append to one chain concurrently: no gap,
/// no fork, every acknowledged event present once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_chain_holds_across_nodes() {
    let db = Db::create().await;
    let nodes: Vec<Arc<PgStore>> = vec![
        Arc::new(db.store().await),
        Arc::new(db.store().await),
        Arc::new(db.store().await),
    ];
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..8 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    let e = node
                        .append_audit_event(&AuditEventInput {
                            instance_id: "inst-a".to_owned(),
                            at: i,
                            body: format!(r#"{{"node":{n},"task":{t},"i":{i}}}"#),
                            fields: None,
                        })
                        .await
                        .expect("append");
                    seqs.push(e.seq);
                }
                seqs
            }));
        }
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.expect("join"));
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, (1..=480).collect::<Vec<i64>>());
    let events = nodes[0]
        .audit_events("inst-a", 0, 1000)
        .await
        .expect("events");
    assert_eq!(events.len(), 480);
    assert_chain("inst-a", &events);
}

/// A committed change is announced to every listener; a rolled-back one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_announced_on_commit_only() {
    let db = Db::create().await;
    let a = db.store().await;
    let b = db.store().await;
    let mut changes = b.changes();
    assert_eq!(next(&mut changes).await, Change::Listening);

    instance_with_ring(&a, "inst-a", 1).await;
    let k = key("inst-a", "k1", &["one"], 10);
    insert(&a, &k).await;
    assert_eq!(
        next(&mut changes).await,
        Change::Key {
            instance_id: "inst-a".to_owned(),
            key_id: "k1".to_owned()
        }
    );
    // A stale update changes nothing and announces nothing.
    let mut stale = k.clone();
    stale.row_version += 5;
    assert!(matches!(
        a.update_key(&stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut k2 = k.clone();
    k2.state = 3;
    a.update_key(&k2).await.expect("update");
    assert_eq!(
        next(&mut changes).await,
        Change::Key {
            instance_id: "inst-a".to_owned(),
            key_id: "k1".to_owned()
        }
    );
    a.set_instance_policies(
        "inst-a",
        "{}",
        &AuditEventInput {
            instance_id: "inst-a".to_owned(),
            at: 1,
            body: "{}".to_owned(),
            fields: None,
        },
    )
    .await
    .expect("policies");
    assert_eq!(
        next(&mut changes).await,
        Change::Instance {
            instance_id: "inst-a".to_owned()
        }
    );
}

/// Losing the notification connection is reported at once, and so is listening again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_connection_is_reported() {
    let db = Db::create().await;
    let store = db.store().await;
    let mut changes = store.changes();
    assert_eq!(next(&mut changes).await, Change::Listening);
    let mut admin = raw(&db).await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&mut admin)
    .await
    .expect("terminate");
    assert_eq!(next(&mut changes).await, Change::Lost);
    assert_eq!(next(&mut changes).await, Change::Listening);
    // And it hears changes again.
    instance_with_ring(&store, "inst-a", 1).await;
    insert(&store, &key("inst-a", "k1", &[], 10)).await;
    assert!(matches!(next(&mut changes).await, Change::Key { .. }));
}

async fn next(changes: &mut keyfort_store::postgres::Changes) -> Change {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("a change within 5 s")
        .expect("the listener runs")
}

/// The KMIP adapter index holds only adapter objects, and the adapter's object listing can still
/// read through it.
#[tokio::test]
async fn the_adapter_index_is_partial_and_serves_the_object_listing() {
    let db = Db::create().await;
    drop(db.store().await);
    let mut conn = raw(&db).await;
    let definition: String =
        sqlx::query("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_keys_kmip_adapter'")
            .fetch_one(&mut conn)
            .await
            .expect("index")
            .try_get(0)
            .expect("text");
    assert!(definition.contains("WHERE"), "{definition}");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT k.id FROM keys k WHERE k.instance_id = 'i' \
         AND ((k.attributes::jsonb) #>> '{kmip_adapter,adapter_id}') = 'a' \
         AND ((k.attributes::jsonb) #>> '{kmip_adapter,adapter_id}') IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .expect("plan");
    assert!(
        plan.iter()
            .any(|line| line.contains("ix_keys_kmip_adapter")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    let db = Db::create().await;
    // Three nodes starting at once.
    let (a, b, c) = tokio::join!(db.store(), db.store(), db.store());
    drop((a, b, c));
    let mut conn = raw(&db).await;
    let rows = sqlx::query("SELECT version, name FROM schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .expect("schema_migrations");
    let names: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>("name").expect("name"))
        .collect();
    assert_eq!(
        names,
        ["initial", "keystores", "kmip_adapters", "write_path"]
    );
    sqlx::query("INSERT INTO schema_migrations VALUES (1000, 'future', 0)")
        .execute(&mut conn)
        .await
        .expect("insert");
    let e = fails(
        PgStore::connect(db.options.clone(), "db".to_owned())
            .await
            .map(|_| ()),
    );
    assert!(
        matches!(
            e,
            StoreError::SchemaTooNew {
                found: 1000,
                supported: 4
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn constraints_are_named() {
    let db = Db::create().await;
    drop(db.store().await);
    let mut conn = raw(&db).await;
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = 'public' ORDER BY conname",
    )
    .fetch_all(&mut conn)
    .await
    .expect("constraints");
    for want in [
        "pk_keys",
        "fk_keys_ring",
        "uq_key_aliases",
        "pk_audit_events",
        "ck_audit_events_hash",
        "pk_audit_heads",
        "fk_registrations_key",
    ] {
        assert!(names.iter().any(|(n,)| n == want), "{want} in {names:?}");
    }
    // No constraint with a generated name.
    assert!(
        names.iter().all(|(n,)| ["pk_", "fk_", "uq_", "ck_"]
            .iter()
            .any(|p| n.starts_with(p))),
        "{names:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_open_error() {
    let e = fails(
        PgStore::open("postgres://keyfort:pw@127.0.0.1:1/nothing")
            .await
            .map(|_| ()),
    );
    match &e {
        StoreError::Open { path, .. } => {
            assert_eq!(path, "postgres://keyfort:***@127.0.0.1:1/nothing");
        }
        other => panic!("expected Open, got {other:?}"),
    }
    assert!(!e.to_string().contains("pw"));
}

/// One holder at a time across nodes; a release or the holder's end frees the lock.
#[tokio::test]
async fn cluster_locks_are_exclusive_and_freed_with_their_holder() {
    let db = Db::create().await;
    let a = db.store().await;
    let b = db.store().await;
    let held = a
        .try_lock("maintenance")
        .await
        .expect("lock")
        .expect("free");
    assert!(b.try_lock("maintenance").await.expect("lock").is_none());
    assert!(b.try_lock("other work").await.expect("lock").is_some());
    held.release().await.expect("release");
    let held = b
        .try_lock("maintenance")
        .await
        .expect("lock")
        .expect("free again");
    // Dropping without release ends the session, which frees the lock too.
    drop(held);
    let mut again = None;
    for _ in 0..50 {
        again = a.try_lock("maintenance").await.expect("lock");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "freed when its holder's session ended");
}
