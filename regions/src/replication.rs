//! Replication between regions: the intents of strong writes, the log shipper (one task per
//! peer, which also carries closed timestamps), applying what peers ship, and garbage
//! collection. Latency and partitions come from the network; nothing here waits on purpose
//! except the shipping interval and a retry's short pause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::node::{Peer, Region};
use crate::{Error, Result};
use regions_core::closed;
use regions_core::hlc::Timestamp;
use regions_core::protocol::{EntryKind, EntryState, Gap, Intent, LogEntry, ReplicateAck, ReplicateBatch};
use regions_core::replica::Incoming;

/// The pause before a failed intent is sent again (within the write's deadline).
const INTENT_RETRY: Duration = Duration::from_millis(50);

async fn post<T: serde::Serialize>(region: &Region, peer: &Peer, path: &str, body: &T) -> Result<ReplicateAck, String> {
    let response = region
        .http
        .post(format!("{}{path}", peer.address))
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", peer.name, response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// Sends a strong write to every replica and returns once the configured quorum stored it
/// durably, or fails with [`Error::QuorumNotReached`] at the deadline.
pub async fn store_intents(region: &Region, key: &str, seq: i64, ts: Timestamp, value: Option<&str>) -> Result<()> {
    // A rule's replica set narrows who holds the key, and so the quorum.
    let placement = region.placement();
    let replicas: Vec<&Peer> = region
        .peers
        .iter()
        .filter(|p| placement.replicates_to(key, &p.name))
        .collect();
    let needed = region.config.quorum.needed(replicas.len());
    if needed == 0 {
        return Ok(());
    }
    let intent = Intent {
        from: region.name.clone(),
        entry: LogEntry {
            seq,
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            state: EntryState::Pending,
            kind: EntryKind::Version,
            prev: None,
        },
    };
    let timeout_ms = region.config.strong_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut sends: FuturesUnordered<_> = replicas
        .into_iter()
        .map(|peer| {
            let intent = &intent;
            async move {
                loop {
                    match post(region, peer, "/internal/v1/intents", intent).await {
                        Ok(_) => return peer,
                        Err(e) => {
                            tracing::debug!(peer = peer.name, error = e, "intent not stored; retrying");
                            tokio::time::sleep(INTENT_RETRY).await;
                        }
                    }
                }
            }
        })
        .collect();
    let mut acked = 0;
    while acked < needed {
        match tokio::time::timeout_at(deadline, sends.next()).await {
            Ok(Some(peer)) => {
                acked += 1;
                region.touch(&peer.name);
            }
            Ok(None) | Err(_) => {
                return Err(Error::QuorumNotReached {
                    key: key.to_owned(),
                    acked,
                    needed,
                    timeout_ms,
                });
            }
        }
    }
    Ok(())
}

impl Region {
    /// Notes a successful exchange with `peer`.
    pub(crate) fn touch(&self, peer: &str) {
        self.contact
            .lock()
            .expect("contact lock")
            .insert(peer.to_owned(), Instant::now());
    }

    /// Stores an intent a peer sent.
    pub async fn accept_intent(&self, intent: &Intent) -> Result<ReplicateAck> {
        self.peer(&intent.from)?;
        self.clock.update(intent.entry.ts)?;
        self.store.put_intent(&intent.from, &intent.entry).await?;
        self.touch(&intent.from);
        Ok(ReplicateAck {
            applied_seq: intent.entry.seq,
        })
    }

    /// Applies a batch a peer shipped, then records its closed timestamp.
    pub async fn accept_batch(&self, batch: &ReplicateBatch) -> Result<ReplicateAck> {
        self.peer(&batch.from)?;
        if let Some(after) = batch.after {
            // Pipelined batches may overtake one another: never apply one over a hole.
            let applied = self
                .store
                .replica_states()
                .await?
                .get(&batch.from)
                .map_or(0, |s| s.applied_seq);
            if after > applied {
                return Err(Error::Peer(format!(
                    "{}: {}'s batch follows its entry {after}, but this region applied up to {applied}",
                    crate::shipper::OUT_OF_ORDER,
                    batch.from
                )));
            }
        }
        let newest = batch
            .entries
            .iter()
            .map(|e| e.ts)
            .max()
            .unwrap_or_default()
            .max(batch.closed);
        self.clock.update(newest)?;
        let incoming = Incoming {
            entries: &batch.entries,
            closed: batch.closed,
            skip_to: batch.skip_to,
            gap: batch.gap,
        };
        let placement = self.placement();
        let tracked = |key: &str| placement.writes_anywhere(key).map(str::to_owned);
        let state = {
            let _applying = self.anti_entropy.apply_lock.lock().await;
            let state = self.store.apply_batch(&batch.from, incoming, &tracked).await?;
            // While a gap is open, reads keep the closed timestamp held before it.
            self.set_closed(&batch.from, state.readable_closed());
            state
        };
        if let Some(gap) = batch.gap.filter(|_| state.gap.is_some()) {
            tracing::info!(
                region = self.name,
                home = batch.from,
                upto_seq = gap.upto_seq,
                "entries were truncated before they reached us; anti-entropy will repair them"
            );
        }
        self.touch(&batch.from);
        Ok(ReplicateAck {
            applied_seq: state.applied_seq,
        })
    }

    /// The next batch of the log for `peer`, holding the entries after `after` (the position
    /// the previous batch in flight ended at), with the timestamp it closes. Returns the
    /// batch and whether it was full (more entries are waiting).
    pub(crate) async fn next_batch(&self, peer: &Peer, after: i64) -> Result<(ReplicateBatch, bool)> {
        // Read the clock and the pending writes before the log: every write at or below
        // the closed timestamp is then either in the log already or accounted for.
        let (now, earliest_pending) = self.now_and_earliest_pending();
        let mut entries = self.store.log_after(after, self.config.ship_batch).await?;
        let gap = self.gap_after(after, entries.first().map(|e| e.seq)).await?;
        let full = entries.len() == self.config.ship_batch as usize;
        if let Some(i) = entries.iter().position(|e| e.state == EntryState::Pending) {
            entries.truncate(i);
        }
        let last = entries.last().map_or(after, |e| e.seq);
        let earliest_unshipped = self.store.earliest_after(last).await?;
        let full = full && !entries.is_empty();
        let (entries, skip_to) = self.for_peer(peer, entries, last);
        let batch = ReplicateBatch {
            from: self.name.clone(),
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
    pub(crate) async fn record_ack(&self, peer: &Peer, ack: ReplicateAck) -> Result<()> {
        self.touch(&peer.name);
        let acked = self.acked_by(&peer.name);
        if ack.applied_seq > acked {
            self.store.set_cursor(&peer.name, ack.applied_seq).await?;
            self.acked
                .lock()
                .expect("acked lock")
                .insert(peer.name.clone(), ack.applied_seq);
            self.truncate().await?;
        }
        Ok(())
    }

    /// Drops from a batch for `peer` the entries of keys it holds no replica of; returns
    /// what is left and, if anything was dropped, how far the batch covers the log.
    fn for_peer(&self, peer: &Peer, mut entries: Vec<LogEntry>, last: i64) -> (Vec<LogEntry>, Option<i64>) {
        let placement = self.placement();
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
    async fn gap_after(&self, after: i64, first: Option<i64>) -> Result<Option<Gap>> {
        let missing_upto = match first {
            Some(seq) => seq - 1,
            None => self.store.truncated_upto().await?,
        };
        Ok((missing_upto > after).then(|| Gap {
            upto_seq: missing_upto,
            upto_ts: self.clock.now(),
        }))
    }

    /// The log position `peer` acknowledged.
    pub(crate) fn acked_by(&self, peer: &str) -> i64 {
        self.acked.lock().expect("acked lock").get(peer).copied().unwrap_or(0)
    }

    /// Drops the log entries every peer acknowledged.
    async fn truncate(&self) -> Result<()> {
        let floor = {
            let acked = self.acked.lock().expect("acked lock");
            self.shipping_targets()
                .iter()
                .map(|p| acked.get(&p.name).copied().unwrap_or(0))
                .min()
                .unwrap_or(0)
        };
        if floor > 0 {
            let dropped = self.store.truncate_log(floor).await?;
            if dropped > 0 {
                tracing::debug!(region = self.name, upto = floor, dropped, "replication log truncated");
            }
        }
        if self.config.log_retention_entries > 0 {
            let dropped = self
                .store
                .truncate_to_retention(self.config.log_retention_entries)
                .await?;
            if dropped > 0 {
                tracing::info!(
                    region = self.name,
                    dropped,
                    "replication log past its retention: entries a peer had not acknowledged were dropped; \
                     anti-entropy will repair that peer"
                );
            }
        }
        Ok(())
    }
}

/// Garbage-collects versions older than the retention, every tenth of it (1 s to 60 s).
pub async fn gc_loop(region: Arc<Region>) {
    let every = Duration::from_millis((region.config.retention_ms / 10).clamp(1_000, 60_000));
    loop {
        tokio::time::sleep(every).await;
        match region.store.gc(region.gc_horizon()).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(region = region.name, dropped, "old versions garbage-collected"),
            Err(e) => tracing::warn!(region = region.name, error = %e, "garbage collection failed"),
        }
    }
}
