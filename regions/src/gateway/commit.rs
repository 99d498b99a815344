//! The commit of a transaction that wrote something, as a parallel commit
//! ([`regions_core::txn::staged`]):
//!
//! 1. **Prepare** at every home of its keys, in parallel: each validates its keys against
//!    the snapshot and lays intents durably, or refuses (a conflict). The record's home (the
//!    gateway, when it homes a written key; else the home of the first written key) stages
//!    the record in the same step, at its proposal raised above every push so far. A home
//!    answers once a quorum of its keys' replicas keeps a copy of what it prepared
//!    (`node::txn`'s copies), counting the gateway, which keeps the copy the answer carries
//!    before it counts the answer. Once every home prepared, the transaction is committed,
//!    at the greatest proposal: the client is answered then.
//! 2. **Commit the record explicitly**, then **resolve** every home's intents. When the
//!    gateway keeps the record, both are local and done before the answer (the gateway's
//!    own keys are then readable at once); the other homes are resolved after it, each
//!    keeping a copy of the committed record (the resolve carries it) before it resolves.
//!    Until a
//!    home is resolved, whoever meets an intent there finds the outcome by asking the record
//!    and, while it is staging, every home. Resolves follow the explicit commit, never
//!    precede it: a home that resolved no longer holds the intents a recovery asks about.
//!
//! A transaction whose record is placed elsewhere by the caller (an exactly-once
//! transaction's record is kept with its op id's tries), one whose every key is homed at
//! the gateway (all of it is local, so staging would save nothing), and one with a home
//! older than parallel commits are committed explicitly instead: prepares, then the
//! record's commit as the one commit point, then the resolves, awaited.
//!
//! A gateway that dies anywhere leaves all or nothing: if every home prepared it committed,
//! and recoveries find it so; else a recovery tells a home that did not prepare never to,
//! and aborts it.

use std::sync::Arc;

use futures::future::join_all;
use regions_core::hlc::Timestamp;
use regions_core::protocol::{CopyRequest, Prepare, Prepared, Resolve};
use regions_core::txn::{Planned, RecordEvent, Txn, TxnStatus};

use crate::node::Region;
use crate::node::txn::Recovery;
use crate::{Error, Result};

/// Commits `txn`; returns its commit timestamp (its snapshot if it wrote nothing).
pub(super) async fn commit(region: &Arc<Region>, txn: &Txn) -> Result<Timestamp> {
    commit_with_record_at(region, txn, None).await
}

/// [`commit`], with the record at `record_home` rather than where the plan puts it (an
/// exactly-once transaction's record goes where its op id's tries are kept); such a
/// transaction commits explicitly.
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
    // Staging saves a round only when a home is remote: a transaction whose every key is
    // homed at the gateway commits explicitly, all of it local.
    let parallel = record_home.is_none() && plan.by_home.keys().any(|home| *home != region.name);
    if let Some(home) = record_home {
        plan.record_home = home;
    }
    let homes: Vec<String> = if parallel {
        plan.by_home.keys().cloned().collect()
    } else {
        Vec::new()
    };
    let prepare = |home: &String, intents: &Vec<_>| {
        let p = Prepare {
            from: region.name.clone(),
            txn: txn.id.clone(),
            read_ts: txn.read_ts,
            record_home: plan.record_home.clone(),
            intents: intents.clone(),
            homes: homes.clone(),
            stage: parallel && *home == plan.record_home,
            // A remote home counts the gateway towards the quorum that keeps a copy of what
            // it prepared: the copy comes with the answer, and is kept here before the answer
            // counts. That saves the home a round.
            keeps_copy: *home != region.name,
        };
        let home = home.clone();
        async move {
            if home == region.name {
                return region.txn_prepare(&p).await;
            }
            let mut answer: Prepared = region.call_peer(&home, "/internal/v1/txn/prepare", &p).await?;
            if let Prepared::Prepared { copy, .. } = &mut answer
                && let Some(copy) = copy.take()
            {
                let request = CopyRequest {
                    from: home.clone(),
                    copy,
                };
                region
                    .txn_keep_copy(&request)
                    .await
                    .map_err(|e| Error::HomeUnreachable {
                        region: home.clone(),
                        reason: format!("its prepare's copy could not be kept here: {e}"),
                    })?;
            }
            Ok(answer)
        }
    };
    if crash_asked("staged")
        && let Some(intents) = plan.by_home.get(&plan.record_home)
    {
        // The record's home prepares and stages alone, and the gateway dies.
        let staged = prepare(&plan.record_home, intents).await;
        crash_if_asked("staged");
        tracing::error!(?staged, "unreachable: the crash above");
    }
    let answers = join_all(plan.by_home.iter().map(|(home, intents)| prepare(home, intents))).await;
    let mut proposed = txn.read_ts;
    let mut failure = None;
    // Every home must have taken part: one older than parallel commits has not, and then
    // the record decides explicitly (committing it from staging as from pending).
    let mut parallel = parallel;
    for answer in answers {
        match answer {
            Ok(Prepared::Prepared {
                proposed: p,
                parallel: took_part,
                ..
            }) => {
                proposed = proposed.max(p);
                parallel &= took_part;
            }
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
        return abort(region, txn, &plan, &homes, e).await;
    }
    crash_if_asked("prepared");
    if parallel {
        // Every home prepared and the record is staged: committed, at `proposed`.
        return finish(region, txn, plan, proposed).await;
    }
    let decided = region
        .txn_record_event_at(&plan.record_home, &txn.id, RecordEvent::Commit { proposed })
        .await
        .map_err(|e| {
            unreachable_because(
                e,
                "the transaction's record could not be written and it may or may not have committed (it is \
                 decided there: committed, or aborted once its prepare expires)",
            )
        })?;
    match decided.status {
        TxnStatus::Committed { commit_ts } => {
            crash_if_asked("decided");
            resolve(region, txn, &plan, Some(commit_ts)).await;
            caught_up(region, txn, commit_ts);
            Ok(commit_ts)
        }
        TxnStatus::Aborted => {
            resolve(region, txn, &plan, None).await;
            Err(aborted_before_commit(txn))
        }
        // A commit always decides a pending or staging record.
        status @ (TxnStatus::Pending { .. } | TxnStatus::Staging { .. }) => Err(Error::Corrupt(format!(
            "the record of transaction {} took a commit and says {status:?}",
            txn.id
        ))),
    }
}

/// The rest of a parallel commit that every home prepared, committed at `commit_ts`: the
/// record's explicit commit and the resolves. What is local to the gateway is done before
/// it returns; the rest follows in the background (see the module's notes). Returns the
/// commit timestamp.
async fn finish(region: &Arc<Region>, txn: &Txn, plan: Planned, commit_ts: Timestamp) -> Result<Timestamp> {
    caught_up(region, txn, commit_ts);
    if plan.record_home != region.name {
        let (region, txn) = (region.clone(), txn.clone());
        tokio::spawn(async move {
            if explicit_commit(&region, &txn, &plan, commit_ts).await == Some(TxnStatus::Committed { commit_ts }) {
                resolve(&region, &txn, &plan, Some(commit_ts)).await;
            }
        });
        return Ok(commit_ts);
    }
    // The record is here: committed now, answered before a quorum keeps the commit's copy
    // (the other homes are resolved only after it does).
    let recorded = match region.txn_commit_here(&txn.id, commit_ts).await {
        Ok(answer) => Some(answer.status),
        Err(e) => {
            tracing::warn!(txn = txn.id, error = %e, "the explicit commit was not written; a recovery will find it committed");
            None
        }
    };
    match recorded {
        Some(TxnStatus::Committed { commit_ts: recorded }) if recorded == commit_ts => {}
        // The record here says otherwise, which no recovery can make it say: answer what
        // it says.
        Some(status) => {
            return Err(Error::Corrupt(format!(
                "transaction {} committed at {commit_ts} by its homes' prepares, and its record says {status:?}",
                txn.id
            )));
        }
        // Committed all the same: every home prepared.
        None => return Ok(commit_ts),
    }
    crash_if_asked("decided");
    if plan.by_home.contains_key(&region.name) {
        resolve_at(region, txn, &region.name, Some(commit_ts)).await;
    }
    let others: Vec<String> = plan.by_home.keys().filter(|h| **h != region.name).cloned().collect();
    // Each other home keeps a copy of the committed record before it resolves (the resolve
    // carries it); a quorum keeps one too, for whoever asks the record.
    let rest = {
        let (region, txn) = (region.clone(), txn.clone());
        async move {
            if crash_asked("resolved-one")
                && let Some(home) = others.first()
            {
                resolve_carrying_the_record(&region, &txn, home, commit_ts).await;
                crash_if_asked("resolved-one");
            }
            let resolves = join_all(
                others
                    .iter()
                    .map(|home| resolve_carrying_the_record(&region, &txn, home, commit_ts)),
            );
            let (copied, _) = futures::join!(region.txn_copy_out(&txn.id), resolves);
            if let Err(e) = copied {
                tracing::warn!(txn = txn.id, error = %e, "the commit's copy is not kept by a quorum yet; the record's next answer copies it");
            }
        }
    };
    if crash_asked("resolved-one") {
        rest.await;
    } else {
        tokio::spawn(rest);
    }
    Ok(commit_ts)
}

/// Writes the explicit commit of a transaction every home prepared; the record after it
/// (`None` if it could not be written: the resolves then wait for a recovery, which finds
/// the same outcome). Resolves follow it only when it says committed at `commit_ts`.
async fn explicit_commit(region: &Region, txn: &Txn, plan: &Planned, commit_ts: Timestamp) -> Option<TxnStatus> {
    let event = RecordEvent::Commit { proposed: commit_ts };
    match region.txn_record_event_at(&plan.record_home, &txn.id, event).await {
        Ok(answer) if answer.status == (TxnStatus::Committed { commit_ts }) => Some(answer.status),
        Ok(answer) => {
            tracing::error!(txn = txn.id, %commit_ts, status = ?answer.status, "a transaction every home prepared has another outcome at its record");
            Some(answer.status)
        }
        Err(e) => {
            tracing::warn!(txn = txn.id, error = %e, "the explicit commit was not written; a recovery will find it committed");
            None
        }
    }
}

/// The client's next snapshot here starts above its own commit, whether or not this region
/// homes a key of it. The commit is decided whatever the clock says.
fn caught_up(region: &Region, txn: &Txn, commit_ts: Timestamp) {
    if let Err(e) = region.clock.update(commit_ts) {
        tracing::warn!(txn = txn.id, error = %e, "a commit timestamp is ahead of this region's clock");
    }
}

fn aborted_before_commit(txn: &Txn) -> Error {
    let key = txn.writes.keys().next().cloned().unwrap_or_default();
    Error::TxnConflict {
        txn: txn.id.clone(),
        key,
        with: None,
        detail: "it was aborted before it could commit (a single-key write to one of its keys, or its prepare \
                 expired)"
            .into(),
    }
}

/// A commit that failed with `error` (a home refused or could not be reached): aborts the
/// transaction at its record, or, if the record is staging, recovers it (a home that was
/// not reached may have prepared, and then it committed), and resolves every home as
/// decided. Returns the commit timestamp if it committed after all, else `error`.
async fn abort(region: &Region, txn: &Txn, plan: &Planned, homes: &[String], error: Error) -> Result<Timestamp> {
    let answer = region
        .txn_record_event_at(&plan.record_home, &txn.id, RecordEvent::Abort)
        .await;
    let status = match answer.map(|a| a.status) {
        Ok(TxnStatus::Staging { proposed }) => {
            region
                .txn_recover_staged(&txn.id, &plan.record_home, homes, proposed, true)
                .await
        }
        Ok(status) => Ok(Recovery::Decided(status)),
        Err(e) => Err(e),
    };
    match status {
        Ok(Recovery::Decided(TxnStatus::Committed { commit_ts })) => {
            resolve(region, txn, plan, Some(commit_ts)).await;
            caught_up(region, txn, commit_ts);
            Ok(commit_ts)
        }
        Ok(Recovery::Decided(TxnStatus::Aborted)) => {
            resolve(region, txn, plan, None).await;
            Err(unreachable_because(
                error,
                "the transaction was aborted: nothing of it was applied",
            ))
        }
        Ok(Recovery::Undecided { .. } | Recovery::Decided(TxnStatus::Pending { .. } | TxnStatus::Staging { .. }))
        | Err(_) => {
            tracing::warn!(
                txn = txn.id,
                ?status,
                "could not abort a transaction; its intents expire"
            );
            Err(unreachable_because(
                error,
                "the transaction may or may not have committed (a recovery decides it once its prepare expires)",
            ))
        }
    }
}

/// `error`, with what it means for the transaction added when a region was unreachable.
fn unreachable_because(error: Error, meaning: &str) -> Error {
    match error {
        Error::HomeUnreachable { region, reason } => Error::HomeUnreachable {
            region,
            reason: format!("{reason}; {meaning}"),
        },
        other => other,
    }
}

/// Sends the outcome to every home of the plan, in parallel.
async fn resolve(region: &Region, txn: &Txn, plan: &Planned, commit_ts: Option<Timestamp>) {
    join_all(plan.by_home.keys().map(|home| resolve_at(region, txn, home, commit_ts))).await;
}

/// Sends a commit to `home` with a copy of the record kept here, which `home` keeps before
/// it resolves (failures are logged: readers and the recovery loop resolve through the
/// record too, once a quorum keeps it).
async fn resolve_carrying_the_record(region: &Region, txn: &Txn, home: &str, commit_ts: Timestamp) {
    let outcome = match region.txn_copy_for(&txn.id, home).await {
        Ok(record) => {
            let r = Resolve {
                from: region.name.clone(),
                txn: txn.id.clone(),
                commit_ts: Some(commit_ts),
                record: Some(record),
            };
            region
                .call_peer::<_, serde_json::Value>(home, "/internal/v1/txn/resolve", &r)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(txn = txn.id, home, error = %e, "intents not resolved yet; readers and the recovery loop will");
    }
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
            record: None,
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
/// with `GEOSAGA_TXN_CRASH_AT=staged` (the record's home prepared and staged, no other
/// home asked), `prepared` (every home prepared, the record still staging), `decided` (the
/// record committed explicitly, nothing resolved) or `resolved-one` (the gateway's own
/// keys and one other home resolved) aborts its process there, as a SIGKILL at that point
/// would.
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
