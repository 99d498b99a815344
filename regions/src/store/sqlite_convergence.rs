//! The SQLite side of [`crate::store_convergence`] and of the op ids of idempotent writes
//! ([`regions_core::op_ids`]).

use sqlx::Row;

use super::rows::applied_of;
use super::rows::{counter_row, ts_of, version_row_of, wall};
use super::sqlite::Sqlite;
use crate::{Error, Result};
use regions_core::conflict;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::Applied;
use regions_core::protocol::VersionId;
use regions_core::protocol::{CounterRow, VersionRow};

async fn exists(conn: &mut sqlx::SqliteConnection, sql: &str, key: &str, id: Option<&VersionId>) -> Result<i64> {
    let mut q = sqlx::query(sql).bind(key);
    if let Some(id) = id {
        q = q.bind(wall(id.ts)).bind(i64::from(id.ts.logical)).bind(&id.origin);
    }
    Ok(q.fetch_one(&mut *conn).await?.try_get("n")?)
}

/// Inserts a version unless present. When `tracked` names the rule prefix of a key written
/// anywhere, keeps that prefix's count of overwritten concurrent writes (see
/// [`conflict::leaf_delta`]). Returns whether it was new.
pub(crate) async fn insert_row(
    conn: &mut sqlx::SqliteConnection,
    row: &VersionRow,
    tracked: Option<&str>,
) -> Result<bool> {
    let had_versions = match tracked {
        Some(_) => exists(conn, "SELECT COUNT(*) AS n FROM versions WHERE key = ?", &row.key, None).await? > 0,
        None => false,
    };
    let prev = row.prev.as_ref();
    let inserted = sqlx::query(
        "INSERT OR IGNORE INTO versions (key, ts_wall, ts_logical, value, home, prev_wall, prev_logical, prev_home) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.key)
    .bind(wall(row.ts))
    .bind(i64::from(row.ts.logical))
    .bind(&row.value)
    .bind(&row.origin)
    .bind(prev.map(|p| wall(p.ts)))
    .bind(prev.map(|p| i64::from(p.ts.logical)))
    .bind(prev.map(|p| p.origin.as_str()))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let Some(prefix) = tracked.filter(|_| inserted) else {
        return Ok(inserted);
    };
    const NAMERS: &str =
        "SELECT COUNT(*) AS n FROM versions WHERE key = ? AND prev_wall = ? AND prev_logical = ? AND prev_home = ?";
    let named = exists(conn, NAMERS, &row.key, Some(&row.id())).await? > 0;
    let prev_was_leaf = match prev {
        Some(p) => {
            let present = exists(
                conn,
                "SELECT COUNT(*) AS n FROM versions WHERE key = ? AND ts_wall = ? AND ts_logical = ? AND home = ?",
                &row.key,
                Some(p),
            )
            .await?
                > 0;
            present && exists(conn, NAMERS, &row.key, Some(p)).await? == 1
        }
        None => false,
    };
    let delta = conflict::leaf_delta(had_versions, named, prev_was_leaf);
    if delta != 0 {
        sqlx::query(
            "INSERT INTO conflicts (prefix, overwritten) VALUES (?, ?) \
             ON CONFLICT (prefix) DO UPDATE SET overwritten = overwritten + excluded.overwritten",
        )
        .bind(prefix)
        .bind(delta)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// Merges a counter component (per-field maximum). Returns whether it changed anything.
pub(crate) async fn merge_counter(
    conn: &mut sqlx::SqliteConnection,
    key: &str,
    region: &str,
    c: Component,
) -> Result<bool> {
    let changed = sqlx::query(
        "INSERT INTO counters (key, region, p, n) VALUES (?, ?, ?, ?) \
         ON CONFLICT (key, region) DO UPDATE SET p = MAX(p, excluded.p), n = MAX(n, excluded.n) \
         WHERE excluded.p > counters.p OR excluded.n > counters.n",
    )
    .bind(key)
    .bind(region)
    .bind(c.p)
    .bind(c.n)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

impl Sqlite {
    /// Commits an async write of a key written anywhere, executed here (`origin`): records
    /// the version it replaces (the latest here), counts a conflict if it is concurrent with
    /// one already here, and logs it. Returns its log sequence number.
    pub async fn write_anywhere(
        &self,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        origin: &str,
        prefix: &str,
    ) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        let latest = sqlx::query(
            "SELECT ts_wall, ts_logical, home FROM versions WHERE key = ? \
             ORDER BY ts_wall DESC, ts_logical DESC, home DESC LIMIT 1",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let prev = latest
            .map(|r| {
                Ok::<_, Error>(VersionId {
                    ts: ts_of(&r)?,
                    origin: r.try_get("home")?,
                })
            })
            .transpose()?;
        let row = VersionRow {
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            origin: origin.to_owned(),
            prev: prev.clone(),
        };
        insert_row(&mut tx, &row, Some(prefix)).await?;
        let seq = sqlx::query(
            "INSERT INTO repl_log (key, ts_wall, ts_logical, value, state, prev_wall, prev_logical, prev_home) \
             VALUES (?, ?, ?, ?, 'committed', ?, ?, ?) RETURNING seq",
        )
        .bind(key)
        .bind(wall(ts))
        .bind(i64::from(ts.logical))
        .bind(value)
        .bind(prev.as_ref().map(|p| wall(p.ts)))
        .bind(prev.as_ref().map(|p| i64::from(p.ts.logical)))
        .bind(prev.as_ref().map(|p| p.origin.as_str()))
        .fetch_one(&mut *tx)
        .await?
        .try_get("seq")?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Adds `delta` to this region's component of counter `key` and logs the new component,
    /// in one transaction. With an `op_id` seen before for this key, changes nothing and
    /// returns `None` (a retry); otherwise returns the new component. Op ids are kept a
    /// week (by `ts`).
    pub async fn increment(
        &self,
        key: &str,
        region: &str,
        ts: Timestamp,
        delta: i64,
        op_id: Option<&str>,
    ) -> Result<Option<Component>> {
        let mut tx = self.writer.begin().await?;
        if let Some(op_id) = op_id {
            let week_ago =
                wall(ts).saturating_sub(i64::try_from(regions_core::op_ids::RETENTION_MS).unwrap_or(i64::MAX));
            sqlx::query("DELETE FROM counter_ops WHERE created_ms < ?")
                .bind(week_ago)
                .execute(&mut *tx)
                .await?;
            let fresh = sqlx::query("INSERT OR IGNORE INTO counter_ops (key, op_id, created_ms) VALUES (?, ?, ?)")
                .bind(key)
                .bind(op_id)
                .bind(wall(ts))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if fresh == 0 {
                return Ok(None);
            }
        }
        let current = sqlx::query("SELECT p, n FROM counters WHERE key = ? AND region = ?")
            .bind(key)
            .bind(region)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| {
                Ok::<_, Error>(Component {
                    p: r.try_get("p")?,
                    n: r.try_get("n")?,
                })
            })
            .transpose()?
            .unwrap_or_default();
        let next = current.plus(delta)?;
        merge_counter(&mut tx, key, region, next).await?;
        sqlx::query(
            "INSERT INTO repl_log (key, ts_wall, ts_logical, value, state, kind) VALUES (?, ?, ?, ?, 'committed', 'counter')",
        )
        .bind(key)
        .bind(wall(ts))
        .bind(i64::from(ts.logical))
        .bind(next.to_json())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    /// Every region's component of counter `key` held here.
    pub async fn counter(&self, key: &str) -> Result<Vec<CounterRow>> {
        let rows = sqlx::query("SELECT key, region, p, n FROM counters WHERE key = ? ORDER BY region")
            .bind(key)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(counter_row).collect()
    }

    /// The components of counters written at `region`.
    pub async fn counters_of(&self, region: &str) -> Result<Vec<CounterRow>> {
        let rows = sqlx::query("SELECT key, region, p, n FROM counters WHERE region = ? ORDER BY key")
            .bind(region)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(counter_row).collect()
    }

    /// Overwritten concurrent writes counted here, per rule prefix.
    pub async fn conflicts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT prefix, overwritten FROM conflicts ORDER BY prefix")
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("prefix")?, r.try_get("overwritten")?)))
            .collect()
    }

    /// Identities of the versions written at `origin`, by key (timestamps newest first).
    pub async fn version_ids_of(&self, origin: &str) -> Result<Vec<(String, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT key, ts_wall, ts_logical FROM versions WHERE home = ? ORDER BY key, ts_wall DESC, ts_logical DESC",
        )
        .bind(origin)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("key")?, ts_of(r)?))).collect()
    }

    /// Every version of `keys` written at `origin`.
    pub async fn versions_of(&self, origin: &str, keys: &[String]) -> Result<Vec<VersionRow>> {
        let keys = serde_json::to_string(keys).map_err(|e| Error::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT key, ts_wall, ts_logical, value, home, prev_wall, prev_logical, prev_home FROM versions \
             WHERE home = ? AND key IN (SELECT value FROM json_each(?)) ORDER BY key, ts_wall DESC, ts_logical DESC",
        )
        .bind(origin)
        .bind(keys)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(version_row_of).collect()
    }

    /// Stores what anti-entropy fetched, in one transaction. Returns how many versions and
    /// counter components were new here.
    pub async fn repair(
        &self,
        rows: &[VersionRow],
        counters: &[CounterRow],
        tracked: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let mut repaired = 0;
        for row in rows {
            repaired += u64::from(insert_row(&mut tx, row, tracked(&row.key).as_deref()).await?);
        }
        for c in counters {
            repaired += u64::from(merge_counter(&mut tx, &c.key, &c.region, c.component).await?);
        }
        tx.commit().await?;
        Ok(repaired)
    }

    /// Closes the gap recorded for `home` if it is still the one anti-entropy repaired (a
    /// newer gap stays open). Returns whether it closed.
    pub async fn close_gap(&self, home: &str, upto_seq: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE replica_state SET gap_seq = NULL, gap_wall = NULL, gap_logical = NULL, frozen_wall = NULL, \
             frozen_logical = NULL WHERE home = ? AND gap_seq = ?",
        )
        .bind(home)
        .bind(upto_seq)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The first sequence number left in the log (`None`: the log is empty).
    pub(crate) async fn first_seq(&self) -> Result<Option<i64>> {
        Ok(sqlx::query("SELECT MIN(seq) AS s FROM repl_log")
            .fetch_one(&self.writer)
            .await?
            .try_get("s")?)
    }

    /// Drops the oldest entries beyond the newest `keep` (never a pending one, nor any
    /// after it). Returns how many.
    pub async fn truncate_to_retention(&self, keep: u64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM repl_log WHERE seq <= (SELECT seq FROM repl_log ORDER BY seq DESC LIMIT 1 OFFSET ?) \
             AND seq < COALESCE((SELECT MIN(seq) FROM repl_log WHERE state = 'pending'), 9223372036854775807)",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Distinct keys stored here that start with `prefix`.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT key FROM versions WHERE substr(key, 1, length(?)) = ? ORDER BY key")
            .bind(prefix)
            .bind(prefix)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// Re-homed prefixes and their new homes.
    pub async fn placement_overrides(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT prefix, region FROM placement_overrides ORDER BY prefix")
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("prefix")?, r.try_get("region")?)))
            .collect()
    }

    /// Records that `prefix` is now homed in `region`.
    pub async fn set_placement_override(&self, prefix: &str, region: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO placement_overrides (prefix, region) VALUES (?, ?) \
             ON CONFLICT (prefix) DO UPDATE SET region = excluded.region",
        )
        .bind(prefix)
        .bind(region)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// See [`Store::op_applied`](crate::store::Store::op_applied).
    pub async fn op_applied(&self, key: &str, op_id: &str) -> Result<Option<Applied>> {
        let row = sqlx::query(
            "SELECT ts_wall, ts_logical, prev_wall, prev_logical, prev_value FROM op_ids \
             WHERE key = ? AND op_id = ? AND applied = 1",
        )
        .bind(key)
        .bind(op_id)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(applied_of).transpose()
    }

    /// See [`Store::op_prepare`](crate::store::Store::op_prepare).
    pub async fn op_prepare(
        &self,
        key: &str,
        op_id: &str,
        at: Timestamp,
        previous: Option<&Version>,
        now_ms: i64,
    ) -> Result<()> {
        let prev = previous.filter(|v| v.value.is_some());
        sqlx::query(
            "INSERT INTO op_ids (key, op_id, ts_wall, ts_logical, prev_wall, prev_logical, prev_value, applied, \
             created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) \
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
        .bind(now_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// See [`Store::op_prune`](crate::store::Store::op_prune).
    pub async fn op_prune(&self, horizon_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM op_ids WHERE created_ms < ?")
            .bind(horizon_ms)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
