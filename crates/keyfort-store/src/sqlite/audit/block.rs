//! The stored form of audit events: blocks of consecutive events of one chain.
//!
//! A block is one row of `audit_blocks` (migration 7): the chain's instance, the first and last
//! `seq` and the earliest and latest `at` of its events, the last event's hash, and the events
//! as a JSON array of `{"seq", "at", "body", "prev_hash", "hash"}` (hashes as hex), in the order
//! they were appended. Reading gives the events back in that stored order, as stored: a changed,
//! removed or reordered element shows in the chain's verification, not as a read error. Only a
//! block that is not such an array at all is [`StoreError::Corrupt`].
//!
//! Each block has an `audit_terms` row per distinct non-empty `target` and `action` of its
//! events (`target:<target>`, `action:<action>`), which the filtered queries read first.

use std::collections::BTreeSet;

use serde::Deserialize;
use sqlx::{QueryBuilder, Sqlite};

use crate::chain::{HASH_LEN, body_fields};
use crate::{AuditEventRecord, StoreError};

/// The most events of one block. A transaction that appends more to one chain writes several.
///
/// A block of 64 events is about 33 KB of JSON; SQLite copies it twice while binding it and
/// building the row. Those copies stay in memory the allocator reuses. At 256 events (about
/// 130 KB each) they were mapped afresh for every drain, and every 4 KiB page of them faulted.
pub(super) const BLOCK_EVENTS: usize = 64;

/// Consecutive events of one chain, written as one row.
pub(super) struct Block<'a> {
    events: Vec<&'a AuditEventRecord>,
}

impl Block<'_> {
    fn first(&self) -> &AuditEventRecord {
        self.events[0]
    }

    fn last(&self) -> &AuditEventRecord {
        self.events[self.events.len() - 1]
    }

    /// The block's `audit_terms`, each once.
    fn terms(&self) -> BTreeSet<String> {
        let mut terms = BTreeSet::new();
        for e in &self.events {
            if !e.target.is_empty() {
                terms.insert(format!("target:{}", e.target));
            }
            if !e.action.is_empty() {
                terms.insert(format!("action:{}", e.action));
            }
        }
        terms
    }
}

/// `records`, chained in order, as blocks: per instance in the order its first record comes,
/// a new block wherever its `seq` does not follow the previous one or a block is full.
pub(super) fn blocks(records: &[AuditEventRecord]) -> Vec<Block<'_>> {
    let mut instances: Vec<(&str, Vec<&AuditEventRecord>)> = Vec::new();
    for r in records {
        match instances.iter_mut().find(|(id, _)| *id == r.instance_id) {
            Some((_, of)) => of.push(r),
            None => instances.push((&r.instance_id, vec![r])),
        }
    }
    let mut blocks: Vec<Block<'_>> = Vec::new();
    for (_, of) in instances {
        let mut current: Vec<&AuditEventRecord> = Vec::new();
        for r in of {
            let follows = current
                .last()
                .is_some_and(|last| last.seq.checked_add(1) == Some(r.seq));
            if !current.is_empty() && (!follows || current.len() == BLOCK_EVENTS) {
                blocks.push(Block {
                    events: std::mem::take(&mut current),
                });
            }
            current.push(r);
        }
        if !current.is_empty() {
            blocks.push(Block { events: current });
        }
    }
    blocks
}

/// One element read back.
#[derive(Deserialize)]
struct Read {
    seq: i64,
    at: i64,
    body: String,
    prev_hash: String,
    hash: String,
}

/// The `events` column of `block`: written straight into one buffer (this runs for every
/// event appended).
fn encode(block: &Block<'_>) -> String {
    use std::io::Write as _;
    let size: usize = block.events.iter().map(|e| e.body.len() + 220).sum();
    let mut out: Vec<u8> = Vec::with_capacity(size + 2);
    out.push(b'[');
    for (i, e) in block.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing into a Vec cannot fail.
        let _ = write!(out, r#"{{"seq":{},"at":{},"body":"#, e.seq, e.at);
        let _ = serde_json::to_writer(&mut out, &e.body);
        out.extend_from_slice(br#","prev_hash":""#);
        push_hex(&mut out, &e.prev_hash);
        out.extend_from_slice(br#"","hash":""#);
        push_hex(&mut out, &e.hash);
        out.extend_from_slice(br#""}"#);
    }
    out.push(b']');
    // ASCII around JSON strings escaped from UTF-8: always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The events of the block of `instance_id` starting at `first_seq`, from its `events` column.
pub(super) fn decode(
    instance_id: &str,
    first_seq: i64,
    events: &str,
) -> Result<Vec<AuditEventRecord>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "audit_blocks",
        id: format!("{instance_id}/{first_seq}"),
        detail,
    };
    let read: Vec<Read> = serde_json::from_str(events)
        .map_err(|e| corrupt(format!("column events: not an array of events ({e})")))?;
    read.into_iter()
        .map(|e| {
            let hash = |name: &str, hex: &str| {
                from_hex(hex)
                    .filter(|h| h.len() == HASH_LEN)
                    .ok_or_else(|| corrupt(format!("event {}: {name} is not a hash", e.seq)))
            };
            let prev_hash = hash("prev_hash", &e.prev_hash)?;
            let hash = hash("hash", &e.hash)?;
            let [target, action, outcome] = body_fields(&e.body);
            Ok(AuditEventRecord {
                instance_id: instance_id.to_owned(),
                seq: e.seq,
                at: e.at,
                target,
                action,
                outcome,
                body: e.body,
                prev_hash,
                hash,
            })
        })
        .collect()
}

/// The INSERT of one block. Blocks go in one such statement each: SQLite runs a multi-row
/// INSERT into a table with a row trigger (`tr_audit_blocks_continue`) through a temporary
/// table, which would write every block's events there, read them back and copy them again
/// before the real insert.
const INSERT_BLOCK: &str = "INSERT INTO audit_blocks \
    (instance_id, first_seq, last_seq, first_at, last_at, last_hash, events) VALUES (";

/// Pushes onto `q` the INSERTs of `blocks` (one each, [`INSERT_BLOCK`]) and of their terms
/// (with few row counts, [`super::super::padded`]). Returns how many statements were pushed.
pub(super) fn push_inserts(q: &mut QueryBuilder<Sqlite>, blocks: &[Block<'_>]) -> usize {
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            q.push("; ");
        }
        q.push(INSERT_BLOCK);
        let at = b.events.iter().map(|e| e.at);
        q.separated(", ")
            .push_bind(b.first().instance_id.clone())
            .push_bind(b.first().seq)
            .push_bind(b.last().seq)
            .push_bind(at.clone().min())
            .push_bind(at.max())
            .push_bind(b.last().hash.clone())
            .push_bind(encode(b));
        q.push(")");
    }
    let mut statements = blocks.len();
    let terms: Vec<(&str, i64, String)> = blocks
        .iter()
        .flat_map(|b| {
            let (id, first) = (b.first().instance_id.as_str(), b.first().seq);
            b.terms().into_iter().map(move |t| (id, first, t))
        })
        .collect();
    if !terms.is_empty() {
        q.push("; ");
        statements += super::super::padded::push_inserts(
            q,
            "audit_terms (instance_id, term, first_seq)",
            &terms,
            |row, t| {
                row.push_bind(t.map(|t| t.0.to_owned()))
                    .push_bind(t.map(|t| t.2.clone()))
                    .push_bind(t.map(|t| t.1));
            },
        );
    }
    statements
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xF)]);
    }
}

/// Hex of either case; `None` for anything else.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(instance: &str, seq: i64, body: &str) -> AuditEventRecord {
        let [target, action, outcome] = body_fields(body);
        AuditEventRecord {
            instance_id: instance.to_owned(),
            seq,
            at: seq * 10,
            target,
            action,
            outcome,
            body: body.to_owned(),
            prev_hash: vec![u8::try_from(seq - 1).unwrap_or(0); HASH_LEN],
            hash: vec![u8::try_from(seq).unwrap_or(0); HASH_LEN],
        }
    }

    #[test]
    fn a_block_reads_back_as_written() {
        let records: Vec<_> = [
            r#"{"target":"k1","action":"wrap","outcome":"success"}"#,
            "not json \"at all\"\n\u{0} é✓",
            r#"{"target":"k2","action":"wrap"}"#,
        ]
        .iter()
        .zip(1..)
        .map(|(body, seq)| record("i", seq, body))
        .collect();
        let blocks = blocks(&records);
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            decode("i", 1, &encode(&blocks[0])).expect("decode"),
            records
        );
        assert_eq!(
            blocks[0].terms().into_iter().collect::<Vec<_>>(),
            ["action:wrap", "target:k1", "target:k2"]
        );
    }

    #[test]
    fn blocks_split_by_instance_gap_and_size() {
        let mut records = vec![record("a", 1, "{}"), record("b", 7, "{}")];
        records.extend((2..=BLOCK_EVENTS as i64 + 2).map(|s| record("a", s, "{}")));
        records.push(record("b", 9, "{}"));
        let shape: Vec<(String, i64, usize)> = blocks(&records)
            .iter()
            .map(|b| (b.first().instance_id.clone(), b.first().seq, b.events.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("a".to_owned(), 1, BLOCK_EVENTS),
                ("a".to_owned(), BLOCK_EVENTS as i64 + 1, 2),
                ("b".to_owned(), 7, 1),
                ("b".to_owned(), 9, 1),
            ]
        );
    }

    #[tokio::test]
    async fn blocks_are_inserted_without_a_temporary_table() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("pool");
        crate::sqlite::migrate::run(&pool).await.expect("migrate");
        let wrap = r#"{"target":"k","action":"wrap"}"#;
        let mut records: Vec<_> = (1..=BLOCK_EVENTS as i64 + 2)
            .map(|s| record("a", s, wrap))
            .collect();
        records.push(record("b", 1, "{}"));
        let blocks = blocks(&records);
        assert_eq!(blocks.len(), 3);
        let mut q = QueryBuilder::new("");
        let statements = push_inserts(&mut q, &blocks);
        let sql = q.sql().as_str().to_owned();
        let block_inserts = sql
            .split("; ")
            .filter(|s| s.starts_with("INSERT INTO audit_blocks"));
        for statement in block_inserts {
            let mut explain = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {statement}")));
            for _ in 0..statement.matches('?').count() {
                explain = explain.bind(None::<i64>);
            }
            let opcodes: Vec<String> = explain
                .fetch_all(&pool)
                .await
                .expect("explain")
                .iter()
                .map(|row| sqlx::Row::get(row, "opcode"))
                .collect();
            assert!(!opcodes.iter().any(|o| o == "OpenEphemeral"), "{statement}");
        }
        assert_eq!(statements, 4, "3 blocks, then their terms");
        q.build().execute(&pool).await.expect("insert");
        let stored: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT instance_id, first_seq, last_seq FROM audit_blocks ORDER BY 1, 2",
        )
        .fetch_all(&pool)
        .await
        .expect("read");
        let last = BLOCK_EVENTS as i64;
        assert_eq!(
            stored,
            [
                ("a".to_owned(), 1, last),
                ("a".to_owned(), last + 1, last + 2),
                ("b".to_owned(), 1, 1),
            ]
        );
    }

    #[test]
    fn damaged_blocks_are_corrupt_not_a_panic() {
        for bad in [
            "",
            "{}",
            "[1]",
            r#"[{"seq":1,"at":0,"body":"","prev_hash":"zz","hash":"00"}]"#,
            r#"[{"seq":1,"at":0,"body":"","prev_hash":"0","hash":"00"}]"#,
            r#"[{"seq":1,"at":0,"body":""}]"#,
        ] {
            assert!(
                matches!(decode("i", 1, bad), Err(StoreError::Corrupt { .. })),
                "{bad}"
            );
        }
        assert_eq!(from_hex("0aFf"), Some(vec![0x0A, 0xFF]));
        let mut hex = Vec::new();
        push_hex(&mut hex, &[0x0A, 0xFF]);
        assert_eq!(hex, b"0aff");
    }
}
