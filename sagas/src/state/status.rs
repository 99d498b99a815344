//! The statuses a saga and its steps go through, a step's state, and why a saga unwound:
//! the values [`SagaState`](super::SagaState) is made of.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::StepError;

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Steps are running forward.
    Running,
    /// A step failed or the saga was cancelled; compensations are running.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Every step that succeeded or was possibly applied was compensated.
    Compensated,
    /// A compensation failed for good; an operator must retry the saga.
    Stuck,
}

impl SagaStatus {
    /// Every status, in life order.
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Stuck,
    ];

    /// The status as written in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

    /// Parses [`SagaStatus::as_str`]'s output.
    pub fn parse(s: &str) -> Option<SagaStatus> {
        SagaStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed or compensated: nothing will ever happen to the saga again.
    pub fn is_final(self) -> bool {
        match self {
            SagaStatus::Completed | SagaStatus::Compensated => true,
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Stuck => false,
        }
    }

    /// Final or stuck: nothing happens without an operator.
    pub fn is_settled(self) -> bool {
        match self {
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Stuck => true,
            SagaStatus::Running | SagaStatus::Compensating => false,
        }
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// An attempt is in flight.
    Running,
    /// An attempt failed; the next starts at `retry_at_ms`.
    RetryWaiting {
        /// When the next attempt may start (Unix milliseconds).
        retry_at_ms: u64,
    },
    /// The action succeeded.
    Succeeded,
    /// The action failed for good, known not applied.
    Failed,
    /// The action failed for good without a certain outcome: its effect may have
    /// happened, and it is compensated like a succeeded step when the saga unwinds.
    PossiblyApplied,
    /// The saga unwound before this step could start.
    NotRun,
    /// A compensation attempt is in flight.
    Compensating,
    /// A compensation attempt failed; the next starts at `retry_at_ms`.
    CompensationRetryWaiting {
        /// When the next attempt may start (Unix milliseconds).
        retry_at_ms: u64,
    },
    /// The compensation succeeded.
    Compensated,
    /// The compensation failed for good.
    CompensationFailed,
}

impl StepStatus {
    /// The status as shown to users (waiting for a retry shows as running or compensating).
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running | StepStatus::RetryWaiting { .. } => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::PossiblyApplied => "possibly_applied",
            StepStatus::NotRun => "not_run",
            StepStatus::Compensating | StepStatus::CompensationRetryWaiting { .. } => "compensating",
            StepStatus::Compensated => "compensated",
            StepStatus::CompensationFailed => "compensation_failed",
        }
    }
}

/// The state of one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepState {
    /// Where the step is.
    pub status: StepStatus,
    /// Action attempts started so far.
    pub attempts: u32,
    /// The action's output, once it succeeded.
    pub output: Option<Value>,
    /// The last action error.
    pub error: Option<StepError>,
    /// Whether an action attempt ended without a certain outcome (its effect may have
    /// happened): then the step is possibly applied unless an attempt succeeds, even if a
    /// later one is refused.
    pub uncertain: bool,
    /// Compensation attempts started so far (across operator retries).
    pub compensation_attempts: u32,
    /// The last compensation error.
    pub compensation_error: Option<StepError>,
    /// Compensation attempts used before the last operator retry (they do not count
    /// against the retry policy any more).
    pub compensation_attempts_before_retry: u32,
}

impl StepState {
    pub(super) fn new() -> StepState {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            uncertain: false,
            compensation_attempts: 0,
            compensation_error: None,
            compensation_attempts_before_retry: 0,
        }
    }
}

/// Why a saga unwound.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum UnwindCause {
    /// A step failed for good.
    StepFailed {
        /// The step.
        step: String,
        /// Its last error.
        error: StepError,
    },
    /// The saga was cancelled.
    Cancelled {
        /// The reason given.
        reason: String,
    },
}

impl std::fmt::Display for UnwindCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnwindCause::StepFailed { step, error } => write!(f, "step `{step}` failed: {error}"),
            UnwindCause::Cancelled { reason } => write!(f, "cancelled: {reason}"),
        }
    }
}
