//! Transactions at a region (see [`regions_core::txn`]): what a home does with the intents
//! of the keys it holds (`home.rs`: prepare, resolve, reads at a timestamp, and settling the
//! intents a read or a write meets), the records it keeps ([`Region::txn_record_event`]),
//! the calls it makes to other regions' records and homes, and the open transactions of
//! the clients it is the gateway of ([`Sessions`]).

mod copies;
mod home;
mod kept;
mod ops;
mod sessions;
mod staged;

use serde::Serialize;
use serde::de::DeserializeOwned;

use regions_core::hlc::Timestamp;
use regions_core::protocol::RecordAnswer;
use regions_core::txn::{RecordEvent, TxnStatus};

use super::Region;
use crate::{Error, Result};

pub use copies::{Copies, copy_loop};
pub use home::{Meeting, Settled};
pub use sessions::{Caller, Session, Sessions};
pub use staged::{Recovery, WAIT};

impl Region {
    /// Applies `event` to the record of `txn` kept here (written durably when it changes).
    /// The answer is given once a quorum of peers keeps a copy of the record as it stands
    /// (`copies.rs`).
    pub async fn txn_record_event(&self, txn: &str, event: RecordEvent) -> Result<RecordAnswer> {
        let answer = {
            let _one_at_a_time = self.records_lock.lock().await;
            self.record_event_locked(txn, event).await?
        };
        self.txn_copy_out(txn).await?;
        Ok(answer)
    }

    /// Commits the record of `txn` kept here at `proposed` or above, as the gateway of a
    /// parallel commit every home prepared does, and answers before a quorum keeps a copy of
    /// it: only this region may act on the answer until [`Region::txn_copy_out`] returned
    /// (it resolves its own keys; the other homes are resolved after the copy). Were its disk
    /// lost meanwhile, its peers' copies say staging, and a recovery finds every home
    /// prepared (none was resolved), so the outcome is the same.
    pub(crate) async fn txn_commit_here(&self, txn: &str, proposed: Timestamp) -> Result<RecordAnswer> {
        let _one_at_a_time = self.records_lock.lock().await;
        self.record_event_locked(txn, RecordEvent::Commit { proposed }).await
    }

    /// [`Region::txn_record_event`], with `records_lock` held by the caller.
    async fn record_event_locked(&self, txn: &str, event: RecordEvent) -> Result<RecordAnswer> {
        let stored = self.store.txn_record(txn).await?;
        let now = stored.unwrap_or(TxnStatus::NEW);
        match now.apply(event) {
            Ok(next) => {
                if stored != Some(next) && (next != TxnStatus::NEW || stored.is_some()) {
                    self.store.txn_set_record(txn, next, self.clock.physical_ms()).await?;
                }
                Ok(RecordAnswer {
                    status: next,
                    refused: false,
                })
            }
            Err(_) => Ok(RecordAnswer {
                status: now,
                refused: true,
            }),
        }
    }

    /// Deletes the transactions' records kept here that were last written before
    /// `horizon_ms` (the records of op ids and their tries are kept), a batch at a time,
    /// each under `records_lock` so that no record event runs meanwhile. Returns how many.
    pub async fn txn_prune_records(&self, horizon_ms: u64) -> Result<u64> {
        const BATCH: u32 = 1_000;
        let horizon_ms = i64::try_from(horizon_ms).unwrap_or(i64::MAX);
        let mut pruned = 0;
        loop {
            let n = {
                let _one_at_a_time = self.records_lock.lock().await;
                self.store.txn_prune_records(horizon_ms, BATCH).await?
            };
            pruned += n;
            if n < u64::from(BATCH) {
                return Ok(pruned);
            }
            tokio::task::yield_now().await;
        }
    }

    /// [`Region::txn_record_event`] at `home`, the region that keeps the record.
    pub async fn txn_record_event_at(&self, home: &str, txn: &str, event: RecordEvent) -> Result<RecordAnswer> {
        if home == self.name {
            return self.txn_record_event(txn, event).await;
        }
        let request = regions_core::protocol::RecordRequest {
            from: self.name.clone(),
            txn: txn.to_owned(),
            event,
        };
        self.call_peer(home, "/internal/v1/txn/record", &request).await
    }

    /// Posts `body` to `path` at region `peer` and decodes its answer; a failure to reach it,
    /// or a refusal, is [`Error::HomeUnreachable`] naming what it said.
    pub async fn call_peer<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        peer: &str,
        path: &str,
        body: &B,
    ) -> Result<R> {
        let unreachable = |reason: String| Error::HomeUnreachable {
            region: peer.to_owned(),
            reason,
        };
        let address = self
            .peers
            .iter()
            .find(|p| p.name == peer)
            .map(|p| p.address.clone())
            .ok_or_else(|| unreachable("not a member region".into()))?;
        let response = self
            .http
            .post(format!("{address}{path}"))
            .json(body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(unreachable(format!("{path} answered {status}: {text}")));
        }
        let answer = response.json().await.map_err(|e| unreachable(e.to_string()))?;
        self.touch(peer);
        Ok(answer)
    }
}
