//! Registrations: cloud resources (by CRN) protected by a key.

use super::rows::{self, Violation, not_found, violation};
use super::{Conn, SqliteStore};
use crate::{RegistrationRecord, Result};

/// `SELECT <every column> FROM registrations <tail>`, as one literal.
macro_rules! select_registrations {
    ($tail:literal) => {
        concat!(
            "SELECT instance_id, key_id, resource_crn, description, registration_metadata, ",
            "prevent_key_deletion, key_version_id, created_by, created_at, updated_by, ",
            "updated_at FROM registrations ",
            $tail
        )
    };
}

/// The registrations of one key, or of every key of the instance, ordered by key then CRN.
pub(super) async fn list(
    store: &SqliteStore,
    instance_id: &str,
    key_id: Option<&str>,
) -> Result<Vec<RegistrationRecord>> {
    let all = sqlx::query(select_registrations!(
        "WHERE instance_id = ?1 AND (?2 IS NULL OR key_id = ?2) ORDER BY key_id, resource_crn"
    ))
    .bind(instance_id)
    .bind(key_id)
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::registration).collect()
}

/// [`crate::Store::registrations_after`]: a range of the primary key.
pub(super) async fn after(
    store: &SqliteStore,
    instance_id: &str,
    after: Option<(&str, &str)>,
    limit: u64,
) -> Result<Vec<RegistrationRecord>> {
    let (key_id, crn) = after.unzip();
    let page = sqlx::query(select_registrations!(
        "WHERE instance_id = ?1 AND (?2 IS NULL OR (key_id, resource_crn) > (?2, ?3)) \
         ORDER BY key_id, resource_crn LIMIT ?4"
    ))
    .bind(instance_id)
    .bind(key_id)
    .bind(crn)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&store.reader)
    .await?;
    page.iter().map(rows::registration).collect()
}

/// Inserts `r`, or replaces every field of the registration with the same
/// `(instance_id, key_id, resource_crn)`. [`crate::StoreError::NotFound`] if the key does not
/// exist.
pub(super) async fn put_in(conn: &mut Conn, r: &RegistrationRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO registrations (instance_id, key_id, resource_crn, description, \
         registration_metadata, prevent_key_deletion, key_version_id, created_by, created_at, \
         updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (instance_id, key_id, resource_crn) DO UPDATE SET \
         description = excluded.description, \
         registration_metadata = excluded.registration_metadata, \
         prevent_key_deletion = excluded.prevent_key_deletion, \
         key_version_id = excluded.key_version_id, created_by = excluded.created_by, \
         created_at = excluded.created_at, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at",
    )
    .bind(&r.instance_id)
    .bind(&r.key_id)
    .bind(&r.resource_crn)
    .bind(&r.description)
    .bind(&r.registration_metadata)
    .bind(i64::from(r.prevent_key_deletion))
    .bind(&r.key_version_id)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(&r.updated_by)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match violation(&e) {
        // fk_registrations_key.
        Some(Violation::ForeignKey) => not_found("key", &r.key_id),
        _ => e.into(),
    })?;
    Ok(())
}

/// Deletes one registration; [`crate::StoreError::NotFound`] (`"registration"`, its CRN) if
/// absent.
pub(super) async fn delete_in(
    conn: &mut Conn,
    instance_id: &str,
    key_id: &str,
    resource_crn: &str,
) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM registrations WHERE instance_id = ? AND key_id = ? AND resource_crn = ?",
    )
    .bind(instance_id)
    .bind(key_id)
    .bind(resource_crn)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(not_found("registration", resource_crn));
    }
    Ok(())
}

/// Deletes every registration of a key (its purge).
pub(super) async fn delete_for_key_in(
    conn: &mut Conn,
    instance_id: &str,
    key_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM registrations WHERE instance_id = ? AND key_id = ?")
        .bind(instance_id)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
