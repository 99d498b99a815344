//! The one-request transaction (`POST /v1/txn`): reads, conditions on versions, writes
//! (values, deletions, or additions to a number as the snapshot has it), commit.
//!
//! With an `op_id` it is exactly-once (a saga's `txn` step): each try is claimed at the
//! region that keeps the op id's records (`crate::node::txn` `ops.rs`), which aborts the
//! previous try or, if one committed, answers with it; the try's record is kept there too,
//! so that its commit and every later claim are decided in one place, one at a time. With
//! `undoes` (a compensation) the op id it undoes is cancelled first: if it never
//! committed it never will, and nothing is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use regions_core::hlc::Timestamp;
use regions_core::protocol::{CommitResponse, OneShotRequest, OpRequest, OpState};
use regions_core::txn::Txn;

use super::{commit, read_at_home, shown};
use crate::node::Region;
use crate::{Error, Result};

/// Where the records of `op_id`'s tries are kept: the home its name hashes to.
fn ops_home(region: &Region, op_id: &str) -> String {
    region.home(&format!("txn-ops/{op_id}")).region
}

/// Claims (`cancel`: cancels) `op_id` at the region keeping its records.
async fn op_call(region: &Region, op_id: &str, cancel: bool) -> Result<OpState> {
    let home = ops_home(region, op_id);
    if home == region.name {
        return if cancel {
            region.txn_op_cancel(op_id).await
        } else {
            region.txn_op_claim(op_id).await
        };
    }
    let path = if cancel {
        "/internal/v1/txn/cancel"
    } else {
        "/internal/v1/txn/claim"
    };
    let request = OpRequest {
        from: region.name.clone(),
        op_id: op_id.to_owned(),
    };
    region.call_peer(&home, path, &request).await
}

/// The greatest timestamp below `ts`.
fn before(ts: Timestamp) -> Timestamp {
    match ts.logical.checked_sub(1) {
        Some(logical) => Timestamp { logical, ..ts },
        None => Timestamp {
            wall_ms: ts.wall_ms.saturating_sub(1),
            logical: u32::MAX,
        },
    }
}

/// Refuses a write that could never be applied (a key written anywhere, both an `add` and
/// a `value`, an addition's path that is no JSON Pointer) before anything is claimed or
/// cancelled, so that no op id's state changes for a request that is wrong.
fn check_writes(region: &Region, req: &OneShotRequest) -> Result<()> {
    for (i, w) in req.writes.iter().enumerate() {
        if let Some(prefix) = region.placement().writes_anywhere(&w.key) {
            return Err(Error::BadRequest(format!(
                "/writes/{i}/key: {:?} is under {prefix:?}, written anywhere: transactions need a key's home",
                w.key
            )));
        }
        match (&w.add, &w.value) {
            (Some(_), Some(_)) => {
                return Err(Error::BadRequest(format!(
                    "/writes/{i}: an `add` or a `value`, not both"
                )));
            }
            (Some(add), None) => add
                .check()
                .map_err(|e| Error::BadRequest(format!("/writes/{i}/add/path: {e}")))?,
            (None, _) => {}
        }
    }
    Ok(())
}

/// A transaction in one request (see the module's notes).
pub async fn one_shot(region: &Arc<Region>, req: &OneShotRequest) -> Result<CommitResponse> {
    check_writes(region, req)?;
    let undone = match &req.undoes {
        None => None,
        Some(action) => match op_call(region, action, true).await? {
            OpState::Committed { .. } => Some(true),
            OpState::Cancelled | OpState::Run { .. } => {
                return Ok(CommitResponse {
                    id: String::new(),
                    commit_ts: String::new(),
                    reads: BTreeMap::new(),
                    replayed: false,
                    undone: Some(false),
                });
            }
        },
    };
    let (id, record_home) = match &req.op_id {
        Some(op_id) if !req.writes.is_empty() => match op_call(region, op_id, false).await? {
            OpState::Run { txn } => (txn, Some(ops_home(region, op_id))),
            OpState::Committed { txn, commit_ts } => {
                // Its reads as they were: nothing wrote them between its snapshot and its
                // commit (it was serializable), so just below the commit they are the same.
                let before = before(commit_ts);
                let mut reads = BTreeMap::new();
                for key in &req.reads {
                    reads.insert(key.clone(), shown(key, read_at_home(region, key, before).await?)?);
                }
                return Ok(CommitResponse {
                    id: txn,
                    commit_ts: commit_ts.to_string(),
                    reads,
                    replayed: true,
                    undone,
                });
            }
            OpState::Cancelled => {
                return Err(Error::OpCancelled {
                    key: req.writes[0].key.clone(),
                    op_id: op_id.clone(),
                });
            }
        },
        Some(_) | None => (uuid::Uuid::new_v4().to_string(), None),
    };
    let mut txn = Txn::new(id, region.clock.now());
    let mut keys: Vec<&str> = req.reads.iter().map(String::as_str).collect();
    keys.extend(req.conditions.iter().map(|c| c.key.as_str()));
    keys.extend(req.writes.iter().filter(|w| w.add.is_some()).map(|w| w.key.as_str()));
    keys.sort_unstable();
    keys.dedup();
    let reads = futures::future::try_join_all(keys.iter().map(|k| read_at_home(region, k, txn.read_ts))).await?;
    let mut versions = BTreeMap::new();
    for (key, version) in keys.iter().zip(reads) {
        txn.read(key, version.as_ref().map(|v| v.ts));
        versions.insert(key.to_string(), version);
    }
    for (i, c) in req.conditions.iter().enumerate() {
        let expected: Timestamp = c
            .version
            .parse()
            .map_err(|e: String| Error::BadRequest(format!("/conditions/{i}/version: {e}")))?;
        let live = versions[&c.key]
            .as_ref()
            .filter(|v| v.value.is_some())
            .map_or(Timestamp::default(), |v| v.ts);
        if live != expected {
            return Err(Error::VersionMismatch {
                key: c.key.clone(),
                expected,
                current: live,
            });
        }
    }
    for w in &req.writes {
        let text = match (&w.add, &w.value) {
            (Some(add), _) => {
                // Its own earlier write of the key in this request, else the snapshot's.
                let current = match txn.own_write(&w.key) {
                    Some(own) => own.map(|text| regions_core::mvcc::Version {
                        ts: txn.read_ts,
                        value: Some(text.to_owned()),
                    }),
                    None => versions[&w.key].clone(),
                };
                Some(add.apply(&w.key, current.as_ref())?.to_string())
            }
            (None, value) => value.as_ref().map(ToString::to_string),
        };
        txn.write(&w.key, text);
    }
    let commit_ts = commit::commit_with_record_at(region, &txn, record_home).await?;
    let mut shown_reads = BTreeMap::new();
    for key in &req.reads {
        shown_reads.insert(key.clone(), shown(key, versions[key].clone())?);
    }
    Ok(CommitResponse {
        id: txn.id,
        commit_ts: commit_ts.to_string(),
        reads: shown_reads,
        replayed: false,
        undone,
    })
}
