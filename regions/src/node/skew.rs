//! Clock skew between regions as this region sees it, for `/v1/regions`.
//!
//! A region refuses a peer's message whose timestamp is further ahead of its own clock than
//! `max_clock_offset_ms` ([`ClockError`]): the bounded-staleness promise rests
//! on that bound, and a peer with a broken clock must not drag the cluster's clocks into
//! the future. The refusal is a `clock-skew` problem (400). Both ends record it per peer:
//! the receiver ("this peer's clock is ahead of ours") and the sender, from the problem it
//! got back ("this peer refuses our timestamps: our clock is ahead of its"). `/v1/regions`
//! shows the last one of each, with how long ago and how often, so that the condition is
//! visible at both regions while their logs say it once.
//!
//! A refusal also withdraws the peer's closed timestamp from reads
//! ([`Region::clock_suspect`]): a message of a skewed peer that was delayed in transit
//! arrives within the offset and is taken, and a closed timestamp from a clock ahead by more
//! than the offset covers less real time than the staleness bound assumes. While a peer's
//! timestamps were refused within the health window, its keys are read at its home.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use problem::Problem;
use regions_core::hlc::ClockError;
use regions_core::protocol::problem::CLOCK_SKEW;
use regions_core::protocol::{ClockSkew, SkewSide as Side};

use super::Region;
use crate::Error;

struct Seen {
    error: String,
    count: u64,
    at: Instant,
}

/// The refusals seen, per (peer, side).
#[derive(Default)]
pub struct Refusals {
    seen: Mutex<HashMap<(String, Side), Seen>>,
}

impl Refusals {
    /// Notes a refusal of `side` for `peer`; returns whether it is the first one.
    pub fn record(&self, peer: &str, side: Side, error: &str) -> bool {
        let mut seen = self.seen.lock().expect("skew lock");
        let entry = seen.entry((peer.to_owned(), side)).or_insert_with(|| Seen {
            error: String::new(),
            count: 0,
            at: Instant::now(),
        });
        entry.error = error.to_owned();
        entry.count += 1;
        entry.at = Instant::now();
        entry.count == 1
    }

    /// Whether `peer`'s timestamps were refused here (side `PeerAhead`) within `window`.
    pub fn peer_ahead_within(&self, peer: &str, window: Duration) -> bool {
        let seen = self.seen.lock().expect("skew lock");
        seen.get(&(peer.to_owned(), Side::PeerAhead))
            .is_some_and(|s| s.at.elapsed() <= window)
    }

    /// The last refusals for `peer`, the peer-ahead side first.
    pub fn of(&self, peer: &str) -> Vec<ClockSkew> {
        let seen = self.seen.lock().expect("skew lock");
        [Side::PeerAhead, Side::OursAhead]
            .into_iter()
            .filter_map(|side| {
                seen.get(&(peer.to_owned(), side)).map(|s| ClockSkew {
                    side,
                    error: s.error.clone(),
                    count: s.count,
                    last_ms_ago: u64::try_from(s.at.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }
}

impl Region {
    /// How long a refusal for clock skew marks a peer as unhealthy, and its closed
    /// timestamp as unusable for reads: five closed-timestamp intervals, at least a second.
    pub fn skew_window(&self) -> Duration {
        Duration::from_millis((self.config.closed_ts_interval_ms * 5).max(1_000))
    }

    /// Whether reads must not rely on `peer`'s closed timestamp: its timestamps were refused
    /// for clock skew within [`Region::skew_window`], so its clock is ahead of ours by more
    /// than `max_clock_offset_ms` and a staleness bound computed from it would not hold.
    pub fn clock_suspect(&self, peer: &str) -> bool {
        self.clock_skew.peer_ahead_within(peer, self.skew_window())
    }

    /// Notes that `peer`'s timestamp was refused by this region's clock; the error to answer.
    pub(crate) fn refuse_clock(&self, peer: &str, error: ClockError) -> Error {
        let text = error.to_string();
        if self.clock_skew.record(peer, Side::PeerAhead, &text) {
            tracing::warn!(
                region = self.name,
                peer,
                error = text,
                "refusing a peer's timestamps: its clock is too far ahead"
            );
        }
        Error::Clock(error)
    }

    /// Looks at a peer's refusal (`body`, a problem document); notes it if it was a
    /// `clock-skew` one, that is, our timestamps too far ahead of the peer's clock.
    pub(crate) fn note_refusal(&self, peer: &str, body: &str) {
        let Ok(problem) = serde_json::from_str::<Problem>(body) else {
            return;
        };
        if problem.slug() == Some(CLOCK_SKEW) && self.clock_skew.record(peer, Side::OursAhead, &problem.detail) {
            tracing::warn!(
                region = self.name,
                peer,
                error = problem.detail,
                "a peer refuses our timestamps: our clock is too far ahead of its"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_per_peer_and_side() {
        let r = Refusals::default();
        assert!(r.of("eu").is_empty());
        assert!(r.record("eu", Side::PeerAhead, "a"));
        assert!(!r.record("eu", Side::PeerAhead, "b"));
        assert!(r.record("eu", Side::OursAhead, "c"));
        let seen = r.of("eu");
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].side, seen[0].count, seen[0].error.as_str()),
            (Side::PeerAhead, 2, "b")
        );
        assert_eq!((seen[1].side, seen[1].count), (Side::OursAhead, 1));
        assert!(r.of("us").is_empty());
    }

    #[test]
    fn a_peer_refused_lately_is_suspect_until_the_window_passes() {
        let r = Refusals::default();
        let window = Duration::from_millis(50);
        assert!(!r.peer_ahead_within("eu", window), "never refused");
        r.record("eu", Side::OursAhead, "they refuse us");
        assert!(
            !r.peer_ahead_within("eu", window),
            "our clock ahead says nothing of theirs"
        );
        r.record("eu", Side::PeerAhead, "ahead");
        assert!(r.peer_ahead_within("eu", window));
        assert!(!r.peer_ahead_within("us", window));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!r.peer_ahead_within("eu", window), "the window passed");
    }
}
