//! Replication between regions, above the node: a replica's side (storing the intents of
//! strong writes, applying the batches a home ships with their closed timestamps), the
//! home's side (`ship.rs`: pipelined log shipping, one task per peer), and garbage
//! collection. Latency and partitions come from the network; nothing here waits on purpose
//! except the shipping interval and a retry's short pause.

pub mod ship;

use std::sync::Arc;
use std::time::Duration;

use regions_core::protocol::{Intent, ReplicateAck, ReplicateBatch};
use regions_core::replica::Incoming;

use crate::node::Region;
use crate::{Error, Result};

/// How a replica's refusal of a batch that overtook its predecessor starts.
pub(crate) const OUT_OF_ORDER: &str = "out-of-order batch";

/// Stores an intent a peer sent (a strong write its home has not committed yet).
pub async fn accept_intent(region: &Region, intent: &Intent) -> Result<ReplicateAck> {
    region.peer(&intent.from)?;
    region
        .clock
        .update(intent.entry.ts)
        .map_err(|e| region.refuse_clock(&intent.from, e))?;
    region.store.put_intent(&intent.from, &intent.entry).await?;
    region.touch(&intent.from);
    Ok(ReplicateAck {
        applied_seq: intent.entry.seq,
    })
}

/// Applies a batch a peer shipped, then records its closed timestamp.
pub async fn accept_batch(region: &Region, batch: &ReplicateBatch) -> Result<ReplicateAck> {
    region.peer(&batch.from)?;
    if let Some(after) = batch.after {
        // Pipelined batches may overtake one another: never apply one over a hole.
        let applied = region
            .store
            .replica_states()
            .await?
            .get(&batch.from)
            .map_or(0, |s| s.applied_seq);
        if after > applied {
            return Err(Error::Peer(format!(
                "{OUT_OF_ORDER}: {}'s batch follows its entry {after}, but this region applied up to {applied}",
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
    region
        .clock
        .update(newest)
        .map_err(|e| region.refuse_clock(&batch.from, e))?;
    let incoming = Incoming {
        entries: &batch.entries,
        closed: batch.closed,
        skip_to: batch.skip_to,
        gap: batch.gap,
    };
    let placement = region.placement();
    let tracked = |key: &str| placement.writes_anywhere(key).map(str::to_owned);
    let state = {
        let _applying = region.lock_replica_states().await;
        let state = region.store.apply_batch(&batch.from, incoming, &tracked).await?;
        // While a gap is open, reads keep the closed timestamp held before it.
        region.set_closed(&batch.from, state.readable_closed());
        state
    };
    if let Some(gap) = batch.gap.filter(|_| state.gap.is_some()) {
        tracing::info!(
            region = region.name,
            home = batch.from,
            upto_seq = gap.upto_seq,
            "entries were truncated before they reached us; anti-entropy will repair them"
        );
    }
    region.touch(&batch.from);
    Ok(ReplicateAck {
        applied_seq: state.applied_seq,
    })
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
