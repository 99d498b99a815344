//! The store's side of convergence under faults: versions as anti-entropy moves them
//! (with their origin and the version they replaced), conflict counting for keys written
//! anywhere, counter components, log retention and gaps, placement overrides, and the op
//! ids of idempotent writes ([`regions_core::op_ids`]). Each backend runs them in its own SQL
//! (`store/sqlite_convergence.rs`, `store/postgres_convergence.rs`).

use crate::Result;
use crate::store::{Store, dispatch};
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::Applied;
use regions_core::protocol::{CounterRow, VersionRow};

impl Store {
    /// Commits an async write of a key written anywhere, executed here (`origin`): records
    /// the version it replaces (the latest here), counts a conflict if it is concurrent with
    /// one already here, and logs it, in one transaction. Returns its log sequence number.
    pub async fn write_anywhere(
        &self,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        origin: &str,
        prefix: &str,
    ) -> Result<i64> {
        dispatch!(self, db => db.write_anywhere(key, ts, value, origin, prefix))
    }

    /// Adds `delta` to this region's component of counter `key` and logs the new component,
    /// in one transaction. With an `op_id` seen before for this key, changes nothing and
    /// returns `None` (a retry); otherwise returns the new component. Op ids are kept a
    /// week (by `ts`).
    pub async fn increment(
        &self,
        key: &str,
        region: &str,
        ts: Timestamp,
        delta: i64,
        op_id: Option<&str>,
    ) -> Result<Option<Component>> {
        dispatch!(self, db => db.increment(key, region, ts, delta, op_id))
    }

    /// Every region's component of counter `key` held here.
    pub async fn counter(&self, key: &str) -> Result<Vec<CounterRow>> {
        dispatch!(self, db => db.counter(key))
    }

    /// The components of counters written at `region`.
    pub async fn counters_of(&self, region: &str) -> Result<Vec<CounterRow>> {
        dispatch!(self, db => db.counters_of(region))
    }

    /// Overwritten concurrent writes counted here, per rule prefix.
    pub async fn conflicts(&self) -> Result<Vec<(String, i64)>> {
        dispatch!(self, db => db.conflicts())
    }

    /// Identities of the versions written at `origin`, by key (timestamps newest first).
    pub async fn version_ids_of(&self, origin: &str) -> Result<Vec<(String, Timestamp)>> {
        dispatch!(self, db => db.version_ids_of(origin))
    }

    /// Every version of `keys` written at `origin`.
    pub async fn versions_of(&self, origin: &str, keys: &[String]) -> Result<Vec<VersionRow>> {
        dispatch!(self, db => db.versions_of(origin, keys))
    }

    /// Stores what anti-entropy fetched, in one transaction. Returns how many versions and
    /// counter components were new here.
    pub async fn repair(
        &self,
        rows: &[VersionRow],
        counters: &[CounterRow],
        tracked: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<u64> {
        dispatch!(self, db => db.repair(rows, counters, tracked))
    }

    /// Closes the gap recorded for `home` if it is still the one anti-entropy repaired (a
    /// newer gap stays open). Returns whether it closed.
    pub async fn close_gap(&self, home: &str, upto_seq: i64) -> Result<bool> {
        dispatch!(self, db => db.close_gap(home, upto_seq))
    }

    /// The highest sequence number truncated from the log (0: none). The log is contiguous
    /// above it: truncation never passes a pending entry.
    pub async fn truncated_upto(&self) -> Result<i64> {
        match dispatch!(self, db => db.first_seq())? {
            Some(first) => Ok(first - 1),
            None => self.last_seq().await,
        }
    }

    /// Drops the oldest entries beyond the newest `keep` (never a pending one, nor any
    /// after it). Returns how many.
    pub async fn truncate_to_retention(&self, keep: u64) -> Result<u64> {
        dispatch!(self, db => db.truncate_to_retention(keep))
    }

    /// Distinct keys stored here that start with `prefix`, in byte order.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        dispatch!(self, db => db.keys_with_prefix(prefix))
    }

    /// Re-homed prefixes and their new homes.
    pub async fn placement_overrides(&self) -> Result<Vec<(String, String)>> {
        dispatch!(self, db => db.placement_overrides())
    }

    /// Records that `prefix` is now homed in `region`.
    pub async fn set_placement_override(&self, prefix: &str, region: &str) -> Result<()> {
        dispatch!(self, db => db.set_placement_override(prefix, region))
    }

    /// The recorded result of `op_id` on `key`, if a write with it was applied.
    pub async fn op_applied(&self, key: &str, op_id: &str) -> Result<Option<Applied>> {
        dispatch!(self, db => db.op_applied(key, op_id))
    }

    /// Prepares the row of a write with `op_id` about to make version `at` of `key`,
    /// replacing `previous` (its applied mark cleared); durable when this returns.
    pub async fn op_prepare(
        &self,
        key: &str,
        op_id: &str,
        at: Timestamp,
        previous: Option<&Version>,
        now_ms: i64,
    ) -> Result<()> {
        dispatch!(self, db => db.op_prepare(key, op_id, at, previous, now_ms))
    }

    /// Drops the op ids prepared before `horizon_ms`.
    pub async fn op_prune(&self, horizon_ms: i64) -> Result<u64> {
        dispatch!(self, db => db.op_prune(horizon_ms))
    }
}
