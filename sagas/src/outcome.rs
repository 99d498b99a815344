//! The outcome classifier: what one attempt's answer (or the lack of one) says about its
//! effect. Every runner uses these rules; none has its own.
//!
//! An attempt ends in one of three ways:
//!
//! - **success**: the participant said yes (HTTP 2xx). The step succeeded.
//! - **refused**: the participant said no (a 4xx other than 408 and 429, or a 3xx, which is
//!   not followed): the effect is known not to have happened. Not retried, and never
//!   compensated. [`FailureKind::Permanent`].
//! - **unknown**: nothing certain came back: the attempt timed out, the connection broke
//!   after the request may have left, or the participant answered 5xx, 408 or 429. Retried
//!   with the same idempotency key; if no attempt settles it, the step ends *possibly
//!   applied* and the saga compensates it when it unwinds. [`FailureKind::Transient`] and
//!   [`FailureKind::Timeout`].
//!
//! Two more cases are certain. A connection that could not be opened carried nothing, so
//! the participant cannot have acted ([`FailureKind::NotDelivered`]): retried like an
//! unknown outcome, but a step whose attempts all ended so (or were refused) failed without
//! effect and is not compensated. And a success whose output the coordinator cannot keep
//! (too large, text no store can hold) was applied ([`FailureKind::UnusableOutput`]): not
//! retried, and compensated like any applied step.
//!
//! [`FailureKind::possibly_applied`] and [`FailureKind::is_retryable`] are the two
//! questions the planner asks of a failure.

use crate::event::FailureKind;

/// Why an exchange with a participant produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// The connection could not be established (refused, unreachable, the TLS handshake
    /// failed): no byte of the request left, so nothing can have been applied.
    NotSent,
    /// The attempt ran out of time, at whatever point of the exchange.
    TimedOut,
    /// The exchange broke after the connection was open (reset, closed mid-answer, a body
    /// that could not be read): the request may have been received and acted on.
    Lost,
}

/// The failure an HTTP status means, or `None` for a success (2xx).
///
/// 408 and 429 are unknown outcomes rather than refusals: a participant that answers them
/// says it did not finish, and after the retries run out nothing proves that an earlier
/// attempt did not apply.
pub fn http_status(code: u16) -> Option<FailureKind> {
    match code {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(FailureKind::Transient),
        _ => Some(FailureKind::Permanent),
    }
}

/// The failure an exchange without an answer means.
pub fn no_answer(why: NoAnswer) -> FailureKind {
    match why {
        NoAnswer::NotSent => FailureKind::NotDelivered,
        NoAnswer::TimedOut => FailureKind::Timeout,
        NoAnswer::Lost => FailureKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_success_refusal_or_unknown() {
        for code in [200, 201, 204, 299] {
            assert_eq!(http_status(code), None, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 499, 301, 302, 100] {
            let kind = http_status(code).unwrap();
            assert!(!kind.possibly_applied() && !kind.is_retryable(), "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 599] {
            let kind = http_status(code).unwrap();
            assert!(kind.possibly_applied() && kind.is_retryable(), "{code}");
        }
    }

    #[test]
    fn only_a_request_that_never_left_is_known_not_applied() {
        let not_sent = no_answer(NoAnswer::NotSent);
        assert!(not_sent.is_retryable() && !not_sent.possibly_applied());
        for why in [NoAnswer::TimedOut, NoAnswer::Lost] {
            let kind = no_answer(why);
            assert!(kind.is_retryable() && kind.possibly_applied(), "{why:?}");
        }
    }
}
