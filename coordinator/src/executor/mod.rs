//! The executor: runs many sagas at once, each as a lightweight task driven by the pure
//! planner, and keeps their ownership (leases, adoption of orphaned sagas).
//!
//! [`Coordinator`] is a cheap handle (an `Arc` inside). Build one with
//! [`Coordinator::start`]; it spawns the lease loop, which also adopts sagas whose owner
//! died (and, at start-up, resumes this node's own unfinished sagas).

mod leases;
mod saga_task;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sagas::{SagaDefinition, SagaEvent, SagaState, SagaStatus, ValidationError, ValidationErrors, Work, planner};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, oneshot, watch};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::metrics::{Metrics, Scrape};
use crate::runner::Runners;
use crate::store::{Created, DefinitionRecord, NewSaga, PutDefinition, SagaRecord, Store, StoredEvent};
use crate::trace::{SagaTrace, TraceHeaders};
use crate::{Error, Result};

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

/// A saga as the API shows it: its row and the state replayed from its log.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// The row.
    pub record: SagaRecord,
    /// The replayed state.
    pub state: SagaState,
}

/// The health of the coordinator's link to its database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Whether the last write succeeded.
    pub store_ok: bool,
    /// The last store error, while failing.
    pub last_error: Option<String>,
    /// Consecutive failed writes.
    pub failures: u64,
}

pub(crate) enum Command {
    Cancel {
        reason: String,
        reply: oneshot::Sender<Result<()>>,
    },
}

struct RunningSaga {
    commands: Arc<Commands>,
    abort: tokio::task::AbortHandle,
    generation: i64,
    /// Who waits for the saga to settle: the task hands them its final view, built from
    /// what it committed, so that answering them costs no read.
    waiters: Vec<oneshot::Sender<SagaView>>,
}

/// What a saga's task starts from.
struct Spawn {
    record: SagaRecord,
    def: Arc<SagaDefinition>,
    log: Vec<StoredEvent>,
    fresh: Vec<Work>,
    permit: tokio::sync::OwnedSemaphorePermit,
    waiter: Option<oneshot::Sender<SagaView>>,
}

/// A definition version, as stored and as checked.
type CachedDefinition = (DefinitionRecord, Arc<SagaDefinition>);

/// How long a start that names no version trusts the latest version it last read. Versions
/// registered through this coordinator are seen at once; those registered through another
/// one sharing the database, within this long.
const LATEST_DEFINITION_TTL: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runners: Runners,
    pub(crate) options: Options,
    running: Mutex<HashMap<Uuid, RunningSaga>>,
    /// Definition versions by `(name, version)`: a stored version never changes.
    definitions: Mutex<HashMap<(String, i64), CachedDefinition>>,
    /// The latest version of each name, as last read (see [`LATEST_DEFINITION_TTL`]).
    latest: Mutex<HashMap<String, (Instant, CachedDefinition)>>,
    pub(crate) settled: broadcast::Sender<Uuid>,
    pub(crate) permits: Arc<Semaphore>,
    health: Mutex<Health>,
    lease_loop: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The store's clock less this host's (ms), as the lease loop last measured it: leases
    /// are computed on the store's clock ([`Store::clock_ms`]).
    clock_offset_ms: AtomicI64,
    /// Until when this node may launch attempts: the last successful renewal's start plus
    /// the lease, less a margin. A node that cannot renew stops launching before its leases
    /// could have ended and another coordinator adopted its sagas.
    lease_deadline: watch::Sender<tokio::time::Instant>,
    /// Sagas the last lease round found owned here without a task (the periodic check runs
    /// those it finds so twice in a row).
    stranded: Mutex<HashSet<Uuid>>,
}

/// A running coordinator. Clones share it.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
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
            running: Mutex::new(HashMap::new()),
            definitions: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            settled,
            health: Mutex::new(Health {
                store_ok: true,
                ..Health::default()
            }),
            lease_loop: Mutex::new(None),
            clock_offset_ms: AtomicI64::new(0),
            lease_deadline: watch::Sender::new(tokio::time::Instant::now()),
            stranded: Mutex::new(HashSet::new()),
        });
        leases::measure_clock(&inner).await;
        inner.lease_renewed(tokio::time::Instant::now());
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
        self.inner.health.lock().expect("lock").clone()
    }

    /// Sagas this coordinator is running now.
    pub fn running_count(&self) -> usize {
        self.inner.running.lock().expect("lock").len()
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
        self.check_runnable(definition)?;
        let document = serde_json::to_value(&definition.document).expect("a document is JSON");
        let put = self
            .inner
            .store
            .put_definition(&definition.name, &definition.content_hash, &document, now_ms())
            .await?;
        // Starts that name no version see this version from now on.
        self.inner.latest.lock().expect("lock").remove(&definition.name);
        Ok(put)
    }

    fn check_runnable(&self, definition: &SagaDefinition) -> Result<()> {
        let mut errors = Vec::new();
        for (i, step) in definition.steps.iter().enumerate() {
            let parts = std::iter::once(("action", &step.action))
                .chain(step.compensation.as_ref().map(|c| ("compensation", c)));
            for (part, action) in parts {
                match action {
                    sagas::StepAction::Rust(call) => {
                        if !self.inner.runners.rust.contains(&call.handler) {
                            errors.push(ValidationError {
                                path: format!("/steps/{i}/{part}/rust/handler"),
                                message: format!("no Rust handler is registered as `{}`", call.handler),
                            });
                        }
                    }
                    // The automatic undo goes where its action does: checked once, there.
                    sagas::StepAction::Region(region)
                        if matches!(region.operation, sagas::RegionOperation::Undo { .. }) => {}
                    sagas::StepAction::Region(region) => {
                        let regions = self.inner.runners.http.regions().directory();
                        if let Err(message) = regions.check(region.via.as_deref()) {
                            let at = if region.via.is_some() { "/via" } else { "" };
                            errors.push(ValidationError {
                                path: format!("/steps/{i}/{part}/region{at}"),
                                message,
                            });
                        }
                    }
                    sagas::StepAction::Txn(txn) => {
                        let regions = self.inner.runners.http.regions().directory();
                        if let Err(message) = regions.check(txn.via.as_deref()) {
                            let at = if txn.via.is_some() { "/via" } else { "" };
                            errors.push(ValidationError {
                                path: format!("/steps/{i}/{part}/txn{at}"),
                                message,
                            });
                        }
                    }
                    sagas::StepAction::Http(http) => {
                        if let sagas::Template::Literal(Value::String(url)) = &http.url
                            && let Err(message) = self.inner.runners.http.hosts().check(url)
                        {
                            errors.push(ValidationError {
                                path: format!("/steps/{i}/{part}/http/url"),
                                message,
                            });
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors).into())
        }
    }

    /// The definition `name` at `version` (latest when `None`, read from the store), checked
    /// and cached.
    pub async fn definition(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<(DefinitionRecord, Arc<SagaDefinition>)> {
        match version {
            Some(version) => self.inner.definition_version(name, version).await,
            None => self.inner.latest_definition(name).await,
        }
    }

    /// Starts a saga; returns it and whether it is new (`false`: its idempotency key had
    /// already started it).
    pub async fn start_saga(&self, request: StartSaga) -> Result<(SagaRecord, bool)> {
        let (record, created, _) = self.begin(request, false).await?;
        Ok((record, created))
    }

    /// Starts a saga and waits until it settles or `timeout` passes; returns its view then
    /// and whether it is new. A saga this coordinator runs to its end answers from memory:
    /// its task hands over the view of what it committed.
    pub async fn start_and_wait(&self, request: StartSaga, timeout: Duration) -> Result<(SagaView, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (record, created, settled) = self.begin(request, true).await?;
        if let Some(settled) = settled {
            match tokio::time::timeout_at(deadline, settled).await {
                Ok(Ok(view)) => return Ok((view, created)),
                // The task ended without settling the saga (fenced, stopped): read the store.
                Ok(Err(_)) => {}
                Err(_) => return Ok((self.saga(record.id).await?, created)),
            }
        }
        self.wait(
            record.id,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await?;
        Ok((self.saga(record.id).await?, created))
    }

    async fn begin(
        &self,
        request: StartSaga,
        waiting: bool,
    ) -> Result<(SagaRecord, bool, Option<oneshot::Receiver<SagaView>>)> {
        let (record, def) = match request.version {
            Some(version) => self.inner.definition_version(&request.definition, version).await?,
            None => self.inner.latest_definition_cached(&request.definition).await?,
        };
        sagas::validate::validate_input(&def, &request.input)?;
        if request.idempotency_key.as_deref().is_some_and(|k| k.contains('\0')) {
            let error = ValidationError {
                path: "/idempotency_key".into(),
                message: sagas::validate::NUL_MESSAGE.into(),
            };
            return Err(ValidationErrors(vec![error]).into());
        }
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded(self.inner.options.max_running))?;
        // A repeated start that names no version may meet a saga started on an older
        // version (one was registered since): the same request, to answer with that saga.
        let repeat = (request.version.is_none() && request.idempotency_key.is_some())
            .then(|| (request.definition.clone(), request.input.clone()));
        let now = now_ms();
        // The root steps' starts are written with the saga: one commit to start it.
        let mut first = SagaState::new(def.clone());
        let fresh = planner::plan(&first, now.max(0) as u64).start;
        let mut events = Vec::with_capacity(fresh.len());
        for &work in &fresh {
            let event = planner::started_event(&first, work);
            first
                .apply(&event)
                .expect("a new saga accepts the starts its plan names");
            events.push(event);
        }
        let created = self
            .inner
            .store
            .create_saga(NewSaga {
                id: Uuid::now_v7(),
                definition: record.name.clone(),
                version: record.version,
                input: request.input,
                idempotency_key: request.idempotency_key,
                trace_context: Some(SagaTrace::new(request.trace_context.as_ref()).encode()),
                owner: self.inner.options.node_id.clone(),
                lease_until_ms: self.inner.lease_clock_ms() + self.inner.lease_ms(),
                now_ms: now,
                events: events.clone(),
            })
            .await;
        let created = match (created, repeat) {
            (Err(Error::IdempotencyConflict { key, existing }), Some((name, input))) => Created::Existing(
                self.inner
                    .started_on_older_version(key, existing, &name, &input)
                    .await?,
            ),
            (created, _) => created?,
        };
        match created {
            Created::New(saga) => {
                self.inner.options.metrics.saga_started(&saga.definition);
                let log = events
                    .into_iter()
                    .enumerate()
                    .map(|(seq, event)| StoredEvent {
                        seq: seq as i64,
                        at_ms: now,
                        event,
                    })
                    .collect();
                let (waiter, settled) = if waiting {
                    let (waiter, settled) = oneshot::channel();
                    (Some(waiter), Some(settled))
                } else {
                    (None, None)
                };
                self.inner.spawn(saga.clone(), def, log, fresh, permit, waiter);
                Ok((saga, true, settled))
            }
            Created::Existing(saga) => {
                drop(permit);
                let def = if saga.version == record.version {
                    def
                } else {
                    self.inner.definition_version(&saga.definition, saga.version).await?.1
                };
                self.inner.resume_if_orphaned(&saga, def).await?;
                Ok((saga, false, None))
            }
        }
    }

    /// A saga's row and replayed state.
    pub async fn saga(&self, id: Uuid) -> Result<SagaView> {
        let record = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
        let (_, def) = self.definition(&record.definition, Some(record.version)).await?;
        let events = self.inner.store.events(id).await?;
        let state = SagaState::replay(def, events.iter().map(|e| &e.event))
            .map_err(|source| Error::CorruptLog { id, source })?;
        Ok(SagaView { record, state })
    }

    /// A saga's event log.
    pub async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        if self.inner.store.get_saga(id).await?.is_none() {
            return Err(Error::SagaNotFound(id));
        }
        self.inner.store.events(id).await
    }

    /// Waits until the saga is settled (completed, compensated or stuck) or `timeout` passes;
    /// returns its row either way.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<SagaRecord> {
        let mut settled = self.inner.settled.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
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
        let reason = &reason.replace('\0', "\u{FFFD}");
        let record = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
        if record.status != SagaStatus::Running {
            return Err(Error::IllegalTransition {
                id,
                status: record.status,
                reason: "only a running saga can be cancelled".into(),
            });
        }
        let local = self
            .inner
            .running
            .lock()
            .expect("lock")
            .get(&id)
            .map(|r| r.commands.clone());
        match local {
            Some(commands) => {
                let (reply, answer) = oneshot::channel();
                let sent = commands
                    .send(Command::Cancel {
                        reason: reason.to_owned(),
                        reply,
                    })
                    .is_ok();
                if sent && let Ok(result) = answer.await {
                    result?;
                }
            }
            None => {
                // Owned elsewhere: leave a request that its owner picks up.
                self.inner.store.request_cancel(id).await?;
            }
        }
        self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))
    }

    /// Resumes a stuck saga's compensations.
    pub async fn retry(&self, id: Uuid) -> Result<SagaRecord> {
        let record = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
        if record.status != SagaStatus::Stuck {
            return Err(Error::IllegalTransition {
                id,
                status: record.status,
                reason: "only a stuck saga can be retried".into(),
            });
        }
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded(self.inner.options.max_running))?;
        let lease_until = self.inner.lease_clock_ms() + self.inner.lease_ms();
        let Some(record) = self
            .inner
            .store
            .take_over_stuck(id, &self.inner.options.node_id, lease_until)
            .await?
        else {
            let now = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
            return Err(Error::IllegalTransition {
                id,
                status: now.status,
                reason: "only a stuck saga can be retried".into(),
            });
        };
        let (_, def) = self.definition(&record.definition, Some(record.version)).await?;
        let log = self.inner.store.events(id).await?;
        let mut events = log.iter().map(|e| e.event.clone()).collect::<Vec<_>>();
        events.push(SagaEvent::RetryRequested {});
        let state = SagaState::replay(def.clone(), events.iter()).map_err(|source| Error::CorruptLog { id, source })?;
        let fence = record.fence().expect("taken over");
        self.inner
            .store
            .append(crate::store::Append {
                saga_id: id,
                fence,
                first_seq: log.len() as i64,
                events: vec![SagaEvent::RetryRequested {}],
                status: state.status(),
                error: state.unwind_cause().map(ToString::to_string),
                now_ms: now_ms(),
            })
            .await?;
        // From here on the saga is owned with no task: if a read fails, the periodic check
        // of the lease loop finds it and runs it.
        let log = self.inner.store.events(id).await?;
        let record = self.inner.store.get_saga(id).await?.ok_or(Error::SagaNotFound(id))?;
        self.inner
            .spawn_if_absent(record.clone(), def, log, permit, "retried by an operator");
        Ok(record)
    }

    /// Stops every saga task and gives up this node's leases, so that other coordinators
    /// adopt its sagas at once. Interrupted attempts run again there, with the same
    /// idempotency keys.
    pub async fn shutdown(&self) -> Result<()> {
        if let Some(handle) = self.inner.lease_loop.lock().expect("lock").take() {
            handle.abort();
        }
        let running: Vec<RunningSaga> = self
            .inner
            .running
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in running {
            r.abort.abort();
        }
        self.inner.store.release(&self.inner.options.node_id).await
    }
}

/// The commands for one saga's task: a queue that allocates only when a command comes (a
/// cancel, rarely), and a wake-up. A per-saga channel cost a kilobyte up front.
#[derive(Default)]
pub(crate) struct Commands {
    /// `None` once the task has ended: commands are refused, and the queued ones dropped.
    queue: Mutex<Option<Vec<Command>>>,
    wake: tokio::sync::Notify,
}

impl Commands {
    fn open() -> Commands {
        Commands {
            queue: Mutex::new(Some(Vec::new())),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Queues a command for the task; gives it back if the task has ended.
    fn send(&self, command: Command) -> std::result::Result<(), Command> {
        match self.queue.lock().expect("lock").as_mut() {
            Some(queue) => queue.push(command),
            None => return Err(command),
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The next command (for the task).
    pub(crate) async fn recv(&self) -> Command {
        loop {
            if let Some(command) = self.queue.lock().expect("lock").as_mut().and_then(|q| q.pop()) {
                return command;
            }
            self.wake.notified().await;
        }
    }

    /// The task has ended: later commands are refused and queued ones dropped (their
    /// senders see the reply channel close).
    pub(crate) fn close(&self) {
        self.queue.lock().expect("lock").take();
    }
}

impl Inner {
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Now on the store's clock (Unix ms), the clock leases are judged by.
    pub(crate) fn lease_clock_ms(&self) -> i64 {
        now_ms().saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// A renewal that began at `began` succeeded: attempts may launch until the lease it
    /// set would end, less a fifth of the lease (for the delay between this host's timers
    /// and the database's clock, and the time a launch takes).
    pub(crate) fn lease_renewed(&self, began: tokio::time::Instant) {
        let margin = self.options.lease / 5;
        self.lease_deadline
            .send_replace(began + self.options.lease.saturating_sub(margin));
    }

    /// Whether this node's lease certainly still holds, so that it may launch attempts.
    pub(crate) fn lease_held(&self) -> bool {
        *self.lease_deadline.borrow() > tokio::time::Instant::now()
    }

    /// Runs `record` unless a task already does (a start, an adoption, a retry or the
    /// periodic check got there first); `why` goes to the log.
    pub(crate) fn spawn_if_absent(
        self: &Arc<Self>,
        record: SagaRecord,
        def: Arc<SagaDefinition>,
        log: Vec<StoredEvent>,
        permit: tokio::sync::OwnedSemaphorePermit,
        why: &str,
    ) -> bool {
        let mut running = self.running.lock().expect("lock");
        if running.contains_key(&record.id) {
            return false;
        }
        tracing::info!(saga_id = %record.id, generation = record.generation, why, "running saga");
        let task = Spawn {
            record,
            def,
            log,
            fresh: Vec::new(),
            permit,
            waiter: None,
        };
        self.spawn_in(&mut running, task);
        true
    }

    /// The sagas of `owned` (every unsettled saga the store says this node owns) that no
    /// task runs: those found so in the previous round as well are run now (a start or an
    /// adoption in progress has a task by the next round). Returns how many were run.
    pub(crate) async fn run_stranded(self: &Arc<Self>, owned: &[Uuid]) -> usize {
        let without_task: HashSet<Uuid> = {
            let running = self.running.lock().expect("lock");
            owned.iter().filter(|id| !running.contains_key(id)).copied().collect()
        };
        let confirmed: Vec<Uuid> = {
            let mut seen = self.stranded.lock().expect("lock");
            let confirmed = without_task.intersection(&seen).copied().collect();
            *seen = without_task;
            confirmed
        };
        let mut ran = 0;
        for id in confirmed {
            match self.resume_stranded(id).await {
                Ok(true) => {
                    self.options.metrics.stranded_found();
                    self.stranded.lock().expect("lock").remove(&id);
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
        let (_, def) = self.definition_version(&record.definition, record.version).await?;
        let log = self.store.events(id).await?;
        tracing::warn!(saga_id = %id, "found a saga owned here without a task");
        Ok(self.spawn_if_absent(record, def, log, permit, "owned here without a task"))
    }

    /// Resumes an unsettled saga this node owns but runs no task for: a start whose create
    /// committed while its acknowledgement was lost (the database went away at that moment)
    /// left it so, and the lease renewals would keep it from ever being adopted. The repeated
    /// start (same idempotency key) finds it here.
    async fn resume_if_orphaned(self: &Arc<Self>, saga: &SagaRecord, def: Arc<SagaDefinition>) -> Result<()> {
        let ours = saga.owner.as_deref() == Some(self.options.node_id.as_str());
        if !ours || saga.status.is_settled() || self.running.lock().expect("lock").contains_key(&saga.id) {
            return Ok(());
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(());
        };
        let log = self.store.events(saga.id).await?;
        // Only this process writes with this fence, and it runs no task for the saga: the log
        // is whole. Spawn unless a concurrent repeat did so meanwhile.
        let mut running = self.running.lock().expect("lock");
        if !running.contains_key(&saga.id) {
            tracing::info!(saga_id = %saga.id, "resuming a saga whose start was not acknowledged");
            let task = Spawn {
                record: saga.clone(),
                def,
                log,
                fresh: Vec::new(),
                permit,
                waiter: None,
            };
            self.spawn_in(&mut running, task);
        }
        Ok(())
    }

    /// The saga an idempotency key started, for a repeated start that named no version and
    /// so was made on the latest: the same definition and input make it the same request
    /// (the version it started on was the latest then); anything else is the conflict.
    async fn started_on_older_version(
        &self,
        key: String,
        existing: Uuid,
        definition: &str,
        input: &Value,
    ) -> Result<SagaRecord> {
        let conflict = |existing| Error::IdempotencyConflict {
            key: key.clone(),
            existing,
        };
        let saga = self.store.get_saga(existing).await?.ok_or(conflict(existing))?;
        if saga.definition == definition && saga.input == *input {
            Ok(saga)
        } else {
            Err(conflict(existing))
        }
    }

    /// Checks a stored definition (once per version) and caches it.
    pub(crate) fn definition(&self, record: &DefinitionRecord) -> Result<Arc<SagaDefinition>> {
        let key = (record.name.clone(), record.version);
        if let Some((_, def)) = self.definitions.lock().expect("lock").get(&key) {
            return Ok(def.clone());
        }
        let def = Arc::new(sagas::validate::validate_value(&record.document)?);
        self.definitions
            .lock()
            .expect("lock")
            .insert(key, (record.clone(), def.clone()));
        Ok(def)
    }

    /// The definition `name` at `version`, from the cache or else the store.
    pub(crate) async fn definition_version(&self, name: &str, version: i64) -> Result<CachedDefinition> {
        let cached = self
            .definitions
            .lock()
            .expect("lock")
            .get(&(name.to_owned(), version))
            .cloned();
        if let Some(cached) = cached {
            return Ok(cached);
        }
        self.read_definition(name, Some(version)).await
    }

    /// The latest version of `name`, read from the store.
    async fn latest_definition(&self, name: &str) -> Result<CachedDefinition> {
        let cached = self.read_definition(name, None).await?;
        self.latest
            .lock()
            .expect("lock")
            .insert(name.to_owned(), (Instant::now(), cached.clone()));
        Ok(cached)
    }

    /// The latest version of `name` as read at most [`LATEST_DEFINITION_TTL`] ago.
    async fn latest_definition_cached(&self, name: &str) -> Result<CachedDefinition> {
        let cached = self.latest.lock().expect("lock").get(name).cloned();
        match cached {
            Some((read_at, cached)) if read_at.elapsed() < LATEST_DEFINITION_TTL => Ok(cached),
            _ => self.latest_definition(name).await,
        }
    }

    async fn read_definition(&self, name: &str, version: Option<i64>) -> Result<CachedDefinition> {
        let record = self
            .store
            .get_definition(name, version)
            .await?
            .ok_or_else(|| Error::DefinitionNotFound {
                name: name.to_owned(),
                version,
            })?;
        let def = self.definition(&record)?;
        Ok((record, def))
    }

    pub(crate) fn spawn(
        self: &Arc<Self>,
        record: SagaRecord,
        def: Arc<SagaDefinition>,
        log: Vec<StoredEvent>,
        fresh: Vec<Work>,
        permit: tokio::sync::OwnedSemaphorePermit,
        waiter: Option<oneshot::Sender<SagaView>>,
    ) {
        let mut running = self.running.lock().expect("lock");
        let task = Spawn {
            record,
            def,
            log,
            fresh,
            permit,
            waiter,
        };
        self.spawn_in(&mut running, task);
    }

    fn spawn_in(self: &Arc<Self>, running: &mut HashMap<Uuid, RunningSaga>, task: Spawn) {
        let Spawn {
            record,
            def,
            log,
            fresh,
            permit,
            waiter,
        } = task;
        let commands = Arc::new(Commands::open());
        let receiver = commands.clone();
        let id = record.id;
        let generation = record.generation;
        let task = tokio::spawn(saga_task::drive(
            self.clone(),
            record,
            def,
            log,
            fresh,
            receiver,
            permit,
        ));
        let previous = running.insert(
            id,
            RunningSaga {
                commands,
                abort: task.abort_handle(),
                generation,
                waiters: waiter.into_iter().collect(),
            },
        );
        if let Some(previous) = previous {
            // Re-adopted after our own lease lapsed: the old task is fenced; stop it. Its
            // waiters wait for the new one.
            previous.abort.abort();
            if let Some(current) = running.get_mut(&id) {
                current.waiters.extend(previous.waiters);
            }
        }
    }

    pub(crate) fn forward_cancel(&self, id: Uuid) {
        if let Some(r) = self.running.lock().expect("lock").get(&id) {
            let (reply, _) = oneshot::channel();
            let _ = r.commands.send(Command::Cancel {
                reason: "cancel requested".into(),
                reply,
            });
        }
    }

    /// The saga's task ended: with its final view when it settled the saga.
    pub(crate) fn finished(&self, id: Uuid, generation: i64, view: Option<SagaView>) {
        let mut running = self.running.lock().expect("lock");
        let ended = if running.get(&id).is_some_and(|r| r.generation == generation) {
            running.remove(&id)
        } else {
            None
        };
        drop(running);
        if let (Some(ended), Some(view)) = (ended, view) {
            for waiter in ended.waiters {
                let _ = waiter.send(view.clone());
            }
        }
        let _ = self.settled.send(id);
    }

    pub(crate) fn store_result<T>(&self, result: &Result<T>) {
        let mut health = self.health.lock().expect("lock");
        match result {
            Ok(_) => {
                health.store_ok = true;
                health.last_error = None;
                health.failures = 0;
            }
            Err(Error::Store(message)) => {
                health.store_ok = false;
                health.last_error = Some(message.clone());
                health.failures += 1;
            }
            Err(_) => {}
        }
    }
}
