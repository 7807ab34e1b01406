//! The audit trail: one hash chain per instance.
//!
//! An append reads the instance's last event and inserts the next one inside one write
//! transaction (`BEGIN IMMEDIATE`, on the single writer connection), so two appends can never
//! read the same last event: the chain neither forks nor skips a `seq`. The schema refuses a
//! block that does not continue its chain anyway (`tr_audit_blocks_continue`). Appends go
//! through the group-commit writer ([`super::writer`]), like [`crate::Store::apply`]: an append
//! inside a batch and a standalone one are the same code on the same connection.
//!
//! The events a transaction appends to one chain are stored as blocks ([`block`]); `target`,
//! `action` and `outcome` are read from each event's body, on append for the block's terms and
//! on reading for the records.

mod block;

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row as _, Sqlite};

use super::rows::HASH_LEN;
use super::{Conn, SqliteStore};
use crate::chain::{chain_hash, event_fields};
use crate::{AuditEventInput, AuditEventRecord, AuditFilter, Result, StoreError};

/// The most events one [`query`] returns, whatever its filter's `limit`.
pub(super) const MAX_QUERY_LIMIT: u64 = 10_000;

/// The most blocks one page of a scan reads ([`scan`]).
const MAX_PAGE_BLOCKS: i64 = 32;

/// `SELECT first_seq, events` of the blocks of instance `?1` from the one holding `seq ?2 + 1`
/// on, past a cursor `?3`, with events after `?2`, overlapping `[?4, ?5)` in time, `?6` at a
/// time, in chain order; `$from` and `$cond` name the blocks' source and an extra condition.
macro_rules! select_blocks {
    ($from:literal, $cond:literal) => {
        concat!(
            "SELECT b.first_seq, b.events FROM ",
            $from,
            " WHERE b.instance_id = ?1 ",
            $cond,
            " AND b.first_seq >= max(?3, coalesce((SELECT max(first_seq) FROM audit_blocks ",
            "WHERE instance_id = ?1 AND first_seq <= ?2 + 1), 0)) ",
            "AND b.last_seq > ?2 AND (?4 IS NULL OR b.last_at >= ?4) ",
            "AND (?5 IS NULL OR b.first_at < ?5) ",
            "ORDER BY b.first_seq LIMIT ?6"
        )
    };
}

/// [`select_blocks`] of every block.
const SELECT_ALL: &str = select_blocks!("audit_blocks b", "");
/// [`select_blocks`] of the blocks with term `?7`.
const SELECT_BY_TERM: &str = select_blocks!(
    "audit_terms t JOIN audit_blocks b \
     ON b.instance_id = t.instance_id AND b.first_seq = t.first_seq",
    "AND t.instance_id = ?1 AND t.term = ?7"
);

/// [`crate::Store::audit_events`]: the events after `after_seq`, in chain order.
pub(super) async fn events(
    store: &SqliteStore,
    instance_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<AuditEventRecord>> {
    let filter = AuditFilter {
        after_seq,
        limit,
        ..AuditFilter::default()
    };
    scan(store, instance_id, &filter).await
}

/// [`crate::Store::query_audit_events`]. A filter on target or action reads only the blocks
/// that hold one (`audit_terms`); the rest of the filter is applied to their events.
pub(super) async fn query(
    store: &SqliteStore,
    instance_id: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEventRecord>> {
    let filter = AuditFilter {
        limit: filter.limit.min(MAX_QUERY_LIMIT),
        ..filter.clone()
    };
    scan(store, instance_id, &filter).await
}

/// The events of `instance_id` that `filter` keeps, in chain order, reading blocks a page at a
/// time until the limit is reached.
async fn scan(
    store: &SqliteStore,
    instance_id: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEventRecord>> {
    let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // The most selective indexed term: the target, else the action. Blocks have no term for an
    // empty field, so a filter on one reads every block.
    let term = match (filter.target.as_deref(), filter.action.as_deref()) {
        (Some(target), _) if !target.is_empty() => Some(format!("target:{target}")),
        (_, Some(action)) if !action.is_empty() => Some(format!("action:{action}")),
        _ => None,
    };
    let mut cursor = i64::MIN;
    let mut page = 2;
    loop {
        let mut q = sqlx::query(if term.is_some() {
            SELECT_BY_TERM
        } else {
            SELECT_ALL
        })
        .bind(instance_id)
        .bind(filter.after_seq)
        .bind(cursor)
        .bind(filter.from)
        .bind(filter.until)
        .bind(page);
        if let Some(term) = &term {
            q = q.bind(term.as_str());
        }
        let rows = q.fetch_all(&store.reader).await?;
        let fetched = rows.len();
        for row in rows {
            let first_seq: i64 = row.try_get(0)?;
            let events: String = row.try_get(1)?;
            cursor = first_seq.saturating_add(1);
            for e in block::decode(instance_id, first_seq, &events)? {
                if filter.keeps(&e) {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        if i64::try_from(fetched).unwrap_or(i64::MAX) < page {
            return Ok(out);
        }
        page = (page * 2).min(MAX_PAGE_BLOCKS);
    }
}
/// A chain's last `(seq, hash)`.
pub(super) type Head = (i64, Vec<u8>);

/// The last (seq, hash) of each instance's chain as one transaction sees them: those it has
/// appended to (`changed`) over those known before it began (`base`, the journal's heads, see
/// [`super::journal`]). An instance in neither is read from the database. Valid only inside the
/// transaction that filled it.
pub(super) struct ChainHeads<'a> {
    base: Option<&'a HashMap<String, Head>>,
    changed: &'a mut HashMap<String, Head>,
}

impl<'a> ChainHeads<'a> {
    pub(super) fn new(
        base: Option<&'a HashMap<String, Head>>,
        changed: &'a mut HashMap<String, Head>,
    ) -> ChainHeads<'a> {
        ChainHeads { base, changed }
    }

    fn get(&self, instance_id: &str) -> Option<&Head> {
        self.changed
            .get(instance_id)
            .or_else(|| self.base.and_then(|b| b.get(instance_id)))
    }

    /// What [`Self::restore`] goes back to.
    pub(super) fn snapshot(&self) -> HashMap<String, Head> {
        self.changed.clone()
    }

    pub(super) fn restore(&mut self, snapshot: HashMap<String, Head>) {
        *self.changed = snapshot;
    }
}

/// The last event of `instance_id`'s chain in the database, or `(0, zeros)` for an empty chain.
pub(super) async fn head_in<'c, E>(executor: E, instance_id: &str) -> Result<Head>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let last = sqlx::query(
        "SELECT last_seq, last_hash FROM audit_blocks WHERE instance_id = ? \
         ORDER BY first_seq DESC LIMIT 1",
    )
    .bind(instance_id)
    .fetch_optional(executor)
    .await?;
    let Some(row) = last else {
        return Ok((0, vec![0; HASH_LEN]));
    };
    let (seq, hash): (i64, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
    if hash.len() != HASH_LEN {
        return Err(StoreError::Corrupt {
            table: "audit_blocks",
            id: format!("{instance_id}/{seq}"),
            detail: format!("column last_hash: {} bytes, not {HASH_LEN}", hash.len()),
        });
    }
    Ok((seq, hash))
}

/// The event that follows `head` in its chain.
pub(super) fn next_record(event: &AuditEventInput, head: &Head) -> Result<AuditEventRecord> {
    let (last_seq, prev_hash) = head;
    let seq = last_seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        table: "audit_events",
        id: format!("{}/{last_seq}", event.instance_id),
        detail: "column seq: the chain cannot grow past i64::MAX".to_owned(),
    })?;
    let hash = chain_hash(prev_hash, seq, event.at, &event.body).to_vec();
    let [target, action, outcome] = event_fields(event);
    Ok(AuditEventRecord {
        instance_id: event.instance_id.clone(),
        seq,
        at: event.at,
        target,
        action,
        outcome,
        body: event.body.clone(),
        prev_hash: prev_hash.clone(),
        hash,
    })
}

/// Appends `event` to its instance's chain on `conn`, which must be inside a transaction
/// holding the write lock, reading the chain head from `heads` when this transaction already
/// knows it, and leaving the new head there.
pub(super) async fn append_with_heads(
    conn: &mut Conn,
    event: &AuditEventInput,
    heads: &mut ChainHeads<'_>,
) -> Result<AuditEventRecord> {
    let mut records = append_many(conn, &[event], heads).await?;
    records.pop().ok_or_else(|| StoreError::Corrupt {
        table: "audit_events",
        id: event.instance_id.clone(),
        detail: "an append returned no event".to_owned(),
    })
}

/// Appends `events` in order, each to its instance's chain, in one round trip
/// ([`insert_records`]). All or none: on an error nothing is inserted and `heads` is
/// as before.
pub(super) async fn append_many(
    conn: &mut Conn,
    events: &[&AuditEventInput],
    heads: &mut ChainHeads<'_>,
) -> Result<Vec<AuditEventRecord>> {
    let saved = heads.snapshot();
    let result = async {
        let records = chain_many(conn, events, heads).await?;
        insert_records(conn, &records).await?;
        Ok(records)
    }
    .await;
    if result.is_err() {
        heads.restore(saved);
    }
    result
}

/// The records of `events`, each chained after its instance's head, in order; `heads` then holds
/// the last of each instance. Nothing is inserted (see [`push_insert`]); on an error `heads` may
/// have changed.
pub(super) async fn chain_many(
    conn: &mut Conn,
    events: &[&AuditEventInput],
    heads: &mut ChainHeads<'_>,
) -> Result<Vec<AuditEventRecord>> {
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        let head = match heads.get(&event.instance_id) {
            Some(head) => head.clone(),
            None => head_in(&mut *conn, &event.instance_id).await?,
        };
        let record = next_record(event, &head)?;
        heads
            .changed
            .insert(event.instance_id.clone(), (record.seq, record.hash.clone()));
        records.push(record);
    }
    Ok(records)
}

/// Inserts chained events as they are (see [`push_inserts`]).
pub(super) async fn insert_records(
    conn: &mut Conn,
    records: &[AuditEventRecord],
) -> std::result::Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_inserts(&mut q, records);
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Pushes onto `q` the INSERTs of `records`, chained in order, as blocks ([`block`]) with few
/// row counts, which the writer connection keeps prepared (see [`super::padded`]). Returns how
/// many statements were pushed.
pub(super) fn push_inserts(q: &mut QueryBuilder<Sqlite>, records: &[AuditEventRecord]) -> usize {
    block::push_inserts(q, &block::blocks(records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::body_fields;
    use keyfort_crypto::digest::sha256;

    /// Both scans read the blocks in chain order through primary keys, without sorting.
    #[tokio::test]
    async fn scans_use_the_primary_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SqliteStore::open(&dir.path().join("a.db"))
            .await
            .expect("open");
        for (sql, index) in [
            (SELECT_ALL, "sqlite_autoindex_audit_blocks_1"),
            (SELECT_BY_TERM, "PRIMARY KEY"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("i")
                    .bind(0_i64)
                    .bind(0_i64)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .bind(2_i64)
                    .bind("target:k")
                    .fetch_all(&store.reader)
                    .await
                    .expect("plan");
            let details: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            assert!(details.iter().any(|d| d.contains(index)), "{details:?}");
            assert!(!details.iter().any(|d| d.contains("SCAN")), "{details:?}");
            assert!(
                !details.iter().any(|d| d.contains("TEMP B-TREE")),
                "{details:?}"
            );
        }
        store.close().await;
    }

    #[test]
    fn chain_hash_layout() {
        // prev ‖ seq (8 bytes BE) ‖ at (8 bytes BE) ‖ body.
        let prev = [7_u8; 32];
        let mut input = prev.to_vec();
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        input.extend_from_slice(&[0xFF; 8]); // at = -1
        input.extend_from_slice(b"{}");
        assert_eq!(chain_hash(&prev, 258, -1, "{}"), sha256(&input));
        // Same bytes as the u64 encoding for every valid seq.
        assert_eq!(42_i64.to_be_bytes(), 42_u64.to_be_bytes());
    }

    #[test]
    fn body_fields_are_strings_or_empty() {
        let s = |v: &[&str; 3]| v.map(str::to_owned);
        assert_eq!(
            body_fields(r#"{"target":"k1","action":"kms.secrets.create","outcome":"success"}"#),
            s(&["k1", "kms.secrets.create", "success"])
        );
        assert_eq!(
            body_fields(r#"{"target":7,"action":null,"outcome":{"x":"y"}}"#),
            s(&["", "", ""])
        );
        assert_eq!(body_fields(r#"{"action":"a"}"#), s(&["", "a", ""]));
        for not_an_object in [
            "",
            "event 1",
            "[1]",
            r#"["k1","wrap","success"]"#,
            r#""target""#,
            "{",
        ] {
            assert_eq!(body_fields(not_an_object), s(&["", "", ""]));
        }
    }
}
