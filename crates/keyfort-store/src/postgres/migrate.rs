//! Applies [`crate::migrations::POSTGRES`] to a database.
//!
//! Each pending migration runs in its own transaction (PostgreSQL's DDL is transactional)
//! together with the insert of its `schema_migrations` row, under a transaction-scoped advisory
//! lock, so that nodes starting at the same time apply each migration exactly once.

use sqlx::{PgPool, Row};
use tracing::info;

use crate::migrations::{self, Migration};
use crate::{Result, StoreError};

/// The advisory lock key of schema migrations (any constant; "KFMIGRAT" in ASCII).
const MIGRATION_LOCK: i64 = 0x4B46_4D49_4752_4154;

/// Brings the schema up to date. Idempotent; safe to run from several nodes at once.
pub(super) async fn run(pool: &PgPool) -> Result<()> {
    let current = {
        let mut tx = pool.begin().await?;
        lock_and_prepare(&mut tx).await?;
        let v = current_version(&mut tx).await?;
        tx.commit().await?;
        v
    };
    for migration in migrations::pending(migrations::POSTGRES, current)? {
        apply(pool, migration)
            .await
            .map_err(|source| StoreError::Migration {
                version: migration.version,
                name: migration.name,
                source,
            })?;
    }
    Ok(())
}

/// Takes the migration lock for the transaction and creates `schema_migrations` if missing.
async fn lock_and_prepare(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     BIGINT  NOT NULL,
            name        TEXT    NOT NULL,
            applied_at  BIGINT  NOT NULL,
            CONSTRAINT pk_schema_migrations PRIMARY KEY (version)
        )",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn current_version(conn: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?;
    row.try_get("version")
}

async fn apply(pool: &PgPool, migration: &Migration) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_and_prepare(&mut tx).await?;
    // Another node may have applied it while we waited for the lock.
    if current_version(&mut tx).await? >= migration.version {
        return Ok(());
    }
    sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(migrations::now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    info!(
        version = migration.version,
        name = migration.name,
        "applied schema migration (postgres)"
    );
    Ok(())
}
