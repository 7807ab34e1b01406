//! Instances, their secrets and policies, signed command nonces, zeroization, and key rings.
//!
//! Writes that a [`crate::Write`] can name are `*_in` functions taking the writer connection
//! inside its transaction; [`super::writer`] runs them, for a batch or a single-write method.

use super::journal::ChainLock;
use super::rows::{self, Violation, already_exists, not_found, violation};
use super::{Conn, SqliteStore, audit, stale};
use crate::{AuditEventInput, InstanceRecord, InstanceSecretRecord, KeyRingRecord, Result};

/// `SELECT <every column> FROM instances <tail>`, as one literal.
macro_rules! select_instances {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, state, mk_version, unseal_method, mk_check_value, unseal_config, ",
            "created_at, updated_at, row_version FROM instances ",
            $tail
        )
    };
}

pub(super) async fn insert(store: &SqliteStore, i: &InstanceRecord) -> Result<()> {
    let mut tx = store.begin().await?;
    if instance_exists(&mut tx, &i.id).await? {
        return Err(already_exists("instance", &i.id));
    }
    sqlx::query(
        "INSERT INTO instances (id, name, state, mk_version, unseal_method, mk_check_value, \
         unseal_config, created_at, updated_at, row_version) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&i.id)
    .bind(&i.name)
    .bind(&i.state)
    .bind(i.mk_version)
    .bind(&i.unseal_method)
    .bind(&i.mk_check_value)
    .bind(&i.unseal_config)
    .bind(i.created_at)
    .bind(i.updated_at)
    .bind(i.row_version)
    .execute(&mut *tx)
    .await
    .map_err(|e| match violation(&e) {
        // The id was checked above under the write lock: the name is taken.
        Some(Violation::Unique) => already_exists("instance name", &i.name),
        _ => e.into(),
    })?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(store: &SqliteStore, id: &str) -> Result<Option<InstanceRecord>> {
    let row = sqlx::query(select_instances!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::instance).transpose()
}

pub(super) async fn list(store: &SqliteStore) -> Result<Vec<InstanceRecord>> {
    let all = sqlx::query(select_instances!("ORDER BY created_at, id"))
        .fetch_all(&store.reader)
        .await?;
    all.iter().map(rows::instance).collect()
}

pub(super) async fn update_with(
    store: &SqliteStore,
    i: &InstanceRecord,
    secret: Option<&InstanceSecretRecord>,
    audit: Option<&AuditEventInput>,
) -> Result<i64> {
    // The writer turn, the writer connection, then the journal's lock (see `journal`).
    let _turn = match audit {
        Some(_) => store.writer_turn().await,
        None => None,
    };
    let mut tx = store.begin().await?;
    let mut chain = match audit {
        Some(_) => store.chain_lock().await,
        None => ChainLock::none(),
    };
    chain.insert_pending(&mut tx).await?;
    let row_version = update_in(&mut tx, i).await?;
    if let Some(secret) = secret {
        upsert_secret(&mut tx, secret).await?;
    }
    if let Some(audit) = audit {
        audit::append_with_heads(&mut tx, audit, &mut chain.heads()).await?;
    }
    tx.commit().await?;
    chain.committed();
    Ok(row_version)
}

pub(super) async fn zeroize(
    store: &SqliteStore,
    i: &InstanceRecord,
    audit: &AuditEventInput,
) -> Result<i64> {
    let _turn = store.writer_turn().await;
    let mut tx = store.begin().await?;
    let mut chain = store.chain_lock().await;
    chain.insert_pending(&mut tx).await?;
    // First, so that a stale or missing instance deletes nothing (the transaction rolls back).
    let row_version = update_in(&mut tx, i).await?;
    // Children before parents: the foreign keys are enforced on every statement.
    for sql in [
        "DELETE FROM keystore_attributes WHERE instance_id = ?",
        "DELETE FROM keystore_objects WHERE instance_id = ?",
        "DELETE FROM keystores WHERE instance_id = ?",
        "DELETE FROM registrations WHERE instance_id = ?",
        "DELETE FROM key_aliases WHERE instance_id = ?",
        "DELETE FROM key_versions WHERE instance_id = ?",
        "DELETE FROM keys WHERE instance_id = ?",
        "DELETE FROM key_rings WHERE instance_id = ? AND id <> 'default'",
        "DELETE FROM instance_secrets WHERE instance_id = ?",
        "DELETE FROM kmip_certificates WHERE instance_id = ?",
        "DELETE FROM kmip_adapters WHERE instance_id = ?",
    ] {
        sqlx::query(sql).bind(&i.id).execute(&mut *tx).await?;
    }
    audit::append_with_heads(&mut tx, audit, &mut chain.heads()).await?;
    tx.commit().await?;
    chain.committed();
    Ok(row_version)
}

/// The optimistic update of an instance row on `conn` (in a write transaction); the new row
/// version. The policies are not part of the record and stay as they are.
pub(super) async fn update_in(conn: &mut Conn, i: &InstanceRecord) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE instances SET name = ?, state = ?, mk_version = ?, unseal_method = ?, \
         mk_check_value = ?, unseal_config = ?, updated_at = ?, row_version = row_version + 1 \
         WHERE id = ? AND row_version = ?",
    )
    .bind(&i.name)
    .bind(&i.state)
    .bind(i.mk_version)
    .bind(&i.unseal_method)
    .bind(&i.mk_check_value)
    .bind(&i.unseal_config)
    .bind(i.updated_at)
    .bind(&i.id)
    .bind(i.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique) => already_exists("instance name", &i.name),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let exists = instance_exists(conn, &i.id).await?;
        return Err(stale("instance", &i.id, exists, i.row_version));
    }
    Ok(i.row_version + 1)
}

// ---- instance secrets -----------------------------------------------------------------------

pub(super) async fn secret(
    store: &SqliteStore,
    instance_id: &str,
    name: &str,
) -> Result<Option<InstanceSecretRecord>> {
    let row = sqlx::query(
        "SELECT instance_id, name, sealed, mk_version, created_at FROM instance_secrets \
         WHERE instance_id = ? AND name = ?",
    )
    .bind(instance_id)
    .bind(name)
    .fetch_optional(&store.reader)
    .await?;
    row.as_ref().map(rows::instance_secret).transpose()
}

/// Deletes an instance secret; `Ok` if it did not exist.
pub(super) async fn delete_secret_in(conn: &mut Conn, instance_id: &str, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM instance_secrets WHERE instance_id = ? AND name = ?")
        .bind(instance_id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts `s`, or replaces every field of the secret with the same `(instance_id, name)`.
pub(super) async fn upsert_secret(conn: &mut Conn, s: &InstanceSecretRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO instance_secrets (instance_id, name, sealed, mk_version, created_at) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (instance_id, name) DO UPDATE SET sealed = excluded.sealed, \
         mk_version = excluded.mk_version, created_at = excluded.created_at",
    )
    .bind(&s.instance_id)
    .bind(&s.name)
    .bind(&s.sealed)
    .bind(s.mk_version)
    .bind(s.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        // fk_instance_secrets_instance.
        Some(Violation::ForeignKey) => not_found("instance", &s.instance_id),
        _ => e.into(),
    })?;
    Ok(())
}

// ---- signed command nonces ------------------------------------------------------------------

pub(super) async fn use_nonce(
    store: &SqliteStore,
    instance_id: &str,
    nonce: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    // Insert before purging: a replayed nonce is caught even if it has expired meanwhile.
    sqlx::query("INSERT INTO command_nonces (instance_id, nonce, expires_at) VALUES (?, ?, ?)")
        .bind(instance_id)
        .bind(nonce)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match violation(&e) {
            // pk_command_nonces.
            Some(Violation::Unique) => already_exists("command nonce", nonce),
            _ => e.into(),
        })?;
    sqlx::query("DELETE FROM command_nonces WHERE expires_at < ?")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

// ---- instance policies ----------------------------------------------------------------------

/// The instance's policies JSON; [`crate::StoreError::NotFound`] if the instance does not exist.
pub(super) async fn policies(store: &SqliteStore, instance_id: &str) -> Result<String> {
    let row = sqlx::query("SELECT id, policies FROM instances WHERE id = ?")
        .bind(instance_id)
        .fetch_optional(&store.reader)
        .await?
        .ok_or_else(|| not_found("instance", instance_id))?;
    rows::instance_policies(&row)
}

/// Replaces the instance's policies JSON; [`crate::StoreError::NotFound`] if the instance does
/// not exist. Leaves `row_version` alone: the policies are not part of [`InstanceRecord`].
pub(super) async fn set_policies_in(
    conn: &mut Conn,
    instance_id: &str,
    policies: &str,
) -> Result<()> {
    let done = sqlx::query("UPDATE instances SET policies = ? WHERE id = ?")
        .bind(policies)
        .bind(instance_id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("instance", instance_id));
    }
    Ok(())
}

// ---- key rings ------------------------------------------------------------------------------

pub(super) async fn insert_key_ring_in(conn: &mut Conn, r: &KeyRingRecord) -> Result<()> {
    if !instance_exists(conn, &r.instance_id).await? {
        return Err(not_found("instance", &r.instance_id));
    }
    sqlx::query(
        "INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES (?, ?, ?, ?)",
    )
    .bind(&r.instance_id)
    .bind(&r.id)
    .bind(r.created_at)
    .bind(&r.created_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique) => already_exists("key ring", &r.id),
        Some(Violation::ForeignKey) => not_found("instance", &r.instance_id),
        None => e.into(),
    })?;
    Ok(())
}

pub(super) async fn key_ring(
    store: &SqliteStore,
    instance_id: &str,
    id: &str,
) -> Result<Option<KeyRingRecord>> {
    let row = sqlx::query(
        "SELECT instance_id, id, created_at, created_by FROM key_rings \
         WHERE instance_id = ? AND id = ?",
    )
    .bind(instance_id)
    .bind(id)
    .fetch_optional(&store.reader)
    .await?;
    row.as_ref().map(rows::key_ring).transpose()
}

pub(super) async fn list_key_rings(
    store: &SqliteStore,
    instance_id: &str,
) -> Result<Vec<KeyRingRecord>> {
    let all = sqlx::query(
        "SELECT instance_id, id, created_at, created_by FROM key_rings \
         WHERE instance_id = ? ORDER BY id",
    )
    .bind(instance_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::key_ring).collect()
}

pub(super) async fn delete_key_ring_in(conn: &mut Conn, instance_id: &str, id: &str) -> Result<()> {
    let exists = sqlx::query("SELECT 1 FROM key_rings WHERE instance_id = ? AND id = ?")
        .bind(instance_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if !exists {
        return Err(not_found("key ring", id));
    }
    let in_use =
        sqlx::query("SELECT 1 FROM keys WHERE instance_id = ? AND key_ring_id = ? LIMIT 1")
            .bind(instance_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    if in_use {
        return Err(in_use_error(id));
    }
    sqlx::query("DELETE FROM key_rings WHERE instance_id = ? AND id = ?")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(|e| match violation(&e) {
            // fk_keys_ring: checked above, kept as the last line of defence.
            Some(Violation::ForeignKey) => in_use_error(id),
            _ => e.into(),
        })?;
    Ok(())
}

fn in_use_error(id: &str) -> crate::StoreError {
    crate::StoreError::InUse {
        what: "key ring",
        id: id.to_owned(),
    }
}

async fn instance_exists(conn: &mut Conn, id: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM instances WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}
