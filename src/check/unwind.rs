//! The unwind checks: every step that ran compensated once, in reverse dependency order,
//! and no step that did not run.

use std::collections::BTreeSet;

use sagas::{Phase, SagaDefinition, SagaEvent};

use super::judge::{Check, Run, applied_steps, check, deliveries, success};

/// Every step that ran compensated once, in reverse dependency order, and no other.
pub(super) fn unwound(definition: &SagaDefinition, run: &Run, failed: Option<&str>) -> Vec<Check> {
    let applied = applied_steps(run);
    let mut once = Vec::new();
    let mut others = Vec::new();
    for step in &definition.steps {
        let started = run
            .events
            .iter()
            .filter(|e| matches!(&e.event, SagaEvent::CompensationStarted { step: s, .. } if *s == step.name));
        let succeeded = run
            .events
            .iter()
            .filter(|e| matches!(&e.event, SagaEvent::CompensationSucceeded { step: s, .. } if *s == step.name))
            .count();
        let sent = deliveries(run, &step.name, Phase::Compensation);
        let answered = sent.iter().filter(|s| success(&s.fate)).count();
        if applied.contains(&step.name) && step.compensation.is_some() {
            // A repeated delivery is the proxy's doing: count what the coordinator sent.
            let ok = succeeded == 1 && (sent.is_empty() || answered >= 1);
            once.push((step.name.clone(), ok, succeeded, sent.len()));
        } else if started.count() > 0 || !sent.is_empty() {
            others.push(step.name.clone());
        }
    }
    let detail: Vec<String> = once
        .iter()
        .map(|(s, _, done, sent)| format!("`{s}`: {done} compensation(s) succeeded, {sent} request(s)"))
        .collect();
    let mut checks = vec![
        check(
            "every step that ran is compensated once",
            once.iter().all(|(_, ok, ..)| *ok),
            if detail.is_empty() {
                "no step to compensate".into()
            } else {
                detail.join("; ")
            },
        ),
        check(
            "no step that did not run is compensated",
            others.is_empty(),
            if others.is_empty() {
                format!("not run or refused: {}", not_applied(definition, &applied, failed))
            } else {
                format!("compensated without having run: {}", others.join(", "))
            },
        ),
    ];
    checks.push(order(definition, run));
    checks
}

fn not_applied(definition: &SagaDefinition, applied: &BTreeSet<String>, failed: Option<&str>) -> String {
    let names: Vec<String> = definition
        .steps
        .iter()
        .filter(|s| !applied.contains(&s.name))
        .map(|s| {
            if Some(s.name.as_str()) == failed {
                format!("`{}` (failed)", s.name)
            } else {
                format!("`{}`", s.name)
            }
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A step's compensation starts only after those of every step depending on it finished.
fn order(definition: &SagaDefinition, run: &Run) -> Check {
    let started = |name: &str| {
        run.events.iter().find_map(|e| match &e.event {
            SagaEvent::CompensationStarted { step, .. } if step == name => Some(e.seq),
            _ => None,
        })
    };
    let finished = |name: &str| {
        run.events.iter().rev().find_map(|e| match &e.event {
            SagaEvent::CompensationSucceeded { step, .. } if step == name => Some(e.seq),
            _ => None,
        })
    };
    let mut wrong = Vec::new();
    let mut sequence: Vec<(i64, &str)> = Vec::new();
    for (i, step) in definition.steps.iter().enumerate() {
        let Some(start) = started(&step.name) else { continue };
        sequence.push((start, &step.name));
        for later in descendants(definition, i) {
            let dependent = &definition.steps[later].name;
            if let Some(done) = finished(dependent)
                && done > start
            {
                wrong.push(format!(
                    "`{}` was compensated before `{dependent}`, which depends on it",
                    step.name
                ));
            }
        }
    }
    sequence.sort();
    let names: Vec<&str> = sequence.iter().map(|(_, n)| *n).collect();
    check(
        "compensated in reverse dependency order",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("order: {}", names.join(" -> "))
        } else {
            wrong.join("; ")
        },
    )
}

fn descendants(definition: &SagaDefinition, from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = definition.steps[from].dependents.clone();
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(definition.steps[i].dependents.iter().copied());
        }
    }
    seen
}
