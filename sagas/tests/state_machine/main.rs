//! The saga state machine and planner, driven by a simulated executor over random DAGs and
//! random outcome scripts (see `state_machine/sim.rs`), plus unit tests of illegal events
//! (`state_machine/illegal.rs`).
//!
//! Every run checks the same invariants ([`check_invariants`]); the properties differ in
//! what they inject.

mod illegal;
mod sim;

use proptest::prelude::*;
use sagas::{SagaEvent, SagaState, SagaStatus, StepStatus};
use sim::{Dag, Run, Script};

fn script(n_max: usize) -> impl Strategy<Value = Script> {
    let step = proptest::option::weighted(0.3, 0..n_max);
    let moment = proptest::option::weighted(0.2, 0..24usize);
    (
        (step.clone(), step.clone(), step.clone(), step),
        moment.clone(),
        moment,
        proptest::collection::vec(any::<u32>(), 0..300),
    )
        .prop_map(
            |((fail_step, exhaust_step, uncertain_step, stuck_step), cancel_after, crash_after, tape)| Script {
                fail_step,
                exhaust_step,
                uncertain_step,
                stuck_step,
                cancel_after,
                crash_after,
                tape,
            },
        )
}

/// The name of the step an event is about, if any.
fn step_of(event: &SagaEvent) -> Option<&str> {
    match event {
        SagaEvent::StepStarted { step, .. }
        | SagaEvent::StepSucceeded { step, .. }
        | SagaEvent::StepAttemptFailed { step, .. }
        | SagaEvent::StepFailed { step, .. }
        | SagaEvent::StepOutcomeUnknown { step, .. }
        | SagaEvent::CompensationStarted { step, .. }
        | SagaEvent::CompensationSucceeded { step, .. }
        | SagaEvent::CompensationAttemptFailed { step, .. }
        | SagaEvent::CompensationFailed { step, .. } => Some(step),
        SagaEvent::CancelRequested { .. } | SagaEvent::RetryRequested {} => None,
    }
}

/// The steps that depend on `step`, directly or not.
fn descendants(run: &Run, step: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut todo = run.def.steps[step].dependents.clone();
    while let Some(d) = todo.pop() {
        if !out.contains(&d) {
            out.push(d);
            todo.extend(&run.def.steps[d].dependents);
        }
    }
    out
}

/// The invariants every run keeps, whatever was injected:
///
/// 1. The saga ends `Completed` with every step succeeded exactly when no step failed and no
///    cancel was asked; otherwise it ends `Compensated`, with nothing in flight, every step
///    whose effect may have happened (an attempt succeeded, or one ended without a certain
///    outcome) and that has a compensation compensated exactly once, and every other step
///    (refused, never delivered, never run) never compensated.
/// 2. No step starts once the saga began to unwind (after the first `StepFailed`,
///    `StepOutcomeUnknown` or `CancelRequested`), except that recovery after a crash re-runs
///    an action attempt that was in flight.
/// 3. Compensations run in reverse dependency order: a step's compensation starts only after
///    every (transitive) dependent whose effect may have happened and that has a
///    compensation was compensated, and never while an action is in flight.
/// 4. The saga was `Stuck` only if a compensation was made to fail, and then the operator's
///    `RetryRequested` is in the log, after that compensation's `CompensationFailed`.
/// 5. Replaying the log gives, after every event, the live state of that moment.
fn check_invariants(run: &Run, script: &Script) -> Result<(), TestCaseError> {
    let n = run.def.steps.len();
    let events = &run.events;
    let index = |name: &str| run.def.step_index(name).expect("events name known steps");
    let position = |pred: &dyn Fn(&SagaEvent) -> bool| events.iter().position(pred);
    let unwind_at = position(&|e| {
        matches!(
            e,
            SagaEvent::StepFailed { .. } | SagaEvent::StepOutcomeUnknown { .. } | SagaEvent::CancelRequested { .. }
        )
    });
    // Whether step `i`'s effect may have happened, as its outcomes say: one succeeded, or
    // one ended without a certain outcome.
    let affected = |i: usize| {
        events.iter().any(|e| match e {
            SagaEvent::StepSucceeded { step, .. } | SagaEvent::StepOutcomeUnknown { step, .. } => index(step) == i,
            SagaEvent::StepAttemptFailed { step, error, .. } | SagaEvent::StepFailed { step, error, .. } => {
                index(step) == i && error.possibly_applied()
            }
            _ => false,
        })
    };
    let compensations = |i: usize, done: bool| {
        events
            .iter()
            .filter(|e| match e {
                SagaEvent::CompensationSucceeded { step, .. } => done && index(step) == i,
                SagaEvent::CompensationStarted { step, .. } => !done && index(step) == i,
                _ => false,
            })
            .count()
    };
    let steps = run.state.steps();

    // 1. The final status.
    match run.state.status() {
        SagaStatus::Completed => {
            prop_assert!(unwind_at.is_none(), "completed although the saga unwound");
            prop_assert!(steps.iter().all(|s| s.status == StepStatus::Succeeded), "{steps:?}");
        }
        SagaStatus::Compensated => {
            prop_assert!(
                unwind_at.is_some(),
                "compensated although nothing failed and no cancel was asked"
            );
            for (i, s) in steps.iter().enumerate() {
                let compensated = run.def.steps[i].compensation.is_some();
                match (affected(i), compensated) {
                    (true, true) => {
                        prop_assert_eq!(s.status, StepStatus::Compensated, "step {}", i);
                        prop_assert_eq!(compensations(i, true), 1, "step {} compensated once", i);
                    }
                    (true, false) => prop_assert!(
                        matches!(s.status, StepStatus::Succeeded | StepStatus::PossiblyApplied),
                        "step {} is {:?}",
                        i,
                        s.status
                    ),
                    (false, _) => {
                        prop_assert!(
                            matches!(s.status, StepStatus::Failed | StepStatus::NotRun),
                            "step {} is {:?}",
                            i,
                            s.status
                        );
                        prop_assert_eq!(compensations(i, false), 0, "step {} was never applied", i);
                    }
                }
            }
        }
        other @ (SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Stuck) => {
            prop_assert!(false, "the run ended {other}")
        }
    }

    // 2. Nothing starts once the saga unwinds (but a crash may re-run what was in flight).
    if let Some(at) = unwind_at
        && !run.crashed
    {
        let late = events[at..].iter().find(|e| matches!(e, SagaEvent::StepStarted { .. }));
        prop_assert!(late.is_none(), "{late:?} after the unwind began at event {at}");
    }

    // 3. Reverse dependency order, and no compensation while an action runs.
    let mut state = SagaState::new(run.def.clone());
    for (p, event) in events.iter().enumerate() {
        if let SagaEvent::StepStarted { step, .. } = event
            && state.status() != SagaStatus::Running
        {
            let rerun = state.steps()[index(step)].status == StepStatus::Running;
            prop_assert!(
                rerun,
                "{} started at event {} although the saga is {}",
                step,
                p,
                state.status()
            );
        }
        if let SagaEvent::CompensationStarted { step, .. } = event {
            prop_assert!(
                !state.action_in_flight(),
                "compensation of {step} started while an action runs"
            );
            for d in descendants(run, index(step)) {
                if affected(d) && run.def.steps[d].compensation.is_some() {
                    let name = &run.def.steps[d].name;
                    let done = events[..p]
                        .iter()
                        .any(|e| matches!(e, SagaEvent::CompensationSucceeded { step, .. } if step == name));
                    prop_assert!(
                        done,
                        "compensation of {} started (event {}) before its dependent {} was compensated",
                        step,
                        p,
                        name
                    );
                }
            }
        }
        // 5. Replay matches the live state after every event.
        state
            .apply(event)
            .map_err(|e| TestCaseError::fail(format!("replay refused event {p}: {e}")))?;
        let (status, live_steps) = &run.snapshots[p];
        prop_assert_eq!(state.status(), *status, "status after event {}", p);
        prop_assert_eq!(state.steps(), live_steps.as_slice(), "steps after event {}", p);
    }
    let replayed = SagaState::replay(run.def.clone(), events).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(replayed.status(), run.state.status());
    prop_assert_eq!(replayed.steps(), run.state.steps());
    prop_assert_eq!(replayed.unwind_cause(), run.state.unwind_cause());
    prop_assert_eq!(replayed.event_count(), events.len() as u64);

    // 4. Stuck only when made so, and then retried.
    let retry_at = position(&|e| matches!(e, SagaEvent::RetryRequested {}));
    prop_assert_eq!(run.was_stuck, retry_at.is_some());
    if let Some(retry_at) = retry_at {
        let stuck = script.stuck_step.map(|s| run.def.steps[s % n].name.clone());
        prop_assert!(stuck.is_some(), "stuck although no compensation was made to fail");
        let failed = position(&|e| matches!(e, SagaEvent::CompensationFailed { .. }));
        prop_assert!(
            failed.is_some_and(|f| f < retry_at),
            "no CompensationFailed before the retry"
        );
        prop_assert_eq!(step_of(&events[failed.unwrap_or(0)]), stuck.as_deref());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any DAG, any interleaving, any mix of injected failures and cancels: the run settles
    /// (no livelock, no deadlock, no illegal event from the planner) and keeps the invariants.
    #[test]
    fn random_runs_keep_the_invariants(dag in sim::dag(), script in script(8)) {
        let run = sim::run(sim::definition(&dag), &script);
        check_invariants(&run, &script)?;
    }

    /// Without injected failures or cancels the saga completes, whatever the transient
    /// failures and interleaving.
    #[test]
    fn without_failures_the_saga_completes(dag in sim::dag(), tape in proptest::collection::vec(any::<u32>(), 0..300)) {
        let script = Script { tape, ..Script::default() };
        let run = sim::run(sim::definition(&dag), &script);
        check_invariants(&run, &script)?;
        prop_assert_eq!(run.state.status(), SagaStatus::Completed);
    }

    /// A cancel while the saga runs (before it can have completed: a step needs two events)
    /// ends `Compensated`.
    #[test]
    fn a_cancel_while_running_ends_compensated(dag in sim::dag(), at in 0..16usize, tape in proptest::collection::vec(any::<u32>(), 0..300)) {
        let cancel_after = at % (2 * dag.deps.len());
        let script = Script { cancel_after: Some(cancel_after), tape, ..Script::default() };
        let run = sim::run(sim::definition(&dag), &script);
        check_invariants(&run, &script)?;
        prop_assert_eq!(run.state.status(), SagaStatus::Compensated);
        prop_assert!(run.events.iter().any(|e| matches!(e, SagaEvent::CancelRequested { .. })), "no cancel was logged");
        prop_assert!(matches!(run.state.unwind_cause(), Some(sagas::UnwindCause::Cancelled { .. })), "unwound for {:?}", run.state.unwind_cause());
    }

    /// A compensation that fails for good makes the saga `Stuck`; after the operator's
    /// `RetryRequested {}` the compensations succeed and it ends `Compensated`. The DAG is
    /// made so that this must happen: step 0 has a compensation, the last step depends on it
    /// and fails.
    #[test]
    fn a_stuck_saga_retried_ends_compensated(dag in sim::dag_sized(2..=8), tape in proptest::collection::vec(any::<u32>(), 0..300)) {
        let last = dag.deps.len() - 1;
        let mut dag: Dag = dag;
        dag.compensated[0] = true;
        if !dag.deps[last].contains(&0) {
            dag.deps[last].insert(0, 0);
        }
        let script = Script { fail_step: Some(last), stuck_step: Some(0), tape, ..Script::default() };
        let run = sim::run(sim::definition(&dag), &script);
        check_invariants(&run, &script)?;
        prop_assert!(run.was_stuck, "the saga never got stuck");
        prop_assert_eq!(run.state.status(), SagaStatus::Compensated);
        let s0 = &run.state.steps()[0];
        prop_assert!(s0.compensation_attempts_before_retry >= 1 && s0.compensation_attempts > s0.compensation_attempts_before_retry);
    }

    /// A step whose every attempt ends without a certain outcome ends possibly applied; the
    /// saga unwinds and compensates it (once, after its dependents, which never ran) like a
    /// succeeded step. A step that is never delivered fails and is never compensated.
    #[test]
    fn uncertain_outcomes_are_compensated_and_undelivered_ones_are_not(
        dag in sim::dag(),
        which in 0..8usize,
        undelivered in any::<bool>(),
        tape in proptest::collection::vec(any::<u32>(), 0..300),
    ) {
        let step = which % dag.deps.len();
        let mut dag: Dag = dag;
        dag.compensated[step] = true;
        let script = if undelivered {
            Script { exhaust_step: Some(step), tape, ..Script::default() }
        } else {
            Script { uncertain_step: Some(step), tape, ..Script::default() }
        };
        let run = sim::run(sim::definition(&dag), &script);
        check_invariants(&run, &script)?;
        prop_assert_eq!(run.state.status(), SagaStatus::Compensated);
        let s = &run.state.steps()[step];
        let started = run.events.iter().any(|e| matches!(e, SagaEvent::CompensationStarted { step: name, .. } if *name == sim::step_name(step)));
        if undelivered {
            prop_assert_eq!(s.status, StepStatus::Failed);
            prop_assert!(!started, "an action never delivered was compensated");
        } else {
            prop_assert_eq!(s.status, StepStatus::Compensated);
            prop_assert!(s.output.is_none() && s.uncertain);
            let unknown = run.events.iter().any(|e| matches!(e, SagaEvent::StepOutcomeUnknown { step: name, .. } if *name == sim::step_name(step)));
            prop_assert!(unknown, "no StepOutcomeUnknown in the log");
        }
    }
}
