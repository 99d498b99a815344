//! How a run is judged: pure functions of what the proxy recorded, the `verify` reads it
//! made, and what the coordinator logged, so that every verdict can be shown with its
//! evidence. The unwind checks are in `unwind.rs`, those of repeated and late
//! deliveries in `repeats.rs`.

use std::collections::BTreeSet;

use coordinator::SagaView;
use coordinator::store::StoredEvent;
use sagas::{Phase, SagaDefinition, SagaEvent, SagaStatus};
use serde::Serialize;

use super::cases::Case;
use super::proxy::{Fate, Seen};
use super::repeats::{late, repeats};
use super::unwind::unwound;

/// What one run left behind.
pub struct Run {
    /// The saga when the wait ended.
    pub view: SagaView,
    /// Its log.
    pub events: Vec<StoredEvent>,
    /// The requests the proxies saw for it, and the verify reads.
    pub seen: Vec<Seen>,
}

/// One judged property.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Held, did not hold, or only noted.
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not.
    Fail,
    /// Nothing to hold (said why).
    Note,
}

pub(super) fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        detail: detail.into(),
    }
}

pub(super) fn note(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        verdict: Verdict::Note,
        detail: detail.into(),
    }
}

/// The deliveries of a step's action or compensation (verify reads excluded).
pub(super) fn deliveries<'r>(run: &'r Run, step: &str, phase: Phase) -> Vec<&'r Seen> {
    run.seen
        .iter()
        .filter(|s| s.step == step && s.phase == Some(phase))
        .collect()
}

/// The verify reads of a step, in order.
pub(super) fn verifies<'r>(run: &'r Run, step: &str) -> Vec<&'r Seen> {
    run.seen
        .iter()
        .filter(|s| s.step == step && s.phase.is_none())
        .collect()
}

pub(super) fn answer_text(fate: &Fate) -> String {
    match fate.answer() {
        Some((status, body)) => format!("{status} {body}"),
        None => format!("{fate:?}"),
    }
}

pub(super) fn success(fate: &Fate) -> bool {
    matches!(fate, Fate::Answered { status, .. } if (200..300).contains(status))
}

/// Steps whose action succeeded or ended possibly applied: those an unwind compensates.
pub(super) fn applied_steps(run: &Run) -> BTreeSet<String> {
    run.events
        .iter()
        .filter_map(|e| match &e.event {
            SagaEvent::StepSucceeded { step, .. } | SagaEvent::StepOutcomeUnknown { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// Judges one run of `case`; `reference` is the plain run's, once there is one.
pub fn judge(case: &Case, definition: &SagaDefinition, run: &Run, reference: Option<&Run>) -> Vec<Check> {
    let status = run.view.state.status();
    let expect = match case {
        Case::Completes | Case::AnswerLost(_) | Case::Restart(_) => SagaStatus::Completed,
        Case::Repeated { unwinding: false, .. } => SagaStatus::Completed,
        Case::FailsAt(_) | Case::Repeated { unwinding: true, .. } | Case::AnswersLost(_) | Case::LateAction(_) => {
            SagaStatus::Compensated
        }
    };
    let mut checks = vec![check(
        "ends as expected",
        status == expect,
        format!("{} (expected {})", status.as_str(), expect.as_str()),
    )];
    let keyed = keys(run);
    let requests = run.seen.iter().filter(|s| s.phase.is_some()).count();
    checks.push(check(
        "requests keyed by their saga, step and action",
        keyed.is_empty(),
        if keyed.is_empty() {
            format!("{requests} requests")
        } else {
            keyed.join("; ")
        },
    ));
    match case {
        Case::Completes => {
            let compensations: Vec<&Seen> = run
                .seen
                .iter()
                .filter(|s| s.phase == Some(Phase::Compensation))
                .collect();
            checks.push(check(
                "no compensation runs",
                compensations.is_empty(),
                format!("{} compensation requests", compensations.len()),
            ));
        }
        Case::FailsAt(_) | Case::Repeated { unwinding: true, .. } => {
            checks.extend(unwound(definition, run, case.failing_step(definition)));
        }
        Case::Repeated { .. } => {}
        Case::AnswerLost(step) => {
            let sent = deliveries(run, step, Phase::Action);
            let retried = sent.len() >= 2 && matches!(sent[0].fate, Fate::AnswerDropped { .. });
            checks.push(check(
                "retried under the same key",
                retried && sent.iter().all(|s| s.key == sent[0].key),
                format!("{} deliveries of `{step}`", sent.len()),
            ));
            if let [first, .., last] = sent.as_slice() {
                checks.push(check(
                    "the retry gets the first answer",
                    first.fate.answer() == last.fate.answer(),
                    format!("{} then {}", answer_text(&first.fate), answer_text(&last.fate)),
                ));
            }
        }
        Case::AnswersLost(step) => {
            let sent = deliveries(run, step, Phase::Action);
            checks.push(check(
                "retried under the same key",
                !sent.is_empty() && sent.iter().all(|s| s.key == sent[0].key),
                format!("{} deliveries of `{step}`, every answer dropped", sent.len()),
            ));
            checks.extend(unwound(definition, run, None));
        }
        Case::LateAction(step) => checks.extend(late(run, step)),
        Case::Restart(_) => {
            if let Some(reference) = reference {
                checks.push(same_way(run, reference));
            }
        }
    }
    checks.extend(repeats(run));
    checks
}

/// Every request carries the keys of its saga, step and phase.
fn keys(run: &Run) -> Vec<String> {
    let saga = run.view.record.id;
    run.seen
        .iter()
        .filter_map(|s| {
            let phase = s.phase?;
            let want = format!("{saga}:{}:{}", s.step, phase.as_str());
            let action = format!("{saga}:{}:action", s.step);
            (s.key != want || s.action_key != action).then(|| {
                format!(
                    "#{} `{}` has Idempotency-Key {:?} and X-Saga-Action-Key {:?}",
                    s.seq, s.step, s.key, s.action_key
                )
            })
        })
        .collect()
}

/// The run after a restart ends with the same step statuses, and the same steps answered
/// 2xx, as the plain run.
fn same_way(run: &Run, reference: &Run) -> Check {
    let statuses = |r: &Run| -> Vec<String> {
        r.view
            .state
            .definition()
            .steps
            .iter()
            .zip(r.view.state.steps())
            .map(|(d, s)| format!("{}={}", d.name, s.status.as_str()))
            .collect()
    };
    let answered = |r: &Run| -> BTreeSet<(String, &'static str)> {
        r.seen
            .iter()
            .filter(|s| success(&s.fate))
            .filter_map(|s| Some((s.step.clone(), s.phase?.as_str())))
            .collect()
    };
    let (mine, theirs) = (statuses(run), statuses(reference));
    check(
        "finishes the way the plain run did",
        mine == theirs && answered(run) == answered(reference),
        format!("steps {} (plain run: {})", mine.join(", "), theirs.join(", ")),
    )
}
