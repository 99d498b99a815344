//! Closed timestamps and the read decision. Pure: times are arguments.
//!
//! A home region *closes* a timestamp `T` when it promises that it will never commit another
//! write at or below `T`, and that every write it committed at or below `T` is in the
//! replication stream up to the batch that carries `T`. A replica that applied that batch
//! therefore holds every write of that home up to `T`.
//!
//! [`closed_timestamp`] computes `T` from the clock, the writes still in flight, and the
//! log entries not yet shipped. [`plan_read`] decides whether a replica may answer a
//! bounded-staleness read locally.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hlc::Timestamp;

/// What a home may promise in a batch: just below the earliest of `now`, the timestamp of
/// every write still in flight (it may yet commit), and the timestamp of every log entry
/// not carried by this batch or an earlier one (a replica does not have it).
pub fn closed_timestamp(
    now: Timestamp,
    earliest_pending: Option<Timestamp>,
    earliest_unshipped: Option<Timestamp>,
) -> Timestamp {
    [Some(now), earliest_pending, earliest_unshipped]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
        .pred()
}

/// How stale a replica's copy may be, in milliseconds, given the closed timestamp it holds
/// for the home and its own physical clock: it has every write committed before real time
/// `closed.wall_ms - max_offset_ms` (as read on the local clock), since the home's clock may
/// be up to `max_offset_ms` ahead of ours.
pub fn staleness_bound_ms(closed: Timestamp, local_now_ms: u64, max_offset_ms: u64) -> u64 {
    local_now_ms
        .saturating_add(max_offset_ms)
        .saturating_sub(closed.wall_ms)
}

/// The consistency a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadConsistency {
    /// Linearizable: served by the home region.
    Strong,
    /// At most `max_staleness_ms` stale: served locally when the local replica is fresh enough.
    BoundedStaleness,
}

/// Where a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    /// From local storage; the answer is at most this many milliseconds stale.
    Local {
        /// The staleness bound of the answer.
        staleness_bound_ms: u64,
    },
    /// By the home region (which serves it as a strong read).
    Forward {
        /// How stale the local copy may be, to report if the home cannot be reached.
        local_staleness_ms: Option<u64>,
    },
}

/// Decides where a read is served. `closed` is the local closed timestamp of the key's home
/// (`None` when this region never heard from it).
pub fn plan_read(
    consistency: ReadConsistency,
    is_home: bool,
    max_staleness_ms: u64,
    closed: Option<Timestamp>,
    local_now_ms: u64,
    max_offset_ms: u64,
) -> ReadPlan {
    if is_home {
        return ReadPlan::Local { staleness_bound_ms: 0 };
    }
    let local_staleness_ms = closed.map(|c| staleness_bound_ms(c, local_now_ms, max_offset_ms));
    match (consistency, local_staleness_ms) {
        (ReadConsistency::BoundedStaleness, Some(s)) if s <= max_staleness_ms => {
            ReadPlan::Local { staleness_bound_ms: s }
        }
        (ReadConsistency::BoundedStaleness, _) | (ReadConsistency::Strong, _) => {
            ReadPlan::Forward { local_staleness_ms }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64, logical: u32) -> Timestamp {
        Timestamp { wall_ms, logical }
    }

    #[test]
    fn the_closed_timestamp_stays_below_pending_and_unshipped_writes() {
        assert_eq!(closed_timestamp(ts(100, 0), None, None), ts(99, u32::MAX));
        assert_eq!(closed_timestamp(ts(100, 0), Some(ts(90, 2)), None), ts(90, 1));
        assert_eq!(
            closed_timestamp(ts(100, 0), Some(ts(90, 2)), Some(ts(80, 0))),
            ts(79, u32::MAX)
        );
        assert!(closed_timestamp(ts(100, 5), None, Some(ts(120, 0))) < ts(100, 5));
    }

    #[test]
    fn staleness_allows_for_the_clock_offset() {
        assert_eq!(staleness_bound_ms(ts(1000, 0), 1000, 0), 0);
        assert_eq!(staleness_bound_ms(ts(1000, 0), 1200, 50), 250);
        assert_eq!(
            staleness_bound_ms(ts(1300, 0), 1200, 50),
            0,
            "a closed timestamp ahead of us"
        );
    }

    #[test]
    fn reads_are_local_only_when_fresh_enough() {
        let plan = |c, home, max, closed| plan_read(c, home, max, closed, 10_000, 100);
        use ReadConsistency::*;
        assert_eq!(plan(Strong, true, 0, None), ReadPlan::Local { staleness_bound_ms: 0 });
        assert_eq!(
            plan(Strong, false, 0, Some(ts(10_000, 0))),
            ReadPlan::Forward {
                local_staleness_ms: Some(100)
            }
        );
        assert_eq!(
            plan(BoundedStaleness, false, 500, Some(ts(9_700, 0))),
            ReadPlan::Local {
                staleness_bound_ms: 400
            }
        );
        assert_eq!(
            plan(BoundedStaleness, false, 300, Some(ts(9_700, 0))),
            ReadPlan::Forward {
                local_staleness_ms: Some(400)
            }
        );
        assert_eq!(
            plan(BoundedStaleness, false, 300, None),
            ReadPlan::Forward {
                local_staleness_ms: None
            }
        );
    }
}
