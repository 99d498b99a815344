//! The planner: given a saga's state, what may run now, and which event an outcome becomes.
//!
//! Pure functions over [`SagaState`]; the executor performs what they decide. Recovery is
//! the same: [`in_flight`] names the attempts a crashed coordinator left unfinished, and the
//! executor runs them again (with the same idempotency key).

use std::time::Duration;

use serde_json::Value;

use crate::definition::StepIndex;
use crate::event::{Phase, SagaEvent, StepError};
use crate::state::{SagaState, SagaStatus, StepStatus};

/// One attempt of an action or a compensation that the executor should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// The step.
    pub step: StepIndex,
    /// Its action or its compensation.
    pub phase: Phase,
    /// The attempt number to record.
    pub attempt: u32,
}

/// What the executor should do next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Attempts to start now.
    pub start: Vec<Work>,
    /// The earliest time (Unix milliseconds) a waiting retry becomes due, if any.
    pub wake_at_ms: Option<u64>,
}

/// What may start at `now_ms`.
pub fn plan(state: &SagaState, now_ms: u64) -> Plan {
    let mut out = Plan::default();
    let due = |retry_at_ms: u64, work: Work, out: &mut Plan| {
        if retry_at_ms <= now_ms {
            out.start.push(work);
        } else {
            out.wake_at_ms = Some(out.wake_at_ms.map_or(retry_at_ms, |w| w.min(retry_at_ms)));
        }
    };
    let def = state.definition();
    match state.status() {
        SagaStatus::Running => {
            for (i, s) in state.steps().iter().enumerate() {
                let work = Work {
                    step: i,
                    phase: Phase::Action,
                    attempt: s.attempts + 1,
                };
                match s.status {
                    StepStatus::Pending => {
                        let deps_done = def.steps[i]
                            .depends_on
                            .iter()
                            .all(|&d| state.steps()[d].status == StepStatus::Succeeded);
                        if deps_done {
                            out.start.push(work);
                        }
                    }
                    StepStatus::RetryWaiting { retry_at_ms } => due(retry_at_ms, work, &mut out),
                    StepStatus::Running
                    | StepStatus::Succeeded
                    | StepStatus::Failed
                    | StepStatus::PossiblyApplied
                    | StepStatus::NotRun
                    | StepStatus::Compensating
                    | StepStatus::CompensationRetryWaiting { .. }
                    | StepStatus::Compensated
                    | StepStatus::CompensationFailed => {}
                }
            }
        }
        SagaStatus::Compensating => {
            let unwound = state.unwound();
            for (i, s) in state.steps().iter().enumerate() {
                if !state.compensation_ready(i, &unwound) {
                    continue;
                }
                let work = Work {
                    step: i,
                    phase: Phase::Compensation,
                    attempt: s.compensation_attempts + 1,
                };
                match s.status {
                    StepStatus::CompensationRetryWaiting { retry_at_ms } => due(retry_at_ms, work, &mut out),
                    StepStatus::Succeeded | StepStatus::PossiblyApplied => out.start.push(work),
                    // `compensation_ready` is false for every other status.
                    StepStatus::Pending
                    | StepStatus::Running
                    | StepStatus::RetryWaiting { .. }
                    | StepStatus::Failed
                    | StepStatus::NotRun
                    | StepStatus::Compensating
                    | StepStatus::Compensated
                    | StepStatus::CompensationFailed => {}
                }
            }
        }
        SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck => {}
    }
    out
}

/// The attempts the log shows as started but not finished: after a crash they run again,
/// as the next attempt.
pub fn in_flight(state: &SagaState) -> Vec<Work> {
    state
        .steps()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.status {
            StepStatus::Running => Some(Work {
                step: i,
                phase: Phase::Action,
                attempt: s.attempts + 1,
            }),
            StepStatus::Compensating => Some(Work {
                step: i,
                phase: Phase::Compensation,
                attempt: s.compensation_attempts + 1,
            }),
            StepStatus::Pending
            | StepStatus::RetryWaiting { .. }
            | StepStatus::Succeeded
            | StepStatus::Failed
            | StepStatus::PossiblyApplied
            | StepStatus::NotRun
            | StepStatus::CompensationRetryWaiting { .. }
            | StepStatus::Compensated
            | StepStatus::CompensationFailed => None,
        })
        .collect()
}

/// The event that records the start of `work`.
pub fn started_event(state: &SagaState, work: Work) -> SagaEvent {
    let step = state.definition().steps[work.step].name.clone();
    match work.phase {
        Phase::Action => SagaEvent::StepStarted {
            step,
            attempt: work.attempt,
        },
        Phase::Compensation => SagaEvent::CompensationStarted {
            step,
            attempt: work.attempt,
        },
    }
}

/// The event that records the outcome of `work`.
///
/// A failure is retried when it is retryable, the policy has attempts left, and (for
/// actions) the saga is still running forward; otherwise it is final: an action whose
/// effect may have happened (this attempt's outcome is unknown, or an earlier one's was)
/// ends possibly applied ([`SagaEvent::StepOutcomeUnknown`]), one known not applied ends
/// failed. `jitter_sample` is a number in `[0, 1)` drawn by the caller.
pub fn outcome_event(
    state: &SagaState,
    work: Work,
    outcome: Result<Value, StepError>,
    now_ms: u64,
    jitter_sample: f64,
) -> SagaEvent {
    let def_step = &state.definition().steps[work.step];
    let step = def_step.name.clone();
    let attempt = work.attempt;
    let retry_at = |policy: &crate::RetryPolicy, used: u32, error: &StepError| {
        let wait = policy.backoff(used, jitter_sample, error.retry_after_ms.map(Duration::from_millis));
        now_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    };
    match (work.phase, outcome) {
        (Phase::Action, Ok(output)) => SagaEvent::StepSucceeded { step, attempt, output },
        (Phase::Action, Err(error)) => {
            let retry =
                error.is_retryable() && state.status() == SagaStatus::Running && attempt < def_step.retry.max_attempts;
            if retry {
                let retry_at_ms = retry_at(&def_step.retry, attempt, &error);
                SagaEvent::StepAttemptFailed {
                    step,
                    attempt,
                    error,
                    retry_at_ms,
                }
            } else if error.possibly_applied() {
                SagaEvent::StepOutcomeUnknown { step, attempt, error }
            } else if state.steps()[work.step].uncertain {
                let mut error = error;
                error.message.push_str(
                    " (an earlier attempt ended without a certain outcome, so the action may have been applied)",
                );
                SagaEvent::StepOutcomeUnknown { step, attempt, error }
            } else {
                SagaEvent::StepFailed { step, attempt, error }
            }
        }
        (Phase::Compensation, Ok(_)) => SagaEvent::CompensationSucceeded { step, attempt },
        (Phase::Compensation, Err(error)) => {
            let used = attempt.saturating_sub(state.steps()[work.step].compensation_attempts_before_retry);
            if error.is_retryable() && used < def_step.compensation_retry.max_attempts {
                let retry_at_ms = retry_at(&def_step.compensation_retry, used, &error);
                SagaEvent::CompensationAttemptFailed {
                    step,
                    attempt,
                    error,
                    retry_at_ms,
                }
            } else {
                SagaEvent::CompensationFailed { step, attempt, error }
            }
        }
    }
}
