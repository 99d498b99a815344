//! Keys written anywhere: last-writer-wins and the count of concurrent writes that lost.
//! Pure: the store applies these decisions.
//!
//! A key under a rule with `writes = "anywhere"` takes async writes at every replica. Each
//! version is identified by its HLC timestamp and its origin region, and replicas keep every
//! version they receive: reads see the greatest `(timestamp, region)` ([`lww_winner`]), so
//! once every version reached every region all of them read the same value.
//!
//! Each write records the version it replaced at its origin (its *prev*). The versions of a
//! key then form a tree; a version that no other version names as its prev is a *leaf*.
//! Writes that followed each other form a chain with one leaf; every concurrent write that
//! lost leaves one more leaf behind. So a key's overwritten concurrent writes number
//! `leaves - 1`, a quantity of the set of versions alone: every region that holds the same
//! versions counts the same, whatever order they arrived in. [`leaf_delta`] keeps the count
//! as versions arrive.

use crate::protocol::VersionId;

/// The version reads see among two: the greater timestamp, then the greater region name.
pub fn lww_winner<'a>(a: &'a VersionId, b: &'a VersionId) -> &'a VersionId {
    if (b.ts, &b.origin) > (a.ts, &a.origin) { b } else { a }
}

/// How a key's count of overwritten concurrent writes (`leaves - 1`) changes when a new
/// version arrives: `had_versions` (the key had versions here before), `named` (a version
/// here already names the new one as its prev: it arrived after its successor), and
/// `prev_was_leaf` (its prev is here and nothing else named it).
pub fn leaf_delta(had_versions: bool, named: bool, prev_was_leaf: bool) -> i64 {
    let new_leaf = i64::from(!named);
    let lost_leaf = i64::from(prev_was_leaf);
    // The first version of a key is the "- 1" of `leaves - 1`.
    let first = i64::from(!had_versions);
    new_leaf - lost_leaf - first
}

/// `leaves - 1` of a whole set of versions `(id, prev)` (0 for none): what [`leaf_delta`]
/// sums to once every version arrived.
pub fn overwritten(versions: &[(VersionId, Option<VersionId>)]) -> i64 {
    let leaves = versions
        .iter()
        .filter(|(id, _)| !versions.iter().any(|(_, prev)| prev.as_ref() == Some(id)))
        .count();
    i64::try_from(leaves).unwrap_or(i64::MAX).saturating_sub(1).max(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hlc::Timestamp;

    fn id(wall_ms: u64, origin: &str) -> VersionId {
        VersionId {
            ts: Timestamp { wall_ms, logical: 0 },
            origin: origin.into(),
        }
    }

    #[test]
    fn the_greater_timestamp_then_the_greater_region_wins() {
        assert_eq!(lww_winner(&id(5, "a"), &id(4, "z")), &id(5, "a"));
        assert_eq!(lww_winner(&id(5, "a"), &id(5, "b")), &id(5, "b"));
        assert_eq!(lww_winner(&id(5, "b"), &id(5, "a")), &id(5, "b"));
    }

    #[test]
    fn a_chain_has_no_conflict_and_each_concurrent_loser_counts_once() {
        let chain = [
            (id(1, "a"), None),
            (id(2, "b"), Some(id(1, "a"))),
            (id(3, "a"), Some(id(2, "b"))),
        ];
        assert_eq!(overwritten(&chain), 0);
        let forked = [
            (id(1, "a"), None),
            (id(2, "a"), Some(id(1, "a"))),
            (id(2, "b"), Some(id(1, "a"))),
        ];
        assert_eq!(overwritten(&forked), 1);
        assert_eq!(overwritten(&[]), 0);
    }

    /// Replays arrivals one by one with `leaf_delta`, as the store does.
    fn incremental(order: &[(VersionId, Option<VersionId>)]) -> i64 {
        let mut here: Vec<(VersionId, Option<VersionId>)> = Vec::new();
        let mut count = 0;
        for (v, prev) in order {
            let named = here.iter().any(|(_, p)| p.as_ref() == Some(v));
            let prev_was_leaf = prev.as_ref().is_some_and(|p| {
                here.iter().any(|(id, _)| id == p) && !here.iter().any(|(_, q)| q.as_ref() == Some(p))
            });
            count += leaf_delta(!here.is_empty(), named, prev_was_leaf);
            here.push((v.clone(), prev.clone()));
        }
        count
    }

    proptest! {
        /// Random version trees delivered in random orders: the running count always ends
        /// at `leaves - 1`.
        #[test]
        fn the_count_does_not_depend_on_arrival_order(
            parents in proptest::collection::vec(any::<prop::sample::Index>(), 1..12),
            seed in any::<u64>(),
        ) {
            let mut versions: Vec<(VersionId, Option<VersionId>)> = vec![(id(0, "a"), None)];
            for (i, p) in parents.iter().enumerate() {
                let prev = versions[p.index(versions.len())].0.clone();
                let origin = ["a", "b", "c"][i % 3];
                versions.push((id(i as u64 + 1, origin), Some(prev)));
            }
            let mut shuffled = versions.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(incremental(&shuffled), overwritten(&versions));
            prop_assert_eq!(incremental(&versions), overwritten(&versions));
        }
    }
}
