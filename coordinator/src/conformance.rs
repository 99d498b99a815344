//! Conformance checks that any saga can be run through (in tests, on an in-memory store):
//!
//! - it completes when nothing fails, and again when every action runs twice (idempotent
//!   actions);
//! - a failure injected at each step in turn unwinds cleanly: the saga ends `compensated`,
//!   every step that succeeded and has a compensation is compensated, and this holds when
//!   every compensation runs twice too;
//! - an outcome lost at each step in turn is compensated: the action runs but its answer
//!   never comes back (every attempt), or its request is lost before it runs (every
//!   attempt); either way the step ends possibly applied, the saga `compensated`, and the
//!   step's compensation ran, for an action that did happen and for one that never did.
//!   A compensation that reads its own step's output cannot pass these (there is none).
//!
//! The user's own `verify` hook sees every finished saga, to check the effects its steps had
//! (for example, that a balance is back where it started).

use std::sync::Arc;
use std::time::Duration;

use sagas::{Phase, SagaDefinition, SagaStatus, StepError, StepStatus};
use serde_json::Value;

use crate::runner::Runners;
use crate::runner::faults::{Fault, Faults};
use crate::runner::http::{HostPolicy, HttpRunner};
use crate::runner::rust::HandlerRegistry;
use crate::store::memory::MemoryStore;
use crate::{Coordinator, Options, SagaView, StartSaga};

/// The case a finished saga was run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Case {
    /// Nothing injected.
    Plain,
    /// Every action ran twice.
    ActionsRepeated,
    /// The action of this step failed; every compensation ran twice.
    FailAt(String),
    /// Every attempt of this step's action ran, and its answer was lost (a timeout).
    AnswerLostAt(String),
    /// Every attempt of this step's action was lost before it ran (a timeout): its
    /// compensation runs for an action that never happened, and must change nothing.
    RequestLostAt(String),
}

/// Runs every conformance case for `definition` with `input`, whose Rust steps are in
/// `registry`. Returns the first violation found.
pub async fn check(
    definition: &SagaDefinition,
    registry: HandlerRegistry,
    input: Value,
    verify: impl Fn(&Case, &SagaView) -> Result<(), String>,
) -> Result<(), String> {
    let faults = Arc::new(Faults::new());
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: faults.clone(),
    };
    let options = Options {
        lease: Duration::from_secs(60),
        ..Options::default()
    };
    let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, options)
        .await
        .map_err(|e| e.to_string())?;
    coordinator.register(definition).await.map_err(|e| e.to_string())?;

    let mut cases = vec![Case::Plain, Case::ActionsRepeated];
    cases.extend(definition.steps.iter().map(|s| Case::FailAt(s.name.clone())));
    cases.extend(definition.steps.iter().map(|s| Case::AnswerLostAt(s.name.clone())));
    cases.extend(definition.steps.iter().map(|s| Case::RequestLostAt(s.name.clone())));
    for case in cases {
        faults.clear();
        match &case {
            Case::Plain => {}
            Case::ActionsRepeated => {
                for s in &definition.steps {
                    faults.inject(None, &s.name, Phase::Action, Fault::Repeat, None);
                }
            }
            Case::FailAt(step) => {
                let error = StepError::permanent("injected by the conformance check");
                faults.inject(None, step, Phase::Action, Fault::Fail(error), None);
                for s in &definition.steps {
                    faults.inject(None, &s.name, Phase::Compensation, Fault::Repeat, None);
                }
            }
            Case::AnswerLostAt(step) => {
                let error = StepError::timeout("answer lost by the conformance check");
                faults.inject(None, step, Phase::Action, Fault::RunThenFail(error), None);
            }
            Case::RequestLostAt(step) => {
                let error = StepError::timeout("request lost by the conformance check");
                faults.inject(None, step, Phase::Action, Fault::Fail(error), None);
            }
        }
        let view = run_one(&coordinator, definition, &input).await?;
        check_outcome(&case, &view)?;
        verify(&case, &view).map_err(|e| format!("{case:?}: {e}"))?;
    }
    coordinator.shutdown().await.map_err(|e| e.to_string())
}

async fn run_one(coordinator: &Coordinator, definition: &SagaDefinition, input: &Value) -> Result<SagaView, String> {
    let (SagaView { record: saga, .. }, _) = coordinator
        .start_saga(StartSaga {
            definition: definition.name.clone(),
            version: None,
            input: input.clone(),
            idempotency_key: None,
            trace_context: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let record = coordinator
        .wait(saga.id, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    if !record.status.is_settled() {
        return Err(format!("saga {} did not settle within 60 s", saga.id));
    }
    coordinator.saga(saga.id).await.map_err(|e| e.to_string())
}

fn check_outcome(case: &Case, view: &SagaView) -> Result<(), String> {
    let def = view.state.definition();
    let status = view.state.status();
    match case {
        Case::Plain | Case::ActionsRepeated => {
            if status != SagaStatus::Completed {
                return Err(format!(
                    "{case:?}: expected completed, got {status} ({:?})",
                    view.state.unwind_cause()
                ));
            }
        }
        Case::FailAt(failed) | Case::AnswerLostAt(failed) | Case::RequestLostAt(failed) => {
            if status != SagaStatus::Compensated {
                return Err(format!(
                    "{case:?}: expected compensated, got {status} ({:?})",
                    view.state.unwind_cause()
                ));
            }
            let refused = matches!(case, Case::FailAt(_));
            for (step, s) in def.steps.iter().zip(view.state.steps()) {
                let at = &step.name == failed;
                let ok = match s.status {
                    StepStatus::NotRun => true,
                    StepStatus::Compensated => !(at && refused),
                    StepStatus::Failed => at && refused,
                    StepStatus::PossiblyApplied => at && !refused && step.compensation.is_none(),
                    StepStatus::Succeeded => step.compensation.is_none(),
                    StepStatus::Pending
                    | StepStatus::Running
                    | StepStatus::RetryWaiting { .. }
                    | StepStatus::Compensating
                    | StepStatus::CompensationRetryWaiting { .. }
                    | StepStatus::CompensationFailed => false,
                };
                if !ok {
                    return Err(format!("{case:?}: step `{}` ended {:?}", step.name, s.status));
                }
            }
        }
    }
    Ok(())
}
