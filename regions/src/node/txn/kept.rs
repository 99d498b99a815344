//! The copies a region keeps of its peers' transaction states (`copies.rs`), and what a
//! region restored from a backup takes back from them.
//!
//! A holder keeps, per home and transaction, the newest copy it was sent. A restore reads
//! every peer's copies and sets a floor there at once (under `keeping`, taken exclusively):
//! a copy stamped below it and kept later would be one the restore never saw, so it is
//! refused. The copies the restored region kept for its peers are lost with its disk, and
//! not sent again: those transactions are kept by one copy fewer until they change (one
//! failure at a time).
//!
//! The take-back merges per key: each holder was sent only the intents of the keys it
//! replicates, so a key's intent comes from the newest copy among that key's replicas (a
//! newer copy from a region that does not replicate the key says nothing of it), and the
//! record from the newest copy of all.

use std::collections::{BTreeSet, HashMap};

use regions_core::hlc::Timestamp;
use regions_core::protocol::{CopyRequest, TxnCopy};
use regions_core::txn::{TxnIntent, TxnStatus};

use super::super::Region;
use crate::{Error, Result};

/// What a restored region takes back of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TakenBack {
    /// The transaction.
    pub(super) txn: String,
    /// The newest timestamp among its copies.
    pub(super) at: Timestamp,
    /// Its intents.
    pub(super) intents: Vec<TxnIntent>,
    /// Its record's row.
    pub(super) record: Option<TxnStatus>,
}

/// Merges the copies of one transaction, each with the holder it came from:
/// `replicates(key, holder)` says whether a holder replicates a key.
pub(super) fn merge(copies: &[(String, TxnCopy)], replicates: &dyn Fn(&str, &str) -> bool) -> Option<TakenBack> {
    let newest = copies.iter().max_by_key(|(_, c)| c.at)?;
    let keys: BTreeSet<&str> = copies
        .iter()
        .flat_map(|(_, c)| c.intents.iter().map(|i| i.key.as_str()))
        .collect();
    let mut intents = Vec::new();
    for key in keys {
        let from_replicas = copies
            .iter()
            .filter(|(holder, _)| replicates(key, holder))
            .max_by_key(|(_, c)| c.at);
        if let Some(intent) = from_replicas.and_then(|(_, c)| c.intents.iter().find(|i| i.key == key)) {
            intents.push(intent.clone());
        }
    }
    Some(TakenBack {
        txn: newest.1.txn.clone(),
        at: newest.1.at,
        intents,
        record: newest.1.record,
    })
}

impl Region {
    /// Keeps a copy a peer sent of its state of a transaction (`/internal/v1/txn/copy`, or
    /// with its answer to this region's prepare). A copy stamped below the floor a restore
    /// of its sender set is refused: that restore did not see it.
    pub async fn txn_keep_copy(&self, request: &CopyRequest) -> Result<()> {
        self.peer(&request.from)?;
        self.clock
            .update(request.copy.at)
            .map_err(|e| self.refuse_clock(&request.from, e))?;
        let _keeping = self.txn_copies.keeping.read().await;
        let floor = self
            .txn_copies
            .floors
            .lock()
            .expect("copies lock")
            .get(&request.from)
            .copied();
        if floor.is_some_and(|floor| request.copy.at < floor) {
            return Err(Error::Peer(format!(
                "{} was restored from a backup since it sent this copy of transaction {}'s state",
                request.from, request.copy.txn
            )));
        }
        self.store
            .txn_copy_keep(&request.from, &request.copy, self.clock.physical_ms())
            .await
    }

    /// The copies this region keeps of restored peer `home`'s transaction states; copies
    /// stamped below `floor` are refused from now on (see [`Region::txn_keep_copy`]).
    pub(crate) async fn txn_copies_for_restore(&self, home: &str, floor: Option<Timestamp>) -> Result<Vec<TxnCopy>> {
        let _keeping = self.txn_copies.keeping.write().await;
        if let Some(floor) = floor {
            let mut floors = self.txn_copies.floors.lock().expect("copies lock");
            let kept = floors.entry(home.to_owned()).or_insert(floor);
            *kept = (*kept).max(floor);
        }
        self.store.txn_copies_of(home).await
    }

    /// Takes back the copies its peers kept of this region's transaction states, each with
    /// the peer it came from (a restore: see the module documentation). A decided record
    /// the backup holds is never replaced by an undecided one. Returns how many
    /// transactions it took back.
    pub(crate) async fn txn_take_back(&self, copies: Vec<(String, TxnCopy)>) -> Result<u64> {
        let mut by_txn: HashMap<String, Vec<(String, TxnCopy)>> = HashMap::new();
        for (holder, copy) in copies {
            by_txn.entry(copy.txn.clone()).or_default().push((holder, copy));
        }
        let placement = self.placement();
        let replicates = |key: &str, holder: &str| placement.replicates_to(key, holder);
        let now_ms = self.clock.physical_ms();
        let mut taken = 0;
        for copies in by_txn.values() {
            let Some(back) = merge(copies, &replicates) else {
                continue;
            };
            self.clock.update(back.at)?;
            if !back.intents.is_empty() {
                self.store.txn_lay(&back.intents).await?;
                self.txn_hold_restored(&back.intents);
            }
            if let Some(status) = back.record {
                let decided_here = self.store.txn_record(&back.txn).await?.is_some_and(|s| s.is_decided());
                if status.is_decided() || !decided_here {
                    self.store.txn_set_record(&back.txn, status, now_ms).await?;
                }
            }
            taken += 1;
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use regions_core::txn::IntentKind;

    use super::*;

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    fn intent(key: &str) -> TxnIntent {
        TxnIntent {
            txn: "t".into(),
            key: key.into(),
            kind: IntentKind::Write {
                value: Some("1".into()),
            },
            record_home: "h".into(),
            homes: vec!["h".into()],
            proposed: ts(5),
            prepared_ms: 5,
        }
    }

    fn copy(at: u64, keys: &[&str], record: Option<TxnStatus>) -> TxnCopy {
        TxnCopy {
            txn: "t".into(),
            at: ts(at),
            intents: keys.iter().map(|k| intent(k)).collect(),
            record,
        }
    }

    /// p1 replicates k1, p2 replicates k2.
    fn replicates(key: &str, holder: &str) -> bool {
        matches!((key, holder), ("k1", "p1") | ("k2", "p2"))
    }

    #[test]
    fn a_newer_copy_from_another_keys_replica_hides_nothing() {
        let staging = Some(TxnStatus::Staging { proposed: ts(5) });
        let committed = Some(TxnStatus::Committed { commit_ts: ts(6) });
        // p1 kept the newer copy (the record committed), p2 only the prepare's.
        let copies = vec![
            ("p1".to_owned(), copy(20, &["k1"], committed)),
            ("p2".to_owned(), copy(10, &["k2"], staging)),
        ];
        let back = merge(&copies, &replicates).unwrap();
        let keys: Vec<&str> = back.intents.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(back.record, committed);
        assert_eq!(back.at, ts(20));
    }

    #[test]
    fn a_keys_newest_replica_without_its_intent_says_it_was_resolved() {
        let copies = vec![
            ("p1".to_owned(), copy(10, &["k1"], None)),
            ("p1".to_owned(), copy(20, &[], None)),
        ];
        let back = merge(&copies, &replicates).unwrap();
        assert!(back.intents.is_empty());
        assert_eq!(merge(&[], &replicates), None);
    }
}
