//! The audit trail: one hash chain per instance.
//!
//! An append reads the instance's last event and inserts the next one inside one write
//! transaction (`BEGIN IMMEDIATE`, on the single writer connection), so two appends can never
//! read the same last event: the chain neither forks nor skips a `seq`. The primary key
//! `(instance_id, seq)` would refuse a fork anyway. Appends go through the group-commit writer
//! ([`super::writer`]), like [`crate::Store::apply`]: an append inside a batch and a standalone
//! one are the same code on the same connection.
//!
//! `target`, `action` and `outcome` are copies of the body's string fields of the same names,
//! extracted here on append (migration 3 backfilled older rows with the same rule in SQL).

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite};

use super::rows::{self, HASH_LEN};
use super::{Conn, SqliteStore};
use crate::chain::{body_fields, chain_hash};
use crate::{AuditEventInput, AuditEventRecord, AuditFilter, Result, StoreError};

/// The most events one [`query`] returns, whatever its filter's `limit`.
pub(super) const MAX_QUERY_LIMIT: u64 = 10_000;

/// `SELECT <every column> FROM audit_events <tail>`, as one literal.
macro_rules! select_events {
    ($tail:literal) => {
        concat!(
            "SELECT instance_id, seq, at, target, action, outcome, body, prev_hash, hash ",
            "FROM audit_events ",
            $tail
        )
    };
}

pub(super) async fn events(
    store: &SqliteStore,
    instance_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<AuditEventRecord>> {
    let all = sqlx::query(select_events!(
        "WHERE instance_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    ))
    .bind(instance_id)
    .bind(after_seq)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::audit_event).collect()
}

/// [`crate::Store::query_audit_events`]. The `WHERE` clause names only the filter's set fields,
/// so that SQLite can pick `ix_audit_events_target` / `ix_audit_events_action` (a
/// `? IS NULL OR column = ?` form would hide them from the planner). Every value is bound; the
/// SQL text is made of literals only.
pub(super) async fn query(
    store: &SqliteStore,
    instance_id: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEventRecord>> {
    let limit = filter.limit.min(MAX_QUERY_LIMIT);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new(select_events!("WHERE instance_id = "));
    q.push_bind(instance_id)
        .push(" AND seq > ")
        .push_bind(filter.after_seq);
    if let Some(from) = filter.from {
        q.push(" AND at >= ").push_bind(from);
    }
    if let Some(until) = filter.until {
        q.push(" AND at < ").push_bind(until);
    }
    for (value, condition) in [
        (&filter.target, " AND target = "),
        (&filter.action, " AND action = "),
        (&filter.outcome, " AND outcome = "),
    ] {
        if let Some(value) = value {
            q.push(condition).push_bind(value.as_str());
        }
    }
    // At most MAX_QUERY_LIMIT: fits.
    q.push(" ORDER BY seq LIMIT ")
        .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let all = q.build().fetch_all(&store.reader).await?;
    all.iter().map(rows::audit_event).collect()
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
    let last = sqlx::query(select_events!(
        "WHERE instance_id = ? ORDER BY seq DESC LIMIT 1"
    ))
    .bind(instance_id)
    .fetch_optional(executor)
    .await?;
    Ok(match last.as_ref().map(rows::audit_event).transpose()? {
        Some(last) => (last.seq, last.hash),
        None => (0, vec![0; HASH_LEN]),
    })
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
    let [target, action, outcome] = body_fields(&event.body);
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

/// Inserts chained events as they are (see [`push_padded_inserts`]).
pub(super) async fn insert_records(
    conn: &mut Conn,
    records: &[AuditEventRecord],
) -> std::result::Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_padded_inserts(&mut q, records);
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Pushes onto `q` the INSERTs of `records` with few row counts, which the writer connection
/// keeps prepared (see [`super::padded`]). Returns how many statements were pushed.
pub(super) fn push_padded_inserts(
    q: &mut QueryBuilder<Sqlite>,
    records: &[AuditEventRecord],
) -> usize {
    super::padded::push_inserts(
        q,
        "audit_events (instance_id, seq, at, target, action, outcome, body, prev_hash, hash)",
        records,
        |row, r| {
            row.push_bind(r.map(|r| r.instance_id.as_str()))
                .push_bind(r.map(|r| r.seq))
                .push_bind(r.map(|r| r.at))
                .push_bind(r.map(|r| r.target.as_str()))
                .push_bind(r.map(|r| r.action.as_str()))
                .push_bind(r.map(|r| r.outcome.as_str()))
                .push_bind(r.map(|r| r.body.as_str()))
                .push_bind(r.map(|r| r.prev_hash.as_slice()))
                .push_bind(r.map(|r| r.hash.as_slice()));
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyfort_crypto::digest::sha256;

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
        for not_an_object in ["", "event 1", "[1]", r#""target""#, "{"] {
            assert_eq!(body_fields(not_an_object), s(&["", "", ""]));
        }
    }
}
