//! The lease loop: renews this node's leases, adopts sagas whose owner went silent, and
//! runs sagas this node owns but runs no task for.
//!
//! Leases are judged by the store's clock ([`crate::store::Store::clock_ms`]: PostgreSQL's
//! for coordinators sharing one): every round measures this host's offset from it, and
//! every lease this node writes is computed on it. A renewal that succeeds lets the saga
//! tasks launch attempts until shortly before the lease it set would end
//! ([`Inner::lease_renewed`]); a node that cannot renew stops launching before another could
//! adopt its sagas.
//!
//! A saga can be left owned here without a task: an adoption or an operator retry whose
//! claim committed but whose next read failed (or whose answer was lost while the database
//! restarted, after which the old task is fenced), a definition that could not be read.
//! Renewals would keep such a saga's lease forever, so every round compares what the
//! renewal says this node owns with the tasks it runs, and runs what is missing
//! ([`Inner::run_stranded`], counted in `geosaga_stranded_sagas_found_total`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use crate::clock::now_ms;

/// Most sagas adopted in one round, so that a large recovery proceeds in steps.
pub(super) const CLAIM_BATCH: u32 = 500;

pub(super) async fn run(inner: Arc<Inner>) {
    let period = (inner.options.lease / 3).max(Duration::from_millis(50));
    loop {
        let began = tokio::time::Instant::now();
        measure_clock(&inner).await;
        let lease_until = inner.lease_clock_ms() + inner.lease_ms();
        let renewed = inner.store.renew_leases(&inner.options.node_id, lease_until).await;
        inner.store_result(&renewed);
        match renewed {
            Ok(renewed) => {
                inner.lease_renewed(began);
                for id in renewed.cancels {
                    inner.forward_cancel(id);
                }
                inner.run_stranded(&renewed.owned).await;
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

/// Measures the store's clock against this host's (half a round trip of error, on the
/// side of shorter leases and later adoptions).
pub(super) async fn measure_clock(inner: &Inner) {
    let before = now_ms();
    match inner.store.clock_ms().await {
        Ok(store_ms) => {
            let offset = store_ms - (before + (now_ms() - before) / 2);
            inner.clock_offset_ms.store(offset, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "reading the store's clock failed; using the last offset"),
    }
}

/// Claims orphaned sagas (whose lease expired or was given up) and resumes them.
///
/// The permits are taken before the claim, so that a start cannot take the last one
/// between the claim and the spawn; a claimed saga that still gets no task (its log or
/// definition could not be read) is run by the periodic check.
pub(super) async fn adopt(inner: &Arc<Inner>) -> crate::Result<usize> {
    let free = inner.permits.available_permits().min(CLAIM_BATCH as usize) as u32;
    if free == 0 {
        return Ok(0);
    }
    let Ok(mut reserved) = inner.permits.clone().try_acquire_many_owned(free) else {
        // A start took one meanwhile: next round.
        return Ok(0);
    };
    let now = inner.lease_clock_ms();
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
        let permit = reserved.split(1).expect("one permit reserved per claimed saga");
        match inner.definition_version(&record.definition, record.version).await {
            Ok((_, def)) => {
                tracing::info!(saga_id = %record.id, generation = record.generation, "adopted saga");
                inner.options.metrics.adopted();
                let log = logs.remove(&record.id).unwrap_or_default();
                inner.spawn(record, def, log, Vec::new(), permit, None);
            }
            Err(e) => {
                tracing::error!(saga_id = %record.id, error = %e, "cannot resume saga yet; the periodic check will")
            }
        }
    }
    Ok(n)
}
