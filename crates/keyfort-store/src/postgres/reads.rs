//! Reads: one statement each, on any pooled connection (one statement sees one snapshot).

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::rows::{self, not_found, saturating_i64};
use crate::{
    ApiKeyRecord, Comparison, InstanceRecord, InstanceSecretRecord, KeyDate, KeyFilter, KeyRecord,
    KeyRingRecord, KeySortField, KeyVersionRecord, PrincipalRecord, RegistrationRecord, Result,
    SearchScope,
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
    // No stored text holds NUL (see `push_filter`).
    if instance_id.contains('\0') || id.contains('\0') {
        return Ok(None);
    }
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
    if instance_id.contains('\0') || alias.contains('\0') {
        return Ok(None);
    }
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

pub(super) async fn list_keys(
    pool: &PgPool,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<Vec<KeyRecord>> {
    let mut q = QueryBuilder::<Postgres>::new(select_keys!(""));
    push_filter(&mut q, instance_id, filter);
    q.push(" ORDER BY ");
    if filter.sort.is_empty() {
        q.push("k.created_at, ");
    }
    for term in &filter.sort {
        q.push(sort_column(term.field));
        // As SQLite orders them: a missing date is smaller than any other value.
        q.push(if term.descending {
            " DESC NULLS LAST, "
        } else {
            " ASC NULLS FIRST, "
        });
    }
    // Ids compare as bytes (SQLite's BINARY), whatever the database's collation.
    q.push("k.id COLLATE \"C\" LIMIT ");
    // PostgreSQL: LIMIT NULL means no limit.
    q.push_bind(filter.limit.map(saturating_i64));
    q.push(" OFFSET ");
    q.push_bind(saturating_i64(filter.offset));
    let all = q.build().fetch_all(pool).await?;
    all.iter().map(rows::key).collect()
}

pub(super) async fn count_keys(
    pool: &PgPool,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<u64> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM keys k ");
    push_filter(&mut q, instance_id, filter);
    let row = q.build().fetch_one(pool).await?;
    let n: i64 = row.try_get(0)?;
    // COUNT(*) is never negative.
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The `WHERE` clause implementing [`KeyFilter`], with the SQLite store's semantics. Values are
/// bound parameters; column names and operators come from the closed enums of the filter, never
/// from the caller's text.
///
/// PostgreSQL text cannot hold NUL, so no stored value contains one: a condition on a text with
/// NUL matches nothing (binding it would be an error).
fn push_filter(q: &mut QueryBuilder<Postgres>, instance_id: &str, filter: &KeyFilter) {
    q.push("WHERE ");
    push_text_eq(q, "k.instance_id", instance_id);
    if let Some(ring) = &filter.key_ring_id {
        q.push(" AND ");
        push_text_eq(q, "k.key_ring_id", ring);
    }
    if let Some(id) = &filter.id {
        q.push(" AND ");
        push_text_eq(q, "k.id", id);
    }
    if !filter.states.is_empty() {
        q.push(" AND k.state = ANY(");
        q.push_bind(filter.states.clone());
        q.push(")");
    }
    if let Some(extractable) = filter.extractable {
        q.push(" AND k.extractable = ");
        q.push_bind(extractable);
    }
    if let Some(after) = &filter.after {
        // Ids compare as bytes, as the listing orders them.
        q.push(" AND (k.created_at, k.id COLLATE \"C\") > (");
        q.push_bind(after.created_at);
        q.push(", ");
        q.push_bind(after.id.clone());
        q.push(")");
    }
    if filter.without_kmip_adapter_objects {
        // As on SQLite: the text test spares parsing the attributes of most keys.
        q.push(
            " AND (strpos(k.attributes, '\"kmip_adapter\"') = 0 \
             OR (k.attributes::jsonb) ->> 'kmip_adapter' IS NULL)",
        );
    }
    for c in &filter.dates {
        q.push(" AND ");
        q.push(date_column(c.date));
        match c.value {
            None => {
                q.push(" IS NULL");
            }
            Some(v) => {
                q.push(match c.comparison {
                    Comparison::Eq => " = ",
                    Comparison::Lt => " < ",
                    Comparison::Lte => " <= ",
                    Comparison::Gt => " > ",
                    Comparison::Gte => " >= ",
                });
                q.push_bind(v);
            }
        }
    }
    if let Some(text) = &filter.search {
        let mode = filter.search_mode;
        q.push(if mode.negate { " AND NOT (" } else { " AND (" });
        let push_match = |q: &mut QueryBuilder<Postgres>, column: &str| {
            if text.contains('\0') {
                q.push("FALSE");
            } else if mode.exact {
                q.push(column);
                q.push(" = ");
                q.push_bind(text.clone());
            } else {
                // SQLite's lower() folds ASCII letters only; so does this.
                q.push("strpos(translate(");
                q.push(column);
                q.push(", ");
                q.push(ASCII_FOLD);
                q.push("), translate(");
                q.push_bind(text.clone());
                q.push("::text, ");
                q.push(ASCII_FOLD);
                q.push(")) > 0");
            }
        };
        if mode.scope != SearchScope::Alias {
            push_match(q, "k.name");
        }
        if mode.scope == SearchScope::NameOrAlias {
            q.push(" OR ");
        }
        if mode.scope != SearchScope::Name {
            q.push(
                "EXISTS (SELECT 1 FROM key_aliases a WHERE a.instance_id = k.instance_id \
                 AND a.key_id = k.id AND ",
            );
            push_match(q, "a.alias");
            q.push(")");
        }
        q.push(")");
    }
}

/// `translate` arguments mapping ASCII capitals to small letters.
const ASCII_FOLD: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'";

/// `column = value`, or `FALSE` if `value` holds a NUL (see [`push_filter`]).
fn push_text_eq(q: &mut QueryBuilder<Postgres>, column: &str, value: &str) {
    if value.contains('\0') {
        q.push("FALSE");
    } else {
        q.push(column);
        q.push(" = ");
        q.push_bind(value.to_owned());
    }
}

fn date_column(date: KeyDate) -> &'static str {
    match date {
        KeyDate::Created => "k.created_at",
        KeyDate::Updated => "k.updated_at",
        KeyDate::Rotated => "k.last_rotated_at",
        KeyDate::Deleted => "k.deleted_at",
        KeyDate::Expires => "k.expires_at",
    }
}

fn sort_column(field: KeySortField) -> &'static str {
    match field {
        // Ids compare as bytes, as in SQLite.
        KeySortField::Id => "k.id COLLATE \"C\"",
        KeySortField::State => "k.state",
        KeySortField::Extractable => "k.extractable",
        KeySortField::Imported => "k.imported",
        KeySortField::Date(d) => date_column(d),
    }
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

pub(super) async fn registrations_after(
    pool: &PgPool,
    instance_id: &str,
    after: Option<(&str, &str)>,
    limit: u64,
) -> Result<Vec<RegistrationRecord>> {
    let (key_id, crn) = after.unzip();
    // Ids and CRNs compare as bytes, as on SQLite, whatever the database's collation.
    let page = sqlx::query(
        "SELECT instance_id, key_id, resource_crn, description, registration_metadata, \
         prevent_key_deletion, key_version_id, created_by, created_at, updated_by, updated_at \
         FROM registrations WHERE instance_id = $1 AND ($2::text IS NULL OR \
         (key_id COLLATE \"C\", resource_crn COLLATE \"C\") > ($2::text, $3::text)) \
         ORDER BY key_id COLLATE \"C\", resource_crn COLLATE \"C\" LIMIT $4",
    )
    .bind(instance_id)
    .bind(key_id)
    .bind(crn)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    page.iter().map(rows::registration).collect()
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
