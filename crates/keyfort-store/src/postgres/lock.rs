//! Cluster-wide exclusive work under PostgreSQL session advisory locks.
//!
//! [`super::PgStore::try_lock`] takes `pg_try_advisory_lock(key)` on a connection of its own and
//! keeps that connection in the returned [`ClusterLock`]. The lock lasts as long as the session:
//! released by [`ClusterLock::release`], or by the server when the holder's connection ends —
//! including when its process dies (`kill -9`), so another node takes the work over on its next
//! attempt.

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use crate::Result;

/// Held while this node does a piece of cluster-wide work.
#[derive(Debug)]
pub struct ClusterLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl ClusterLock {
    /// Releases the lock (and returns the connection to the pool).
    pub async fn release(mut self) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // Not released: closing the session is what releases a session lock.
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

pub(super) async fn try_lock(pool: &sqlx::PgPool, key: i64) -> Result<Option<ClusterLock>> {
    let mut conn = pool.acquire().await?;
    let row = sqlx::query("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    let locked: bool = row.try_get(0)?;
    Ok(locked.then_some(ClusterLock {
        conn: Some(conn),
        key,
    }))
}

/// The advisory lock key of a named piece of work: the first 8 bytes of SHA-256 of its name.
pub(super) fn key_of(name: &str) -> i64 {
    let digest = keyfort_crypto::digest::sha256(name.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}
