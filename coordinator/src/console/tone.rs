//! The one place where a status becomes a colour.
//!
//! Every status the console shows (a saga's, a step's, an attempt's) maps to a [`Tone`]
//! here, by exhaustive matches: a new status does not compile until it is given one. A
//! tone is a CSS class (`t-...`, whose colours `assets/console.css` defines once) and a
//! word, so that no state is told by colour alone.

use sagas::{Phase, SagaStatus, StepStatus};

/// How a status looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Done and kept: green.
    Succeeded,
    /// Refused or failed: red.
    Failed,
    /// Undone: violet.
    Compensated,
    /// Being undone: light violet.
    Compensating,
    /// The outcome is unknown: the participant may have applied it (amber).
    PossiblyApplied,
    /// In flight: blue.
    Running,
    /// Not started yet: grey.
    Pending,
    /// Never ran (the saga unwound first): grey, dashed.
    NotRun,
    /// Needs an operator: dark red.
    Stuck,
}

impl Tone {
    /// Every tone, in the order of the legend.
    pub const ALL: [Tone; 9] = [
        Tone::Succeeded,
        Tone::Failed,
        Tone::Compensated,
        Tone::Compensating,
        Tone::PossiblyApplied,
        Tone::Running,
        Tone::Pending,
        Tone::NotRun,
        Tone::Stuck,
    ];

    /// The CSS class that colours it.
    pub fn class(self) -> &'static str {
        match self {
            Tone::Succeeded => "t-succeeded",
            Tone::Failed => "t-failed",
            Tone::Compensated => "t-compensated",
            Tone::Compensating => "t-compensating",
            Tone::PossiblyApplied => "t-possibly-applied",
            Tone::Running => "t-running",
            Tone::Pending => "t-pending",
            Tone::NotRun => "t-not-run",
            Tone::Stuck => "t-stuck",
        }
    }

    /// What the legend says of it.
    pub fn meaning(self) -> &'static str {
        match self {
            Tone::Succeeded => "succeeded",
            Tone::Failed => "failed",
            Tone::Compensated => "compensated (undone)",
            Tone::Compensating => "being compensated",
            Tone::PossiblyApplied => "possibly applied (outcome unknown; compensated on unwind)",
            Tone::Running => "running",
            Tone::Pending => "not started yet",
            Tone::NotRun => "not run",
            Tone::Stuck => "compensation failed (needs an operator)",
        }
    }
}

/// A status as shown: its tone and its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// Its colour.
    pub tone: Tone,
    /// Its word.
    pub label: &'static str,
}

/// How a step's status is shown (in the DAG, the steps table and the legend).
pub fn step(status: StepStatus) -> Shown {
    let (tone, label) = match status {
        StepStatus::Pending => (Tone::Pending, "pending"),
        StepStatus::Running => (Tone::Running, "running"),
        StepStatus::RetryWaiting { .. } => (Tone::Running, "retrying"),
        StepStatus::Succeeded => (Tone::Succeeded, "succeeded"),
        StepStatus::Failed => (Tone::Failed, "failed"),
        StepStatus::PossiblyApplied => (Tone::PossiblyApplied, "possibly applied"),
        StepStatus::NotRun => (Tone::NotRun, "not run"),
        StepStatus::Compensating => (Tone::Compensating, "compensating"),
        StepStatus::CompensationRetryWaiting { .. } => (Tone::Compensating, "compensating (retrying)"),
        StepStatus::Compensated => (Tone::Compensated, "compensated"),
        StepStatus::CompensationFailed => (Tone::Stuck, "compensation failed"),
    };
    Shown { tone, label }
}

/// How a saga's status is shown.
pub fn saga(status: SagaStatus) -> Shown {
    let tone = match status {
        SagaStatus::Running => Tone::Running,
        SagaStatus::Compensating => Tone::Compensating,
        SagaStatus::Completed => Tone::Succeeded,
        SagaStatus::Compensated => Tone::Compensated,
        SagaStatus::Stuck => Tone::Stuck,
    };
    Shown {
        tone,
        label: status.as_str(),
    }
}

/// How one attempt's outcome is shown in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Still running.
    InFlight,
    /// It succeeded.
    Succeeded,
    /// It failed and will be tried again.
    WillRetry,
    /// It failed for good.
    Failed,
    /// It failed for good without a certain outcome: the step is possibly applied.
    Unknown,
}

/// How an attempt's outcome is shown (a compensation that succeeded in the tone of a
/// compensated step).
pub fn attempt(phase: Phase, outcome: AttemptOutcome) -> Shown {
    let (tone, label) = match (phase, outcome) {
        (Phase::Action, AttemptOutcome::InFlight) => (Tone::Running, "in flight"),
        (Phase::Compensation, AttemptOutcome::InFlight) => (Tone::Compensating, "in flight"),
        (Phase::Action, AttemptOutcome::Succeeded) => (Tone::Succeeded, "succeeded"),
        (Phase::Compensation, AttemptOutcome::Succeeded) => (Tone::Compensated, "undone"),
        (Phase::Action | Phase::Compensation, AttemptOutcome::WillRetry) => (Tone::Failed, "failed, retried"),
        (Phase::Action, AttemptOutcome::Failed) => (Tone::Failed, "failed"),
        (Phase::Compensation, AttemptOutcome::Failed) => (Tone::Stuck, "failed"),
        // Only actions end so; a compensation's outcome is never recorded as unknown.
        (Phase::Action | Phase::Compensation, AttemptOutcome::Unknown) => (Tone::PossiblyApplied, "outcome unknown"),
    };
    Shown { tone, label }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statuses_the_issue_names_have_distinct_tones() {
        let shown = [
            step(StepStatus::Succeeded),
            step(StepStatus::Failed),
            step(StepStatus::Compensated),
            step(StepStatus::Running),
            step(StepStatus::NotRun),
        ];
        for (i, a) in shown.iter().enumerate() {
            for b in &shown[i + 1..] {
                assert_ne!(a.tone, b.tone, "{} and {} look alike", a.label, b.label);
            }
        }
        assert!(!shown.iter().any(|s| s.tone == Tone::PossiblyApplied));
        assert_eq!(step(StepStatus::PossiblyApplied).tone, Tone::PossiblyApplied);
        assert_eq!(
            attempt(Phase::Action, AttemptOutcome::Unknown).tone,
            Tone::PossiblyApplied
        );
    }

    #[test]
    fn every_tone_has_its_own_class() {
        let mut classes: Vec<_> = Tone::ALL.iter().map(|t| t.class()).collect();
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes.len(), Tone::ALL.len());
    }
}
