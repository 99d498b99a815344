//! The cases `geosaga check` runs and how each is judged: pure functions of what the proxy
//! recorded and what the coordinator logged, so that every verdict can be shown with its
//! evidence.

use std::collections::BTreeSet;

use sagas::{Phase, SagaDefinition, SagaEvent, SagaStatus, StepAction};
use serde::Serialize;

use super::proxy::{Fate, Plan, Repeat, Seen};
use coordinator::SagaView;
use coordinator::store::StoredEvent;

/// One way of running the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Case {
    /// Nothing done to it.
    Completes,
    /// The action of this step refused with a business 4xx.
    FailsAt(String),
    /// Every action (and, while unwinding from a failure at the last step, every
    /// compensation) delivered twice.
    Repeated { repeat: Repeat, unwinding: bool },
    /// The first answer of this step's action lost after the participant applied it.
    AnswerLost(String),
    /// Every answer of this step's action lost: its retries run out.
    AnswersLost(String),
    /// This step's action held back until after its compensation.
    LateAction(String),
    /// The coordinator restarted when the n-th action (from 1) arrived.
    Restart(usize),
}

impl Case {
    /// Every case for `definition`; `actions` is how many action deliveries the plain run
    /// made (one restart before each).
    pub fn all(definition: &SagaDefinition, actions: usize) -> Vec<Case> {
        let names = || definition.steps.iter().map(|s| s.name.clone());
        let http = || {
            definition
                .steps
                .iter()
                .filter(|s| matches!(s.action, StepAction::Http(_)))
                .map(|s| s.name.clone())
        };
        let mut cases = vec![Case::Completes];
        cases.extend(names().map(Case::FailsAt));
        for repeat in [Repeat::Sequential, Repeat::Concurrent] {
            cases.push(Case::Repeated {
                repeat,
                unwinding: false,
            });
            if definition.steps.len() > 1 {
                cases.push(Case::Repeated {
                    repeat,
                    unwinding: true,
                });
            }
        }
        cases.extend(http().map(Case::AnswerLost));
        cases.extend(http().map(Case::AnswersLost));
        cases.extend(
            definition
                .steps
                .iter()
                .filter(|s| {
                    matches!(s.action, StepAction::Http(_)) && matches!(s.compensation, Some(StepAction::Http(_)))
                })
                .map(|s| Case::LateAction(s.name.clone())),
        );
        cases.extend((1..=actions).map(Case::Restart));
        cases
    }

    /// What the case is called in the report.
    pub fn title(&self) -> String {
        match self {
            Case::Completes => "completes as written".into(),
            Case::FailsAt(step) => format!("unwinds when `{step}` is refused"),
            Case::Repeated { repeat, unwinding } => format!(
                "every {} delivered twice, {}",
                if *unwinding {
                    "action and compensation"
                } else {
                    "action"
                },
                match (repeat, unwinding) {
                    (Repeat::Sequential, false) => "in sequence",
                    (Repeat::Concurrent, false) => "concurrently",
                    (Repeat::Sequential, true) => "in sequence, unwinding from the last step",
                    (Repeat::Concurrent, true) => "concurrently, unwinding from the last step",
                }
            ),
            Case::AnswerLost(step) => format!("the answer of `{step}` lost once after it applied"),
            Case::AnswersLost(step) => format!("every answer of `{step}` lost: its retries run out"),
            Case::LateAction(step) => format!("the action of `{step}` arrives after its compensation"),
            Case::Restart(n) => format!("the coordinator restarts when action {n} arrives"),
        }
    }

    /// The step that fails (refused at the proxy, or by the coordinator's fault injection
    /// for a region step), if the case makes one fail.
    pub fn failing_step<'d>(&self, definition: &'d SagaDefinition) -> Option<&'d str> {
        match self {
            Case::FailsAt(step) => definition
                .steps
                .iter()
                .find(|s| &s.name == step)
                .map(|s| s.name.as_str()),
            Case::Repeated { unwinding: true, .. } => definition
                .topological_order()
                .last()
                .map(|&i| definition.steps[i].name.as_str()),
            _ => None,
        }
    }

    /// What the proxy does in this case.
    pub fn plan(&self, definition: &SagaDefinition) -> Plan {
        let refuse = self.failing_step(definition).map(str::to_owned);
        match self {
            Case::Completes | Case::FailsAt(_) => Plan {
                refuse,
                ..Plan::default()
            },
            Case::Repeated { repeat, .. } => Plan {
                refuse,
                repeat: Some(*repeat),
                ..Plan::default()
            },
            Case::AnswerLost(step) => Plan {
                drop_answers: Some((step.clone(), 1)),
                ..Plan::default()
            },
            Case::AnswersLost(step) => Plan {
                drop_answers: Some((step.clone(), u32::MAX)),
                ..Plan::default()
            },
            Case::LateAction(step) => Plan {
                late: Some(step.clone()),
                ..Plan::default()
            },
            Case::Restart(n) => Plan {
                hold_action: Some(*n),
                ..Plan::default()
            },
        }
    }
}

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

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        detail: detail.into(),
    }
}

fn note(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        verdict: Verdict::Note,
        detail: detail.into(),
    }
}

/// The deliveries of a step's action or compensation (verify reads excluded).
fn deliveries<'r>(run: &'r Run, step: &str, phase: Phase) -> Vec<&'r Seen> {
    run.seen
        .iter()
        .filter(|s| s.step == step && s.phase == Some(phase))
        .collect()
}

/// The verify reads of a step, in order.
fn verifies<'r>(run: &'r Run, step: &str) -> Vec<&'r Seen> {
    run.seen
        .iter()
        .filter(|s| s.step == step && s.phase.is_none())
        .collect()
}

fn answer_text(fate: &Fate) -> String {
    match fate.answer() {
        Some((status, body)) => format!("{status} {body}"),
        None => format!("{fate:?}"),
    }
}

fn success(fate: &Fate) -> bool {
    matches!(fate, Fate::Answered { status, .. } if (200..300).contains(status))
}

/// Steps whose action succeeded or ended possibly applied: those an unwind compensates.
fn applied_steps(run: &Run) -> BTreeSet<String> {
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

/// Every step that ran compensated once, in reverse dependency order, and no other.
fn unwound(definition: &SagaDefinition, run: &Run, failed: Option<&str>) -> Vec<Check> {
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

/// Copies of one delivery got the same answer, and the verify read did not change across a
/// repeat (reads come in pairs: after the first delivery, after the repeat).
fn repeats(run: &Run) -> Vec<Check> {
    let mut checks = Vec::new();
    let copies: Vec<&Seen> = run
        .seen
        .iter()
        .filter(|s| s.note.as_deref().is_some_and(|n| n.contains("copy")))
        .collect();
    if !copies.is_empty() {
        let mut differ = Vec::new();
        for first in copies.iter().filter(|s| s.note.as_deref() == Some("first copy")) {
            for other in copies.iter().filter(|s| s.key == first.key && s.seq != first.seq) {
                if other.fate.answer() != first.fate.answer() {
                    differ.push(format!(
                        "`{}` {}: {} then {}",
                        first.step,
                        first.phase.map(|p| p.as_str()).unwrap_or_default(),
                        answer_text(&first.fate),
                        answer_text(&other.fate)
                    ));
                }
            }
        }
        checks.push(check(
            "every copy gets the same answer",
            differ.is_empty(),
            if differ.is_empty() {
                format!("{} copies compared", copies.len())
            } else {
                differ.join("; ")
            },
        ));
    }
    let steps: BTreeSet<&str> = run
        .seen
        .iter()
        .filter(|s| s.phase.is_none())
        .map(|s| s.step.as_str())
        .collect();
    let repeated = !copies.is_empty() || run.seen.iter().any(|s| matches!(s.fate, Fate::AnswerDropped { .. }));
    if repeated
        && !run
            .seen
            .iter()
            .any(|s| s.note.as_deref().is_some_and(|n| n.contains("held-back")))
    {
        for step in steps {
            let reads = verifies(run, step);
            let pairs: Vec<(&Seen, &Seen)> = reads
                .chunks(2)
                .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
                .collect();
            let changed: Vec<String> = pairs
                .iter()
                .filter(|(a, b)| a.fate.answer() != b.fate.answer())
                .map(|(a, b)| format!("{} then {}", answer_text(&a.fate), answer_text(&b.fate)))
                .collect();
            checks.push(check(
                &format!("`{step}` applied once (its verify does not change on a repeat)"),
                changed.is_empty() && !pairs.is_empty(),
                if changed.is_empty() {
                    format!("{} reads, pairwise equal", reads.len())
                } else {
                    changed.join("; ")
                },
            ));
        }
    }
    checks
}

/// The compensation of an action that never arrived changes nothing; the late action is
/// refused and changes nothing.
fn late(run: &Run, step: &str) -> Vec<Check> {
    let compensation = deliveries(run, step, Phase::Compensation);
    let late = run
        .seen
        .iter()
        .find(|s| s.note.as_deref().is_some_and(|n| n.contains("held-back")));
    let mut checks = vec![check(
        "the compensation of an action that never arrived succeeds",
        compensation.iter().any(|s| success(&s.fate)),
        compensation
            .iter()
            .map(|s| answer_text(&s.fate))
            .collect::<Vec<_>>()
            .join("; "),
    )];
    match late {
        Some(late) => checks.push(check(
            "the late action is refused",
            late.fate
                .answer()
                .is_some_and(|(status, _)| (400..500).contains(&status)),
            answer_text(&late.fate),
        )),
        None => checks.push(check(
            "the late action is refused",
            false,
            "the held-back action was never delivered",
        )),
    }
    let reads = verifies(run, step);
    if let [before, after_compensation, after_late] = reads.as_slice() {
        checks.push(check(
            "neither changes what verify reads",
            before.fate.answer() == after_compensation.fate.answer()
                && after_compensation.fate.answer() == after_late.fate.answer(),
            format!(
                "{} / {} / {}",
                answer_text(&before.fate),
                answer_text(&after_compensation.fate),
                answer_text(&after_late.fate)
            ),
        ));
    } else {
        checks.push(note(
            "neither changes what verify reads",
            format!("`{step}` has no verify"),
        ));
    }
    checks
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
