//! Fault injection for tests: make a step fail, or run it twice, on purpose.
//!
//! Rules are consumed as they fire, so "fail `charge` once" makes the first attempt fail and
//! lets the retry run. This is part of the public API on purpose: it is how the conformance
//! helpers prove that every saga unwinds from every step and that every action is
//! idempotent.

use std::sync::Mutex;

use sagas::{Phase, StepError};
use uuid::Uuid;

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The attempt fails with this error without running.
    Fail(StepError),
    /// The attempt runs, then its result is lost and it fails with this error (an answer
    /// that never came back: the effect happened, the coordinator cannot know it).
    RunThenFail(StepError),
    /// The attempt runs twice; the second result counts.
    Repeat,
}

#[derive(Debug, Clone)]
struct Rule {
    saga: Option<Uuid>,
    step: String,
    phase: Phase,
    fault: Fault,
    remaining: Option<u32>,
}

/// A set of injected faults, shared by every runner of a coordinator.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Injects `fault` into `step`'s `phase`, for one saga or all (`saga = None`), for the
    /// next `times` attempts (`None`: every attempt).
    pub fn inject(&self, saga: Option<Uuid>, step: &str, phase: Phase, fault: Fault, times: Option<u32>) {
        self.rules.lock().expect("faults lock").push(Rule {
            saga,
            step: step.to_owned(),
            phase,
            fault,
            remaining: times,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// The fault for this attempt, if a rule matches (consuming one use of it).
    pub fn take(&self, saga: Uuid, step: &str, phase: Phase) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("faults lock");
        let i = rules
            .iter()
            .position(|r| r.step == step && r.phase == phase && r.saga.is_none_or(|s| s == saga))?;
        let fault = rules[i].fault.clone();
        match &mut rules[i].remaining {
            Some(n) if *n <= 1 => {
                rules.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }
}
