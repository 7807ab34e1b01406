//! Reads: one statement each, on any pooled connection (one statement sees one snapshot).

use sqlx::{PgPool, Row};

use super::rows::{self, not_found, saturating_i64};
use crate::{
    ApiKeyRecord, InstanceRecord, InstanceSecretRecord, KeyFilter, KeyRecord, KeyRingRecord,
    KeyVersionRecord, PrincipalRecord, RegistrationRecord, Result,
};

/// `SELECT <every column of keys k, and its aliases as a JSON array> FROM keys k <tail>`.
macro_rules! select_keys {
    ($($tail:expr),+) => {
        concat!(
            "SELECT k.instance_id, k.id, k.key_ring_id, k.name, k.description, k.tags, ",
            "k.object_type, k.algorithm, k.bit_length, k.extractable, k.imported, k.state, ",
            "k.created_at, k.created_by, k.updated_at, k.activation_at, k.expires_at, ",
            "k.deactivated_at, k.deleted_at, k.deleted_by, k.last_rotated_at, ",
            "k.current_version_id, k.attributes, k.row_version, ",
            "COALESCE((SELECT json_agg(a.alias ORDER BY a.position) FROM key_aliases a ",
            "WHERE a.instance_id = k.instance_id AND a.key_id = k.id)::text, '[]') AS aliases ",
            "FROM keys k ",
            $($tail),+
        )
    };
}

/// The `WHERE` clause implementing [`KeyFilter`]: `$1` instance, `$2` ring, `$3` states (an
/// array), `$4` extractable, `$5` search text; every value is bound.
macro_rules! key_filter {
    () => {
        concat!(
            "WHERE k.instance_id = $1 ",
            "AND ($2::text IS NULL OR k.key_ring_id = $2) ",
            "AND ($3::bigint[] IS NULL OR k.state = ANY($3)) ",
            "AND ($4::boolean IS NULL OR k.extractable = $4) ",
            "AND ($5::text IS NULL OR strpos(lower(k.name), lower($5)) > 0 ",
            "OR EXISTS (SELECT 1 FROM key_aliases a WHERE a.instance_id = k.instance_id ",
            "AND a.key_id = k.id AND strpos(lower(a.alias), lower($5)) > 0)) "
        )
    };
}

macro_rules! select_instances {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, state, mk_version, unseal_method, mk_check_value, unseal_config, ",
            "created_at, updated_at, row_version FROM instances ",
            $tail
        )
    };
}

macro_rules! select_versions {
    ($tail:literal) => {
        concat!(
            "SELECT instance_id, key_id, id, seq, sealed, mk_version, created_at ",
            "FROM key_versions ",
            $tail
        )
    };
}

macro_rules! select_principals {
    ($tail:literal) => {
        concat!(
            "SELECT id, instance_id, name, kind, roles, disabled, created_at, updated_at, ",
            "row_version FROM principals ",
            $tail
        )
    };
}

macro_rules! select_api_keys {
    ($tail:literal) => {
        concat!(
            "SELECT id, principal_id, name, hash, created_at, expires_at, revoked_at, ",
            "row_version FROM api_keys ",
            $tail
        )
    };
}

pub(super) async fn instance(pool: &PgPool, id: &str) -> Result<Option<InstanceRecord>> {
    let row = sqlx::query(select_instances!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::instance).transpose()
}

pub(super) async fn list_instances(pool: &PgPool) -> Result<Vec<InstanceRecord>> {
    let all = sqlx::query(select_instances!("ORDER BY created_at, id"))
        .fetch_all(pool)
        .await?;
    all.iter().map(rows::instance).collect()
}

pub(super) async fn instance_policies(pool: &PgPool, instance_id: &str) -> Result<String> {
    let row = sqlx::query("SELECT id, policies FROM instances WHERE id = $1")
        .bind(instance_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| not_found("instance", instance_id))?;
    rows::instance_policies(&row)
}

pub(super) async fn instance_secret(
    pool: &PgPool,
    instance_id: &str,
    name: &str,
) -> Result<Option<InstanceSecretRecord>> {
    let row = sqlx::query(
        "SELECT instance_id, name, sealed, mk_version, created_at FROM instance_secrets \
         WHERE instance_id = $1 AND name = $2",
    )
    .bind(instance_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::instance_secret).transpose()
}

pub(super) async fn key_ring(
    pool: &PgPool,
    instance_id: &str,
    id: &str,
) -> Result<Option<KeyRingRecord>> {
    let row = sqlx::query(
        "SELECT instance_id, id, created_at, created_by FROM key_rings \
         WHERE instance_id = $1 AND id = $2",
    )
    .bind(instance_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::key_ring).transpose()
}

pub(super) async fn list_key_rings(pool: &PgPool, instance_id: &str) -> Result<Vec<KeyRingRecord>> {
    let all = sqlx::query(
        "SELECT instance_id, id, created_at, created_by FROM key_rings \
         WHERE instance_id = $1 ORDER BY id",
    )
    .bind(instance_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::key_ring).collect()
}

pub(super) async fn key(pool: &PgPool, instance_id: &str, id: &str) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(select_keys!("WHERE k.instance_id = $1 AND k.id = $2"))
        .bind(instance_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::key).transpose()
}

pub(super) async fn key_by_alias(
    pool: &PgPool,
    instance_id: &str,
    alias: &str,
) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(select_keys!(
        "WHERE k.instance_id = $1 AND k.id = (SELECT b.key_id FROM key_aliases b ",
        "WHERE b.instance_id = $1 AND b.alias = $2)"
    ))
    .bind(instance_id)
    .bind(alias)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::key).transpose()
}

/// The wanted states, `None` for "every state".
fn states(filter: &KeyFilter) -> Option<Vec<i64>> {
    (!filter.states.is_empty()).then(|| filter.states.clone())
}

pub(super) async fn list_keys(
    pool: &PgPool,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<Vec<KeyRecord>> {
    let all = sqlx::query(select_keys!(
        key_filter!(),
        "ORDER BY k.created_at, k.id LIMIT $6 OFFSET $7"
    ))
    .bind(instance_id)
    .bind(filter.key_ring_id.as_deref())
    .bind(states(filter))
    .bind(filter.extractable)
    .bind(filter.search.as_deref())
    // PostgreSQL: LIMIT NULL means no limit.
    .bind(filter.limit.map(saturating_i64))
    .bind(saturating_i64(filter.offset))
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::key).collect()
}

pub(super) async fn count_keys(
    pool: &PgPool,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<u64> {
    let row = sqlx::query(concat!("SELECT COUNT(*) FROM keys k ", key_filter!()))
        .bind(instance_id)
        .bind(filter.key_ring_id.as_deref())
        .bind(states(filter))
        .bind(filter.extractable)
        .bind(filter.search.as_deref())
        .fetch_one(pool)
        .await?;
    let n: i64 = row.try_get(0)?;
    // COUNT(*) is never negative.
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn key_versions(
    pool: &PgPool,
    instance_id: &str,
    key_id: &str,
) -> Result<Vec<KeyVersionRecord>> {
    let all = sqlx::query(select_versions!(
        "WHERE instance_id = $1 AND key_id = $2 ORDER BY seq"
    ))
    .bind(instance_id)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::key_version).collect()
}

pub(super) async fn key_version(
    pool: &PgPool,
    instance_id: &str,
    key_id: &str,
    version_id: &str,
) -> Result<Option<KeyVersionRecord>> {
    let row = sqlx::query(select_versions!(
        "WHERE instance_id = $1 AND key_id = $2 AND id = $3"
    ))
    .bind(instance_id)
    .bind(key_id)
    .bind(version_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::key_version).transpose()
}

pub(super) async fn key_versions_below_mk(
    pool: &PgPool,
    instance_id: &str,
    mk_version: i64,
    limit: u64,
) -> Result<Vec<KeyVersionRecord>> {
    let all = sqlx::query(select_versions!(
        "WHERE instance_id = $1 AND mk_version < $2 ORDER BY key_id, seq LIMIT $3"
    ))
    .bind(instance_id)
    .bind(mk_version)
    .bind(saturating_i64(limit))
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::key_version).collect()
}

pub(super) async fn count_key_versions_below_mk(
    pool: &PgPool,
    instance_id: &str,
    mk_version: i64,
) -> Result<u64> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM key_versions WHERE instance_id = $1 AND mk_version < $2")
            .bind(instance_id)
            .bind(mk_version)
            .fetch_one(pool)
            .await?;
    let n: i64 = row.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn registrations(
    pool: &PgPool,
    instance_id: &str,
    key_id: Option<&str>,
) -> Result<Vec<RegistrationRecord>> {
    let all = sqlx::query(
        "SELECT instance_id, key_id, resource_crn, description, registration_metadata, \
         prevent_key_deletion, key_version_id, created_by, created_at, updated_by, updated_at \
         FROM registrations WHERE instance_id = $1 AND ($2::text IS NULL OR key_id = $2) \
         ORDER BY key_id, resource_crn",
    )
    .bind(instance_id)
    .bind(key_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::registration).collect()
}

pub(super) async fn principal(pool: &PgPool, id: &str) -> Result<Option<PrincipalRecord>> {
    let row = sqlx::query(select_principals!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::principal).transpose()
}

pub(super) async fn principal_by_name(
    pool: &PgPool,
    instance_id: Option<&str>,
    name: &str,
) -> Result<Option<PrincipalRecord>> {
    let row = sqlx::query(select_principals!(
        "WHERE instance_id IS NOT DISTINCT FROM $1 AND name = $2"
    ))
    .bind(instance_id)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(rows::principal).transpose()
}

pub(super) async fn list_principals(pool: &PgPool) -> Result<Vec<PrincipalRecord>> {
    let all = sqlx::query(select_principals!("ORDER BY created_at, id"))
        .fetch_all(pool)
        .await?;
    all.iter().map(rows::principal).collect()
}

pub(super) async fn api_key_by_hash(pool: &PgPool, hash: &[u8]) -> Result<Option<ApiKeyRecord>> {
    let row = sqlx::query(select_api_keys!("WHERE hash = $1"))
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(super) async fn api_key(pool: &PgPool, id: &str) -> Result<Option<ApiKeyRecord>> {
    let row = sqlx::query(select_api_keys!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(super) async fn list_all_api_keys(pool: &PgPool) -> Result<Vec<ApiKeyRecord>> {
    let all = sqlx::query(select_api_keys!("ORDER BY created_at, id"))
        .fetch_all(pool)
        .await?;
    all.iter().map(rows::api_key).collect()
}

pub(super) async fn list_api_keys(pool: &PgPool, principal_id: &str) -> Result<Vec<ApiKeyRecord>> {
    let all = sqlx::query(select_api_keys!(
        "WHERE principal_id = $1 ORDER BY created_at, id"
    ))
    .bind(principal_id)
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::api_key).collect()
}
