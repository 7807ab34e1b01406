//! The audit trail: one hash chain per instance.
//!
//! An append reads the instance's last event and inserts the next one inside one write
//! transaction (`BEGIN IMMEDIATE`, on the single writer connection), so two appends can never
//! read the same last event: the chain neither forks nor skips a `seq`. The primary key
//! `(instance_id, seq)` would refuse a fork anyway.

use keyfort_crypto::digest::sha256;

use super::rows::{self, HASH_LEN};
use super::{SqliteStore, Tx};
use crate::{AuditEventInput, AuditEventRecord, Result, StoreError};

pub(super) async fn append(
    store: &SqliteStore,
    event: &AuditEventInput,
) -> Result<AuditEventRecord> {
    let mut tx = store.begin().await?;
    let record = append_in(&mut tx, event).await?;
    tx.commit().await?;
    Ok(record)
}

pub(super) async fn events(
    store: &SqliteStore,
    instance_id: &str,
    after_seq: i64,
    limit: u64,
) -> Result<Vec<AuditEventRecord>> {
    let all = sqlx::query(
        "SELECT instance_id, seq, at, body, prev_hash, hash FROM audit_events \
         WHERE instance_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(instance_id)
    .bind(after_seq)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&store.reader)
    .await?;
    all.iter().map(rows::audit_event).collect()
}

/// Appends `event` to its instance's chain inside `tx` (which must hold the write lock).
pub(super) async fn append_in(tx: &mut Tx, event: &AuditEventInput) -> Result<AuditEventRecord> {
    let last = sqlx::query(
        "SELECT instance_id, seq, at, body, prev_hash, hash FROM audit_events \
         WHERE instance_id = ? ORDER BY seq DESC LIMIT 1",
    )
    .bind(&event.instance_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (last_seq, prev_hash) = match last.as_ref().map(rows::audit_event).transpose()? {
        Some(last) => (last.seq, last.hash),
        None => (0, vec![0; HASH_LEN]),
    };
    let seq = last_seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        table: "audit_events",
        id: format!("{}/{last_seq}", event.instance_id),
        detail: "column seq: the chain cannot grow past i64::MAX".to_owned(),
    })?;
    let hash = chain_hash(&prev_hash, seq, event.at, &event.body).to_vec();
    sqlx::query(
        "INSERT INTO audit_events (instance_id, seq, at, body, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&event.instance_id)
    .bind(seq)
    .bind(event.at)
    .bind(&event.body)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(AuditEventRecord {
        instance_id: event.instance_id.clone(),
        seq,
        at: event.at,
        body: event.body.clone(),
        prev_hash,
        hash,
    })
}

/// `SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)`. `seq` is at least 1, so its
/// two's-complement bytes are those of the same `u64`.
fn chain_hash(prev_hash: &[u8], seq: i64, at: i64, body: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(prev_hash.len() + 16 + body.len());
    input.extend_from_slice(prev_hash);
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(&at.to_be_bytes());
    input.extend_from_slice(body.as_bytes());
    sha256(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
