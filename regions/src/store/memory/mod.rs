//! [`MemoryStore`]: the [`Store`] in memory, for unit tests. It keeps what the SQL stores
//! keep, with the same rules (the store conformance suite runs against it too); nothing
//! survives the process, and every write is "durable" at once.

mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::{Applied, RETENTION_MS, previous_of};
use regions_core::protocol::{CounterRow, EntryKind, EntryState, LogEntry, TxnCopy, VersionRow};
use regions_core::replica::{Apply, Incoming, ReplicaState, apply_entry, next_state};
use regions_core::txn::{IntentKind, TxnIntent, TxnStatus};

use super::{Store, Tracked};
use crate::{Error, Result};
use state::{Op, State, wall};

/// A region's store in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn claim(&self, name: &str) -> Result<()> {
        let mut s = self.lock();
        let owner = s.identity.get_or_insert_with(|| name.to_owned());
        if owner != name {
            return Err(Error::StoreTaken(format!(
                "this store holds region {owner}'s data, not {name}'s"
            )));
        }
        Ok(())
    }

    /// Nothing to close: the data stays for the clones of this store.
    async fn close(&self) {}

    async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        let s = self.lock();
        let mut held: Vec<&VersionRow> = s.versions.get(key).into_iter().flatten().collect();
        // Newest first; among equal timestamps the greatest region last.
        held.sort_by(|a, b| b.ts.cmp(&a.ts).then_with(|| a.origin.cmp(&b.origin)));
        Ok(held
            .into_iter()
            .map(|v| Version {
                ts: v.ts,
                value: v.value.clone(),
            })
            .collect())
    }

    async fn keys_written_by(&self, horizon: Timestamp) -> Result<Vec<String>> {
        let s = self.lock();
        Ok(s.versions
            .iter()
            .filter(|(_, vs)| vs.iter().any(|v| wall(v.ts) <= wall(horizon)))
            .map(|(key, _)| key.clone())
            .collect())
    }

    async fn delete_versions(&self, key: &str, ts: Timestamp) -> Result<u64> {
        let mut s = self.lock();
        let Some(versions) = s.versions.get_mut(key) else {
            return Ok(0);
        };
        let before = versions.len();
        versions.retain(|v| v.ts != ts);
        let dropped = before - versions.len();
        if versions.is_empty() {
            s.versions.remove(key);
        }
        Ok(dropped as u64)
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let s = self.lock();
        Ok(s.versions.keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }

    async fn log_pending(&self, key: &str, ts: Timestamp, value: Option<&str>) -> Result<i64> {
        Ok(self.lock().append(key, ts, value, EntryState::Pending).seq)
    }

    async fn commit_pending(&self, seq: i64, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<()> {
        let mut s = self.lock();
        s.insert_row(&VersionRow::untracked(key, ts, value, home), None);
        if let Some(entry) = s.log.get_mut(&seq) {
            entry.state = EntryState::Committed;
        }
        Ok(())
    }

    async fn abort_pending(&self, seq: i64) -> Result<()> {
        if let Some(entry) = self.lock().log.get_mut(&seq).filter(|e| e.state == EntryState::Pending) {
            entry.state = EntryState::Aborted;
        }
        Ok(())
    }

    async fn abort_all_pending(&self) -> Result<u64> {
        let mut aborted = 0;
        for entry in self.lock().log.values_mut().filter(|e| e.state == EntryState::Pending) {
            entry.state = EntryState::Aborted;
            aborted += 1;
        }
        Ok(aborted)
    }

    async fn write_committed(&self, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<i64> {
        let mut s = self.lock();
        s.insert_row(&VersionRow::untracked(key, ts, value, home), None);
        Ok(s.append(key, ts, value, EntryState::Committed).seq)
    }

    async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>> {
        let s = self.lock();
        Ok(s.log
            .range(after + 1..)
            .take(limit as usize)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn earliest_after(&self, after: i64) -> Result<Option<Timestamp>> {
        Ok(self.lock().log.range(after + 1..).map(|(_, e)| e.ts).min())
    }

    async fn last_seq(&self) -> Result<i64> {
        Ok(self.lock().last_seq)
    }

    async fn first_seq(&self) -> Result<Option<i64>> {
        Ok(self.lock().log.keys().next().copied())
    }

    async fn log_len(&self) -> Result<i64> {
        Ok(self.lock().log.len() as i64)
    }

    async fn mark_restored(&self, _now_ms: i64) -> Result<()> {
        self.lock().restored = true;
        Ok(())
    }

    async fn rebase_if_restored(&self, floor: i64) -> Result<Option<i64>> {
        let mut s = self.lock();
        if !std::mem::take(&mut s.restored) {
            return Ok(None);
        }
        s.log.clear();
        s.last_seq = s.last_seq.max(floor);
        Ok(Some(s.last_seq))
    }

    async fn truncate_log(&self, seq: i64) -> Result<u64> {
        let mut s = self.lock();
        let before = s.log.len();
        s.log.retain(|n, e| *n > seq || e.state == EntryState::Pending);
        Ok((before - s.log.len()) as u64)
    }

    async fn truncate_to_retention(&self, keep: u64) -> Result<u64> {
        let mut s = self.lock();
        let Some(upto) = s
            .log
            .keys()
            .rev()
            .nth(usize::try_from(keep).unwrap_or(usize::MAX))
            .copied()
        else {
            return Ok(0);
        };
        let first_pending = s
            .log
            .values()
            .find(|e| e.state == EntryState::Pending)
            .map_or(i64::MAX, |e| e.seq);
        let before = s.log.len();
        s.log.retain(|n, _| !(*n <= upto && *n < first_pending));
        Ok((before - s.log.len()) as u64)
    }

    async fn cursors(&self) -> Result<HashMap<String, i64>> {
        Ok(self.lock().cursors.clone())
    }

    async fn set_cursor(&self, peer: &str, seq: i64) -> Result<()> {
        let mut s = self.lock();
        let acked = s.cursors.entry(peer.to_owned()).or_insert(seq);
        *acked = (*acked).max(seq);
        Ok(())
    }

    async fn put_intent(&self, home: &str, entry: &LogEntry) -> Result<()> {
        let mut s = self.lock();
        s.intents
            .entry((home.to_owned(), entry.seq))
            .or_insert_with(|| entry.clone());
        Ok(())
    }

    async fn intent_count(&self, home: &str) -> Result<i64> {
        Ok(self.lock().intents.keys().filter(|(h, _)| h == home).count() as i64)
    }

    async fn apply_batch(&self, home: &str, incoming: Incoming<'_>, tracked: Tracked<'_>) -> Result<ReplicaState> {
        let mut s = self.lock();
        let before = s.replicas.get(home).copied();
        let mut applied_seq = before.map_or(0, |b| b.applied_seq);
        // Decided before anything changes: a SQL store rolls the whole batch back on a refusal.
        let steps = incoming
            .fresh(applied_seq)
            .map(|e| Ok((e.seq, apply_entry(home, e)?)))
            .collect::<Result<Vec<_>>>()?;
        for (seq, step) in steps {
            match step {
                Apply::Version(row) => {
                    s.insert_row(&row, tracked(&row.key).as_deref());
                }
                Apply::Counter { key, component } => {
                    s.merge_counter(&key, home, component);
                }
                Apply::Nothing => {}
            }
            s.intents.remove(&(home.to_owned(), seq));
            applied_seq = seq;
        }
        let state = next_state(before, &incoming, applied_seq);
        s.replicas.insert(home.to_owned(), state);
        Ok(state)
    }

    async fn replica_states(&self) -> Result<HashMap<String, ReplicaState>> {
        Ok(self.lock().replicas.clone())
    }

    async fn close_gap(&self, home: &str, upto_seq: i64) -> Result<bool> {
        let mut s = self.lock();
        let Some(state) = s
            .replicas
            .get_mut(home)
            .filter(|r| r.gap.is_some_and(|g| g.upto_seq == upto_seq))
        else {
            return Ok(false);
        };
        state.gap = None;
        state.frozen = None;
        Ok(true)
    }

    async fn write_anywhere(
        &self,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        origin: &str,
        prefix: &str,
    ) -> Result<i64> {
        let mut s = self.lock();
        let prev = s
            .versions
            .get(key)
            .into_iter()
            .flatten()
            .max_by(|a, b| (a.ts, &a.origin).cmp(&(b.ts, &b.origin)))
            .map(VersionRow::id);
        let row = VersionRow {
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            origin: origin.to_owned(),
            prev: prev.clone(),
        };
        s.insert_row(&row, Some(prefix));
        let entry = s.append(key, ts, value, EntryState::Committed);
        entry.prev = prev;
        Ok(entry.seq)
    }

    async fn increment(
        &self,
        key: &str,
        region: &str,
        ts: Timestamp,
        delta: i64,
        op_id: Option<&str>,
    ) -> Result<Option<Component>> {
        let mut s = self.lock();
        let week_ago = wall(ts).saturating_sub(i64::try_from(RETENTION_MS).unwrap_or(i64::MAX));
        let op = op_id.map(|o| (key.to_owned(), o.to_owned()));
        if let Some(op) = &op
            && s.counter_ops.get(op).is_some_and(|created| *created >= week_ago)
        {
            return Ok(None);
        }
        let current = s
            .counters
            .get(&(key.to_owned(), region.to_owned()))
            .copied()
            .unwrap_or_default();
        let next = current.plus(delta)?;
        if let Some(op) = op {
            s.counter_ops.retain(|_, created| *created >= week_ago);
            s.counter_ops.insert(op, wall(ts));
        }
        s.merge_counter(key, region, next);
        let json = next.to_json();
        s.append(key, ts, Some(&json), EntryState::Committed).kind = EntryKind::Counter;
        Ok(Some(next))
    }

    async fn counter(&self, key: &str) -> Result<Vec<CounterRow>> {
        Ok(self.lock().counter_rows(|k, _| k == key))
    }

    async fn counters_of(&self, region: &str) -> Result<Vec<CounterRow>> {
        let mut rows = self.lock().counter_rows(|_, r| r == region);
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(rows)
    }

    async fn conflicts(&self) -> Result<Vec<(String, i64)>> {
        Ok(self.lock().conflicts.iter().map(|(p, n)| (p.clone(), *n)).collect())
    }

    async fn version_ids_of(&self, origin: &str) -> Result<Vec<(String, Timestamp)>> {
        let s = self.lock();
        let mut ids = Vec::new();
        for (key, versions) in &s.versions {
            let mut mine: Vec<Timestamp> = versions.iter().filter(|v| v.origin == origin).map(|v| v.ts).collect();
            mine.sort_by(|a, b| b.cmp(a));
            ids.extend(mine.into_iter().map(|ts| (key.clone(), ts)));
        }
        Ok(ids)
    }

    async fn versions_of(&self, origin: &str, keys: &[String]) -> Result<Vec<VersionRow>> {
        let s = self.lock();
        let mut rows = Vec::new();
        for (key, versions) in s.versions.iter().filter(|(k, _)| keys.contains(k)) {
            let mut mine: Vec<VersionRow> = versions.iter().filter(|v| v.origin == origin).cloned().collect();
            mine.sort_by_key(|v| std::cmp::Reverse(v.ts));
            debug_assert!(mine.iter().all(|v| v.key == *key));
            rows.extend(mine);
        }
        Ok(rows)
    }

    async fn repair(&self, rows: &[VersionRow], counters: &[CounterRow], tracked: Tracked<'_>) -> Result<u64> {
        let mut s = self.lock();
        let mut repaired = 0;
        for row in rows {
            repaired += u64::from(s.insert_row(row, tracked(&row.key).as_deref()));
        }
        for c in counters {
            repaired += u64::from(s.merge_counter(&c.key, &c.region, c.component));
        }
        Ok(repaired)
    }

    async fn placement_overrides(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .lock()
            .overrides
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect())
    }

    async fn set_placement_override(&self, prefix: &str, region: &str) -> Result<()> {
        self.lock().overrides.insert(prefix.to_owned(), region.to_owned());
        Ok(())
    }

    async fn op_applied(&self, key: &str, op_id: &str) -> Result<Option<Applied>> {
        let s = self.lock();
        let Some(op) = s.ops.get(&(key.to_owned(), op_id.to_owned())).filter(|op| op.applied) else {
            return Ok(None);
        };
        Ok(Some(Applied {
            version: op.at.to_string(),
            previous: previous_of(op.previous.as_ref())?,
        }))
    }

    async fn op_prepare(
        &self,
        key: &str,
        op_id: &str,
        at: Timestamp,
        previous: Option<&Version>,
        now_ms: i64,
    ) -> Result<()> {
        let op = Op {
            at,
            previous: previous.filter(|v| v.value.is_some()).cloned(),
            applied: false,
            created_ms: now_ms,
        };
        self.lock().ops.insert((key.to_owned(), op_id.to_owned()), op);
        Ok(())
    }

    async fn op_cancel(&self, key: &str, op_id: &str, now_ms: i64) -> Result<()> {
        self.lock()
            .cancelled
            .entry((key.to_owned(), op_id.to_owned()))
            .or_insert(now_ms);
        Ok(())
    }

    async fn op_cancelled(&self, key: &str, op_id: &str) -> Result<bool> {
        Ok(self.lock().cancelled.contains_key(&(key.to_owned(), op_id.to_owned())))
    }

    async fn op_prune(&self, horizon_ms: i64) -> Result<u64> {
        let mut s = self.lock();
        let before = s.ops.len() + s.cancelled.len();
        s.ops.retain(|_, op| op.created_ms >= horizon_ms);
        s.cancelled.retain(|_, created_ms| *created_ms >= horizon_ms);
        Ok((before - s.ops.len() - s.cancelled.len()) as u64)
    }

    async fn txn_intents_on(&self, key: &str) -> Result<Vec<TxnIntent>> {
        let s = self.lock();
        Ok(s.txn_intents.values().filter(|i| i.key == key).cloned().collect())
    }

    async fn txn_intents(&self) -> Result<Vec<TxnIntent>> {
        let mut all: Vec<TxnIntent> = self.lock().txn_intents.values().cloned().collect();
        all.sort_by_key(|i| i.prepared_ms);
        Ok(all)
    }

    async fn txn_intents_of(&self, txn: &str) -> Result<Vec<TxnIntent>> {
        let s = self.lock();
        Ok(s.txn_intents
            .range((txn.to_owned(), String::new())..)
            .take_while(|((t, _), _)| t == txn)
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn txn_lay(&self, intents: &[TxnIntent]) -> Result<()> {
        let mut s = self.lock();
        for i in intents {
            s.txn_intents.insert((i.txn.clone(), i.key.clone()), i.clone());
        }
        Ok(())
    }

    async fn txn_resolve(&self, txn: &str, commit_ts: Option<Timestamp>, home: &str) -> Result<u64> {
        let mut s = self.lock();
        let keys: Vec<(String, String)> = s
            .txn_intents
            .range((txn.to_owned(), String::new())..)
            .take_while(|((t, _), _)| t == txn)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            let Some(intent) = s.txn_intents.remove(k) else {
                continue;
            };
            if let (Some(ts), IntentKind::Write { value }) = (commit_ts, &intent.kind) {
                s.insert_row(&VersionRow::untracked(&intent.key, ts, value.as_deref(), home), None);
                s.append(&intent.key, ts, value.as_deref(), EntryState::Committed);
            }
        }
        Ok(keys.len() as u64)
    }

    async fn txn_record(&self, txn: &str) -> Result<Option<TxnStatus>> {
        Ok(self.lock().txn_records.get(txn).map(|(status, _)| *status))
    }

    async fn txn_set_record(&self, txn: &str, status: TxnStatus, now_ms: u64) -> Result<()> {
        let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        self.lock().txn_records.insert(txn.to_owned(), (status, now_ms));
        Ok(())
    }

    async fn txn_prune_records(&self, horizon_ms: i64, limit: u32) -> Result<u64> {
        let mut s = self.lock();
        let old: Vec<String> = s
            .txn_records
            .iter()
            .filter(|(id, (status, updated_ms))| {
                *updated_ms < horizon_ms
                    && !matches!(status, TxnStatus::Staging { .. })
                    && !regions_core::txn::is_op_record(id)
            })
            .map(|(id, _)| id.clone())
            .take(limit as usize)
            .collect();
        for id in &old {
            s.txn_records.remove(id);
        }
        Ok(old.len() as u64)
    }

    async fn txn_copy_keep(&self, home: &str, copy: &TxnCopy, now_ms: u64) -> Result<()> {
        let mut s = self.lock();
        let id = (home.to_owned(), copy.txn.clone());
        if s.txn_copies.get(&id).is_some_and(|(kept, _)| kept.at >= copy.at) {
            return Ok(());
        }
        if copy.intents.is_empty() && copy.record.is_none() {
            s.txn_copies.remove(&id);
        } else {
            let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
            s.txn_copies.insert(id, (copy.clone(), now_ms));
        }
        Ok(())
    }

    async fn txn_copies_of(&self, home: &str) -> Result<Vec<TxnCopy>> {
        Ok(self
            .lock()
            .txn_copies
            .iter()
            .filter(|((h, _), _)| h == home)
            .map(|(_, (copy, _))| copy.clone())
            .collect())
    }

    async fn txn_prune_copies(&self, horizon_ms: i64) -> Result<u64> {
        let mut s = self.lock();
        let before = s.txn_copies.len();
        s.txn_copies.retain(|_, (_, kept_ms)| *kept_ms >= horizon_ms);
        Ok((before - s.txn_copies.len()) as u64)
    }
}
