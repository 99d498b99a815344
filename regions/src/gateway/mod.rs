//! The gateway of transactions: the region a client begins a transaction at keeps it open
//! (`crate::node::txn::Sessions`), reads each key at its home at the snapshot, buffers the
//! writes, and commits them across the homes (`commit.rs`, a parallel commit: the record
//! staged with the prepares, committed once every home prepared). `one_shot.rs` is the one-request form (with its
//! exactly-once op ids); `snapshot.rs` reads several keys at one timestamp; `recover.rs` is
//! the loop that resolves the intents whose gateway vanished.

mod commit;
mod one_shot;
pub mod recover;
mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;

use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::protocol::{BeginResponse, CommitResponse, ReadAt, ReadAtAnswer, TxnPutRequest, TxnValue};
use regions_core::txn::Txn;

use crate::node::Region;
use crate::node::txn::Caller;
use crate::{Error, Result};

pub use commit::CRASH_AT;
pub use one_shot::one_shot;
pub use snapshot::snapshot;

/// Begins a transaction at `region` with a snapshot at its clock's now, for `owner` (who
/// alone may go on with it; `None`: anyone, on a region without tokens).
pub fn begin(region: &Region, owner: Option<Caller>) -> BeginResponse {
    let txn = Txn::new(uuid::Uuid::new_v4().to_string(), region.clock.now());
    let answer = BeginResponse {
        id: txn.id.clone(),
        read_ts: txn.read_ts.to_string(),
    };
    region.sessions.open(txn, owner);
    answer
}

/// The version of `key` visible at `ts`, read at its home.
pub async fn read_at_home(region: &Region, key: &str, ts: Timestamp) -> Result<Option<Version>> {
    let home = region.home(key).region;
    if home == region.name {
        return region.txn_read_at(key, ts).await;
    }
    let request = ReadAt {
        from: region.name.clone(),
        key: key.to_owned(),
        ts,
    };
    let answer: ReadAtAnswer = region.call_peer(&home, "/internal/v1/txn/read", &request).await?;
    Ok(answer.version.map(|(ts, value)| Version { ts, value }))
}

/// A version as the API shows it (`None`: absent or deleted).
fn shown(key: &str, version: Option<Version>) -> Result<Option<TxnValue>> {
    match version {
        Some(Version { ts, value: Some(text) }) => Ok(Some(TxnValue {
            value: serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("value of {key:?}: {e}")))?,
            version: Some(ts.to_string()),
        })),
        Some(Version { value: None, .. }) | None => Ok(None),
    }
}

/// Reads `key` in transaction `id`: its own write if it wrote it, else the version at its
/// snapshot (recorded, to be validated at the commit).
pub async fn read(region: &Region, id: &str, key: &str) -> Result<Option<TxnValue>> {
    let (own, read_ts) = region
        .sessions
        .with(id, |t| (t.own_write(key).map(|v| v.map(str::to_owned)), t.read_ts))?;
    if let Some(own) = own {
        return own
            .map(|text| -> Result<TxnValue> {
                let value = serde_json::from_str(&text).map_err(|e| Error::Corrupt(e.to_string()))?;
                Ok(TxnValue { value, version: None })
            })
            .transpose();
    }
    let version = read_at_home(region, key, read_ts).await?;
    let seen = version.as_ref().map(|v| v.ts);
    region.sessions.with(id, |t| t.read(key, seen))?;
    shown(key, version)
}

/// Buffers a write (`None`: a deletion) in transaction `id`.
pub fn write(region: &Region, id: &str, key: &str, value: Option<&TxnPutRequest>) -> Result<()> {
    if let Some(prefix) = region.placement().writes_anywhere(key) {
        return Err(Error::BadRequest(format!(
            "key {key:?} is under {prefix:?}, written anywhere: transactions need a key's home"
        )));
    }
    let text = value.map(|v| v.value.to_string());
    region.sessions.with(id, |t| t.write(key, text))
}

/// Commits transaction `id`.
pub async fn commit(region: &Arc<Region>, id: &str) -> Result<CommitResponse> {
    let txn = region.sessions.end(id, "is committing or committed")?;
    let outcome = commit::commit(region, &txn).await;
    let why = match &outcome {
        Ok(ts) => format!("committed at {ts}"),
        Err(Error::TxnConflict { detail, .. }) => format!("was not committed: {detail}"),
        Err(e) => format!("was not committed: {e}"),
    };
    region.sessions.ended(id, &why);
    Ok(CommitResponse {
        id: id.to_owned(),
        commit_ts: outcome?.to_string(),
        reads: BTreeMap::new(),
        replayed: false,
        undone: None,
    })
}

/// Aborts transaction `id` (it laid nothing yet: intents are laid at the commit).
pub fn abort(region: &Region, id: &str) -> Result<()> {
    region.sessions.end(id, "was aborted by its client").map(|_| ())
}

#[cfg(test)]
mod tests;
