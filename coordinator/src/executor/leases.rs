//! The lease loop: renews this node's leases, adopts sagas whose owner went silent, and
//! runs sagas this node owns but runs no task for.
//!
//! Leases are judged by the store's clock ([`crate::store::Store::clock_ms`]: PostgreSQL's
//! for coordinators sharing one): every round measures this host's offset from it, and
//! every lease this node writes is computed on it ([`Lease::clock_ms`]). A renewal that
//! succeeds lets the saga tasks launch attempts until shortly before the lease it set would
//! end ([`Lease::renewed`]); a node that cannot renew stops launching before another could
//! adopt its sagas ([`Lease::held`]). A renewal extends only the sagas still owned here, so
//! a saga launches on its strength only if that renewal covered it ([`Lease::may_launch`]);
//! a saga adopted by another coordinator while this one was paused is not covered by the
//! renewal this one makes when it wakes, and its task re-reads its owner before it sends
//! anything.
//!
//! A saga can be left owned here without a task: an adoption or an operator retry whose
//! claim committed but whose next read failed (or whose answer was lost while the database
//! restarted, after which the old task is fenced), a definition that could not be read.
//! Renewals would keep such a saga's lease forever, so every round compares what the
//! renewal says this node owns with the tasks it runs, and runs what is missing
//! ([`Inner::run_stranded`], counted in `geosaga_stranded_sagas_found_total`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::Inner;
use super::folded::Folded;
use super::registry::Spawn;
use crate::Result;
use crate::clock::now_ms;

/// Most sagas adopted in one round, so that a large recovery proceeds in steps.
pub(super) const CLAIM_BATCH: u32 = 500;

/// This node's hold on its leases, as the lease loop last found it.
pub(crate) struct Lease {
    /// The store's clock less this host's (ms), as last measured: leases are computed on
    /// the store's clock.
    clock_offset_ms: AtomicI64,
    /// Until when this node may launch attempts: the last successful renewal's start plus
    /// the lease, less a margin. A node that cannot renew stops launching before its leases
    /// could have ended and another coordinator adopted its sagas.
    deadline: watch::Sender<Instant>,
    /// The sagas whose leases the last successful renewal extended (those owned here when
    /// it ran), and the lease it wrote (Unix ms on the store's clock): [`Lease::deadline`]
    /// holds for these only, and only while that lease, less a margin, has not ended on the
    /// store's clock either (the monotonic clock stops while the host is suspended).
    covered: RwLock<(HashSet<Uuid>, i64)>,
    /// Sagas the last round found owned here without a task (the periodic check runs those
    /// it finds so twice in a row).
    stranded: Mutex<HashSet<Uuid>>,
}

impl Lease {
    /// No renewal yet: attempts may not launch until [`Lease::renewed`].
    pub(crate) fn new() -> Lease {
        Lease {
            clock_offset_ms: AtomicI64::new(0),
            deadline: watch::Sender::new(Instant::now()),
            covered: RwLock::new((HashSet::new(), 0)),
            stranded: Mutex::new(HashSet::new()),
        }
    }

    /// Now on the store's clock (Unix ms), the clock leases are judged by.
    pub(crate) fn clock_ms(&self) -> i64 {
        now_ms().saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// A renewal of leases lasting `lease` that began at `began` succeeded for the sagas of
    /// `owned`, writing `lease_until_ms` (on the store's clock): their attempts may launch
    /// until that lease would end, less a fifth of the lease (for the delay between this
    /// host's timers and the database's clock, and the time a launch takes).
    pub(crate) fn renewed(&self, began: Instant, lease: Duration, owned: &[Uuid], lease_until_ms: i64) {
        // The set first: a task that sees the new deadline sees the sagas it holds for.
        *self.covered.write().expect("lock") = (owned.iter().copied().collect(), lease_until_ms);
        self.deadline.send_replace(began + lease.saturating_sub(margin(lease)));
    }

    /// Whether saga `id` may launch an attempt now without reading its owner first: its own
    /// lease (`own_lease_until_ms`, on the store's clock, as the write that gave this task
    /// the saga set it: its start, adoption, take-over, or the row read by a retry or the
    /// stranded-saga check) certainly holds, or the last renewal extended it and still
    /// holds. A saga adopted by another coordinator while this one was paused fails both.
    /// The margin also covers this host's clock stepping back between two measurements of
    /// the store's.
    pub(crate) fn may_launch(&self, id: Uuid, own_lease_until_ms: i64, lease: Duration) -> bool {
        let margin_ms = i64::try_from(margin(lease).as_millis()).unwrap_or(i64::MAX);
        let now = self.clock_ms();
        if now < own_lease_until_ms.saturating_sub(margin_ms) {
            return true;
        }
        if !self.held() {
            return false;
        }
        let (covered, renewed_until_ms) = &*self.covered.read().expect("lock");
        now < renewed_until_ms.saturating_sub(margin_ms) && covered.contains(&id)
    }

    /// Whether this node's lease certainly still holds, so that it may launch attempts.
    pub(crate) fn held(&self) -> bool {
        *self.deadline.borrow() > Instant::now()
    }

    /// Changes of the deadline, for a task that waits for a renewal.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Instant> {
        self.deadline.subscribe()
    }
}

/// The part of a lease a node gives up launching in, for the delay between this host's
/// timers and the database's clock, and the time a launch takes.
fn margin(lease: Duration) -> Duration {
    lease / 5
}

pub(super) async fn run(inner: Arc<Inner>) {
    let period = (inner.options.lease / 3).max(Duration::from_millis(50));
    loop {
        let began = Instant::now();
        measure_clock(&inner).await;
        let lease_until = inner.lease.clock_ms() + inner.lease_ms();
        let renewed = inner.store.renew_leases(&inner.options.node_id, lease_until).await;
        inner.store_result(&renewed);
        match renewed {
            Ok(renewed) => {
                inner
                    .lease
                    .renewed(began, inner.options.lease, &renewed.owned, lease_until);
                for id in renewed.cancels {
                    inner.registry.forward_cancel(id);
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
            inner.lease.clock_offset_ms.store(offset, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "reading the store's clock failed; using the last offset"),
    }
}

/// Claims orphaned sagas (whose lease expired or was given up) and resumes them.
///
/// The permits are taken before the claim, so that a start cannot take the last one
/// between the claim and the spawn; a claimed saga that still gets no task (its log or
/// definition could not be read) is run by the periodic check.
pub(super) async fn adopt(inner: &Arc<Inner>) -> Result<usize> {
    let free = inner.permits.available_permits().min(CLAIM_BATCH as usize) as u32;
    if free == 0 {
        return Ok(0);
    }
    let Ok(mut reserved) = inner.permits.clone().try_acquire_many_owned(free) else {
        // A start took one meanwhile: next round.
        return Ok(0);
    };
    let now = inner.lease.clock_ms();
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
        let log = logs.remove(&record.id).unwrap_or_default();
        let folded = match inner
            .definitions
            .version(&*inner.store, &record.definition, record.version)
            .await
            .and_then(|(_, def)| Folded::replay(record.id, def, &log))
        {
            Ok(folded) => folded,
            Err(e) => {
                tracing::error!(saga_id = %record.id, error = %e, "cannot resume saga yet; the periodic check will");
                continue;
            }
        };
        tracing::info!(saga_id = %record.id, generation = record.generation, "adopted saga");
        inner.options.metrics.adopted();
        let task = Spawn::resumed(record, folded, permit);
        inner.registry.spawn(inner, task);
    }
    Ok(n)
}

impl Inner {
    /// The sagas of `owned` (every unsettled saga the store says this node owns) that no
    /// task runs: those found so in the previous round as well are run now (a start or an
    /// adoption in progress has a task by the next round). Returns how many were run.
    pub(crate) async fn run_stranded(self: &Arc<Self>, owned: &[Uuid]) -> usize {
        let without_task = self.registry.not_running(owned);
        let confirmed: Vec<Uuid> = {
            let mut seen = self.lease.stranded.lock().expect("lock");
            let confirmed = without_task.intersection(&seen).copied().collect();
            *seen = without_task;
            confirmed
        };
        let mut ran = 0;
        for id in confirmed {
            match self.resume_stranded(id).await {
                Ok(true) => {
                    self.options.metrics.stranded_found();
                    self.lease.stranded.lock().expect("lock").remove(&id);
                    ran += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(saga_id = %id, error = %e, "cannot run a stranded saga yet; will retry"),
            }
        }
        ran
    }

    /// Runs a saga this node owns without a task, from its row and log as stored now.
    async fn resume_stranded(self: &Arc<Self>, id: Uuid) -> Result<bool> {
        let Some(record) = self.store.get_saga(id).await? else {
            return Ok(false);
        };
        let ours = record.owner.as_deref() == Some(self.options.node_id.as_str());
        if !ours || record.status.is_settled() {
            return Ok(false);
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let (_, def) = self
            .definitions
            .version(&*self.store, &record.definition, record.version)
            .await?;
        let log = self.store.events(id).await?;
        let folded = Folded::replay(id, def, &log)?;
        tracing::warn!(saga_id = %id, "found a saga owned here without a task");
        let task = Spawn::resumed(record, folded, permit);
        Ok(self
            .registry
            .spawn_unless_running(self, task, "owned here without a task"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn ms(d: Duration) -> i64 {
        d.as_millis() as i64
    }

    #[test]
    fn a_saga_launches_on_its_own_lease_or_on_a_renewal_that_covered_it() {
        let lease = Lease::new();
        let (covered, adopted_away) = (Uuid::new_v4(), Uuid::new_v4());
        let fresh = lease.clock_ms() + ms(LEASE);
        let lapsed = lease.clock_ms() - 1;
        assert!(
            lease.may_launch(adopted_away, fresh, LEASE),
            "just started or adopted here"
        );
        assert!(!lease.may_launch(covered, lapsed, LEASE), "no renewal yet");

        lease.renewed(Instant::now(), LEASE, &[covered], fresh);
        assert!(lease.may_launch(covered, lapsed, LEASE));
        assert!(
            !lease.may_launch(adopted_away, lapsed, LEASE),
            "a renewal that did not extend it (another coordinator adopted it while this one was paused)"
        );
        let in_last_fifth = lease.clock_ms() + ms(LEASE / 5) - 1;
        assert!(
            !lease.may_launch(adopted_away, in_last_fifth, LEASE),
            "the last fifth of a lease is not relied on"
        );
    }

    #[test]
    fn a_renewal_holds_until_its_lease_less_a_fifth() {
        let lease = Lease::new();
        let id = Uuid::new_v4();
        let long_ago = Instant::now() - LEASE * 4 / 5 - Duration::from_millis(1);
        let until = lease.clock_ms() + ms(LEASE);
        lease.renewed(long_ago, LEASE, &[id], until);
        assert!(
            !lease.may_launch(id, 0, LEASE),
            "a renewal whose lease is in its last fifth"
        );
        lease.renewed(Instant::now(), LEASE, &[id], until);
        assert!(lease.may_launch(id, 0, LEASE));
    }

    /// The monotonic clock stops while the host is suspended, the store's does not: a
    /// renewal whose lease ended on the store's clock holds for nothing, however recent it
    /// looks to this host's timers.
    #[test]
    fn a_renewal_holds_only_while_its_lease_holds_on_the_stores_clock() {
        let lease = Lease::new();
        let id = Uuid::new_v4();
        let ended = lease.clock_ms() - 1;
        lease.renewed(Instant::now(), LEASE, &[id], ended);
        assert!(lease.held(), "this host's timers say the renewal is recent");
        assert!(!lease.may_launch(id, 0, LEASE));
        let in_last_fifth = lease.clock_ms() + ms(LEASE / 5) - 1;
        lease.renewed(Instant::now(), LEASE, &[id], in_last_fifth);
        assert!(!lease.may_launch(id, 0, LEASE), "the last fifth is not relied on");
    }
}
