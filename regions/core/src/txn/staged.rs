//! Parallel commits, as CockroachDB does them: the record is *staged* in the same round as
//! the prepares (its home stages it as it lays its own intents), and the transaction is
//! committed the moment every home of its keys has prepared it, at the greatest proposal.
//! Its gateway answers the client then, and only afterwards writes the record's explicit
//! commit and resolves the intents. So a commit costs one round to the farthest home, not
//! two.
//!
//! Whoever meets an intent of a staging transaction and cannot wait for that explicit
//! commit (a single-key write, a prepare or reader whose wait ran out, the recovery loop
//! once the prepare expired) *recovers* it: it asks every home ([`AtHome`]), telling those
//! that have not prepared to refuse the prepare for good, and [`decide`]s from the answers.
//! A home's answer is durable both ways: a prepare once laid stays until the record is
//! decided (intents are resolved only after that), and a refusal is written before it is
//! given. So every recovery reaches the outcome the gateway saw, and no two disagree.

use serde::{Deserialize, Serialize};

use super::TxnStatus;
use crate::hlc::Timestamp;

/// What a home says of a transaction's prepare, asked by a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at_home", rename_all = "snake_case")]
pub enum AtHome {
    /// Its intents are laid here, at this proposal.
    Prepared {
        /// The home's proposal.
        proposed: Timestamp,
    },
    /// Not prepared here, yet: its prepare may still arrive (the asker did not ask to
    /// prevent it).
    Absent,
    /// Not prepared here, and never will be: a prepare arriving from now on is refused.
    Prevented,
    /// The record is kept here and is decided.
    Decided {
        /// What it says.
        status: TxnStatus,
    },
}

/// What a recovery does once every home answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record is decided already: resolve as it says.
    Decided(TxnStatus),
    /// Every home prepared: the transaction committed, at this timestamp.
    Commit(Timestamp),
    /// A home will never prepare: the transaction aborted.
    Abort,
    /// A home has not prepared yet and was not asked to refuse (or no home was asked):
    /// ask again later. If it commits, it is at or above `floor` (the greatest proposal
    /// known so far).
    Wait {
        /// The lowest commit timestamp left to it.
        floor: Timestamp,
    },
}

/// The outcome of a transaction staged at `staged` (the record's proposal), from every
/// home's answer.
pub fn decide(staged: Timestamp, answers: &[AtHome]) -> Outcome {
    let mut commit_ts = staged;
    // No answer is no evidence: a transaction is committed only if homes said so.
    let mut absent = answers.is_empty();
    let mut prevented = false;
    for answer in answers {
        match *answer {
            AtHome::Decided { status } if status.is_decided() => return Outcome::Decided(status),
            AtHome::Prepared { proposed } => commit_ts = commit_ts.max(proposed),
            AtHome::Prevented => prevented = true,
            AtHome::Absent | AtHome::Decided { .. } => absent = true,
        }
    }
    if prevented {
        Outcome::Abort
    } else if absent {
        Outcome::Wait { floor: commit_ts }
    } else {
        Outcome::Commit(commit_ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    fn prepared(wall_ms: u64) -> AtHome {
        AtHome::Prepared { proposed: ts(wall_ms) }
    }

    #[test]
    fn every_home_prepared_commits_at_the_greatest_proposal() {
        assert_eq!(decide(ts(5), &[prepared(3), prepared(9)]), Outcome::Commit(ts(9)));
        assert_eq!(
            decide(ts(10), &[prepared(3), prepared(9)]),
            Outcome::Commit(ts(10)),
            "the staged proposal holds the pushes before it"
        );
    }

    #[test]
    fn one_home_that_never_prepares_aborts_it_and_one_that_may_still_makes_it_wait() {
        assert_eq!(decide(ts(5), &[prepared(3), AtHome::Prevented]), Outcome::Abort);
        assert_eq!(
            decide(ts(5), &[prepared(8), AtHome::Absent]),
            Outcome::Wait { floor: ts(8) },
            "it may still commit, and then not below 8"
        );
        assert_eq!(
            decide(ts(5), &[]),
            Outcome::Wait { floor: ts(5) },
            "no homes, no evidence"
        );
        assert_eq!(decide(ts(5), &[AtHome::Absent, AtHome::Prevented]), Outcome::Abort);
    }

    #[test]
    fn a_decided_record_is_the_answer() {
        let committed = TxnStatus::Committed { commit_ts: ts(7) };
        assert_eq!(
            decide(ts(5), &[AtHome::Prevented, AtHome::Decided { status: committed }]),
            Outcome::Decided(committed),
            "a home that resolved after the explicit commit may be told to refuse; the record knows"
        );
        assert_eq!(
            decide(
                ts(5),
                &[AtHome::Decided {
                    status: TxnStatus::Staging { proposed: ts(5) }
                }]
            ),
            Outcome::Wait { floor: ts(5) }
        );
    }
}
