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
use regions_core::hlc::Timestamp;
use regions_core::protocol::{CopyRequest, TxnCopy};
use regions_core::txn::{TxnIntent, TxnStatus};

use super::super::{Peer, Region};
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

/// What a region knows of the copies of its transaction states, and of those it keeps.
#[derive(Default)]
pub struct Copies {
    /// Held while a copy is kept here, and while a restored peer's copies are read and its
    /// floor set: a copy is either seen by the restore or refused after it.
    keeping: tokio::sync::Mutex<()>,
    /// Per restored peer, the floor below which its copies are refused (in memory: a copy
    /// still in flight when this region restarts is lost with its sender's request).
    floors: Mutex<HashMap<String, Timestamp>>,
    /// Held while a state is read and timestamped: copies taken later are newer.
    reading: tokio::sync::Mutex<()>,
    /// Per transaction copied: the last state a quorum kept, or `None` when copies went out
    /// but which quorum keeps which is not known here (one counted on a gateway).
    copied: Mutex<HashMap<String, Option<State>>>,
    /// Transactions resolved here, with the log's last sequence number after the resolve:
    /// their copies are replaced once every peer acknowledged the log that far.
    resolved: Mutex<VecDeque<(String, i64)>>,
}

/// Sends `request` to `peer`: `Ok` once it kept the copy. A peer older than the copies
/// (the route is unknown to it: a rolling upgrade) counts as keeping it, as every region
/// did before copies existed, with a warning.
async fn send(region: &Region, peer: &Peer, request: &CopyRequest) -> std::result::Result<(), String> {
    let response = region
        .http
        .post(format!("{}/internal/v1/txn/copy", peer.address))
        .json(request)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        tracing::warn!(
            peer = peer.name,
            txn = request.copy.txn,
            "this peer keeps no copies of transaction states (it is older): counted as keeping one until it is \
             upgraded"
        );
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    region.note_refusal(&peer.name, &body);
    Err(format!("{} answered {status}: {body}", peer.name))
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
        self.txn_copy_out_keeping(txn, None).await.map(|_| ())
    }

    /// [`Region::txn_copy_out`], counting `keeper` (the gateway of a prepare, which asked to
    /// keep the copy its answer carries, [`regions_core::protocol::Prepare::keeps_copy`]) as
    /// one that keeps it: returns the copy for `keeper`, and remembers only that copies went
    /// out (only this answer counts on the keeper; a recovery's question copies again).
    pub(crate) async fn txn_copy_out_keeping(&self, txn: &str, keeper: Option<&str>) -> Result<Option<TxnCopy>> {
        let (state, at) = {
            let _reading = self.txn_copies.reading.lock().await;
            (self.txn_state(txn).await?, self.clock.now())
        };
        let before = self.txn_copies.copied.lock().expect("copies lock").get(txn).cloned();
        let empty = state.0.is_empty() && state.1.is_none();
        if before.as_ref() == Some(&Some(state.clone())) || (empty && before.is_none()) {
            return Ok(None);
        }
        let (intents, record) = state.clone();
        let copy = TxnCopy {
            txn: txn.to_owned(),
            at,
            intents,
            record,
        };
        if let Some(keeper) = keeper {
            self.remember(txn, Some(None));
            self.keep_at_quorum(&copy, Some(keeper)).await?;
            return Ok(Some(self.copy_for(&copy, keeper)));
        }
        self.keep_at_quorum(&copy, None).await?;
        self.remember(txn, (!empty).then_some(Some(state)));
        Ok(None)
    }

    /// Remembers what a quorum keeps of `txn` (`Some(None)`: copies went out, what is kept
    /// is not known), or forgets it (`None`: nothing is kept).
    fn remember(&self, txn: &str, kept: Option<Option<State>>) {
        let mut copied = self.txn_copies.copied.lock().expect("copies lock");
        let Some(kept) = kept else {
            copied.remove(txn);
            return;
        };
        if copied.len() >= REMEMBERED {
            copied.clear();
        }
        copied.insert(txn.to_owned(), kept);
    }

    /// What of `copy` region `holder` keeps: the intents of the keys it replicates, and the
    /// record.
    fn copy_for(&self, copy: &TxnCopy, holder: &str) -> TxnCopy {
        let placement = self.placement();
        TxnCopy {
            intents: copy
                .intents
                .iter()
                .filter(|i| placement.replicates_to(&i.key, holder))
                .cloned()
                .collect(),
            ..copy.clone()
        }
    }

    /// Sends `copy` to the peers that may keep it (each gets the intents of the keys it
    /// replicates, and the record) until every quorum is complete, `keeper` counted as one
    /// that keeps it (it is sent its copy with the answer).
    async fn keep_at_quorum(&self, copy: &TxnCopy, keeper: Option<&str>) -> Result<()> {
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
        let mut acked: BTreeSet<String> = keeper.map(str::to_owned).into_iter().collect();
        if complete(&needs, &acked) {
            return Ok(());
        }
        let needed = needs.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let timeout_ms = self.config.strong_timeout_ms;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let peers: Vec<&Peer> = self
            .peers
            .iter()
            .filter(|p| targets.contains(&p.name) && !acked.contains(&p.name))
            .collect();
        let mut sends: FuturesUnordered<_> = peers
            .into_iter()
            .map(|peer| {
                let request = CopyRequest {
                    from: self.name.clone(),
                    copy: self.copy_for(copy, &peer.name),
                };
                async move {
                    loop {
                        match send(self, peer, &request).await {
                            Ok(()) => return peer,
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

    /// Keeps a copy a peer sent of its state of a transaction (`/internal/v1/txn/copy`, or
    /// with its answer to this region's prepare). A copy stamped below the floor a restore
    /// of its sender set is refused: that restore did not see it.
    pub async fn txn_keep_copy(&self, request: &CopyRequest) -> Result<()> {
        self.peer(&request.from)?;
        self.clock
            .update(request.copy.at)
            .map_err(|e| self.refuse_clock(&request.from, e))?;
        let _keeping = self.txn_copies.keeping.lock().await;
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
        let _keeping = self.txn_copies.keeping.lock().await;
        if let Some(floor) = floor {
            let mut floors = self.txn_copies.floors.lock().expect("copies lock");
            let kept = floors.entry(home.to_owned()).or_insert(floor);
            *kept = (*kept).max(floor);
        }
        self.store.txn_copies_of(home).await
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
