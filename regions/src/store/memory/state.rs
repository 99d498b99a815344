//! What a [`MemoryStore`](super::MemoryStore) holds, and the writes several of its calls
//! share (as `store/sql/writes.rs` does for the SQL stores).

use std::collections::{BTreeMap, HashMap};

use regions_core::conflict;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::protocol::{CounterRow, EntryKind, EntryState, LogEntry, VersionId, VersionRow};
use regions_core::replica::ReplicaState;

/// An op id's row: the version its write makes and the live one it replaces.
pub(super) struct Op {
    pub(super) at: Timestamp,
    pub(super) previous: Option<Version>,
    pub(super) applied: bool,
    pub(super) created_ms: i64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) identity: Option<String>,
    /// Per key, every version held (in arrival order).
    pub(super) versions: BTreeMap<String, Vec<VersionRow>>,
    pub(super) log: BTreeMap<i64, LogEntry>,
    pub(super) last_seq: i64,
    pub(super) cursors: HashMap<String, i64>,
    pub(super) intents: BTreeMap<(String, i64), LogEntry>,
    pub(super) replicas: HashMap<String, ReplicaState>,
    pub(super) counters: BTreeMap<(String, String), Component>,
    pub(super) counter_ops: HashMap<(String, String), i64>,
    pub(super) conflicts: BTreeMap<String, i64>,
    pub(super) overrides: BTreeMap<String, String>,
    pub(super) ops: HashMap<(String, String), Op>,
    /// Cancelled op ids, with when they were cancelled.
    pub(super) cancelled: HashMap<(String, String), i64>,
    /// Transactions' intents, by (transaction, key).
    pub(super) txn_intents: BTreeMap<(String, String), regions_core::txn::TxnIntent>,
    /// Transaction records kept here, with when each was last written (Unix ms).
    pub(super) txn_records: HashMap<String, (regions_core::txn::TxnStatus, i64)>,
    /// Copies of peers' transaction states, by (home, transaction), with when each was kept
    /// (Unix ms).
    pub(super) txn_copies: BTreeMap<(String, String), (regions_core::protocol::TxnCopy, i64)>,
    /// Marked restored from a backup (`Store::mark_restored`).
    pub(super) restored: bool,
}

/// Timestamps compared as the SQL stores compare them: wall time as a signed integer.
pub(super) fn wall(ts: Timestamp) -> i64 {
    i64::try_from(ts.wall_ms).unwrap_or(i64::MAX)
}

impl State {
    pub(super) fn append(&mut self, key: &str, ts: Timestamp, value: Option<&str>, state: EntryState) -> &mut LogEntry {
        self.last_seq += 1;
        let entry = LogEntry {
            seq: self.last_seq,
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            state,
            kind: EntryKind::Version,
            prev: None,
        };
        self.log.entry(entry.seq).or_insert(entry)
    }

    /// Inserts a version unless present (marking the op id that made it applied) and keeps
    /// the conflict count of a tracked prefix, as `store/sql/writes.rs::insert_row` does.
    pub(super) fn insert_row(&mut self, row: &VersionRow, tracked: Option<&str>) -> bool {
        let versions = self.versions.entry(row.key.clone()).or_default();
        let had_versions = !versions.is_empty();
        if versions.iter().any(|v| v.ts == row.ts && v.origin == row.origin) {
            return false;
        }
        versions.push(row.clone());
        for ((key, _), op) in self.ops.iter_mut() {
            if *key == row.key && op.at == row.ts {
                op.applied = true;
            }
        }
        let Some(prefix) = tracked else { return true };
        let namers = |id: &VersionId| versions.iter().filter(|v| v.prev.as_ref() == Some(id)).count();
        let named = namers(&row.id()) > 0;
        let prev_was_leaf = row
            .prev
            .as_ref()
            .is_some_and(|p| versions.iter().any(|v| v.id() == *p) && namers(p) == 1);
        let delta = conflict::leaf_delta(had_versions, named, prev_was_leaf);
        if delta != 0 {
            *self.conflicts.entry(prefix.to_owned()).or_default() += delta;
        }
        true
    }

    /// Merges a counter component (per-field maximum). Returns whether it changed anything.
    pub(super) fn merge_counter(&mut self, key: &str, region: &str, c: Component) -> bool {
        match self.counters.get_mut(&(key.to_owned(), region.to_owned())) {
            Some(held) if c.p > held.p || c.n > held.n => *held = held.merge(c),
            Some(_) => return false,
            None => {
                self.counters.insert((key.to_owned(), region.to_owned()), c);
            }
        }
        true
    }

    pub(super) fn counter_rows(&self, wanted: impl Fn(&str, &str) -> bool) -> Vec<CounterRow> {
        self.counters
            .iter()
            .filter(|((key, region), _)| wanted(key, region))
            .map(|((key, region), c)| CounterRow {
                key: key.clone(),
                region: region.clone(),
                component: *c,
            })
            .collect()
    }
}
