//! The transaction record: one per transaction, at its gateway when that homes a written
//! key, else at the home of its first written key ([`super::Planned`]), and the only place
//! its outcome is decided. Absent means pending with nothing pushed.
//!
//! [`TxnStatus::apply`] is the only transition: once committed or aborted a record never
//! changes again, and a commit timestamp is never below a push that came before it.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxnStatus {
    /// Undecided; it may commit only above `min_commit_ts` (readers pushed it there).
    Pending {
        /// The lowest commit timestamp left to it.
        min_commit_ts: Timestamp,
    },
    /// Committed: its intents are versions at `commit_ts`.
    Committed {
        /// The commit timestamp.
        commit_ts: Timestamp,
    },
    /// Aborted: its intents are dropped.
    Aborted,
}

/// What may happen to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RecordEvent {
    /// Only asks.
    Get,
    /// A reader at `above` must not see it: if pending, it may commit only above `above`.
    Push {
        /// The reader's timestamp.
        above: Timestamp,
    },
    /// The gateway commits it at `proposed` or above (the greatest prepare's proposal).
    Commit {
        /// The proposal.
        proposed: Timestamp,
    },
    /// Its gateway, or anyone who found its prepare expired, aborts it.
    Abort,
}

/// A transition the record refuses: its outcome was decided otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refused", rename_all = "snake_case")]
pub enum Refusal {
    /// A commit of an aborted transaction.
    #[error("the transaction was aborted (its prepare expired, or a conflicting write aborted it)")]
    Aborted,
    /// An abort of a committed transaction.
    #[error("the transaction committed at {commit_ts}")]
    Committed {
        /// When it committed.
        commit_ts: Timestamp,
    },
}

impl TxnStatus {
    /// A record not written yet.
    pub const NEW: TxnStatus = TxnStatus::Pending {
        min_commit_ts: Timestamp { wall_ms: 0, logical: 0 },
    };

    /// The record after `event`, or why it refuses it.
    pub fn apply(self, event: RecordEvent) -> Result<TxnStatus, Refusal> {
        match (self, event) {
            (s, RecordEvent::Get) => Ok(s),
            (TxnStatus::Pending { min_commit_ts }, RecordEvent::Push { above }) => Ok(TxnStatus::Pending {
                min_commit_ts: min_commit_ts.max(next(above)),
            }),
            (TxnStatus::Pending { min_commit_ts }, RecordEvent::Commit { proposed }) => Ok(TxnStatus::Committed {
                commit_ts: proposed.max(min_commit_ts),
            }),
            (TxnStatus::Pending { .. }, RecordEvent::Abort) => Ok(TxnStatus::Aborted),
            // A committed record answers a push with its timestamp, and a repeated commit
            // (a gateway retrying) with the same one.
            (TxnStatus::Committed { commit_ts }, RecordEvent::Push { .. } | RecordEvent::Commit { .. }) => {
                Ok(TxnStatus::Committed { commit_ts })
            }
            (TxnStatus::Committed { commit_ts }, RecordEvent::Abort) => Err(Refusal::Committed { commit_ts }),
            (TxnStatus::Aborted, RecordEvent::Push { .. } | RecordEvent::Abort) => Ok(TxnStatus::Aborted),
            (TxnStatus::Aborted, RecordEvent::Commit { .. }) => Err(Refusal::Aborted),
        }
    }

    /// Whether the outcome is decided.
    pub fn is_decided(self) -> bool {
        match self {
            TxnStatus::Pending { .. } => false,
            TxnStatus::Committed { .. } | TxnStatus::Aborted => true,
        }
    }
}

/// The smallest timestamp above `ts`.
pub fn next(ts: Timestamp) -> Timestamp {
    match ts.logical.checked_add(1) {
        Some(logical) => Timestamp {
            wall_ms: ts.wall_ms,
            logical,
        },
        None => Timestamp {
            wall_ms: ts.wall_ms + 1,
            logical: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(wall_ms: u64, logical: u32) -> Timestamp {
        Timestamp { wall_ms, logical }
    }

    #[test]
    fn a_push_raises_the_commit_timestamp() {
        let pushed = TxnStatus::NEW.apply(RecordEvent::Push { above: ts(10, 3) }).unwrap();
        let committed = pushed.apply(RecordEvent::Commit { proposed: ts(9, 0) }).unwrap();
        assert_eq!(committed, TxnStatus::Committed { commit_ts: ts(10, 4) });
    }

    #[test]
    fn decided_outcomes_refuse_the_other() {
        let committed = TxnStatus::Committed { commit_ts: ts(5, 0) };
        assert_eq!(
            committed.apply(RecordEvent::Abort),
            Err(Refusal::Committed { commit_ts: ts(5, 0) })
        );
        assert_eq!(
            TxnStatus::Aborted.apply(RecordEvent::Commit { proposed: ts(1, 0) }),
            Err(Refusal::Aborted)
        );
    }

    #[test]
    fn next_carries_into_the_wall_clock() {
        assert_eq!(next(ts(7, u32::MAX)), ts(8, 0));
    }

    fn event() -> impl Strategy<Value = RecordEvent> {
        let t = (0u64..20, 0u32..3).prop_map(|(w, l)| ts(w, l));
        prop_oneof![
            Just(RecordEvent::Get),
            t.clone().prop_map(|above| RecordEvent::Push { above }),
            t.prop_map(|proposed| RecordEvent::Commit { proposed }),
            Just(RecordEvent::Abort),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order: the first decision stands, and a commit is
        /// above every push accepted before it (a reader that pushed never sees it).
        #[test]
        fn the_first_decision_stands(events in proptest::collection::vec(event(), 0..30)) {
            let mut status = TxnStatus::NEW;
            let mut decided: Option<TxnStatus> = None;
            let mut pushes = Vec::new();
            for e in events {
                if let RecordEvent::Push { above } = e && decided.is_none() {
                    pushes.push(above);
                }
                if let Ok(after) = status.apply(e) {
                    status = after;
                }
                if let Some(d) = decided {
                    prop_assert_eq!(status, d);
                } else if status.is_decided() {
                    decided = Some(status);
                }
            }
            if let TxnStatus::Committed { commit_ts } = status {
                prop_assert!(pushes.iter().all(|&p| commit_ts > p));
            }
        }
    }
}
