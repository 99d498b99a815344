//! A home's log shipping, pipelined: one task per peer pushes the home's log as soon as a write is
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

use regions_core::closed;
use regions_core::protocol::{EntryKind, EntryState, Gap, LogEntry, ReplicateAck, ReplicateBatch};

use super::OUT_OF_ORDER;
use crate::Result;
use crate::node::{Peer, Region};

/// Batches in flight to one peer at most.
pub const MAX_IN_FLIGHT: usize = 8;

/// An empty batch is sent only while fewer batches than this are in flight.
pub const MAX_EMPTY_IN_FLIGHT: usize = 4;

/// Every region this one ships its log to: its configured peers and the replica-only
/// members that joined since.
fn shipping_targets(region: &Region) -> Vec<Peer> {
    let mut targets = region.peers.clone();
    for m in region.membership.learners() {
        if m.name != region.name && !targets.iter().any(|p| p.name == m.name) {
            targets.push(Peer {
                name: m.name,
                address: m.address,
            });
        }
    }
    targets
}

/// The next batch of the log for `peer`, holding the entries after `after` (the position
/// the previous batch in flight ended at), with the timestamp it closes. Returns the batch
/// and whether it was full (more entries are waiting).
async fn next_batch(region: &Region, peer: &Peer, after: i64) -> Result<(ReplicateBatch, bool)> {
    // Read the clock and the pending writes before the log: every write at or below the
    // closed timestamp is then either in the log already or accounted for.
    let (now, earliest_pending) = region.now_and_earliest_pending();
    let mut entries = region.store.log_after(after, region.config.ship_batch).await?;
    let gap = gap_after(region, after, entries.first().map(|e| e.seq)).await?;
    let full = entries.len() == region.config.ship_batch as usize;
    if let Some(i) = entries.iter().position(|e| e.state == EntryState::Pending) {
        entries.truncate(i);
    }
    let within = within_bytes(&entries, region.config.ship_batch_bytes);
    let cut = within < entries.len();
    entries.truncate(within);
    let last = entries.last().map_or(after, |e| e.seq);
    let earliest_unshipped = region.store.earliest_after(last).await?;
    let full = (full || cut) && !entries.is_empty();
    let (entries, skip_to) = for_peer(region, peer, entries, last);
    let batch = ReplicateBatch {
        from: region.name.clone(),
        entries,
        closed: closed::closed_timestamp(now, earliest_pending, earliest_unshipped),
        skip_to,
        gap,
        after: Some(after),
    };
    Ok((batch, full))
}

/// Records `peer`'s acknowledgement (cumulative: everything up to `applied_seq`) and
/// truncates what every peer acknowledged.
async fn record_ack(region: &Region, peer: &Peer, ack: ReplicateAck) -> Result<()> {
    region.touch(&peer.name);
    if ack.applied_seq > region.acked_by(&peer.name) {
        region.store.set_cursor(&peer.name, ack.applied_seq).await?;
        region.set_acked(&peer.name, ack.applied_seq);
        truncate(region).await?;
    }
    Ok(())
}

/// Drops from a batch for `peer` the entries of keys it holds no replica of; returns what
/// is left and, if anything was dropped, how far the batch covers the log.
fn for_peer(region: &Region, peer: &Peer, mut entries: Vec<LogEntry>, last: i64) -> (Vec<LogEntry>, Option<i64>) {
    let placement = region.placement();
    let before = entries.len();
    entries.retain(|e| e.kind == EntryKind::Counter || placement.replicates_to(&e.key, &peer.name));
    let skip_to = (entries.len() < before).then_some(last);
    (entries, skip_to)
}

/// The entries after `after` that are gone from the log (truncated past the retention
/// before the peer got them), given the first entry read after `after`. Sequence numbers
/// have no holes, so that entry (or, with none, the truncation point) says where the gap
/// ends; the clock read now, after the log, is above every truncated entry's timestamp.
/// Anti-entropy repairs the gap; the peer's position moves past it.
async fn gap_after(region: &Region, after: i64, first: Option<i64>) -> Result<Option<Gap>> {
    let missing_upto = match first {
        Some(seq) => seq - 1,
        None => region.store.truncated_upto().await?,
    };
    Ok((missing_upto > after).then(|| Gap {
        upto_seq: missing_upto,
        upto_ts: region.clock.now(),
    }))
}

/// Drops the log entries every peer acknowledged, and those beyond the log's retention.
async fn truncate(region: &Region) -> Result<()> {
    let floor = shipping_targets(region)
        .iter()
        .map(|p| region.acked_by(&p.name))
        .min()
        .unwrap_or(0);
    if floor > 0 {
        let dropped = region.store.truncate_log(floor).await?;
        if dropped > 0 {
            tracing::debug!(region = region.name, upto = floor, dropped, "replication log truncated");
        }
    }
    if region.config.log_retention_entries > 0 {
        let dropped = region
            .store
            .truncate_to_retention(region.config.log_retention_entries)
            .await?;
        if dropped > 0 {
            tracing::info!(
                region = region.name,
                dropped,
                "replication log past its retention: entries a peer had not acknowledged were dropped; \
                 anti-entropy will repair that peer"
            );
        }
    }
    Ok(())
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
        region.note_refusal(&peer.name, &detail);
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
    let mut logged = region.log_changes();
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
            match next_batch(&region, &peer, sent).await {
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
                    if let Err(e) = record_ack(&region, &peer, ack).await {
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

/// How many of `entries`, from the first, fit in `max_bytes` of values and keys; at least
/// one, so that an entry larger than the bound travels alone rather than never.
fn within_bytes(entries: &[LogEntry], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        total += entry.key.len() + entry.value.as_ref().map_or(0, String::len);
        if total > max_bytes {
            return i.max(1);
        }
    }
    entries.len()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use regions_core::hlc::{Clock, Timestamp};

    use super::*;
    use crate::replication::accept_batch;
    use crate::store::MemoryStore;

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
        let store = Arc::new(MemoryStore::new());
        let region = Region::with_store(config, "a", Clock::system(250), store)
            .await
            .unwrap();
        // The second batch overtook the first: refused, nothing applied.
        let refused = accept_batch(&region, &batch(2, &[3, 4])).await.unwrap_err();
        assert!(refused.to_string().contains(OUT_OF_ORDER), "{refused}");
        assert_eq!(accept_batch(&region, &batch(0, &[1, 2])).await.unwrap().applied_seq, 2);
        assert_eq!(accept_batch(&region, &batch(2, &[3, 4])).await.unwrap().applied_seq, 4);
        // A batch sent again after a reset overlaps what was applied: accepted, idempotent.
        assert_eq!(
            accept_batch(&region, &batch(0, &[1, 2, 3, 4, 5]))
                .await
                .unwrap()
                .applied_seq,
            5
        );
        assert_eq!(covered(&batch(5, &[6, 7]), 5), 7);
        assert_eq!(covered(&batch(5, &[]), 5), 5);
    }

    fn entry(seq: i64, value_bytes: usize) -> LogEntry {
        LogEntry {
            seq,
            key: "k".into(),
            ts: Timestamp::default(),
            value: Some("7".repeat(value_bytes)),
            state: EntryState::Committed,
            kind: EntryKind::Version,
            prev: None,
        }
    }

    #[test]
    fn a_batch_holds_what_fits_its_bytes_and_a_large_entry_travels_alone() {
        let small: Vec<LogEntry> = (1..=10).map(|i| entry(i, 99)).collect();
        assert_eq!(within_bytes(&small, 1_000), 10, "10 × 100 bytes fit in 1,000");
        assert_eq!(within_bytes(&small, 999), 9);
        let large = vec![entry(1, 5_000), entry(2, 10)];
        assert_eq!(within_bytes(&large, 1_000), 1, "alone, but shipped");
        let after_small = vec![entry(1, 10), entry(2, 5_000)];
        assert_eq!(
            within_bytes(&after_small, 1_000),
            1,
            "the large one waits for the next batch"
        );
        assert_eq!(within_bytes(&[], 1_000), 0);
    }
}
