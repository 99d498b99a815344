//! A home's transaction states, replicated with its keys' consistency: before a region
//! tells anyone that it prepared a transaction (its intents and proposal), that it will
//! never prepare one (a prevention), or how a record it keeps stands, a quorum of its peers
//! keeps a copy of that state at least as new ([`TxnCopy`]), as a strong write's intent is
//! kept by a quorum before the write commits. Intents go only to the regions that replicate
//! their keys (a rule's replica set), each key's quorum counted among those; a record, which
//! holds no value, goes to every peer.
//!
//! Nothing reads a copy while its home lives. A home restored from a backup takes back, per
//! transaction, the newest copy any peer kept (`crate::restore`), before it serves: every
//! answer it gave before its disk was lost is then still true of it, so a transaction stays
//! all or nothing across the loss (a recovery that asked it finds it prepared, a prevention
//! stands, a decided record stays decided).
//!
//! Copies are dropped once the home resolved the transaction and its log (the versions the
//! resolve wrote) reached every peer: the home then sends the state it is left with (a
//! decided record, or nothing) in their place ([`copy_loop`]). Copies a home never replaced
//! (it crashed meanwhile) are pruned with the records, after a week.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use regions_core::protocol::{CopyRequest, TxnCopy};
use regions_core::txn::{TxnIntent, TxnStatus};

use super::super::{Peer, Region, quorum};
use crate::{Error, Result};

/// The pause before a copy a peer did not keep is sent again (within the deadline).
const RETRY: Duration = Duration::from_millis(50);

/// How many resolved transactions wait for their log to reach the peers before their copies
/// are replaced; past that the oldest are left to pruning.
const RESOLVED_QUEUE: usize = 100_000;

/// How many states this region remembers having copied (past that it forgets them all, and
/// copies again on the next answer).
const REMEMBERED: usize = 100_000;

/// A region's state of one transaction: its intents there and its record's row there.
type State = (Vec<TxnIntent>, Option<TxnStatus>);

/// What a region knows of the copies of its transaction states.
#[derive(Default)]
pub struct Copies {
    /// Held while a state is read and timestamped: copies taken later are newer.
    reading: tokio::sync::Mutex<()>,
    /// The last state a quorum kept, by transaction.
    copied: Mutex<HashMap<String, State>>,
    /// Transactions resolved here, with the log's last sequence number after the resolve:
    /// their copies are replaced once every peer acknowledged the log that far.
    resolved: Mutex<VecDeque<(String, i64)>>,
}

/// Whether the peers in `acked` complete every quorum in `needs` (a set of regions that may
/// keep a copy, and how many of them must).
fn complete(needs: &[(BTreeSet<String>, usize)], acked: &BTreeSet<String>) -> bool {
    needs
        .iter()
        .all(|(holders, needed)| holders.intersection(acked).count() >= *needed)
}

impl Region {
    /// This region's state of `txn`.
    async fn txn_state(&self, txn: &str) -> Result<State> {
        let intents = self.store.txn_intents_of(txn).await?;
        let record = self.store.txn_record(txn).await?;
        Ok((intents, record))
    }

    /// Returns once a quorum of peers keeps a copy of this region's state of `txn` as it is
    /// now (at once if one was kept before and nothing changed since), or fails with
    /// [`Error::QuorumNotReached`] at the strong writes' deadline.
    pub(crate) async fn txn_copy_out(&self, txn: &str) -> Result<()> {
        let (state, at) = {
            let _reading = self.txn_copies.reading.lock().await;
            (self.txn_state(txn).await?, self.clock.now())
        };
        let before = self.txn_copies.copied.lock().expect("copies lock").get(txn).cloned();
        let empty = state.0.is_empty() && state.1.is_none();
        if before.as_ref() == Some(&state) || (empty && before.is_none()) {
            return Ok(());
        }
        let (intents, record) = state.clone();
        let copy = TxnCopy {
            txn: txn.to_owned(),
            at,
            intents,
            record,
        };
        self.keep_at_quorum(&copy).await?;
        let mut copied = self.txn_copies.copied.lock().expect("copies lock");
        if empty {
            copied.remove(txn);
        } else {
            if copied.len() >= REMEMBERED {
                copied.clear();
            }
            copied.insert(txn.to_owned(), state);
        }
        Ok(())
    }

    /// Sends `copy` to the peers that may keep it (each gets the intents of the keys it
    /// replicates, and the record) until every quorum is complete.
    async fn keep_at_quorum(&self, copy: &TxnCopy) -> Result<()> {
        let placement = self.placement();
        let quorum = self.config.quorum;
        let mut needs = Vec::new();
        let mut targets: BTreeSet<String> = BTreeSet::new();
        let all: BTreeSet<String> = self.peers.iter().map(|p| p.name.clone()).collect();
        // An empty copy drops what every peer kept.
        if copy.record.is_some() || copy.intents.is_empty() {
            needs.push((all.clone(), quorum.needed(all.len())));
            targets.extend(all.iter().cloned());
        }
        for intent in &copy.intents {
            let holders: BTreeSet<String> = all
                .iter()
                .filter(|p| placement.replicates_to(&intent.key, p))
                .cloned()
                .collect();
            needs.push((holders.clone(), quorum.needed(holders.len())));
            targets.extend(holders);
        }
        let mut acked = BTreeSet::new();
        if complete(&needs, &acked) {
            return Ok(());
        }
        let needed = needs.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let timeout_ms = self.config.strong_timeout_ms;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let peers: Vec<&Peer> = self.peers.iter().filter(|p| targets.contains(&p.name)).collect();
        let mut sends: FuturesUnordered<_> = peers
            .into_iter()
            .map(|peer| {
                let request = CopyRequest {
                    from: self.name.clone(),
                    copy: TxnCopy {
                        intents: copy
                            .intents
                            .iter()
                            .filter(|i| placement.replicates_to(&i.key, &peer.name))
                            .cloned()
                            .collect(),
                        ..copy.clone()
                    },
                };
                async move {
                    loop {
                        match quorum::post::<_, serde_json::Value>(self, peer, "/internal/v1/txn/copy", &request).await
                        {
                            Ok(_) => return peer,
                            Err(e) => {
                                tracing::debug!(
                                    peer = peer.name,
                                    txn = request.copy.txn,
                                    error = e,
                                    "copy not kept; retrying"
                                );
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                }
            })
            .collect();
        while !complete(&needs, &acked) {
            match tokio::time::timeout_at(deadline, sends.next()).await {
                Ok(Some(peer)) => {
                    self.touch(&peer.name);
                    acked.insert(peer.name.clone());
                }
                Ok(None) | Err(_) => {
                    return Err(Error::QuorumNotReached {
                        key: format!("(the state of transaction {})", copy.txn),
                        acked: acked.len(),
                        needed,
                        timeout_ms,
                    });
                }
            }
        }
        Ok(())
    }

    /// Keeps a copy a peer sent of its state of a transaction.
    pub async fn txn_keep_copy(&self, request: &CopyRequest) -> Result<()> {
        self.peer(&request.from)?;
        self.clock
            .update(request.copy.at)
            .map_err(|e| self.refuse_clock(&request.from, e))?;
        self.store
            .txn_copy_keep(&request.from, &request.copy, self.clock.physical_ms())
            .await
    }

    /// Notes that `txn` was resolved here: its copies are replaced once the log that holds
    /// the resolve reached every peer.
    pub(crate) async fn txn_copies_resolved(&self, txn: &str) -> Result<()> {
        if !self.txn_copies.copied.lock().expect("copies lock").contains_key(txn) {
            return Ok(());
        }
        let seq = self.store.last_seq().await?;
        let mut resolved = self.txn_copies.resolved.lock().expect("copies lock");
        if resolved.len() >= RESOLVED_QUEUE {
            resolved.pop_front();
        }
        resolved.push_back((txn.to_owned(), seq));
        Ok(())
    }

    /// Takes back the copies its peers kept of this region's transaction states (a restore:
    /// see the module documentation): per transaction the newest, its intents the union of
    /// what the peers holding that copy kept. Returns how many transactions it took back.
    pub(crate) async fn txn_take_back(&self, copies: Vec<TxnCopy>) -> Result<u64> {
        let mut newest: HashMap<String, TxnCopy> = HashMap::new();
        for copy in copies {
            match newest.get_mut(&copy.txn) {
                Some(kept) if kept.at > copy.at => {}
                Some(kept) if kept.at == copy.at => {
                    for intent in copy.intents {
                        if !kept.intents.iter().any(|i| i.key == intent.key) {
                            kept.intents.push(intent);
                        }
                    }
                }
                _ => {
                    newest.insert(copy.txn.clone(), copy);
                }
            }
        }
        let now_ms = self.clock.physical_ms();
        for copy in newest.values() {
            self.clock.update(copy.at)?;
            if !copy.intents.is_empty() {
                self.store.txn_lay(&copy.intents).await?;
                self.txn_hold_restored(&copy.intents);
            }
            if let Some(status) = copy.record {
                self.store.txn_set_record(&copy.txn, status, now_ms).await?;
            }
        }
        Ok(newest.len() as u64)
    }
}

/// Replaces the copies of the transactions resolved here once every peer acknowledged the
/// log past their resolve (a peer that lost this region's disk could otherwise take back
/// neither the intents nor the versions they became).
pub async fn copy_loop(region: Arc<Region>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shipped = region
            .peers
            .iter()
            .map(|p| region.acked_by(&p.name))
            .min()
            .unwrap_or(i64::MAX);
        let due: Vec<String> = {
            let mut resolved = region.txn_copies.resolved.lock().expect("copies lock");
            let mut due = Vec::new();
            while resolved.front().is_some_and(|(_, seq)| *seq <= shipped) {
                due.extend(resolved.pop_front().map(|(txn, _)| txn));
            }
            due
        };
        for txn in due {
            if let Err(e) = region.txn_copy_out(&txn).await {
                tracing::debug!(region = region.name, txn, error = %e, "a resolved transaction's copies stay until pruned");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn every_quorum_must_be_complete() {
        let needs = vec![(set(&["a", "b"]), 1), (set(&["b", "c"]), 1)];
        assert!(!complete(&needs, &set(&[])));
        assert!(!complete(&needs, &set(&["a"])));
        assert!(complete(&needs, &set(&["b"])));
        assert!(complete(&needs, &set(&["a", "c"])));
        // A key nobody else replicates needs nobody.
        assert!(complete(&[(set(&[]), 0)], &set(&[])));
        let all = vec![(set(&["a", "b", "c", "d"]), 2)];
        assert!(!complete(&all, &set(&["a", "z"])));
        assert!(complete(&all, &set(&["a", "d"])));
    }
}
