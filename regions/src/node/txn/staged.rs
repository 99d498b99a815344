//! What a region does for parallel commits ([`regions_core::txn::staged`]): answers a
//! recovery's question about a transaction's prepare here (preventing it on request), asks
//! every home that question, and settles the intents of staging transactions it meets.

use std::time::Duration;

use futures::future::join_all;
use regions_core::hlc::Timestamp;
use regions_core::protocol::StatusRequest;
use regions_core::txn::staged::{Outcome, decide};
use regions_core::txn::{AtHome, EXPIRY_MS, RecordEvent, TxnIntent, TxnStatus};

use super::super::Region;
use super::Meeting;
use crate::{Error, Result};

/// How long a reader waits (holding no lock) before it asks a staging transaction's homes
/// again.
pub const WAIT: Duration = Duration::from_millis(10);

/// What a recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The record is decided.
    Decided(TxnStatus),
    /// Undecided: a home may still prepare it. If it commits, it is at or above `floor`.
    Undecided {
        /// The greatest proposal known.
        floor: Timestamp,
    },
}

impl Region {
    /// Whether `txn` (whose record is at `record_home`) prepared here; if it did not and
    /// `prevent` is set, it never will: a prepare arriving later is refused. Answered once a
    /// quorum of peers keeps a copy of what it says (`copies.rs`).
    pub async fn txn_status_here(&self, txn: &str, record_home: &str, prevent: bool) -> Result<AtHome> {
        let _gate = self.txn_gate(txn).lock().await;
        let answer = self.status_gated(txn, record_home, prevent).await?;
        if answer != AtHome::Absent {
            self.txn_copy_out(txn).await?;
        }
        Ok(answer)
    }

    /// [`Region::txn_status_here`], the transaction's gate held.
    async fn status_gated(&self, txn: &str, record_home: &str, prevent: bool) -> Result<AtHome> {
        let intents = self.store.txn_intents_of(txn).await?;
        if let Some(proposed) = intents.iter().map(|i| i.proposed).max() {
            return Ok(AtHome::Prepared { proposed });
        }
        let keeps_record = record_home == self.name;
        match self.store.txn_record(txn).await? {
            // Only the record's home's record decides; anywhere else an aborted record is a
            // refusal this question left.
            Some(status) if keeps_record && status.is_decided() => return Ok(AtHome::Decided { status }),
            Some(TxnStatus::Aborted) => return Ok(AtHome::Prevented),
            // Staged only as the intents were laid, and they go only once it is decided.
            Some(TxnStatus::Staging { .. }) if keeps_record => {
                return Err(Error::Corrupt(format!(
                    "transaction {txn} is staged here without its intents"
                )));
            }
            Some(TxnStatus::Staging { .. }) => {}
            Some(TxnStatus::Pending { .. } | TxnStatus::Committed { .. }) | None => {}
        }
        if !prevent {
            return Ok(AtHome::Absent);
        }
        let answer = self.txn_record_event(txn, RecordEvent::Abort).await?;
        Ok(match answer.status {
            TxnStatus::Aborted => AtHome::Prevented,
            status if keeps_record && status.is_decided() => AtHome::Decided { status },
            _ => AtHome::Absent,
        })
    }

    /// [`Region::txn_status_here`] at `home`.
    async fn txn_status_at(&self, home: &str, txn: &str, record_home: &str, prevent: bool) -> Result<AtHome> {
        if home == self.name {
            return self.txn_status_here(txn, record_home, prevent).await;
        }
        let request = StatusRequest {
            from: self.name.clone(),
            txn: txn.to_owned(),
            record_home: record_home.to_owned(),
            prevent,
        };
        self.call_peer(home, "/internal/v1/txn/status", &request).await
    }

    /// Recovers `txn`, staged at `staged` in its record at `record_home`: asks every home
    /// whether it prepared (preventing it where it did not, if `prevent`), and decides the
    /// record from the answers. Undecided only when a home may still prepare (never with
    /// `prevent`, unless `homes` is empty: intents laid by a region older than parallel
    /// commits name none, and then only the gateway's explicit commit decides).
    pub async fn txn_recover_staged(
        &self,
        txn: &str,
        record_home: &str,
        homes: &[String],
        staged: Timestamp,
        prevent: bool,
    ) -> Result<Recovery> {
        let asked = join_all(homes.iter().map(|h| self.txn_status_at(h, txn, record_home, prevent))).await;
        let answers = asked.into_iter().collect::<Result<Vec<_>>>()?;
        let event = match decide(staged, &answers) {
            Outcome::Decided(status) => return Ok(Recovery::Decided(status)),
            Outcome::Wait { floor } => return Ok(Recovery::Undecided { floor }),
            Outcome::Commit(commit_ts) => RecordEvent::Recovered {
                commit_ts: Some(commit_ts),
            },
            Outcome::Abort => RecordEvent::Recovered { commit_ts: None },
        };
        let status = self.txn_record_event_at(record_home, txn, event).await?.status;
        if !status.is_decided() {
            return Err(Error::Corrupt(format!(
                "the record of transaction {txn} took a recovery's decision and says {status:?}"
            )));
        }
        tracing::info!(txn, ?status, "recovered a staging transaction");
        Ok(Recovery::Decided(status))
    }

    /// Settles `intent`, whose record says staging at `staged`, as `meeting` needs it:
    /// returns the record decided, or still staging when `meeting` may pass it; `None` when
    /// a read at a timestamp must wait for it (without its key's lock) and ask again.
    pub(super) async fn settle_staged(
        &self,
        intent: &TxnIntent,
        staged: Timestamp,
        meeting: Meeting,
    ) -> Result<Option<TxnStatus>> {
        let staging = TxnStatus::Staging { proposed: staged };
        if intent.homes.is_empty() {
            // Laid by a region older than parallel commits: only the gateway's explicit
            // commit, which follows at once, decides it.
            return Err(Error::HomeUnreachable {
                region: intent.record_home.clone(),
                reason: format!(
                    "transaction {} is staging and its intent on {:?} names no homes (laid by an older region); \
                     its gateway decides it; retry",
                    intent.txn, intent.key
                ),
            });
        }
        let expired = || self.clock.physical_ms().saturating_sub(intent.prepared_ms) >= EXPIRY_MS;
        let recover =
            |prevent: bool| self.txn_recover_staged(&intent.txn, &intent.record_home, &intent.homes, staged, prevent);
        let status = match meeting {
            // It commits at or above its staged proposal: after this read.
            Meeting::ReadAt(ts) if staged > ts => staging,
            // A live transaction holds its keys against other transactions.
            Meeting::Prepare if !expired() => staging,
            // A write never passes it undecided: it decides it now.
            Meeting::Write | Meeting::Prepare => match recover(true).await? {
                Recovery::Decided(status) => status,
                Recovery::Undecided { .. } => {
                    return Err(Error::HomeUnreachable {
                        region: intent.record_home.clone(),
                        reason: format!(
                            "transaction {} is staging and its homes could not decide it; retry",
                            intent.txn
                        ),
                    });
                }
            },
            // Every home prepared: committed, and seen. Else it commits after this read.
            Meeting::ReadLatest => match recover(false).await? {
                Recovery::Decided(status) => status,
                Recovery::Undecided { .. } => staging,
            },
            // It may commit at or below this read: decided if every home prepared (or, once
            // its prepare expired, by preventing those that did not); passed as soon as a
            // home's proposal is above the read; else the reader waits for the rest.
            Meeting::ReadAt(ts) => match recover(expired()).await? {
                Recovery::Decided(status) => status,
                Recovery::Undecided { floor } if floor > ts => staging,
                Recovery::Undecided { .. } => return Ok(None),
            },
        };
        Ok(Some(status))
    }
}
