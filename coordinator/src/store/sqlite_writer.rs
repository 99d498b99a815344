//! The SQLite store's writer: one thread that owns the only writing connection (rusqlite,
//! synchronous) and does every write of the store, the group commit included.
//!
//! Saga writes (creates and appends) queue on a channel; the thread takes whatever has
//! queued up and commits it in one `BEGIN IMMEDIATE` transaction, then answers each write.
//! The statements of a batch run on the thread that owns the connection, so a batch costs
//! two hand-offs between threads (the jobs in, the answers out) however many statements it
//! has; sqlx's SQLite driver makes each statement a message to its connection's thread and
//! back. Other writes (definitions, leases, claims, cancels) are closures run on the same
//! thread between batches, so no two writers of this store wait on SQLite's file lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::group_commit::{Counters, MAX_BATCH, Write, WriteAck};
use super::rows::{SAGA_COLUMNS, saga_from_row};
use super::{Append, AppendAck, Created, NewSaga, SagaRecord, StoreStats};
use crate::{Error, Result};

/// A closure run on the writer thread with its connection.
type Task = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    Write(Write, oneshot::Sender<Result<WriteAck>>),
    Run(Task),
}

/// The handle to the writer thread; the thread ends (closing its connection) when the
/// handle is dropped and the jobs queued before are done.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

fn stopped() -> Error {
    Error::Store("the SQLite store's writer thread has stopped".into())
}

impl SqliteWriter {
    /// Opens the writing connection to the (already migrated) file at `path` on a new
    /// thread: WAL, `synchronous=FULL`, a 10 s busy timeout, foreign keys on.
    pub(crate) async fn open(path: &Path) -> Result<SqliteWriter> {
        let (jobs, queue) = mpsc::channel::<Job>(MAX_BATCH * 8);
        let counters = Arc::new(Counters::default());
        let (opened, open_result) = oneshot::channel();
        let path: PathBuf = path.to_owned();
        let stats = counters.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match connect(&path) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    serve(conn, queue, &stats);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| Error::Store(format!("starting the SQLite writer thread: {e}")))?;
        open_result.await.map_err(|_| stopped())??;
        Ok(SqliteWriter { jobs, counters })
    }

    /// Creates a saga within the next batch.
    pub(crate) async fn create(&self, new: NewSaga) -> Result<Created> {
        self.submit(Write::Create(new)).await?.into_created()
    }

    /// Appends within the next batch.
    pub(crate) async fn append(&self, append: Append) -> Result<AppendAck> {
        self.submit(Write::Append(append)).await?.into_appended()
    }

    async fn submit(&self, write: Write) -> Result<WriteAck> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Write(write, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the writer thread, between two batches, and returns what it returned.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task: Task = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.jobs.send(Job::Run(task)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Work counters since start.
    pub(crate) fn stats(&self) -> StoreStats {
        self.counters.stats()
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store(format!(
            "{}: journal mode {mode}, not WAL",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The thread's loop: takes the jobs queued since the last batch, commits their writes in
/// one transaction (at most [`MAX_BATCH`] a transaction) and runs the closures in their
/// order among them.
fn serve(mut conn: Connection, mut queue: mpsc::Receiver<Job>, counters: &Counters) {
    let mut writes: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<oneshot::Sender<Result<WriteAck>>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Write(write, reply) => {
                    writes.push(write);
                    replies.push(reply);
                    if writes.len() == MAX_BATCH {
                        commit(&mut conn, &mut writes, &mut replies, counters);
                    }
                }
                Job::Run(task) => {
                    commit(&mut conn, &mut writes, &mut replies, counters);
                    task(&mut conn);
                }
            }
            next = queue.try_recv().ok();
        }
        commit(&mut conn, &mut writes, &mut replies, counters);
    }
}

/// Commits `writes` in one transaction and answers each of them, only once the commit (and
/// its fsync) returned; answers all with the error when the transaction failed.
fn commit(
    conn: &mut Connection,
    writes: &mut Vec<Write>,
    replies: &mut Vec<oneshot::Sender<Result<WriteAck>>>,
    counters: &Counters,
) {
    if writes.is_empty() {
        return;
    }
    match write_batch(conn, writes) {
        Ok(results) => {
            counters.record(writes);
            for (reply, result) in replies.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies.drain(..) {
                let _ = reply.send(Err(Error::Store(message.clone())));
            }
        }
    }
    writes.clear();
}

/// One batch in one transaction. The outer `Result` fails the whole batch (nothing of it
/// committed); the inner ones are per write (fenced, idempotency conflict).
fn write_batch(conn: &mut Connection, batch: &[Write]) -> Result<Vec<Result<WriteAck>>> {
    // IMMEDIATE: take the write lock up front (waiting out `busy_timeout`), so that another
    // process writing the same file cannot make the batch's first write fail with
    // SQLITE_BUSY after its reads.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        results.push(match write {
            Write::Create(new) => {
                let created = create(&tx, new)?;
                if let (Ok(Created::New(_)), Some(first)) = (&created, new.initial_append()) {
                    insert_events(&tx, &first)?;
                }
                created.map(|c| WriteAck::Created(Box::new(c)))
            }
            Write::Append(append) => {
                let ack = update_for_append(&tx, append)?;
                if ack.is_ok() {
                    insert_events(&tx, append)?;
                }
                ack.map(WriteAck::Appended)
            }
        });
    }
    tx.commit()?;
    Ok(results)
}

fn create(conn: &Connection, new: &NewSaga) -> Result<Result<Created>> {
    if let Some(key) = &new.idempotency_key {
        let existing = conn
            .prepare_cached(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE idempotency_key = ?"))?
            .query_row([key], |row| Ok(saga_from_row(row)))
            .optional()?
            .transpose()?;
        if let Some(existing) = existing {
            return Ok(if new.repeats(&existing) {
                Ok(Created::Existing(existing))
            } else {
                Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    existing: existing.id,
                })
            });
        }
    }
    let record = conn
        .prepare_cached(&format!(
            "INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
             idempotency_key, trace_context, created_at_ms, updated_at_ms, event_count) \
             VALUES (?, ?, ?, ?, 'running', ?, ?, 1, ?, ?, ?, ?, ?) RETURNING {SAGA_COLUMNS}"
        ))?
        .query_row(
            params![
                new.id.to_string(),
                new.definition,
                new.version,
                new.input.to_string(),
                new.owner,
                new.lease_until_ms,
                new.idempotency_key,
                new.trace_context,
                new.now_ms,
                new.now_ms,
                new.events.len() as i64,
            ],
            |row| Ok(saga_from_row(row)),
        )??;
    Ok(Ok(Created::New(record)))
}

/// The saga-row half of an append: the fenced UPDATE. An append whose fence does not hold
/// gets `Fenced` (or `SagaNotFound`) and writes nothing.
fn update_for_append(conn: &Connection, append: &Append) -> Result<Result<AppendAck>> {
    let id = append.saga_id.to_string();
    let cancel_requested: Option<i64> = conn
        .prepare_cached(
            "UPDATE sagas SET status = ?1, error = ?2, updated_at_ms = ?3, event_count = MAX(event_count, ?4), \
             cancel_requested = CASE WHEN ?1 = 'running' THEN cancel_requested ELSE 0 END \
             WHERE id = ?5 AND owner = ?6 AND generation = ?7 RETURNING cancel_requested",
        )?
        .query_row(
            params![
                append.status.as_str(),
                append.error,
                append.now_ms,
                append.first_seq + append.events.len() as i64,
                id,
                append.fence.owner,
                append.fence.generation,
            ],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(cancel_requested) = cancel_requested {
        return Ok(Ok(AppendAck {
            cancel_requested: cancel_requested != 0,
        }));
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM sagas WHERE id = ?")?
        .query_row([&id], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(Err(if exists {
        Error::Fenced(append.saga_id)
    } else {
        Error::SagaNotFound(append.saga_id)
    }))
}

/// Writes the events of `append`. An event already stored at its `(saga_id, seq)` is left
/// alone, which keeps appends idempotent.
fn insert_events(conn: &Connection, append: &Append) -> Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO saga_events (saga_id, seq, at_ms, event) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )?;
    let id = append.saga_id.to_string();
    for (k, event) in append.events.iter().enumerate() {
        let text = serde_json::to_string(event).map_err(|e| Error::Store(format!("event of {id}: {e}")))?;
        insert.execute(params![id, append.first_seq + k as i64, append.now_ms, text])?;
    }
    Ok(())
}

/// The rows of `statement` run with `params`, as saga records.
pub(super) fn saga_rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<SagaRecord>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(saga_from_row(row)?);
    }
    Ok(records)
}
