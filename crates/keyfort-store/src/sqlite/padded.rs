//! Multi-row INSERTs whose SQL depends on few row counts, so that the writer connection keeps
//! them prepared.
//!
//! The connection's statement cache is keyed by the SQL text. An INSERT of exactly the rows at
//! hand has a new text for nearly every group commit and drain: it is prepared, at a cost that
//! grows with its rows, and evicts another. Here the rows go in chunks of at most [`MAX_ROWS`],
//! the last one padded to the next power of two (to [`MAX_ROWS`] when there are several), with
//! `INSERT INTO t (…) SELECT * FROM (VALUES …) WHERE column1 IS NOT NULL`: the padding rows are
//! all NULL, and their first column (never NULL in a real row) leaves them out. A chunk without
//! padding is a plain `INSERT INTO t (…) VALUES …`.
//!
//! Not for a table with a row trigger: SQLite runs a multi-row INSERT into one through a
//! temporary table (see `audit::block`, whose blocks go in one INSERT each).

use std::ops::Range;

use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Sqlite};

/// Most rows of one padded INSERT (a key's 24 columns make 6,144 bound values, far below
/// SQLite's limit of 32,766).
const MAX_ROWS: usize = 256;

/// The chunks of a padded INSERT of `n` rows: which rows, and how many rows its SQL has.
fn chunks(n: usize) -> impl Iterator<Item = (Range<usize>, usize)> {
    let padded = if n <= MAX_ROWS {
        n.next_power_of_two()
    } else {
        MAX_ROWS
    };
    (0..n)
        .step_by(MAX_ROWS)
        .map(move |start| (start..(start + MAX_ROWS).min(n), padded))
}

/// Pushes onto `q` the padded INSERTs of `rows` into `into` (`table (columns…)`), separated by
/// `; `; `bind` binds one row's columns, each NULL for a padding row (`None`), the first one
/// never NULL for a real row. Returns how many statements were pushed (none without rows).
pub(super) fn push_inserts<T>(
    q: &mut QueryBuilder<Sqlite>,
    into: &str,
    rows: &[T],
    bind: impl Fn(&mut Separated<'_, Sqlite, &'static str>, Option<&T>),
) -> usize {
    let mut statements = 0;
    for (range, padded) in chunks(rows.len()) {
        if statements > 0 {
            q.push("; ");
        }
        statements += 1;
        let chunk = &rows[range];
        // A chunk that fills its rows needs no filter.
        let filtered = chunk.len() < padded;
        q.push("INSERT INTO ");
        q.push(into);
        q.push(if filtered {
            " SELECT * FROM (VALUES "
        } else {
            " VALUES "
        });
        for i in 0..padded {
            if i > 0 {
                q.push(", ");
            }
            let mut values = q.separated(", ");
            values.push_unseparated("(");
            bind(&mut values, chunk.get(i));
            values.push_unseparated(")");
        }
        if filtered {
            q.push(") WHERE column1 IS NOT NULL");
        }
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_row_counts_whatever_the_number_of_rows() {
        let of = |n| chunks(n).collect::<Vec<_>>();
        assert!(of(0).is_empty());
        assert_eq!(of(1), [(0..1, 1)]);
        assert_eq!(of(3), [(0..3, 4)]);
        assert_eq!(of(16), [(0..16, 16)]);
        assert_eq!(of(17), [(0..17, 32)]);
        assert_eq!(of(256), [(0..256, 256)]);
        assert_eq!(of(300), [(0..256, 256), (256..300, 256)]);
        let counts: std::collections::BTreeSet<Vec<usize>> = (1..=2048)
            .map(|n| chunks(n).map(|(_, rows)| rows).collect())
            .collect();
        assert_eq!(
            counts.len(),
            9 + 7,
            "1, 2, 4, …, 256 rows, or 2 to 8 chunks of 256"
        );
    }
}
