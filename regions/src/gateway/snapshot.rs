//! `POST /v1/snapshot`: several keys read at one timestamp. Served from this region's own
//! copies when every key's home has closed a timestamp here fresh enough for the bound
//! asked (the snapshot is then read at the oldest of those closed timestamps), else read
//! at each key's home at the timestamp asked for, or now.
//!
//! Why a local snapshot never shows part of a transaction: a home closes a timestamp only
//! below the proposal of every transaction prepared there and not resolved, and below every
//! log entry it has not shipped; a transaction's commit timestamp is at least each of its
//! proposals. So a transaction committed at or below the snapshot's timestamp was resolved,
//! and its versions shipped here, at every home whose closed timestamp covers the snapshot.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use regions_core::closed;
use regions_core::hlc::Timestamp;
use regions_core::protocol::{SnapshotRequest, SnapshotResponse};

use super::{read_at_home, shown};
use crate::node::Region;
use crate::{Error, Result};

/// The most keys one snapshot reads.
const MAX_KEYS: usize = 1000;

/// Reads `req.keys` at one timestamp.
pub async fn snapshot(region: &Region, req: &SnapshotRequest) -> Result<SnapshotResponse> {
    if req.keys.is_empty() || req.keys.len() > MAX_KEYS {
        return Err(Error::BadRequest(format!("/keys: 1 to {MAX_KEYS} keys")));
    }
    let placement = region.placement();
    for (i, key) in req.keys.iter().enumerate() {
        if let Some(prefix) = placement.writes_anywhere(key) {
            return Err(Error::BadRequest(format!(
                "/keys/{i}: {key:?} is under {prefix:?}, written anywhere: snapshots need a key's home"
            )));
        }
    }
    let as_of = req
        .as_of
        .as_deref()
        .map(|t| {
            t.parse::<Timestamp>()
                .map_err(|e| Error::BadRequest(format!("/as_of: {e}")))
        })
        .transpose()?;
    if let (None, Some(max)) = (as_of, req.max_staleness_ms)
        && let Some((ts, bound)) = local_timestamp(region, &req.keys)
        && bound <= max
    {
        let reads = try_join_all(req.keys.iter().map(|key| async move {
            if region.home(key).region == region.name {
                region.txn_read_at(key, ts).await
            } else {
                region.store.read(key, ts).await
            }
        }))
        .await?;
        return answer(region, &req.keys, reads, ts, true, bound);
    }
    let ts = as_of.unwrap_or_else(|| region.clock.now());
    let horizon = region.gc_horizon();
    if ts < horizon {
        return Err(Error::BeyondRetention { as_of: ts, horizon });
    }
    let reads = try_join_all(req.keys.iter().map(|key| read_at_home(region, key, ts))).await?;
    answer(region, &req.keys, reads, ts, false, 0)
}

fn answer(
    region: &Region,
    keys: &[String],
    reads: Vec<Option<regions_core::mvcc::Version>>,
    ts: Timestamp,
    local: bool,
    staleness_bound_ms: u64,
) -> Result<SnapshotResponse> {
    let mut values = BTreeMap::new();
    for (key, version) in keys.iter().zip(reads) {
        values.insert(key.clone(), shown(key, version)?);
    }
    Ok(SnapshotResponse {
        ts: ts.to_string(),
        values,
        served_by: region.name.clone(),
        local,
        staleness_bound_ms,
    })
}

/// The freshest timestamp this region holds every home of `keys` up to, and how stale it
/// may be; `None` when a key is not replicated here or a home has closed nothing here yet.
fn local_timestamp(region: &Region, keys: &[String]) -> Option<(Timestamp, u64)> {
    let placement = region.placement();
    let mut ts = region.clock.now();
    for key in keys {
        let home = placement.home(key).region;
        if home == region.name {
            continue;
        }
        if !placement.replicates_to(key, &region.name) {
            return None;
        }
        ts = ts.min(region.closed_for(&home)?);
    }
    let bound = closed::staleness_bound_ms(ts, region.clock.physical_ms(), region.config.max_clock_offset_ms);
    Some((ts, bound))
}
