//! Idempotent writes. A write may carry an `op_id` (a saga step's idempotency key): its
//! home records it, and a repeat of it is answered with the first one's result
//! (`"replayed": true`) instead of writing again, so a client that lost an answer, or a
//! coordinator that crashed, can retry without applying anything twice.
//!
//! Under the key's write lock, before a write, the home *prepares* a row (key, op_id) with
//! the write's timestamp and the live version it replaces; a trigger marks the row applied
//! in the transaction that makes the version visible (`migrations/regions/0003_op_ids.sql`).
//! A write that aborted, or that a crash cut off, leaves its row unapplied: a repeat then
//! writes afresh and prepares the row again. Rows are kept for [`RETENTION_MS`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

use crate::hlc::Timestamp;
use crate::mvcc::Version;
use crate::node::{LATEST, Region};
use crate::protocol::{WriteCommand, WriteResponse};
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

fn wall(ts: Timestamp) -> i64 {
    i64::try_from(ts.wall_ms).unwrap_or(i64::MAX)
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
pub async fn applied(pool: &SqlitePool, key: &str, op_id: &str) -> Result<Option<Applied>> {
    let row = sqlx::query(
        "SELECT ts_wall, ts_logical, prev_wall, prev_logical, prev_value FROM op_ids \
         WHERE key = ? AND op_id = ? AND applied = 1",
    )
    .bind(key)
    .bind(op_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version = ts(row.try_get("ts_wall")?, row.try_get("ts_logical")?)?;
    let prev_wall: Option<i64> = row.try_get("prev_wall")?;
    let prev_logical: Option<i64> = row.try_get("prev_logical")?;
    let prev_value: Option<String> = row.try_get("prev_value")?;
    let previous = match (prev_wall, prev_logical) {
        (Some(w), Some(l)) => previous_of(Some(&Version {
            ts: ts(w, l)?,
            value: Some(prev_value.unwrap_or_else(|| "null".to_owned())),
        }))?,
        _ => None,
    };
    Ok(Some(Applied {
        version: version.to_string(),
        previous,
    }))
}

/// Prepares the row of a write with `op_id` about to make version `at` of `key`,
/// replacing `previous`; durable when this returns.
pub async fn prepare(
    pool: &SqlitePool,
    key: &str,
    op_id: &str,
    at: Timestamp,
    previous: Option<&Version>,
    now_ms: u64,
) -> Result<()> {
    let prev = previous.filter(|v| v.value.is_some());
    sqlx::query(
        "INSERT INTO op_ids (key, op_id, ts_wall, ts_logical, prev_wall, prev_logical, prev_value, applied, created_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) \
         ON CONFLICT (key, op_id) DO UPDATE SET ts_wall = excluded.ts_wall, ts_logical = excluded.ts_logical, \
         prev_wall = excluded.prev_wall, prev_logical = excluded.prev_logical, prev_value = excluded.prev_value, \
         applied = 0, created_ms = excluded.created_ms",
    )
    .bind(key)
    .bind(op_id)
    .bind(wall(at))
    .bind(i64::from(at.logical))
    .bind(prev.map(|v| wall(v.ts)))
    .bind(prev.map(|v| i64::from(v.ts.logical)))
    .bind(prev.and_then(|v| v.value.clone()))
    .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    if PREPARED.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        let horizon = i64::try_from(now_ms.saturating_sub(RETENTION_MS)).unwrap_or(0);
        sqlx::query("DELETE FROM op_ids WHERE created_ms < ?")
            .bind(horizon)
            .execute(pool)
            .await?;
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
/// applied op id gets the first write's answer.
pub(crate) async fn before_write(region: &Region, key: &str, cmd: &WriteCommand) -> Result<BeforeWrite> {
    let Some(op_id) = &cmd.op_id else {
        return Ok(BeforeWrite {
            replay: None,
            current: None,
        });
    };
    if let Some(done) = applied(region.store.op_pool(), key, op_id).await? {
        return Ok(BeforeWrite {
            replay: Some(WriteResponse {
                key: key.to_owned(),
                version: done.version,
                home_region: region.name.clone(),
                served_by: region.name.clone(),
                consistency: cmd.consistency,
                previous: done.previous,
                replayed: true,
            }),
            current: None,
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
    prepare(
        region.store.op_pool(),
        key,
        op_id,
        at,
        current,
        region.clock.physical_ms(),
    )
    .await?;
    previous_of(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn at(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    /// A prepared op becomes applied only with its version, in the same transaction;
    /// an op whose write never happened stays unapplied and can be prepared again.
    #[tokio::test]
    async fn ops_are_applied_with_their_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let pool = store.op_pool();
        store.write_committed("k", at(5), Some("{\"n\":1}"), "h").await.unwrap();
        let before = store.read("k", at(9)).await.unwrap();
        prepare(pool, "k", "saga:a:action", at(10), before.as_ref(), 1_000)
            .await
            .unwrap();
        assert_eq!(
            applied(pool, "k", "saga:a:action").await.unwrap(),
            None,
            "not written yet"
        );
        // The write was cut off; a retry prepares again with its own timestamp.
        prepare(pool, "k", "saga:a:action", at(11), before.as_ref(), 1_001)
            .await
            .unwrap();
        store
            .write_committed("k", at(11), Some("{\"n\":2}"), "h")
            .await
            .unwrap();
        let done = applied(pool, "k", "saga:a:action").await.unwrap().unwrap();
        assert_eq!(done.version, "11.0");
        assert_eq!(
            done.previous,
            Some(Previous {
                version: "5.0".into(),
                value: serde_json::json!({"n": 1})
            })
        );
        // Another key's op is not confused with it, and a version at the old timestamp
        // arriving later (as on a replica) applies nothing it does not name.
        assert_eq!(applied(pool, "j", "saga:a:action").await.unwrap(), None);
        store.write_committed("k", at(10), Some("3"), "h").await.unwrap();
        assert_eq!(
            applied(pool, "k", "saga:a:action").await.unwrap().unwrap().version,
            "11.0"
        );
        assert!(check("").is_err() && check(&"x".repeat(513)).is_err() && check("a:b:action").is_ok());
    }
}
