//! Multi-version values: selecting the version visible at a timestamp, and choosing what
//! garbage collection may drop. Pure: the store loads a key's versions and applies these.

use crate::hlc::Timestamp;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// When it was written (its identity: versions of a key have distinct timestamps).
    pub ts: Timestamp,
    /// The value as JSON text, or `None` for a deletion (a tombstone).
    pub value: Option<String>,
}

/// The version of a key visible at `as_of`: the newest at or before it. `versions` may be
/// in any order. A tombstone is returned as such; the caller reads it as "not found".
pub fn visible_at(versions: &[Version], as_of: Timestamp) -> Option<&Version> {
    versions.iter().filter(|v| v.ts <= as_of).max_by_key(|v| v.ts)
}

/// The timestamps garbage collection may drop so that every read at or after `horizon`
/// still sees what it saw: every version older than the newest one at or before the
/// horizon, and that one too when it is a tombstone.
pub fn collectable(versions: &[Version], horizon: Timestamp) -> Vec<Timestamp> {
    let Some(kept) = visible_at(versions, horizon) else {
        return Vec::new();
    };
    versions
        .iter()
        .filter(|v| v.ts < kept.ts || (v.ts == kept.ts && v.value.is_none()))
        .map(|v| v.ts)
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn v(wall_ms: u64, value: Option<&str>) -> Version {
        Version {
            ts: Timestamp { wall_ms, logical: 0 },
            value: value.map(str::to_owned),
        }
    }

    fn at(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    #[test]
    fn the_newest_version_at_or_before_wins() {
        let vs = vec![v(30, Some("c")), v(10, Some("a")), v(20, None)];
        assert_eq!(visible_at(&vs, at(5)), None);
        assert_eq!(visible_at(&vs, at(10)).unwrap().value.as_deref(), Some("a"));
        assert_eq!(visible_at(&vs, at(25)).unwrap().value, None, "deleted at 20");
        assert_eq!(visible_at(&vs, at(99)).unwrap().value.as_deref(), Some("c"));
    }

    #[test]
    fn gc_keeps_the_version_visible_at_the_horizon() {
        let vs = vec![v(10, Some("a")), v(20, Some("b")), v(30, Some("c"))];
        assert_eq!(collectable(&vs, at(25)), vec![at(10)]);
        assert_eq!(collectable(&vs, at(5)), Vec::<Timestamp>::new());
        let with_tombstone = vec![v(10, Some("a")), v(20, None)];
        assert_eq!(collectable(&with_tombstone, at(25)), vec![at(10), at(20)]);
    }

    proptest! {
        /// Whatever is collected, every read at or after the horizon sees the same answer.
        #[test]
        fn gc_never_changes_a_read_after_the_horizon(
            walls in proptest::collection::btree_set(0u64..100, 0..12),
            tombstones in proptest::collection::vec(any::<bool>(), 12),
            horizon in 0u64..100,
        ) {
            let vs: Vec<Version> = walls.iter().zip(&tombstones)
                .map(|(w, t)| v(*w, if *t { None } else { Some("x") })).collect();
            let dropped = collectable(&vs, at(horizon));
            let kept: Vec<Version> = vs.iter().filter(|v| !dropped.contains(&v.ts)).cloned().collect();
            for read in horizon..100 {
                let live = |vs: &[Version]| visible_at(vs, at(read)).and_then(|v| v.value.clone().map(|x| (v.ts, x)));
                prop_assert_eq!(live(&vs), live(&kept));
            }
        }
    }
}
