//! Principals and their API keys.

use super::rows::{self, Violation, already_exists, not_found, violation};
use super::{SqliteStore, Tx, stale};
use crate::{ApiKeyRecord, PrincipalRecord, Result};

/// `SELECT <every column> FROM principals <tail>`.
macro_rules! select_principals {
    ($tail:literal) => {
        concat!(
            "SELECT id, instance_id, name, kind, roles, disabled, created_at, updated_at, ",
            "row_version FROM principals ",
            $tail
        )
    };
}

/// `SELECT <every column> FROM api_keys <tail>`.
macro_rules! select_api_keys {
    ($tail:literal) => {
        concat!(
            "SELECT id, principal_id, name, hash, created_at, expires_at, revoked_at, ",
            "row_version FROM api_keys ",
            $tail
        )
    };
}

pub(super) async fn insert(store: &SqliteStore, p: &PrincipalRecord) -> Result<()> {
    let mut tx = store.begin().await?;
    if exists(&mut tx, "SELECT 1 FROM principals WHERE id = ?", &p.id).await? {
        return Err(already_exists("principal", &p.id));
    }
    sqlx::query(
        "INSERT INTO principals (id, instance_id, name, kind, roles, disabled, created_at, \
         updated_at, row_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&p.id)
    .bind(&p.instance_id)
    .bind(&p.name)
    .bind(&p.kind)
    .bind(&p.roles)
    .bind(i64::from(p.disabled))
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(p.row_version)
    .execute(&mut *tx)
    .await
    .map_err(|e| match violation(&e) {
        // The id was checked above: uq_principals_name.
        Some(Violation::Unique) => already_exists("principal name", &p.name),
        // fk_principals_instance.
        Some(Violation::ForeignKey) => {
            not_found("instance", p.instance_id.as_deref().unwrap_or_default())
        }
        None => e.into(),
    })?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn get(store: &SqliteStore, id: &str) -> Result<Option<PrincipalRecord>> {
    let row = sqlx::query(select_principals!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::principal).transpose()
}

pub(super) async fn by_name(
    store: &SqliteStore,
    instance_id: Option<&str>,
    name: &str,
) -> Result<Option<PrincipalRecord>> {
    // `IS` compares NULL with NULL as equal: `None` finds the deployment-wide principal.
    let row = sqlx::query(select_principals!("WHERE instance_id IS ? AND name = ?"))
        .bind(instance_id)
        .bind(name)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::principal).transpose()
}

pub(super) async fn list(store: &SqliteStore) -> Result<Vec<PrincipalRecord>> {
    let all = sqlx::query(select_principals!("ORDER BY created_at, id"))
        .fetch_all(&store.reader)
        .await?;
    all.iter().map(rows::principal).collect()
}

pub(super) async fn update(store: &SqliteStore, p: &PrincipalRecord) -> Result<i64> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE principals SET name = ?, roles = ?, disabled = ?, updated_at = ?, \
         row_version = row_version + 1 WHERE id = ? AND row_version = ?",
    )
    .bind(&p.name)
    .bind(&p.roles)
    .bind(i64::from(p.disabled))
    .bind(p.updated_at)
    .bind(&p.id)
    .bind(p.row_version)
    .execute(&mut *tx)
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique) => already_exists("principal name", &p.name),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let found = exists(&mut tx, "SELECT 1 FROM principals WHERE id = ?", &p.id).await?;
        return Err(stale("principal", &p.id, found, p.row_version));
    }
    tx.commit().await?;
    Ok(p.row_version + 1)
}

pub(super) async fn insert_api_key(store: &SqliteStore, k: &ApiKeyRecord) -> Result<()> {
    let mut tx = store.begin().await?;
    if exists(&mut tx, "SELECT 1 FROM api_keys WHERE id = ?", &k.id).await? {
        return Err(already_exists("api key", &k.id));
    }
    if !exists(
        &mut tx,
        "SELECT 1 FROM principals WHERE id = ?",
        &k.principal_id,
    )
    .await?
    {
        return Err(not_found("principal", &k.principal_id));
    }
    sqlx::query(
        "INSERT INTO api_keys (id, principal_id, name, hash, created_at, expires_at, revoked_at, \
         row_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&k.id)
    .bind(&k.principal_id)
    .bind(&k.name)
    .bind(&k.hash)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(k.row_version)
    .execute(&mut *tx)
    .await
    .map_err(|e| match violation(&e) {
        // The id was checked above: uq_api_keys_hash. The hash itself stays out of the error.
        Some(Violation::Unique) => already_exists("api key hash", &k.id),
        Some(Violation::ForeignKey) => not_found("principal", &k.principal_id),
        None => e.into(),
    })?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn api_key_by_hash(
    store: &SqliteStore,
    hash: &[u8],
) -> Result<Option<ApiKeyRecord>> {
    let row = sqlx::query(select_api_keys!("WHERE hash = ?"))
        .bind(hash)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(super) async fn api_key(store: &SqliteStore, id: &str) -> Result<Option<ApiKeyRecord>> {
    let row = sqlx::query(select_api_keys!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(super) async fn list_all_api_keys(store: &SqliteStore) -> Result<Vec<ApiKeyRecord>> {
    let all = sqlx::query(select_api_keys!("ORDER BY created_at, id"))
        .fetch_all(&store.reader)
        .await?;
    all.iter().map(rows::api_key).collect()
}

pub(super) async fn list_api_keys(
    store: &SqliteStore,
    principal_id: &str,
) -> Result<Vec<ApiKeyRecord>> {
    let all = sqlx::query(select_api_keys!(
        "WHERE principal_id = ? ORDER BY created_at, id"
    ))
    .bind(principal_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::api_key).collect()
}

pub(super) async fn update_api_key(store: &SqliteStore, k: &ApiKeyRecord) -> Result<i64> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE api_keys SET name = ?, expires_at = ?, revoked_at = ?, \
         row_version = row_version + 1 WHERE id = ? AND row_version = ?",
    )
    .bind(&k.name)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(&k.id)
    .bind(k.row_version)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        let found = exists(&mut tx, "SELECT 1 FROM api_keys WHERE id = ?", &k.id).await?;
        return Err(stale("api key", &k.id, found, k.row_version));
    }
    tx.commit().await?;
    Ok(k.row_version + 1)
}

/// Whether `sql` (a `SELECT 1 ... WHERE id = ?`) finds a row, inside `tx`.
async fn exists(tx: &mut Tx, sql: &'static str, id: &str) -> Result<bool> {
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?;
    Ok(row.is_some())
}
