//! Group commit: one writer task per store takes saga writes from every running saga and
//! commits whatever has queued up in one transaction. PostgreSQL's store runs it as a tokio
//! task ([`GroupCommit`]); SQLite's runs the same batches on its writer thread
//! (`sqlite_writer.rs`), with the types and counters here.
//!
//! At concurrency 1 this costs nothing (a batch of one); under load, hundreds of appends
//! share one commit and one fsync, which is how the coordinator approaches the database's
//! commit rate in sagas rather than in events. The PostgreSQL writer keeps two batches in
//! flight: one runs its statements while the one before waits for its commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::{Append, AppendAck, Created, NewSaga, StoreStats};
use crate::{Error, Result};

/// Most writes one transaction carries.
pub(crate) const MAX_BATCH: usize = 512;

/// A write that goes through the group committer.
pub(crate) enum Write {
    Create(NewSaga),
    Append(Append),
}

/// What a write did.
pub(crate) enum WriteAck {
    Created(Box<Created>),
    Appended(AppendAck),
}

impl WriteAck {
    /// The answer to a create (an append's answer here is the writer's bug).
    pub(crate) fn into_created(self) -> Result<Created> {
        match self {
            WriteAck::Created(c) => Ok(*c),
            WriteAck::Appended(_) => Err(Error::Store("writer answered a create with an append".into())),
        }
    }

    /// The answer to an append (a create's answer here is the writer's bug).
    pub(crate) fn into_appended(self) -> Result<AppendAck> {
        match self {
            WriteAck::Appended(a) => Ok(a),
            WriteAck::Created(_) => Err(Error::Store("writer answered an append with a create".into())),
        }
    }
}

/// A backend's way to commit a batch in one transaction. The outer `Result` fails the whole
/// batch (the transaction did not commit); the inner ones are per write (fenced, conflict).
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Commits `batch`; calls [`Committing::now`] when only the commit itself is left.
    async fn write_batch(&self, batch: &[Write], committing: &mut Committing) -> Result<Vec<Result<WriteAck>>>;
}

/// A batch's signal to the writer task that it has reached its commit: the next batch may
/// start running its statements while this one waits for the database's flush.
pub(crate) struct Committing(Option<oneshot::Sender<()>>);

impl Committing {
    /// Signals that the batch is committing (once; later calls do nothing).
    pub(crate) fn now(&mut self) {
        if let Some(signal) = self.0.take() {
            let _ = signal.send(());
        }
    }
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<WriteAck>>,
}

/// The work counters of a writer, behind [`StoreStats`].
#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
    max_batch: AtomicU64,
}

impl Counters {
    /// Counts a committed batch.
    pub(crate) fn record(&self, writes: &[Write]) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(writes.len() as u64, Ordering::Relaxed);
        let events: usize = writes
            .iter()
            .map(|w| match w {
                Write::Append(a) => a.events.len(),
                Write::Create(new) => new.events.len(),
            })
            .sum();
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.max_batch.fetch_max(writes.len() as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// Commits one batch and answers its writers.
async fn commit(writer: &impl BatchWriter, stats: &Counters, batch: Vec<Job>, mut committing: Committing) {
    let (writes, replies): (Vec<Write>, Vec<_>) = batch.into_iter().map(|j| (j.write, j.reply)).unzip();
    match writer.write_batch(&writes, &mut committing).await {
        Ok(results) => {
            stats.record(&writes);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(Error::Store(message.clone())));
            }
        }
    }
}

/// The handle to a store's writer task.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Starts the writer task, which keeps up to `depth` batches in flight, each in a
    /// transaction of its own. A batch takes every write queued when it starts; the next
    /// one starts only once the newest has run its statements and is committing, so that
    /// its statements overlap that commit's flush while writes keep queuing up for it (a
    /// new batch as soon as one write is queued would split the queue into more, smaller
    /// commits, which costs the database more CPU per saga).
    ///
    /// Why batches in flight together are safe: they commit in any order, so two writes
    /// whose order matters must never be in two of them at once, and they never are.
    /// - One saga has at most one write queued or in flight: its create is answered before
    ///   its task starts, and its driver awaits each append's answer (sent once the batch
    ///   committed, or failed and rolled back) before it submits the next.
    /// - Two drivers of one saga (the old owner's and an adopter's, here or on another
    ///   coordinator) write under two generations, and the adoption is a transaction of its
    ///   own that bumps the generation under the row lock: every write of the old generation
    ///   commits before it or is fenced, every write of the new one comes after it.
    /// - Creates with one idempotency key in two batches wait on each other at the unique
    ///   index and resolve as between two coordinators; batches take locks in one order, so
    ///   they do not deadlock (and a batch that meets a deadlock runs again).
    pub(crate) fn start(writer: impl BatchWriter, depth: usize) -> GroupCommit {
        let (jobs, mut queue) = mpsc::channel::<Job>(MAX_BATCH * 8);
        let counters = Arc::new(Counters::default());
        let stats = counters.clone();
        let depth = depth.max(1);
        tokio::spawn(async move {
            let (writer, stats) = (&writer, &*stats);
            let mut in_flight = FuturesUnordered::new();
            // The newest batch in flight until it reaches its commit (or ends).
            let mut running: Option<oneshot::Receiver<()>> = None;
            let mut open = true;
            while open || !in_flight.is_empty() {
                tokio::select! {
                    job = queue.recv(), if open && in_flight.len() < depth && running.is_none() => match job {
                        Some(first) => {
                            let mut batch = Vec::with_capacity(MAX_BATCH);
                            batch.push(first);
                            while batch.len() < MAX_BATCH {
                                match queue.try_recv() {
                                    Ok(job) => batch.push(job),
                                    Err(_) => break,
                                }
                            }
                            let (signal, committing) = oneshot::channel();
                            running = Some(committing);
                            in_flight.push(commit(writer, stats, batch, Committing(Some(signal))));
                        }
                        None => open = false,
                    },
                    _ = async { running.as_mut().expect("guarded by the condition").await }, if running.is_some() => {
                        running = None;
                    }
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                }
            }
        });
        GroupCommit { jobs, counters }
    }

    async fn submit(&self, write: Write) -> Result<WriteAck> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| Error::Store("the store's writer task has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Store("the store's writer task has stopped".into()))?
    }

    /// Creates a saga within the next batch.
    pub(crate) async fn create(&self, new: NewSaga) -> Result<Created> {
        self.submit(Write::Create(new)).await?.into_created()
    }

    /// Appends within the next batch.
    pub(crate) async fn append(&self, append: Append) -> Result<AppendAck> {
        self.submit(Write::Append(append)).await?.into_appended()
    }

    /// Work counters since start.
    pub(crate) fn stats(&self) -> StoreStats {
        self.counters.stats()
    }
}
