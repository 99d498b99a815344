//! One saga's task: plan, append, run, record outcomes, until the saga settles.
//!
//! The write-ahead rule holds throughout: an attempt is launched only after its "started"
//! event is durable, so after a crash the log names every effect that may have happened.
//! Events that become due together (an outcome and the starts it unlocks) go into one
//! append.
//!
//! The task runs inside a `tracing` span that carries the saga's id and trace id, so every
//! log line it writes names both. Each attempt runs in an OpenTelemetry span of its own
//! ([`crate::trace`]); the saga's root span is emitted when the saga settles.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use opentelemetry::context::FutureExt as _;
use sagas::template::{Budget, RenderContext};
use sagas::{Phase, SagaEvent, SagaState, SagaStatus, StepAction, StepError, Work, planner};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::folded::Folded;
use super::registry::{Command, Commands};
use super::{Inner, SagaView};
use crate::clock::now_ms;
use crate::runner::{RenderedAction, StepCall};
use crate::store::{Append, AppendAck, Fence, SagaRecord};
use crate::trace::{AttemptSpan, SagaSpans, outcome_of};
use crate::{Error, Result};

/// Why a compensation that reads its own step's output cannot run for a possibly-applied
/// step (validation warns about such compensations).
const POSSIBLY_APPLIED_NO_OUTPUT: &str = ": the action's outcome is unknown (it timed out, lost its connection or \
     got a 5xx, and may have been applied), so there is no output for its compensation to read. The saga stays \
     stuck: find out whether the action was applied, and undo it by hand if it was";

/// Longest wait between two tries of a failing store write.
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

/// The future of a saga's task: drives the saga until it settles, or until it is fenced or
/// the task is aborted, then tells `inner`. Built before it is spawned, so that the task
/// holds one driver: the driver is created here and run in place (`Driver::run` borrows it),
/// not moved into a second future inside the first.
pub(super) fn drive(
    inner: Arc<Inner>,
    record: SagaRecord,
    folded: Folded,
    fresh: Vec<Work>,
    commands: Arc<Commands>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    let id = record.id;
    let generation = record.generation;
    let spans = SagaSpans::new(&record, &inner.options.node_id);
    let span = tracing::info_span!("saga", saga_id = %id, trace_id = %spans.trace().trace_id_hex(), definition = %record.definition);
    let mut driver = Driver::new(inner.clone(), record, folded, spans);
    // However the task ends (returns, or is aborted, even before it first runs), later
    // commands are refused.
    let commands = CloseOnDrop(commands);
    async move {
        let _permit = permit;
        let ran = match &mut driver {
            Ok(driver) => Some(driver.run(fresh, &commands.0).await),
            Err(e) => {
                tracing::error!(error = %e, "cannot resume saga");
                None
            }
        };
        let view = match (ran, driver) {
            (Some(Ok(())), Ok(driver)) => {
                let view = driver.into_view();
                tracing::debug!(status = %view.record.status, "saga settled");
                Some(view)
            }
            (Some(Err(Error::Fenced(_))), _) => {
                tracing::info!("another coordinator owns the saga now");
                None
            }
            (Some(Err(e)), _) => {
                tracing::error!(error = %e, "saga task stopped");
                None
            }
            (None, _) | (Some(Ok(())), Err(_)) => None,
        };
        inner.finished(id, generation, view);
    }
    .instrument(span)
}

/// Closes a task's command queue when the task ends.
struct CloseOnDrop(Arc<Commands>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct Driver {
    inner: Arc<Inner>,
    id: Uuid,
    id_text: String,
    fence: Fence,
    input: Arc<Value>,
    /// The saga's row as this task last wrote it (its input is in `input`).
    record: SagaRecord,
    state: SagaState,
    next_seq: i64,
    batch: Vec<SagaEvent>,
    replies: Vec<oneshot::Sender<Result<()>>>,
    spans: SagaSpans,
    /// When the saga began to unwind (Unix ms), if it did.
    unwind_at_ms: Option<i64>,
    /// When an operator last retried it (Unix ms), if one did.
    retried_at_ms: Option<i64>,
}

/// An attempt's result, with its span and when it began.
type Outcome = (Work, Result<Value, StepError>, AttemptSpan, Instant);

impl Driver {
    fn new(inner: Arc<Inner>, mut record: SagaRecord, folded: Folded, spans: SagaSpans) -> Result<Driver> {
        let id = record.id;
        let fence = record.fence().ok_or(Error::Fenced(id))?;
        let Folded {
            state,
            unwind_at_ms,
            retried_at_ms,
        } = folded;
        Ok(Driver {
            inner,
            id,
            id_text: id.to_string(),
            fence,
            input: Arc::new(record.input.take()),
            record,
            next_seq: state.event_count() as i64,
            state,
            batch: Vec::new(),
            replies: Vec::new(),
            spans,
            unwind_at_ms,
            retried_at_ms,
        })
    }

    fn push(&mut self, event: SagaEvent) -> Result<()> {
        let unwinding = self.state.unwind_cause().is_some();
        self.state
            .apply(&event)
            .map_err(|source| Error::CorruptLog { id: self.id, source })?;
        if !unwinding && let Some(cause) = self.state.unwind_cause() {
            tracing::info!(cause = %cause, "saga unwinds");
            self.unwind_at_ms = Some(now_ms());
        }
        self.batch.push(event);
        Ok(())
    }

    /// Counts the settled saga and emits its root span.
    fn settled(&self) {
        let status = self.state.status();
        self.inner.options.metrics.saga_settled(&self.record.definition, status);
        let unwind = self.unwind_at_ms.zip(self.state.unwind_cause());
        self.spans
            .settled(status, self.record.created_at_ms, unwind, self.retried_at_ms);
    }

    /// Drives the saga until it settles. `fresh` are attempts whose "started" events were
    /// written with the saga itself, to launch as they are; otherwise every attempt the log
    /// shows in flight was interrupted (a crash, a hand-over) and runs again as the next one.
    async fn run(&mut self, fresh: Vec<Work>, commands: &Commands) -> Result<()> {
        let mut running: JoinSet<Outcome> = JoinSet::new();
        let mut launch: Vec<Work> = fresh;
        if launch.is_empty() {
            for work in planner::in_flight(&self.state) {
                self.push(planner::started_event(&self.state, work))?;
                launch.push(work);
            }
        }
        let mut cancel = None;
        loop {
            if let Some(reason) = cancel.take()
                && self.state.status() == SagaStatus::Running
            {
                self.push(SagaEvent::CancelRequested { reason })?;
            }
            let plan = planner::plan(&self.state, now_ms().max(0) as u64);
            for work in plan.start {
                self.push(planner::started_event(&self.state, work))?;
                launch.push(work);
            }
            if !self.batch.is_empty() {
                // Boxed: the append's retry loop is not part of an idle saga's future.
                let ack = Box::pin(self.append()).await?;
                if ack.cancel_requested && self.state.status() == SagaStatus::Running {
                    cancel = Some("cancel requested".to_owned());
                }
            }
            if !launch.is_empty()
                && !self
                    .inner
                    .lease
                    .may_launch(self.id, self.record.lease_until_ms, self.inner.options.lease)
            {
                Box::pin(self.await_lease()).await?;
            }
            for work in launch.drain(..) {
                let runners = self.inner.runners.clone();
                let span = self.attempt_span(work);
                let context = span.context.clone();
                let call = self.call(work, span.traceparent(self.spans.trace()));
                let attempt = async move {
                    let began = Instant::now();
                    // Matched by reference: the call stays where the block holds it, rather
                    // than being moved into a second slot of this future.
                    let result = match &call {
                        Ok(call) => AssertUnwindSafe(runners.run(call))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Err(StepError::transient("the step panicked"))),
                        Err(e) => Err(e.clone()),
                    };
                    (work, result, span, began)
                };
                running.spawn(attempt.with_context(context).in_current_span());
            }
            if cancel.is_some() {
                continue;
            }
            if running.is_empty() && self.state.status().is_settled() {
                self.settled();
                return Ok(());
            }
            let wake = plan.wake_at_ms;
            let sleep = async {
                match wake {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms().max(0) as u64);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    let (work, outcome, span, began) = joined.expect("step tasks catch their panics");
                    let event = planner::outcome_event(&self.state, work, outcome, now_ms().max(0) as u64, rand::random::<f64>());
                    let step = &self.state.definition().steps[work.step].name;
                    self.inner.options.metrics.attempt(&self.record.definition, step, work.phase, outcome_of(&event).0, began.elapsed());
                    span.finish(&event);
                    self.push(event)?;
                }
                command = commands.recv() => match command {
                    Command::Cancel { reason, reply } => {
                        if self.state.status() == SagaStatus::Running {
                            cancel = Some(reason);
                            self.replies.push(reply);
                        } else {
                            let _ = reply.send(Err(Error::IllegalTransition {
                                id: self.id,
                                status: self.state.status(),
                                reason: "only a running saga can be cancelled".into(),
                            }));
                        }
                    }
                },
                () = sleep => {}
            }
        }
    }

    /// Appends the batch, retrying store failures with backoff until it is durable.
    async fn append(&mut self) -> Result<AppendAck> {
        let events = std::mem::take(&mut self.batch);
        let count = events.len() as i64;
        let mut append = Append {
            saga_id: self.id,
            fence: self.fence.clone(),
            first_seq: self.next_seq,
            events,
            status: self.state.status(),
            error: self.state.unwind_cause().map(ToString::to_string),
            now_ms: now_ms(),
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = self.inner.store.append(append.clone()).await;
            self.inner.store_result(&result);
            match result {
                Ok(ack) => {
                    self.next_seq += count;
                    self.record.apply(&append, self.next_seq);
                    for reply in self.replies.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                    return Ok(ack);
                }
                Err(Error::Store(message)) => {
                    tracing::warn!(saga_id = %self.id, error = %message, retry_in_ms = backoff.as_millis() as u64, "store write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                    append.now_ms = now_ms();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Neither the saga's own lease nor a renewal that covered it certainly holds (this
    /// node's renewals failed for longer than its lease allows, or the last one did not
    /// extend this saga): launch nothing until a renewal succeeds, and then only if the
    /// saga is still this task's (another coordinator may have adopted it meanwhile; a
    /// paused process finds out here, before it sends anything).
    async fn await_lease(&mut self) -> Result<()> {
        tracing::warn!(saga_id = %self.id, "no lease of this saga certainly holds; holding attempts until a renewal extends it");
        let mut deadline = self.inner.lease.subscribe();
        while !self.inner.lease.held() {
            if deadline.changed().await.is_err() {
                return Err(Error::Fenced(self.id));
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.inner.store.get_saga(self.id).await {
                Ok(Some(row)) if row.fence().as_ref() == Some(&self.fence) => return Ok(()),
                Ok(_) => return Err(Error::Fenced(self.id)),
                Err(Error::Store(message)) => {
                    tracing::warn!(error = %message, "reading the saga's owner failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_STORE_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The settled saga's view: its row as the store holds it after the task's last append
    /// (the lease aside, which renewals move) and its state.
    fn into_view(self) -> SagaView {
        let mut record = self.record;
        record.input = Arc::unwrap_or_clone(self.input);
        SagaView {
            record,
            state: self.state,
        }
    }

    /// Opens the span of an attempt about to be launched.
    fn attempt_span(&self, work: Work) -> AttemptSpan {
        let step = &self.state.definition().steps[work.step];
        let action = match work.phase {
            Phase::Action => Some(&step.action),
            Phase::Compensation => step.compensation.as_ref(),
        };
        // Region steps are HTTP calls to a region too: client spans.
        let http = matches!(
            action,
            Some(StepAction::Http(_) | StepAction::Region(_) | StepAction::Txn(_))
        );
        let key = sagas::idempotency_key(&self.id_text, &step.name, work.phase);
        self.spans.attempt(&step.name, work.phase, work.attempt, &key, http)
    }

    /// Renders the step's templates into a call that runs under `traceparent`; a template
    /// that does not resolve, or that would render more than an attempt's budget
    /// ([`sagas::template::MAX_RENDERED_BYTES`]), is a business failure of the step.
    fn call(&self, work: Work, traceparent: String) -> Result<StepCall, StepError> {
        let def = self.state.definition();
        let step = &def.steps[work.step];
        let action = match work.phase {
            Phase::Action => &step.action,
            Phase::Compensation => step
                .compensation
                .as_ref()
                .expect("only steps with a compensation are compensated"),
        };
        let state = &self.state;
        let lookup = |name: &str| state.output_of(name);
        let cx = RenderContext {
            input: &self.input,
            saga_id: &self.id_text,
            output_of: &lookup,
            budget: Budget::attempt(),
        };
        // A compensating step without an output was possibly applied (its outcome unknown).
        let own_output = format!("steps.{}.output", step.name);
        let possibly_applied = work.phase == Phase::Compensation && state.steps()[work.step].output.is_none();
        let fail = |e: sagas::template::RenderError| {
            let mut message = e.to_string();
            let unresolved_own = matches!(&e, sagas::template::RenderError::Unresolved { reference, .. }
                if reference.starts_with(&own_output));
            if possibly_applied && unresolved_own {
                message.push_str(POSSIBLY_APPLIED_NO_OUTPUT);
            }
            StepError::permanent(message)
        };
        let request = match action {
            StepAction::Http(http) => RenderedAction::Http {
                method: http.method,
                url: http.url.render_string(&cx).map_err(fail)?,
                headers: http
                    .headers
                    .iter()
                    .map(|(name, t)| t.render_string(&cx).map(|v| (name.clone(), v)))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
                body: http.body.as_ref().map(|b| b.render(&cx)).transpose().map_err(fail)?,
            },
            StepAction::Rust(call) => RenderedAction::Rust {
                handler: call.handler.clone(),
                params: call
                    .params
                    .as_ref()
                    .map(|p| p.render(&cx))
                    .transpose()
                    .map_err(fail)?
                    .unwrap_or(Value::Null),
            },
            StepAction::Region(region) => crate::runner::region::render(region, &cx).map_err(fail)?,
            StepAction::Txn(txn) => crate::runner::region::render_txn(txn, &cx).map_err(fail)?,
        };
        let outputs: BTreeMap<String, Value> = def
            .steps
            .iter()
            .zip(state.steps())
            .filter_map(|(d, s)| s.output.as_ref().map(|o| (d.name.clone(), o.clone())))
            .collect();
        Ok(StepCall {
            saga_id: self.id,
            definition: self.record.definition.clone(),
            step: step.name.clone(),
            phase: work.phase,
            attempt: work.attempt,
            idempotency_key: sagas::idempotency_key(&self.id_text, &step.name, work.phase),
            input: self.input.clone(),
            outputs: Arc::new(outputs),
            request,
            timeout: step.timeout,
            traceparent: Some(traceparent),
            tracestate: self.spans.trace().tracestate.clone(),
        })
    }
}
