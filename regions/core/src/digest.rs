//! Anti-entropy's digests: which items a round compares, and how two regions find the
//! buckets where they differ without sending the items. Pure: the rounds are in
//! the regions crate's `antientropy`.
//!
//! Items (a key's versions in a window, a counter's component) are grouped into [`BUCKETS`]
//! buckets by key hash; each bucket's digest is the wrapping sum of its items' hashes, so it
//! does not depend on their order. Two regions holding the same items have the same
//! digests (up to a 64-bit hash collision); only differing buckets are fetched.

use crate::counter::Component;
use crate::hlc::Timestamp;
use crate::placement::hash;

/// Buckets of a digest.
pub const BUCKETS: usize = 64;

/// The bucket of `key`.
pub fn bucket_of(key: &str) -> usize {
    (hash(key.as_bytes()) % BUCKETS as u64) as usize
}

/// Of a key's version timestamps (newest first), those a round compares: the newest at or
/// below `since`, and every one in `(since, upto]`.
pub fn window(newest_first: &[Timestamp], since: Timestamp, upto: Timestamp) -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = newest_first
        .iter()
        .copied()
        .filter(|t| *t > since && *t <= upto)
        .collect();
    if let Some(base) = newest_first.iter().copied().find(|t| *t <= since) {
        out.push(base);
    }
    out
}

fn version_item(key: &str, ts: &[Timestamp]) -> u64 {
    let mut text = format!("v\0{key}");
    for t in ts {
        text.push_str(&format!("\0{t}"));
    }
    hash(text.as_bytes())
}

fn counter_item(key: &str, c: Component) -> u64 {
    hash(format!("c\0{key}\0{}\0{}", c.p, c.n).as_bytes())
}

/// The digest of a set of items: per bucket, the wrapping sum of its items' hashes.
/// `versions`: per key, the compared timestamps (see [`window`]); `counters`: components.
pub fn digest<'a>(
    versions: impl IntoIterator<Item = (&'a str, &'a [Timestamp])>,
    counters: impl IntoIterator<Item = (&'a str, Component)>,
) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    for (key, ts) in versions {
        if !ts.is_empty() {
            let b = &mut buckets[bucket_of(key)];
            *b = b.wrapping_add(version_item(key, ts));
        }
    }
    for (key, c) in counters {
        let b = &mut buckets[bucket_of(key)];
        *b = b.wrapping_add(counter_item(key, c));
    }
    buckets
}

/// The buckets whose digests differ.
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    (0..BUCKETS).filter(|&i| ours.get(i) != theirs.get(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    #[test]
    fn the_window_is_the_base_version_and_everything_up_to_the_closed_timestamp() {
        let versions = [ts(50), ts(40), ts(30), ts(10)];
        assert_eq!(window(&versions, ts(35), ts(45)), vec![ts(40), ts(30)]);
        assert_eq!(
            window(&versions, ts(45), ts(45)),
            vec![ts(40)],
            "steady state: the latest"
        );
        assert_eq!(window(&versions, ts(5), ts(5)), Vec::<Timestamp>::new());
    }

    #[test]
    fn digests_find_exactly_the_buckets_that_differ() {
        let a = [ts(1), ts(2)];
        let b = [ts(1)];
        let same = digest([("x", &a[..]), ("y", &b[..])], [("c", Component { p: 3, n: 1 })]);
        let reordered = digest([("y", &b[..]), ("x", &a[..])], [("c", Component { p: 3, n: 1 })]);
        assert_eq!(differing(&same, &reordered), Vec::<usize>::new(), "order-free");
        let missing = digest([("x", &b[..]), ("y", &b[..])], [("c", Component { p: 3, n: 1 })]);
        assert_eq!(differing(&same, &missing), vec![bucket_of("x")]);
        let counter = digest([("x", &a[..]), ("y", &b[..])], [("c", Component { p: 4, n: 1 })]);
        assert_eq!(differing(&same, &counter), vec![bucket_of("c")]);
        assert_eq!(
            differing(&same, &[]).len(),
            BUCKETS,
            "an empty answer differs everywhere"
        );
    }
}
