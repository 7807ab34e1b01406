//! Group commit of lone audit appends ([`crate::Store::append_audit_event`]: the events of reads
//! and refusals, one per request).
//!
//! Each append must lock its instance's chain head until its transaction commits, so appends to
//! one instance are serialized by the server's commit (and its WAL flush). One task per store
//! takes every append waiting (at most [`MAX_GROUP`]) and writes them in one transaction — one
//! head lock per instance, one commit, one flush — then answers each caller, never before the
//! commit. The group locks heads in instance order, so that groups of several nodes cannot
//! deadlock. If the group transaction fails, each of its appends is retried in a transaction of
//! its own, so one bad event cannot fail the others.

use std::fmt;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::audit::{self, ChainHeads};
use crate::{AuditEventInput, AuditEventRecord, Result, StoreError};

/// The most appends committed together.
const MAX_GROUP: usize = 256;
/// Appends waiting beyond this make their callers wait to queue.
const QUEUE: usize = 4096;

struct Request {
    event: AuditEventInput,
    reply: oneshot::Sender<Result<AuditEventRecord>>,
}

/// The queue to the appending task; the task ends when every clone is dropped.
#[derive(Clone)]
pub(super) struct Appender {
    queue: mpsc::Sender<Request>,
}

impl fmt::Debug for Appender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Appender")
            .field("closed", &self.queue.is_closed())
            .finish_non_exhaustive()
    }
}

impl Appender {
    pub(super) fn start(pool: PgPool) -> Appender {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, requests));
        Appender { queue }
    }

    /// Appends `event` and waits for its commit.
    pub(super) async fn append(&self, event: AuditEventInput) -> Result<AuditEventRecord> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { event, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

async fn run(pool: PgPool, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        // Callers that gave up waiting need no append.
        group.retain(|r| !r.reply.is_closed());
        // Instance order (stable: each instance's events keep their order).
        group.sort_by(|a, b| a.event.instance_id.cmp(&b.event.instance_id));
        if group.len() > 1 {
            match commit_group(&pool, &group).await {
                Ok(records) => {
                    for (request, record) in group.into_iter().zip(records) {
                        let _ = request.reply.send(Ok(record));
                    }
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, "audit group failed; appending one by one"),
            }
        }
        for request in group {
            let result = commit_group(&pool, std::slice::from_ref(&request))
                .await
                .and_then(|mut records| {
                    records.pop().ok_or_else(|| StoreError::Corrupt {
                        table: "audit_events",
                        id: request.event.instance_id.clone(),
                        detail: "an append returned no event".to_owned(),
                    })
                });
            let _ = request.reply.send(result);
        }
    }
}

async fn commit_group(pool: &PgPool, group: &[Request]) -> Result<Vec<AuditEventRecord>> {
    let mut tx = pool.begin().await?;
    let mut heads = ChainHeads::new();
    let mut records = Vec::with_capacity(group.len());
    for request in group {
        records.push(audit::append_in(&mut tx, &request.event, &mut heads).await?);
    }
    tx.commit().await?;
    Ok(records)
}
