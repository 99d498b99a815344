//! The commit of a transaction that wrote something, in two phases:
//!
//! 1. **Prepare** at every home of its keys, in parallel: each validates its keys against
//!    the snapshot and lays intents durably, or refuses (a conflict).
//! 2. **Decide** at the record (the gateway, when it homes a written key; else the home of
//!    the first written key): commit at the greatest
//!    proposal, or at the timestamp readers pushed it to. A record aborted meanwhile (its
//!    prepare expired, or a write aborted it) refuses; so does an undecided one given an
//!    abort. This one write is the commit point: before it nothing is visible anywhere, after
//!    it every reader that meets an intent sees the version.
//! 3. **Resolve** every home's intents, awaited before the answer. Readers and the recovery
//!    loop resolve through the record too, so a lost resolve is only late; but the record is
//!    kept at one region and not replicated, so answering before the resolves would leave
//!    the other homes' keys depending on that region (blocked while it is away, and lost
//!    with its disk) after the client was told the transaction committed. Resolving after
//!    the answer is for when the record is replicated.
//!
//! A gateway that dies anywhere leaves all or nothing: before the record was written its
//! intents expire and are aborted through the record, after it they resolve to versions.

use std::sync::Arc;

use futures::future::join_all;
use regions_core::hlc::Timestamp;
use regions_core::protocol::{Prepare, Prepared, Resolve};
use regions_core::txn::{Planned, RecordEvent, Txn, TxnStatus};

use crate::node::Region;
use crate::{Error, Result};

/// Commits `txn`; returns its commit timestamp (its snapshot if it wrote nothing).
pub(super) async fn commit(region: &Arc<Region>, txn: &Txn) -> Result<Timestamp> {
    commit_with_record_at(region, txn, None).await
}

/// [`commit`], with the record at `record_home` rather than where the plan puts it (an
/// exactly-once transaction's record goes where its op id's tries are kept).
pub(super) async fn commit_with_record_at(
    region: &Arc<Region>,
    txn: &Txn,
    record_home: Option<String>,
) -> Result<Timestamp> {
    let Some(mut plan) = txn.plan(|k| region.home(k).region, &region.name) else {
        // Read-only: its reads are one snapshot (every writer met was pushed above it, and
        // every home's clock passed it), so it is serializable at its snapshot as it is.
        return Ok(txn.read_ts);
    };
    if let Some(home) = record_home {
        plan.record_home = home;
    }
    let prepares = plan.by_home.iter().map(|(home, intents)| {
        let p = Prepare {
            from: region.name.clone(),
            txn: txn.id.clone(),
            read_ts: txn.read_ts,
            record_home: plan.record_home.clone(),
            intents: intents.clone(),
        };
        async move {
            if *home == region.name {
                region.txn_prepare(&p).await
            } else {
                region.call_peer(home, "/internal/v1/txn/prepare", &p).await
            }
        }
    });
    let mut proposed = txn.read_ts;
    let mut failure = None;
    for answer in join_all(prepares).await {
        match answer {
            Ok(Prepared::Prepared { proposed: p }) => proposed = proposed.max(p),
            Ok(Prepared::Conflict(c)) => {
                failure.get_or_insert(Error::TxnConflict {
                    txn: txn.id.clone(),
                    detail: c.to_string(),
                    key: c.key,
                    with: c.with,
                });
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        abort(region, txn, &plan).await;
        return Err(e);
    }
    crash_if_asked("prepared");
    let decided = region
        .txn_record_event_at(&plan.record_home, &txn.id, RecordEvent::Commit { proposed })
        .await
        .map_err(|e| match e {
            Error::HomeUnreachable { region, reason } => Error::HomeUnreachable {
                region,
                reason: format!(
                    "{reason}; the transaction's record could not be written and it may or may not have committed \
                     (it is decided there: committed, or aborted once its prepare expires)"
                ),
            },
            other => other,
        })?;
    match decided.status {
        TxnStatus::Committed { commit_ts } => {
            crash_if_asked("decided");
            if crash_asked("resolved-one")
                && let Some(home) = plan.by_home.keys().find(|h| **h != region.name)
            {
                resolve_at(region, txn, home, Some(commit_ts)).await;
                crash_if_asked("resolved-one");
            }
            resolve(region, txn, &plan, Some(commit_ts)).await;
            // The client's next snapshot here starts above its own commit, whether or not
            // this region homes a key of it. The commit is decided whatever the clock says.
            if let Err(e) = region.clock.update(commit_ts) {
                tracing::warn!(txn = txn.id, error = %e, "a commit timestamp is ahead of this region's clock");
            }
            Ok(commit_ts)
        }
        TxnStatus::Aborted | TxnStatus::Pending { .. } => {
            resolve(region, txn, &plan, None).await;
            let key = txn.writes.keys().next().cloned().unwrap_or_default();
            Err(Error::TxnConflict {
                txn: txn.id.clone(),
                key,
                with: None,
                detail: "it was aborted before it could commit (a single-key write to one of its keys, or its \
                         prepare expired)"
                    .into(),
            })
        }
    }
}

/// Aborts `txn` at its record, then drops its intents (best effort: the recovery loop
/// drops what is left once it expired).
async fn abort(region: &Region, txn: &Txn, plan: &Planned) {
    match region
        .txn_record_event_at(&plan.record_home, &txn.id, RecordEvent::Abort)
        .await
    {
        Ok(answer) => {
            let commit_ts = match answer.status {
                TxnStatus::Committed { commit_ts } => Some(commit_ts),
                TxnStatus::Aborted | TxnStatus::Pending { .. } => None,
            };
            resolve(region, txn, plan, commit_ts).await;
        }
        Err(e) => {
            tracing::warn!(txn = txn.id, error = %e, "could not abort a transaction; its intents expire");
        }
    }
}

/// Sends the outcome to every home of the plan, in parallel.
async fn resolve(region: &Region, txn: &Txn, plan: &Planned, commit_ts: Option<Timestamp>) {
    join_all(plan.by_home.keys().map(|home| resolve_at(region, txn, home, commit_ts))).await;
}

/// Sends the outcome to `home` (failures are logged: readers and the recovery loop resolve
/// through the record too).
async fn resolve_at(region: &Region, txn: &Txn, home: &str, commit_ts: Option<Timestamp>) {
    let outcome = if home == region.name {
        region.txn_resolve(&txn.id, commit_ts).await.map(|_| ())
    } else {
        let r = Resolve {
            from: region.name.clone(),
            txn: txn.id.clone(),
            commit_ts,
        };
        region
            .call_peer::<_, serde_json::Value>(home, "/internal/v1/txn/resolve", &r)
            .await
            .map(|_| ())
    };
    if let Err(e) = outcome {
        tracing::warn!(txn = txn.id, home, error = %e, "intents not resolved yet; readers and the recovery loop will");
    }
}

/// The environment variable of the commit's fault injection, for tests: a gateway started
/// with `GEOSAGA_TXN_CRASH_AT=prepared` (every home prepared, no record written),
/// `decided` (the record committed, nothing resolved) or `resolved-one` (one other home
/// resolved) aborts its process there, as a SIGKILL at that point would.
pub const CRASH_AT: &str = "GEOSAGA_TXN_CRASH_AT";

fn crash_asked(point: &str) -> bool {
    std::env::var(CRASH_AT).is_ok_and(|p| p == point)
}

fn crash_if_asked(point: &str) {
    if crash_asked(point) {
        eprintln!("{CRASH_AT}={point}: the gateway aborts in the middle of a commit");
        std::process::abort();
    }
}
