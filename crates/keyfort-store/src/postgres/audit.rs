//! The audit trail: one hash chain per instance, shared by every node.
//!
//! An append locks its instance's row of `audit_heads` (see the module documentation of
//! [`super`]) and reads the head in the same statement, inserts the event, and moves the head, all
//! inside the caller's transaction: the lock is held until that transaction commits or rolls
//! back, so no other append to the chain can read the same head.

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use super::rows::{self, HASH_LEN};
use crate::chain::{chain_hash, event_fields};
use crate::{AuditEventInput, AuditEventRecord, AuditFilter, Result, StoreError};

/// The most events one [`query`] returns, whatever its filter's `limit`.
const MAX_QUERY_LIMIT: u64 = 10_000;

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
    pool: &PgPool,
    instance_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<AuditEventRecord>> {
    let all = sqlx::query(select_events!(
        "WHERE instance_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(instance_id)
    .bind(after_seq)
    .bind(rows::saturating_i64(limit))
    .fetch_all(pool)
    .await?;
    all.iter().map(rows::audit_event).collect()
}

/// [`crate::Store::query_audit_events`]: the `WHERE` clause names only the filter's set fields;
/// every value is bound.
pub(super) async fn query(
    pool: &PgPool,
    instance_id: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEventRecord>> {
    let limit = filter.limit.min(MAX_QUERY_LIMIT);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Postgres>::new(select_events!("WHERE instance_id = "));
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
    q.push(" ORDER BY seq LIMIT ")
        .push_bind(rows::saturating_i64(limit));
    let all = q.build().fetch_all(pool).await?;
    all.iter().map(rows::audit_event).collect()
}

/// The chain heads this transaction has locked, with their current value.
pub(super) type ChainHeads = std::collections::HashMap<String, (i64, Vec<u8>)>;

/// Appends `event` to its instance's chain inside the transaction on `conn`.
pub(super) async fn append_in(
    conn: &mut PgConnection,
    event: &AuditEventInput,
    heads: &mut ChainHeads,
) -> Result<AuditEventRecord> {
    let (last_seq, prev_hash) = match heads.get(&event.instance_id) {
        Some((seq, hash)) => (*seq, hash.clone()),
        None => lock_head(conn, &event.instance_id).await?,
    };
    let seq = last_seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        table: "audit_heads",
        id: event.instance_id.clone(),
        detail: "column seq: the chain cannot grow past i64::MAX".to_owned(),
    })?;
    let hash = chain_hash(&prev_hash, seq, event.at, &event.body).to_vec();
    let [target, action, outcome] = event_fields(event);
    let record = AuditEventRecord {
        instance_id: event.instance_id.clone(),
        seq,
        at: event.at,
        target,
        action,
        outcome,
        body: event.body.clone(),
        prev_hash,
        hash,
    };
    // The event and the new head in one statement.
    sqlx::query(
        "WITH ev AS (INSERT INTO audit_events (instance_id, seq, at, target, action, outcome, \
         body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) \
         UPDATE audit_heads SET seq = $2, hash = $9 WHERE instance_id = $1",
    )
    .bind(&record.instance_id)
    .bind(record.seq)
    .bind(record.at)
    .bind(&record.target)
    .bind(&record.action)
    .bind(&record.outcome)
    .bind(&record.body)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut *conn)
    .await?;
    heads.insert(record.instance_id.clone(), (seq, record.hash.clone()));
    Ok(record)
}

/// Locks the instance's chain head until the transaction ends (creating it, empty, for the first
/// event) and returns it.
async fn lock_head(conn: &mut PgConnection, instance_id: &str) -> Result<(i64, Vec<u8>)> {
    let row = sqlx::query(
        "INSERT INTO audit_heads (instance_id, seq, hash) VALUES ($1, 0, $2) \
         ON CONFLICT (instance_id) DO UPDATE SET seq = audit_heads.seq \
         RETURNING instance_id, seq, hash",
    )
    .bind(instance_id)
    .bind(vec![0_u8; HASH_LEN])
    .fetch_one(&mut *conn)
    .await?;
    rows::audit_head(&row)
}
