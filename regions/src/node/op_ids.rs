//! Idempotent writes at the home (see [`regions_core::op_ids`]): before a write with an op id,
//! a repeat of an applied one is answered with the first write's result; just before the
//! write, the op id's row is prepared with the version it will make.

use std::sync::atomic::{AtomicU64, Ordering};

use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::{Previous, RETENTION_MS, previous_of};
use regions_core::protocol::{WriteCommand, WriteResponse};

use crate::store::Store;
use crate::{Error, Result};

use super::{LATEST, Region};

/// Prune old rows once per this many prepared writes.
const PRUNE_EVERY: u64 = 1_000;

static PREPARED: AtomicU64 = AtomicU64::new(0);

/// Prepares the row of a write with `op_id` about to make version `at` of `key`,
/// replacing `previous`; durable when this returns.
pub async fn prepare(
    store: &dyn Store,
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
/// applied op id gets the first write's answer; a cancelled op id is refused (see
/// `undo.rs`).
pub(crate) async fn before_write(region: &Region, key: &str, cmd: &WriteCommand) -> Result<BeforeWrite> {
    let Some(op_id) = &cmd.op_id else {
        return Ok(BeforeWrite {
            replay: None,
            current: None,
        });
    };
    if let Some(done) = region.store.op_applied(key, op_id).await? {
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
    prepare(&*region.store, key, op_id, at, current, region.clock.physical_ms()).await?;
    Ok(previous_of(current)?)
}
