//! Applies [`crate::migrations::SQLITE`] to a database.

use sqlx::{Row, SqlitePool};
use tracing::info;

use crate::migrations::{self, Migration};
use crate::{Result, StoreError};

/// Brings the schema of the database behind `pool` (the writer) up to date. Idempotent; safe to
/// run from two processes at once (each migration re-checks under the write lock).
pub(super) async fn run(pool: &SqlitePool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER NOT NULL,
            name        TEXT    NOT NULL,
            applied_at  INTEGER NOT NULL,
            CONSTRAINT pk_schema_migrations PRIMARY KEY (version)
        ) STRICT",
    )
    .execute(pool)
    .await?;

    let current = current_version(pool).await?;
    for migration in migrations::pending(migrations::SQLITE, current)? {
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

async fn current_version<'e, E>(executor: E) -> Result<i64, sqlx::Error>
where
    E: sqlx::SqliteExecutor<'e>,
{
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations")
        .fetch_one(executor)
        .await?;
    row.try_get("version")
}

async fn apply(pool: &SqlitePool, migration: &Migration) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with(super::BEGIN_DURABLE).await?;
    // Another process may have applied it while we waited for the write lock.
    if current_version(&mut *tx).await? >= migration.version {
        return Ok(());
    }
    sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(migrations::now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    info!(
        version = migration.version,
        name = migration.name,
        "applied schema migration"
    );
    Ok(())
}
