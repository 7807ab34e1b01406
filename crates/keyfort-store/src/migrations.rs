//! Versioned schema migrations, one ordered list per backend.
//!
//! The shape is shared by every backend: a migration is `(version, name, sql)`, embedded in the
//! binary; the database records what it has applied in
//! `schema_migrations(version, name, applied_at)`; each pending migration runs in its own
//! transaction together with the insert of its `schema_migrations` row, so a crash leaves either
//! all of it or none. A database whose highest version is above the last one this build knows is
//! refused ([`StoreError::SchemaTooNew`]): an older binary must not write to a newer schema.
//!
//! Migrations are append-only: once released, a file is never edited; a change is a new file.

use crate::{Result, StoreError};

/// One schema migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: i64,
    pub name: &'static str,
    /// One or more statements.
    pub sql: &'static str,
}

/// The SQLite migrations, in order.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "kyok_audit",
        sql: include_str!("migrations/sqlite/0002_kyok_audit.sql"),
    },
    Migration {
        version: 3,
        name: "kms",
        sql: include_str!("migrations/sqlite/0003_kms.sql"),
    },
    Migration {
        version: 4,
        name: "keystores",
        sql: include_str!("migrations/sqlite/0004_keystores.sql"),
    },
    Migration {
        version: 5,
        name: "kmip_adapters",
        sql: include_str!("migrations/sqlite/0005_kmip_adapters.sql"),
    },
    Migration {
        version: 6,
        name: "write_path",
        sql: include_str!("migrations/sqlite/0006_write_path.sql"),
    },
    Migration {
        version: 7,
        name: "audit_blocks",
        sql: include_str!("migrations/sqlite/0007_audit_blocks.sql"),
    },
];

/// The PostgreSQL migrations, in order.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "keystores",
        sql: include_str!("migrations/postgres/0002_keystores.sql"),
    },
    Migration {
        version: 3,
        name: "kmip_adapters",
        sql: include_str!("migrations/postgres/0003_kmip_adapters.sql"),
    },
    Migration {
        version: 4,
        name: "write_path",
        sql: include_str!("migrations/postgres/0004_write_path.sql"),
    },
];

/// The migrations of `all` still to apply to a database at schema version `current` (0 for a
/// fresh database), or [`StoreError::SchemaTooNew`].
pub(crate) fn pending(all: &'static [Migration], current: i64) -> Result<&'static [Migration]> {
    let supported = all.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    let first = all.partition_point(|m| m.version <= current);
    Ok(&all[first..])
}

/// Unix milliseconds now, for `applied_at`.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_versions_start_at_one_and_increase_by_one() {
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
            assert!(!m.sql.trim().is_empty(), "migration {} is empty", m.name);
        }
    }

    #[test]
    fn postgres_versions_start_at_one_and_increase_by_one() {
        for (i, m) in POSTGRES.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
            assert!(!m.sql.trim().is_empty(), "migration {} is empty", m.name);
        }
    }

    #[test]
    fn pending_skips_applied_and_refuses_newer() {
        const ALL: &[Migration] = &[
            Migration {
                version: 1,
                name: "a",
                sql: "x",
            },
            Migration {
                version: 2,
                name: "b",
                sql: "y",
            },
        ];
        assert_eq!(pending(ALL, 0).map(<[_]>::len).ok(), Some(2));
        assert_eq!(pending(ALL, 1).map(|p| p[0].name).ok(), Some("b"));
        assert_eq!(pending(ALL, 2).map(<[_]>::len).ok(), Some(0));
        assert!(matches!(
            pending(ALL, 3),
            Err(StoreError::SchemaTooNew {
                found: 3,
                supported: 2
            })
        ));
    }
}
