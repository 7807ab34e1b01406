use thiserror::Error;

/// Errors of the store layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named row does not exist.
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    /// A row with that identity (or a unique field such as an alias) exists already.
    #[error("{what} already exists: {id}")]
    AlreadyExists { what: &'static str, id: String },
    /// Optimistic concurrency: the row changed since it was read.
    #[error("{what} {id} was changed concurrently (expected row version {expected})")]
    Conflict {
        what: &'static str,
        id: String,
        expected: i64,
    },
    /// The row cannot be removed while others refer to it.
    #[error("{what} {id} is in use")]
    InUse { what: &'static str, id: String },
    /// A stored row cannot be read back as a record (a damaged or hand-edited database).
    #[error("corrupted row in {table} (id {id}): {detail}")]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },
    /// The database cannot be opened or created at the given location.
    #[error("cannot open database at {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    /// A schema migration failed.
    #[error("migration {version} ({name}) failed")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database holds a newer schema than this build knows.
    #[error("database schema version {found} is newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    /// Any other database error.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}
