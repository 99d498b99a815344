//! A saga's timeline: every attempt of every action and compensation, with when it started,
//! how long it took, how it ended and what the participant answered, read from the event
//! log ([`build`], pure), and drawn as a table with a bar per attempt ([`render`]).

use maud::{Markup, html};
use sagas::{Phase, SagaEvent, StepError};

use super::page;
use super::tone::{self, AttemptOutcome};
use crate::store::StoredEvent;

/// One attempt of a step's action or compensation.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The step.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// Its number, from 1.
    pub attempt: u32,
    /// When its start was written (Unix ms).
    pub started_ms: i64,
    /// When its outcome was written; `None` while in flight.
    pub ended_ms: Option<i64>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Why it failed.
    pub error: Option<StepError>,
}

/// A line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// An attempt.
    Attempt(Attempt),
    /// Someone cancelled the saga.
    Cancelled {
        /// When.
        at_ms: i64,
        /// Why, as given.
        reason: String,
    },
    /// An operator asked a stuck saga to retry its compensations.
    OperatorRetry {
        /// When.
        at_ms: i64,
    },
}

/// The timeline of a log, in the order things started.
pub fn build(events: &[StoredEvent]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for stored in events {
        let at = stored.at_ms;
        let (step, phase, attempt, outcome, error) = match &stored.event {
            SagaEvent::StepStarted { step, attempt } | SagaEvent::CompensationStarted { step, attempt } => {
                let phase = if matches!(stored.event, SagaEvent::CompensationStarted { .. }) {
                    Phase::Compensation
                } else {
                    Phase::Action
                };
                entries.push(Entry::Attempt(Attempt {
                    step: step.clone(),
                    phase,
                    attempt: *attempt,
                    started_ms: at,
                    ended_ms: None,
                    outcome: AttemptOutcome::InFlight,
                    error: None,
                }));
                continue;
            }
            SagaEvent::StepSucceeded { step, attempt, .. } => {
                (step, Phase::Action, *attempt, AttemptOutcome::Succeeded, None)
            }
            SagaEvent::StepAttemptFailed {
                step, attempt, error, ..
            } => (step, Phase::Action, *attempt, AttemptOutcome::WillRetry, Some(error)),
            SagaEvent::StepFailed { step, attempt, error } => {
                (step, Phase::Action, *attempt, AttemptOutcome::Failed, Some(error))
            }
            SagaEvent::StepOutcomeUnknown { step, attempt, error } => {
                (step, Phase::Action, *attempt, AttemptOutcome::Unknown, Some(error))
            }
            SagaEvent::CompensationSucceeded { step, attempt } => {
                (step, Phase::Compensation, *attempt, AttemptOutcome::Succeeded, None)
            }
            SagaEvent::CompensationAttemptFailed {
                step, attempt, error, ..
            } => (
                step,
                Phase::Compensation,
                *attempt,
                AttemptOutcome::WillRetry,
                Some(error),
            ),
            SagaEvent::CompensationFailed { step, attempt, error } => {
                (step, Phase::Compensation, *attempt, AttemptOutcome::Failed, Some(error))
            }
            SagaEvent::CancelRequested { reason } => {
                entries.push(Entry::Cancelled {
                    at_ms: at,
                    reason: reason.clone(),
                });
                continue;
            }
            SagaEvent::RetryRequested {} => {
                entries.push(Entry::OperatorRetry { at_ms: at });
                continue;
            }
        };
        let open = entries.iter_mut().rev().find_map(|e| match e {
            Entry::Attempt(a)
                if a.step == *step && a.phase == phase && a.attempt == attempt && a.ended_ms.is_none() =>
            {
                Some(a)
            }
            Entry::Attempt(_) | Entry::Cancelled { .. } | Entry::OperatorRetry { .. } => None,
        });
        match open {
            Some(a) => {
                a.ended_ms = Some(at);
                a.outcome = outcome;
                a.error = error.cloned();
            }
            // An outcome without its start (not written by this engine): shown as it is.
            None => entries.push(Entry::Attempt(Attempt {
                step: step.clone(),
                phase,
                attempt,
                started_ms: at,
                ended_ms: Some(at),
                outcome,
                error: error.cloned(),
            })),
        }
    }
    entries
}

/// Width of an attempt's bar, in SVG units.
const BAR_WIDTH: f64 = 160.0;

/// The timeline as a table; `origin_ms` is the saga's creation, `now_ms` ends attempts in
/// flight.
pub fn render(entries: &[Entry], origin_ms: i64, now_ms: i64) -> Markup {
    let end = entries
        .iter()
        .map(|e| match e {
            Entry::Attempt(a) => a.ended_ms.unwrap_or(now_ms),
            Entry::Cancelled { at_ms, .. } | Entry::OperatorRetry { at_ms } => *at_ms,
        })
        .max()
        .unwrap_or(origin_ms);
    let span = (end - origin_ms).max(1) as f64;
    let x = |ms: i64| ((ms - origin_ms) as f64 / span * BAR_WIDTH).clamp(0.0, BAR_WIDTH);
    html! {
        div.scroll {
            table.timeline.cards {
                thead { tr {
                    th scope="col" { "Step" }
                    th scope="col" { "Attempt" }
                    th scope="col" { "Started" }
                    th scope="col" { "Took" }
                    th.hide-narrow scope="col" { span.sr { "When, relative to the saga" } }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Answer" }
                } }
                tbody {
                    @for entry in entries {
                        @match entry {
                            Entry::Attempt(a) => {
                                @let shown = tone::attempt(a.phase, a.outcome);
                                @let end = a.ended_ms.unwrap_or(now_ms);
                                tr {
                                    th scope="row" {
                                        (a.step)
                                        @if a.phase == Phase::Compensation { " " span.muted { "(compensation)" } }
                                    }
                                    td.num data-label="Attempt" { (a.attempt) }
                                    td.num data-label="Started" { "+" (page::duration(a.started_ms - origin_ms)) }
                                    td.num data-label="Took" {
                                        (page::duration(end - a.started_ms))
                                        @if a.ended_ms.is_none() { " so far" }
                                    }
                                    td.hide-narrow {
                                        svg class={ "bar " (shown.tone.class()) } width=(BAR_WIDTH) height="10" viewBox={ "0 0 " (BAR_WIDTH) " 10" } aria-hidden="true" {
                                            rect.track x="0" y="3" width=(BAR_WIDTH) height="4" {}
                                            rect.span x=(format!("{:.1}", x(a.started_ms))) y="0" height="10"
                                                width=(format!("{:.1}", (x(end) - x(a.started_ms)).max(2.0))) {}
                                        }
                                    }
                                    td data-label="Outcome" { (page::badge(shown)) }
                                    td data-label="Answer" { @if let Some(e) = &a.error { (error(e)) } }
                                }
                            }
                            Entry::Cancelled { at_ms, reason } => {
                                tr {
                                    th scope="row" colspan="2" { strong { "Cancel requested" } }
                                    td.num data-label="At" { "+" (page::duration(at_ms - origin_ms)) }
                                    td {} td.hide-narrow {} td {}
                                    td data-label="Reason" { (reason) }
                                }
                            }
                            Entry::OperatorRetry { at_ms } => {
                                tr {
                                    th scope="row" colspan="2" { strong { "Operator retry" } }
                                    td.num data-label="At" { "+" (page::duration(at_ms - origin_ms)) }
                                    td {} td.hide-narrow {} td {}
                                    td { "compensations run again" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A participant's refusal: its HTTP status, kind and message.
pub fn error(e: &StepError) -> Markup {
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    html! {
        span.error {
            @if let Some(status) = e.status { strong { (status) } " " }
            (e.message)
        }
        " " span.muted { "(" (kind) ")" }
    }
}

#[cfg(test)]
mod tests {
    use sagas::FailureKind;
    use serde_json::json;

    use super::*;

    fn at(seq: i64, at_ms: i64, event: SagaEvent) -> StoredEvent {
        StoredEvent { seq, at_ms, event }
    }

    fn refused(status: u16) -> StepError {
        StepError {
            kind: FailureKind::Permanent,
            message: "account closed".into(),
            status: Some(status),
            retry_after_ms: None,
        }
    }

    #[test]
    fn attempts_pair_their_start_with_their_outcome() {
        let step = |s: &str| s.to_owned();
        let log = [
            at(
                0,
                100,
                SagaEvent::StepStarted {
                    step: step("debit"),
                    attempt: 1,
                },
            ),
            at(
                1,
                130,
                SagaEvent::StepSucceeded {
                    step: step("debit"),
                    attempt: 1,
                    output: json!({"id": 1}),
                },
            ),
            at(
                2,
                130,
                SagaEvent::StepStarted {
                    step: step("credit"),
                    attempt: 1,
                },
            ),
            at(
                3,
                180,
                SagaEvent::StepFailed {
                    step: step("credit"),
                    attempt: 1,
                    error: refused(422),
                },
            ),
            at(
                4,
                180,
                SagaEvent::CompensationStarted {
                    step: step("debit"),
                    attempt: 1,
                },
            ),
            at(
                5,
                200,
                SagaEvent::CompensationSucceeded {
                    step: step("debit"),
                    attempt: 1,
                },
            ),
            at(6, 210, SagaEvent::CancelRequested { reason: "late".into() }),
            at(
                7,
                220,
                SagaEvent::StepStarted {
                    step: step("notify"),
                    attempt: 1,
                },
            ),
        ];
        let entries = build(&log);
        let attempts: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Attempt(a) => Some((
                    a.step.as_str(),
                    a.phase,
                    a.ended_ms.map(|e| e - a.started_ms),
                    a.outcome,
                )),
                Entry::Cancelled { .. } | Entry::OperatorRetry { .. } => None,
            })
            .collect();
        assert_eq!(
            attempts,
            [
                ("debit", Phase::Action, Some(30), AttemptOutcome::Succeeded),
                ("credit", Phase::Action, Some(50), AttemptOutcome::Failed),
                ("debit", Phase::Compensation, Some(20), AttemptOutcome::Succeeded),
                ("notify", Phase::Action, None, AttemptOutcome::InFlight),
            ]
        );
        assert!(entries.contains(&Entry::Cancelled {
            at_ms: 210,
            reason: "late".into()
        }));
        let html = render(&entries, 100, 300).into_string();
        assert!(html.contains("<strong>422</strong> account closed"), "{html}");
        assert!(html.contains("so far"), "the attempt in flight says so");
    }
}
