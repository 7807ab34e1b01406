//! Keys, their aliases and their versions.
//!
//! Writes that a [`crate::Write`] can name are `*_in` functions taking the writer connection
//! inside its transaction; [`super::writer`] runs them, for a batch or a single-write method.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::rows::{self, Violation, already_exists, json_strings, not_found, violation};
use super::{Conn, SqliteStore, registrations, stale};
use crate::{
    Comparison, KeyDate, KeyFilter, KeyRecord, KeySortField, KeyVersionRecord, Result, SearchScope,
    StoreError,
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
            "(SELECT json_group_array(a.alias ORDER BY a.position) FROM key_aliases a ",
            "WHERE a.instance_id = k.instance_id AND a.key_id = k.id) AS aliases ",
            "FROM keys k ",
            $($tail),+
        )
    };
}

/// Inserts a key, its aliases and its first version.
pub(super) async fn insert_in(
    conn: &mut Conn,
    key: &KeyRecord,
    first_version: &KeyVersionRecord,
) -> Result<()> {
    insert_many_in(conn, &[(key, first_version)]).await
}

/// Inserts keys with their aliases and first versions, in one round trip for the keys and the
/// versions ([`push_padded_inserts`]), then one INSERT per alias. The errors
/// name the first key: with several keys, a caller that needs to know which one failed inserts
/// them one by one. A failed call may have inserted some rows: run it inside a savepoint.
pub(super) async fn insert_many_in(
    conn: &mut Conn,
    items: &[(&KeyRecord, &KeyVersionRecord)],
) -> Result<()> {
    let Some((first_key, first_version)) = items.first() else {
        return Ok(());
    };
    // A version that names another key than its own goes in by itself, so that its failed
    // foreign key is told apart from the key's (SQLite's message does not name the table).
    let paired = items
        .iter()
        .all(|(k, v)| v.instance_id == k.instance_id && v.key_id == k.id);
    let mut q = QueryBuilder::<Sqlite>::new("");
    if paired {
        push_padded_inserts(&mut q, items);
    } else {
        push_padded_keys(&mut q, items);
    }
    q.build()
        .execute(&mut *conn)
        .await
        .map_err(|e| match violation(&e) {
            // pk_key_versions (id) or uq_key_versions_seq (seq), named in SQLite's message.
            Some(Violation::Unique) if e.to_string().contains("key_versions.") => {
                already_exists("key version", &first_version.id)
            }
            // A taken id fails on pk_keys (checked before the foreign key), so no read is
            // needed.
            Some(Violation::Unique) => already_exists("key", &first_key.id),
            // fk_keys_ring: the ring is the key's only reference (each version's key is the
            // one just inserted).
            Some(Violation::ForeignKey) => not_found("key ring", &first_key.key_ring_id),
            None => e.into(),
        })?;
    if !paired {
        let versions: Vec<&KeyVersionRecord> = items.iter().map(|(_, v)| *v).collect();
        insert_versions(conn, &versions).await?;
    }
    // One statement per alias, so that a collision names its alias (aliases are few).
    for (key, _) in items {
        insert_aliases(conn, key).await?;
    }
    Ok(())
}

/// Pushes onto `q` the INSERTs of the keys of `items` and of their first versions, with few row
/// counts so that the writer connection keeps them prepared (see [`super::padded`]); their
/// aliases are not written. Returns how many statements were pushed.
pub(super) fn push_padded_inserts(
    q: &mut QueryBuilder<Sqlite>,
    items: &[(&KeyRecord, &KeyVersionRecord)],
) -> usize {
    let keys = push_padded_keys(q, items);
    if keys > 0 {
        q.push("; ");
    }
    let versions: Vec<&KeyVersionRecord> = items.iter().map(|(_, v)| *v).collect();
    keys + push_padded_versions(q, &versions)
}

/// Pushes onto `q` the INSERTs of the keys of `items` (see [`push_padded_inserts`]).
fn push_padded_keys(
    q: &mut QueryBuilder<Sqlite>,
    items: &[(&KeyRecord, &KeyVersionRecord)],
) -> usize {
    super::padded::push_inserts(
        q,
        "keys (instance_id, id, key_ring_id, name, description, tags, object_type, algorithm, \
         bit_length, extractable, imported, state, created_at, created_by, updated_at, \
         activation_at, expires_at, deactivated_at, deleted_at, deleted_by, last_rotated_at, \
         current_version_id, attributes, row_version)",
        items,
        |row, item| {
            let k = item.map(|(k, _)| *k);
            row.push_bind(k.map(|k| k.instance_id.as_str()))
                .push_bind(k.map(|k| k.id.as_str()))
                .push_bind(k.map(|k| k.key_ring_id.as_str()))
                .push_bind(k.map(|k| k.name.as_str()))
                .push_bind(k.and_then(|k| k.description.as_deref()))
                .push_bind(k.map(|k| json_strings(&k.tags)))
                .push_bind(k.map(|k| k.object_type.as_str()))
                .push_bind(k.map(|k| k.algorithm.as_str()))
                .push_bind(k.map(|k| k.bit_length))
                .push_bind(k.map(|k| i64::from(k.extractable)))
                .push_bind(k.map(|k| i64::from(k.imported)))
                .push_bind(k.map(|k| k.state))
                .push_bind(k.map(|k| k.created_at))
                .push_bind(k.map(|k| k.created_by.as_str()))
                .push_bind(k.map(|k| k.updated_at))
                .push_bind(k.and_then(|k| k.activation_at))
                .push_bind(k.and_then(|k| k.expires_at))
                .push_bind(k.and_then(|k| k.deactivated_at))
                .push_bind(k.and_then(|k| k.deleted_at))
                .push_bind(k.and_then(|k| k.deleted_by.as_deref()))
                .push_bind(k.and_then(|k| k.last_rotated_at))
                .push_bind(k.map(|k| k.current_version_id.as_str()))
                .push_bind(k.map(|k| k.attributes.as_str()))
                .push_bind(k.map(|k| k.row_version));
        },
    )
}

/// Pushes onto `q` the INSERTs of `versions` (see [`push_padded_inserts`]).
fn push_padded_versions(q: &mut QueryBuilder<Sqlite>, versions: &[&KeyVersionRecord]) -> usize {
    super::padded::push_inserts(
        q,
        "key_versions (instance_id, key_id, id, seq, sealed, mk_version, created_at)",
        versions,
        |row, v| {
            let v = v.copied();
            row.push_bind(v.map(|v| v.instance_id.as_str()))
                .push_bind(v.map(|v| v.key_id.as_str()))
                .push_bind(v.map(|v| v.id.as_str()))
                .push_bind(v.map(|v| v.seq))
                .push_bind(v.map(|v| v.sealed.as_slice()))
                .push_bind(v.map(|v| v.mk_version))
                .push_bind(v.map(|v| v.created_at));
        },
    )
}

pub(super) async fn get(
    store: &SqliteStore,
    instance_id: &str,
    id: &str,
) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(select_keys!("WHERE k.instance_id = ? AND k.id = ?"))
        .bind(instance_id)
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    row.as_ref().map(rows::key).transpose()
}

pub(super) async fn by_alias(
    store: &SqliteStore,
    instance_id: &str,
    alias: &str,
) -> Result<Option<KeyRecord>> {
    let row = sqlx::query(select_keys!(
        "WHERE k.instance_id = ?1 AND k.id = (SELECT b.key_id FROM key_aliases b ",
        "WHERE b.instance_id = ?1 AND b.alias = ?2)"
    ))
    .bind(instance_id)
    .bind(alias)
    .fetch_optional(&store.reader)
    .await?;
    row.as_ref().map(rows::key).transpose()
}

pub(super) async fn list(
    store: &SqliteStore,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<Vec<KeyRecord>> {
    let mut q = QueryBuilder::<Sqlite>::new(select_keys!(""));
    push_filter(&mut q, instance_id, filter);
    q.push(" ORDER BY ");
    if filter.sort.is_empty() {
        q.push("k.created_at, ");
    }
    for term in &filter.sort {
        q.push(sort_column(term.field));
        q.push(if term.descending { " DESC, " } else { " ASC, " });
    }
    // SQLite: a negative LIMIT means no limit.
    let limit = filter.limit.map_or(-1, saturating_i64);
    q.push("k.id LIMIT ");
    q.push_bind(limit);
    q.push(" OFFSET ");
    q.push_bind(saturating_i64(filter.offset));
    let all = q.build().fetch_all(&store.reader).await?;
    all.iter().map(rows::key).collect()
}

pub(super) async fn count(
    store: &SqliteStore,
    instance_id: &str,
    filter: &KeyFilter,
) -> Result<u64> {
    let mut q = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM keys k ");
    push_filter(&mut q, instance_id, filter);
    let row = q.build().fetch_one(&store.reader).await?;
    let n: i64 = row.try_get(0)?;
    // COUNT(*) is never negative.
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The `WHERE` clause implementing [`KeyFilter`]. Values are bound parameters; column names
/// and operators come from the closed enums of the filter, never from the caller's text.
fn push_filter(q: &mut QueryBuilder<Sqlite>, instance_id: &str, filter: &KeyFilter) {
    q.push("WHERE k.instance_id = ");
    q.push_bind(instance_id.to_owned());
    if let Some(ring) = &filter.key_ring_id {
        q.push(" AND k.key_ring_id = ");
        q.push_bind(ring.clone());
    }
    if let Some(id) = &filter.id {
        q.push(" AND k.id = ");
        q.push_bind(id.clone());
    }
    if let Some(states) = states_json(filter) {
        q.push(" AND k.state IN (SELECT value FROM json_each(");
        q.push_bind(states);
        q.push("))");
    }
    if let Some(extractable) = filter.extractable {
        q.push(" AND k.extractable = ");
        q.push_bind(i64::from(extractable));
    }
    if let Some(after) = &filter.after {
        // A row value: a range of `ix_keys_created`.
        q.push(" AND (k.created_at, k.id) > (");
        q.push_bind(after.created_at);
        q.push(", ");
        q.push_bind(after.id.clone());
        q.push(")");
    }
    if filter.without_kmip_adapter_objects {
        // The text test spares parsing the attributes of keys that cannot carry the tag (a JSON
        // null counts as no tag, as on PostgreSQL).
        q.push(
            " AND (instr(k.attributes, '\"kmip_adapter\"') = 0 \
             OR json_extract(k.attributes, '$.kmip_adapter') IS NULL)",
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
        let push_match = |q: &mut QueryBuilder<Sqlite>, column: &str| {
            if mode.exact {
                q.push(column);
                q.push(" = ");
                q.push_bind(text.clone());
            } else {
                q.push("instr(lower(");
                q.push(column);
                q.push("), lower(");
                q.push_bind(text.clone());
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
        KeySortField::Id => "k.id",
        KeySortField::State => "k.state",
        KeySortField::Extractable => "k.extractable",
        KeySortField::Imported => "k.imported",
        KeySortField::Date(d) => date_column(d),
    }
}

/// Rotation: [`update_in`] and the insert of `version`; the key's new row version.
pub(super) async fn add_version_in(
    conn: &mut Conn,
    key: &KeyRecord,
    version: &KeyVersionRecord,
) -> Result<i64> {
    let row_version = update_in(conn, key).await?;
    insert_versions(conn, &[version]).await?;
    Ok(row_version)
}

pub(super) async fn versions(
    store: &SqliteStore,
    instance_id: &str,
    key_id: &str,
) -> Result<Vec<KeyVersionRecord>> {
    let all = sqlx::query(concat!(
        "SELECT instance_id, key_id, id, seq, sealed, mk_version, created_at FROM key_versions ",
        "WHERE instance_id = ? AND key_id = ? ORDER BY seq"
    ))
    .bind(instance_id)
    .bind(key_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::key_version).collect()
}

pub(super) async fn version(
    store: &SqliteStore,
    instance_id: &str,
    key_id: &str,
    version_id: &str,
) -> Result<Option<KeyVersionRecord>> {
    let row = sqlx::query(concat!(
        "SELECT instance_id, key_id, id, seq, sealed, mk_version, created_at FROM key_versions ",
        "WHERE instance_id = ? AND key_id = ? AND id = ?"
    ))
    .bind(instance_id)
    .bind(key_id)
    .bind(version_id)
    .fetch_optional(&store.reader)
    .await?;
    row.as_ref().map(rows::key_version).transpose()
}

/// Removes a key with its registrations, aliases and versions.
pub(super) async fn purge_in(conn: &mut Conn, instance_id: &str, id: &str) -> Result<()> {
    if !key_exists(conn, instance_id, id).await? {
        return Err(not_found("key", id));
    }
    // Children before parents: the foreign keys are enforced on every statement.
    registrations::delete_for_key_in(conn, instance_id, id).await?;
    for sql in [
        "DELETE FROM key_aliases WHERE instance_id = ? AND key_id = ?",
        "DELETE FROM key_versions WHERE instance_id = ? AND key_id = ?",
        "DELETE FROM keys WHERE instance_id = ? AND id = ?",
    ] {
        sqlx::query(sql)
            .bind(instance_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) async fn versions_below_mk(
    store: &SqliteStore,
    instance_id: &str,
    mk_version: i64,
    limit: u64,
) -> Result<Vec<KeyVersionRecord>> {
    let all = sqlx::query(concat!(
        "SELECT instance_id, key_id, id, seq, sealed, mk_version, created_at FROM key_versions ",
        "WHERE instance_id = ? AND mk_version < ? ORDER BY key_id, seq LIMIT ?"
    ))
    .bind(instance_id)
    .bind(mk_version)
    .bind(saturating_i64(limit))
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::key_version).collect()
}

pub(super) async fn count_below_mk(
    store: &SqliteStore,
    instance_id: &str,
    mk_version: i64,
) -> Result<u64> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM key_versions WHERE instance_id = ? AND mk_version < ?")
            .bind(instance_id)
            .bind(mk_version)
            .fetch_one(&store.reader)
            .await?;
    let n: i64 = row.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Re-seal: optimistic on the stored `mk_version` (the version's own "row version").
pub(super) async fn reseal(
    store: &SqliteStore,
    v: &KeyVersionRecord,
    expected_mk_version: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE key_versions SET sealed = ?, mk_version = ? \
         WHERE instance_id = ? AND key_id = ? AND id = ? AND mk_version = ?",
    )
    .bind(&v.sealed)
    .bind(v.mk_version)
    .bind(&v.instance_id)
    .bind(&v.key_id)
    .bind(&v.id)
    .bind(expected_mk_version)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        let exists = sqlx::query(
            "SELECT 1 FROM key_versions WHERE instance_id = ? AND key_id = ? AND id = ?",
        )
        .bind(&v.instance_id)
        .bind(&v.key_id)
        .bind(&v.id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        return Err(stale("key version", &v.id, exists, expected_mk_version));
    }
    tx.commit().await?;
    Ok(())
}

/// The optimistic update of a key row and its alias set, on `conn` (in a write transaction);
/// the new row version.
pub(super) async fn update_in(conn: &mut Conn, key: &KeyRecord) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE keys SET key_ring_id = ?, name = ?, description = ?, tags = ?, extractable = ?, \
         state = ?, updated_at = ?, activation_at = ?, expires_at = ?, deactivated_at = ?, \
         deleted_at = ?, deleted_by = ?, last_rotated_at = ?, current_version_id = ?, \
         attributes = ?, row_version = row_version + 1 \
         WHERE instance_id = ? AND id = ? AND row_version = ?",
    )
    .bind(&key.key_ring_id)
    .bind(&key.name)
    .bind(&key.description)
    .bind(json_strings(&key.tags))
    .bind(i64::from(key.extractable))
    .bind(key.state)
    .bind(key.updated_at)
    .bind(key.activation_at)
    .bind(key.expires_at)
    .bind(key.deactivated_at)
    .bind(key.deleted_at)
    .bind(&key.deleted_by)
    .bind(key.last_rotated_at)
    .bind(&key.current_version_id)
    .bind(&key.attributes)
    .bind(&key.instance_id)
    .bind(&key.id)
    .bind(key.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        // fk_keys_ring: moved to a ring that does not exist.
        Some(Violation::ForeignKey) => not_found("key ring", &key.key_ring_id),
        _ => e.into(),
    })?;
    if done.rows_affected() == 0 {
        let exists = key_exists(conn, &key.instance_id, &key.id).await?;
        return Err(stale("key", &key.id, exists, key.row_version));
    }
    sqlx::query("DELETE FROM key_aliases WHERE instance_id = ? AND key_id = ?")
        .bind(&key.instance_id)
        .bind(&key.id)
        .execute(&mut *conn)
        .await?;
    insert_aliases(conn, key).await?;
    Ok(key.row_version + 1)
}

async fn insert_aliases(conn: &mut Conn, key: &KeyRecord) -> Result<()> {
    for (position, alias) in (0_i64..).zip(&key.aliases) {
        sqlx::query(
            "INSERT INTO key_aliases (instance_id, key_id, position, alias) VALUES (?, ?, ?, ?)",
        )
        .bind(&key.instance_id)
        .bind(&key.id)
        .bind(position)
        .bind(alias)
        .execute(&mut *conn)
        .await
        .map_err(|e| match violation(&e) {
            // uq_key_aliases (the primary key cannot collide: positions are fresh).
            Some(Violation::Unique) => already_exists("key alias", alias),
            _ => e.into(),
        })?;
    }
    Ok(())
}

/// Inserts versions in one round trip ([`push_padded_versions`]); errors name the first.
async fn insert_versions(conn: &mut Conn, versions: &[&KeyVersionRecord]) -> Result<()> {
    let Some(first) = versions.first() else {
        return Ok(());
    };
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_padded_versions(&mut q, versions);
    q.build()
        .execute(&mut *conn)
        .await
        .map_err(|e| match violation(&e) {
            // pk_key_versions (id) or uq_key_versions_seq (seq).
            Some(Violation::Unique) => already_exists("key version", &first.id),
            Some(Violation::ForeignKey) => not_found("key", &first.key_id),
            None => StoreError::from(e),
        })?;
    Ok(())
}

pub(super) async fn key_exists(conn: &mut Conn, instance_id: &str, id: &str) -> Result<bool> {
    let row = sqlx::query("SELECT 1 FROM keys WHERE instance_id = ? AND id = ?")
        .bind(instance_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// The wanted states as a JSON array, `None` for "every state".
fn states_json(filter: &KeyFilter) -> Option<String> {
    if filter.states.is_empty() {
        return None;
    }
    // Serializing integers cannot fail.
    serde_json::to_string(&filter.states).ok()
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
