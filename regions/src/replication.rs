//! Replication between regions: the intents of strong writes, the log shipper (one task per
//! peer, which also carries closed timestamps), applying what peers ship, and garbage
//! collection. Latency and partitions come from the network; nothing here waits on purpose
//! except the shipping interval and a retry's short pause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::closed;
use crate::hlc::Timestamp;
use crate::node::{Peer, Region};
use crate::protocol::{EntryState, Intent, LogEntry, ReplicateAck, ReplicateBatch};
use crate::{Error, Result};

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
    let needed = region.config.quorum.needed(region.peers.len());
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
        },
    };
    let timeout_ms = region.config.strong_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut sends: FuturesUnordered<_> = region
        .peers
        .iter()
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
        let newest = batch
            .entries
            .iter()
            .map(|e| e.ts)
            .max()
            .unwrap_or_default()
            .max(batch.closed);
        self.clock.update(newest)?;
        let state = self.store.apply(&batch.from, &batch.entries, batch.closed).await?;
        self.closed
            .lock()
            .expect("closed lock")
            .insert(batch.from.clone(), state.closed);
        self.touch(&batch.from);
        Ok(ReplicateAck {
            applied_seq: state.applied_seq,
        })
    }

    /// Ships one batch of the log to `peer`. Returns whether the batch was full (more to send).
    async fn ship_once(&self, peer: &Peer) -> Result<bool> {
        let acked = self
            .acked
            .lock()
            .expect("acked lock")
            .get(&peer.name)
            .copied()
            .unwrap_or(0);
        // Read the clock and the pending writes before the log: every write at or below
        // the closed timestamp is then either in the log already or accounted for.
        let (now, earliest_pending) = self.now_and_earliest_pending();
        let mut entries = self.store.log_after(acked, self.config.ship_batch).await?;
        let full = entries.len() == self.config.ship_batch as usize;
        if let Some(i) = entries.iter().position(|e| e.state == EntryState::Pending) {
            entries.truncate(i);
        }
        let last = entries.last().map_or(acked, |e| e.seq);
        let earliest_unshipped = self.store.earliest_after(last).await?;
        let batch = ReplicateBatch {
            from: self.name.clone(),
            entries,
            closed: closed::closed_timestamp(now, earliest_pending, earliest_unshipped),
        };
        let ack = post(self, peer, "/internal/v1/replicate", &batch)
            .await
            .map_err(Error::Peer)?;
        self.touch(&peer.name);
        if ack.applied_seq > acked {
            self.store.set_cursor(&peer.name, ack.applied_seq).await?;
            self.acked
                .lock()
                .expect("acked lock")
                .insert(peer.name.clone(), ack.applied_seq);
            self.truncate().await?;
        }
        Ok(full && !batch.entries.is_empty())
    }

    /// Drops the log entries every peer acknowledged.
    async fn truncate(&self) -> Result<()> {
        let floor = {
            let acked = self.acked.lock().expect("acked lock");
            self.peers
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
        Ok(())
    }
}

/// Ships the log to `peer` every closed-timestamp interval, for ever.
pub async fn ship_loop(region: Arc<Region>, peer: Peer) {
    let interval = Duration::from_millis(region.config.closed_ts_interval_ms);
    let mut failing = false;
    loop {
        match region.ship_once(&peer).await {
            Ok(true) => continue,
            Ok(false) => {
                if failing {
                    tracing::info!(region = region.name, peer = peer.name, "replication to peer resumed");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(region = region.name, peer = peer.name, error = %e, "replication to peer failing");
                }
                failing = true;
            }
        }
        tokio::time::sleep(interval).await;
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
