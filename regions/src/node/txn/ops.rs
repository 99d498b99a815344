//! Exactly-once transactions (`POST /v1/txn` with an `op_id`, a saga's `txn` step): the
//! tries of one op id are transactions `try/1/OP`, `try/2/OP`, ... whose records are kept
//! here, beside the op id's own record `op/OP`, which names the latest try (a pending record
//! whose logical timestamp is its number) or says the op id was cancelled (aborted).
//!
//! Every claim and cancellation runs under `records_lock`, like every record event, so
//! that one op id commits at most once: a new try first aborts the latest one (the first
//! decision of a record stands, so a try aborted here can never commit later), or, if
//! that one committed, answers with it instead of running again.

use regions_core::hlc::Timestamp;
use regions_core::protocol::OpState;
use regions_core::txn::{OP_RECORD_PREFIXES, RecordEvent, TxnStatus};

use crate::node::Region;
use crate::{Error, Result};

/// The record naming an op id's latest try.
fn op_record(op_id: &str) -> String {
    format!("{}{op_id}", OP_RECORD_PREFIXES[0])
}

/// Try `n` of an op id.
fn try_id(op_id: &str, n: u32) -> String {
    format!("{}{n}/{op_id}", OP_RECORD_PREFIXES[1])
}

/// What the op id's record says.
enum Tries {
    /// None yet.
    None,
    /// The latest is this one.
    Latest(u32),
    /// Cancelled.
    Cancelled,
}

impl Region {
    /// A claim of a new try of `op_id` (see the module's notes).
    pub async fn txn_op_claim(&self, op_id: &str) -> Result<OpState> {
        let _one_at_a_time = self.records_lock.lock().await;
        let next = match self.tries(op_id).await? {
            Tries::Cancelled => return Ok(OpState::Cancelled),
            Tries::None => 1,
            Tries::Latest(n) => match self.fence(op_id, n).await? {
                Some(committed) => return Ok(committed),
                None => n + 1,
            },
        };
        let next = match self.first_free_try(op_id, next).await? {
            Ok(free) => free,
            Err(committed) => return Ok(committed),
        };
        let latest = TxnStatus::Pending {
            min_commit_ts: Timestamp {
                wall_ms: 0,
                logical: next,
            },
        };
        self.store
            .txn_set_record(&op_record(op_id), latest, self.clock.physical_ms())
            .await?;
        Ok(OpState::Run {
            txn: try_id(op_id, next),
        })
    }

    /// A cancellation of `op_id`: the committed try if there is one, else `Cancelled`
    /// (and no try of it commits from now on).
    pub async fn txn_op_cancel(&self, op_id: &str) -> Result<OpState> {
        let _one_at_a_time = self.records_lock.lock().await;
        let after = match self.tries(op_id).await? {
            Tries::Cancelled => return Ok(OpState::Cancelled),
            Tries::None => 1,
            Tries::Latest(n) => {
                if let Some(committed) = self.fence(op_id, n).await? {
                    return Ok(committed);
                }
                n + 1
            }
        };
        if let Err(committed) = self.first_free_try(op_id, after).await? {
            return Ok(committed);
        }
        self.store
            .txn_set_record(&op_record(op_id), TxnStatus::Aborted, self.clock.physical_ms())
            .await?;
        Ok(OpState::Cancelled)
    }

    async fn tries(&self, op_id: &str) -> Result<Tries> {
        match self.store.txn_record(&op_record(op_id)).await? {
            None => Ok(Tries::None),
            Some(TxnStatus::Aborted) => Ok(Tries::Cancelled),
            Some(TxnStatus::Pending { min_commit_ts }) => Ok(Tries::Latest(min_commit_ts.logical)),
            Some(status @ (TxnStatus::Committed { .. } | TxnStatus::Staging { .. })) => Err(Error::Corrupt(format!(
                "the record of op id {op_id:?} says {status:?}, which only a try's record may"
            ))),
        }
    }

    /// The first try of `op_id` from `n` on that has no record, every later one that has
    /// one fenced on the way; `Err` names the one that committed. The op id's own record
    /// names the latest try, except after a restore from a backup, which takes back the
    /// tries' records (their decisions are copied to the peers) but not the op id's.
    async fn first_free_try(&self, op_id: &str, mut n: u32) -> Result<std::result::Result<u32, OpState>> {
        loop {
            if self.store.txn_record(&try_id(op_id, n)).await?.is_none() {
                return Ok(Ok(n));
            }
            if let Some(committed) = self.fence(op_id, n).await? {
                return Ok(Err(committed));
            }
            n += 1;
        }
    }

    /// Aborts try `n` of `op_id` unless it committed; `Some` names it when it did.
    async fn fence(&self, op_id: &str, n: u32) -> Result<Option<OpState>> {
        let txn = try_id(op_id, n);
        let answer = self.record_event_locked(&txn, RecordEvent::Abort).await?;
        match answer.status {
            TxnStatus::Committed { commit_ts } => Ok(Some(OpState::Committed { txn, commit_ts })),
            TxnStatus::Aborted | TxnStatus::Pending { .. } => Ok(None),
            // Tries commit explicitly (`gateway::commit_with_record_at`): never staged.
            TxnStatus::Staging { .. } => Err(Error::Corrupt(format!("try {txn:?} of an op id is staging"))),
        }
    }
}
