//! Intents and the conflict rules a home applies when it prepares a transaction.
//!
//! A key a transaction wrote gets a *write* intent (its new value, `None` for a deletion);
//! a key it only read gets a *read* intent, which locks it against writers but not against
//! readers. A prepare is refused ([`Conflict`]) when a key changed after the transaction's
//! snapshot (first committer wins, on reads as well as writes: that is what rules out write
//! skew) or when another transaction holds an intent that excludes ours.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;

/// What an intent does to its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentKind {
    /// The key was read: writers wait for the outcome.
    Read,
    /// The key is written: `value` (JSON text; `None` deletes) becomes a version at the
    /// commit timestamp.
    Write {
        /// The new value.
        value: Option<String>,
    },
}

impl IntentKind {
    /// The stored name of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            IntentKind::Read => "read",
            IntentKind::Write { .. } => "write",
        }
    }

    /// Whether an intent of this kind and one of `other`'s, by different transactions,
    /// exclude each other (everything but two reads).
    pub fn excludes(&self, other: &IntentKind) -> bool {
        match (self, other) {
            (IntentKind::Read, IntentKind::Read) => false,
            (IntentKind::Read, IntentKind::Write { .. })
            | (IntentKind::Write { .. }, IntentKind::Read)
            | (IntentKind::Write { .. }, IntentKind::Write { .. }) => true,
        }
    }
}

/// A transaction's intent on one key, as its home stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnIntent {
    /// The transaction.
    pub txn: String,
    /// The key.
    pub key: String,
    /// Read or write.
    pub kind: IntentKind,
    /// Where the transaction's record is.
    pub record_home: String,
    /// Every home of the transaction's keys, when its record is staged beside the prepares
    /// (a parallel commit: [`super::staged`]); empty when its gateway commits it explicitly.
    pub homes: Vec<String>,
    /// The timestamp this home proposed (no closed timestamp passes it until resolved).
    pub proposed: Timestamp,
    /// When this home stored it (its physical clock, ms): it may be aborted by anyone once
    /// [`super::EXPIRY_MS`] older and still undecided.
    pub prepared_ms: u64,
}

/// Why a prepare was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", describe(.key, .with, .newer))]
pub struct Conflict {
    /// The key.
    pub key: String,
    /// The transaction that holds it, when another one does.
    pub with: Option<String>,
    /// The version written after the snapshot, when one was.
    pub newer: Option<Timestamp>,
}

fn describe(key: &str, with: &Option<String>, newer: &Option<Timestamp>) -> String {
    match (with, newer) {
        (Some(txn), _) => format!("key {key:?} is held by transaction {txn}"),
        (None, Some(ts)) => format!("key {key:?} was written at {ts}, after this transaction's snapshot"),
        (None, None) => format!("key {key:?} conflicts"),
    }
}

/// Checks that transaction `txn`, with snapshot `read_ts`, may lay an intent of `kind` on
/// `key`, whose newest version is at `latest` and which carries the intents `held`
/// (undecided ones: the caller resolved the decided ones first).
pub fn check(
    txn: &str,
    read_ts: Timestamp,
    key: &str,
    kind: &IntentKind,
    latest: Option<Timestamp>,
    held: &[TxnIntent],
) -> Result<(), Conflict> {
    if let Some(other) = held.iter().find(|h| h.txn != txn && kind.excludes(&h.kind)) {
        return Err(Conflict {
            key: key.to_owned(),
            with: Some(other.txn.clone()),
            newer: None,
        });
    }
    match latest {
        Some(ts) if ts > read_ts => Err(Conflict {
            key: key.to_owned(),
            with: None,
            newer: Some(ts),
        }),
        Some(_) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    fn held(txn: &str, kind: IntentKind) -> TxnIntent {
        TxnIntent {
            txn: txn.into(),
            key: "k".into(),
            kind,
            record_home: "r".into(),
            homes: Vec::new(),
            proposed: ts(1),
            prepared_ms: 1,
        }
    }

    const W: IntentKind = IntentKind::Write { value: None };

    #[test]
    fn readers_share_and_writers_exclude() {
        let read = [held("b", IntentKind::Read)];
        assert!(check("a", ts(5), "k", &IntentKind::Read, None, &read).is_ok());
        assert_eq!(
            check("a", ts(5), "k", &W, None, &read).unwrap_err().with.as_deref(),
            Some("b")
        );
        let write = [held("b", W)];
        assert!(check("a", ts(5), "k", &IntentKind::Read, None, &write).is_err());
        assert!(
            check("b", ts(5), "k", &W, None, &write).is_ok(),
            "its own intent is no conflict"
        );
    }

    #[test]
    fn a_newer_version_loses_the_race_for_reads_and_writes() {
        for kind in [IntentKind::Read, W] {
            assert_eq!(
                check("a", ts(5), "k", &kind, Some(ts(6)), &[]).unwrap_err().newer,
                Some(ts(6))
            );
            assert!(check("a", ts(5), "k", &kind, Some(ts(5)), &[]).is_ok());
        }
    }
}
