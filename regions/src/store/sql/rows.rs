//! Reading rows into the store's types (the column names are the same in both schemas).

use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::{Applied, previous_of};
use regions_core::protocol::{CounterRow, EntryKind, EntryState, Gap, LogEntry, VersionId, VersionRow};
use regions_core::replica::ReplicaState;

use super::conn::Cols;
use crate::{Error, Result};

/// The timestamp in columns `ts_wall` and `ts_logical`.
pub(super) fn ts_of(row: &impl Cols) -> Result<Timestamp> {
    ts_cols(row, "ts_wall", "ts_logical")
}

/// The timestamp in columns `w` and `l`.
fn ts_cols(row: &impl Cols, w: &str, l: &str) -> Result<Timestamp> {
    let (wall, logical) = (row.int(w)?, row.int(l)?);
    Ok(Timestamp {
        wall_ms: u64::try_from(wall).map_err(|_| Error::Corrupt(format!("timestamp {wall}")))?,
        logical: u32::try_from(logical).map_err(|_| Error::Corrupt(format!("logical {logical}")))?,
    })
}

/// The timestamp in nullable columns `w` and `l` (`None` when `w` is NULL).
fn opt_ts(row: &impl Cols, w: &str, l: &str) -> Result<Option<Timestamp>> {
    match row.opt_int(w)? {
        Some(_) => ts_cols(row, w, l).map(Some),
        None => Ok(None),
    }
}

/// The version a row names as replaced (`prev_*` columns).
fn prev_of(row: &impl Cols) -> Result<Option<VersionId>> {
    let origin = row.opt_text("prev_home")?;
    Ok(match (opt_ts(row, "prev_wall", "prev_logical")?, origin) {
        (Some(ts), Some(origin)) => Some(VersionId { ts, origin }),
        _ => None,
    })
}

/// A replication log entry.
pub(super) fn entry_of(row: &impl Cols) -> Result<LogEntry> {
    let state = row.text("state")?;
    let kind = row.text("kind")?;
    Ok(LogEntry {
        seq: row.int("seq")?,
        key: row.text("key")?,
        ts: ts_of(row)?,
        value: row.opt_text("value")?,
        state: EntryState::parse(&state).ok_or_else(|| Error::Corrupt(format!("log state {state:?}")))?,
        kind: EntryKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("log kind {kind:?}")))?,
        prev: prev_of(row)?,
    })
}

/// The columns of `replica_state` that [`state_of`] reads.
pub(super) const STATE_COLUMNS: &str = "applied_seq, closed_wall AS ts_wall, closed_logical AS ts_logical, gap_seq, \
     gap_wall, gap_logical, frozen_wall, frozen_logical";

/// A row of `replica_state` (selected with [`STATE_COLUMNS`]).
pub(super) fn state_of(r: &impl Cols) -> Result<ReplicaState> {
    let gap = match (r.opt_int("gap_seq")?, opt_ts(r, "gap_wall", "gap_logical")?) {
        (Some(upto_seq), Some(upto_ts)) => Some(Gap { upto_seq, upto_ts }),
        _ => None,
    };
    Ok(ReplicaState {
        applied_seq: r.int("applied_seq")?,
        closed: ts_of(r)?,
        gap,
        frozen: opt_ts(r, "frozen_wall", "frozen_logical")?,
    })
}

/// A stored version with its origin and ancestry.
pub(super) fn version_row_of(r: &impl Cols) -> Result<VersionRow> {
    Ok(VersionRow {
        key: r.text("key")?,
        ts: ts_of(r)?,
        value: r.opt_text("value")?,
        origin: r.text("home")?,
        prev: prev_of(r)?,
    })
}

/// A counter component.
pub(super) fn counter_row(r: &impl Cols) -> Result<CounterRow> {
    Ok(CounterRow {
        key: r.text("key")?,
        region: r.text("region")?,
        component: Component {
            p: r.int("p")?,
            n: r.int("n")?,
        },
    })
}

/// A row of `op_ids` (its `ts_*`, `prev_*` and `prev_value` columns) as [`Applied`].
pub(super) fn applied_of(row: &impl Cols) -> Result<Applied> {
    let version = ts_of(row)?;
    let previous = match (row.opt_int("prev_wall")?, row.opt_int("prev_logical")?) {
        (Some(_), Some(_)) => previous_of(Some(&Version {
            ts: ts_cols(row, "prev_wall", "prev_logical")?,
            value: Some(row.opt_text("prev_value")?.unwrap_or_else(|| "null".to_owned())),
        }))?,
        _ => None,
    };
    Ok(Applied {
        version: version.to_string(),
        previous,
    })
}
