//! Events that do not fit the saga's state are refused with `IllegalEvent`, and the state
//! is left exactly as it was.

use std::sync::Arc;

use sagas::{SagaDefinition, SagaEvent, SagaState, SagaStatus, StepError};
use serde_json::json;

/// `a` (compensated) -> `b` (compensated) -> `c`.
fn linear() -> Arc<SagaDefinition> {
    let step = |name: &str, compensated: bool| {
        let mut s = json!({"name": name, "action": {"rust": {"handler": "h"}}});
        if compensated {
            s["compensation"] = json!({"rust": {"handler": "undo"}});
        }
        s
    };
    let doc = json!({"name": "linear", "steps": [step("a", true), step("b", true), step("c", false)]});
    Arc::new(sagas::validate::validate_value(&doc).expect("valid"))
}

fn started(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::StepStarted {
        step: step.into(),
        attempt,
    }
}
fn succeeded(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::StepSucceeded {
        step: step.into(),
        attempt,
        output: json!({"id": step}),
    }
}
fn attempt_failed(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::StepAttemptFailed {
        step: step.into(),
        attempt,
        error: StepError::transient("flaky"),
        retry_at_ms: 5,
    }
}
fn failed(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::StepFailed {
        step: step.into(),
        attempt,
        error: StepError::permanent("no"),
    }
}
fn comp_started(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::CompensationStarted {
        step: step.into(),
        attempt,
    }
}
fn comp_succeeded(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::CompensationSucceeded {
        step: step.into(),
        attempt,
    }
}
fn comp_failed(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::CompensationFailed {
        step: step.into(),
        attempt,
        error: StepError::permanent("no"),
    }
}
fn cancel() -> SagaEvent {
    SagaEvent::CancelRequested { reason: "stop".into() }
}

/// `a` and `b` succeeded, `c` failed: the saga is compensating `b`.
fn unwinding() -> Vec<SagaEvent> {
    vec![
        started("a", 1),
        succeeded("a", 1),
        started("b", 1),
        succeeded("b", 1),
        started("c", 1),
        failed("c", 1),
    ]
}

/// Replays `prefix` (which must be legal), then checks that `event` is refused and that the
/// state (status, steps, unwind cause, event count) did not change.
fn assert_illegal(prefix: &[SagaEvent], event: SagaEvent, expected_status: SagaStatus) {
    let mut state = SagaState::replay(linear(), prefix).expect("the prefix is legal");
    assert_eq!(state.status(), expected_status, "after {prefix:?}");
    let before = (
        state.status(),
        state.steps().to_vec(),
        state.unwind_cause().cloned(),
        state.event_count(),
    );
    let err = state
        .apply(&event)
        .expect_err(&format!("{event:?} should be illegal after {prefix:?}"));
    assert_eq!(err.event, event.kind());
    assert_eq!(err.status, expected_status);
    assert!(!err.reason.is_empty());
    let after = (
        state.status(),
        state.steps().to_vec(),
        state.unwind_cause().cloned(),
        state.event_count(),
    );
    assert_eq!(before, after, "{event:?} changed the state although it was refused");
}

#[test]
fn step_succeeded_for_a_step_not_in_flight() {
    assert_illegal(&[], succeeded("a", 1), SagaStatus::Running);
    assert_illegal(
        &[started("a", 1), succeeded("a", 1)],
        succeeded("a", 1),
        SagaStatus::Running,
    );
    assert_illegal(
        &[started("a", 1), attempt_failed("a", 1)],
        succeeded("a", 1),
        SagaStatus::Running,
    );
    assert_illegal(&[started("a", 1)], succeeded("b", 1), SagaStatus::Running);
}

#[test]
fn step_started_after_completion() {
    let done = [
        started("a", 1),
        succeeded("a", 1),
        started("b", 1),
        succeeded("b", 1),
        started("c", 1),
        succeeded("c", 1),
    ];
    assert_illegal(&done, started("c", 2), SagaStatus::Completed);
    assert_illegal(&done, started("a", 2), SagaStatus::Completed);
    assert_illegal(&done, succeeded("c", 1), SagaStatus::Completed);
    assert_illegal(&done, comp_started("a", 1), SagaStatus::Completed);
}

#[test]
fn cancel_requested_on_a_saga_that_is_not_running() {
    let done = [
        started("a", 1),
        succeeded("a", 1),
        started("b", 1),
        succeeded("b", 1),
        started("c", 1),
        succeeded("c", 1),
    ];
    assert_illegal(&done, cancel(), SagaStatus::Completed);
    assert_illegal(&unwinding(), cancel(), SagaStatus::Compensating);
    assert_illegal(&[cancel()], cancel(), SagaStatus::Compensated);
}

#[test]
fn step_started_before_its_dependency_succeeded() {
    assert_illegal(&[], started("b", 1), SagaStatus::Running);
    assert_illegal(&[started("a", 1)], started("b", 1), SagaStatus::Running);
    assert_illegal(
        &[started("a", 1), attempt_failed("a", 1)],
        started("b", 1),
        SagaStatus::Running,
    );
    assert_illegal(
        &[started("a", 1), succeeded("a", 1)],
        started("c", 1),
        SagaStatus::Running,
    );
}

#[test]
fn wrong_attempt_numbers() {
    assert_illegal(&[], started("a", 0), SagaStatus::Running);
    assert_illegal(&[], started("a", 2), SagaStatus::Running);
    assert_illegal(&[started("a", 1)], succeeded("a", 2), SagaStatus::Running);
    assert_illegal(&[started("a", 1)], attempt_failed("a", 0), SagaStatus::Running);
    assert_illegal(
        &[started("a", 1), attempt_failed("a", 1)],
        started("a", 3),
        SagaStatus::Running,
    );
    assert_illegal(
        &[started("a", 1), attempt_failed("a", 1)],
        started("a", 1),
        SagaStatus::Running,
    );
    let compensating = [unwinding(), vec![comp_started("b", 1)]].concat();
    assert_illegal(&compensating, comp_succeeded("b", 2), SagaStatus::Compensating);
    assert_illegal(&unwinding(), comp_started("b", 2), SagaStatus::Compensating);
}

#[test]
fn no_step_starts_or_retries_once_the_saga_unwinds() {
    assert_illegal(
        &[started("a", 1), succeeded("a", 1), cancel()],
        started("b", 1),
        SagaStatus::Compensating,
    );
    let racing = [started("a", 1), succeeded("a", 1), started("b", 1), cancel()];
    assert_illegal(&racing, attempt_failed("b", 1), SagaStatus::Compensating);
}

#[test]
fn compensations_run_only_when_due() {
    let running = [started("a", 1), succeeded("a", 1)];
    assert_illegal(&running, comp_started("a", 1), SagaStatus::Running);
    // `b` depends on `a` and is not compensated yet.
    assert_illegal(&unwinding(), comp_started("a", 1), SagaStatus::Compensating);
    // `c` failed: there is nothing to compensate.
    assert_illegal(&unwinding(), comp_started("c", 1), SagaStatus::Compensating);
    // No compensation while an action is still in flight.
    let racing = [started("a", 1), succeeded("a", 1), started("b", 1), cancel()];
    assert_illegal(&racing, comp_started("a", 1), SagaStatus::Compensating);
    // An outcome for a compensation that is not running.
    assert_illegal(&unwinding(), comp_succeeded("b", 1), SagaStatus::Compensating);
}

#[test]
fn retry_requested_only_when_stuck() {
    assert_illegal(&[], SagaEvent::RetryRequested {}, SagaStatus::Running);
    assert_illegal(&unwinding(), SagaEvent::RetryRequested {}, SagaStatus::Compensating);
    assert_illegal(&[cancel()], SagaEvent::RetryRequested {}, SagaStatus::Compensated);
    let stuck = [unwinding(), vec![comp_started("b", 1), comp_failed("b", 1)]].concat();
    let mut state = SagaState::replay(linear(), &stuck).unwrap();
    assert_eq!(state.status(), SagaStatus::Stuck);
    assert_illegal(&stuck, comp_started("b", 2), SagaStatus::Stuck);
    state.apply(&SagaEvent::RetryRequested {}).unwrap();
    assert_eq!(state.status(), SagaStatus::Compensating);
}

#[test]
fn unknown_steps_are_illegal() {
    assert_illegal(&[], started("zzz", 1), SagaStatus::Running);
    assert_illegal(&unwinding(), comp_started("zzz", 1), SagaStatus::Compensating);
}

/// The legal path through the same events, for contrast: the illegal-event tests above are
/// refused for the reason they name, not because the fixture saga is broken.
#[test]
fn the_legal_paths_are_accepted() {
    let done = [
        started("a", 1),
        attempt_failed("a", 1),
        started("a", 2),
        succeeded("a", 2),
        started("b", 1),
        succeeded("b", 1),
        started("c", 1),
        succeeded("c", 1),
    ];
    assert_eq!(
        SagaState::replay(linear(), &done).unwrap().status(),
        SagaStatus::Completed
    );
    let unwound = [
        unwinding(),
        vec![
            comp_started("b", 1),
            comp_succeeded("b", 1),
            comp_started("a", 1),
            comp_succeeded("a", 1),
        ],
    ]
    .concat();
    assert_eq!(
        SagaState::replay(linear(), &unwound).unwrap().status(),
        SagaStatus::Compensated
    );
    let racing = [
        started("a", 1),
        succeeded("a", 1),
        started("b", 1),
        cancel(),
        succeeded("b", 1),
        comp_started("b", 1),
    ];
    assert_eq!(
        SagaState::replay(linear(), &racing).unwrap().status(),
        SagaStatus::Compensating
    );
}

/// Recovery after a crash re-runs, as its next attempt, an action the log shows in flight,
/// even when the saga began to unwind meanwhile (a cancel raced with the action): only the
/// action's outcome tells whether there is something to compensate. A step that was not in
/// flight still cannot start.
#[test]
fn recovery_reruns_an_action_in_flight_while_unwinding() {
    let log = [started("a", 1), succeeded("a", 1), started("b", 1), cancel()];
    let mut state = SagaState::replay(linear(), &log).unwrap();
    let works = sagas::planner::in_flight(&state);
    assert_eq!(
        works,
        [sagas::Work {
            step: 1,
            phase: sagas::Phase::Action,
            attempt: 2
        }]
    );
    let rerun = sagas::planner::started_event(&state, works[0]);
    assert_eq!(rerun, started("b", 2));
    state.apply(&rerun).expect("recovery may re-run an attempt in flight");
    assert_eq!(state.status(), SagaStatus::Compensating);
    // The re-run succeeded: `b` is compensated, then `a`.
    let outcome = sagas::planner::outcome_event(&state, works[0], Ok(json!({"id": "b"})), 0, 0.0);
    state.apply(&outcome).unwrap();
    let plan = sagas::planner::plan(&state, 0);
    assert_eq!(
        plan.start,
        [sagas::Work {
            step: 1,
            phase: sagas::Phase::Compensation,
            attempt: 1
        }]
    );
    assert_illegal(&log, started("c", 1), SagaStatus::Compensating);
}

fn outcome_unknown(step: &str, attempt: u32) -> SagaEvent {
    SagaEvent::StepOutcomeUnknown {
        step: step.into(),
        attempt,
        error: StepError::timeout("no answer"),
    }
}

/// A step whose outcome is unknown is possibly applied: the saga unwinds, its dependents
/// never start, and it is compensated like a succeeded step, before the steps it depends
/// on. The outcome is an action outcome like any: refused when no attempt is in flight.
#[test]
fn an_unknown_outcome_is_compensated_before_what_it_depends_on() {
    let log = [
        started("a", 1),
        succeeded("a", 1),
        started("b", 1),
        outcome_unknown("b", 1),
    ];
    let state = SagaState::replay(linear(), &log).unwrap();
    assert_eq!(state.status(), SagaStatus::Compensating);
    assert_eq!(state.steps()[1].status, sagas::StepStatus::PossiblyApplied);
    assert_eq!(state.steps()[2].status, sagas::StepStatus::NotRun);
    assert!(
        matches!(state.unwind_cause(), Some(sagas::UnwindCause::StepFailed { step, .. }) if step == "b"),
        "{:?}",
        state.unwind_cause()
    );
    let plan = sagas::planner::plan(&state, 0);
    assert_eq!(plan.start.len(), 1);
    assert_eq!(
        (plan.start[0].step, plan.start[0].phase),
        (1, sagas::Phase::Compensation)
    );
    assert_illegal(&log, comp_started("a", 1), SagaStatus::Compensating);
    let done = [
        log.to_vec(),
        vec![
            comp_started("b", 1),
            comp_succeeded("b", 1),
            comp_started("a", 1),
            comp_succeeded("a", 1),
        ],
    ]
    .concat();
    assert_eq!(
        SagaState::replay(linear(), &done).unwrap().status(),
        SagaStatus::Compensated
    );

    assert_illegal(&[], outcome_unknown("a", 1), SagaStatus::Running);
    assert_illegal(&log, outcome_unknown("b", 1), SagaStatus::Compensating);
}

/// An attempt without a certain outcome marks the step: refused afterwards, or cut short
/// by the unwind while it waits for a retry, it is still possibly applied. A step that
/// was only never delivered fails.
#[test]
fn one_uncertain_attempt_leaves_the_step_possibly_applied() {
    let def = linear();
    let work = |attempt| sagas::Work {
        step: 0,
        phase: sagas::Phase::Action,
        attempt,
    };
    let mut state =
        SagaState::replay(def.clone(), &[started("a", 1), attempt_failed("a", 1), started("a", 2)]).unwrap();
    let refused = sagas::planner::outcome_event(&state, work(2), Err(StepError::permanent("no")), 0, 0.0);
    assert!(matches!(refused, SagaEvent::StepOutcomeUnknown { .. }), "{refused:?}");
    state.apply(&refused).unwrap();
    assert_eq!(state.steps()[0].status, sagas::StepStatus::PossiblyApplied);

    let waiting = SagaState::replay(def.clone(), &[started("a", 1), attempt_failed("a", 1), cancel()]).unwrap();
    assert_eq!(waiting.steps()[0].status, sagas::StepStatus::PossiblyApplied);

    let undelivered = SagaEvent::StepAttemptFailed {
        step: "a".into(),
        attempt: 1,
        error: StepError::not_delivered("connection refused"),
        retry_at_ms: 5,
    };
    let mut state = SagaState::replay(def.clone(), &[started("a", 1), undelivered.clone(), started("a", 2)]).unwrap();
    let refused = sagas::planner::outcome_event(&state, work(2), Err(StepError::permanent("no")), 0, 0.0);
    assert!(matches!(refused, SagaEvent::StepFailed { .. }), "{refused:?}");
    state.apply(&refused).unwrap();
    assert_eq!(state.status(), SagaStatus::Compensated, "nothing was applied");
    let waiting = SagaState::replay(def, &[started("a", 1), undelivered, cancel()]).unwrap();
    assert_eq!(waiting.steps()[0].status, sagas::StepStatus::Failed);
}
