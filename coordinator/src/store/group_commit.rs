//! Group commit: one writer task per store takes saga writes from every running saga and
//! commits whatever has queued up in one transaction. PostgreSQL's store runs it as a tokio
//! task ([`GroupCommit`]); SQLite's runs the same batches on its writer thread
//! (`sqlite_writer.rs`), with the types and counters here.
//!
//! At concurrency 1 this costs nothing (a batch of one); under load, hundreds of appends
//! share one commit and one fsync, which is how the coordinator approaches the database's
//! commit rate in sagas rather than in events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
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

/// A backend's way to commit a batch in one transaction. The outer `Result` fails the whole
/// batch (the transaction did not commit); the inner ones are per write (fenced, conflict).
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Result<WriteAck>>>;
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

/// The handle to a store's writer task.
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Starts the writer task.
    pub(crate) fn start(writer: impl BatchWriter) -> GroupCommit {
        let (jobs, mut queue) = mpsc::channel::<Job>(MAX_BATCH * 8);
        let counters = Arc::new(Counters::default());
        let stats = counters.clone();
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = queue.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (writes, replies): (Vec<Write>, Vec<_>) = batch.drain(..).map(|j| (j.write, j.reply)).unzip();
                let result = writer.write_batch(&writes).await;
                match result {
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
        match self.submit(Write::Create(new)).await? {
            WriteAck::Created(c) => Ok(*c),
            WriteAck::Appended(_) => Err(Error::Store("writer answered a create with an append".into())),
        }
    }

    /// Appends within the next batch.
    pub(crate) async fn append(&self, append: Append) -> Result<AppendAck> {
        match self.submit(Write::Append(append)).await? {
            WriteAck::Appended(a) => Ok(a),
            WriteAck::Created(_) => Err(Error::Store("writer answered an append with a create".into())),
        }
    }

    /// Work counters since start.
    pub(crate) fn stats(&self) -> StoreStats {
        self.counters.stats()
    }
}
