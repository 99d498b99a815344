//! What a replica holds of another home's writes, and how a shipped batch changes it. Pure:
//! the store records the state this computes.
//!
//! A replica applies a home's log in order; with each batch comes a closed timestamp (see
//! [`crate::closed`]). When the home truncated entries before they reached the replica, the
//! batch says so (a [`Gap`]): the replica then *freezes* the closed timestamp reads may trust
//! at the one it held before, until anti-entropy repaired the gap.

use crate::counter::Component;
use crate::hlc::Timestamp;
use crate::protocol::{EntryKind, EntryState, Gap, LogEntry, VersionRow};
use crate::{Error, Result};

/// What this region applied from another home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaState {
    /// The last entry applied.
    pub applied_seq: i64,
    /// The closed timestamp that came with it.
    pub closed: Timestamp,
    /// Entries truncated before they reached us and not repaired yet by anti-entropy.
    pub gap: Option<Gap>,
    /// While a gap is open: the closed timestamp held before it, the one reads may trust.
    pub frozen: Option<Timestamp>,
}

impl ReplicaState {
    /// The closed timestamp reads may rely on: the frozen one while a gap is open.
    pub fn readable_closed(&self) -> Timestamp {
        self.frozen.unwrap_or(self.closed)
    }
}

/// A batch of a home's log as a replica applies it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The entries, in log order.
    pub entries: &'a [LogEntry],
    /// The closed timestamp that came with them.
    pub closed: Timestamp,
    /// Every entry up to here that concerns this region was shipped.
    pub skip_to: Option<i64>,
    /// Entries that were truncated before they reached this region.
    pub gap: Option<Gap>,
}

impl<'a> Incoming<'a> {
    /// The entries not applied yet by a replica that applied `home`'s log up to `applied_seq`
    /// (a batch sent again after a reset overlaps what was applied).
    pub fn fresh(&self, applied_seq: i64) -> impl Iterator<Item = &'a LogEntry> {
        self.entries.iter().filter(move |e| e.seq > applied_seq)
    }
}

/// What applying one shipped entry does at a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Store this version (if not held already).
    Version(VersionRow),
    /// Merge this component of the counter `key` written at the home.
    Counter {
        /// The counter's key.
        key: String,
        /// The home's component.
        component: Component,
    },
    /// Nothing (an aborted strong write: its intent is dropped).
    Nothing,
}

/// What applying entry `e` of `home`'s log does; a pending entry is refused (a home ships
/// only resolved ones).
pub fn apply_entry(home: &str, e: &LogEntry) -> Result<Apply> {
    Ok(match (e.state, e.kind) {
        (EntryState::Committed, EntryKind::Version) => Apply::Version(VersionRow {
            key: e.key.clone(),
            ts: e.ts,
            value: e.value.clone(),
            origin: home.to_owned(),
            prev: e.prev.clone(),
        }),
        (EntryState::Committed, EntryKind::Counter) => Apply::Counter {
            key: e.key.clone(),
            component: Component::parse(e.value.as_deref())?,
        },
        (EntryState::Aborted, _) => Apply::Nothing,
        (EntryState::Pending, _) => return Err(Error::Peer(format!("{home} shipped pending entry {}", e.seq))),
    })
}

/// The state a replica records after applying `incoming` from a home whose state was
/// `before`, having applied its entries up to `applied_seq` (entries at or below `skip`,
/// the position before, were skipped as applied already).
pub fn next_state(before: Option<ReplicaState>, incoming: &Incoming<'_>, applied_seq: i64) -> ReplicaState {
    let skip = before.map_or(0, |s| s.applied_seq);
    let mut applied_seq = applied_seq;
    let closed = before.map_or(incoming.closed, |s| s.closed.max(incoming.closed));
    let (mut open_gap, mut frozen) = (before.and_then(|s| s.gap), before.and_then(|s| s.frozen));
    if let Some(g) = incoming.gap.filter(|g| g.upto_seq > skip) {
        // Entries we never applied are gone: what we held before is all reads may trust.
        frozen = Some(frozen.unwrap_or_else(|| before.map_or(Timestamp::default(), |s| s.closed)));
        open_gap = Some(match open_gap {
            Some(o) => Gap {
                upto_seq: o.upto_seq.max(g.upto_seq),
                upto_ts: o.upto_ts.max(g.upto_ts),
            },
            None => g,
        });
        applied_seq = applied_seq.max(g.upto_seq);
    }
    applied_seq = applied_seq.max(incoming.skip_to.unwrap_or(0));
    ReplicaState {
        applied_seq,
        closed,
        gap: open_gap,
        frozen,
    }
}
