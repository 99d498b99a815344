//! What a region's problem details (RFC 9457) mean on the wire. The document itself is the
//! workspace's one `problem::Problem` (the `geosaga-problem` crate), which the regions
//! crate's `api::problem` renders and a peer reads back; here are the `type` slugs a peer
//! acts on.

/// The slug of the problem a region answers a peer whose timestamp is further ahead of its
/// clock than `max_clock_offset_ms`: the sender records it as its own clock being ahead.
pub const CLOCK_SKEW: &str = "clock-skew";
