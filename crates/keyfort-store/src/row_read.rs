//! Record readers both backends share: a row of either database gives the same record, and a
//! column that does not decode is a [`StoreError::Corrupt`] naming the table and the row's id.

use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use crate::keystores::decode_attributes;
use crate::{
    KeystoreObjectRecord, KeystoreRecord, KmipAdapterRecord, KmipCertificateRecord, Result,
    StoreError,
};

/// `SELECT <the columns [`kmip_adapter`] reads> FROM kmip_adapters <tail>`, for either backend.
macro_rules! select_adapters {
    ($tail:literal) => {
        concat!(
            "SELECT instance_id, id, name, description, profile, crk_id, created_at, ",
            "created_by, updated_at, updated_by FROM kmip_adapters ",
            $tail
        )
    };
}
pub(crate) use select_adapters;

/// `SELECT <the columns [`kmip_certificate`] reads> FROM kmip_certificates <tail>`.
macro_rules! select_certificates {
    ($tail:literal) => {
        concat!(
            "SELECT instance_id, adapter_id, id, name, fingerprint, certificate, created_at, ",
            "created_by FROM kmip_certificates ",
            $tail
        )
    };
}
pub(crate) use select_certificates;

/// The columns of `keystore_objects o` that [`keystore_object`] reads.
macro_rules! object_columns {
    () => {
        "o.instance_id, o.keystore_id, o.id, o.blob, o.attributes, o.created_at, o.updated_at, \
         o.row_version"
    };
}
pub(crate) use object_columns;

/// A Rust type a column of database `DB` decodes to.
pub(crate) trait Column<DB: Database>: for<'a> Decode<'a, DB> + Type<DB> {}

impl<DB: Database, T: for<'a> Decode<'a, DB> + Type<DB>> Column<DB> for T {}

/// Column `column` of a row of `table`.
pub(crate) fn cell<R, T>(row: &R, table: &'static str, column: &'static str) -> Result<T>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    T: Column<R::Database>,
    String: Column<R::Database>,
{
    row.try_get::<T, _>(column)
        .map_err(|e| StoreError::Corrupt {
            table,
            id: row
                .try_get::<String, _>("id")
                .unwrap_or_else(|_| "<unreadable>".to_owned()),
            detail: format!("column {column}: {e}"),
        })
}

/// Readers generic over the backend's row, with the column types the records need.
macro_rules! readers {
    ($($(#[$doc:meta])* fn $name:ident($row:ident) -> $record:ty $body:block)+) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name<R>($row: &R) -> Result<$record>
            where
                R: Row,
                for<'c> &'c str: ColumnIndex<R>,
                String: Column<R::Database>,
                Option<String>: Column<R::Database>,
                i64: Column<R::Database>,
                Vec<u8>: Column<R::Database>,
            {
                $body
            }
        )+
    };
}

readers! {
    fn kmip_adapter(row) -> KmipAdapterRecord {
        let t = "kmip_adapters";
        Ok(KmipAdapterRecord {
            instance_id: cell(row, t, "instance_id")?,
            id: cell(row, t, "id")?,
            name: cell(row, t, "name")?,
            description: cell(row, t, "description")?,
            profile: cell(row, t, "profile")?,
            crk_id: cell(row, t, "crk_id")?,
            created_at: cell(row, t, "created_at")?,
            created_by: cell(row, t, "created_by")?,
            updated_at: cell(row, t, "updated_at")?,
            updated_by: cell(row, t, "updated_by")?,
        })
    }

    fn kmip_certificate(row) -> KmipCertificateRecord {
        let t = "kmip_certificates";
        Ok(KmipCertificateRecord {
            instance_id: cell(row, t, "instance_id")?,
            adapter_id: cell(row, t, "adapter_id")?,
            id: cell(row, t, "id")?,
            name: cell(row, t, "name")?,
            fingerprint: cell(row, t, "fingerprint")?,
            certificate: cell(row, t, "certificate")?,
            created_at: cell(row, t, "created_at")?,
            created_by: cell(row, t, "created_by")?,
        })
    }

    fn keystore(row) -> KeystoreRecord {
        let t = "keystores";
        Ok(KeystoreRecord {
            instance_id: cell(row, t, "instance_id")?,
            id: cell(row, t, "id")?,
            name: cell(row, t, "name")?,
            created_at: cell(row, t, "created_at")?,
            created_by: cell(row, t, "created_by")?,
        })
    }

    /// A token object, with its attributes decoded.
    fn keystore_object(row) -> KeystoreObjectRecord {
        let t = "keystore_objects";
        let id: String = cell(row, t, "id")?;
        let encoded: Vec<u8> = cell(row, t, "attributes")?;
        Ok(KeystoreObjectRecord {
            instance_id: cell(row, t, "instance_id")?,
            keystore_id: cell(row, t, "keystore_id")?,
            attributes: decode_attributes(&id, &encoded)?,
            id,
            blob: cell(row, t, "blob")?,
            created_at: cell(row, t, "created_at")?,
            updated_at: cell(row, t, "updated_at")?,
            row_version: cell(row, t, "row_version")?,
        })
    }
}
