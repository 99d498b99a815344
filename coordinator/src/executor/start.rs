//! Starting a saga. Its first state (every step pending, the root steps started) is built
//! once: written with the saga's row in one commit, handed to the saga's task, and
//! answered with when the caller does not wait. A repeated start (same idempotency key)
//! reads the saga it started back from the store.

use std::sync::Arc;
use std::time::Duration;

use sagas::{SagaDefinition, SagaState, ValidationError, ValidationErrors, planner};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::folded::Folded;
use super::handle::Coordinator;
use super::registry::Spawn;
use super::{Inner, SagaView, StartSaga};
use crate::clock::now_ms;
use crate::store::{Created, NewSaga, SagaRecord};
use crate::trace::SagaTrace;
use crate::{Error, Result};

/// What a start did.
enum Begun {
    /// A new saga, its view as committed, and (when the caller waits) where its task hands
    /// its final view.
    New(SagaView, Option<oneshot::Receiver<SagaView>>),
    /// The idempotency key had started this saga before.
    Existing(SagaRecord),
}

impl Coordinator {
    /// Starts a saga; returns it as its start committed it (a saga its idempotency key had
    /// already started: as stored now) and whether it is new.
    pub async fn start_saga(&self, request: StartSaga) -> Result<(SagaView, bool)> {
        match self.begin(request, false).await? {
            Begun::New(view, _) => Ok((view, true)),
            Begun::Existing(record) => Ok((self.saga(record.id).await?, false)),
        }
    }

    /// Starts a saga and waits until it settles or `timeout` passes; returns its view then
    /// and whether it is new. A saga this coordinator runs to its end answers from memory:
    /// its task hands over the view of what it committed.
    pub async fn start_and_wait(&self, request: StartSaga, timeout: Duration) -> Result<(SagaView, bool)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (id, created) = match self.begin(request, true).await? {
            Begun::New(view, Some(settled)) => match tokio::time::timeout_at(deadline, settled).await {
                Ok(Ok(view)) => return Ok((view, true)),
                // The task ended without settling the saga (fenced, stopped): read the store.
                Ok(Err(_)) => (view.record.id, true),
                Err(_) => return Ok((self.saga(view.record.id).await?, true)),
            },
            Begun::New(view, None) => (view.record.id, true),
            Begun::Existing(record) => (record.id, false),
        };
        self.wait(id, deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await?;
        Ok((self.saga(id).await?, created))
    }

    async fn begin(&self, request: StartSaga, waiting: bool) -> Result<Begun> {
        let inner = &self.inner;
        let (store, definitions) = (&*inner.store, &inner.definitions);
        let (record, def) = match request.version {
            Some(version) => definitions.version(store, &request.definition, version).await?,
            None => definitions.latest_cached(store, &request.definition).await?,
        };
        sagas::validate::validate_input(&def, &request.input)?;
        if request.idempotency_key.as_deref().is_some_and(|k| k.contains('\0')) {
            let error = ValidationError {
                path: "/idempotency_key".into(),
                message: sagas::validate::NUL_MESSAGE.into(),
            };
            return Err(ValidationErrors(vec![error]).into());
        }
        let permit = inner.permit()?;
        // A repeated start that names no version may meet a saga started on an older
        // version (one was registered since): the same request, to answer with that saga.
        let repeat = (request.version.is_none() && request.idempotency_key.is_some())
            .then(|| (request.definition.clone(), request.input.clone()));
        let now = now_ms();
        // The root steps' starts are written with the saga: one commit to start it.
        let mut state = SagaState::new(def.clone());
        let fresh = planner::plan(&state, now.max(0) as u64).start;
        let mut events = Vec::with_capacity(fresh.len());
        for &work in &fresh {
            let event = planner::started_event(&state, work);
            state
                .apply(&event)
                .expect("a new saga accepts the starts its plan names");
            events.push(event);
        }
        let created = store
            .create_saga(NewSaga {
                id: Uuid::now_v7(),
                definition: record.name.clone(),
                version: record.version,
                input: request.input,
                idempotency_key: request.idempotency_key,
                trace_context: Some(SagaTrace::new(request.trace_context.as_ref()).encode()),
                owner: inner.options.node_id.clone(),
                lease_until_ms: inner.lease.clock_ms() + inner.lease_ms(),
                now_ms: now,
                events,
            })
            .await;
        let created = match (created, repeat) {
            (Err(Error::IdempotencyConflict { key, existing }), Some((name, input))) => {
                Created::Existing(inner.started_on_older_version(key, existing, &name, &input).await?)
            }
            (created, _) => created?,
        };
        match created {
            Created::New(saga) => {
                inner.options.metrics.saga_started(&saga.definition);
                let (waiter, settled) = if waiting {
                    let (waiter, settled) = oneshot::channel();
                    (Some(waiter), Some(settled))
                } else {
                    (None, None)
                };
                let view = SagaView {
                    record: saga.clone(),
                    state: state.clone(),
                };
                let task = Spawn {
                    record: saga,
                    folded: Folded::new(state),
                    fresh,
                    permit,
                    waiter,
                };
                inner.registry.spawn(inner, task);
                Ok(Begun::New(view, settled))
            }
            Created::Existing(saga) => {
                drop(permit);
                let def = if saga.version == record.version {
                    def
                } else {
                    definitions.version(store, &saga.definition, saga.version).await?.1
                };
                inner.resume_if_orphaned(&saga, def).await?;
                Ok(Begun::Existing(saga))
            }
        }
    }
}

impl Inner {
    /// Resumes an unsettled saga this node owns but runs no task for: a start whose create
    /// committed while its acknowledgement was lost (the database went away at that moment)
    /// left it so, and the lease renewals would keep it from ever being adopted. The repeated
    /// start (same idempotency key) finds it here.
    async fn resume_if_orphaned(self: &Arc<Self>, saga: &SagaRecord, def: Arc<SagaDefinition>) -> Result<()> {
        let ours = saga.owner.as_deref() == Some(self.options.node_id.as_str());
        if !ours || saga.status.is_settled() || self.registry.contains(saga.id) {
            return Ok(());
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(());
        };
        // Only this process writes with this fence, and it runs no task for the saga: the log
        // is whole.
        let log = self.store.events(saga.id).await?;
        let folded = match Folded::replay(saga.id, def, &log) {
            Ok(folded) => folded,
            Err(e) => {
                tracing::error!(saga_id = %saga.id, error = %e, "cannot resume saga");
                return Ok(());
            }
        };
        let task = Spawn::resumed(saga.clone(), folded, permit);
        // Unless a concurrent repeat did so meanwhile.
        self.registry
            .spawn_unless_running(self, task, "its start was not acknowledged");
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
}
