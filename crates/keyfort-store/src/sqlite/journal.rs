//! The audit journal: the events of reads are appended to a file, chained, before their
//! callers are answered, and moved into `audit_events` in bulk behind them.
//!
//! A read (a wrap, an unwrap, a get) changes nothing but the audit trail, and must not be
//! answered before its event would survive a crash of this process. Committing one small SQLite
//! transaction per group of reads met that, at a price larger than the read itself: the request
//! parked until the writer task had run the group's statements through the connection's worker
//! thread. Here the request appends the event to the journal file itself (one `write`, into the
//! kernel's page cache: a crash of the process cannot lose it), and the writer task moves the
//! journal's events into the database with the next group it commits, or within
//! [`DRAIN_EVERY`] (the [`drain_loop`]). That group's flush takes them to the disk, so a read's
//! event reaches the disk about as soon as before; only a power loss in those milliseconds can
//! lose it, and then the chain ends earlier, with no gap.
//!
//! # One chain, two writers
//!
//! An event's `seq` and `hash` follow the last event of its instance's chain, wherever that is.
//! The journal keeps every chain's head that it or the writer has moved since the store opened
//! ([`State::heads`]), and both take them under one lock:
//!
//! * a journal append holds the lock for the head lookup and to stage its record, then, after
//!   one yield, takes it again to write every staged record with one `write` unless another
//!   appender of the batch already has ([`State::flush`]); it is answered once its record is
//!   written. A staged record is already its chain's head; if the `write` fails, each chain of
//!   the batch gets its head before the batch back;
//! * every write transaction that appends events (the writer's groups, and the few writes that
//!   take the writer connection directly) holds it from its `BEGIN` to after its `COMMIT`,
//!   through a [`ChainLock`], which first writes the staged records. It first inserts every
//!   event still only in the journal, so the database's chains never have a gap, and a change
//!   committed after a read carries the read's event with it: the write-ahead log keeps a
//!   prefix of its commits, whatever fails;
//! * a drain, a transaction that only moves the journal's events into the database, holds it
//!   only to write the staged records and take them ([`Journal::take_pending`]): it changes no
//!   chain head, so reads go on appending while it runs.
//!
//! If a transaction fails, the journal's events it took go back to its queue, in order, for the
//! next. Each of these transactions takes the journal's writer turn ([`Journal::writer_turn`])
//! and then the writer connection before the lock, so none can insert events while another
//! still holds earlier ones, and a drain can give its events back without waiting for a
//! transaction that waits for it. The turn matters when several stores of one process use the
//! database: they share its journal, but each has a writer connection of its own.
//!
//! # Files
//!
//! The journal is a directory next to the database (`<database>-audit/`) of segment files
//! `<number>.seg`, each a sequence of records `len: u32 LE ‖ payload`, where the payload is
//! `instance_id` (u32 LE length ‖ UTF-8), `seq` (i64 LE), `at` (i64 LE), `body` (u32 LE length ‖
//! UTF-8), `prev_hash` (32 bytes), `hash` (32 bytes), `check` (the first 8 bytes of the SHA-256
//! of the payload before it; the chain hash does not cover `instance_id`). A record is valid only
//! if both verify. The drain loop starts a new segment once the current one passes
//! [`SEGMENT_BYTES`], and removes the older ones once their events are committed and flushed.
//!
//! At open, [`Journal::open`] moves the events the database lacks into it: for each instance,
//! the records that continue its chain (the next `seq`, the right `prev_hash`), and nothing after
//! a gap, a torn record or a record that does not verify. It never fills a hole in the middle of
//! a chain. Then it removes every segment and starts a new one. A lock file keeps a second
//! process from opening the same database (it would keep chain heads of its own); stores of one
//! process share the database's journal ([`Journal::open_shared`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use super::audit::{self, ChainHeads, Head};
use super::{Conn, writer};
use crate::chain::{HASH_LEN, chain_hash};
use crate::{AuditEventInput, AuditEventRecord, Result, StoreError};
use keyfort_crypto::digest::sha256;

/// How often the drain loop moves the journal's events into the database.
pub(super) const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Events waiting in the journal that make the drain loop move them at once.
const DRAIN_AT: usize = 2048;
/// A segment past this size is replaced by a new one at the next drain.
const SEGMENT_BYTES: u64 = 8 << 20;
/// How long opening waits for the journal's lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// The bytes of a record's payload check.
const CHECK_LEN: usize = 8;
/// The largest record payload read back (an event body is far smaller).
const MAX_RECORD: usize = 4 << 20;

/// The journal of one database.
pub(super) struct Journal {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// How many events wait in [`State::pending`], readable without the lock.
    waiting: AtomicUsize,
    /// Wakes the drain loop early.
    nudge: Notify,
    /// Held open for its lock, until the journal is dropped or closed.
    lock: std::sync::Mutex<Option<File>>,
    /// See [`Journal::writer_turn`].
    turn: Mutex<()>,
}

/// What the journal's lock protects.
pub(super) struct State {
    file: File,
    segment: u64,
    len: u64,
    /// The last `(seq, hash)` of each chain appended to since the store opened, in the journal
    /// or in the database. The authority for those chains: the database may lag behind it.
    heads: HashMap<String, Head>,
    /// Events in the journal and not yet in the database, in order.
    pending: Vec<AuditEventRecord>,
    /// Events appended to their chains (their heads are in `heads`) but not yet written to the
    /// file, in order, each with its chain's head before it; see [`State::flush`].
    staged: Vec<(AuditEventRecord, Option<Head>)>,
    /// The records of `staged`, encoded.
    staged_bytes: Vec<u8>,
    /// What the appenders of `staged` wait for.
    batch: Arc<Batch>,
    /// Set by [`Journal::close`]: appends are refused.
    closed: bool,
}

/// The outcome of writing one batch of staged records: `Err` with the error's kind and text.
#[derive(Default)]
struct Batch(std::sync::OnceLock<std::result::Result<(), (io::ErrorKind, String)>>);

impl State {
    /// Writes the staged records with one `write`. Written, they join `pending`; if the write
    /// fails, the file is cut back and every chain they continued gets its head before them
    /// back (in reverse order, so each ends at the head it had before the batch), as if they
    /// had never been appended. Their appenders learn which through the batch.
    fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let batch = std::mem::take(&mut self.batch);
        let outcome = match self.file.write_all(&self.staged_bytes) {
            Ok(()) => {
                self.len += self.staged_bytes.len() as u64;
                self.pending
                    .extend(staged.into_iter().map(|(record, _)| record));
                Ok(())
            }
            Err(e) => {
                // Cut a partial write off, so that the records after it can be read back.
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::error!(error = %cut, "cannot cut a partial audit journal record");
                }
                for (record, before) in staged.into_iter().rev() {
                    match before {
                        Some(head) => self.heads.insert(record.instance_id, head),
                        None => self.heads.remove(&record.instance_id),
                    };
                }
                Err((e.kind(), e.to_string()))
            }
        };
        self.staged_bytes.clear();
        // Set once, here, by the only holder of the state that took the batch.
        let _ = batch.0.set(outcome);
    }

    /// Events not yet in the database, staged or written.
    fn waiting(&self) -> usize {
        self.pending.len() + self.staged.len()
    }
}

impl Journal {
    /// Opens the journal of the database at `database`, whose schema is up to date, moves the
    /// events it holds into the database through `pool` (the writer connection), and starts an
    /// empty segment.
    ///
    /// Within one process, the stores of one database share its journal: a second open gets the
    /// first one's while it is alive and not closed.
    pub(super) async fn open_shared(database: &Path, pool: &SqlitePool) -> Result<Arc<Journal>> {
        static OPEN: std::sync::LazyLock<Mutex<HashMap<PathBuf, std::sync::Weak<Journal>>>> =
            std::sync::LazyLock::new(Default::default);
        let key = database
            .canonicalize()
            .unwrap_or_else(|_| database.to_path_buf());
        let mut open = OPEN.lock().await;
        open.retain(|_, journal| journal.strong_count() > 0);
        if let Some(journal) = open.get(&key).and_then(std::sync::Weak::upgrade)
            && !journal.state.lock().await.closed
        {
            return Ok(journal);
        }
        let journal = Arc::new(Journal::open(database, pool).await?);
        open.insert(key, Arc::downgrade(&journal));
        Ok(journal)
    }

    async fn open(database: &Path, pool: &SqlitePool) -> Result<Journal> {
        let mut dir = database.as_os_str().to_owned();
        dir.push("-audit");
        let dir = PathBuf::from(dir);
        let open_error = |e: io::Error| StoreError::Open {
            path: dir.display().to_string(),
            source: sqlx::Error::Io(e),
        };
        fs::create_dir_all(&dir).map_err(open_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(open_error)?;
        // A closed store of this process may still be letting its journal go.
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(open_error(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        "the database is open in another Keyfort process",
                    )));
                }
                Err(fs::TryLockError::Error(e)) => return Err(open_error(e)),
            }
        }
        let segments = segments(&dir).map_err(open_error)?;
        let heads = replay(&dir, &segments, pool).await?;
        for (_, path) in &segments {
            fs::remove_file(path).map_err(open_error)?;
        }
        let next = segments.last().map_or(1, |(n, _)| n + 1);
        let file = create_segment(&dir, next).map_err(open_error)?;
        Ok(Journal {
            dir,
            state: Arc::new(Mutex::new(State {
                file,
                segment: next,
                len: 0,
                heads,
                pending: Vec::new(),
                staged: Vec::new(),
                staged_bytes: Vec::new(),
                batch: Arc::default(),
                closed: false,
            })),
            waiting: AtomicUsize::new(0),
            turn: Mutex::new(()),
            nudge: Notify::new(),
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// Appends `event` to its instance's chain in the journal; `reader` reads the chain's head
    /// the first time. Answers once the record is written to the file.
    pub(super) async fn append(
        &self,
        reader: &SqlitePool,
        event: &AuditEventInput,
    ) -> Result<AuditEventRecord> {
        self.append_with(reader, event, AuditEventRecord::clone)
            .await
    }

    /// [`Journal::append`] without a copy of the event for the caller.
    pub(super) async fn record(&self, reader: &SqlitePool, event: &AuditEventInput) -> Result<()> {
        self.append_with(reader, event, |_| ()).await
    }

    /// Appends `event`; answers what `answer` takes from the stored record once the record is
    /// written to the file.
    ///
    /// The record joins its chain at once, and is staged; after one yield, the first of the
    /// appenders of that batch to run again writes every staged record with one `write` (the
    /// other requests ready on this thread append theirs meanwhile). A request is answered only
    /// once its record is written, as before, at a `write` shared by all of its batch.
    async fn append_with<T>(
        &self,
        reader: &SqlitePool,
        event: &AuditEventInput,
        answer: impl FnOnce(&AuditEventRecord) -> T,
    ) -> Result<T> {
        let (batch, answer) = {
            let mut state = self.state.lock().await;
            if state.closed {
                return Err(StoreError::Database(sqlx::Error::PoolClosed));
            }
            let head = match state.heads.get(&event.instance_id) {
                Some(head) => head.clone(),
                None => audit::head_in(reader, &event.instance_id).await?,
            };
            let record = audit::next_record(event, &head)?;
            let state = &mut *state;
            encode_into(&record, &mut state.staged_bytes);
            let before = state.heads.insert(
                record.instance_id.clone(),
                (record.seq, record.hash.clone()),
            );
            let answer = answer(&record);
            state.staged.push((record, before));
            let waiting = state.waiting();
            self.waiting.store(waiting, Ordering::Release);
            if waiting >= DRAIN_AT {
                self.nudge.notify_one();
            }
            (state.batch.clone(), answer)
        };
        tokio::task::yield_now().await;
        if batch.0.get().is_none() {
            self.state.lock().await.flush();
        }
        match batch.0.get() {
            Some(Ok(())) => Ok(answer),
            Some(Err((kind, text))) => Err(StoreError::Database(sqlx::Error::Io(io::Error::new(
                *kind,
                format!("writing the audit journal failed: {text}"),
            )))),
            // The flush above took this batch (it was staged while the lock was held, and only
            // a flush takes a batch, setting its outcome).
            None => Err(StoreError::Database(sqlx::Error::Io(io::Error::other(
                "the audit journal lost a batch",
            )))),
        }
    }

    /// The number of the segment being written.
    pub(super) async fn current_segment(&self) -> u64 {
        self.state.lock().await.segment
    }

    /// Refuses further appends and lets the lock go, so that the database can be opened again
    /// while this store's handles still exist. The events still waiting stay in the journal's
    /// files, for the next open.
    pub(super) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.flush();
        state.closed = true;
        drop(state);
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }

    /// Whether events wait to be moved into the database.
    pub(super) fn has_pending(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// The turn of one write transaction that inserts events (a group, a drain, or a direct
    /// write with an event), among every store of this process on the database: taken before
    /// the writer connection, held until the transaction has ended. Each store has its own
    /// writer connection; without the turn, one store's transaction could insert events after
    /// those that another store's drain has taken and not yet committed, leaving its chain a
    /// gap that the schema refuses.
    pub(super) async fn writer_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Takes the lock for a write transaction that appends events; see [`ChainLock`].
    pub(super) async fn lock(self: &Arc<Self>) -> ChainLock {
        let mut guard = self.state.clone().lock_owned().await;
        // The transaction reads the chain heads: none may rest on an unwritten record.
        guard.flush();
        let taken = std::mem::take(&mut guard.pending);
        ChainLock {
            journal: Some((self.clone(), guard)),
            taken,
            changed: HashMap::new(),
            done: false,
        }
    }

    /// Takes the waiting events for a transaction that appends none of its own (a drain),
    /// starting a new segment first if `rotate` and the current one is full.
    ///
    /// The lock is held only while taking them: no chain head changes, so appends go on while
    /// the transaction runs. The caller holds the writer connection, so no other transaction
    /// can insert events before it has committed these or given them back
    /// ([`Self::drained`]): the database's chains stay without gaps. Whoever takes the writer
    /// connection takes it before this lock, never the other way round.
    pub(super) async fn take_pending(&self, rotate: bool) -> Vec<AuditEventRecord> {
        let mut state = self.state.lock().await;
        state.flush();
        if rotate {
            rotate_segment(&self.dir, &mut state);
        }
        // `waiting` keeps counting them until they are committed ([`Self::drained`]), so that
        // a query that must see them queues its own drain behind this one.
        std::mem::take(&mut state.pending)
    }

    /// The transaction that took `taken` ([`Self::take_pending`]) has ended: committed, or, if
    /// not, the events go back in front of those appended meanwhile.
    pub(super) async fn drained(&self, taken: Vec<AuditEventRecord>, committed: bool) {
        let mut state = self.state.lock().await;
        if !committed {
            let later = std::mem::take(&mut state.pending);
            state.pending = taken;
            state.pending.extend(later);
        }
        self.waiting.store(state.waiting(), Ordering::Release);
    }

    /// Removes the segments before `current`. Only when every event they hold is in the
    /// database and flushed to the disk.
    pub(super) fn prune(&self, current: u64) {
        let Ok(all) = segments(&self.dir) else {
            return;
        };
        for (number, path) in all {
            if number < current
                && let Err(e) = fs::remove_file(&path)
            {
                tracing::warn!(segment = %path.display(), error = %e, "cannot remove an audit journal segment");
            }
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The journal's lock, held by a write transaction that appends events, from its `BEGIN` to
/// after its `COMMIT`. It hands the transaction the events waiting in the journal
/// ([`Self::insert_pending`]) and the chain heads ([`Self::heads`]). [`Self::committed`] makes
/// both the journal's; dropped without it, the events go back to the journal's queue and the
/// heads stay as they were. Without a journal (a store in memory) it locks nothing.
pub(super) struct ChainLock {
    journal: Option<(Arc<Journal>, OwnedMutexGuard<State>)>,
    taken: Vec<AuditEventRecord>,
    changed: HashMap<String, Head>,
    done: bool,
}

impl ChainLock {
    /// A lock on nothing, for a store without a journal.
    pub(super) fn none() -> ChainLock {
        ChainLock {
            journal: None,
            taken: Vec::new(),
            changed: HashMap::new(),
            done: false,
        }
    }

    /// The journal's waiting events, which the transaction inserts first, and the chain heads
    /// as this transaction sees them.
    pub(super) fn pending_and_heads(&mut self) -> (&[AuditEventRecord], ChainHeads<'_>) {
        let base = self.journal.as_ref().map(|(_, state)| &state.heads);
        (&self.taken, ChainHeads::new(base, &mut self.changed))
    }

    /// Inserts the journal's waiting events, on `conn` inside the transaction.
    pub(super) async fn insert_pending(
        &mut self,
        conn: &mut Conn,
    ) -> std::result::Result<(), sqlx::Error> {
        audit::insert_records(conn, &self.taken).await
    }

    /// The chain heads as this transaction sees them.
    pub(super) fn heads(&mut self) -> ChainHeads<'_> {
        let base = self.journal.as_ref().map(|(_, state)| &state.heads);
        ChainHeads::new(base, &mut self.changed)
    }

    /// The transaction committed: its events and heads are the journal's.
    pub(super) fn committed(mut self) {
        self.done = true;
        if let Some((journal, state)) = &mut self.journal {
            state.heads.extend(self.changed.drain());
            journal.waiting.store(state.waiting(), Ordering::Release);
        }
    }

    /// Starts a new segment if the current one is full.
    pub(super) fn rotate(&mut self) {
        if let Some((journal, state)) = self.journal.as_mut() {
            rotate_segment(&journal.dir, state);
        }
    }
}

/// Starts a new segment in `dir` if the current one is full.
fn rotate_segment(dir: &Path, state: &mut State) {
    if state.len >= SEGMENT_BYTES {
        match create_segment(dir, state.segment + 1) {
            Ok(file) => {
                state.file = file;
                state.segment += 1;
                state.len = 0;
            }
            Err(e) => tracing::warn!(error = %e, "cannot start an audit journal segment"),
        }
    }
}

impl Drop for ChainLock {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((journal, state)) = &mut self.journal {
            // Back in front of those appended meanwhile (none: the lock was held).
            let later = std::mem::take(&mut state.pending);
            state.pending = std::mem::take(&mut self.taken);
            state.pending.extend(later);
            journal.waiting.store(state.waiting(), Ordering::Release);
        }
    }
}

/// Moves the journal's events into the database every [`DRAIN_EVERY`] (sooner when many wait),
/// through the writer, and removes the segments whose events are flushed. Ends with the writer.
pub(super) async fn drain_loop(journal: std::sync::Weak<Journal>, queue: writer::WeakWriter) {
    // The segment below which none is left: the directory is read again only after a rotation.
    let mut pruned_below = None;
    loop {
        let Some(nudged) = journal.upgrade() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(DRAIN_EVERY) => {}
            () = nudged.nudge.notified() => {}
        }
        drop(nudged);
        let (Some(journal), Some(queue)) = (journal.upgrade(), queue.upgrade()) else {
            return;
        };
        if queue.is_broken() {
            // The writer refuses every write until the process restarts (its flush failed); the
            // events left in the journal move into the database at the next open.
            return;
        }
        if !journal.has_pending() {
            continue;
        }
        match queue.drain(true).await {
            // Only this loop starts segments: every event of the older ones was moved by this
            // drain or before it, and is flushed.
            Ok(()) => {
                let current = journal.current_segment().await;
                if pruned_below != Some(current) {
                    journal.prune(current);
                    pruned_below = Some(current);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "moving audit journal events into the database failed");
            }
        }
    }
}

/// The segment files of `dir`, by number.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

fn create_segment(dir: &Path, number: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(dir.join(format!("{number:016}.seg")))?;
    // The new name survives a power loss with the events written to it.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Moves the events of `segments` that continue their chains into the database, in one durable
/// transaction; the chain heads it leaves.
async fn replay(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    pool: &SqlitePool,
) -> Result<HashMap<String, Head>> {
    let mut heads: HashMap<String, Head> = HashMap::new();
    if segments.is_empty() {
        return Ok(heads);
    }
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(super::BEGIN_DURABLE)
        .execute(&mut *conn)
        .await?;
    let result = async {
        let mut broken: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut moved = Vec::new();
        for (_, path) in segments {
            let bytes = fs::read(path).map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                source: sqlx::Error::Io(e),
            })?;
            let (records, rest) = decode_all(&bytes);
            if rest > 0 {
                tracing::warn!(segment = %path.display(), bytes = rest, "audit journal segment ends with an unreadable record; ignoring the rest");
            }
            for record in records {
                if broken.contains(&record.instance_id) {
                    continue;
                }
                let head = match heads.get(&record.instance_id) {
                    Some(head) => head.clone(),
                    None => audit::head_in(&mut *conn, &record.instance_id).await?,
                };
                if record.seq <= head.0 {
                    heads.insert(record.instance_id.clone(), head);
                    continue;
                }
                if record.seq != head.0 + 1 || record.prev_hash != head.1 {
                    tracing::warn!(instance = %record.instance_id, seq = record.seq, "audit journal event does not continue its chain; ignoring it and the instance's later ones");
                    broken.insert(record.instance_id.clone());
                    heads.insert(record.instance_id.clone(), head);
                    continue;
                }
                heads.insert(
                    record.instance_id.clone(),
                    (record.seq, record.hash.clone()),
                );
                moved.push(record);
            }
        }
        audit::insert_records(&mut conn, &moved).await?;
        if !moved.is_empty() {
            tracing::info!(events = moved.len(), "audit journal events moved into the database");
        }
        Ok::<_, StoreError>(())
    }
    .await;
    match result {
        Ok(()) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(heads)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// `len ‖ payload` of `record`.
/// Appends `record`, encoded, to `out`.
fn encode_into(record: &AuditEventRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(
        4 + 4 + record.instance_id.len() + 16 + 4 + record.body.len() + 2 * HASH_LEN + CHECK_LEN,
    );
    out.extend_from_slice(&[0; 4]);
    put_str(out, &record.instance_id);
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.at.to_le_bytes());
    put_str(out, &record.body);
    out.extend_from_slice(&record.prev_hash);
    out.extend_from_slice(&record.hash);
    let check = sha256(&out[start + 4..]);
    out.extend_from_slice(&check[..CHECK_LEN]);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The valid records at the start of `bytes`, and how many bytes follow them unread.
fn decode_all(bytes: &[u8]) -> (Vec<AuditEventRecord>, usize) {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match decode_one(rest) {
            Some((record, used)) => {
                records.push(record);
                rest = &rest[used..];
            }
            None => break,
        }
    }
    (records, rest.len())
}

/// One record at the start of `bytes` and its length, if it is whole and verifies.
fn decode_one(bytes: &[u8]) -> Option<(AuditEventRecord, usize)> {
    let mut r = Reader(bytes);
    let len = usize::try_from(r.u32()?).ok()?;
    if len > MAX_RECORD {
        return None;
    }
    let payload = r.take(len)?;
    let (covered, check) = payload.split_at(payload.len().checked_sub(CHECK_LEN)?);
    if sha256(covered)[..CHECK_LEN] != *check {
        return None;
    }
    let mut p = Reader(covered);
    let instance_id = p.string()?;
    let seq = i64::from_le_bytes(p.array()?);
    let at = i64::from_le_bytes(p.array()?);
    let body = p.string()?;
    let prev_hash: [u8; HASH_LEN] = p.array()?;
    let hash: [u8; HASH_LEN] = p.array()?;
    if !p.0.is_empty() || seq < 1 || chain_hash(&prev_hash, seq, at, &body) != hash {
        return None;
    }
    let [target, action, outcome] = crate::chain::body_fields(&body);
    Some((
        AuditEventRecord {
            instance_id,
            seq,
            at,
            target,
            action,
            outcome,
            body,
            prev_hash: prev_hash.to_vec(),
            hash: hash.to_vec(),
        },
        4 + len,
    ))
}

/// A cursor over bytes that refuses to read past their end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {

    fn encode(record: &AuditEventRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(record, &mut out);
        out
    }
    use super::*;

    fn record(seq: i64, prev: &[u8], body: &str) -> AuditEventRecord {
        let hash = chain_hash(prev, seq, 5, body).to_vec();
        let [target, action, outcome] = crate::chain::body_fields(body);
        AuditEventRecord {
            instance_id: "i1".to_owned(),
            seq,
            at: 5,
            target,
            action,
            outcome,
            body: body.to_owned(),
            prev_hash: prev.to_vec(),
            hash,
        }
    }

    #[test]
    fn records_read_back_until_the_first_damage() {
        let first = record(1, &[0; 32], r#"{"action":"a","target":"k"}"#);
        let second = record(2, &first.hash, r#"{"action":"b"}"#);
        let mut bytes = encode(&first);
        bytes.extend(encode(&second));
        let (read, rest) = decode_all(&bytes);
        assert_eq!(read, vec![first.clone(), second.clone()]);
        assert_eq!(rest, 0);
        // A torn record: everything before it, nothing of it.
        for cut in 1..encode(&second).len() {
            let (read, rest) = decode_all(&bytes[..bytes.len() - cut]);
            assert_eq!(read, vec![first.clone()], "cut {cut}");
            assert_eq!(rest, encode(&second).len() - cut);
        }
        // Any changed byte of a record stops the reading there.
        let one = encode(&first).len();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let (read, _) = decode_all(&changed);
            assert!(read.len() <= if i < one { 0 } else { 1 }, "byte {i}");
        }
    }

    async fn database(dir: &Path) -> (SqlitePool, PathBuf) {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
        let path = dir.join("j.db");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .expect("pool");
        super::super::migrate::run(&pool).await.expect("migrations");
        (pool, path)
    }

    fn event(n: i64) -> AuditEventInput {
        AuditEventInput {
            instance_id: "i1".to_owned(),
            at: n,
            body: format!(r#"{{"action":"key.wrap","target":"k","n":{n}}}"#),
            fields: None,
        }
    }

    async fn stored(pool: &SqlitePool) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        sqlx::query_as(
            "SELECT e.value ->> 'seq', unhex(e.value ->> 'prev_hash'), unhex(e.value ->> 'hash') \
             FROM audit_blocks, json_each(events) e ORDER BY first_seq, e.key",
        )
        .fetch_all(pool)
        .await
        .expect("events")
    }

    /// What a killed process leaves: appended events that never reached the database are moved
    /// there by the next open, chained; a torn last record is left out; the segments go.
    #[tokio::test]
    async fn the_next_open_moves_what_a_crash_left() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Journal::open(&path, &pool).await.expect("open");
        let mut appended = Vec::new();
        for n in 1..=3 {
            appended.push(journal.append(&pool, &event(n)).await.expect("append"));
        }
        assert_eq!(appended[2].seq, 3);
        assert_eq!(appended[1].prev_hash, appended[0].hash);
        assert!(stored(&pool).await.is_empty(), "nothing moved yet");
        drop(journal);

        let journal = Journal::open(&path, &pool).await.expect("reopen");
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 3);
        for (row, record) in rows.iter().zip(&appended) {
            assert_eq!(
                (row.0, &row.1, &row.2),
                (record.seq, &record.prev_hash, &record.hash)
            );
        }
        // The chain goes on from the database's head.
        let fourth = journal.append(&pool, &event(4)).await.expect("append");
        assert_eq!((fourth.seq, &fourth.prev_hash), (4, &appended[2].hash));
        let fifth = journal.append(&pool, &event(5)).await.expect("append");
        drop(journal);

        // The process died in the middle of writing the fifth record.
        let all = segments(&path.with_extension("db-audit")).expect("segments");
        let (_, last) = all.last().expect("a segment");
        let len = fs::metadata(last).expect("meta").len();
        let file = OpenOptions::new()
            .write(true)
            .open(last)
            .expect("open segment");
        file.set_len(len - 10).expect("tear");
        drop(file);
        let journal = Journal::open(&path, &pool).await.expect("reopen");
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 4, "the torn fifth record is left out");
        assert_eq!(rows[3].2, fourth.hash);
        let next = journal.append(&pool, &event(6)).await.expect("append");
        assert_eq!((next.seq, &next.prev_hash), (5, &fourth.hash));
        assert_ne!(next.hash, fifth.hash);
        assert_eq!(
            segments(&path.with_extension("db-audit"))
                .expect("segments")
                .len(),
            1,
            "only the new segment is left"
        );
    }

    /// Appends from many tasks on two threads, whose writes are shared by batches: each is
    /// answered with its own place in the chain, and the file holds them all, chained, in
    /// order (the next open moves exactly them into the database).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_writes_and_keep_one_chain() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Arc::new(Journal::open(&path, &pool).await.expect("open"));
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (journal, pool) = (journal.clone(), pool.clone());
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for n in 0..50 {
                        let record = journal.append(&pool, &event(t * 100 + n)).await;
                        seqs.push(record.expect("append").seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<i64>>());
        let state = journal.state.lock().await;
        assert!(state.staged.is_empty());
        assert_eq!(state.pending.len(), 800);
        drop(state);
        drop(journal);

        Journal::open(&path, &pool).await.expect("reopen");
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 800);
        let mut prev = vec![0u8; HASH_LEN];
        for (i, (seq, prev_hash, hash)) in rows.into_iter().enumerate() {
            assert_eq!(seq, i as i64 + 1);
            assert_eq!(prev_hash, prev, "event {seq} continues the chain");
            prev = hash;
        }
    }

    /// A `write` that fails refuses its appenders, and the chain goes on from where it was
    /// before them: no gap, no fork, in the file or in the database.
    #[tokio::test]
    async fn a_failed_write_leaves_the_chain_as_it_was() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Journal::open(&path, &pool).await.expect("open");
        let first = journal.append(&pool, &event(1)).await.expect("append");
        let segment = {
            let mut state = journal.state.lock().await;
            let segment = journal.dir.join(format!("{:016}.seg", state.segment));
            // A handle that cannot write.
            state.file = File::open(&segment).expect("read-only");
            segment
        };
        let refused = journal.append(&pool, &event(2)).await;
        assert!(
            matches!(refused, Err(StoreError::Database(sqlx::Error::Io(_)))),
            "{refused:?}"
        );
        journal.state.lock().await.file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("writable");
        let next = journal.append(&pool, &event(3)).await.expect("append");
        assert_eq!((next.seq, &next.prev_hash), (2, &first.hash));
        drop(journal);

        Journal::open(&path, &pool).await.expect("reopen");
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].0, &rows[1].1), (2, &first.hash));
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_database_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Journal::open(&path, &pool).await.expect("open");
        let second = Journal::open(&path, &pool).await.expect_err("refused");
        assert!(
            format!("{second:?}").contains("another Keyfort process"),
            "{second:?}"
        );
        journal.close().await;
        assert!(journal.append(&pool, &event(1)).await.is_err(), "closed");
        Journal::open(&path, &pool).await.expect("open once closed");
    }

    /// A drain whose transaction fails gives its events back in front of those appended since;
    /// the next drain moves them all, in chain order.
    #[tokio::test]
    async fn a_failed_drain_gives_its_events_back_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Arc::new(Journal::open(&path, &pool).await.expect("open"));
        let writer = writer::Writer::start(pool.clone(), None, Some(journal.clone()));
        let first = journal.append(&pool, &event(1)).await.expect("append");
        let second = journal.append(&pool, &event(2)).await.expect("append");
        // A row in the first event's place makes the drain's INSERT fail.
        let blocker = record(1, &[0; HASH_LEN], r#"{"action":"x"}"#);
        let mut conn = pool.acquire().await.expect("conn");
        audit::insert_records(&mut conn, std::slice::from_ref(&blocker))
            .await
            .expect("blocker");
        drop(conn);
        writer.drain(false).await.expect_err("the drain fails");
        assert_eq!(stored(&pool).await.len(), 1, "only the blocker");
        assert!(journal.has_pending(), "the events are back in the queue");
        let third = journal.append(&pool, &event(3)).await.expect("append");
        sqlx::query("DELETE FROM audit_blocks")
            .execute(&pool)
            .await
            .expect("delete");
        writer.drain(false).await.expect("drained");
        let rows = stored(&pool).await;
        let expected = [&first, &second, &third];
        assert_eq!(rows.len(), 3);
        for (row, record) in rows.iter().zip(expected) {
            assert_eq!(
                (row.0, &row.1, &row.2),
                (record.seq, &record.prev_hash, &record.hash)
            );
        }
        assert!(!journal.has_pending());
    }

    /// A drain moves its events as blocks of at most 256: drains of each size around that bound
    /// move every event whole, in chain order.
    #[tokio::test]
    async fn a_drain_moves_any_number_of_events_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let (pool, path) = database(dir.path()).await;
        let journal = Arc::new(Journal::open(&path, &pool).await.expect("open"));
        let writer = writer::Writer::start(pool.clone(), None, Some(journal.clone()));
        let mut appended = Vec::new();
        for drained in [1, 16, 17, 256, 257, 343] {
            for _ in 0..drained {
                let n = i64::try_from(appended.len()).expect("n") + 1;
                appended.push(journal.append(&pool, &event(n)).await.expect("append"));
            }
            writer.drain(false).await.expect("drained");
            assert!(!journal.has_pending());
            let rows = stored(&pool).await;
            assert_eq!(rows.len(), appended.len(), "after a drain of {drained}");
            for (row, record) in rows.iter().zip(&appended) {
                assert_eq!(
                    (row.0, &row.1, &row.2),
                    (record.seq, &record.prev_hash, &record.hash)
                );
            }
        }
        let bodies: Vec<(String, i64)> = sqlx::query_as(
            "SELECT e.value ->> 'body', e.value ->> 'at' \
                 FROM audit_blocks, json_each(events) e ORDER BY first_seq, e.key",
        )
        .fetch_all(&pool)
        .await
        .expect("bodies");
        for (row, record) in bodies.iter().zip(&appended) {
            assert_eq!((&row.0, row.1), (&record.body, record.at));
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend([0; 64]);
        assert_eq!(decode_all(&bytes), (Vec::new(), 68));
    }
}
