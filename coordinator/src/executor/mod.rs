//! The executor: runs many sagas at once, each as a lightweight task driven by the pure
//! planner, and keeps their ownership (leases, adoption of orphaned sagas).
//!
//! [`Coordinator`] is a cheap handle (an `Arc` inside). Build one with
//! [`Coordinator::start`]; it spawns the lease loop, which also adopts sagas whose owner
//! died (and, at start-up, resumes this node's own unfinished sagas).
//!
//! ## Layout
//! - `handle`: [`Coordinator`], what everything else calls: reads, waits, cancel, retry,
//!   shutdown.
//! - `start`: starting a saga: its first state is built once, written with the saga, handed
//!   to its task and answered with.
//! - `definitions`: the definition caches (a stored version never changes; the latest
//!   version of a name is trusted for a second) and the check that a definition can run
//!   here.
//! - `registry`: the running sagas: spawning a task, its command queue, its end.
//! - `saga_task`: the loop that drives one saga; `folded`: the state it takes over.
//! - `leases`: the loop that renews this node's leases (on the store's clock), adopts
//!   orphaned sagas and runs those it owns without a task; `leases::Lease`, until when
//!   this node may launch attempts.
//! - `health`: the state of the link to the database, for `/readyz`.

mod definitions;
mod folded;
mod handle;
mod health;
mod leases;
mod registry;
mod saga_task;
mod start;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagas::SagaState;
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

use crate::Error;
use crate::metrics::Metrics;
use crate::runner::Runners;
use crate::store::{SagaRecord, Store};
use crate::trace::TraceHeaders;

pub use handle::Coordinator;
pub use health::Health;

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This coordinator's id; every saga it owns carries it. Two live coordinators must
    /// never share one.
    pub node_id: String,
    /// How long a lease lasts without renewal; others adopt the sagas of a coordinator
    /// silent for this long.
    pub lease: Duration,
    /// Most sagas this coordinator runs at once; starts beyond it are refused (503).
    pub max_running: usize,
    /// Where the coordinator counts what it does (shared with whoever renders them).
    pub metrics: Metrics,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node_id: "local".to_owned(),
            lease: Duration::from_secs(10),
            max_running: 10_000,
            metrics: Metrics::default(),
        }
    }
}

/// A request to start a saga.
#[derive(Debug, Clone)]
pub struct StartSaga {
    /// Definition name.
    pub definition: String,
    /// Definition version (latest when `None`).
    pub version: Option<i64>,
    /// The input.
    pub input: Value,
    /// Idempotency key: starting twice with one key starts one saga.
    pub idempotency_key: Option<String>,
    /// The caller's W3C trace context: the saga's trace joins the caller's.
    pub trace_context: Option<TraceHeaders>,
}

/// A saga as the API shows it: its row and its state.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// The row.
    pub record: SagaRecord,
    /// The state, folded from its log.
    pub state: SagaState,
}

/// What the handle, the saga tasks and the lease loop share.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runners: Runners,
    pub(crate) options: Options,
    /// The definitions, checked and cached.
    pub(crate) definitions: definitions::Definitions,
    /// The sagas this node runs a task for.
    pub(crate) registry: registry::Registry,
    /// The id of every saga a task of this node settles (or gives up), for waiters.
    pub(crate) settled: broadcast::Sender<Uuid>,
    /// One per running saga: starts beyond [`Options::max_running`] are refused.
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) health: health::HealthCell,
    /// This node's hold on its leases: the store's clock, until when attempts may launch.
    pub(crate) lease: leases::Lease,
    pub(crate) lease_loop: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// A permit to run one more saga, or `Overloaded`.
    pub(crate) fn permit(&self) -> crate::Result<tokio::sync::OwnedSemaphorePermit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded(self.options.max_running))
    }

    /// Records the outcome of a store call for [`Health`].
    pub(crate) fn store_result<T>(&self, result: &crate::Result<T>) {
        self.health.record(result);
    }

    /// The saga's task ended: with its final view when it settled the saga.
    pub(crate) fn finished(&self, id: Uuid, generation: i64, view: Option<SagaView>) {
        self.registry.finished(id, generation, view);
        let _ = self.settled.send(id);
    }
}
