//! Keystores and their token objects (see [`crate::keystores`]), on PostgreSQL. Constraint
//! violations are told apart by constraint name (migration 0002).

use keyfort_crypto::digest::sha256;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::rows::{already_exists, constraint, not_found};
use crate::keystores::{encode_attributes, type_to_column};
use crate::row_read::{self, object_columns};
use crate::shared::stale;
use crate::{
    Applied, KeystoreObjectRecord, KeystoreRecord, KeystoreWrite, ObjectQuery, Result, StoreError,
};

type Conn = sqlx::PgConnection;

/// One keystore write, inside the caller's transaction.
pub(super) async fn apply_in(conn: &mut Conn, write: &KeystoreWrite) -> Result<Applied> {
    Ok(match write {
        KeystoreWrite::Insert(k) => {
            insert_in(conn, k).await?;
            Applied::Done
        }
        KeystoreWrite::Delete {
            instance_id,
            id,
            force,
        } => {
            delete_in(conn, instance_id, id, *force).await?;
            Applied::Done
        }
        KeystoreWrite::InsertObject(o) => {
            insert_object_in(conn, o).await?;
            Applied::Done
        }
        KeystoreWrite::UpdateObject(o) => Applied::RowVersion(update_object_in(conn, o).await?),
        KeystoreWrite::DeleteObject {
            instance_id,
            keystore_id,
            id,
            row_version,
        } => {
            delete_object_in(conn, instance_id, keystore_id, id, *row_version).await?;
            Applied::Done
        }
    })
}

async fn insert_in(conn: &mut Conn, k: &KeystoreRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keystores (instance_id, id, name, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&k.instance_id)
    .bind(&k.id)
    .bind(&k.name)
    .bind(k.created_at)
    .bind(&k.created_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_keystores" | "uq_keystores_name") => already_exists("keystore", &k.name),
        Some("fk_keystores_instance") => not_found("instance", &k.instance_id),
        _ => e.into(),
    })?;
    Ok(())
}

async fn delete_in(conn: &mut Conn, instance_id: &str, id: &str, force: bool) -> Result<()> {
    // Locks the keystore row: an object insert into it (its foreign key check) waits for us.
    let exists =
        sqlx::query("SELECT 1 FROM keystores WHERE instance_id = $1 AND id = $2 FOR UPDATE")
            .bind(instance_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
    if !exists {
        return Err(not_found("keystore", id));
    }
    if !force {
        let any = sqlx::query(
            "SELECT 1 FROM keystore_objects WHERE instance_id = $1 AND keystore_id = $2 LIMIT 1",
        )
        .bind(instance_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if any.is_some() {
            return Err(StoreError::InUse {
                what: "keystore",
                id: id.to_owned(),
            });
        }
    }
    for sql in [
        "DELETE FROM keystore_attributes WHERE instance_id = $1 AND keystore_id = $2",
        "DELETE FROM keystore_objects WHERE instance_id = $1 AND keystore_id = $2",
        "DELETE FROM keystores WHERE instance_id = $1 AND id = $2",
    ] {
        sqlx::query(sql)
            .bind(instance_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn insert_object_in(conn: &mut Conn, o: &KeystoreObjectRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keystore_objects (instance_id, keystore_id, id, blob, attributes, \
         created_at, updated_at, row_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&o.instance_id)
    .bind(&o.keystore_id)
    .bind(&o.id)
    .bind(&o.blob)
    .bind(encode_attributes(&o.attributes))
    .bind(o.created_at)
    .bind(o.updated_at)
    .bind(o.row_version)
    .execute(&mut *conn)
    .await
    .map_err(|e| match constraint(&e) {
        Some("pk_keystore_objects") => already_exists("keystore object", &o.id),
        Some("fk_keystore_objects_keystore") => not_found("keystore", &o.keystore_id),
        _ => e.into(),
    })?;
    insert_attributes_in(conn, o).await
}

async fn insert_attributes_in(conn: &mut Conn, o: &KeystoreObjectRecord) -> Result<()> {
    for a in &o.attributes {
        sqlx::query(
            "INSERT INTO keystore_attributes (instance_id, keystore_id, object_id, attr_type, \
             digest, value) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&o.instance_id)
        .bind(&o.keystore_id)
        .bind(&o.id)
        .bind(type_to_column(a.attr_type))
        .bind(sha256(&a.value).to_vec())
        .bind(&a.value)
        .execute(&mut *conn)
        .await
        .map_err(|e| match constraint(&e) {
            Some("pk_keystore_attributes") => already_exists("keystore object attribute", &o.id),
            _ => e.into(),
        })?;
    }
    Ok(())
}

async fn delete_attributes_in(
    conn: &mut Conn,
    instance_id: &str,
    keystore_id: &str,
    id: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM keystore_attributes \
         WHERE instance_id = $1 AND keystore_id = $2 AND object_id = $3",
    )
    .bind(instance_id)
    .bind(keystore_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn object_exists(
    conn: &mut Conn,
    instance_id: &str,
    keystore_id: &str,
    id: &str,
) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM keystore_objects WHERE instance_id = $1 AND keystore_id = $2 AND id = $3",
    )
    .bind(instance_id)
    .bind(keystore_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

async fn update_object_in(conn: &mut Conn, o: &KeystoreObjectRecord) -> Result<i64> {
    let done = sqlx::query(
        "UPDATE keystore_objects SET blob = $1, attributes = $2, updated_at = $3, \
         row_version = row_version + 1 \
         WHERE instance_id = $4 AND keystore_id = $5 AND id = $6 AND row_version = $7",
    )
    .bind(&o.blob)
    .bind(encode_attributes(&o.attributes))
    .bind(o.updated_at)
    .bind(&o.instance_id)
    .bind(&o.keystore_id)
    .bind(&o.id)
    .bind(o.row_version)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        let exists = object_exists(conn, &o.instance_id, &o.keystore_id, &o.id).await?;
        return Err(stale("keystore object", &o.id, exists, o.row_version));
    }
    delete_attributes_in(conn, &o.instance_id, &o.keystore_id, &o.id).await?;
    insert_attributes_in(conn, o).await?;
    Ok(o.row_version + 1)
}

async fn delete_object_in(
    conn: &mut Conn,
    instance_id: &str,
    keystore_id: &str,
    id: &str,
    row_version: Option<i64>,
) -> Result<()> {
    // The row lock holds concurrent updates and deletes until this transaction ends.
    let stored: Option<i64> = sqlx::query_scalar(
        "SELECT row_version FROM keystore_objects \
         WHERE instance_id = $1 AND keystore_id = $2 AND id = $3 FOR UPDATE",
    )
    .bind(instance_id)
    .bind(keystore_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match (stored, row_version) {
        (None, _) => return Err(missing_object(conn, instance_id, keystore_id, id).await),
        (Some(v), Some(expected)) if v != expected => {
            return Err(stale("keystore object", id, true, expected));
        }
        _ => {}
    }
    delete_attributes_in(conn, instance_id, keystore_id, id).await?;
    sqlx::query(
        "DELETE FROM keystore_objects WHERE instance_id = $1 AND keystore_id = $2 AND id = $3",
    )
    .bind(instance_id)
    .bind(keystore_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---- reads ----------------------------------------------------------------------------------

pub(super) async fn keystore(
    pool: &PgPool,
    instance_id: &str,
    id: &str,
) -> Result<Option<KeystoreRecord>> {
    sqlx::query(
        "SELECT instance_id, id, name, created_at, created_by FROM keystores \
         WHERE instance_id = $1 AND id = $2",
    )
    .bind(instance_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(row_read::keystore)
    .transpose()
}

pub(super) async fn list(pool: &PgPool, instance_id: &str) -> Result<Vec<KeystoreRecord>> {
    let rows = sqlx::query(
        "SELECT instance_id, id, name, created_at, created_by FROM keystores \
         WHERE instance_id = $1 ORDER BY name",
    )
    .bind(instance_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row_read::keystore).collect()
}

pub(super) async fn count_objects(
    pool: &PgPool,
    instance_id: &str,
    keystore_id: &str,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM keystore_objects WHERE instance_id = $1 AND keystore_id = $2",
    )
    .bind(instance_id)
    .bind(keystore_id)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn object(
    pool: &PgPool,
    instance_id: &str,
    keystore_id: &str,
    id: &str,
) -> Result<Option<KeystoreObjectRecord>> {
    sqlx::query(concat!(
        "SELECT ",
        object_columns!(),
        " FROM keystore_objects o WHERE o.instance_id = $1 AND o.keystore_id = $2 AND o.id = $3"
    ))
    .bind(instance_id)
    .bind(keystore_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(row_read::keystore_object)
    .transpose()
}

/// One statement. Without a template, the objects' primary key gives them in id order. With
/// one, the first template attribute drives the search through `ix_keystore_attributes_value`
/// (type, digest, then object id: the page comes out of the index in id order), and each other
/// attribute is a primary-key lookup of the same object; the caller puts the most selective
/// attribute first.
pub(super) async fn find(
    pool: &PgPool,
    instance_id: &str,
    keystore_id: &str,
    query: &ObjectQuery,
) -> Result<Vec<KeystoreObjectRecord>> {
    let mut q = QueryBuilder::<Postgres>::new(concat!("SELECT ", object_columns!(), " FROM "));
    let Some((first, rest)) = query.template.split_first() else {
        q.push("keystore_objects o WHERE o.instance_id = ");
        q.push_bind(instance_id);
        q.push(" AND o.keystore_id = ");
        q.push_bind(keystore_id);
        if let Some(after) = &query.after {
            q.push(" AND o.id > ");
            q.push_bind(after.clone());
        }
        q.push(" ORDER BY o.id LIMIT ");
        q.push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows = q.build().fetch_all(pool).await?;
        return rows.iter().map(row_read::keystore_object).collect();
    };
    q.push(
        "keystore_attributes a0 \
         JOIN keystore_objects o ON o.instance_id = a0.instance_id \
         AND o.keystore_id = a0.keystore_id AND o.id = a0.object_id",
    );
    for (i, a) in rest.iter().enumerate() {
        let n = i + 1;
        q.push(format!(
            " JOIN keystore_attributes a{n} ON a{n}.instance_id = a0.instance_id \
             AND a{n}.keystore_id = a0.keystore_id AND a{n}.object_id = a0.object_id \
             AND a{n}.attr_type = "
        ));
        q.push_bind(type_to_column(a.attr_type));
        q.push(format!(" AND a{n}.digest = "));
        q.push_bind(sha256(&a.value).to_vec());
        q.push(format!(" AND a{n}.value = "));
        q.push_bind(a.value.clone());
    }
    q.push(" WHERE a0.instance_id = ");
    q.push_bind(instance_id);
    q.push(" AND a0.keystore_id = ");
    q.push_bind(keystore_id);
    q.push(" AND a0.attr_type = ");
    q.push_bind(type_to_column(first.attr_type));
    q.push(" AND a0.digest = ");
    q.push_bind(sha256(&first.value).to_vec());
    q.push(" AND a0.value = ");
    q.push_bind(first.value.clone());
    if let Some(after) = &query.after {
        q.push(" AND a0.object_id > ");
        q.push_bind(after.clone());
    }
    q.push(" ORDER BY a0.object_id LIMIT ");
    q.push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(row_read::keystore_object).collect()
}

/// The [`StoreError::NotFound`] of an object that is not there (see
/// [`crate::shared::missing_keystore_object`]).
async fn missing_object(
    conn: &mut Conn,
    instance_id: &str,
    keystore_id: &str,
    id: &str,
) -> StoreError {
    let keystore =
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM keystores WHERE instance_id = $1 AND id = $2")
            .bind(instance_id)
            .bind(keystore_id)
            .fetch_optional(&mut *conn)
            .await
            .map(|found| found.is_some());
    crate::shared::missing_keystore_object(keystore, keystore_id, id)
}
