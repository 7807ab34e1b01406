//! Group commit: the one task that runs [`crate::Store::apply`] batches (and the single-write
//! methods built on them).
//!
//! Callers queue a [`Job`] with a oneshot channel for its answer. The writer task takes every
//! job waiting (at most [`MAX_GROUP`]), and on the writer connection:
//!
//! 1. `BEGIN IMMEDIATE` (the write lock, as every other write transaction of the store);
//! 2. each job inside its own `SAVEPOINT`: if the job fails, `ROLLBACK TO` that savepoint undoes
//!    it alone, and its error is that caller's answer; the other jobs of the group go on;
//! 3. one `COMMIT`, then every caller gets its answer, never before it is durable.
//!
//! A group made only of key creations without aliases and lone audit appends (the common case
//! under load) first tries to run as one round trip to the connection's thread, without
//! savepoints: its begin statements, the journal's waiting events, one INSERT per table, and
//! `COMMIT`. If that fails, the transaction is rolled back and the group runs again as above, so
//! that each caller gets its own outcome. A group of drains alone is one round trip too, whose
//! INSERTs have a fixed number of rows ([`audit::push_inserts`]).
//!
//! Durability: for a database file, the group's transaction runs with `synchronous=NORMAL` (set
//! as it begins; every other transaction on the connection begins with its own `FULL`, see
//! [`super::BEGIN_DURABLE`]), so `COMMIT` only writes the
//! WAL; a thread of its own then `fdatasync`s the WAL file and only then answers the callers of
//! every group committed before that sync began. The writer meanwhile commits the next group:
//! SQL work and the disk flush overlap, and one flush serves every group waiting for it. An
//! `Ok` is therefore durable exactly as with `synchronous=FULL`. In memory, answers go out at
//! `COMMIT`. A failed flush breaks the writer for good ([`Writer::is_broken`]): no write is made
//! or answered as durable after it, no read's audit event is taken into the journal, and the
//! store's readiness check fails, until a restart recovers the WAL from the disk.
//!
//! The one exception is a lone audit append (the event of a read, such as a wrap or a get, or of
//! a refused request), which only a store without an audit journal (in memory) sends here: it is
//! answered at `COMMIT`. A database file sends those events to its journal instead
//! ([`super::journal`]); every group then first inserts the journal's waiting events, under the
//! journal's lock, and [`Job::Drain`] is a group for that alone.
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
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::trace;

use super::journal::{ChainLock, Journal};
use super::{Conn, audit, instances, keys, kmip_adapters, registrations};
use crate::{
    Applied, AuditEventInput, KeyRecord, KeyVersionRecord, Result, StoreError, Write, WriteBatch,
};

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
    /// Nothing but what every group does first: moving the audit journal's waiting events into
    /// the database. With `rotate`, the journal also starts a new segment if its current one is
    /// full. Answered once flushed, empty.
    Drain { rotate: bool },
}

struct Request {
    job: Job,
    reply: oneshot::Sender<Result<Vec<Applied>>>,
}

/// The queue to the writer task.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Request>,
    /// Set for good once a flush of the WAL has failed (see [`Writer::is_broken`]).
    broken: Arc<AtomicBool>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("closed", &self.queue.is_closed())
            .finish_non_exhaustive()
    }
}

/// A [`Writer`] that does not keep the task alive.
pub(super) struct WeakWriter(mpsc::WeakSender<Request>, Arc<AtomicBool>);

impl WeakWriter {
    pub(super) fn upgrade(&self) -> Option<Writer> {
        self.0.upgrade().map(|queue| Writer {
            queue,
            broken: self.1.clone(),
        })
    }
}

impl Writer {
    /// Spawns the writer task on the current Tokio runtime, writing through `pool`; with `sync`,
    /// commits are made durable by flushing those files (see the module documentation); with
    /// `journal`, every group first moves the journal's waiting events into the database.
    pub(super) fn start(
        pool: SqlitePool,
        sync: Option<SyncFiles>,
        journal: Option<Arc<Journal>>,
    ) -> Writer {
        spawn(pool, sync, journal).0
    }

    pub(super) fn downgrade(&self) -> WeakWriter {
        WeakWriter(self.queue.downgrade(), self.broken.clone())
    }

    /// Whether a flush of the WAL has failed. The writer then refuses every write until the
    /// process restarts: after a failed `fdatasync` the kernel may have dropped the unwritten
    /// pages and marked them clean, so a later flush can succeed without them, and a commit
    /// after frames that never reached the disk would be lost with them (WAL recovery stops at
    /// the first missing frame). A restart recovers the WAL from what the disk holds.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Moves the audit journal's waiting events into the database (see [`Job::Drain`]), and
    /// waits until they are flushed.
    pub(super) async fn drain(&self, rotate: bool) -> Result<()> {
        self.submit(Job::Drain { rotate }).await.map(|_| ())
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
fn spawn(
    pool: SqlitePool,
    sync: Option<SyncFiles>,
    journal: Option<Arc<Journal>>,
) -> (Writer, JoinHandle<()>) {
    let (queue, requests) = mpsc::channel(QUEUE_CAPACITY);
    let broken = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(pool, requests, sync, journal, broken.clone()));
    (Writer { queue, broken }, task)
}

/// A caller's answer, once the transaction it ran in is durable.
type Answer = (oneshot::Sender<Result<Vec<Applied>>>, Result<Vec<Applied>>);

/// What a committed group hands to the sync thread.
struct Flush {
    /// The answers that wait for the flush.
    answers: Vec<Answer>,
    /// Whether the group wrote anything (then a flush is due even if nobody waits for it).
    committed: bool,
}

async fn run(
    pool: SqlitePool,
    mut requests: mpsc::Receiver<Request>,
    sync: Option<SyncFiles>,
    journal: Option<Arc<Journal>>,
    broken: Arc<AtomicBool>,
) {
    let (syncer, sync_ended) = match sync
        .map(|files| start_sync_thread(files, broken.clone()))
        .transpose()
    {
        Ok(Some((syncer, ended))) => (Some(syncer), Some(ended)),
        Ok(None) => (None, None),
        Err(e) => {
            // Without the thread, every group commits at `synchronous=FULL` instead: slower, as
            // durable.
            tracing::error!(error = %e, "cannot start the thread that flushes the WAL");
            (None, None)
        }
    };
    let relaxed = syncer.is_some();
    let mut group = Vec::with_capacity(MAX_GROUP);
    // `recv_many` waits for one request, then takes the others already queued; 0 once every
    // sender is gone and the queue is empty.
    while requests.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Nobody waits for these any more: skip them.
        group.retain(|r: &Request| !r.reply.is_closed());
        if broken.load(Ordering::Acquire) {
            for request in group.drain(..) {
                let _ = request.reply.send(Err(refused_after_failed_flush()));
            }
            continue;
        }
        let outcomes = commit_group(&pool, &group, relaxed, journal.as_ref()).await;
        trace!(jobs = group.len(), "group commit");
        let committed = outcomes.iter().any(Result::is_ok);
        let mut flushed = Vec::new();
        for (request, outcome) in group.drain(..).zip(outcomes) {
            // The event of a read changes nothing else: committed, it survives a crash of this
            // process, and the next flush (a few milliseconds away) takes it to the disk.
            let at_commit = matches!(Fast::of(&request.job), Some(Fast::Audit(_)));
            if syncer.is_some() && !at_commit {
                flushed.push((request.reply, outcome));
            } else {
                // A caller that stopped waiting meanwhile does not need its answer.
                let _ = request.reply.send(outcome);
            }
        }
        if let Some(syncer) = &syncer {
            // Answered once the WAL is flushed; if the sync thread is gone, nobody is.
            let _ = syncer.send(Flush {
                answers: flushed,
                committed,
            });
        }
    }
    drop(syncer);
    if let Some(ended) = sync_ended {
        // Every group handed over has its answers once the thread has ended.
        let _ = ended.await;
    }
}

/// The files whose flush makes a commit durable: the WAL and, when there is no WAL file (the
/// last connection checkpointed and removed it), the database file itself.
pub(super) struct SyncFiles {
    pub(super) database: PathBuf,
    pub(super) wal: PathBuf,
    /// The open WAL file, with its inode (a removed and recreated WAL is a new file).
    open: Option<(File, u64)>,
}

impl SyncFiles {
    pub(super) fn new(database: PathBuf) -> SyncFiles {
        let mut wal = database.clone().into_os_string();
        wal.push("-wal");
        SyncFiles {
            database,
            wal: PathBuf::from(wal),
            open: None,
        }
    }

    /// Flushes to disk everything written to the WAL (or the database) so far. Blocking.
    fn sync(&mut self) -> io::Result<()> {
        let inode = match inode_of(&self.wal) {
            Ok(inode) => inode,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.open = None;
                return File::open(&self.database)?.sync_data();
            }
            Err(e) => return Err(e),
        };
        let file = match self.open.take() {
            Some((file, ino)) if ino == inode => file,
            _ => File::open(&self.wal)?,
        };
        let synced = file.sync_data();
        self.open = Some((file, inode));
        synced
    }
}

/// The inode number of the file at `path`.
///
/// On Linux it asks for that alone: a query of a file's timestamps makes the kernel (6.13 and
/// later, multigrain timestamps) give the next write a fine-grained modification time, and on
/// ext4 without a journal every `fdatasync` after such a write also writes the inode, one more
/// disk round trip per commit.
fn inode_of(path: &std::path::Path) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
        match statx(CWD, path, AtFlags::empty(), StatxFlags::INO) {
            Ok(stat) if StatxFlags::from_bits_retain(stat.stx_mask).contains(StatxFlags::INO) => {
                return Ok(stat.stx_ino);
            }
            // `statx` refused (an old kernel or a sandbox): the metadata below.
            Ok(_) | Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|meta| meta.ino())
}

/// Starts the thread that answers groups once a flush that began after their commit has
/// completed; returns its queue, and a receiver that completes once the thread has ended (its
/// queue closed, every group answered).
///
/// A thread of its own rather than a task: a group's answers then wait for one hand-over to it,
/// not three (to a task, to a blocking thread, and back).
fn start_sync_thread(
    files: SyncFiles,
    broken: Arc<AtomicBool>,
) -> io::Result<(std::sync::mpsc::Sender<Flush>, oneshot::Receiver<()>)> {
    let (queue, groups) = std::sync::mpsc::channel();
    let (ended, on_end) = oneshot::channel();
    std::thread::Builder::new()
        .name("keyfort-wal-sync".into())
        .spawn(move || {
            sync_loop(files, &groups, &broken);
            drop(ended);
        })?;
    Ok((queue, on_end))
}

/// The sync thread: takes every group waiting, flushes once, and answers them all; ends once
/// the writer task has dropped the queue. Once a flush has failed, it sets `broken` and no
/// commit is ever answered as durable again (see [`Writer::is_broken`]).
fn sync_loop(mut files: SyncFiles, groups: &std::sync::mpsc::Receiver<Flush>, broken: &AtomicBool) {
    let mut waiting: Vec<Flush> = Vec::new();
    while let Ok(first) = groups.recv() {
        waiting.push(first);
        waiting.extend(groups.try_iter());
        let synced = if broken.load(Ordering::Acquire) {
            Err(None)
        } else if waiting.iter().any(|f| f.committed) {
            files.sync().map_err(Some)
        } else {
            Ok(())
        };
        if let Err(Some(e)) = &synced {
            broken.store(true, Ordering::Release);
            tracing::error!(
                error = %e,
                "flushing the write-ahead log failed: the store refuses writes until the process restarts"
            );
        }
        for (reply, outcome) in waiting.drain(..).flat_map(|f| f.answers) {
            let outcome = match (outcome, &synced) {
                (Ok(applied), Ok(())) => Ok(applied),
                (Ok(_), Err(Some(e))) => Err(not_durable(e)),
                (Ok(_), Err(None)) => Err(refused_after_failed_flush()),
                (Err(e), _) => Err(e),
            };
            let _ = reply.send(outcome);
        }
    }
}

/// A write refused, or not answered as durable, because an earlier flush of the WAL failed.
pub(super) fn refused_after_failed_flush() -> StoreError {
    StoreError::Database(sqlx::Error::Io(io::Error::other(
        "an earlier flush of the database's write-ahead log failed: writes are refused until the server restarts",
    )))
}

/// A committed group could not be flushed: its writes may not survive a power loss.
fn not_durable(e: &io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Io(io::Error::new(
        e.kind(),
        format!("flushing the database's write-ahead log failed: {e}"),
    )))
}

/// Runs the jobs of `group` in one transaction; one outcome per job, in order, known once the
/// transaction has committed or failed.
///
/// With a `journal` (see [`super::journal`]), the group takes its lock once its transaction has
/// begun, first inserts the events waiting in the journal, and appends its own after them; they
/// become the journal's once the group commits. A group of drains alone holds the lock only to
/// take the waiting events ([`drain_only`]).
async fn commit_group(
    pool: &SqlitePool,
    group: &[Request],
    relaxed: bool,
    journal: Option<&Arc<Journal>>,
) -> Vec<Result<Vec<Applied>>> {
    let outcomes = Vec::with_capacity(group.len());
    if group.is_empty() {
        return outcomes;
    }
    // The journal's writer turn, the connection, then the journal's lock (see `journal`).
    let _turn = match journal {
        Some(journal) => Some(journal.writer_turn().await),
        None => None,
    };
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return failed(outcomes, e, group.len()),
    };
    let mut chain = match journal {
        Some(journal) if group.iter().all(|r| matches!(r.job, Job::Drain { .. })) => {
            return drain_only(conn, relaxed, journal, group, outcomes).await;
        }
        Some(journal) => journal.lock().await,
        None => ChainLock::none(),
    };
    for request in group {
        if let Job::Drain { rotate: true } = request.job {
            chain.rotate();
        }
    }
    if let Some(fast) = fast_only(group) {
        let saved = chain.heads().snapshot();
        let (pending, mut heads) = chain.pending_and_heads();
        match commit_group_at_once(&mut conn, relaxed, pending, &fast, &mut heads).await {
            Ok(records) => {
                chain.committed();
                let mut records = records.into_iter();
                return group
                    .iter()
                    .map(|request| match Fast::of(&request.job) {
                        Some(fast) => records
                            .next()
                            .map(|record| fast.applied(record))
                            .ok_or_else(|| super::unexpected("an event is missing")),
                        None => Ok(Vec::new()),
                    })
                    .collect();
            }
            // Not run, or rolled back: again job by job, each in its own savepoint, so that
            // each caller gets its own outcome.
            Err(None | Some(AtOnce::RolledBack(_))) => chain.heads().restore(saved),
            Err(Some(AtOnce::Broken(e))) => {
                conn.close_on_drop();
                return failed(outcomes, e, group.len());
            }
        }
    }
    let mut tx = match Open::begin(conn, relaxed).await {
        Ok(tx) => tx,
        Err(e) => return failed(outcomes, e, group.len()),
    };
    if let Err(e) = chain.insert_pending(tx.conn()).await {
        tx.rollback().await;
        return failed(outcomes, e, group.len());
    }
    let (outcomes, rolled_back) = run_group(&mut tx, group, &mut chain.heads(), outcomes).await;
    if rolled_back {
        return outcomes;
    }
    match tx.commit().await {
        Ok(()) => {
            chain.committed();
            outcomes
        }
        Err(e) => failed(outcomes, e, group.len()),
    }
}

/// A group of drains alone: moves the journal's waiting events into the database in one
/// transaction, without holding the journal's lock meanwhile. The connection is held until the
/// journal has them back if the transaction fails, so that no other transaction inserts later
/// events before them.
async fn drain_only(
    mut conn: PoolConnection<Sqlite>,
    relaxed: bool,
    journal: &Journal,
    group: &[Request],
    mut outcomes: Vec<Result<Vec<Applied>>>,
) -> Vec<Result<Vec<Applied>>> {
    let rotate = group
        .iter()
        .any(|r| matches!(r.job, Job::Drain { rotate: true }));
    let taken = journal.take_pending(rotate).await;
    let mut ended = Ok(());
    if !taken.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new(begin_sql(relaxed));
        q.push("; ");
        push_inserts(&mut q, &taken, &[], &[]);
        q.push("; COMMIT");
        ended = in_one_round_trip(&mut conn, q).await;
    }
    journal.drained(taken, ended.is_ok()).await;
    match ended {
        Ok(()) => {
            outcomes.extend(group.iter().map(|_| Ok(Vec::new())));
            outcomes
        }
        Err(AtOnce::RolledBack(e)) => failed(outcomes, e, group.len()),
        Err(AtOnce::Broken(e)) => {
            conn.close_on_drop();
            failed(outcomes, e, group.len())
        }
    }
}

/// How a transaction sent in one round trip failed; the error is the original one.
enum AtOnce {
    /// It was rolled back: nothing of it stays, and the connection can go on.
    RolledBack(sqlx::Error),
    /// It may still be open (its `ROLLBACK` failed too): the connection must be closed.
    Broken(sqlx::Error),
}

/// Runs `q`, a whole transaction from its begin statements to its `COMMIT`, in one round trip
/// to the connection's thread. On an error, rolls back whatever ran of it.
async fn in_one_round_trip(
    conn: &mut Conn,
    mut q: QueryBuilder<Sqlite>,
) -> std::result::Result<(), AtOnce> {
    let Err(e) = q.build().execute(&mut *conn).await else {
        return Ok(());
    };
    // After a failed `COMMIT` SQLite may have ended the transaction itself; a `ROLLBACK` that
    // fails leaves that unknown, and the connection is not trusted again.
    match execute(conn, "ROLLBACK").await {
        Ok(()) => Err(AtOnce::RolledBack(e)),
        Err(_) => Err(AtOnce::Broken(e)),
    }
}

/// A whole group of fast jobs as one transaction in one round trip, without savepoints: the
/// begin statements, the journal's waiting events (`pending`), the keys, their versions and the
/// jobs' events, and `COMMIT`. The chain heads the events need are read first, outside the
/// transaction: the caller holds the writer connection and the journal's lock, so nothing can
/// change them. On an error `heads` may have changed; `None` if nothing was sent (the heads
/// could not be read).
async fn commit_group_at_once(
    conn: &mut Conn,
    relaxed: bool,
    pending: &[crate::AuditEventRecord],
    fast: &[Fast<'_>],
    heads: &mut audit::ChainHeads<'_>,
) -> std::result::Result<Vec<crate::AuditEventRecord>, Option<AtOnce>> {
    let (creates, events) = creates_and_events(fast);
    let records = audit::chain_many(conn, &events, heads)
        .await
        .map_err(|_| None)?;
    let mut q = QueryBuilder::<Sqlite>::new(begin_sql(relaxed));
    q.push("; ");
    if push_inserts(&mut q, pending, &creates, &records) == 0 {
        return Ok(records);
    }
    q.push("; COMMIT");
    in_one_round_trip(conn, q).await.map_err(Some)?;
    Ok(records)
}

/// Runs the jobs of `group` in the open transaction `tx`: one outcome per job, to be kept if the
/// transaction commits. `true` if it had to be rolled back already: the outcomes are final.
async fn run_group(
    tx: &mut Open,
    group: &[Request],
    heads: &mut audit::ChainHeads<'_>,
    mut outcomes: Vec<Result<Vec<Applied>>>,
) -> (Vec<Result<Vec<Applied>>>, bool) {
    // A group of one job needs no savepoint: the transaction is the job's. (A job of the fast
    // kind takes its savepoint in the same round trip as its statements.)
    if let [request] = group
        && Fast::of(&request.job).is_none()
    {
        let outcome = run_job(tx.conn(), &request.job, heads).await;
        let failed = outcome.is_err();
        if failed {
            tx.rollback().await;
        }
        outcomes.push(outcome);
        return (outcomes, failed);
    }
    // Jobs that can share multi-row statements (the events of reads and wraps, key creations)
    // waiting to be run together.
    let mut pending: Vec<Fast<'_>> = Vec::new();
    // Where the drains are: their (empty) answers go in place at the end, since the fast jobs
    // before them may still be waiting in `pending`.
    let mut drains = Vec::new();
    for (i, request) in group.iter().enumerate() {
        if let Some(fast) = Fast::of(&request.job) {
            pending.push(fast);
            continue;
        }
        if let Job::Drain { .. } = request.job {
            // Done with the transaction's first statements.
            drains.push(i);
            continue;
        }
        let flushed = flush(tx.conn(), &mut pending, heads, &mut outcomes).await;
        let outcome = match flushed {
            Ok(()) => in_savepoint(tx.conn(), &request.job, heads).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                tx.rollback().await;
                let outcomes = with_drains(outcomes, &drains);
                return (failed(outcomes, e, group.len()), true);
            }
        }
    }
    if let Err(e) = flush(tx.conn(), &mut pending, heads, &mut outcomes).await {
        tx.rollback().await;
        let outcomes = with_drains(outcomes, &drains);
        return (failed(outcomes, e, group.len()), true);
    }
    (with_drains(outcomes, &drains), false)
}

/// `outcomes` (of the other jobs, in order) with an empty answer for each drain at its place.
fn with_drains(
    mut outcomes: Vec<Result<Vec<Applied>>>,
    drains: &[usize],
) -> Vec<Result<Vec<Applied>>> {
    for &i in drains {
        if i <= outcomes.len() {
            outcomes.insert(i, Ok(Vec::new()));
        }
    }
    outcomes
}

/// A job the writer can run together with others of its kind.
#[derive(Clone, Copy)]
enum Fast<'a> {
    /// A lone audit append (the event of a read or a wrap).
    Audit(&'a AuditEventInput),
    /// A key creation: the key with its first version, and its audit event.
    Create {
        key: &'a KeyRecord,
        version: &'a KeyVersionRecord,
        event: &'a AuditEventInput,
    },
}

impl<'a> Fast<'a> {
    fn of(job: &'a Job) -> Option<Fast<'a>> {
        match job {
            Job::Batch(batch) => match batch.writes.as_slice() {
                [Write::AppendAudit(event)] => Some(Fast::Audit(event)),
                [
                    Write::InsertKey { key, first_version },
                    Write::AppendAudit(event),
                ] => Some(Fast::Create {
                    key,
                    version: first_version,
                    event,
                }),
                _ => None,
            },
            Job::SetPolicies { .. } | Job::Drain { .. } => None,
        }
    }

    /// The answer of this job, whose event became `record`.
    fn applied(&self, record: crate::AuditEventRecord) -> Vec<Applied> {
        match self {
            Fast::Audit(_) => vec![Applied::Audit(record)],
            Fast::Create { .. } => vec![Applied::Done, Applied::Audit(record)],
        }
    }

    fn event(&self) -> &'a AuditEventInput {
        match self {
            Fast::Audit(event) | Fast::Create { event, .. } => event,
        }
    }

    /// The job as the general path runs it.
    fn job(&self) -> Job {
        match *self {
            Fast::Audit(event) => Job::Batch(WriteBatch {
                writes: vec![Write::AppendAudit(event.clone())],
            }),
            Fast::Create {
                key,
                version,
                event,
            } => Job::Batch(WriteBatch {
                writes: vec![
                    Write::InsertKey {
                        key: key.clone(),
                        first_version: version.clone(),
                    },
                    Write::AppendAudit(event.clone()),
                ],
            }),
        }
    }
}

/// Runs the `pending` jobs together: one multi-row INSERT per table, all sent in one round trip
/// to the connection's thread when they fit in one statement each. If that fails, nothing of it
/// stays and the jobs run one by one, each in its own savepoint, so that each caller gets its own
/// outcome. The `Err` is a failure of the transaction itself.
async fn flush(
    conn: &mut Conn,
    pending: &mut Vec<Fast<'_>>,
    heads: &mut audit::ChainHeads<'_>,
    outcomes: &mut Vec<Result<Vec<Applied>>>,
) -> std::result::Result<(), sqlx::Error> {
    if pending.is_empty() {
        return Ok(());
    }
    let (creates, events) = creates_and_events(pending);
    let saved_heads = heads.snapshot();
    let together = if creates.iter().all(|(key, _)| key.aliases.is_empty()) {
        insert_at_once(conn, &creates, &events, heads).await
    } else {
        insert_in_parts(conn, &creates, &events, heads).await
    };
    match together {
        Ok(records) => {
            for (fast, record) in pending.iter().zip(records) {
                outcomes.push(Ok(fast.applied(record)));
            }
        }
        Err(_) => {
            heads.restore(saved_heads);
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT fast; RELEASE SAVEPOINT fast")
                .execute(&mut *conn)
                .await?;
            for fast in pending.iter() {
                outcomes.push(in_savepoint(conn, &fast.job(), heads).await?);
            }
        }
    }
    pending.clear();
    Ok(())
}

/// The jobs of `group` in order if every one is of the fast kind (or a [`Job::Drain`], which
/// has nothing of its own to do) and no key has aliases; `None` otherwise.
fn fast_only(group: &[Request]) -> Option<Vec<Fast<'_>>> {
    let mut fast = Vec::with_capacity(group.len());
    for request in group {
        match Fast::of(&request.job) {
            Some(Fast::Create { key, .. }) if !key.aliases.is_empty() => return None,
            Some(f) => fast.push(f),
            None if matches!(request.job, Job::Drain { .. }) => {}
            None => return None,
        }
    }
    Some(fast)
}

/// The key creations of `fast` jobs, and every job's event, in order.
fn creates_and_events<'a>(
    fast: &[Fast<'a>],
) -> (
    Vec<(&'a KeyRecord, &'a KeyVersionRecord)>,
    Vec<&'a AuditEventInput>,
) {
    let creates = fast
        .iter()
        .filter_map(|f| match *f {
            Fast::Create { key, version, .. } => Some((key, version)),
            Fast::Audit(_) => None,
        })
        .collect();
    (creates, fast.iter().map(Fast::event).collect())
}

/// Pushes onto `q`, separated by `;`, the INSERTs of the `pending` journal events, of the keys
/// and their first versions (not their aliases), and of the chained `records`, with few row
/// counts so that they stay prepared ([`super::padded`]). The number of statements pushed.
fn push_inserts(
    q: &mut QueryBuilder<Sqlite>,
    pending: &[crate::AuditEventRecord],
    creates: &[(&KeyRecord, &KeyVersionRecord)],
    records: &[crate::AuditEventRecord],
) -> usize {
    let mut statements = 0_usize;
    if !pending.is_empty() {
        statements += audit::push_inserts(q, pending);
    }
    if !creates.is_empty() {
        if statements > 0 {
            q.push("; ");
        }
        statements += keys::push_padded_inserts(q, creates);
    }
    if !records.is_empty() {
        if statements > 0 {
            q.push("; ");
        }
        statements += audit::push_inserts(q, records);
    }
    statements
}

/// `SAVEPOINT fast`, the INSERT of the keys, of their versions and of the events, and `RELEASE`,
/// in one round trip. On an error the savepoint is still open and `heads` may have changed.
async fn insert_at_once(
    conn: &mut Conn,
    creates: &[(&KeyRecord, &KeyVersionRecord)],
    events: &[&AuditEventInput],
    heads: &mut audit::ChainHeads<'_>,
) -> Result<Vec<crate::AuditEventRecord>> {
    let records = match audit::chain_many(conn, events, heads).await {
        Ok(records) => records,
        Err(e) => {
            // As promised, the savepoint is open on an error.
            execute(conn, "SAVEPOINT fast").await?;
            return Err(e);
        }
    };
    let mut q = QueryBuilder::<Sqlite>::new("SAVEPOINT fast; ");
    push_inserts(&mut q, &[], creates, &records);
    q.push("; RELEASE SAVEPOINT fast");
    q.build().execute(&mut *conn).await?;
    Ok(records)
}

/// As [`insert_at_once`], one round trip per statement, for keys with aliases (one INSERT per
/// alias, so that a collision names its alias).
async fn insert_in_parts(
    conn: &mut Conn,
    creates: &[(&KeyRecord, &KeyVersionRecord)],
    events: &[&AuditEventInput],
    heads: &mut audit::ChainHeads<'_>,
) -> Result<Vec<crate::AuditEventRecord>> {
    execute(conn, "SAVEPOINT fast").await?;
    keys::insert_many_in(conn, creates).await?;
    let records = audit::append_many(conn, events, heads).await?;
    execute(conn, "RELEASE SAVEPOINT fast").await?;
    Ok(records)
}

/// Runs one job in its own savepoint: if it fails, it leaves nothing behind and its error is
/// its outcome. The `Err` is a failure of the transaction itself.
async fn in_savepoint(
    conn: &mut Conn,
    job: &Job,
    heads: &mut audit::ChainHeads<'_>,
) -> std::result::Result<Result<Vec<Applied>>, sqlx::Error> {
    execute(conn, "SAVEPOINT batch").await?;
    let saved_heads = heads.snapshot();
    let outcome = run_job(conn, job, heads).await;
    if outcome.is_err() {
        heads.restore(saved_heads);
        execute(conn, "ROLLBACK TO SAVEPOINT batch").await?;
    }
    execute(conn, "RELEASE SAVEPOINT batch").await?;
    Ok(outcome)
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
    heads: &mut audit::ChainHeads<'_>,
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
        Job::Drain { .. } => Ok(Vec::new()),
    }
}

/// One write, exactly as the single method it mirrors.
async fn apply_write(
    conn: &mut Conn,
    write: &Write,
    heads: &mut audit::ChainHeads<'_>,
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
        Write::InsertKmipAdapter(adapter) => {
            kmip_adapters::insert_adapter_in(conn, adapter).await?;
            Applied::Done
        }
        Write::DeleteKmipAdapter { instance_id, id } => {
            kmip_adapters::delete_adapter_in(conn, instance_id, id).await?;
            Applied::Done
        }
        Write::InsertKmipCertificate(certificate) => {
            kmip_adapters::insert_certificate_in(conn, certificate).await?;
            Applied::Done
        }
        Write::DeleteKmipCertificate {
            instance_id,
            adapter_id,
            id,
        } => {
            kmip_adapters::delete_certificate_in(conn, instance_id, adapter_id, id).await?;
            Applied::Done
        }
        Write::AppendAudit(event) => {
            Applied::Audit(audit::append_with_heads(conn, event, heads).await?)
        }
        Write::Keystore(w) => super::keystores::apply_in(conn, w).await?,
    })
}

/// The group's transaction, begun with plain SQL on the writer connection (sqlx's `Transaction`
/// cannot tell that SQLite rolled a transaction back by itself, after an I/O error, and would
/// then refuse every later `BEGIN` on that connection).
///
/// If it is dropped neither committed nor rolled back (a panic, the runtime shutting down) or a
/// `ROLLBACK` fails, the connection is closed rather than returned to the pool mid-transaction.
///
/// `relaxed`: the transaction runs with `synchronous=NORMAL`, set by the statement that begins it
/// (the writer connection has no standing level: every transaction on it sets its own as it
/// begins, see [`super::BEGIN_DURABLE`]).
struct Open {
    conn: PoolConnection<Sqlite>,
    ended: bool,
}

/// The statements that begin the group's transaction, in one round trip to the connection's
/// thread: `relaxed` also sets `synchronous=NORMAL`.
fn begin_sql(relaxed: bool) -> &'static str {
    if relaxed {
        "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
    } else {
        "BEGIN IMMEDIATE"
    }
}

impl Open {
    async fn begin(mut conn: PoolConnection<Sqlite>, relaxed: bool) -> Result<Open, sqlx::Error> {
        // On an error nothing began (a failed `BEGIN` starts no transaction).
        sqlx::raw_sql(begin_sql(relaxed))
            .execute(&mut *conn)
            .await?;
        Ok(Open { conn, ended: false })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    async fn commit(&mut self) -> Result<(), sqlx::Error> {
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

    /// One in-memory connection, enough for the writer alone.
    async fn memory_pool() -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("pool")
    }

    #[tokio::test]
    async fn the_task_ends_with_the_last_writer() {
        let pool = memory_pool().await;
        let (writer, task) = spawn(pool, None, None);
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

    /// A file database in WAL mode, as `SqliteStore::open` makes it, with one connection.
    async fn file_pool(dir: &std::path::Path) -> (SqlitePool, PathBuf) {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let path = dir.join("w.db");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .expect("pool");
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .expect("table");
        (pool, path)
    }

    #[tokio::test]
    async fn other_transactions_after_a_flushed_group_begin_at_synchronous_full() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = file_pool(dir.path()).await;
        let (writer, task) = spawn(pool.clone(), Some(SyncFiles::new(path)), None);
        let done = writer
            .submit(Job::Batch(WriteBatch::default()))
            .await
            .expect("answered after the flush");
        assert!(done.is_empty());
        let level = || async {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .expect("pragma");
            level
        };
        // The group left its own level (NORMAL, 1) on the connection...
        assert_eq!(level().await, 1, "synchronous=NORMAL");
        // ...and every other write transaction sets FULL (2) as it begins.
        let mut tx = pool
            .begin_with(crate::sqlite::BEGIN_DURABLE)
            .await
            .expect("begin");
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .expect("pragma");
        assert_eq!(inside, 2, "synchronous=FULL");
        tx.rollback().await.expect("rollback");
        drop(writer);
        task.await.expect("the writer and its sync thread end");
    }

    #[test]
    fn sync_flushes_the_wal_or_else_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("d.db");
        std::fs::write(&db, b"db").expect("db");
        let mut files = SyncFiles::new(db);
        // No WAL file: the database file is flushed.
        files.sync().expect("database flushed");
        assert!(files.open.is_none());
        std::fs::write(&files.wal, b"wal").expect("wal");
        files.sync().expect("WAL flushed");
        assert!(files.open.is_some(), "WAL kept open");
        // A WAL removed and made again is a new file, opened again.
        std::fs::remove_file(&files.wal).expect("rm");
        std::fs::write(dir.path().join("other"), b"x").expect("other");
        std::fs::write(&files.wal, b"wal 2").expect("wal 2");
        files.sync().expect("new WAL flushed");
        let second = files
            .open
            .as_ref()
            .map(|(_, ino)| *ino)
            .expect("WAL kept open");
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(second, std::fs::metadata(&files.wal).expect("meta").ino());
        // Neither file: an error, not a silent success.
        let mut gone = SyncFiles::new(dir.path().join("missing.db"));
        assert!(gone.sync().is_err());
    }

    #[tokio::test]
    async fn after_a_failed_flush_no_write_is_made_or_answered_as_durable() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = memory_pool().await;
        // Neither a database nor a WAL is at `path` yet: the first flush fails.
        let path = dir.path().join("later.db");
        let (writer, task) = spawn(pool.clone(), Some(SyncFiles::new(path.clone())), None);
        let first = writer.submit(Job::Batch(WriteBatch::default())).await;
        let err = first.expect_err("a failed flush answered as durable");
        assert!(format!("{err:?}").contains("flushing"), "{err:?}");
        assert!(writer.is_broken());
        // A flush would succeed now; writes stay refused before they run (run, this one would
        // fail on its own: the database has no tables).
        std::fs::write(&path, b"db").expect("db");
        let job = Job::SetPolicies {
            instance_id: "i".into(),
            policies: "{}".into(),
            audit: AuditEventInput {
                instance_id: "i".into(),
                at: 1,
                body: "{}".into(),
                fields: None,
            },
        };
        let err = writer
            .submit(job)
            .await
            .expect_err("a write after a failed flush");
        assert!(format!("{err:?}").contains("earlier flush"), "{err:?}");
        let second = writer.submit(Job::Batch(WriteBatch::default())).await;
        assert!(second.is_err(), "a write after a failed flush was answered");
        drop(writer);
        task.await.expect("the writer and its sync thread end");
    }

    /// Once the writer is broken, the journal's drain loop stops instead of failing every few
    /// milliseconds: the events left in the journal wait for the next open.
    #[tokio::test]
    async fn the_drain_loop_stops_with_a_broken_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("d.db"))
                    .create_if_missing(true),
            )
            .await
            .expect("pool");
        super::super::migrate::run(&pool).await.expect("schema");
        let journal = Journal::open_shared(&dir.path().join("d.db"), &pool)
            .await
            .expect("journal");
        // Flushes fail: no database file where the sync looks.
        let sync = SyncFiles::new(dir.path().join("elsewhere.db"));
        let (writer, task) = spawn(pool.clone(), Some(sync), Some(journal.clone()));
        let event = AuditEventInput {
            instance_id: "i".into(),
            at: 1,
            body: r#"{"action":"key.read"}"#.into(),
            fields: None,
        };
        journal.append(&pool, &event).await.expect("appended");
        assert!(writer.drain(false).await.is_err(), "a flush that failed");
        assert!(writer.is_broken());
        journal.append(&pool, &event).await.expect("appended");
        assert!(journal.has_pending());
        let stopped = tokio::time::timeout(
            Duration::from_secs(2),
            super::super::journal::drain_loop(Arc::downgrade(&journal), writer.downgrade()),
        )
        .await;
        assert!(
            stopped.is_ok(),
            "the drain loop went on with a broken writer"
        );
        drop(writer);
        task.await.expect("the writer and its sync thread end");
    }

    #[test]
    fn the_inode_number_alone_is_read() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").expect("file");
        let expected = std::fs::metadata(&path).expect("meta").ino();
        assert_eq!(inode_of(&path).expect("inode"), expected);
        // A missing file is `NotFound`, which `SyncFiles::sync` tells apart from other errors.
        let missing = inode_of(&dir.path().join("missing")).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
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
