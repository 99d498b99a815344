//! Retry policies and time limits: a step's own values, else the definition's defaults,
//! else the built-in ones; each fault reported once, where the value is written.

use std::time::Duration;

use super::{Collector, MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_TIMEOUT_MS};
use crate::document::RetryDoc;
use crate::retry::RetryPolicy;

pub(super) fn retry_policy(
    own: Option<&RetryDoc>,
    defaults: Option<&RetryDoc>,
    builtin: RetryPolicy,
    path: &str,
    errors: &mut Collector,
) -> RetryPolicy {
    let pick_u32 = |f: fn(&RetryDoc) -> Option<u32>| own.and_then(f).or_else(|| defaults.and_then(f));
    let pick_u64 = |f: fn(&RetryDoc) -> Option<u64>| own.and_then(f).or_else(|| defaults.and_then(f));
    let max_attempts = pick_u32(|r| r.max_attempts).unwrap_or(builtin.max_attempts);
    let initial = pick_u64(|r| r.initial_backoff_ms)
        .map(Duration::from_millis)
        .unwrap_or(builtin.initial_backoff);
    let max = pick_u64(|r| r.max_backoff_ms)
        .map(Duration::from_millis)
        .unwrap_or(builtin.max_backoff);
    let multiplier = own
        .and_then(|r| r.multiplier)
        .or_else(|| defaults.and_then(|r| r.multiplier))
        .unwrap_or(builtin.multiplier);
    let jitter = own
        .and_then(|r| r.jitter)
        .or_else(|| defaults.and_then(|r| r.jitter))
        .unwrap_or(builtin.jitter);
    // Only the values this policy sets are checked here (those taken from the defaults were
    // checked at `/defaults`), so that each fault is reported once, where it is written.
    if let Some(own) = own {
        if own.max_attempts.is_some() && !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            errors.push(
                format!("{path}/max_attempts"),
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        if own.max_backoff_ms.is_some() && max.as_millis() > u128::from(MAX_BACKOFF_MS) {
            errors.push(
                format!("{path}/max_backoff_ms"),
                format!("must be at most {MAX_BACKOFF_MS}"),
            );
        }
        if initial > max {
            if own.initial_backoff_ms.is_some() {
                errors.push(
                    format!("{path}/initial_backoff_ms"),
                    format!(
                        "{} is more than max_backoff_ms ({})",
                        initial.as_millis(),
                        max.as_millis()
                    ),
                );
            } else if own.max_backoff_ms.is_some() {
                errors.push(
                    format!("{path}/max_backoff_ms"),
                    format!(
                        "{} is less than initial_backoff_ms ({})",
                        max.as_millis(),
                        initial.as_millis()
                    ),
                );
            }
        }
        if own.multiplier.is_some() && !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier)) {
            errors.push(format!("{path}/multiplier"), "must be between 1 and 100");
        }
    }
    RetryPolicy {
        max_attempts,
        initial_backoff: initial,
        max_backoff: max,
        multiplier,
        jitter,
    }
}

pub(super) fn timeout(ms: Option<u64>, default: Duration, path: &str, errors: &mut Collector) -> Duration {
    match ms {
        None => default,
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Duration::from_millis(ms),
        Some(_) => {
            errors.push(path, format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds"));
            default
        }
    }
}
