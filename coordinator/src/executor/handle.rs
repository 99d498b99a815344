//! [`Coordinator`]: the handle everything else calls. Starting a saga is in `start.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagas::{SagaDefinition, SagaEvent, SagaState, SagaStatus};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, oneshot};
use uuid::Uuid;

use super::definitions::check_runnable;
use super::folded::Folded;
use super::registry::{Command, Spawn};
use super::{Health, Inner, Options, SagaView, leases};
use crate::clock::now_ms;
use crate::metrics::{Metrics, Scrape};
use crate::runner::Runners;
use crate::store::{Append, DefinitionRecord, PutDefinition, SagaRecord, Store, StoredEvent};
use crate::{Error, Result};

/// A running coordinator. Clones share it.
#[derive(Clone)]
pub struct Coordinator {
    pub(super) inner: Arc<Inner>,
}

impl Coordinator {
    /// Starts a coordinator on `store`, resuming this node's unfinished sagas and adopting
    /// orphaned ones in the background.
    pub async fn start(store: Arc<dyn Store>, runners: Runners, options: Options) -> Result<Coordinator> {
        let (settled, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            store,
            runners,
            permits: Arc::new(Semaphore::new(options.max_running)),
            options,
            definitions: Default::default(),
            registry: Default::default(),
            settled,
            health: Default::default(),
            lease: leases::Lease::new(),
            lease_loop: Mutex::new(None),
        });
        leases::measure_clock(&inner).await;
        inner
            .lease
            .renewed(tokio::time::Instant::now(), inner.options.lease, &[], 0);
        // Resume this node's own unfinished sagas before anything new starts, so that the
        // generation bump of that first claim cannot fence a saga started meanwhile. Their
        // leases are given up first and claimed like orphans: a saga adopted in one round has
        // a fresh lease, so later rounds cannot take it again (and fence the task just spawned
        // for it) while it runs.
        inner.store.release(&inner.options.node_id).await?;
        while leases::adopt(&inner).await? >= leases::CLAIM_BATCH as usize {}
        let handle = tokio::spawn(leases::run(inner.clone()));
        *inner.lease_loop.lock().expect("lock") = Some(handle);
        Ok(Coordinator { inner })
    }

    /// The store this coordinator writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The step runners (and their fault injection).
    pub fn runners(&self) -> &Runners {
        &self.inner.runners
    }

    /// This coordinator's options.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The health of the database link.
    pub fn health(&self) -> Health {
        self.inner.health.get()
    }

    /// Sagas this coordinator is running now.
    pub fn running_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// The coordinator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.options.metrics
    }

    /// The metrics with the values of this moment, as OpenMetrics text.
    pub fn render_metrics(&self) -> String {
        self.inner.options.metrics.render(Scrape {
            in_flight: self.running_count(),
            store: self.inner.store.stats(),
        })
    }

    /// Validates a new definition document (`sagas::validate::validate_new`), checks it
    /// against this coordinator (Rust handlers registered, HTTP hosts allowed) and stores it.
    pub async fn register_definition(&self, document: &Value) -> Result<PutDefinition> {
        let definition = sagas::validate::validate_new(document)?;
        self.register(&definition).await
    }

    /// Stores a checked definition (from JSON or from [`crate::RustSaga`]).
    pub async fn register(&self, definition: &SagaDefinition) -> Result<PutDefinition> {
        check_runnable(definition, &self.inner.runners)?;
        let document = serde_json::to_value(&definition.document).expect("a document is JSON");
        let put = self
            .inner
            .store
            .put_definition(&definition.name, &definition.content_hash, &document, now_ms())
            .await?;
        self.inner.definitions.forget_latest(&definition.name);
        Ok(put)
    }

    /// The definition `name` at `version` (latest when `None`, read from the store), checked
    /// and cached.
    pub async fn definition(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<(DefinitionRecord, Arc<SagaDefinition>)> {
        let (store, definitions) = (&*self.inner.store, &self.inner.definitions);
        match version {
            Some(version) => definitions.version(store, name, version).await,
            None => definitions.latest(store, name).await,
        }
    }

    /// A saga's row and replayed state.
    pub async fn saga(&self, id: Uuid) -> Result<SagaView> {
        let record = self.record(id).await?;
        let (_, def) = self.definition(&record.definition, Some(record.version)).await?;
        let events = self.inner.store.events(id).await?;
        let state = SagaState::replay(def, events.iter().map(|e| &e.event))
            .map_err(|source| Error::CorruptLog { id, source })?;
        Ok(SagaView { record, state })
    }

    /// A saga's event log.
    pub async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        self.record(id).await?;
        self.inner.store.events(id).await
    }

    /// Waits until the saga is settled (completed, compensated or stuck) or `timeout` passes;
    /// returns its row either way.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<SagaRecord> {
        let mut settled = self.inner.settled.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.record(id).await?;
            if record.status.is_settled() || tokio::time::Instant::now() >= deadline {
                return Ok(record);
            }
            // Read the row again only when this saga settles (or notices were missed): with
            // many waiters, re-reading on every other saga's notice cost a read per waiter
            // per settled saga. Sagas owned by another coordinator settle without telling
            // us: poll as well.
            let ours = async {
                loop {
                    match settled.recv().await {
                        Ok(settled_id) if settled_id != id => {}
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let poll = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                _ = poll => {}
                _ = tokio::time::sleep_until(deadline) => {}
                () = ours => {}
            }
        }
    }

    /// Cancels a running saga: it stops starting steps and compensates.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<SagaRecord> {
        // The reason goes into the log; keep it storable everywhere.
        let reason = reason.replace('\0', "\u{FFFD}");
        let record = self.record(id).await?;
        if record.status != SagaStatus::Running {
            return Err(Error::IllegalTransition {
                id,
                status: record.status,
                reason: "only a running saga can be cancelled".into(),
            });
        }
        match self.inner.registry.commands(id) {
            Some(commands) => {
                let (reply, answer) = oneshot::channel();
                // Refused when the task has just ended: the saga is settled or owned
                // elsewhere now.
                if commands.send(Command::Cancel { reason, reply }).is_ok()
                    && let Ok(result) = answer.await
                {
                    result?;
                }
            }
            // Owned elsewhere: leave a request that its owner picks up.
            None => {
                self.inner.store.request_cancel(id).await?;
            }
        }
        self.record(id).await
    }

    /// Resumes a stuck saga's compensations.
    pub async fn retry(&self, id: Uuid) -> Result<SagaRecord> {
        let not_stuck = |status| Error::IllegalTransition {
            id,
            status,
            reason: "only a stuck saga can be retried".into(),
        };
        let record = self.record(id).await?;
        if record.status != SagaStatus::Stuck {
            return Err(not_stuck(record.status));
        }
        let permit = self.inner.permit()?;
        let lease_until = self.inner.lease.clock_ms() + self.inner.lease_ms();
        let taken = self
            .inner
            .store
            .take_over_stuck(id, &self.inner.options.node_id, lease_until)
            .await?;
        let Some(mut record) = taken else {
            return Err(not_stuck(self.record(id).await?.status));
        };
        // From here on the saga is owned with no task: if a read or the append fails, the
        // periodic check of the lease loop finds it and runs it.
        let (_, def) = self.definition(&record.definition, Some(record.version)).await?;
        let log = self.inner.store.events(id).await?;
        let mut folded = Folded::replay(id, def, &log)?;
        let now = now_ms();
        folded.apply(id, &SagaEvent::RetryRequested {}, now)?;
        let state = folded.state();
        let append = Append {
            saga_id: id,
            fence: record.fence().expect("taken over"),
            first_seq: log.len() as i64,
            events: vec![SagaEvent::RetryRequested {}],
            status: state.status(),
            error: state.unwind_cause().map(ToString::to_string),
            now_ms: now,
        };
        self.inner.store.append(append.clone()).await?;
        record.apply(&append, state.event_count() as i64);
        let task = Spawn::resumed(record.clone(), folded, permit);
        // Unless the periodic check got there first.
        self.inner
            .registry
            .spawn_unless_running(&self.inner, task, "retried by an operator");
        Ok(record)
    }

    /// Stops every saga task and gives up this node's leases, so that other coordinators
    /// adopt its sagas at once. Interrupted attempts run again there, with the same
    /// idempotency keys.
    pub async fn shutdown(&self) -> Result<()> {
        if let Some(handle) = self.inner.lease_loop.lock().expect("lock").take() {
            handle.abort();
        }
        self.inner.registry.abort_all();
        self.inner.store.release(&self.inner.options.node_id).await
    }

    /// A saga's row.
    pub(super) async fn record(&self, id: Uuid) -> Result<SagaRecord> {
        self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))
    }
}
