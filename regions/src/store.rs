//! A region's SQLite storage: versions, the replication log, peer cursors, replica state
//! and intents (schema in `migrations/regions`). WAL mode with `synchronous=FULL`: a write
//! is durable when its call returns. One writer connection, a pool of readers beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::hlc::Timestamp;
use crate::mvcc::{self, Version};
use crate::protocol::{EntryKind, EntryState, Gap, LogEntry, VersionId};
use crate::{Error, Result};

/// The migrations of the regions schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/regions");

/// One region's database.
#[derive(Clone)]
pub struct Store {
    pub(crate) readers: SqlitePool,
    pub(crate) writer: SqlitePool,
}

/// What this region applied from another home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaState {
    /// The last entry applied.
    pub applied_seq: i64,
    /// The closed timestamp that came with it.
    pub closed: Timestamp,
    /// Entries truncated before they reached us and not repaired yet by anti-entropy.
    pub gap: Option<Gap>,
    /// While a gap is open: the closed timestamp held before it, the one reads may trust.
    pub frozen: Option<Timestamp>,
}

impl ReplicaState {
    /// The closed timestamp reads may rely on: the frozen one while a gap is open.
    pub fn readable_closed(&self) -> Timestamp {
        self.frozen.unwrap_or(self.closed)
    }
}

/// A batch of a home's log as a replica applies it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The entries, in log order.
    pub entries: &'a [LogEntry],
    /// The closed timestamp that came with them.
    pub closed: Timestamp,
    /// Every entry up to here that concerns this region was shipped.
    pub skip_to: Option<i64>,
    /// Entries that were truncated before they reached this region.
    pub gap: Option<Gap>,
}

pub(crate) fn ts_of(row: &SqliteRow) -> Result<Timestamp> {
    ts_cols(row, "ts_wall", "ts_logical")
}

pub(crate) fn ts_cols(row: &SqliteRow, w: &str, l: &str) -> Result<Timestamp> {
    let wall: i64 = row.try_get(w)?;
    let logical: i64 = row.try_get(l)?;
    Ok(Timestamp {
        wall_ms: u64::try_from(wall).map_err(|_| Error::Corrupt(format!("timestamp {wall}")))?,
        logical: u32::try_from(logical).map_err(|_| Error::Corrupt(format!("logical {logical}")))?,
    })
}

pub(crate) fn opt_ts(row: &SqliteRow, w: &str, l: &str) -> Result<Option<Timestamp>> {
    let wall: Option<i64> = row.try_get(w)?;
    match wall {
        Some(_) => ts_cols(row, w, l).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn prev_of(row: &SqliteRow) -> Result<Option<VersionId>> {
    let origin: Option<String> = row.try_get("prev_home")?;
    Ok(match (opt_ts(row, "prev_wall", "prev_logical")?, origin) {
        (Some(ts), Some(origin)) => Some(VersionId { ts, origin }),
        _ => None,
    })
}

pub(crate) fn wall(ts: Timestamp) -> i64 {
    i64::try_from(ts.wall_ms).unwrap_or(i64::MAX)
}

fn entry_of(row: &SqliteRow) -> Result<LogEntry> {
    let state: String = row.try_get("state")?;
    let kind: String = row.try_get("kind")?;
    Ok(LogEntry {
        seq: row.try_get("seq")?,
        key: row.try_get("key")?,
        ts: ts_of(row)?,
        value: row.try_get("value")?,
        state: EntryState::parse(&state).ok_or_else(|| Error::Corrupt(format!("log state {state:?}")))?,
        kind: EntryKind::parse(&kind).ok_or_else(|| Error::Corrupt(format!("log kind {kind:?}")))?,
        prev: prev_of(row)?,
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Store> {
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
        Ok(Store { readers, writer })
    }

    /// Every stored version of `key` (newest first).
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

    /// The version of `key` visible at `as_of` (tombstones included).
    pub async fn read(&self, key: &str, as_of: Timestamp) -> Result<Option<Version>> {
        Ok(mvcc::visible_at(&self.versions(key).await?, as_of).cloned())
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

    /// Applies a batch of `home`'s log in one transaction, skipping entries applied before,
    /// and records the closed timestamp. Returns the new state.
    pub async fn apply(&self, home: &str, entries: &[LogEntry], closed: Timestamp) -> Result<ReplicaState> {
        let incoming = Incoming {
            entries,
            closed,
            skip_to: None,
            gap: None,
        };
        self.apply_batch(home, incoming, &|_| None).await
    }

    /// [`Store::apply`] with what a batch may say beside its entries: how far it covers the
    /// log for this region, and a gap to repair. `tracked` names the rule prefix of keys
    /// whose concurrent writes are counted (keys written anywhere).
    pub async fn apply_batch(
        &self,
        home: &str,
        incoming: Incoming<'_>,
        tracked: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<ReplicaState> {
        let Incoming {
            entries,
            closed,
            skip_to,
            gap,
        } = incoming;
        let mut tx = self.writer.begin().await?;
        let before = replica_state(&mut tx, home).await?;
        let mut applied_seq = before.map_or(0, |s| s.applied_seq);
        let skip = applied_seq;
        for e in entries.iter().filter(|e| e.seq > skip) {
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
                    let c = crate::counter::Component::parse(e.value.as_deref())?;
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
        let closed = before.map_or(closed, |s| s.closed.max(closed));
        let (mut open_gap, mut frozen) = (before.and_then(|s| s.gap), before.and_then(|s| s.frozen));
        if let Some(g) = gap.filter(|g| g.upto_seq > skip) {
            // Entries we never applied are gone: what we held before is all reads may trust.
            frozen = Some(frozen.unwrap_or_else(|| before.map_or(Timestamp::default(), |s| s.closed)));
            open_gap = Some(match open_gap {
                Some(o) => Gap {
                    upto_seq: o.upto_seq.max(g.upto_seq),
                    upto_ts: o.upto_ts.max(g.upto_ts),
                },
                None => g,
            });
            applied_seq = applied_seq.max(g.upto_seq);
        }
        applied_seq = applied_seq.max(skip_to.unwrap_or(0));
        let state = ReplicaState {
            applied_seq,
            closed,
            gap: open_gap,
            frozen,
        };
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

    /// The connection idempotent writes record their op ids on ([`crate::op_ids`]).
    pub(crate) fn op_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// Garbage-collects versions no read at or after `horizon` can see. Returns how many.
    pub async fn gc(&self, horizon: Timestamp) -> Result<u64> {
        let keys: Vec<String> = sqlx::query("SELECT DISTINCT key FROM versions WHERE ts_wall <= ?")
            .bind(wall(horizon))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(|r| r.try_get("key"))
            .collect::<Result<_, _>>()?;
        let mut dropped = 0;
        for key in keys {
            let victims = mvcc::collectable(&self.versions(&key).await?, horizon);
            for ts in victims {
                dropped += sqlx::query("DELETE FROM versions WHERE key = ? AND ts_wall = ? AND ts_logical = ?")
                    .bind(&key)
                    .bind(wall(ts))
                    .bind(i64::from(ts.logical))
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
            }
        }
        Ok(dropped)
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

const STATE_COLUMNS: &str = "applied_seq, closed_wall AS ts_wall, closed_logical AS ts_logical, gap_seq, gap_wall, \
     gap_logical, frozen_wall, frozen_logical";

fn state_of(r: &SqliteRow) -> Result<ReplicaState> {
    let gap_seq: Option<i64> = r.try_get("gap_seq")?;
    let gap = match (gap_seq, opt_ts(r, "gap_wall", "gap_logical")?) {
        (Some(upto_seq), Some(upto_ts)) => Some(Gap { upto_seq, upto_ts }),
        _ => None,
    };
    Ok(ReplicaState {
        applied_seq: r.try_get("applied_seq")?,
        closed: ts_of(r)?,
        gap,
        frozen: opt_ts(r, "frozen_wall", "frozen_logical")?,
    })
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

pub(crate) use crate::store_convergence::{VersionRow, insert_row, merge_counter};

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp { wall_ms, logical: 0 }
    }

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Store::open(&dir.path().join("r.db")).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn pending_writes_are_invisible_until_committed_and_aborted_on_restart() {
        let (store, _dir) = store().await;
        let a = store.log_pending("k", ts(10), Some("1")).await.unwrap();
        assert_eq!(store.read("k", ts(99)).await.unwrap(), None);
        store.commit_pending(a, "k", ts(10), Some("1"), "h").await.unwrap();
        assert_eq!(
            store.read("k", ts(99)).await.unwrap().unwrap().value.as_deref(),
            Some("1")
        );
        let b = store.log_pending("k", ts(20), Some("2")).await.unwrap();
        assert_eq!(store.abort_all_pending().await.unwrap(), 1);
        let log = store.log_after(0, 10).await.unwrap();
        assert_eq!(
            log.iter().map(|e| (e.seq, e.state)).collect::<Vec<_>>(),
            vec![(a, EntryState::Committed), (b, EntryState::Aborted)]
        );
        assert_eq!(store.read("k", ts(99)).await.unwrap().unwrap().ts, ts(10));
    }

    #[tokio::test]
    async fn sequence_numbers_survive_truncation_and_apply_is_idempotent() {
        let (home, _d1) = store().await;
        let (replica, _d2) = store().await;
        let s1 = home.write_committed("a", ts(1), Some("1"), "h").await.unwrap();
        let s2 = home.write_committed("a", ts(2), None, "h").await.unwrap();
        let batch = home.log_after(0, 10).await.unwrap();
        replica.put_intent("h", &batch[0]).await.unwrap();
        let state = replica.apply("h", &batch, ts(5)).await.unwrap();
        assert_eq!(
            state,
            ReplicaState {
                applied_seq: s2,
                closed: ts(5),
                gap: None,
                frozen: None,
            }
        );
        assert_eq!(replica.intent_count("h").await.unwrap(), 0);
        let again = replica.apply("h", &batch, ts(3)).await.unwrap();
        assert_eq!(
            again, state,
            "replayed entries are skipped and the closed timestamp never goes back"
        );
        assert_eq!(replica.read("a", ts(9)).await.unwrap().unwrap().value, None);
        home.set_cursor("r", s2).await.unwrap();
        assert_eq!(home.truncate_log(s2).await.unwrap(), 2);
        let s3 = home.write_committed("b", ts(3), Some("3"), "h").await.unwrap();
        assert!(s3 > s2 && s1 < s2);
        assert_eq!(home.last_seq().await.unwrap(), s3);
        assert_eq!(home.earliest_after(s2).await.unwrap(), Some(ts(3)));
    }

    #[tokio::test]
    async fn gc_drops_only_what_no_later_read_sees() {
        let (store, _dir) = store().await;
        for (t, v) in [(1, Some("1")), (2, Some("2")), (3, None), (4, Some("4"))] {
            store.write_committed("k", ts(t), v, "h").await.unwrap();
        }
        store.write_committed("j", ts(1), Some("x"), "h").await.unwrap();
        assert_eq!(
            store.gc(ts(3)).await.unwrap(),
            3,
            "1 and 2 under the tombstone at 3, and the tombstone"
        );
        assert_eq!(store.versions("k").await.unwrap().len(), 1);
        assert_eq!(
            store.read("j", ts(9)).await.unwrap().unwrap().value.as_deref(),
            Some("x")
        );
    }
}
