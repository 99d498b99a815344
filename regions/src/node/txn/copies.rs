//! A home's transaction states, replicated with its keys' consistency: before a region
//! tells anyone that it prepared a transaction (its intents and proposal), that it will
//! never prepare one (a prevention), or how a record it keeps stands, a quorum of its peers
//! keeps a copy of that state at least as new ([`TxnCopy`]), as a strong write's intent is
//! kept by a quorum before the write commits. Intents go only to the regions that replicate
//! their keys (a rule's replica set), each key's quorum counted among those; a record, which
//! holds no value, goes to every peer.
//!
//! Two messages carry a copy instead of a quorum round: a remote home's `Prepared` answer,
//! to a gateway that asked to keep it and keeps it before it counts the answer (the home
//! counts the gateway towards its quorum), and a resolve, whose home keeps the committed
//! record's copy before it resolves on it.
//!
//! Nothing reads a copy while its home lives. A home restored from a backup takes back the
//! newest copies its peers kept (`crate::restore`; merged per key, `kept.rs`), before it
//! serves: every answer it gave before its disk was lost is then still true of it, so a
//! transaction stays all or nothing across the loss (a recovery that asked it finds it
//! prepared, a prevention stands, a decided record stays decided).
//!
//! Copies are dropped once the home resolved the transaction and its log (the versions the
//! resolve wrote) reached every peer: until then every copy it sends still carries the
//! intents it resolved, and then it sends the state it is left with (a decided record, or
//! nothing) in their place ([`copy_loop`]). Copies a home never replaced (it crashed
//! meanwhile) are pruned with the records, after a week. What a region does with the copies
//! it keeps for its peers, and a restore's take-back, are in `kept.rs`.

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

/// How many resolved transactions' copies are replaced at once.
const REPLACING: usize = 16;

/// How many states this region remembers having copied (past that it forgets them all, and
/// copies again on the next answer).
const REMEMBERED: usize = 100_000;

/// A region's state of one transaction: its intents there and its record's row there.
type State = (Vec<TxnIntent>, Option<TxnStatus>);

/// What a region knows of the copies of its transaction states, and of those it keeps.
#[derive(Default)]
pub struct Copies {
    /// Held shared while a copy is kept here, and exclusively while a restored peer's copies
    /// are read and its floor set: a copy is either seen by the restore or refused after it.
    pub(super) keeping: tokio::sync::RwLock<()>,
    /// Per restored peer, the floor below which its copies are refused (in memory: a copy
    /// still in flight when this region restarts is lost with its sender's request).
    pub(super) floors: Mutex<HashMap<String, Timestamp>>,
    /// Per transaction resolved here whose resolve's log may not have reached every peer:
    /// the intents it resolved, which every copy still carries (a restore would otherwise
    /// find neither them nor their versions).
    unshipped: Mutex<HashMap<String, Vec<TxnIntent>>>,
    /// Held while a state is read and timestamped: copies taken later are newer.
    reading: tokio::sync::Mutex<()>,
    /// Per transaction copied: the last state a quorum kept, or `None` when copies went out
    /// but which quorum keeps which is not known here (one counted on a gateway, or on a
    /// peer older than the copies).
    pub(super) copied: Mutex<HashMap<String, Option<State>>>,
    /// Transactions resolved here, with the log's last sequence number after the resolve:
    /// their copies are replaced once every peer acknowledged the log that far.
    resolved: Mutex<VecDeque<(String, i64)>>,
}

/// What a peer did with a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// It keeps it.
    Kept,
    /// It is older than the copies (it does not know the route: a rolling upgrade), and
    /// counts as keeping it, as every region did before copies existed.
    Older,
}

/// Sends `request` to `peer`: `Ok` once it kept the copy, or is older than the copies
/// (with a warning).
async fn send(region: &Region, peer: &Peer, request: &CopyRequest) -> std::result::Result<Sent, String> {
    let response = region
        .http
        .post(format!("{}/internal/v1/txn/copy", peer.address))
        .json(request)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(Sent::Kept);
    }
    let body = response.text().await.unwrap_or_default();
    // Only geosaga's own answer to a route it does not know (not a proxy's 404).
    if status == reqwest::StatusCode::NOT_FOUND
        && body.contains("/problems/not-found\"")
        && body.contains("no such route")
    {
        tracing::warn!(
            peer = peer.name,
            txn = request.copy.txn,
            "this peer keeps no copies of transaction states (it is older): counted as keeping one until it is \
             upgraded"
        );
        return Ok(Sent::Older);
    }
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
    /// This region's state of `txn`, as its copies carry it: with the intents it resolved
    /// until the resolve's log reached every peer.
    pub(crate) async fn txn_state(&self, txn: &str) -> Result<State> {
        let mut intents = self.store.txn_intents_of(txn).await?;
        if intents.is_empty()
            && let Some(resolved) = self.txn_copies.unshipped.lock().expect("copies lock").get(txn)
        {
            intents = resolved.clone();
        }
        let record = self.store.txn_record(txn).await?;
        Ok((intents, record))
    }

    /// Returns once a quorum of peers keeps a copy of this region's state of `txn` as it is
    /// now (at once if one was kept before and nothing changed since), or fails with
    /// [`Error::QuorumNotReached`] at the strong writes' deadline.
    pub(crate) async fn txn_copy_out(&self, txn: &str) -> Result<()> {
        self.copy_out(txn, None, false).await.map(|_| ())
    }

    /// [`Region::txn_copy_out`], counting `keeper` (the gateway of a prepare, which asked to
    /// keep the copy its answer carries, [`regions_core::protocol::Prepare::keeps_copy`]) as
    /// one that keeps it: returns the copy for `keeper`, and remembers only that copies went
    /// out (only this answer counts on the keeper; a recovery's question copies again).
    pub(crate) async fn txn_copy_out_keeping(&self, txn: &str, keeper: Option<&str>) -> Result<Option<TxnCopy>> {
        self.copy_out(txn, keeper, false).await
    }

    /// [`Region::txn_copy_out_keeping`]; with `replace`, the state is sent even when nothing
    /// is remembered of it (the copies of a resolved transaction are replaced).
    async fn copy_out(&self, txn: &str, keeper: Option<&str>, replace: bool) -> Result<Option<TxnCopy>> {
        let (state, at) = {
            let _reading = self.txn_copies.reading.lock().await;
            (self.txn_state(txn).await?, self.clock.now())
        };
        let before = self.txn_copies.copied.lock().expect("copies lock").get(txn).cloned();
        let empty = state.0.is_empty() && state.1.is_none();
        if before.as_ref() == Some(&Some(state.clone())) || (empty && before.is_none() && !replace) {
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
            self.keep_at_quorum(&copy, Some(keeper), false).await?;
            return Ok(Some(self.copy_for(&copy, keeper)));
        }
        // A replacement goes to every peer that may hold an older copy, not only a quorum.
        let all_kept = self.keep_at_quorum(&copy, None, replace).await?;
        self.remember(txn, (!empty).then_some(all_kept.then_some(state)));
        Ok(None)
    }

    /// A copy of this region's state of `txn` as it is now, for `holder`, sent with a
    /// message rather than kept by a quorum (nothing is remembered of it).
    pub(crate) async fn txn_copy_for(&self, txn: &str, holder: &str) -> Result<TxnCopy> {
        let ((intents, record), at) = {
            let _reading = self.txn_copies.reading.lock().await;
            (self.txn_state(txn).await?, self.clock.now())
        };
        let copy = TxnCopy {
            txn: txn.to_owned(),
            at,
            intents,
            record,
        };
        Ok(self.copy_for(&copy, holder))
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
    /// that keeps it (it is sent its copy with the answer); with `everyone`, it then waits
    /// (until the same deadline) for the peers beyond the quorum too. Returns whether every
    /// peer counted kept it (not one older than the copies).
    async fn keep_at_quorum(&self, copy: &TxnCopy, keeper: Option<&str>, everyone: bool) -> Result<bool> {
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
        let mut all_kept = true;
        if complete(&needs, &acked) {
            return Ok(all_kept);
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
                            Ok(kept) => return (peer, kept),
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
                Ok(Some((peer, kept))) => {
                    self.touch(&peer.name);
                    acked.insert(peer.name.clone());
                    all_kept &= kept == Sent::Kept;
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
        while everyone && let Ok(Some((peer, kept))) = tokio::time::timeout_at(deadline, sends.next()).await {
            self.touch(&peer.name);
            all_kept &= kept == Sent::Kept;
        }
        Ok(all_kept)
    }

    /// Notes that the intents of `txn` here are about to be resolved: if it committed, every
    /// copy carries them until the resolve's log reached every peer
    /// ([`Region::txn_copies_resolved`]); an abort ships nothing.
    pub(crate) async fn txn_copies_resolving(&self, txn: &str, commit_ts: Option<Timestamp>) -> Result<()> {
        if commit_ts.is_none() {
            return Ok(());
        }
        let intents = self.store.txn_intents_of(txn).await?;
        if !intents.is_empty() {
            self.txn_copies
                .unshipped
                .lock()
                .expect("copies lock")
                .insert(txn.to_owned(), intents);
        }
        Ok(())
    }

    /// The transactions resolved here whose resolve's log every peer acknowledged (up to
    /// sequence number `shipped`): their copies no longer carry the intents they resolved,
    /// and are to be replaced.
    pub(crate) fn txn_copies_shipped(&self, shipped: i64) -> Vec<String> {
        let mut resolved = self.txn_copies.resolved.lock().expect("copies lock");
        let mut unshipped = self.txn_copies.unshipped.lock().expect("copies lock");
        let mut due = Vec::new();
        // An abort's entry (0) is due at once; a commit's once its log shipped.
        while let Some((txn, _)) = resolved.front().filter(|(_, seq)| *seq <= shipped).cloned() {
            resolved.pop_front();
            unshipped.remove(&txn);
            due.push(txn);
        }
        due
    }

    /// Notes that this resolve of `txn` resolved `resolved` intents here: its copies are
    /// replaced ([`copy_loop`]) once the log that holds the resolve reached every peer if it
    /// committed, at once if it aborted (and was copied). A repeated resolve (none left)
    /// changes nothing.
    pub(crate) async fn txn_copies_resolved(
        &self,
        txn: &str,
        commit_ts: Option<Timestamp>,
        resolved: u64,
    ) -> Result<()> {
        if resolved == 0 {
            return Ok(());
        }
        let seq = match commit_ts {
            Some(_) if self.txn_copies.unshipped.lock().expect("copies lock").contains_key(txn) => {
                self.store.last_seq().await?
            }
            None if self.txn_copies.copied.lock().expect("copies lock").contains_key(txn) => 0,
            Some(_) | None => return Ok(()),
        };
        let mut queue = self.txn_copies.resolved.lock().expect("copies lock");
        if queue.len() >= RESOLVED_QUEUE
            && let Some((oldest, _)) = queue.pop_front()
        {
            // Its copies keep the intents it resolved until they are pruned.
            tracing::warn!(
                region = self.name,
                txn = oldest,
                "too many resolved transactions wait for their log to ship"
            );
        }
        queue.push_back((txn.to_owned(), seq));
        Ok(())
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
        let due = region.txn_copies_shipped(shipped);
        futures::stream::iter(due)
            .for_each_concurrent(REPLACING, |txn| {
                let region = &region;
                async move {
                    if let Err(e) = region.copy_out(&txn, None, true).await {
                        tracing::debug!(region = region.name, txn, error = %e, "a resolved transaction's copies stay until pruned");
                    }
                }
            })
            .await;
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
