//! Anti-entropy: a region compares what it holds of each peer's writes with what that peer
//! holds, and fetches what it lacks. It repairs what the log could not deliver: entries the
//! peer truncated before this region acknowledged them (it was down or cut off for longer
//! than `log_retention_entries` lasted), or anything lost on the way.
//!
//! A round of region `R` with peer `P` covers the writes whose *origin* is `P` (the
//! versions `P` executed and `P`'s counter components): `P` is authoritative for them.
//! Items are grouped into buckets by key hash ([`regions_core::digest`]); each bucket's digest is
//! the wrapping sum of its items' hashes (order-free). `R` asks `P` for its bucket digests,
//! computes its own, and fetches the items of the differing buckets only.
//!
//! The window compared per key: the newest version at or below `since`, and every version
//! in `(since, upto]`, where `upto` is the closed timestamp of `P`'s last batch applied here
//! (every write of `P` at or below it is committed at `P`, and without a gap is here too:
//! steady-state rounds find nothing) and `since` is the closed timestamp reads trust (the
//! frozen one while a gap is open, so the round also brings the versions the gap hid
//! *between* two versions of a key), clamped to the garbage-collection horizon.
//!
//! **Closing a gap.** When a batch says entries up to sequence `g` were truncated before we
//! got them (all at or below timestamp `G`), the replica keeps reading with the closed
//! timestamp it held before (which was honest) and records the gap. A round that starts
//! after that, with `upto >= G`, compares every item of `P`: matching buckets hold the same
//! items, and differing ones are fetched whole from `P`, which has every version it
//! committed. So after the round this region holds every write of `P` at or below `upto`,
//! and the gap closes: reads trust the batch's closed timestamp again. A gap that opened
//! during the round is newer (a greater `g`) and stays open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use regions_core::digest::{bucket_of, differing, digest, window};
use regions_core::hlc::Timestamp;
use regions_core::protocol::{CounterRow, DigestRequest, DigestResponse};

use crate::node::{Peer, Region};
use crate::{Error, Result};

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Buckets that differed.
    pub differing: usize,
    /// Items fetched that were new here.
    pub repaired: u64,
    /// Whether it closed a gap.
    pub closed_gap: bool,
}

/// This region's items of `origin`'s writes that `requester` replicates, by key.
async fn items(
    region: &Region,
    origin: &str,
    requester: &str,
    since: Timestamp,
    upto: Timestamp,
) -> Result<(BTreeMap<String, Vec<Timestamp>>, Vec<CounterRow>)> {
    let placement = region.placement();
    let mut versions: BTreeMap<String, Vec<Timestamp>> = BTreeMap::new();
    for (key, ts) in region.store.version_ids_of(origin).await? {
        if placement.replicates_to(&key, requester) {
            versions.entry(key).or_default().push(ts);
        }
    }
    for ts in versions.values_mut() {
        *ts = window(ts, since, upto);
    }
    versions.retain(|_, ts| !ts.is_empty());
    Ok((versions, region.store.counters_of(origin).await?))
}

/// Answers a peer's digest request about this region's own writes.
pub async fn answer(region: &Region, req: &DigestRequest) -> Result<DigestResponse> {
    // Configured peers and members that joined later (which need it most: they start
    // with a gap as long as the truncated log).
    if region.peer(&req.from).is_err() && !region.membership.names().contains(&req.from) {
        return Err(Error::Peer(format!("unknown region {:?}", req.from)));
    }
    let (versions, counters) = items(region, &region.name, &req.from, req.since, req.upto).await?;
    let Some(buckets) = &req.buckets else {
        let digests = digest(
            versions.iter().map(|(k, ts)| (k.as_str(), ts.as_slice())),
            counters.iter().map(|c| (c.key.as_str(), c.component)),
        );
        return Ok(DigestResponse {
            digests,
            ..DigestResponse::default()
        });
    };
    let wanted = |key: &str| buckets.contains(&bucket_of(key));
    let keys: Vec<String> = versions.keys().filter(|k| wanted(k)).cloned().collect();
    let rows = region
        .store
        .versions_of(&region.name, &keys)
        .await?
        .into_iter()
        .filter(|r| versions.get(&r.key).is_some_and(|ts| ts.contains(&r.ts)))
        .collect();
    Ok(DigestResponse {
        versions: rows,
        counters: counters.into_iter().filter(|c| wanted(&c.key)).collect(),
        ..DigestResponse::default()
    })
}

async fn ask(region: &Region, peer: &Peer, req: &DigestRequest) -> Result<DigestResponse> {
    region.post_to_peer(peer, "/internal/v1/anti-entropy", req).await
}

/// One anti-entropy round with `peer` (see the module documentation).
pub async fn round(region: &Region, peer: &Peer) -> Result<Round> {
    let Some(state) = region.store.replica_states().await?.remove(&peer.name) else {
        return Ok(Round {
            differing: 0,
            repaired: 0,
            closed_gap: false,
        });
    };
    let upto = state.closed;
    let since = state.readable_closed().max(region.gc_horizon()).min(upto);
    let mut req = DigestRequest {
        from: region.name.clone(),
        since,
        upto,
        buckets: None,
    };
    let theirs = ask(region, peer, &req).await?.digests;
    let (versions, counters) = items(region, &peer.name, &region.name, since, upto).await?;
    let ours = digest(
        versions.iter().map(|(k, ts)| (k.as_str(), ts.as_slice())),
        counters.iter().map(|c| (c.key.as_str(), c.component)),
    );
    let diff = differing(&ours, &theirs);
    let mut repaired = 0;
    if !diff.is_empty() {
        req.buckets = Some(diff.clone());
        let items = ask(region, peer, &req).await?;
        let placement = region.placement();
        let tracked = |key: &str| placement.writes_anywhere(key).map(str::to_owned);
        repaired = region.store.repair(&items.versions, &items.counters, &tracked).await?;
        region.add_repaired(&peer.name, repaired);
    }
    let mut closed_gap = false;
    if let Some(gap) = state.gap.filter(|g| upto >= g.upto_ts) {
        let _applying = region.lock_replica_states().await;
        closed_gap = region.store.close_gap(&peer.name, gap.upto_seq).await?;
        if let Some(now) = region.store.replica_states().await?.remove(&peer.name) {
            region.set_closed(&peer.name, now.readable_closed());
        }
    }
    Ok(Round {
        differing: diff.len(),
        repaired,
        closed_gap,
    })
}

/// Runs an anti-entropy round with every peer each `anti_entropy_interval_ms` (0: no
/// periodic rounds), and with a peer whose gap is open every second or so whatever the
/// interval: nothing else closes a gap, and until then reads of that peer's keys go to it.
pub async fn run(region: Arc<Region>) {
    let every = region.config.anti_entropy_interval_ms;
    let gap_pause = (region.config.closed_ts_interval_ms * 10).max(1_000);
    let tick = Duration::from_millis(if every == 0 { gap_pause } else { every.min(gap_pause) });
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let full = every > 0 && last_full.elapsed() >= Duration::from_millis(every);
        if full {
            last_full = tokio::time::Instant::now();
        }
        let gaps = match region.store.replica_states().await {
            Ok(states) => states
                .into_iter()
                .filter(|(_, s)| s.gap.is_some())
                .map(|(home, _)| home)
                .collect(),
            Err(e) => {
                tracing::warn!(region = region.name, error = %e, "anti-entropy could not read replica states");
                Vec::new()
            }
        };
        for peer in region.peers.clone() {
            if !full && !gaps.contains(&peer.name) {
                continue;
            }
            match round(&region, &peer).await {
                Ok(round) if round.repaired > 0 || round.closed_gap => tracing::info!(
                    region = region.name,
                    peer = peer.name,
                    repaired = round.repaired,
                    differing_buckets = round.differing,
                    closed_gap = round.closed_gap,
                    "anti-entropy repaired what the log did not deliver"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(region = region.name, peer = peer.name, error = %e, "anti-entropy round failed")
                }
            }
        }
    }
}
