//! Saga events: the log every saga's state is folded from.
//!
//! Events are written to the store and read back after a crash, so they (and the errors
//! inside them) serialise to stable JSON. Steps are named, not numbered, so that an event
//! log reads on its own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether an action or its compensation is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    /// `action` or `compensation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        }
    }
}

/// The idempotency key of a step's action or compensation: the same across every retry and
/// every recovery, so a participant can apply each effect once.
pub fn idempotency_key(saga_id: &str, step: &str, phase: Phase) -> String {
    format!("{saga_id}:{step}:{}", phase.as_str())
}

/// How a failed attempt should be treated: whether it is retried, and whether its effect
/// may have happened ([`crate::outcome`] holds the rules that pick one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The outcome is unknown (5xx, 408, 429, a connection lost after the request may have
    /// left): retried, and possibly applied.
    Transient,
    /// The attempt ran out of time: retried, and possibly applied.
    Timeout,
    /// A refusal (other 4xx, a handler's refusal): known not applied, never retried.
    Permanent,
    /// The request never reached the participant (the connection could not be opened):
    /// known not applied, retried.
    NotDelivered,
    /// The action answered success, but its output cannot be kept (too large, or text a
    /// store cannot hold): applied, so compensated on unwind, and not retried (a retry
    /// would answer the same).
    UnusableOutput,
}

impl FailureKind {
    /// Whether retrying could help.
    pub fn is_retryable(self) -> bool {
        match self {
            FailureKind::Transient | FailureKind::Timeout | FailureKind::NotDelivered => true,
            FailureKind::Permanent | FailureKind::UnusableOutput => false,
        }
    }

    /// Whether the attempt's effect may have happened although it failed.
    pub fn possibly_applied(self) -> bool {
        match self {
            FailureKind::Transient | FailureKind::Timeout | FailureKind::UnusableOutput => true,
            FailureKind::Permanent | FailureKind::NotDelivered => false,
        }
    }

    /// The kind as written in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Timeout => "timeout",
            FailureKind::Permanent => "permanent",
            FailureKind::NotDelivered => "not_delivered",
            FailureKind::UnusableOutput => "unusable_output",
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Transient, timeout or permanent.
    pub kind: FailureKind,
    /// What happened, for a person.
    pub message: String,
    /// The HTTP status of the response, for HTTP steps that got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the participant asked to wait (`Retry-After`), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    /// A failure that may go away when tried again, and whose effect may have happened.
    pub fn transient(message: impl Into<String>) -> StepError {
        StepError {
            kind: FailureKind::Transient,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// A business failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            kind: FailureKind::Permanent,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// An attempt that ran out of time.
    pub fn timeout(message: impl Into<String>) -> StepError {
        StepError {
            kind: FailureKind::Timeout,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// A request that never reached the participant: retried, known not applied.
    pub fn not_delivered(message: impl Into<String>) -> StepError {
        StepError {
            kind: FailureKind::NotDelivered,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// An action that succeeded with an output that cannot be kept: not retried, and
    /// compensated on unwind (it was applied).
    pub fn unusable_output(message: impl Into<String>) -> StepError {
        StepError {
            kind: FailureKind::UnusableOutput,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }

    /// Whether retrying could help.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Whether the attempt's effect may have happened although it failed.
    pub fn possibly_applied(&self) -> bool {
        self.kind.possibly_applied()
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Something that happened to a saga. The saga's state is the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaEvent {
    /// An attempt of a step's action is about to run (written before it runs).
    StepStarted {
        /// The step.
        step: String,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// The action succeeded.
    StepSucceeded {
        /// The step.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// What the action returned.
        output: Value,
    },
    /// An attempt failed and will be retried at `retry_at_ms`.
    StepAttemptFailed {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: StepError,
        /// When the next attempt may start (Unix milliseconds).
        retry_at_ms: u64,
    },
    /// The action failed for good, known not applied (every attempt was refused or never
    /// delivered); the saga unwinds.
    StepFailed {
        /// The step.
        step: String,
        /// The last attempt.
        attempt: u32,
        /// Why.
        error: StepError,
    },
    /// The action failed for good without a certain outcome (an attempt timed out, lost its
    /// connection or got a 5xx): its effect may have happened. The step is possibly
    /// applied; the saga unwinds and compensates it like a succeeded step.
    StepOutcomeUnknown {
        /// The step.
        step: String,
        /// The last attempt.
        attempt: u32,
        /// The last attempt's error.
        error: StepError,
    },
    /// Someone asked for the saga to stop; it unwinds.
    CancelRequested {
        /// Why, as given.
        reason: String,
    },
    /// An attempt of a compensation is about to run.
    CompensationStarted {
        /// The step.
        step: String,
        /// Attempt number, from 1, counted across operator retries.
        attempt: u32,
    },
    /// The compensation succeeded.
    CompensationSucceeded {
        /// The step.
        step: String,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// A compensation attempt failed and will be retried.
    CompensationAttemptFailed {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: StepError,
        /// When the next attempt may start (Unix milliseconds).
        retry_at_ms: u64,
    },
    /// The compensation failed for good; the saga will be stuck.
    CompensationFailed {
        /// The step.
        step: String,
        /// The last attempt.
        attempt: u32,
        /// Why.
        error: StepError,
    },
    /// An operator asked a stuck saga to try its failed compensations again.
    RetryRequested {},
}

impl SagaEvent {
    /// The event's type, as written in the `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            SagaEvent::StepStarted { .. } => "step_started",
            SagaEvent::StepSucceeded { .. } => "step_succeeded",
            SagaEvent::StepAttemptFailed { .. } => "step_attempt_failed",
            SagaEvent::StepFailed { .. } => "step_failed",
            SagaEvent::StepOutcomeUnknown { .. } => "step_outcome_unknown",
            SagaEvent::CancelRequested { .. } => "cancel_requested",
            SagaEvent::CompensationStarted { .. } => "compensation_started",
            SagaEvent::CompensationSucceeded { .. } => "compensation_succeeded",
            SagaEvent::CompensationAttemptFailed { .. } => "compensation_attempt_failed",
            SagaEvent::CompensationFailed { .. } => "compensation_failed",
            SagaEvent::RetryRequested {} => "retry_requested",
        }
    }
}
