//! The problem details (RFC 9457) a region answers an error with, as a peer reads them
//! back (the HTTP side, kinds and statuses, is the regions crate's `api::problem`).

use serde::{Deserialize, Serialize};

/// The prefix of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://geosaga.dev/problems/";

/// The slug of the problem a region answers a peer whose timestamp is further ahead of its
/// clock than `max_clock_offset_ms`: the sender records it as its own clock being ahead.
pub const CLOCK_SKEW: &str = "clock-skew";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable URI identifying the kind of problem.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// The region that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// For `key-not-found`: how stale the answering copy may be (0: the home's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness_bound_ms: Option<u64>,
    /// For `txn-conflict`: the key the transaction lost on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// For `txn-conflict`: the transaction it lost to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicting_txn: Option<String>,
}

impl Problem {
    /// Whether this is a `clock-skew` problem.
    pub fn is_clock_skew(&self) -> bool {
        self.r#type.strip_prefix(PROBLEM_BASE) == Some(CLOCK_SKEW)
    }
}
