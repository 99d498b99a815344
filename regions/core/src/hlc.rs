//! Hybrid logical clocks (Kulkarni et al., 2014): timestamps that follow physical time
//! closely, never go backwards, and order every event that causally precedes another.
//!
//! A [`Timestamp`] is a wall-clock reading in milliseconds plus a logical counter that breaks
//! ties. [`Clock::now`] stamps a local event; [`Clock::update`] folds in a timestamp received
//! from another region, refusing one further ahead of local time than the configured maximum
//! clock offset (a peer with a broken clock must not drag every region into the future).
//! The physical clock is a function passed in, so tests drive time by hand.
//!
//! No arithmetic overflows, anywhere in the range: the successor of a timestamp whose
//! logical part is `u32::MAX` is the next millisecond's first (a carry, as closed
//! timestamps built with [`Timestamp::pred`] need), which keeps every result strictly
//! greater than what the clock gave or saw. Only [`Timestamp::MAX`], which no physical
//! clock reaches, has no successor: `now` stays there and `update` refuses
//! ([`ClockError::Exhausted`]).

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
    /// The greatest timestamp there is.
    pub const MAX: Timestamp = Timestamp {
        wall_ms: u64::MAX,
        logical: u32::MAX,
    };

    /// The smallest timestamp greater than this one: the next logical tick, or the next
    /// millisecond's first after `u32::MAX` ticks; `None` for [`Timestamp::MAX`].
    pub fn succ(self) -> Option<Timestamp> {
        match self.logical.checked_add(1) {
            Some(logical) => Some(Timestamp { logical, ..self }),
            None => self
                .wall_ms
                .checked_add(1)
                .map(|wall_ms| Timestamp { wall_ms, logical: 0 }),
        }
    }

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
    #[error(
        "remote timestamp {remote} is {ahead_ms} ms ahead of local time (max offset {max_offset_ms} ms): \
         the clocks are further apart than max_clock_offset_ms"
    )]
    TooFarAhead {
        /// The remote timestamp.
        remote: Timestamp,
        /// How far ahead of local physical time it is.
        ahead_ms: u64,
        /// The configured limit.
        max_offset_ms: u64,
    },
    /// No timestamp follows the remote one and this clock's last (the end of the range).
    #[error("no timestamp follows {remote}: the clock is at the end of its range")]
    Exhausted {
        /// The remote timestamp.
        remote: Timestamp,
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
        Clock::system_skewed(max_offset_ms, 0)
    }

    /// A clock on the system's wall clock moved by `offset_ms` (negative: behind). For
    /// tests of clock skew between regions on one machine (`clock_offset_ms` in a region's
    /// configuration); a real region's offset is 0.
    pub fn system_skewed(max_offset_ms: u64, offset_ms: i64) -> Clock {
        Clock::new(
            move || {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0);
                now.saturating_add_signed(offset_ms)
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

    /// A timestamp for a local event, greater than every timestamp this clock gave or saw
    /// (at [`Timestamp::MAX`], which no physical clock reaches, it stays there).
    pub fn now(&self) -> Timestamp {
        let physical = (self.physical)();
        let mut last = self.last.lock().expect("clock lock");
        *last = after(physical, *last).unwrap_or(Timestamp::MAX);
        *last
    }

    /// Folds in a timestamp received from another region and returns a timestamp for the
    /// receipt, greater than both the remote one and every local one. Refused, leaving the
    /// clock as it was, when the remote clock is further ahead than the maximum offset.
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
        *last = after(physical, (*last).max(remote)).ok_or(ClockError::Exhausted { remote })?;
        Ok(*last)
    }
}

/// The HLC step: the physical reading if it is past `latest`'s millisecond, else the
/// successor of `latest` (`None` at the end of the range). This is Kulkarni et al.'s rule
/// (`l' = max(l, l_m, pt)`; `c'` the larger counter plus one where the walls tie, else 0)
/// with `latest = max(last, remote)`, and a carry where the counter would overflow.
fn after(physical: u64, latest: Timestamp) -> Option<Timestamp> {
    if physical > latest.wall_ms {
        Some(Timestamp {
            wall_ms: physical,
            logical: 0,
        })
    } else {
        latest.succ()
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

    /// Every bound: the carry of a logical part at `u32::MAX` (where closed timestamps
    /// built with `pred` sit), a remote at that logical part received on a clock behind
    /// it (the overflow of issue #18), and the end of the range.
    #[test]
    fn logical_parts_carry_and_the_end_of_the_range_is_refused() {
        let edge = Timestamp {
            wall_ms: 1700,
            logical: u32::MAX,
        };
        let next = Timestamp {
            wall_ms: 1701,
            logical: 0,
        };
        assert_eq!(edge.succ(), Some(next));
        assert_eq!(next.pred(), edge);
        assert_eq!(Timestamp::MAX.succ(), None);
        assert_eq!(Timestamp::default().pred(), Timestamp::default());

        // A closed timestamp `pred(T)` received by a clock whose physical time is behind T.
        let (clock, _) = manual(1000, 1_000);
        assert_eq!(clock.update(edge).unwrap(), next);
        assert_eq!(clock.now(), next.succ().unwrap());
        let (clock, _) = manual(1700, 1_000);
        assert_eq!(clock.update(edge).unwrap(), next, "the walls tie: the counter carries");

        // `now` on a clock whose last timestamp is at a logical edge.
        let (clock, time) = manual(1700, 1_000);
        clock.update(edge).unwrap();
        time.store(1000, Ordering::SeqCst);
        assert_eq!(clock.now(), next.succ().unwrap());

        // The end of the range: refused, never wrapped.
        let (clock, _) = manual(u64::MAX, 0);
        assert_eq!(
            clock.update(Timestamp::MAX),
            Err(ClockError::Exhausted { remote: Timestamp::MAX })
        );
        let last = clock
            .update(Timestamp {
                logical: u32::MAX - 1,
                ..Timestamp::MAX
            })
            .unwrap();
        assert_eq!(last, Timestamp::MAX);
        assert_eq!(clock.now(), Timestamp::MAX, "now stays at the end");
        assert!(clock.update(Timestamp::default()).is_err());
        let far = Timestamp {
            wall_ms: u64::MAX,
            logical: 0,
        };
        let (clock, _) = manual(0, u64::MAX);
        assert_eq!(
            clock.update(far).unwrap(),
            far.succ().unwrap(),
            "no overflow in the offset check"
        );
        "18446744073709551615.4294967295"
            .parse::<Timestamp>()
            .map(|t| assert_eq!(t, Timestamp::MAX))
            .unwrap();
    }

    /// A timestamp as one number: wall in the high bits, logical in the low 32, so that
    /// `+ 1` is the successor with its carry.
    fn flat(t: Timestamp) -> u128 {
        (u128::from(t.wall_ms) << 32) | u128::from(t.logical)
    }

    fn unflat(n: u128) -> Timestamp {
        Timestamp {
            wall_ms: u64::try_from(n >> 32).unwrap(),
            logical: (n & u128::from(u32::MAX)) as u32,
        }
    }

    /// Anywhere in the range, often near its ends.
    fn wall() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), 0u64..4, (u64::MAX - 3)..=u64::MAX]
    }

    fn logical() -> impl Strategy<Value = u32> {
        prop_oneof![any::<u32>(), 0u32..3, (u32::MAX - 2)..=u32::MAX]
    }

    /// One step of the property: a local event, a receipt (near the physical time, so that
    /// walls tie often, or anywhere), or the physical clock set (near, or anywhere).
    #[derive(Debug, Clone)]
    enum Op {
        Now,
        Receive {
            ahead: Option<i64>,
            wall: u64,
            logical: u32,
        },
        Set {
            by: Option<i64>,
            wall: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let near = proptest::option::weighted(0.8, -3i64..4);
        prop_oneof![
            Just(Op::Now),
            (near.clone(), wall(), logical()).prop_map(|(ahead, wall, logical)| Op::Receive { ahead, wall, logical }),
            (near, wall()).prop_map(|(by, wall)| Op::Set { by, wall }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Over the whole range of both parts, whatever the interleaving of local events,
        /// receipts and clock jumps (backwards too), the clock never panics and agrees with
        /// a model in 128-bit arithmetic: it never goes backwards, every timestamp is later
        /// than every earlier one (until the end of the range), a receipt is later than
        /// what was received, and a remote too far ahead is refused and changes nothing.
        #[test]
        fn timestamps_are_monotonic_and_causal_over_the_whole_range(
            start in wall(),
            max_offset in prop_oneof![0u64..3, any::<u64>(), Just(u64::MAX)],
            ops in proptest::collection::vec(op(), 1..100),
        ) {
            let (clock, time) = manual(start, max_offset);
            let mut model: u128 = 0;
            let mut seen = Timestamp::default();
            for op in ops {
                let physical = time.load(Ordering::SeqCst);
                let step = |latest: u128| {
                    if u128::from(physical) > latest >> 32 { Some(u128::from(physical) << 32) }
                    else if latest == flat(Timestamp::MAX) { None }
                    else { Some(latest + 1) }
                };
                match op {
                    Op::Now => {
                        let t = clock.now();
                        model = step(model).unwrap_or(model);
                        prop_assert_eq!(t, unflat(model));
                        prop_assert!(t > seen || seen == Timestamp::MAX, "{} then {}", seen, t);
                        prop_assert!(t.wall_ms >= physical);
                        seen = t;
                    }
                    Op::Receive { ahead, wall, logical } => {
                        let wall_ms = ahead.map_or(wall, |a| physical.saturating_add_signed(a));
                        let remote = Timestamp { wall_ms, logical };
                        let too_far = u128::from(remote.wall_ms) > u128::from(physical) + u128::from(max_offset);
                        match clock.update(remote) {
                            Ok(t) => {
                                prop_assert!(!too_far);
                                model = step(model.max(flat(remote))).expect("a model step after an accepted receipt");
                                prop_assert_eq!(t, unflat(model));
                                prop_assert!(t > remote && t > seen, "{} after {} and {}", t, remote, seen);
                                seen = t;
                            }
                            Err(ClockError::TooFarAhead { ahead_ms, .. }) => {
                                prop_assert!(too_far);
                                prop_assert_eq!(ahead_ms, remote.wall_ms - physical);
                            }
                            Err(ClockError::Exhausted { .. }) => {
                                prop_assert!(!too_far);
                                prop_assert_eq!(step(model.max(flat(remote))), None);
                            }
                        }
                    }
                    Op::Set { by, wall } => {
                        time.store(by.map_or(wall, |b| physical.saturating_add_signed(b)), Ordering::SeqCst);
                    }
                }
            }
        }

        /// `succ` and `pred` are each other's inverse, and order the range.
        #[test]
        fn succ_and_pred_are_inverse(wall_ms in wall(), logical in logical()) {
            let t = Timestamp { wall_ms, logical };
            match t.succ() {
                Some(s) => {
                    prop_assert!(s > t);
                    prop_assert_eq!(flat(s), flat(t) + 1);
                    prop_assert_eq!(s.pred(), t);
                }
                None => prop_assert_eq!(t, Timestamp::MAX),
            }
            if t != Timestamp::default() {
                prop_assert!(t.pred() < t);
                prop_assert_eq!(t.pred().succ(), Some(t));
            }
        }
    }
}
