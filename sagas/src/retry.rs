//! Retry policies and backoff.

use std::time::Duration;

/// The longest `Retry-After` a participant can make a step wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How often and how patiently an action or compensation is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Factor applied to the wait after each attempt.
    pub multiplier: f64,
    /// Randomise each wait between half and all of its computed value.
    pub jitter: bool,
}

impl RetryPolicy {
    /// The built-in policy of actions.
    pub const ACTION_DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: true,
    };

    /// The built-in policy of compensations: more patient, since giving up means `stuck`.
    pub const COMPENSATION_DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: true,
    };

    /// Runs an action exactly once.
    pub const NO_RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        multiplier: 1.0,
        jitter: false,
    };

    /// The wait after failed attempt number `attempt` (1-based).
    ///
    /// `jitter_sample` is a number in `[0, 1)` drawn by the caller (the core draws no
    /// random numbers, so that it stays deterministic); `retry_after` is what the
    /// participant asked for, honoured up to [`MAX_RETRY_AFTER`].
    pub fn backoff(&self, attempt: u32, jitter_sample: f64, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let raw = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = raw.min(self.max_backoff.as_secs_f64());
        let computed = if self.jitter {
            capped * (0.5 + 0.5 * jitter_sample.clamp(0.0, 1.0))
        } else {
            capped
        };
        let computed = Duration::from_secs_f64(computed.max(0.0));
        match retry_after {
            Some(asked) => computed.max(asked.min(MAX_RETRY_AFTER)),
            None => computed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let p = policy(false);
        let waits: Vec<u128> = (1..=6).map(|a| p.backoff(a, 0.0, None).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        let p = policy(true);
        assert_eq!(p.backoff(2, 0.0, None).as_millis(), 100);
        assert_eq!(p.backoff(2, 0.999_999, None).as_millis(), 199);
    }

    #[test]
    fn retry_after_is_honoured_within_limits() {
        let p = policy(false);
        assert_eq!(p.backoff(1, 0.0, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(p.backoff(1, 0.0, Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
        assert_eq!(p.backoff(3, 0.0, Some(Duration::from_millis(1))).as_millis(), 400);
    }
}
