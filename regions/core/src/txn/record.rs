//! The transaction record: one per transaction, at its gateway when that homes a written
//! key, else at the home of its first written key ([`super::Planned`]), and the only place
//! its outcome is decided. Absent means pending with nothing pushed.
//!
//! A parallel commit ([`super::staged`]) *stages* the record in the same prepare that lays
//! the intents of its home's keys: a staging transaction is committed as soon as every
//! home of its keys prepared, before the record says so. So a staging record can no longer
//! be pushed or aborted by whoever asks; only its gateway's explicit commit, or a recovery
//! that asked every home ([`RecordEvent::Recovered`]), decides it.
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
    /// Staged by a parallel commit: committed at or above `proposed` if every home of its
    /// keys prepared it, else aborted; which one, only asking them tells.
    Staging {
        /// The record's home's proposal, above every push that came before the staging.
        proposed: Timestamp,
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
    /// The record's home stages it as it prepares its own keys: its proposal, raised above
    /// every push so far.
    Stage {
        /// The record's home's proposal.
        proposed: Timestamp,
    },
    /// A recovery decided a staging record after asking every home: `Some(commit_ts)` when
    /// all had prepared (the greatest proposal), `None` when one was stopped from ever
    /// preparing it.
    Recovered {
        /// The outcome.
        commit_ts: Option<Timestamp>,
    },
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
    /// A push or an abort of a staging transaction (it may have committed already: only a
    /// recovery decides it).
    #[error("the transaction is staging: only its gateway or a recovery that asked every home decides it")]
    Staging,
    /// A recovery's commit of a transaction that was never staged.
    #[error("the transaction was never staged, so no recovery can find it committed")]
    NotStaged,
}

impl TxnStatus {
    /// A record not written yet.
    pub const NEW: TxnStatus = TxnStatus::Pending {
        min_commit_ts: Timestamp { wall_ms: 0, logical: 0 },
    };

    /// The record after `event`, or why it refuses it.
    pub fn apply(self, event: RecordEvent) -> Result<TxnStatus, Refusal> {
        use RecordEvent::{Abort, Commit, Get, Push, Recovered, Stage};
        use TxnStatus::{Aborted, Committed, Pending, Staging};
        match (self, event) {
            (s, Get) => Ok(s),
            (Pending { min_commit_ts }, Push { above }) => Ok(Pending {
                min_commit_ts: min_commit_ts.max(next(above)),
            }),
            (Pending { min_commit_ts }, Commit { proposed }) => Ok(Committed {
                commit_ts: proposed.max(min_commit_ts),
            }),
            (Pending { .. }, Abort | Recovered { commit_ts: None }) => Ok(Aborted),
            (Pending { min_commit_ts }, Stage { proposed }) => Ok(Staging {
                proposed: proposed.max(min_commit_ts),
            }),
            (Pending { .. }, Recovered { commit_ts: Some(_) }) => Err(Refusal::NotStaged),
            // A repeated stage (a prepare retried) changes nothing.
            (Staging { proposed }, Stage { .. }) => Ok(Staging { proposed }),
            (Staging { .. }, Push { .. } | Abort) => Err(Refusal::Staging),
            (Staging { proposed }, Commit { proposed: p } | Recovered { commit_ts: Some(p) }) => Ok(Committed {
                commit_ts: proposed.max(p),
            }),
            (Staging { .. }, Recovered { commit_ts: None }) => Ok(Aborted),
            // A committed record answers a push with its timestamp, and a repeated commit
            // (a gateway retrying, or a recovery that raced it) with the same one.
            (
                Committed { commit_ts },
                Push { .. } | Commit { .. } | Stage { .. } | Recovered { commit_ts: Some(_) },
            ) => Ok(Committed { commit_ts }),
            (Committed { commit_ts }, Abort | Recovered { commit_ts: None }) => Err(Refusal::Committed { commit_ts }),
            (Aborted, Push { .. } | Abort | Recovered { commit_ts: None }) => Ok(Aborted),
            (Aborted, Commit { .. } | Stage { .. } | Recovered { commit_ts: Some(_) }) => Err(Refusal::Aborted),
        }
    }

    /// Whether the outcome is decided.
    pub fn is_decided(self) -> bool {
        match self {
            TxnStatus::Pending { .. } | TxnStatus::Staging { .. } => false,
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
    fn a_staging_record_takes_the_pushes_before_it_and_refuses_those_after() {
        let pushed = TxnStatus::NEW.apply(RecordEvent::Push { above: ts(10, 3) }).unwrap();
        let staged = pushed.apply(RecordEvent::Stage { proposed: ts(9, 0) }).unwrap();
        assert_eq!(staged, TxnStatus::Staging { proposed: ts(10, 4) });
        assert_eq!(
            staged.apply(RecordEvent::Push { above: ts(20, 0) }),
            Err(Refusal::Staging)
        );
        assert_eq!(staged.apply(RecordEvent::Abort), Err(Refusal::Staging));
        assert_eq!(
            staged.apply(RecordEvent::Recovered {
                commit_ts: Some(ts(12, 0))
            }),
            Ok(TxnStatus::Committed { commit_ts: ts(12, 0) })
        );
        assert_eq!(
            staged.apply(RecordEvent::Recovered { commit_ts: None }),
            Ok(TxnStatus::Aborted)
        );
        assert_eq!(
            TxnStatus::NEW.apply(RecordEvent::Recovered {
                commit_ts: Some(ts(1, 0))
            }),
            Err(Refusal::NotStaged)
        );
        assert_eq!(
            TxnStatus::Aborted.apply(RecordEvent::Stage { proposed: ts(1, 0) }),
            Err(Refusal::Aborted),
            "a record aborted before its home prepared refuses the prepare"
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
            t.clone().prop_map(|proposed| RecordEvent::Commit { proposed }),
            Just(RecordEvent::Abort),
            t.clone().prop_map(|proposed| RecordEvent::Stage { proposed }),
            proptest::option::of(t).prop_map(|commit_ts| RecordEvent::Recovered { commit_ts }),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order: the first decision stands, a commit is above
        /// every push accepted before it (a reader that pushed never sees it), and a staging
        /// record is decided only by a commit or a recovery.
        #[test]
        fn the_first_decision_stands(events in proptest::collection::vec(event(), 0..30)) {
            let mut status = TxnStatus::NEW;
            let mut decided: Option<TxnStatus> = None;
            let mut pushes = Vec::new();
            for e in events {
                let after = status.apply(e);
                if let (RecordEvent::Push { above }, Ok(_), None) = (e, after, decided) {
                    pushes.push(above);
                }
                if let (TxnStatus::Staging { .. }, Ok(next)) = (status, after) && next.is_decided() {
                    prop_assert!(matches!(e, RecordEvent::Commit { .. } | RecordEvent::Recovered { .. }), "{:?}", e);
                }
                if let Ok(after) = after {
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
