//! A region's storage: versions, the replication log, peer cursors, replica state and
//! intents, on one of two backends with the same schema and the same behaviour:
//!
//! - SQLite (`store/sqlite.rs`, the default; schema in `migrations/regions`): one file, WAL
//!   mode with `synchronous=FULL`.
//! - PostgreSQL (`store/postgres.rs`; schema in `migrations/regions-postgres`): one
//!   database per region, `synchronous_commit=on`.
//!
//! Either way a write is durable when its call returns, and every write goes through one
//! writer connection, so the replication log's sequence numbers are given in commit order
//! (a log shipper reading past a number never misses an entry committed later below it);
//! reads use a pool of connections beside it. [`Store`] holds one backend and hands each
//! call to it; the convergence side is in [`crate::store_convergence`].

pub(crate) mod postgres;
pub(crate) mod postgres_convergence;
pub(crate) mod postgres_open;
pub(crate) mod rows;
pub(crate) mod sqlite;
pub(crate) mod sqlite_convergence;

use std::collections::HashMap;
use std::path::Path;

use crate::Result;
use regions_core::config::Storage;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::{self, Version};
use regions_core::protocol::LogEntry;
pub use regions_core::replica::{Incoming, ReplicaState};

/// One region's database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// The database a [`Store`] uses.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Runs the same call on whichever backend the store holds (each backend has an inherent
/// method of that name and signature).
macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match $self.backend() {
            crate::store::Backend::Sqlite($db) => $call.await,
            crate::store::Backend::Postgres($db) => $call.await,
        }
    };
}
pub(crate) use dispatch;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            backend: Backend::Sqlite(sqlite::Sqlite::open(path).await?),
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://...`; it must exist, and
    /// hold no other region's data) and migrates it.
    pub async fn connect(url: &str) -> Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(postgres::Postgres::connect(url).await?),
        })
    }

    /// Opens the store a region's configuration names.
    pub async fn open_storage(storage: &Storage) -> Result<Store> {
        match storage {
            Storage::Sqlite(path) => Store::open(path).await,
            Storage::Postgres(url) => Store::connect(url).await,
        }
    }

    /// Records that the store belongs to region `name`, or checks that it does (refused:
    /// another region's data). A SQLite file, named after its region by default, is not
    /// checked.
    pub async fn claim(&self, name: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => db.claim(name).await,
        }
    }

    /// Closes the store's connections (the calls after it fail).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.writer.close().await;
                db.readers.close().await;
            }
            Backend::Postgres(db) => db.close().await,
        }
    }

    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Every stored version of `key` (newest first; among equal timestamps the greatest
    /// region last, so that [`mvcc::visible_at`], the last maximum, picks it:
    /// last-writer-wins on (timestamp, region)).
    pub async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        dispatch!(self, db => db.versions(key))
    }

    /// The version of `key` visible at `as_of` (tombstones included).
    pub async fn read(&self, key: &str, as_of: Timestamp) -> Result<Option<Version>> {
        Ok(mvcc::visible_at(&self.versions(key).await?, as_of).cloned())
    }

    /// Logs a strong write as pending; returns its sequence number.
    pub async fn log_pending(&self, key: &str, ts: Timestamp, value: Option<&str>) -> Result<i64> {
        dispatch!(self, db => db.log_pending(key, ts, value))
    }

    /// Commits a pending strong write: its version becomes visible, its entry committed,
    /// in one transaction.
    pub async fn commit_pending(
        &self,
        seq: i64,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        home: &str,
    ) -> Result<()> {
        dispatch!(self, db => db.commit_pending(seq, key, ts, value, home))
    }

    /// Aborts a pending strong write.
    pub async fn abort_pending(&self, seq: i64) -> Result<()> {
        dispatch!(self, db => db.abort_pending(seq))
    }

    /// Aborts every pending write (at start-up: none of them was acknowledged).
    pub async fn abort_all_pending(&self) -> Result<u64> {
        dispatch!(self, db => db.abort_all_pending())
    }

    /// Commits an async write: version and log entry in one transaction.
    pub async fn write_committed(&self, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<i64> {
        dispatch!(self, db => db.write_committed(key, ts, value, home))
    }

    /// Up to `limit` log entries after `after`, in order.
    pub async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>> {
        dispatch!(self, db => db.log_after(after, limit))
    }

    /// The earliest timestamp among log entries after `after` (not shipped yet).
    pub async fn earliest_after(&self, after: i64) -> Result<Option<Timestamp>> {
        dispatch!(self, db => db.earliest_after(after))
    }

    /// The last sequence number ever given (0: none); never reused, truncation included.
    pub async fn last_seq(&self) -> Result<i64> {
        dispatch!(self, db => db.last_seq())
    }

    /// Every peer's acknowledged position.
    pub async fn cursors(&self) -> Result<HashMap<String, i64>> {
        dispatch!(self, db => db.cursors())
    }

    /// Records that `peer` acknowledged the log up to `seq` (a cursor never goes back).
    pub async fn set_cursor(&self, peer: &str, seq: i64) -> Result<()> {
        dispatch!(self, db => db.set_cursor(peer, seq))
    }

    /// Drops log entries up to `seq` (every peer has them), pending ones excepted.
    /// Returns how many.
    pub async fn truncate_log(&self, seq: i64) -> Result<u64> {
        dispatch!(self, db => db.truncate_log(seq))
    }

    /// Entries left in the log.
    pub async fn log_len(&self) -> Result<i64> {
        dispatch!(self, db => db.log_len())
    }

    /// Stores a strong write of `home` before its home commits it (invisible to reads);
    /// storing it again changes nothing.
    pub async fn put_intent(&self, home: &str, entry: &LogEntry) -> Result<()> {
        dispatch!(self, db => db.put_intent(home, entry))
    }

    /// Intents stored for `home` and not resolved yet.
    pub async fn intent_count(&self, home: &str) -> Result<i64> {
        dispatch!(self, db => db.intent_count(home))
    }

    /// Applies a batch of `home`'s log in one transaction, skipping entries applied before,
    /// and records the closed timestamp. Returns the new state.
    pub async fn apply(&self, home: &str, entries: &[LogEntry], closed: Timestamp) -> Result<ReplicaState> {
        let incoming = Incoming {
            entries,
            closed,
            skip_to: None,
            gap: None,
        };
        self.apply_batch(home, incoming, &|_| None).await
    }

    /// [`Store::apply`] with what a batch may say beside its entries: how far it covers the
    /// log for this region, and a gap to repair. `tracked` names the rule prefix of keys
    /// whose concurrent writes are counted (keys written anywhere).
    pub async fn apply_batch(
        &self,
        home: &str,
        incoming: Incoming<'_>,
        tracked: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<ReplicaState> {
        dispatch!(self, db => db.apply_batch(home, incoming, tracked))
    }

    /// What this region applied from each other home.
    pub async fn replica_states(&self) -> Result<HashMap<String, ReplicaState>> {
        dispatch!(self, db => db.replica_states())
    }

    /// Garbage-collects versions no read at or after `horizon` can see. Returns how many.
    pub async fn gc(&self, horizon: Timestamp) -> Result<u64> {
        let mut dropped = 0;
        for key in dispatch!(self, db => db.keys_written_by(horizon))? {
            for ts in mvcc::collectable(&self.versions(&key).await?, horizon) {
                dropped += dispatch!(self, db => db.delete_versions(&key, ts))?;
            }
        }
        Ok(dropped)
    }
}
