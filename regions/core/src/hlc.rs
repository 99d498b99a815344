//! Hybrid logical clocks (Kulkarni et al., 2014): timestamps that follow physical time
//! closely, never go backwards, and order every event that causally precedes another.
//!
//! A [`Timestamp`] is a wall-clock reading in milliseconds plus a logical counter that breaks
//! ties. [`Clock::now`] stamps a local event; [`Clock::update`] folds in a timestamp received
//! from another region, refusing one further ahead of local time than the configured maximum
//! clock offset (a peer with a broken clock must not drag every region into the future).
//! The physical clock is a function passed in, so tests drive time by hand.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp. Ordered by wall time, then by the logical counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Physical part: milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Logical part: orders events within one millisecond.
    pub logical: u32,
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

impl Timestamp {
    /// The greatest timestamp smaller than this one (`self` itself for the zero timestamp).
    pub fn pred(self) -> Timestamp {
        match (self.wall_ms, self.logical) {
            (0, 0) => self,
            (wall_ms, 0) => Timestamp {
                wall_ms: wall_ms - 1,
                logical: u32::MAX,
            },
            (wall_ms, logical) => Timestamp {
                wall_ms,
                logical: logical - 1,
            },
        }
    }
}

impl std::str::FromStr for Timestamp {
    type Err = String;

    /// Parses the [`Display`](std::fmt::Display) form, `WALL_MS.LOGICAL`.
    fn from_str(s: &str) -> Result<Timestamp, String> {
        let (wall, logical) = s
            .split_once('.')
            .ok_or_else(|| format!("{s:?} is not a version (WALL_MS.LOGICAL)"))?;
        let wall_ms = wall
            .parse()
            .map_err(|_| format!("{s:?} is not a version (WALL_MS.LOGICAL)"))?;
        let logical = logical
            .parse()
            .map_err(|_| format!("{s:?} is not a version (WALL_MS.LOGICAL)"))?;
        Ok(Timestamp { wall_ms, logical })
    }
}

/// Why a remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote clock is further ahead than the allowed offset.
    #[error("remote timestamp {remote} is {ahead_ms} ms ahead of local time (max offset {max_offset_ms} ms)")]
    TooFarAhead {
        /// The remote timestamp.
        remote: Timestamp,
        /// How far ahead of local physical time it is.
        ahead_ms: u64,
        /// The configured limit.
        max_offset_ms: u64,
    },
}

/// A hybrid logical clock.
pub struct Clock {
    physical: Box<dyn Fn() -> u64 + Send + Sync>,
    max_offset_ms: u64,
    last: Mutex<Timestamp>,
}

impl Clock {
    /// A clock reading `physical` (milliseconds) that accepts remote timestamps at most
    /// `max_offset_ms` ahead.
    pub fn new(physical: impl Fn() -> u64 + Send + Sync + 'static, max_offset_ms: u64) -> Clock {
        Clock {
            physical: Box::new(physical),
            max_offset_ms,
            last: Mutex::new(Timestamp::default()),
        }
    }

    /// A clock on the system's wall clock.
    pub fn system(max_offset_ms: u64) -> Clock {
        Clock::new(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0)
            },
            max_offset_ms,
        )
    }

    /// The physical clock's reading in milliseconds (not a timestamp: no logical part, and
    /// it may be behind the last timestamp given).
    pub fn physical_ms(&self) -> u64 {
        (self.physical)()
    }

    /// The maximum clock offset this clock assumes between regions.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// A timestamp for a local event, greater than every timestamp this clock gave or saw.
    pub fn now(&self) -> Timestamp {
        let physical = (self.physical)();
        let mut last = self.last.lock().expect("clock lock");
        *last = if physical > last.wall_ms {
            Timestamp {
                wall_ms: physical,
                logical: 0,
            }
        } else {
            Timestamp {
                wall_ms: last.wall_ms,
                logical: last.logical + 1,
            }
        };
        *last
    }

    /// Folds in a timestamp received from another region and returns a timestamp for the
    /// receipt, greater than both the remote one and every local one.
    pub fn update(&self, remote: Timestamp) -> Result<Timestamp, ClockError> {
        let physical = (self.physical)();
        if remote.wall_ms > physical.saturating_add(self.max_offset_ms) {
            return Err(ClockError::TooFarAhead {
                remote,
                ahead_ms: remote.wall_ms - physical,
                max_offset_ms: self.max_offset_ms,
            });
        }
        let mut last = self.last.lock().expect("clock lock");
        let wall_ms = physical.max(last.wall_ms).max(remote.wall_ms);
        let logical = match (wall_ms == last.wall_ms, wall_ms == remote.wall_ms) {
            (true, true) => last.logical.max(remote.logical) + 1,
            (true, false) => last.logical + 1,
            (false, true) => remote.logical + 1,
            (false, false) => 0,
        };
        *last = Timestamp { wall_ms, logical };
        Ok(*last)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;

    fn manual(start: u64, max_offset: u64) -> (Clock, Arc<AtomicU64>) {
        let time = Arc::new(AtomicU64::new(start));
        let t = time.clone();
        (Clock::new(move || t.load(Ordering::SeqCst), max_offset), time)
    }

    #[test]
    fn now_is_strictly_increasing_even_when_time_stands_still_or_goes_back() {
        let (clock, time) = manual(1000, 500);
        let a = clock.now();
        let b = clock.now();
        time.store(900, Ordering::SeqCst);
        let c = clock.now();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(c.wall_ms, 1000);
        time.store(2000, Ordering::SeqCst);
        assert_eq!(
            clock.now(),
            Timestamp {
                wall_ms: 2000,
                logical: 0
            }
        );
    }

    #[test]
    fn update_moves_past_a_remote_timestamp_within_the_offset() {
        let (clock, _) = manual(1000, 500);
        let remote = Timestamp {
            wall_ms: 1400,
            logical: 7,
        };
        let t = clock.update(remote).unwrap();
        assert_eq!(
            t,
            Timestamp {
                wall_ms: 1400,
                logical: 8
            }
        );
        assert!(clock.now() > t);
    }

    #[test]
    fn update_refuses_a_clock_too_far_ahead() {
        let (clock, _) = manual(1000, 500);
        let err = clock
            .update(Timestamp {
                wall_ms: 1501,
                logical: 0,
            })
            .unwrap_err();
        assert!(matches!(err, ClockError::TooFarAhead { ahead_ms: 501, .. }));
        assert_eq!(clock.now().wall_ms, 1000, "a refused timestamp leaves the clock alone");
    }

    #[test]
    fn versions_parse_and_have_predecessors() {
        let t: Timestamp = "1700.3".parse().unwrap();
        assert_eq!(
            t,
            Timestamp {
                wall_ms: 1700,
                logical: 3
            }
        );
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert!("17".parse::<Timestamp>().is_err());
        assert_eq!(
            t.pred(),
            Timestamp {
                wall_ms: 1700,
                logical: 2
            }
        );
        let p = Timestamp {
            wall_ms: 1700,
            logical: 0,
        }
        .pred();
        assert!(
            p < Timestamp {
                wall_ms: 1700,
                logical: 0
            } && p > Timestamp {
                wall_ms: 1699,
                logical: 7
            }
        );
    }

    proptest! {
        /// Whatever the interleaving of local events, receipts and clock jumps, the clock
        /// never goes backwards and a receipt is later than what was received.
        #[test]
        fn timestamps_are_monotonic_and_causal(ops in proptest::collection::vec((0u8..3, 0u64..2000, 0u32..5), 1..200)) {
            let (clock, time) = manual(10_000, 1_000);
            let mut last = Timestamp::default();
            for (op, value, logical) in ops {
                let t = match op {
                    0 => clock.now(),
                    1 => {
                        // Within the allowed offset of the current physical time.
                        let now = time.load(Ordering::SeqCst);
                        let remote = Timestamp { wall_ms: now - 500 + value / 2, logical };
                        let t = clock.update(remote).unwrap();
                        prop_assert!(t > remote);
                        t
                    }
                    _ => {
                        time.store(9_000 + value, Ordering::SeqCst);
                        clock.now()
                    }
                };
                prop_assert!(t > last, "{} then {}", last, t);
                last = t;
            }
        }
    }
}
