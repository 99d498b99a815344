//! The loop that resolves the intents of transactions whose gateway vanished: every second,
//! each intent held here whose prepare is older than [`EXPIRY_MS`] is settled through its
//! record: aborted there if still undecided (so a gateway that comes back cannot commit
//! it any more), then resolved here as the record says.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use regions_core::txn::{EXPIRY_MS, RecordEvent, TxnStatus};

use crate::Result;
use crate::node::Region;

/// How often the loop looks.
const INTERVAL: Duration = Duration::from_millis(1000);

/// Runs rounds until the task is dropped.
pub async fn run(region: Arc<Region>) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = round(&region).await {
            tracing::warn!(error = %e, "transaction recovery round failed; retrying");
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
        let commit_ts = match answer.status {
            TxnStatus::Committed { commit_ts } => Some(commit_ts),
            TxnStatus::Aborted | TxnStatus::Pending { .. } => None,
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
