//! Idempotent writes. A write may carry an `op_id` (a saga step's idempotency key): its
//! home records it, and a repeat of it is answered with the first one's result
//! (`"replayed": true`) instead of writing again, so a client that lost an answer, or a
//! coordinator that crashed, can retry without applying anything twice.
//!
//! Under the key's write lock, before a write, the home *prepares* a row (key, op_id) with
//! the write's timestamp and the live version it replaces; a trigger marks the row applied
//! in the transaction that makes the version visible (`migrations/regions/0003_op_ids.sql`,
//! and its PostgreSQL twin in `migrations/regions-postgres`).
//! A write that aborted, or that a crash cut off, leaves its row unapplied: a repeat then
//! writes afresh and prepares the row again. Rows are kept for [`RETENTION_MS`].
//!
//! An op id can also be *cancelled*: the undo of a write that was not applied records it
//! ([`crate::undo`]), and a write carrying it is refused from then on (`op-cancelled`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::mvcc::Version;
use crate::node::{LATEST, Region};
use crate::protocol::{WriteCommand, WriteResponse};
use crate::store::Store;
use crate::store::rows::Cols;
use crate::{Error, Result};

/// How long a home remembers an op id: a repeat later than this writes again.
pub const RETENTION_MS: u64 = 7 * 24 * 3_600_000;
/// Longest op id accepted.
pub const MAX_OP_ID_BYTES: usize = 512;
/// Prune old rows once per this many prepared writes.
const PRUNE_EVERY: u64 = 1_000;

static PREPARED: AtomicU64 = AtomicU64::new(0);

/// The live version a write replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Previous {
    /// Its version (`WALL_MS.LOGICAL`).
    pub version: String,
    /// Its value.
    pub value: serde_json::Value,
}

/// What an applied write with an op id did, as recorded at its home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The version it made.
    pub version: String,
    /// The live version it replaced (`None`: the key had none).
    pub previous: Option<Previous>,
}

/// Checks an op id given by a client.
pub fn check(op_id: &str) -> std::result::Result<(), String> {
    if op_id.is_empty() || op_id.len() > MAX_OP_ID_BYTES {
        return Err(format!("an op_id has 1 to {MAX_OP_ID_BYTES} bytes"));
    }
    Ok(())
}

fn ts(wall: i64, logical: i64) -> Result<Timestamp> {
    Ok(Timestamp {
        wall_ms: u64::try_from(wall).map_err(|_| Error::Corrupt(format!("op timestamp {wall}")))?,
        logical: u32::try_from(logical).map_err(|_| Error::Corrupt(format!("op logical {logical}")))?,
    })
}

/// The live version of a key as [`Previous`] (`None`: absent or deleted).
pub fn previous_of(version: Option<&Version>) -> Result<Option<Previous>> {
    match version {
        Some(Version { ts, value: Some(text) }) => Ok(Some(Previous {
            version: ts.to_string(),
            value: serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored value: {e}")))?,
        })),
        Some(Version { value: None, .. }) | None => Ok(None),
    }
}

/// The recorded result of `op_id` on `key`, if a write with it was applied.
pub async fn applied(store: &Store, key: &str, op_id: &str) -> Result<Option<Applied>> {
    store.op_applied(key, op_id).await
}

/// Reads a row of `op_ids` (its `ts_*`, `prev_*` and `prev_value` columns) as [`Applied`].
pub(crate) fn applied_of(row: &impl Cols) -> Result<Applied> {
    let version = ts(row.int("ts_wall")?, row.int("ts_logical")?)?;
    let prev_value = row.opt_text("prev_value")?;
    let previous = match (row.opt_int("prev_wall")?, row.opt_int("prev_logical")?) {
        (Some(w), Some(l)) => previous_of(Some(&Version {
            ts: ts(w, l)?,
            value: Some(prev_value.unwrap_or_else(|| "null".to_owned())),
        }))?,
        _ => None,
    };
    Ok(Applied {
        version: version.to_string(),
        previous,
    })
}

/// Prepares the row of a write with `op_id` about to make version `at` of `key`,
/// replacing `previous`; durable when this returns.
pub async fn prepare(
    store: &Store,
    key: &str,
    op_id: &str,
    at: Timestamp,
    previous: Option<&Version>,
    now_ms: u64,
) -> Result<()> {
    store
        .op_prepare(key, op_id, at, previous, i64::try_from(now_ms).unwrap_or(i64::MAX))
        .await?;
    if PREPARED.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        let horizon = i64::try_from(now_ms.saturating_sub(RETENTION_MS)).unwrap_or(0);
        store.op_prune(horizon).await?;
    }
    Ok(())
}

/// What a write with an op id found before writing.
pub(crate) struct BeforeWrite {
    /// The first write's answer, if this op id was applied already.
    pub(crate) replay: Option<WriteResponse>,
    /// The key's version now (writes with an op id only).
    pub(crate) current: Option<Version>,
}

/// Under the key's write lock at its home, before the write's checks: a repeat of an
/// applied op id gets the first write's answer; a cancelled op id is refused.
pub(crate) async fn before_write(region: &Region, key: &str, cmd: &WriteCommand) -> Result<BeforeWrite> {
    let Some(op_id) = &cmd.op_id else {
        return Ok(BeforeWrite {
            replay: None,
            current: None,
        });
    };
    if let Some(done) = applied(&region.store, key, op_id).await? {
        return Ok(BeforeWrite {
            replay: Some(WriteResponse {
                key: key.to_owned(),
                version: done.version,
                home_region: region.name.clone(),
                served_by: region.name.clone(),
                consistency: cmd.consistency,
                previous: done.previous,
                value: None,
                replayed: true,
                undo: None,
            }),
            current: None,
        });
    }
    if region.store.op_cancelled(key, op_id).await? {
        return Err(Error::OpCancelled {
            key: key.to_owned(),
            op_id: op_id.clone(),
        });
    }
    Ok(BeforeWrite {
        replay: None,
        current: region.store.read(key, LATEST).await?,
    })
}

/// Just before the write makes version `at`: prepares the op id's row, and returns the
/// live version the write replaces (writes with an op id only).
pub(crate) async fn prepare_write(
    region: &Region,
    key: &str,
    cmd: &WriteCommand,
    at: Timestamp,
    current: Option<&Version>,
) -> Result<Option<Previous>> {
    let Some(op_id) = &cmd.op_id else { return Ok(None) };
    prepare(&region.store, key, op_id, at, current, region.clock.physical_ms()).await?;
    previous_of(current)
}
