//! KMIP adapters, their client certificates, and the objects their clients created.

use sqlx::Row;

use super::rows::{self, Violation, already_exists, not_found, violation};
use super::{Conn, SqliteStore};
use crate::row_read::{self, select_adapters, select_certificates};
use crate::{KeyRecord, KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter, Result};

/// `<select> FROM keys k WHERE <the adapter's objects in the filter's states> <tail>`; the
/// adapter expression, and the condition of the partial index `ix_keys_kmip_adapter`, are
/// spelled as in that index, to use it.
macro_rules! adapter_objects {
    ($select:expr, $tail:literal) => {
        concat!(
            $select,
            " FROM keys k WHERE k.instance_id = ?1 AND json_extract(k.attributes, '$.kmip_adapter.adapter_id') = ?2 AND json_extract(k.attributes, '$.kmip_adapter.adapter_id') IS NOT NULL AND (json_array_length(?3) = 0 OR k.state IN (SELECT value FROM json_each(?3))) ",
            $tail
        )
    };
}

pub(super) async fn adapters(
    store: &SqliteStore,
    instance_id: &str,
) -> Result<Vec<KmipAdapterRecord>> {
    let all = sqlx::query(select_adapters!(
        "WHERE instance_id = ? ORDER BY created_at, id"
    ))
    .bind(instance_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(row_read::kmip_adapter).collect()
}

pub(super) async fn certificates(
    store: &SqliteStore,
    instance_id: &str,
    adapter_id: &str,
) -> Result<Vec<KmipCertificateRecord>> {
    let all = sqlx::query(select_certificates!(
        "WHERE instance_id = ? AND adapter_id = ? ORDER BY created_at, id"
    ))
    .bind(instance_id)
    .bind(adapter_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(row_read::kmip_certificate).collect()
}

pub(super) async fn certificate_by_fingerprint(
    store: &SqliteStore,
    fingerprint: &str,
) -> Result<Option<KmipCertificateRecord>> {
    let row = sqlx::query(select_certificates!("WHERE fingerprint = ?"))
        .bind(fingerprint)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(row_read::kmip_certificate).transpose()
}

pub(super) async fn objects(
    store: &SqliteStore,
    instance_id: &str,
    adapter_id: &str,
    filter: &KmipObjectFilter,
) -> Result<(Vec<KeyRecord>, u64)> {
    // Serializing integers cannot fail; an empty list means every state.
    let states = serde_json::to_string(&filter.states).unwrap_or_else(|_| "[]".to_owned());
    // SQLite: a negative LIMIT means no limit.
    let limit = filter.limit.map_or(-1, saturating_i64);
    let page = sqlx::query(adapter_objects!(
        concat!(
            "SELECT k.instance_id, k.id, k.key_ring_id, k.name, k.description, k.tags, ",
            "k.object_type, k.algorithm, k.bit_length, k.extractable, k.imported, k.state, ",
            "k.created_at, k.created_by, k.updated_at, k.activation_at, k.expires_at, ",
            "k.deactivated_at, k.deleted_at, k.deleted_by, k.last_rotated_at, ",
            "k.current_version_id, k.attributes, k.row_version, ",
            "(SELECT json_group_array(a.alias ORDER BY a.position) FROM key_aliases a ",
            "WHERE a.instance_id = k.instance_id AND a.key_id = k.id) AS aliases"
        ),
        "ORDER BY k.created_at, k.id LIMIT ?4 OFFSET ?5"
    ))
    .bind(instance_id)
    .bind(adapter_id)
    .bind(&states)
    .bind(limit)
    .bind(saturating_i64(filter.offset))
    .fetch_all(&store.reader)
    .await?;
    let keys = page.iter().map(rows::key).collect::<Result<Vec<_>>>()?;
    let row = sqlx::query(adapter_objects!("SELECT COUNT(*)", ""))
        .bind(instance_id)
        .bind(adapter_id)
        .bind(&states)
        .fetch_one(&store.reader)
        .await?;
    let n: i64 = row.try_get(0)?;
    // COUNT(*) is never negative.
    Ok((keys, u64::try_from(n).unwrap_or(0)))
}

pub(super) async fn insert_adapter_in(conn: &mut Conn, a: &KmipAdapterRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO kmip_adapters (instance_id, id, name, description, profile, crk_id, \
         created_at, created_by, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.instance_id)
    .bind(&a.id)
    .bind(&a.name)
    .bind(&a.description)
    .bind(&a.profile)
    .bind(&a.crk_id)
    .bind(a.created_at)
    .bind(&a.created_by)
    .bind(a.updated_at)
    .bind(&a.updated_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        // pk_kmip_adapters or uq_kmip_adapters_name.
        Some(Violation::Unique) => already_exists("kmip adapter", &a.name),
        // fk_kmip_adapters_instance.
        Some(Violation::ForeignKey) => not_found("instance", &a.instance_id),
        None => e.into(),
    })?;
    Ok(())
}

pub(super) async fn delete_adapter_in(conn: &mut Conn, instance_id: &str, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM kmip_certificates WHERE instance_id = ? AND adapter_id = ?")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM kmip_adapters WHERE instance_id = ? AND id = ?")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("kmip adapter", id));
    }
    Ok(())
}

pub(super) async fn insert_certificate_in(
    conn: &mut Conn,
    c: &KmipCertificateRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kmip_certificates (instance_id, adapter_id, id, name, fingerprint, \
         certificate, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.instance_id)
    .bind(&c.adapter_id)
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.fingerprint)
    .bind(&c.certificate)
    .bind(c.created_at)
    .bind(&c.created_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        // The id, the fingerprint or the name within the adapter.
        Some(Violation::Unique) => already_exists("kmip certificate", &c.name),
        // fk_kmip_certificates_adapter.
        Some(Violation::ForeignKey) => not_found("kmip adapter", &c.adapter_id),
        None => e.into(),
    })?;
    Ok(())
}

pub(super) async fn delete_certificate_in(
    conn: &mut Conn,
    instance_id: &str,
    adapter_id: &str,
    id: &str,
) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM kmip_certificates WHERE instance_id = ? AND adapter_id = ? AND id = ?",
    )
    .bind(instance_id)
    .bind(adapter_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("kmip certificate", id));
    }
    Ok(())
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
