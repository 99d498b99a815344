//! Log shipping, pipelined: one task per peer pushes the home's log as soon as a write is
//! logged (the write path signals it), keeps up to [`MAX_IN_FLIGHT`] batches in flight over
//! the client's kept-alive connections, and sends an empty batch (a closed timestamp only)
//! when nothing was sent for `closed_ts_interval_ms` and fewer than [`MAX_EMPTY_IN_FLIGHT`]
//! batches are in flight: empty batches never take the slots entries need (with a round trip
//! of 4 intervals they would fill 4 slots, and a write would wait half an interval for one). Acknowledgements are cumulative; on
//! any error the batches in flight are dropped and shipping resumes from the acknowledged
//! position. A replica refuses a batch that does not follow what it applied (batches on
//! different connections may overtake one another), so nothing is ever applied over a hole.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::time::Instant;

use crate::node::{Peer, Region};
use regions_core::protocol::{ReplicateAck, ReplicateBatch};

/// Batches in flight to one peer at most.
pub const MAX_IN_FLIGHT: usize = 8;

/// An empty batch is sent only while fewer batches than this are in flight.
pub const MAX_EMPTY_IN_FLIGHT: usize = 4;

/// How a replica's refusal of a batch that overtook its predecessor starts.
pub(crate) const OUT_OF_ORDER: &str = "out-of-order batch";

impl Region {
    /// Every region this one ships its log to: its configured peers and the replica-only
    /// members that joined since.
    pub(crate) fn shipping_targets(&self) -> Vec<Peer> {
        let mut targets = self.peers.clone();
        for m in self.membership.learners() {
            if m.name != self.name && !targets.iter().any(|p| p.name == m.name) {
                targets.push(Peer {
                    name: m.name,
                    address: m.address,
                });
            }
        }
        targets
    }
}

async fn send(region: Arc<Region>, peer: Peer, batch: ReplicateBatch) -> Result<ReplicateAck, String> {
    let response = region
        .http
        .post(format!("{}/internal/v1/replicate", peer.address))
        .json(&batch)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let detail = response.text().await.unwrap_or_default();
        return Err(format!("{} answered {status}: {detail}", peer.name));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// The log position a batch built after `after` takes its receiver to: its last entry, or
/// further when entries were left out (keys it holds no replica of) or truncated (a gap).
fn covered(batch: &ReplicateBatch, after: i64) -> i64 {
    [
        batch.entries.last().map(|e| e.seq),
        batch.skip_to,
        batch.gap.map(|g| g.upto_seq),
    ]
    .into_iter()
    .flatten()
    .fold(after, i64::max)
}

/// Whether an empty batch (a closed timestamp only) is due with `in_flight` batches in flight.
fn empty_due(in_flight: usize, next_due: Instant) -> bool {
    in_flight < MAX_EMPTY_IN_FLIGHT && Instant::now() >= next_due
}

/// Ships the log to `peer` for ever (see the module's documentation).
pub async fn ship_loop(region: Arc<Region>, peer: Peer) {
    let interval = Duration::from_millis(region.config.closed_ts_interval_ms);
    let mut logged = region.log_changed.subscribe();
    let mut sent = region.acked_by(&peer.name);
    let mut in_flight = FuturesOrdered::new();
    let mut next_due = Instant::now();
    let mut retry_at: Option<Instant> = None;
    let mut more = true;
    let mut failing = false;
    loop {
        if retry_at.is_some_and(|t| t <= Instant::now()) {
            retry_at = None;
        }
        while retry_at.is_none() && in_flight.len() < MAX_IN_FLIGHT && (more || empty_due(in_flight.len(), next_due)) {
            match region.next_batch(&peer, sent).await {
                Ok((batch, full)) => {
                    if batch.entries.is_empty() && !empty_due(in_flight.len(), next_due) {
                        more = false;
                        break;
                    }
                    more = full;
                    sent = covered(&batch, sent);
                    next_due = Instant::now() + interval;
                    in_flight.push_back(send(region.clone(), peer.clone(), batch));
                }
                Err(e) => {
                    tracing::warn!(region = region.name, peer = peer.name, error = %e, "reading the log to ship failed");
                    retry_at = Some(Instant::now() + interval);
                }
            }
        }
        let wake = match retry_at {
            Some(t) => t,
            None if in_flight.len() < MAX_EMPTY_IN_FLIGHT => next_due,
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = logged.changed() => more = true,
            Some(result) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(ack) => {
                    if let Err(e) = region.record_ack(&peer, ack).await {
                        tracing::warn!(region = region.name, peer = peer.name, error = %e, "recording an acknowledgement failed");
                    }
                    if failing {
                        tracing::info!(region = region.name, peer = peer.name, "replication to peer resumed");
                    }
                    failing = false;
                }
                Err(e) => {
                    in_flight = FuturesOrdered::new();
                    sent = region.acked_by(&peer.name);
                    more = true;
                    if e.contains(OUT_OF_ORDER) {
                        tracing::debug!(region = region.name, peer = peer.name, error = e, "batch overtaken; resending from the acknowledged position");
                    } else {
                        if !failing {
                            tracing::warn!(region = region.name, peer = peer.name, error = e, "replication to peer failing");
                        }
                        failing = true;
                        retry_at = Some(Instant::now() + interval);
                    }
                }
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use regions_core::hlc::{Clock, Timestamp};

    fn batch(after: i64, seqs: &[i64]) -> ReplicateBatch {
        let ts = |wall_ms: u64| serde_json::to_value(Timestamp { wall_ms, logical: 0 }).unwrap();
        let entries: Vec<_> = seqs
            .iter()
            .map(|s| json!({"seq": s, "key": format!("k{s}"), "ts": ts(1_000 + *s as u64), "value": "1", "state": "committed"}))
            .collect();
        serde_json::from_value(json!({"from": "b", "entries": entries, "closed": ts(900), "after": after})).unwrap()
    }

    #[tokio::test]
    async fn a_replica_never_applies_a_batch_over_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::parse(&format!(
            "[[regions]]\nname = \"a\"\naddress = \"http://127.0.0.1:1\"\ndata = \"{}\"\n\
             [[regions]]\nname = \"b\"\naddress = \"http://127.0.0.1:2\"\n",
            dir.path().join("a.db").display()
        ))
        .unwrap();
        let region = Region::open(config, "a", Clock::system(250)).await.unwrap();
        // The second batch overtook the first: refused, nothing applied.
        let refused = region.accept_batch(&batch(2, &[3, 4])).await.unwrap_err();
        assert!(refused.to_string().contains(OUT_OF_ORDER), "{refused}");
        assert_eq!(region.accept_batch(&batch(0, &[1, 2])).await.unwrap().applied_seq, 2);
        assert_eq!(region.accept_batch(&batch(2, &[3, 4])).await.unwrap().applied_seq, 4);
        // A batch sent again after a reset overlaps what was applied: accepted, idempotent.
        assert_eq!(
            region
                .accept_batch(&batch(0, &[1, 2, 3, 4, 5]))
                .await
                .unwrap()
                .applied_seq,
            5
        );
        assert_eq!(covered(&batch(5, &[6, 7]), 5), 7);
        assert_eq!(covered(&batch(5, &[]), 5), 5);
    }
}
