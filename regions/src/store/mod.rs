//! The store port: what a region needs from its database, as one trait, [`Store`].
//!
//! Three implementations with the same behaviour (`regions/tests/store_conformance.rs` runs
//! every case against each):
//!
//! - [`MemoryStore`]: in memory, for unit tests;
//! - [`SqliteStore`] (the default; schema in `migrations/regions`): one file, WAL mode with
//!   `synchronous=FULL`;
//! - [`PostgresStore`] (schema in `migrations/regions-postgres`): one database per region,
//!   `synchronous_commit=on`.
//!
//! The two SQL stores are one type, [`SqlStore`], over either database: their statements
//! are written once (`store/sql/`), and `store/sqlite.rs` and `store/postgres.rs` hold only
//! what differs (connecting, migrations, how the log numbers its entries).
//!
//! Either way a write is durable when its call returns, and every write goes through one
//! writer connection, so the replication log's sequence numbers are given in commit order
//! (a log shipper reading past a number never misses an entry committed later below it);
//! reads use a pool of connections beside it.

mod memory;
mod postgres;
mod sql;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use regions_core::config::Storage;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::{self, Version};
use regions_core::op_ids::Applied;
use regions_core::protocol::{CounterRow, LogEntry, TxnCopy, VersionRow};
use regions_core::replica::{Incoming, ReplicaState};
use regions_core::txn::{TxnIntent, TxnStatus};

use crate::Result;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::{MIGRATOR as SQLITE_MIGRATOR, SqliteStore};

/// Names the rule prefix of a key whose concurrent writes are counted (a key written
/// anywhere), `None` for other keys.
pub type Tracked<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// Opens the store a region's configuration names (migrating it).
pub async fn open(storage: &Storage) -> Result<Arc<dyn Store>> {
    Ok(match storage {
        Storage::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        Storage::Postgres(url) => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// One region's database.
#[async_trait]
pub trait Store: Send + Sync {
    /// The backend's name: `memory`, `sqlite` or `postgres`.
    fn backend_name(&self) -> &'static str;

    /// Records that the store belongs to region `name`, or checks that it does (refused:
    /// another region's data). A SQLite file, named after its region by default, is not
    /// checked.
    async fn claim(&self, name: &str) -> Result<()>;

    /// Closes the store's connections (the calls after it fail).
    async fn close(&self);

    // Versions.

    /// Every stored version of `key` (newest first; among equal timestamps the greatest
    /// region last, so that [`mvcc::visible_at`], the last maximum, picks it:
    /// last-writer-wins on (timestamp, region)).
    async fn versions(&self, key: &str) -> Result<Vec<Version>>;

    /// The version of `key` visible at `as_of` (tombstones included).
    async fn read(&self, key: &str, as_of: Timestamp) -> Result<Option<Version>> {
        Ok(mvcc::visible_at(&self.versions(key).await?, as_of).cloned())
    }

    /// Keys with versions at or before `horizon` (what garbage collection looks at).
    async fn keys_written_by(&self, horizon: Timestamp) -> Result<Vec<String>>;

    /// Drops the versions of `key` at `ts` (of every origin). Returns how many.
    async fn delete_versions(&self, key: &str, ts: Timestamp) -> Result<u64>;

    /// Garbage-collects versions no read at or after `horizon` can see. Returns how many.
    async fn gc(&self, horizon: Timestamp) -> Result<u64> {
        let mut dropped = 0;
        for key in self.keys_written_by(horizon).await? {
            for ts in mvcc::collectable(&self.versions(&key).await?, horizon) {
                dropped += self.delete_versions(&key, ts).await?;
            }
        }
        Ok(dropped)
    }

    /// Distinct keys stored here that start with `prefix`, in byte order.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>>;

    // The home's log of its own writes.

    /// Logs a strong write as pending; returns its sequence number.
    async fn log_pending(&self, key: &str, ts: Timestamp, value: Option<&str>) -> Result<i64>;

    /// Commits a pending strong write: its version becomes visible, its entry committed,
    /// in one transaction.
    async fn commit_pending(&self, seq: i64, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<()>;

    /// Aborts a pending strong write.
    async fn abort_pending(&self, seq: i64) -> Result<()>;

    /// Aborts every pending write (at start-up: none of them was acknowledged).
    async fn abort_all_pending(&self) -> Result<u64>;

    /// Marks the store as restored from a backup: its next [`Store::rebase_if_restored`]
    /// starts a new log incarnation.
    async fn mark_restored(&self, now_ms: i64) -> Result<()>;

    /// On a store marked restored: in one transaction, drops the whole log, moves the next
    /// sequence number past `floor` (and past every number given before), and clears the
    /// mark. Returns the log's new last sequence number, or `None` when it was not marked.
    /// A peer that applied entries of the lost incarnation (numbers this backup never saw)
    /// therefore never takes a new entry for one of them; the log's start moving past every
    /// peer's position makes the shipper announce a gap, which anti-entropy repairs.
    async fn rebase_if_restored(&self, floor: i64) -> Result<Option<i64>>;

    /// Commits an async write: version and log entry in one transaction.
    async fn write_committed(&self, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<i64>;

    /// Up to `limit` log entries after `after`, in order.
    async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>>;

    /// The earliest timestamp among log entries after `after` (not shipped yet).
    async fn earliest_after(&self, after: i64) -> Result<Option<Timestamp>>;

    /// The last sequence number ever given (0: none); never reused, truncation included.
    async fn last_seq(&self) -> Result<i64>;

    /// The first sequence number left in the log (`None`: the log is empty).
    async fn first_seq(&self) -> Result<Option<i64>>;

    /// The highest sequence number truncated from the log (0: none). The log is contiguous
    /// above it: truncation never passes a pending entry.
    async fn truncated_upto(&self) -> Result<i64> {
        match self.first_seq().await? {
            Some(first) => Ok(first - 1),
            None => self.last_seq().await,
        }
    }

    /// Entries left in the log.
    async fn log_len(&self) -> Result<i64>;

    /// Drops log entries up to `seq` (every peer has them), pending ones excepted.
    /// Returns how many.
    async fn truncate_log(&self, seq: i64) -> Result<u64>;

    /// Drops the oldest entries beyond the newest `keep` (never a pending one, nor any
    /// after it). Returns how many.
    async fn truncate_to_retention(&self, keep: u64) -> Result<u64>;

    /// Every peer's acknowledged position.
    async fn cursors(&self) -> Result<HashMap<String, i64>>;

    /// Records that `peer` acknowledged the log up to `seq` (a cursor never goes back).
    async fn set_cursor(&self, peer: &str, seq: i64) -> Result<()>;

    // What this region holds of other homes.

    /// Stores a strong write of `home` before its home commits it (invisible to reads);
    /// storing it again changes nothing.
    async fn put_intent(&self, home: &str, entry: &LogEntry) -> Result<()>;

    /// Intents stored for `home` and not resolved yet.
    async fn intent_count(&self, home: &str) -> Result<i64>;

    /// Applies a batch of `home`'s log in one transaction, skipping entries applied before,
    /// and records the closed timestamp. Returns the new state.
    async fn apply(&self, home: &str, entries: &[LogEntry], closed: Timestamp) -> Result<ReplicaState> {
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
    async fn apply_batch(&self, home: &str, incoming: Incoming<'_>, tracked: Tracked<'_>) -> Result<ReplicaState>;

    /// What this region applied from each other home.
    async fn replica_states(&self) -> Result<HashMap<String, ReplicaState>>;

    /// Closes the gap recorded for `home` if it is still the one anti-entropy repaired (a
    /// newer gap stays open). Returns whether it closed.
    async fn close_gap(&self, home: &str, upto_seq: i64) -> Result<bool>;

    // Keys written anywhere, counters, anti-entropy.

    /// Commits an async write of a key written anywhere, executed here (`origin`): records
    /// the version it replaces (the latest here), counts a conflict if it is concurrent with
    /// one already here, and logs it, in one transaction. Returns its log sequence number.
    async fn write_anywhere(
        &self,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        origin: &str,
        prefix: &str,
    ) -> Result<i64>;

    /// Adds `delta` to this region's component of counter `key` and logs the new component,
    /// in one transaction. With an `op_id` seen before for this key, changes nothing and
    /// returns `None` (a retry); otherwise returns the new component. Op ids are kept a
    /// week (by `ts`).
    async fn increment(
        &self,
        key: &str,
        region: &str,
        ts: Timestamp,
        delta: i64,
        op_id: Option<&str>,
    ) -> Result<Option<Component>>;

    /// Every region's component of counter `key` held here.
    async fn counter(&self, key: &str) -> Result<Vec<CounterRow>>;

    /// The components of counters written at `region`.
    async fn counters_of(&self, region: &str) -> Result<Vec<CounterRow>>;

    /// Overwritten concurrent writes counted here, per rule prefix.
    async fn conflicts(&self) -> Result<Vec<(String, i64)>>;

    /// Identities of the versions written at `origin`, by key (timestamps newest first).
    async fn version_ids_of(&self, origin: &str) -> Result<Vec<(String, Timestamp)>>;

    /// Every version of `keys` written at `origin`.
    async fn versions_of(&self, origin: &str, keys: &[String]) -> Result<Vec<VersionRow>>;

    /// Stores what anti-entropy fetched, in one transaction. Returns how many versions and
    /// counter components were new here.
    async fn repair(&self, rows: &[VersionRow], counters: &[CounterRow], tracked: Tracked<'_>) -> Result<u64>;

    // Re-homing.

    /// Re-homed prefixes and their new homes.
    async fn placement_overrides(&self) -> Result<Vec<(String, String)>>;

    /// Records that `prefix` is now homed in `region`.
    async fn set_placement_override(&self, prefix: &str, region: &str) -> Result<()>;

    // Op ids of idempotent writes (`crate::node::op_ids`).

    /// The recorded result of `op_id` on `key`, if a write with it was applied.
    async fn op_applied(&self, key: &str, op_id: &str) -> Result<Option<Applied>>;

    /// Prepares the row of a write with `op_id` about to make version `at` of `key`,
    /// replacing `previous` (its applied mark cleared); durable when this returns. The row
    /// is marked applied in the transaction that inserts version `at` of `key`.
    async fn op_prepare(
        &self,
        key: &str,
        op_id: &str,
        at: Timestamp,
        previous: Option<&Version>,
        now_ms: i64,
    ) -> Result<()>;

    /// Records `op_id` on `key` as cancelled (a compensation found it not applied): a write
    /// carrying it is refused from then on; durable when this returns. A second
    /// cancellation changes nothing (the first one's time counts).
    async fn op_cancel(&self, key: &str, op_id: &str, now_ms: i64) -> Result<()>;

    /// Whether `op_id` on `key` was cancelled.
    async fn op_cancelled(&self, key: &str, op_id: &str) -> Result<bool>;

    /// Drops the op ids prepared, and the cancellations recorded, before `horizon_ms`.
    /// Returns how many.
    async fn op_prune(&self, horizon_ms: i64) -> Result<u64>;
    // Transactions (`crate::node::txn`).

    /// The intents laid on `key` and not resolved here yet.
    async fn txn_intents_on(&self, key: &str) -> Result<Vec<TxnIntent>>;

    /// Every intent held here, oldest prepare first (at start-up, and for the loop that
    /// resolves expired ones).
    async fn txn_intents(&self) -> Result<Vec<TxnIntent>>;

    /// The intents of transaction `txn` laid here.
    async fn txn_intents_of(&self, txn: &str) -> Result<Vec<TxnIntent>>;

    /// Lays `intents` in one transaction, durable when this returns (laying one again
    /// replaces it).
    async fn txn_lay(&self, intents: &[TxnIntent]) -> Result<()>;

    /// Resolves the intents of `txn` here in one transaction: if it committed, each write
    /// intent becomes a version at `commit_ts` (executed at `home`) with its committed log
    /// entry; then every intent of `txn` is dropped. Returns how many there were (0: resolved
    /// before).
    async fn txn_resolve(&self, txn: &str, commit_ts: Option<Timestamp>, home: &str) -> Result<u64>;

    /// The record of `txn`, if it is kept here and was written.
    async fn txn_record(&self, txn: &str) -> Result<Option<TxnStatus>>;

    /// Writes the record of `txn`, durable when this returns.
    async fn txn_set_record(&self, txn: &str, status: TxnStatus, now_ms: u64) -> Result<()>;

    /// Deletes at most `limit` transactions' records last written before `horizon_ms` (Unix
    /// ms); the records of op ids and their tries ([`regions_core::txn::is_op_record`]) are
    /// kept, and so are staging records (undecided). Returns how many it deleted.
    async fn txn_prune_records(&self, horizon_ms: i64, limit: u32) -> Result<u64>;

    // Copies of peers' transaction states (`crate::node::txn::copies`).

    /// Keeps `copy` of `home`'s state of a transaction, durable when this returns, unless
    /// the copy kept already is as new or newer (its `at` is not below). A copy with neither
    /// intents nor record drops the one kept (the home resolved the transaction, and its log
    /// reached here). `now_ms` is when it was kept, for [`Store::txn_prune_copies`].
    async fn txn_copy_keep(&self, home: &str, copy: &TxnCopy, now_ms: u64) -> Result<()>;

    /// The copies kept of `home`'s transaction states (a restored `home` takes them back).
    async fn txn_copies_of(&self, home: &str) -> Result<Vec<TxnCopy>>;

    /// Drops the copies kept before `horizon_ms` (Unix ms). Returns how many.
    async fn txn_prune_copies(&self, horizon_ms: i64) -> Result<u64>;
}
