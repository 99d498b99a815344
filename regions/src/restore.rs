//! A region restored from a backup (`geosaga region restore`, docs/operations.md): before
//! it serves, it takes back from its peers what it wrote after the backup.
//!
//! The backup's log ends where the backup was taken, but the lost incarnation went on: it
//! gave sequence numbers the backup never saw, and its peers applied those entries. Two
//! things keep a restored region from diverging:
//!
//! - **A new log incarnation.** A restored store is marked (the backup copy itself, or the
//!   target of a restore); its first open drops the old log and moves the next sequence
//!   number past [`SEQ_PER_MS`] times the clock's milliseconds ([`restore_floor`]). No region gives
//!   sequence numbers faster than that, so the number is past every one the lost incarnation
//!   gave, and peers (which skip entries at or below what they applied) never take a new
//!   entry for an old one. The log's start moving past every peer's position makes the
//!   shipper announce a gap, so each peer freezes the closed timestamp it trusts for this
//!   region until anti-entropy compared everything.
//! - **Taking back its own writes.** Before the API starts, [`recover`] asks every peer for
//!   the versions and counter components whose origin is this region, and stores those it
//!   lacks: the writes acknowledged after the backup (a strong one reached its quorum, and
//!   its entry the peers that applied it). Anti-entropy then brings every peer what any
//!   other held. It waits for every configured peer, retrying: a peer never heard from could
//!   hold a write no other has.
//! - **Its transactions.** Every intent it laid, every record it kept and every prepare it
//!   stopped was kept by a quorum of its peers before it told anyone
//!   (`node::txn`'s copies): it takes back the newest copy of each, so a transaction it had
//!   prepared is still prepared here, and stays all or nothing.
//! - **What it had applied of its peers.** The backup also lost the entries of the peers'
//!   logs applied after it, which they will not ship again (they acknowledged them): each
//!   peer's answer says how far, and those entries become a gap (`open_gap`), repaired by
//!   anti-entropy before reads trust the closed timestamp again.
//!
//! Then it waits `max_clock_offset_ms`, so that its new writes take timestamps past every
//! closed timestamp the lost incarnation published.

use std::time::Duration;

use regions_core::hlc::Timestamp;
use regions_core::protocol::{Gap, RecoverRequest, RecoverResponse};
use regions_core::replica::Incoming;

use crate::node::{Peer, Region};
#[cfg(doc)]
use crate::node::{SEQ_PER_MS, restore_floor};
use crate::{Error, Result};

/// Answers a restored peer: what this region holds of its writes.
pub async fn answer(region: &Region, req: &RecoverRequest) -> Result<RecoverResponse> {
    if region.peer(&req.from).is_err() {
        return Err(Error::Peer(format!("unknown region {:?}", req.from)));
    }
    let mut keys: Vec<String> = region
        .store
        .version_ids_of(&req.from)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    keys.dedup();
    Ok(RecoverResponse {
        versions: region.store.versions_of(&req.from, &keys).await?,
        counters: region.store.counters_of(&req.from).await?,
        acked_seq: region.acked_by(&req.from),
        txns: region.txn_copies_for_restore(&req.from, req.floor).await?,
    })
}

async fn ask(region: &Region, peer: &Peer, floor: Timestamp) -> Result<RecoverResponse> {
    let request = RecoverRequest {
        from: region.name.clone(),
        floor: Some(floor),
    };
    region.post_to_peer(peer, "/internal/v1/recover", &request).await
}

/// The backup also lost what this region applied from `peer` after it was taken, and `peer`
/// will not ship it again (it acknowledged up to `acked_seq`): records those entries as a
/// gap, which freezes the closed timestamp reads trust for `peer` until an anti-entropy
/// round fetched every write of `peer` up to now.
async fn open_gap(region: &Region, peer: &Peer, acked_seq: i64) -> Result<()> {
    let _applying = region.lock_replica_states().await;
    let state = region.store.replica_states().await?.remove(&peer.name);
    if acked_seq <= state.map_or(0, |s| s.applied_seq) {
        return Ok(());
    }
    let incoming = Incoming {
        entries: &[],
        closed: state.map_or_else(Timestamp::default, |s| s.closed),
        skip_to: None,
        gap: Some(Gap {
            upto_seq: acked_seq,
            upto_ts: region.clock.now(),
        }),
    };
    let state = region.store.apply_batch(&peer.name, incoming, &|_| None).await?;
    region.set_closed(&peer.name, state.readable_closed());
    tracing::info!(
        region = region.name,
        peer = peer.name,
        upto_seq = acked_seq,
        "restored from a backup: what the backup missed of this peer's log is a gap for anti-entropy"
    );
    Ok(())
}

/// Takes back from every peer the writes of this region it lacks (see the module
/// documentation); returns how many versions and components were new here.
pub async fn recover(region: &Region) -> Result<u64> {
    let mut recovered = 0;
    let mut txns = Vec::new();
    // Past every timestamp the lost incarnation gave (its clock ran at most the offset ahead
    // of the wall clock): a copy it sent that a peer had not kept when asked is refused
    // there from now on, and this incarnation's own copies are above it.
    let floor = Timestamp {
        wall_ms: region.clock.physical_ms() + region.config.max_clock_offset_ms,
        logical: 0,
    };
    region.clock.update(floor)?;
    for peer in &region.peers {
        let mut attempt = 0u32;
        let answer = loop {
            match ask(region, peer, floor).await {
                Ok(answer) => break answer,
                Err(e) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(
                            region = region.name,
                            peer = peer.name,
                            error = %e,
                            "restored from a backup: waiting for this peer to hand back our writes"
                        );
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let placement = region.placement();
        let tracked = |key: &str| placement.writes_anywhere(key).map(str::to_owned);
        let new = region
            .store
            .repair(&answer.versions, &answer.counters, &tracked)
            .await?;
        tracing::info!(
            region = region.name,
            peer = peer.name,
            versions = answer.versions.len(),
            counters = answer.counters.len(),
            new,
            "restored from a backup: took back our writes from a peer"
        );
        recovered += new;
        txns.extend(answer.txns.into_iter().map(|copy| (peer.name.clone(), copy)));
        open_gap(region, peer, answer.acked_seq).await?;
    }
    let taken = region.txn_take_back(txns).await?;
    if taken > 0 {
        tracing::info!(
            region = region.name,
            transactions = taken,
            "restored from a backup: took back our transactions' intents and records from the peers' copies"
        );
    }
    tokio::time::sleep(Duration::from_millis(region.config.max_clock_offset_ms)).await;
    Ok(recovered)
}
