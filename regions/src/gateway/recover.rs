//! The loop that resolves the intents of transactions whose gateway vanished: every second,
//! each intent held here whose prepare is older than [`EXPIRY_MS`] is settled through its
//! record: aborted there if still undecided (so a gateway that comes back cannot commit
//! it any more), or recovered if staging (committed if every home prepared, else aborted
//! after the homes that did not were told never to), then resolved here as the record says. Once an hour it also deletes the
//! transactions' records kept here that were last written longer ago than the op ids'
//! retention ([`RETENTION_MS`], a week): every intent is settled through its record within
//! seconds of its expiry, so one still waiting after a week belongs to a home that was away
//! that long, which comes back by a restore. The records of op ids and their tries are
//! kept: a saga's compensation may cancel or undo an op id at any time after it ran.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use regions_core::op_ids::RETENTION_MS;
use regions_core::txn::{EXPIRY_MS, RecordEvent, TxnStatus};

use crate::Result;
use crate::node::Region;
use crate::node::txn::Recovery;

/// How often the loop looks.
const INTERVAL: Duration = Duration::from_millis(1000);

/// How many rounds apart the records are pruned (an hour).
const PRUNE_EVERY: u64 = 3_600;

/// Runs rounds until the task is dropped.
pub async fn run(region: Arc<Region>) {
    let mut tick = tokio::time::interval(INTERVAL);
    for rounds in 0u64.. {
        tick.tick().await;
        if let Err(e) = round(&region).await {
            tracing::warn!(error = %e, "transaction recovery round failed; retrying");
        }
        if rounds % PRUNE_EVERY == 0 {
            let horizon = region.clock.physical_ms().saturating_sub(RETENTION_MS);
            match region.txn_prune_records(horizon).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old transaction records"),
                Err(e) => tracing::warn!(error = %e, "pruning transaction records failed; next hour"),
            }
            match region
                .store
                .txn_prune_copies(i64::try_from(horizon).unwrap_or(i64::MAX))
                .await
            {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old copies of peers' transaction states"),
                Err(e) => tracing::warn!(error = %e, "pruning copies of transaction states failed; next hour"),
            }
        }
    }
}

/// One round. Returns how many transactions it resolved here.
pub async fn round(region: &Region) -> Result<u64> {
    let now = region.clock.physical_ms();
    let mut done = BTreeSet::new();
    for intent in region.store.txn_intents().await? {
        if now.saturating_sub(intent.prepared_ms) < EXPIRY_MS || !done.insert(intent.txn.clone()) {
            continue;
        }
        let answer = match region
            .txn_record_event_at(&intent.record_home, &intent.txn, RecordEvent::Abort)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(txn = intent.txn, error = %e, "the record of an expired transaction is unreachable");
                continue;
            }
        };
        let status = match answer.status {
            // Staged: committed if every home prepared; a home that did not never will.
            TxnStatus::Staging { proposed } => {
                match region
                    .txn_recover_staged(&intent.txn, &intent.record_home, &intent.homes, proposed, true)
                    .await
                {
                    Ok(Recovery::Decided(status)) => status,
                    Ok(Recovery::Undecided { .. }) => {
                        tracing::warn!(
                            txn = intent.txn,
                            "a staging transaction whose intent here names no homes (laid by an older region) waits \
                             for its gateway's explicit commit"
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(txn = intent.txn, error = %e, "a staging transaction could not be recovered yet");
                        continue;
                    }
                }
            }
            status => status,
        };
        let commit_ts = match status {
            TxnStatus::Committed { commit_ts } => Some(commit_ts),
            TxnStatus::Aborted => None,
            // An abort always decides a pending record, and a recovery a staging one; an
            // undecided answer drops nothing.
            TxnStatus::Pending { .. } | TxnStatus::Staging { .. } => {
                tracing::warn!(
                    txn = intent.txn,
                    ?status,
                    "an expired transaction is still undecided; next round"
                );
                continue;
            }
        };
        let resolved = region.txn_resolve(&intent.txn, commit_ts).await?;
        tracing::info!(
            txn = intent.txn,
            committed = commit_ts.is_some(),
            resolved,
            "resolved the intents of a transaction whose gateway vanished"
        );
    }
    Ok(done.len() as u64)
}
