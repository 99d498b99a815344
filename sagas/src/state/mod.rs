//! The saga state machine: one exhaustive transition function over events.
//!
//! [`SagaState::apply`] is the only way a saga's state changes, in live execution and in
//! recovery alike: the state after a crash is `replay(definition, log)`. An event that does
//! not fit the state is an [`IllegalEvent`], never ignored, and leaves the state untouched.

use std::sync::Arc;

use serde_json::Value;

use crate::definition::{SagaDefinition, StepIndex};
use crate::event::SagaEvent;

mod status;

pub use status::{SagaStatus, StepState, StepStatus, UnwindCause};

/// An event that does not fit the saga's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal event `{event}` for a {status} saga: {reason}")]
pub struct IllegalEvent {
    /// The saga's status when the event arrived.
    pub status: SagaStatus,
    /// The event's type.
    pub event: &'static str,
    /// Why it does not fit.
    pub reason: String,
}

/// The state of one saga: the fold of its events.
#[derive(Debug, Clone)]
pub struct SagaState {
    definition: Arc<SagaDefinition>,
    status: SagaStatus,
    steps: Vec<StepState>,
    unwind: Option<UnwindCause>,
    events: u64,
}

impl SagaState {
    /// A saga that has just been created: running, every step pending.
    pub fn new(definition: Arc<SagaDefinition>) -> SagaState {
        let steps = vec![StepState::new(); definition.steps.len()];
        SagaState {
            definition,
            status: SagaStatus::Running,
            steps,
            unwind: None,
            events: 0,
        }
    }

    /// Folds `events` into a new saga.
    pub fn replay<'e>(
        definition: Arc<SagaDefinition>,
        events: impl IntoIterator<Item = &'e SagaEvent>,
    ) -> Result<SagaState, IllegalEvent> {
        let mut state = SagaState::new(definition);
        for event in events {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// The definition the saga runs.
    pub fn definition(&self) -> &Arc<SagaDefinition> {
        &self.definition
    }

    /// The saga's status.
    pub fn status(&self) -> SagaStatus {
        self.status
    }

    /// Every step's state, in definition order.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// Why the saga unwound, if it did.
    pub fn unwind_cause(&self) -> Option<&UnwindCause> {
        self.unwind.as_ref()
    }

    /// How many events have been applied.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// The output of the step called `name`, if it succeeded.
    pub fn output_of(&self, name: &str) -> Option<&Value> {
        self.definition
            .step_index(name)
            .and_then(|i| self.steps[i].output.as_ref())
    }

    /// Whether an action attempt is in flight anywhere in the saga.
    pub fn action_in_flight(&self) -> bool {
        self.steps.iter().any(|s| s.status == StepStatus::Running)
    }

    /// For each step, whether the unwind is done with it: it never ran, failed (known not
    /// applied), was compensated, or has no compensation and everything after it is
    /// unwound.
    pub fn unwound(&self) -> Vec<bool> {
        let mut done = vec![false; self.steps.len()];
        for &i in self.definition.topological_order().iter().rev() {
            let dependents_done = self.definition.steps[i].dependents.iter().all(|&d| done[d]);
            done[i] = match self.steps[i].status {
                StepStatus::Pending | StepStatus::NotRun | StepStatus::Failed | StepStatus::Compensated => true,
                StepStatus::Succeeded | StepStatus::PossiblyApplied => {
                    self.definition.steps[i].compensation.is_none() && dependents_done
                }
                StepStatus::Running
                | StepStatus::RetryWaiting { .. }
                | StepStatus::Compensating
                | StepStatus::CompensationRetryWaiting { .. }
                | StepStatus::CompensationFailed => false,
            };
        }
        done
    }

    /// Whether step `i`'s compensation may start now (ignoring retry timers). A possibly
    /// applied step is compensated like a succeeded one.
    pub fn compensation_ready(&self, i: StepIndex, unwound: &[bool]) -> bool {
        let step = &self.definition.steps[i];
        let waiting = match self.steps[i].status {
            StepStatus::Succeeded | StepStatus::PossiblyApplied => step.compensation.is_some(),
            StepStatus::CompensationRetryWaiting { .. } => true,
            StepStatus::Pending
            | StepStatus::Running
            | StepStatus::RetryWaiting { .. }
            | StepStatus::Failed
            | StepStatus::NotRun
            | StepStatus::Compensating
            | StepStatus::Compensated
            | StepStatus::CompensationFailed => false,
        };
        waiting && !self.action_in_flight() && step.dependents.iter().all(|&d| unwound[d])
    }

    /// Applies one event, or refuses it and leaves the state as it was.
    pub fn apply(&mut self, event: &SagaEvent) -> Result<(), IllegalEvent> {
        let illegal = |status: SagaStatus, reason: String| IllegalEvent {
            status,
            event: event.kind(),
            reason,
        };
        let status = self.status;
        let step_index = |name: &str| {
            self.definition
                .step_index(name)
                .ok_or_else(|| illegal(status, format!("no step is named `{name}`")))
        };
        let expect_attempt = |_: &StepState, want: u32, got: u32| {
            if want == got {
                Ok(())
            } else {
                Err(illegal(
                    status,
                    format!("attempt {got} does not follow ({want} expected)"),
                ))
            }
        };

        match event {
            SagaEvent::StepStarted { step, attempt } => {
                let i = step_index(step)?;
                // Recovery re-runs an attempt that was in flight when the coordinator stopped,
                // even if the saga began to unwind meanwhile: only its outcome tells whether
                // there is something to compensate.
                let rerun = status == SagaStatus::Compensating && self.steps[i].status == StepStatus::Running;
                if status != SagaStatus::Running && !rerun {
                    return Err(illegal(status, "no step starts once the saga stopped running".into()));
                }
                let deps = &self.definition.steps[i].depends_on;
                if let Some(&d) = deps.iter().find(|&&d| self.steps[d].status != StepStatus::Succeeded) {
                    return Err(illegal(
                        status,
                        format!(
                            "`{step}` depends on `{}`, which has not succeeded",
                            self.definition.steps[d].name
                        ),
                    ));
                }
                let s = &self.steps[i];
                let want = match s.status {
                    StepStatus::Pending => 1,
                    StepStatus::Running | StepStatus::RetryWaiting { .. } => s.attempts + 1,
                    StepStatus::Succeeded
                    | StepStatus::Failed
                    | StepStatus::PossiblyApplied
                    | StepStatus::NotRun
                    | StepStatus::Compensating
                    | StepStatus::CompensationRetryWaiting { .. }
                    | StepStatus::Compensated
                    | StepStatus::CompensationFailed => {
                        return Err(illegal(status, format!("step `{step}` is {}", s.status.as_str())));
                    }
                };
                expect_attempt(s, want, *attempt)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::Running;
                s.attempts = *attempt;
            }
            SagaEvent::StepSucceeded { step, attempt, output } => {
                let i = step_index(step)?;
                self.expect_action_outcome(i, *attempt, true, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::Succeeded;
                s.output = Some(output.clone());
            }
            SagaEvent::StepAttemptFailed {
                step,
                attempt,
                error,
                retry_at_ms,
            } => {
                let i = step_index(step)?;
                if status != SagaStatus::Running {
                    return Err(illegal(status, "an unwinding saga does not retry actions".into()));
                }
                self.expect_action_outcome(i, *attempt, false, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::RetryWaiting {
                    retry_at_ms: *retry_at_ms,
                };
                s.uncertain |= error.possibly_applied();
                s.error = Some(error.clone());
            }
            SagaEvent::StepFailed { step, attempt, error } => {
                let i = step_index(step)?;
                self.expect_action_outcome(i, *attempt, true, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::Failed;
                s.error = Some(error.clone());
                if status == SagaStatus::Running {
                    self.begin_unwind(UnwindCause::StepFailed {
                        step: step.clone(),
                        error: error.clone(),
                    });
                }
            }
            SagaEvent::StepOutcomeUnknown { step, attempt, error } => {
                let i = step_index(step)?;
                self.expect_action_outcome(i, *attempt, true, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::PossiblyApplied;
                s.uncertain = true;
                s.error = Some(error.clone());
                if status == SagaStatus::Running {
                    self.begin_unwind(UnwindCause::StepFailed {
                        step: step.clone(),
                        error: error.clone(),
                    });
                }
            }
            SagaEvent::CancelRequested { reason } => match status {
                SagaStatus::Running => self.begin_unwind(UnwindCause::Cancelled { reason: reason.clone() }),
                SagaStatus::Compensating | SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck => {
                    return Err(illegal(status, "only a running saga can be cancelled".into()));
                }
            },
            SagaEvent::CompensationStarted { step, attempt } => {
                let i = step_index(step)?;
                if status != SagaStatus::Compensating {
                    return Err(illegal(status, "compensations run only while compensating".into()));
                }
                let s = &self.steps[i];
                let rerun = s.status == StepStatus::Compensating;
                if !rerun && !self.compensation_ready(i, &self.unwound()) {
                    return Err(illegal(
                        status,
                        format!(
                            "the compensation of `{step}` is not due (its step is {}, or later steps are not unwound)",
                            s.status.as_str()
                        ),
                    ));
                }
                expect_attempt(s, s.compensation_attempts + 1, *attempt)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::Compensating;
                s.compensation_attempts = *attempt;
            }
            SagaEvent::CompensationSucceeded { step, attempt } => {
                let i = step_index(step)?;
                self.expect_compensation_outcome(i, *attempt, event)?;
                self.steps[i].status = StepStatus::Compensated;
            }
            SagaEvent::CompensationAttemptFailed {
                step,
                attempt,
                error,
                retry_at_ms,
            } => {
                let i = step_index(step)?;
                self.expect_compensation_outcome(i, *attempt, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::CompensationRetryWaiting {
                    retry_at_ms: *retry_at_ms,
                };
                s.compensation_error = Some(error.clone());
            }
            SagaEvent::CompensationFailed { step, attempt, error } => {
                let i = step_index(step)?;
                self.expect_compensation_outcome(i, *attempt, event)?;
                let s = &mut self.steps[i];
                s.status = StepStatus::CompensationFailed;
                s.compensation_error = Some(error.clone());
            }
            SagaEvent::RetryRequested {} => match status {
                SagaStatus::Stuck => {
                    self.status = SagaStatus::Compensating;
                    for s in &mut self.steps {
                        if s.status == StepStatus::CompensationFailed {
                            s.status = StepStatus::CompensationRetryWaiting { retry_at_ms: 0 };
                            s.compensation_attempts_before_retry = s.compensation_attempts;
                        }
                    }
                }
                SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Completed | SagaStatus::Compensated => {
                    return Err(illegal(status, "only a stuck saga can be retried".into()));
                }
            },
        }
        self.events += 1;
        self.settle();
        Ok(())
    }

    fn expect_action_outcome(
        &self,
        i: StepIndex,
        attempt: u32,
        allowed_while_compensating: bool,
        event: &SagaEvent,
    ) -> Result<(), IllegalEvent> {
        let fail = |reason: String| IllegalEvent {
            status: self.status,
            event: event.kind(),
            reason,
        };
        match self.status {
            SagaStatus::Running => {}
            SagaStatus::Compensating if allowed_while_compensating => {}
            SagaStatus::Compensating | SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck => {
                return Err(fail("no action outcome is expected now".into()));
            }
        }
        let s = &self.steps[i];
        if s.status != StepStatus::Running || s.attempts != attempt {
            return Err(fail(format!(
                "step `{}` has no attempt {attempt} in flight (it is {}, attempt {})",
                self.definition.steps[i].name,
                s.status.as_str(),
                s.attempts
            )));
        }
        Ok(())
    }

    fn expect_compensation_outcome(&self, i: StepIndex, attempt: u32, event: &SagaEvent) -> Result<(), IllegalEvent> {
        let s = &self.steps[i];
        if self.status != SagaStatus::Compensating
            || s.status != StepStatus::Compensating
            || s.compensation_attempts != attempt
        {
            return Err(IllegalEvent {
                status: self.status,
                event: event.kind(),
                reason: format!(
                    "step `{}` has no compensation attempt {attempt} in flight (it is {}, attempt {})",
                    self.definition.steps[i].name,
                    s.status.as_str(),
                    s.compensation_attempts
                ),
            });
        }
        Ok(())
    }

    fn begin_unwind(&mut self, cause: UnwindCause) {
        self.status = SagaStatus::Compensating;
        self.unwind = Some(cause);
        for s in &mut self.steps {
            s.status = match s.status {
                StepStatus::Pending => StepStatus::NotRun,
                // Waiting for a retry that will not come: an earlier attempt without a
                // certain outcome leaves the step possibly applied.
                StepStatus::RetryWaiting { .. } if s.uncertain => StepStatus::PossiblyApplied,
                StepStatus::RetryWaiting { .. } => StepStatus::Failed,
                other @ (StepStatus::Running
                | StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::PossiblyApplied
                | StepStatus::NotRun
                | StepStatus::Compensating
                | StepStatus::CompensationRetryWaiting { .. }
                | StepStatus::Compensated
                | StepStatus::CompensationFailed) => other,
            };
        }
    }

    fn settle(&mut self) {
        match self.status {
            SagaStatus::Running => {
                if self.steps.iter().all(|s| s.status == StepStatus::Succeeded) {
                    self.status = SagaStatus::Completed;
                }
            }
            SagaStatus::Compensating => {
                let in_flight = self
                    .steps
                    .iter()
                    .any(|s| matches!(s.status, StepStatus::Running | StepStatus::Compensating));
                if in_flight {
                    return;
                }
                let unwound = self.unwound();
                if unwound.iter().all(|&u| u) {
                    self.status = SagaStatus::Compensated;
                } else if !(0..self.steps.len()).any(|i| self.compensation_ready(i, &unwound)) {
                    self.status = SagaStatus::Stuck;
                }
            }
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck => {}
        }
    }
}
