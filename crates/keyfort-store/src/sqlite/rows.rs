//! Decoding rows into records, and mapping constraint violations to [`StoreError`]s.
//!
//! A row that cannot be read back as a record (wrong type, NULL where a value is required, a
//! boolean other than 0/1, a negative size, tags that are not a JSON array of strings) is
//! reported as [`StoreError::Corrupt`] naming its table and id; decoding never panics.

use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, Type};

pub(super) use crate::chain::HASH_LEN;
pub(super) use crate::shared::{already_exists, json_strings, not_found};
use crate::{
    ApiKeyRecord, InstanceRecord, InstanceSecretRecord, KeyRecord, KeyRingRecord, KeyVersionRecord,
    PrincipalRecord, RegistrationRecord, Result, StoreError,
};

/// A constraint violation reported by the database, from its error code (never its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Violation {
    Unique,
    ForeignKey,
}

/// Which constraint, if any, `e` violated.
pub(super) fn violation(e: &sqlx::Error) -> Option<Violation> {
    match e {
        sqlx::Error::Database(d) => match d.kind() {
            ErrorKind::UniqueViolation => Some(Violation::Unique),
            ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the columns of one row of `table`, turning every failure into [`StoreError::Corrupt`].
struct Cells<'r> {
    row: &'r SqliteRow,
    table: &'static str,
    id: String,
}

impl<'r> Cells<'r> {
    fn new(row: &'r SqliteRow, table: &'static str) -> Self {
        let id = row
            .try_get::<String, _>("id")
            .unwrap_or_else(|_| "<unreadable>".to_owned());
        Self { row, table, id }
    }

    /// For tables without an `id` column: the row is named `<instance_id>/<key>`, where `key`
    /// is the rest of its primary key.
    fn keyed(row: &'r SqliteRow, table: &'static str, key: &str) -> Self {
        let instance_id = row
            .try_get::<String, _>("instance_id")
            .unwrap_or_else(|_| "<unreadable>".to_owned());
        Self {
            row,
            table,
            id: format!("{instance_id}/{key}"),
        }
    }

    fn corrupt(&self, column: &str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            id: self.id.clone(),
            detail: format!("column {column}: {detail}"),
        }
    }

    fn get<T>(&self, column: &'static str) -> Result<T>
    where
        T: for<'a> Decode<'a, Sqlite> + Type<Sqlite>,
    {
        self.row
            .try_get::<T, _>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    fn flag(&self, column: &'static str) -> Result<bool> {
        match self.get::<i64>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.corrupt(column, format_args!("{v} is not a boolean (0 or 1)"))),
        }
    }

    fn at_least(&self, column: &'static str, min: i64) -> Result<i64> {
        let v = self.get::<i64>(column)?;
        if v < min {
            return Err(self.corrupt(column, format_args!("{v} is below {min}")));
        }
        Ok(v)
    }

    /// A JSON array of strings.
    fn strings(&self, column: &'static str) -> Result<Vec<String>> {
        let text = self.get::<String>(column)?;
        serde_json::from_str(&text)
            .map_err(|e| self.corrupt(column, format_args!("not a JSON array of strings: {e}")))
    }
}

pub(super) fn instance(row: &SqliteRow) -> Result<InstanceRecord> {
    let c = Cells::new(row, "instances");
    Ok(InstanceRecord {
        id: c.get("id")?,
        name: c.get("name")?,
        state: c.get("state")?,
        mk_version: c.at_least("mk_version", 0)?,
        unseal_method: c.get("unseal_method")?,
        mk_check_value: c.get("mk_check_value")?,
        unseal_config: c.get("unseal_config")?,
        created_at: c.get("created_at")?,
        updated_at: c.get("updated_at")?,
        row_version: c.get("row_version")?,
    })
}

/// The `policies` of a row of `instances` selected with its `id`.
pub(super) fn instance_policies(row: &SqliteRow) -> Result<String> {
    Cells::new(row, "instances").get("policies")
}

pub(super) fn key_ring(row: &SqliteRow) -> Result<KeyRingRecord> {
    let c = Cells::new(row, "key_rings");
    Ok(KeyRingRecord {
        instance_id: c.get("instance_id")?,
        id: c.get("id")?,
        created_at: c.get("created_at")?,
        created_by: c.get("created_by")?,
    })
}

/// A row of `keys` selected with its aliases as a JSON array in column `aliases`.
pub(super) fn key(row: &SqliteRow) -> Result<KeyRecord> {
    let c = Cells::new(row, "keys");
    Ok(KeyRecord {
        instance_id: c.get("instance_id")?,
        id: c.get("id")?,
        key_ring_id: c.get("key_ring_id")?,
        name: c.get("name")?,
        description: c.get("description")?,
        tags: c.strings("tags")?,
        aliases: c.strings("aliases")?,
        object_type: c.get("object_type")?,
        algorithm: c.get("algorithm")?,
        bit_length: c.at_least("bit_length", 0)?,
        extractable: c.flag("extractable")?,
        imported: c.flag("imported")?,
        state: c.get("state")?,
        created_at: c.get("created_at")?,
        created_by: c.get("created_by")?,
        updated_at: c.get("updated_at")?,
        activation_at: c.get("activation_at")?,
        expires_at: c.get("expires_at")?,
        deactivated_at: c.get("deactivated_at")?,
        deleted_at: c.get("deleted_at")?,
        deleted_by: c.get("deleted_by")?,
        last_rotated_at: c.get("last_rotated_at")?,
        current_version_id: c.get("current_version_id")?,
        attributes: c.get("attributes")?,
        row_version: c.get("row_version")?,
    })
}

pub(super) fn key_version(row: &SqliteRow) -> Result<KeyVersionRecord> {
    let c = Cells::new(row, "key_versions");
    Ok(KeyVersionRecord {
        instance_id: c.get("instance_id")?,
        key_id: c.get("key_id")?,
        id: c.get("id")?,
        seq: c.at_least("seq", 1)?,
        sealed: c.get("sealed")?,
        mk_version: c.at_least("mk_version", 0)?,
        created_at: c.get("created_at")?,
    })
}

pub(super) fn principal(row: &SqliteRow) -> Result<PrincipalRecord> {
    let c = Cells::new(row, "principals");
    Ok(PrincipalRecord {
        id: c.get("id")?,
        instance_id: c.get("instance_id")?,
        name: c.get("name")?,
        kind: c.get("kind")?,
        roles: c.get("roles")?,
        disabled: c.flag("disabled")?,
        created_at: c.get("created_at")?,
        updated_at: c.get("updated_at")?,
        row_version: c.get("row_version")?,
    })
}

pub(super) fn api_key(row: &SqliteRow) -> Result<ApiKeyRecord> {
    let c = Cells::new(row, "api_keys");
    Ok(ApiKeyRecord {
        id: c.get("id")?,
        principal_id: c.get("principal_id")?,
        name: c.get("name")?,
        hash: c.get("hash")?,
        created_at: c.get("created_at")?,
        expires_at: c.get("expires_at")?,
        revoked_at: c.get("revoked_at")?,
        row_version: c.get("row_version")?,
    })
}

pub(super) fn instance_secret(row: &SqliteRow) -> Result<InstanceSecretRecord> {
    let name = row
        .try_get::<String, _>("name")
        .unwrap_or_else(|_| "<unreadable>".to_owned());
    let c = Cells::keyed(row, "instance_secrets", &name);
    Ok(InstanceSecretRecord {
        instance_id: c.get("instance_id")?,
        name: c.get("name")?,
        sealed: c.get("sealed")?,
        mk_version: c.at_least("mk_version", 0)?,
        created_at: c.get("created_at")?,
    })
}

pub(super) fn registration(row: &SqliteRow) -> Result<RegistrationRecord> {
    let name = match (
        row.try_get::<String, _>("key_id"),
        row.try_get::<String, _>("resource_crn"),
    ) {
        (Ok(key_id), Ok(crn)) => format!("{key_id}/{crn}"),
        _ => "<unreadable>".to_owned(),
    };
    let c = Cells::keyed(row, "registrations", &name);
    Ok(RegistrationRecord {
        instance_id: c.get("instance_id")?,
        key_id: c.get("key_id")?,
        resource_crn: c.get("resource_crn")?,
        description: c.get("description")?,
        registration_metadata: c.get("registration_metadata")?,
        prevent_key_deletion: c.flag("prevent_key_deletion")?,
        key_version_id: c.get("key_version_id")?,
        created_by: c.get("created_by")?,
        created_at: c.get("created_at")?,
        updated_by: c.get("updated_by")?,
        updated_at: c.get("updated_at")?,
    })
}
