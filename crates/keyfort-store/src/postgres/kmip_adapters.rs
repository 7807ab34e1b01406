//! KMIP adapters, their client certificates, and the objects their clients created.

use sqlx::{PgConnection, PgPool, Row};

use super::rows::{self, already_exists, constraint, not_found};
use crate::row_read::{self, select_adapters, select_certificates};
use crate::{KeyRecord, KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter, Result};

/// `<select> FROM keys k WHERE <the adapter's objects in the filter's states> <tail>`; the
/// adapter expression, and the condition of the partial index `ix_keys_kmip_adapter`, are
/// spelled as in that index, to use it.
macro_rules! adapter_objects {
    ($select:expr, $tail:literal) => {
        concat!(
            $select,
            " FROM keys k WHERE k.instance_id = $1 AND ((k.attributes::jsonb) #>> '{kmip_adapter,adapter_id}') = $2 AND ((k.attributes::jsonb) #>> '{kmip_adapter,adapter_id}') IS NOT NULL AND (cardinality($3::bigint[]) = 0 OR k.state = ANY($3::bigint[])) ",
            $tail
        )
    };
}

pub(super) async fn adapters(pool: &PgPool, instance_id: &str) -> Result<Vec<KmipAdapterRecord>> {
    let all = sqlx::query(select_adapters!(
        "WHERE instance_id = $1 ORDER BY created_at, id"
    ))
    .bind(instance_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(row_read::kmip_adapter).collect()
}

pub(super) async fn certificates(
    pool: &PgPool,
    instance_id: &str,
    adapter_id: &str,
) -> Result<Vec<KmipCertificateRecord>> {
    let all = sqlx::query(select_certificates!(
        "WHERE instance_id = $1 AND adapter_id = $2 ORDER BY created_at, id"
    ))
    .bind(instance_id)
    .bind(adapter_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(row_read::kmip_certificate).collect()
}

pub(super) async fn certificate_by_fingerprint(
    pool: &PgPool,
    fingerprint: &str,
) -> Result<Option<KmipCertificateRecord>> {
    let row = sqlx::query(select_certificates!("WHERE fingerprint = $1"))
        .bind(fingerprint)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(row_read::kmip_certificate).transpose()
}

pub(super) async fn objects(
    pool: &PgPool,
    instance_id: &str,
    adapter_id: &str,
    filter: &KmipObjectFilter,
) -> Result<(Vec<KeyRecord>, u64)> {
    let limit: Option<i64> = filter.limit.map(saturating_i64);
    let page = sqlx::query(adapter_objects!(
        concat!(
            "SELECT k.instance_id, k.id, k.key_ring_id, k.name, k.description, k.tags, ",
            "k.object_type, k.algorithm, k.bit_length, k.extractable, k.imported, k.state, ",
            "k.created_at, k.created_by, k.updated_at, k.activation_at, k.expires_at, ",
            "k.deactivated_at, k.deleted_at, k.deleted_by, k.last_rotated_at, ",
            "k.current_version_id, k.attributes, k.row_version, ",
            "COALESCE((SELECT json_agg(a.alias ORDER BY a.position) FROM key_aliases a ",
            "WHERE a.instance_id = k.instance_id AND a.key_id = k.id)::text, '[]') AS aliases"
        ),
        "ORDER BY k.created_at, k.id LIMIT $4 OFFSET $5"
    ))
    .bind(instance_id)
    .bind(adapter_id)
    .bind(&filter.states)
    .bind(limit)
    .bind(saturating_i64(filter.offset))
    .fetch_all(pool)
    .await?;
    let keys = page.iter().map(rows::key).collect::<Result<Vec<_>>>()?;
    let row = sqlx::query(adapter_objects!("SELECT COUNT(*)", ""))
        .bind(instance_id)
        .bind(adapter_id)
        .bind(&filter.states)
        .fetch_one(pool)
        .await?;
    let n: i64 = row.try_get(0)?;
    // COUNT(*) is never negative.
    Ok((keys, u64::try_from(n).unwrap_or(0)))
}

pub(super) async fn insert_adapter_in(
    conn: &mut PgConnection,
    a: &KmipAdapterRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kmip_adapters (instance_id, id, name, description, profile, crk_id, \
         created_at, created_by, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .map_err(|e| match constraint(&e) {
        Some("pk_kmip_adapters" | "uq_kmip_adapters_name") => {
            already_exists("kmip adapter", &a.name)
        }
        Some("fk_kmip_adapters_instance") => not_found("instance", &a.instance_id),
        _ => e.into(),
    })?;
    Ok(())
}

pub(super) async fn delete_adapter_in(
    conn: &mut PgConnection,
    instance_id: &str,
    id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM kmip_certificates WHERE instance_id = $1 AND adapter_id = $2")
        .bind(instance_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM kmip_adapters WHERE instance_id = $1 AND id = $2")
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
    conn: &mut PgConnection,
    c: &KmipCertificateRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kmip_certificates (instance_id, adapter_id, id, name, fingerprint, \
         certificate, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
    .map_err(|e| match constraint(&e) {
        Some(
            "pk_kmip_certificates"
            | "uq_kmip_certificates_id"
            | "uq_kmip_certificates_name"
            | "uq_kmip_certificates_fingerprint",
        ) => already_exists("kmip certificate", &c.name),
        Some("fk_kmip_certificates_adapter") => not_found("kmip adapter", &c.adapter_id),
        _ => e.into(),
    })?;
    Ok(())
}

pub(super) async fn delete_certificate_in(
    conn: &mut PgConnection,
    instance_id: &str,
    adapter_id: &str,
    id: &str,
) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM kmip_certificates WHERE instance_id = $1 AND adapter_id = $2 AND id = $3",
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
