//! A pure, simulated executor: random DAG definitions, and a loop that drives a saga with
//! the planner exactly as the coordinator does, with outcomes chosen by a script.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use sagas::document::{ActionDoc, DefaultsDoc, RetryDoc, RustDoc, StepDoc};
use sagas::{
    DefinitionDoc, Phase, SagaDefinition, SagaEvent, SagaState, SagaStatus, StepError, StepState, Work, planner,
};
use serde_json::{Value, json};

/// A saga that has not settled after this many loop turns is a failure (livelock).
const MAX_TURNS: usize = 10_000;

/// A random DAG: `deps[i]` are earlier steps, `compensated[i]` says whether step `i` has a
/// compensation.
#[derive(Debug, Clone)]
pub struct Dag {
    pub deps: Vec<Vec<usize>>,
    pub compensated: Vec<bool>,
}

/// 1 to 8 steps, each depending on a random subset of the steps before it.
pub fn dag() -> impl Strategy<Value = Dag> {
    dag_sized(1..=8)
}

/// A DAG with a number of steps in `sizes`, each depending on a random subset of the steps
/// before it.
pub fn dag_sized(sizes: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Dag> {
    sizes
        .prop_flat_map(|n| {
            let masks: Vec<_> = (0..n).map(|i| proptest::collection::vec(any::<bool>(), i)).collect();
            (masks, proptest::collection::vec(any::<bool>(), n))
        })
        .prop_map(|(masks, compensated)| Dag {
            deps: masks
                .iter()
                .map(|mask| mask.iter().enumerate().filter(|(_, on)| **on).map(|(j, _)| j).collect())
                .collect(),
            compensated,
        })
}

pub fn step_name(i: usize) -> String {
    format!("s{i}")
}

fn rust(handler: &str, params: Value) -> ActionDoc {
    ActionDoc {
        http: None,
        rust: Some(RustDoc {
            handler: handler.to_owned(),
            params: Some(params),
        }),
        region: None,
        txn: None,
    }
}

/// The definition of a DAG, built as a [`DefinitionDoc`] and checked by
/// [`sagas::validate::validate`]. Actions read their dependencies' outputs and
/// compensations their own, so that the template checks see random graphs too (each such
/// compensation is a warning, never an error).
pub fn definition(dag: &Dag) -> Arc<SagaDefinition> {
    let retry = |max_attempts| RetryDoc {
        max_attempts: Some(max_attempts),
        initial_backoff_ms: Some(10),
        max_backoff_ms: Some(100),
        multiplier: Some(2.0),
        jitter: Some(true),
    };
    let steps = (0..dag.deps.len())
        .map(|i| {
            let inputs: Vec<String> = dag.deps[i]
                .iter()
                .map(|&d| format!("{{{{steps.{}.output.id}}}}", step_name(d)))
                .collect();
            StepDoc {
                name: step_name(i),
                depends_on: Some(dag.deps[i].iter().map(|&d| step_name(d)).collect()),
                action: rust("act", json!({ "inputs": inputs })),
                compensation: dag.compensated[i]
                    .then(|| rust("undo", json!(format!("{{{{steps.{}.output.id}}}}", step_name(i))))),
                retry: None,
                compensation_retry: None,
                timeout_ms: None,
                verify: None,
            }
        })
        .collect();
    let doc = DefinitionDoc {
        name: "random".to_owned(),
        description: None,
        input_schema: None,
        defaults: Some(DefaultsDoc {
            timeout_ms: Some(1000),
            retry: Some(retry(3)),
            compensation_retry: Some(retry(4)),
        }),
        steps,
    };
    let def = sagas::validate::validate(doc).unwrap_or_else(|e| panic!("a random DAG must validate: {e}"));
    let warned: Vec<&str> = def.warnings.iter().map(|w| w.path.as_str()).collect();
    let expected: Vec<String> = (0..dag.deps.len())
        .filter(|&i| dag.compensated[i])
        .map(|i| format!("/steps/{i}/compensation/rust/params"))
        .collect();
    assert_eq!(warned, expected, "one warning per compensation reading its own output");
    Arc::new(def)
}

/// What happens during a run. Step indices are taken modulo the number of steps.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The action of this step is refused (its first attempt may end without a certain
    /// outcome first, as the tape says).
    pub fail_step: Option<usize>,
    /// The action of this step is never delivered (known not applied, retried) until its
    /// attempts are used up.
    pub exhaust_step: Option<usize>,
    /// Every attempt of this step's action ends without a certain outcome (a timeout or a
    /// 5xx) until its attempts are used up: it ends possibly applied.
    pub uncertain_step: Option<usize>,
    /// The compensation of this step fails permanently until an operator retries the saga.
    pub stuck_step: Option<usize>,
    /// Request a cancel once this many events are logged, if the saga still runs.
    pub cancel_after: Option<usize>,
    /// Crash once this many events are logged: the work in flight is lost, the state is
    /// replayed from the log, and recovery re-runs what the log shows in flight.
    pub crash_after: Option<usize>,
    /// Every other choice: which work starts and finishes, transient failures, clock.
    pub tape: Vec<u32>,
}

/// Reads choices off the script's tape; once it runs out, every choice is 0 (start all
/// that is startable, finish the oldest work, succeed).
struct Tape<'t> {
    values: &'t [u32],
    at: usize,
}

impl Tape<'_> {
    fn next(&mut self, bound: usize) -> usize {
        let v = self.values.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v as usize % bound.max(1)
    }
}

/// What a run did.
pub struct Run {
    pub def: Arc<SagaDefinition>,
    pub state: SagaState,
    /// Every applied event, in order.
    pub events: Vec<SagaEvent>,
    /// The live status and step states right after each event.
    pub snapshots: Vec<(SagaStatus, Vec<StepState>)>,
    /// Whether the saga was stuck at some point (and then retried by the "operator").
    pub was_stuck: bool,
    /// Whether the executor crashed and recovered.
    pub crashed: bool,
}

impl Run {
    fn apply(&mut self, event: SagaEvent) {
        if let Err(e) = self.state.apply(&event) {
            panic!(
                "the planner produced an illegal event {event:?}: {e}\nlog: {:#?}",
                self.events
            );
        }
        self.events.push(event);
        self.snapshots.push((self.state.status(), self.state.steps().to_vec()));
    }
}

/// Drives a saga to a final status: plan, start some work, finish some work with the
/// outcome the script picks, wait for retry timers; an operator retries a stuck saga once.
pub fn run(def: Arc<SagaDefinition>, script: &Script) -> Run {
    let n = def.steps.len();
    let pick = |s: Option<usize>| s.map(|s| s % n);
    let (fail_step, exhaust_step, uncertain_step, stuck_step) = (
        pick(script.fail_step),
        pick(script.exhaust_step),
        pick(script.uncertain_step),
        pick(script.stuck_step),
    );
    let mut tape = Tape {
        values: &script.tape,
        at: 0,
    };
    let mut run = Run {
        state: SagaState::new(def.clone()),
        def,
        events: Vec::new(),
        snapshots: Vec::new(),
        was_stuck: false,
        crashed: false,
    };
    let mut in_flight: Vec<Work> = Vec::new();
    let mut transient_failures: HashMap<(usize, Phase), u32> = HashMap::new();
    let mut now = 1_000_000_u64;

    for _ in 0..MAX_TURNS {
        assert_eq!(
            sorted(planner::in_flight(&run.state)),
            sorted(in_flight.clone()),
            "recovery would see other work in flight"
        );
        if script.cancel_after.is_some_and(|k| run.events.len() >= k) && run.state.status() == SagaStatus::Running {
            run.apply(SagaEvent::CancelRequested { reason: "test".into() });
        }
        if script.crash_after.is_some_and(|k| run.events.len() >= k) && !run.crashed {
            run.crashed = true;
            in_flight.clear();
            run.state = SagaState::replay(run.def.clone(), &run.events).expect("the log replays");
            // What the coordinator does on recovery: run again, as their next attempt, the
            // attempts the log shows in flight.
            for work in planner::in_flight(&run.state) {
                run.apply(planner::started_event(&run.state, work));
                in_flight.push(work);
            }
        }
        match run.state.status() {
            SagaStatus::Completed | SagaStatus::Compensated => return run,
            SagaStatus::Stuck => {
                assert!(!run.was_stuck, "stuck again after the operator's retry");
                run.was_stuck = true;
                run.apply(SagaEvent::RetryRequested {});
                continue;
            }
            SagaStatus::Running | SagaStatus::Compensating => {}
        }
        let plan = planner::plan(&run.state, now);
        if !plan.start.is_empty() && (in_flight.is_empty() || tape.next(2) == 0) {
            let first = tape.next(plan.start.len());
            let all = tape.next(2) == 0;
            for (k, work) in plan.start.iter().enumerate() {
                if all || k == first || tape.next(2) == 1 {
                    run.apply(planner::started_event(&run.state, *work));
                    in_flight.push(*work);
                }
            }
            continue;
        }
        if !in_flight.is_empty() {
            let work = in_flight.remove(tape.next(in_flight.len()));
            let failures = transient_failures.entry((work.step, work.phase)).or_default();
            let outcome = match work.phase {
                Phase::Action if Some(work.step) == fail_step => {
                    if work.attempt == 1 && tape.next(3) == 0 {
                        Err(StepError::transient("injected 503, then refused"))
                    } else {
                        Err(StepError::permanent("injected"))
                    }
                }
                Phase::Action if Some(work.step) == exhaust_step => Err(StepError::not_delivered("injected")),
                Phase::Action if Some(work.step) == uncertain_step => Err(if tape.next(2) == 0 {
                    StepError::timeout("injected")
                } else {
                    StepError::transient("injected 503")
                }),
                Phase::Compensation if Some(work.step) == stuck_step && !run.was_stuck => {
                    Err(StepError::permanent("injected"))
                }
                _ if *failures < 2 && tape.next(4) == 3 => {
                    *failures += 1;
                    Err(match tape.next(3) {
                        0 => StepError::transient("flaky"),
                        1 => StepError::timeout("slow"),
                        _ => StepError::not_delivered("connection refused"),
                    })
                }
                Phase::Action => Ok(json!({ "id": format!("{}-{}", step_name(work.step), work.attempt) })),
                Phase::Compensation => Ok(Value::Null),
            };
            let jitter = tape.next(1000) as f64 / 1000.0;
            let event = planner::outcome_event(&run.state, work, outcome, now, jitter);
            run.apply(event);
            now += tape.next(30) as u64;
            continue;
        }
        match plan.wake_at_ms {
            Some(at) => {
                assert!(at > now, "a due retry was not planned");
                now = at;
            }
            None => panic!(
                "no progress possible while {}: {:?}",
                run.state.status(),
                run.state.steps()
            ),
        }
    }
    panic!("the saga did not settle in {MAX_TURNS} turns: {:?}", run.state.status())
}

fn sorted(mut works: Vec<Work>) -> Vec<(usize, Phase)> {
    works.sort_by_key(|w| (w.step, w.phase == Phase::Compensation));
    works.into_iter().map(|w| (w.step, w.phase)).collect()
}
