//! Undoing a write by its op id, whatever became of it: the compensation of a saga step
//! whose write may or may not have been applied (it timed out, or its region answered
//! 5xx), and the barrier that keeps a late original from applying after it.
//!
//! `PATCH /v1/kv/{key}` with `{"undo": {"op_id": A}, "op_id": C}` (C: the undo's own op id)
//! is executed by the key's home under the key's write lock, so no write of the key, the
//! original included, runs meanwhile:
//!
//! 1. C applied already: the first undo's answer (a repeat).
//! 2. A cancelled already: nothing to undo (a repeat of a cancellation).
//! 3. A applied: it is undone. An `add` is undone by the inverse delta the request carries
//!    (`"undo": {"op_id": A, "add": {"path", "delta"}}`), which commutes with other
//!    additions. A `put`, `cas` or `delete` is undone by writing back the value A replaced
//!    (as A's op id record holds it; deleting the key if it had none), only if A's version
//!    is still the key's latest: otherwise someone wrote since, and the undo is refused
//!    with `version-mismatch` rather than losing their write. The undo write carries C.
//! 4. A not applied (never arrived, aborted, or cut off by a crash): A is recorded as
//!    cancelled (`op_cancelled`, durable before the answer), and from then on a write
//!    carrying A is refused with `op-cancelled` (`op_ids::before_write`): an
//!    original that arrives after its compensation never applies.
//!
//! The answer is a write's answer with `"undo": {"op_id": A, "applied": bool}`: whether A
//! had been applied (and is now undone) or was cancelled. Keys written anywhere keep op
//! ids per region, so no region can tell whether A applied elsewhere: their undo is
//! refused. Op ids and cancellations are kept for [`regions_core::op_ids::RETENTION_MS`].

use regions_core::hlc::Timestamp;
use regions_core::protocol::{Undo, Undone, WriteCommand, WriteResponse};

use super::{LATEST, Region};
use crate::{Error, Result};

/// Executes `cmd` (which carries `undo`) at `key`'s home, the key's write lock held.
pub(super) async fn undo_locked(
    region: &Region,
    key: &str,
    home: &str,
    cmd: &WriteCommand,
    undo: &Undo,
) -> Result<WriteResponse> {
    if let Some(prefix) = region.placement().writes_anywhere(key) {
        return Err(Error::BadRequest(format!(
            "/undo: keys under {prefix:?} are written anywhere and each region keeps its own op ids, so no \
             region can tell whether {:?} was applied elsewhere; undo it by hand",
            undo.op_id
        )));
    }
    let Some(own) = &cmd.op_id else {
        return Err(Error::BadRequest("/op_id: an undo needs an op_id of its own".into()));
    };
    let undone = |applied: bool| Undone {
        op_id: undo.op_id.clone(),
        applied,
    };
    // 1. A repeat of an undo that wrote.
    if let Some(done) = region.store.op_applied(key, own).await? {
        return Ok(WriteResponse {
            key: key.to_owned(),
            version: done.version,
            home_region: home.to_owned(),
            served_by: region.name.clone(),
            consistency: cmd.consistency,
            previous: done.previous,
            value: None,
            replayed: true,
            undo: Some(undone(true)),
        });
    }
    // 2. A repeat of a cancellation.
    if region.store.op_cancelled(key, &undo.op_id).await? {
        return unchanged(region, key, home, cmd, undone(false), true).await;
    }
    // 3. The write was applied: undo it.
    if let Some(applied) = region.store.op_applied(key, &undo.op_id).await? {
        let inverse = match &undo.add {
            Some(add) => WriteCommand {
                value: None,
                add: Some(regions_core::add::Add {
                    min: None,
                    max: None,
                    ..add.clone()
                }),
                if_version: None,
                undo: None,
                ..cmd.clone()
            },
            None => {
                let written: Timestamp = applied
                    .version
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("op id record: {e}")))?;
                let latest = region.store.read(key, LATEST).await?;
                let latest_ts = latest.as_ref().map_or(Timestamp::default(), |v| v.ts);
                if latest_ts != written {
                    return Err(Error::VersionMismatch {
                        key: key.to_owned(),
                        expected: written,
                        current: latest_ts,
                    });
                }
                let absent_now = latest.as_ref().is_none_or(|v| v.value.is_none());
                if applied.previous.is_none() && absent_now {
                    // A deletion of a key that had no value: there is nothing to restore.
                    let mut answer = unchanged(region, key, home, cmd, undone(true), false).await?;
                    answer.version = written.to_string();
                    return Ok(answer);
                }
                WriteCommand {
                    value: applied.previous.as_ref().map(|p| p.value.to_string()),
                    add: None,
                    if_version: None,
                    undo: None,
                    ..cmd.clone()
                }
            }
        };
        let mut answer = Box::pin(region.write_locked(key, home, &inverse)).await?;
        answer.undo = Some(undone(true));
        return Ok(answer);
    }
    // 4. Not applied: cancel it, so that it never applies.
    region
        .store
        .op_cancel(
            key,
            &undo.op_id,
            i64::try_from(region.clock.physical_ms()).unwrap_or(i64::MAX),
        )
        .await?;
    unchanged(region, key, home, cmd, undone(false), false).await
}

/// The answer of an undo that wrote nothing: the key's version as it is.
async fn unchanged(
    region: &Region,
    key: &str,
    home: &str,
    cmd: &WriteCommand,
    undone: Undone,
    replayed: bool,
) -> Result<WriteResponse> {
    let latest = region.store.read(key, LATEST).await?;
    Ok(WriteResponse {
        key: key.to_owned(),
        version: latest.map_or(Timestamp::default(), |v| v.ts).to_string(),
        home_region: home.to_owned(),
        served_by: region.name.clone(),
        consistency: cmd.consistency,
        previous: None,
        value: None,
        replayed,
        undo: Some(undone),
    })
}
