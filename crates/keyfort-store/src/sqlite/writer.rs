//! Group commit: the one task that runs [`crate::Store::apply`] batches (and the single-write
//! methods built on them).
//!
//! Callers queue a [`Job`] with a oneshot channel for its answer. The writer task takes every
//! job waiting (at most [`MAX_GROUP`]), and on the writer connection:
//!
//! 1. `BEGIN IMMEDIATE` (the write lock, as every other write transaction of the store);
//! 2. each job inside its own `SAVEPOINT`: if the job fails, `ROLLBACK TO` that savepoint undoes
//!    it alone, and its error is that caller's answer; the other jobs of the group go on;
//! 3. one `COMMIT`, then every caller gets its answer, never before: with `synchronous=FULL` an
//!    `Ok` is durable, and the group shares one fsync.
//!
//! If the transaction itself fails (no connection, `BEGIN`, a savepoint statement, or `COMMIT`),
//! it is rolled back and every job of the group that had succeeded fails with that error (a
//! job's own error stays its answer). The error is the original `sqlx` error when only one
//! caller is affected; otherwise each affected caller gets a [`StoreError::Database`] wrapping
//! an I/O error whose source is the shared original.
//!
//! The task ends when every [`Writer`] (hence every clone of the store) is dropped. A caller
//! that stops waiting before its job's turn has its job skipped.

use std::fmt;
use std::io;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::trace;

use super::{Conn, audit, instances, keys, registrations};
use crate::{Applied, AuditEventInput, Result, StoreError, Write, WriteBatch};

/// The most jobs committed in one transaction.
pub(super) const MAX_GROUP: usize = 256;
/// Jobs waiting beyond this make their callers wait to queue (back-pressure).
const QUEUE_CAPACITY: usize = 1024;

/// What one caller asks the writer to do, atomically.
pub(super) enum Job {
    /// [`crate::Store::apply`]; its answer has one [`Applied`] per write.
    Batch(WriteBatch),
    /// [`crate::Store::set_instance_policies`]; its answer is empty.
    SetPolicies {
        instance_id: String,
        policies: String,
        audit: AuditEventInput,
    },
}

struct Request {
    job: Job,
    reply: oneshot::Sender<Result<Vec<Applied>>>,
}

/// The queue to the writer task.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Request>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("closed", &self.queue.is_closed())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Spawns the writer task on the current Tokio runtime, writing through `pool`.
    pub(super) fn start(pool: SqlitePool) -> Writer {
        spawn(pool).0
    }

    /// Queues `job` and waits until the transaction it ran in has committed (or failed).
    pub(super) async fn submit(&self, job: Job) -> Result<Vec<Applied>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { job, reply })
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

/// [`Writer::start`], with the task's handle.
fn spawn(pool: SqlitePool) -> (Writer, JoinHandle<()>) {
    let (queue, requests) = mpsc::channel(QUEUE_CAPACITY);
    let task = tokio::spawn(run(pool, requests));
    (Writer { queue }, task)
}

async fn run(pool: SqlitePool, mut requests: mpsc::Receiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // `recv_many` waits for one request, then takes the others already queued; 0 once every
    // sender is gone and the queue is empty.
    while requests.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Nobody waits for these any more: skip them.
        group.retain(|r: &Request| !r.reply.is_closed());
        let outcomes = commit_group(&pool, &group).await;
        trace!(jobs = group.len(), "group commit");
        for (request, outcome) in group.drain(..).zip(outcomes) {
            // A caller that stopped waiting meanwhile does not need its answer.
            let _ = request.reply.send(outcome);
        }
    }
}

/// Runs the jobs of `group` in one transaction; one outcome per job, in order, known once the
/// transaction has committed or failed.
async fn commit_group(pool: &SqlitePool, group: &[Request]) -> Vec<Result<Vec<Applied>>> {
    let mut outcomes = Vec::with_capacity(group.len());
    if group.is_empty() {
        return outcomes;
    }
    let conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return failed(outcomes, e, group.len()),
    };
    let mut tx = match Open::begin(conn).await {
        Ok(tx) => tx,
        Err(e) => return failed(outcomes, e, group.len()),
    };
    let mut heads = audit::ChainHeads::new();
    // A group of one job needs no savepoint: the transaction is the job's.
    if let [request] = group {
        let outcome = run_job(tx.conn(), &request.job, &mut heads).await;
        if outcome.is_err() {
            tx.rollback().await;
            outcomes.push(outcome);
            return outcomes;
        }
        outcomes.push(outcome);
        return match tx.commit().await {
            Ok(()) => outcomes,
            Err(e) => failed(outcomes, e, group.len()),
        };
    }
    // Lone audit appends (the events of reads and wraps) waiting to be inserted together.
    let mut lone: Vec<&AuditEventInput> = Vec::new();
    for request in group {
        if let Some(event) = lone_audit(&request.job) {
            lone.push(event);
            continue;
        }
        flush_lone(tx.conn(), &mut lone, &mut heads, &mut outcomes).await;
        if let Err(e) = execute(tx.conn(), "SAVEPOINT batch").await {
            tx.rollback().await;
            return failed(outcomes, e, group.len());
        }
        let saved_heads = heads.clone();
        let outcome = run_job(tx.conn(), &request.job, &mut heads).await;
        let undone = if outcome.is_err() {
            heads = saved_heads;
            execute(tx.conn(), "ROLLBACK TO SAVEPOINT batch").await
        } else {
            Ok(())
        };
        let released = match undone {
            Ok(()) => execute(tx.conn(), "RELEASE SAVEPOINT batch").await,
            Err(e) => Err(e),
        };
        outcomes.push(outcome);
        if let Err(e) = released {
            tx.rollback().await;
            return failed(outcomes, e, group.len());
        }
    }
    flush_lone(tx.conn(), &mut lone, &mut heads, &mut outcomes).await;
    match tx.commit().await {
        Ok(()) => outcomes,
        Err(e) => failed(outcomes, e, group.len()),
    }
}

/// The event of a job that is a single audit append.
fn lone_audit(job: &Job) -> Option<&AuditEventInput> {
    match job {
        Job::Batch(batch) => match batch.writes.as_slice() {
            [Write::AppendAudit(event)] => Some(event),
            _ => None,
        },
        Job::SetPolicies { .. } => None,
    }
}

/// Inserts the pending lone appends with one statement (a failed statement changes nothing,
/// so no savepoint is needed); if that fails, appends them one by one so that each caller gets
/// its own outcome.
async fn flush_lone(
    conn: &mut Conn,
    lone: &mut Vec<&AuditEventInput>,
    heads: &mut audit::ChainHeads,
    outcomes: &mut Vec<Result<Vec<Applied>>>,
) {
    if lone.is_empty() {
        return;
    }
    match audit::append_many(conn, lone, heads).await {
        Ok(records) => {
            outcomes.extend(records.into_iter().map(|r| Ok(vec![Applied::Audit(r)])));
        }
        Err(_) => {
            for event in lone.iter() {
                let outcome = audit::append_with_heads(conn, event, heads)
                    .await
                    .map(|record| vec![Applied::Audit(record)]);
                outcomes.push(outcome);
            }
        }
    }
    lone.clear();
}

/// The outcomes of a group whose transaction failed with `e`: the jobs that had failed keep
/// their errors, every other one of the `len` jobs fails with `e`.
fn failed(
    mut outcomes: Vec<Result<Vec<Applied>>>,
    e: sqlx::Error,
    len: usize,
) -> Vec<Result<Vec<Applied>>> {
    // The jobs not run yet fail like those that succeeded.
    outcomes.resize_with(len, || Ok(Vec::new()));
    let mut affected = outcomes.iter_mut().filter(|o| o.is_ok()).peekable();
    let Some(first) = affected.next() else {
        return outcomes;
    };
    if affected.peek().is_none() {
        // One caller: the error as the direct path would have returned it.
        *first = Err(StoreError::Database(e));
        return outcomes;
    }
    let shared = Arc::new(e);
    *first = Err(group_failed(&shared));
    for o in affected {
        *o = Err(group_failed(&shared));
    }
    outcomes
}

/// Runs one job on `conn`, inside the group's transaction.
async fn run_job(
    conn: &mut Conn,
    job: &Job,
    heads: &mut audit::ChainHeads,
) -> Result<Vec<Applied>> {
    match job {
        Job::Batch(batch) => {
            let mut applied = Vec::with_capacity(batch.writes.len());
            for write in &batch.writes {
                applied.push(apply_write(conn, write, heads).await?);
            }
            Ok(applied)
        }
        Job::SetPolicies {
            instance_id,
            policies,
            audit,
        } => {
            instances::set_policies_in(conn, instance_id, policies).await?;
            audit::append_with_heads(conn, audit, heads).await?;
            Ok(Vec::new())
        }
    }
}

/// One write, exactly as the single method it mirrors.
async fn apply_write(
    conn: &mut Conn,
    write: &Write,
    heads: &mut audit::ChainHeads,
) -> Result<Applied> {
    Ok(match write {
        Write::InsertKey { key, first_version } => {
            keys::insert_in(conn, key, first_version).await?;
            Applied::Done
        }
        Write::UpdateKey(key) => Applied::RowVersion(keys::update_in(conn, key).await?),
        Write::AddKeyVersion { key, version } => {
            Applied::RowVersion(keys::add_version_in(conn, key, version).await?)
        }
        Write::PurgeKey {
            instance_id,
            key_id,
        } => {
            keys::purge_in(conn, instance_id, key_id).await?;
            Applied::Done
        }
        Write::InsertKeyRing(ring) => {
            instances::insert_key_ring_in(conn, ring).await?;
            Applied::Done
        }
        Write::DeleteKeyRing { instance_id, id } => {
            instances::delete_key_ring_in(conn, instance_id, id).await?;
            Applied::Done
        }
        Write::UpdateInstance(instance) => {
            Applied::RowVersion(instances::update_in(conn, instance).await?)
        }
        Write::PutInstanceSecret(secret) => {
            instances::upsert_secret(conn, secret).await?;
            Applied::Done
        }
        Write::DeleteInstanceSecret { instance_id, name } => {
            instances::delete_secret_in(conn, instance_id, name).await?;
            Applied::Done
        }
        Write::PutRegistration(registration) => {
            registrations::put_in(conn, registration).await?;
            Applied::Done
        }
        Write::DeleteRegistration {
            instance_id,
            key_id,
            resource_crn,
        } => {
            registrations::delete_in(conn, instance_id, key_id, resource_crn).await?;
            Applied::Done
        }
        Write::AppendAudit(event) => {
            Applied::Audit(audit::append_with_heads(conn, event, heads).await?)
        }
    })
}

/// The group's transaction, begun with plain SQL on the writer connection (sqlx's `Transaction`
/// cannot tell that SQLite rolled a transaction back by itself, after an I/O error, and would
/// then refuse every later `BEGIN` on that connection).
///
/// If it is dropped neither committed nor rolled back (a panic, the runtime shutting down) or a
/// `ROLLBACK` fails, the connection is closed rather than returned to the pool mid-transaction.
struct Open {
    conn: PoolConnection<Sqlite>,
    ended: bool,
}

impl Open {
    async fn begin(mut conn: PoolConnection<Sqlite>) -> Result<Open, sqlx::Error> {
        execute(&mut conn, "BEGIN IMMEDIATE").await?;
        Ok(Open { conn, ended: false })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
        match execute(&mut self.conn, "COMMIT").await {
            Ok(()) => {
                self.ended = true;
                Ok(())
            }
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    /// Rolls the whole transaction back. If that fails, SQLite may already have rolled it back
    /// itself, or not: the connection is then closed when dropped.
    async fn rollback(&mut self) {
        if execute(&mut self.conn, "ROLLBACK").await.is_ok() {
            self.ended = true;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

async fn execute(conn: &mut Conn, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

/// The error of every job of a group whose transaction failed with `source`.
fn group_failed(source: &Arc<sqlx::Error>) -> StoreError {
    StoreError::Database(sqlx::Error::Io(io::Error::other(GroupFailed(
        source.clone(),
    ))))
}

/// The writer task is gone: the runtime that started it has shut down, or it panicked.
fn writer_stopped() -> StoreError {
    StoreError::Database(sqlx::Error::Io(io::Error::other(
        "the store's writer task has stopped",
    )))
}

/// A group's transaction failed; the source is that failure, shared by the group's jobs.
#[derive(Debug)]
struct GroupFailed(Arc<sqlx::Error>);

impl fmt::Display for GroupFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the group commit transaction failed, rolling back this write: {}",
            self.0
        )
    }
}

impl std::error::Error for GroupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    #[tokio::test]
    async fn the_task_ends_with_the_last_writer() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("pool");
        let (writer, task) = spawn(pool);
        let clone = writer.clone();
        drop(writer);
        let done = clone
            .submit(Job::Batch(WriteBatch::default()))
            .await
            .expect("an empty batch");
        assert!(done.is_empty());
        drop(clone);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends")
            .expect("without panicking");
    }

    fn conflict() -> StoreError {
        StoreError::Conflict {
            what: "key",
            id: "k".to_owned(),
            expected: 1,
        }
    }

    #[test]
    fn a_failed_group_keeps_job_errors_and_fails_the_rest() {
        // Two jobs ran (one failed on its own), two did not run.
        let outcomes = failed(
            vec![Ok(vec![Applied::Done]), Err(conflict())],
            sqlx::Error::PoolTimedOut,
            4,
        );
        assert_eq!(outcomes.len(), 4);
        assert!(matches!(outcomes[1], Err(StoreError::Conflict { .. })));
        for i in [0, 2, 3] {
            match &outcomes[i] {
                Err(StoreError::Database(sqlx::Error::Io(e))) => {
                    assert!(e.to_string().contains("group commit"), "{e}");
                    let source = e
                        .get_ref()
                        .and_then(|inner| inner.source())
                        .map(ToString::to_string);
                    assert_eq!(source, Some(sqlx::Error::PoolTimedOut.to_string()));
                }
                other => panic!("job {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_failed_group_of_one_gives_the_original_error() {
        let outcomes = failed(Vec::new(), sqlx::Error::PoolTimedOut, 1);
        assert!(matches!(
            &outcomes[..],
            [Err(StoreError::Database(sqlx::Error::PoolTimedOut))]
        ));
        // Only one job affected: the other had failed on its own.
        let outcomes = failed(
            vec![Err(conflict()), Ok(Vec::new())],
            sqlx::Error::PoolTimedOut,
            2,
        );
        assert!(matches!(outcomes[0], Err(StoreError::Conflict { .. })));
        assert!(matches!(
            outcomes[1],
            Err(StoreError::Database(sqlx::Error::PoolTimedOut))
        ));
    }
}
