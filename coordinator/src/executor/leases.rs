//! The lease loop: renews this node's leases and adopts sagas whose owner went silent.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use super::folded::Folded;
use super::registry::Spawn;
use crate::clock::now_ms;

/// Most sagas adopted in one round, so that a large recovery proceeds in steps.
pub(super) const CLAIM_BATCH: u32 = 500;

pub(super) async fn run(inner: Arc<Inner>) {
    let period = (inner.options.lease / 3).max(Duration::from_millis(50));
    loop {
        let lease_until = now_ms() + inner.lease_ms();
        let renewed = inner.store.renew_leases(&inner.options.node_id, lease_until).await;
        inner.store_result(&renewed);
        match renewed {
            Ok(cancels) => {
                for id in cancels {
                    inner.registry.forward_cancel(id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed; will retry"),
        }
        match adopt(&inner).await {
            Ok(n) if n >= CLAIM_BATCH as usize => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "adopting orphaned sagas failed; will retry"),
        }
        tokio::time::sleep(period).await;
    }
}

/// Claims orphaned sagas (whose lease expired or was given up) and resumes them.
pub(super) async fn adopt(inner: &Arc<Inner>) -> crate::Result<usize> {
    let free = inner.permits.available_permits().min(CLAIM_BATCH as usize) as u32;
    if free == 0 {
        return Ok(0);
    }
    let now = now_ms();
    let claimed = inner
        .store
        .claim(&inner.options.node_id, false, now, now + inner.lease_ms(), free)
        .await;
    inner.store_result(&claimed);
    let claimed = claimed?;
    let n = claimed.len();
    if n == 0 {
        return Ok(0);
    }
    // One read for the logs of the whole batch; the definitions come from the cache.
    let ids: Vec<_> = claimed.iter().map(|r| r.id).collect();
    let logs = inner.store.events_of(&ids).await;
    inner.store_result(&logs);
    let mut logs = logs?;
    for record in claimed {
        let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
            break;
        };
        let log = logs.remove(&record.id).unwrap_or_default();
        let folded = match inner
            .definitions
            .version(&*inner.store, &record.definition, record.version)
            .await
            .and_then(|(_, def)| Folded::replay(record.id, def, &log))
        {
            Ok(folded) => folded,
            Err(e) => {
                tracing::error!(saga_id = %record.id, error = %e, "cannot resume saga");
                continue;
            }
        };
        tracing::info!(saga_id = %record.id, generation = record.generation, "adopted saga");
        inner.options.metrics.adopted();
        let task = Spawn {
            record,
            folded,
            fresh: Vec::new(),
            permit,
            waiter: None,
        };
        inner.registry.spawn(inner, task);
    }
    Ok(n)
}
