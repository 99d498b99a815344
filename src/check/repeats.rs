//! The checks of repeated and late deliveries: every copy gets the same answer, `verify`
//! does not change across a repeat, and an action arriving after its compensation is
//! refused and changes nothing.

use std::collections::BTreeSet;

use sagas::Phase;

use super::judge::{Check, Run, answer_text, check, deliveries, note, success, verifies};
use super::proxy::{Fate, Seen};

/// Copies of one delivery got the same answer, and the verify read did not change across a
/// repeat (reads come in pairs: after the first delivery, after the repeat).
pub(super) fn repeats(run: &Run) -> Vec<Check> {
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
pub(super) fn late(run: &Run, step: &str) -> Vec<Check> {
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
