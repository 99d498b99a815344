//! The SQLite backend of a region's [`Store`](super::Store) (schema in
//! `migrations/regions`): WAL mode with `synchronous=FULL`, so a write is durable when its
//! call returns. One writer connection, a pool of readers beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::rows::{STATE_COLUMNS, entry_of, state_of, ts_of, wall};
use super::sqlite_convergence::{insert_row, merge_counter};
use super::{Incoming, ReplicaState};
use crate::{Error, Result};
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::protocol::VersionRow;
use regions_core::protocol::{EntryKind, EntryState, LogEntry};
use regions_core::replica::next_state;

/// The migrations of the SQLite schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/regions");

/// A region's SQLite database.
#[derive(Clone)]
pub struct Sqlite {
    pub(crate) readers: SqlitePool,
    pub(crate) writer: SqlitePool,
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Sqlite { readers, writer })
    }

    /// See [`Store::versions`](super::Store::versions).
    pub async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        let rows = sqlx::query(
            // Newest first; among equal timestamps the greatest region last, so that
            // `mvcc::visible_at` (the last maximum) picks it: last-writer-wins on
            // (timestamp, region).
            "SELECT ts_wall, ts_logical, value FROM versions WHERE key = ? \
             ORDER BY ts_wall DESC, ts_logical DESC, home ASC",
        )
        .bind(key)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Version {
                    ts: ts_of(r)?,
                    value: r.try_get("value")?,
                })
            })
            .collect()
    }

    /// Logs a strong write as pending; returns its sequence number.
    pub async fn log_pending(&self, key: &str, ts: Timestamp, value: Option<&str>) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO repl_log (key, ts_wall, ts_logical, value, state) VALUES (?, ?, ?, ?, 'pending') RETURNING seq",
        )
        .bind(key)
        .bind(wall(ts))
        .bind(i64::from(ts.logical))
        .bind(value)
        .fetch_one(&self.writer)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// Commits a pending strong write: its version becomes visible, its entry committed.
    pub async fn commit_pending(
        &self,
        seq: i64,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        home: &str,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        insert_version(&mut tx, key, ts, value, home).await?;
        sqlx::query("UPDATE repl_log SET state = 'committed' WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Aborts a pending strong write.
    pub async fn abort_pending(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE repl_log SET state = 'aborted' WHERE seq = ? AND state = 'pending'")
            .bind(seq)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Aborts every pending write (at start-up: none of them was acknowledged).
    pub async fn abort_all_pending(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE repl_log SET state = 'aborted' WHERE state = 'pending'")
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// Commits an async write: version and log entry in one transaction.
    pub async fn write_committed(&self, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        insert_version(&mut tx, key, ts, value, home).await?;
        let row = sqlx::query(
            "INSERT INTO repl_log (key, ts_wall, ts_logical, value, state) VALUES (?, ?, ?, ?, 'committed') RETURNING seq",
        )
        .bind(key)
        .bind(wall(ts))
        .bind(i64::from(ts.logical))
        .bind(value)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.try_get("seq")?)
    }

    /// Up to `limit` log entries after `after`, in order.
    pub async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT seq, key, ts_wall, ts_logical, value, state, kind, prev_wall, prev_logical, prev_home \
             FROM repl_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(entry_of).collect()
    }

    /// The earliest timestamp among log entries after `after` (not shipped yet).
    pub async fn earliest_after(&self, after: i64) -> Result<Option<Timestamp>> {
        let row =
            sqlx::query("SELECT ts_wall, ts_logical FROM repl_log WHERE seq > ? ORDER BY ts_wall, ts_logical LIMIT 1")
                .bind(after)
                .fetch_optional(&self.writer)
                .await?;
        row.as_ref().map(ts_of).transpose()
    }

    /// The last sequence number ever given (0: none).
    pub async fn last_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT seq FROM sqlite_sequence WHERE name = 'repl_log'")
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.map(|r| r.try_get("seq")).transpose()?.unwrap_or(0))
    }

    /// Every peer's acknowledged position.
    pub async fn cursors(&self) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query("SELECT peer, acked_seq FROM peer_cursors")
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("peer")?, r.try_get("acked_seq")?)))
            .collect()
    }

    /// Records that `peer` acknowledged the log up to `seq`.
    pub async fn set_cursor(&self, peer: &str, seq: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO peer_cursors (peer, acked_seq) VALUES (?, ?) \
             ON CONFLICT (peer) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
        )
        .bind(peer)
        .bind(seq)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Drops log entries up to `seq` (every peer has them). Returns how many.
    pub async fn truncate_log(&self, seq: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM repl_log WHERE seq <= ? AND state <> 'pending'")
            .bind(seq)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// Entries left in the log.
    pub async fn log_len(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM repl_log")
            .fetch_one(&self.writer)
            .await?
            .try_get("n")?)
    }

    /// Stores a strong write of `home` before its home commits it (invisible to reads).
    pub async fn put_intent(&self, home: &str, entry: &LogEntry) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO intents (home, seq, key, ts_wall, ts_logical, value) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(home)
        .bind(entry.seq)
        .bind(&entry.key)
        .bind(wall(entry.ts))
        .bind(i64::from(entry.ts.logical))
        .bind(&entry.value)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Intents stored for `home` and not resolved yet.
    pub async fn intent_count(&self, home: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM intents WHERE home = ?")
            .bind(home)
            .fetch_one(&self.readers)
            .await?
            .try_get("n")?)
    }

    /// See [`Store::apply_batch`](super::Store::apply_batch).
    pub async fn apply_batch(
        &self,
        home: &str,
        incoming: Incoming<'_>,
        tracked: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<ReplicaState> {
        let mut tx = self.writer.begin().await?;
        let before = replica_state(&mut tx, home).await?;
        let mut applied_seq = before.map_or(0, |s| s.applied_seq);
        let skip = applied_seq;
        for e in incoming.entries.iter().filter(|e| e.seq > skip) {
            match (e.state, e.kind) {
                (EntryState::Committed, EntryKind::Version) => {
                    let row = VersionRow {
                        key: e.key.clone(),
                        ts: e.ts,
                        value: e.value.clone(),
                        origin: home.to_owned(),
                        prev: e.prev.clone(),
                    };
                    insert_row(&mut tx, &row, tracked(&e.key).as_deref()).await?;
                }
                (EntryState::Committed, EntryKind::Counter) => {
                    let c = regions_core::counter::Component::parse(e.value.as_deref())?;
                    merge_counter(&mut tx, &e.key, home, c).await?;
                }
                (EntryState::Aborted, _) => {}
                (EntryState::Pending, _) => {
                    return Err(Error::Peer(format!("{home} shipped pending entry {}", e.seq)));
                }
            }
            sqlx::query("DELETE FROM intents WHERE home = ? AND seq = ?")
                .bind(home)
                .bind(e.seq)
                .execute(&mut *tx)
                .await?;
            applied_seq = e.seq;
        }
        let state = next_state(before, &incoming, applied_seq);
        save_replica_state(&mut tx, home, &state).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// What this region applied from each other home.
    pub async fn replica_states(&self) -> Result<HashMap<String, ReplicaState>> {
        let rows = sqlx::query(&format!("SELECT home, {STATE_COLUMNS} FROM replica_state"))
            .fetch_all(&self.writer)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("home")?, state_of(r)?))).collect()
    }

    /// Keys with versions at or before `horizon` (what garbage collection looks at).
    pub(crate) async fn keys_written_by(&self, horizon: Timestamp) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT key FROM versions WHERE ts_wall <= ?")
            .bind(wall(horizon))
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// Drops the versions of `key` at `ts` (of every origin). Returns how many.
    pub(crate) async fn delete_versions(&self, key: &str, ts: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM versions WHERE key = ? AND ts_wall = ? AND ts_logical = ?")
            .bind(key)
            .bind(wall(ts))
            .bind(i64::from(ts.logical))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn insert_version(
    conn: &mut sqlx::SqliteConnection,
    key: &str,
    ts: Timestamp,
    value: Option<&str>,
    home: &str,
) -> Result<()> {
    let row = VersionRow {
        key: key.to_owned(),
        ts,
        value: value.map(str::to_owned),
        origin: home.to_owned(),
        prev: None,
    };
    insert_row(conn, &row, None).await.map(|_| ())
}

async fn replica_state(conn: &mut sqlx::SqliteConnection, home: &str) -> Result<Option<ReplicaState>> {
    let row = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM replica_state WHERE home = ?"))
        .bind(home)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(state_of).transpose()
}

async fn save_replica_state(conn: &mut sqlx::SqliteConnection, home: &str, s: &ReplicaState) -> Result<()> {
    sqlx::query(
        "INSERT INTO replica_state (home, applied_seq, closed_wall, closed_logical, gap_seq, gap_wall, gap_logical, \
         frozen_wall, frozen_logical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (home) DO UPDATE SET applied_seq = excluded.applied_seq, closed_wall = excluded.closed_wall, \
         closed_logical = excluded.closed_logical, gap_seq = excluded.gap_seq, gap_wall = excluded.gap_wall, \
         gap_logical = excluded.gap_logical, frozen_wall = excluded.frozen_wall, \
         frozen_logical = excluded.frozen_logical",
    )
    .bind(home)
    .bind(s.applied_seq)
    .bind(wall(s.closed))
    .bind(i64::from(s.closed.logical))
    .bind(s.gap.map(|g| g.upto_seq))
    .bind(s.gap.map(|g| wall(g.upto_ts)))
    .bind(s.gap.map(|g| i64::from(g.upto_ts.logical)))
    .bind(s.frozen.map(wall))
    .bind(s.frozen.map(|f| i64::from(f.logical)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
