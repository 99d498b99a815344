//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL. Every statement is written once, with
//! numbered placeholders both databases take (`conn.rs`); a [`Dialect`] holds the few that
//! differ. Both schemas have the same tables and columns (`migrations/regions`,
//! `migrations/regions-postgres`).

mod conn;
mod rows;
mod txns;
mod writes;

use std::collections::HashMap;

use async_trait::async_trait;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::op_ids::Applied;
use regions_core::protocol::{CounterRow, EntryState, LogEntry, TxnCopy, VersionRow};
use regions_core::replica::{Incoming, ReplicaState};
use regions_core::txn::{TxnIntent, TxnStatus};
use sqlx::Pool;
use sqlx::pool::PoolConnection;

pub(crate) use conn::{Cols, Conn};
use conn::{stmt, wall};
use rows::{STATE_COLUMNS, applied_of, counter_row, entry_of, state_of, ts_of, version_row_of};
use txns::INTENT_COLUMNS;
use writes::Append;

use super::{Store, Tracked};
use crate::{Error, Result};

/// What differs between the two SQL databases.
pub(crate) trait Dialect: sqlx::Database<Connection: Conn> {
    /// The backend's name.
    const BACKEND: &'static str;
    /// Appends an entry to the log with the next sequence number, which it returns as
    /// `seq`. Binds key, timestamp (wall, logical), value, state, kind and the version it
    /// replaced (wall, logical, origin).
    const APPEND: &'static str;
    /// The last sequence number ever given (0: none), as `seq`.
    const LAST_SEQ: &'static str;
    /// Every version written at origin `$1` of the keys in the JSON array `$2`.
    const VERSIONS_OF: &'static str;
    /// Whether the database records the region it belongs to (`region_identity`).
    const CLAIMED: bool;
    /// Makes `$1` the last sequence number given (the next is `$1 + 1`).
    const SET_LAST_SEQ: &'static [&'static str];
}

/// A region's store on SQLite ([`super::SqliteStore`]) or PostgreSQL
/// ([`super::PostgresStore`]): one writer connection, a pool of readers beside it.
pub struct SqlStore<DB: sqlx::Database> {
    pub(super) readers: Pool<DB>,
    pub(super) writer: Pool<DB>,
}

impl<DB: sqlx::Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            readers: self.readers.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<DB: sqlx::Database> SqlStore<DB> {
    async fn reader(&self) -> Result<PoolConnection<DB>> {
        Ok(self.readers.acquire().await?)
    }

    async fn writer(&self) -> Result<PoolConnection<DB>> {
        Ok(self.writer.acquire().await?)
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB> {
    fn backend_name(&self) -> &'static str {
        DB::BACKEND
    }

    async fn claim(&self, name: &str) -> Result<()> {
        if !DB::CLAIMED {
            return Ok(());
        }
        let mut c = self.writer().await?;
        c.execute(stmt("INSERT INTO region_identity (name) VALUES ($1) ON CONFLICT DO NOTHING").text(name))
            .await?;
        let owner = c
            .fetch_one(stmt("SELECT name FROM region_identity"))
            .await?
            .text("name")?;
        if owner != name {
            return Err(Error::StoreTaken(format!(
                "this database holds region {owner}'s data, not {name}'s (each region needs a PostgreSQL database \
                 of its own)"
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        // Newest first; among equal timestamps the greatest region last, so that
        // `mvcc::visible_at` (the last maximum) picks it: last-writer-wins on
        // (timestamp, region).
        let sql = "SELECT ts_wall, ts_logical, value FROM versions WHERE key = $1 \
                   ORDER BY ts_wall DESC, ts_logical DESC, home ASC";
        let rows = self.reader().await?.fetch_all(stmt(sql).text(key)).await?;
        rows.iter()
            .map(|r| {
                Ok(Version {
                    ts: ts_of(r)?,
                    value: r.opt_text("value")?,
                })
            })
            .collect()
    }

    async fn keys_written_by(&self, horizon: Timestamp) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT key FROM versions WHERE ts_wall <= $1";
        let rows = self.reader().await?.fetch_all(stmt(sql).int(wall(horizon))).await?;
        rows.iter().map(|r| r.text("key")).collect()
    }

    async fn delete_versions(&self, key: &str, ts: Timestamp) -> Result<u64> {
        let sql = "DELETE FROM versions WHERE key = $1 AND ts_wall = $2 AND ts_logical = $3";
        self.writer().await?.execute(stmt(sql).text(key).ts(ts)).await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT key FROM versions WHERE substr(key, 1, length($1)) = $2 ORDER BY key";
        let rows = self
            .reader()
            .await?
            .fetch_all(stmt(sql).text(prefix).text(prefix))
            .await?;
        rows.iter().map(|r| r.text("key")).collect()
    }

    async fn log_pending(&self, key: &str, ts: Timestamp, value: Option<&str>) -> Result<i64> {
        let entry = Append::version(key, ts, value, EntryState::Pending);
        writes::append::<DB>(&mut *self.writer().await?, entry).await
    }

    async fn commit_pending(&self, seq: i64, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        writes::insert_row(&mut *tx, &VersionRow::untracked(key, ts, value, home), None).await?;
        tx.execute(stmt("UPDATE repl_log SET state = 'committed' WHERE seq = $1").int(seq))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn abort_pending(&self, seq: i64) -> Result<()> {
        let sql = "UPDATE repl_log SET state = 'aborted' WHERE seq = $1 AND state = 'pending'";
        self.writer().await?.execute(stmt(sql).int(seq)).await?;
        Ok(())
    }

    async fn abort_all_pending(&self) -> Result<u64> {
        let sql = "UPDATE repl_log SET state = 'aborted' WHERE state = 'pending'";
        self.writer().await?.execute(stmt(sql)).await
    }

    async fn mark_restored(&self, now_ms: i64) -> Result<()> {
        let sql = "INSERT INTO restore_marks (marked_ms) VALUES ($1)";
        self.writer().await?.execute(stmt(sql).int(now_ms)).await?;
        Ok(())
    }

    async fn rebase_if_restored(&self, floor: i64) -> Result<Option<i64>> {
        let mut tx = self.writer.begin().await?;
        let marks = (*tx)
            .fetch_one(stmt("SELECT COUNT(*) AS n FROM restore_marks"))
            .await?
            .int("n")?;
        if marks == 0 {
            return Ok(None);
        }
        let last = (*tx).fetch_one(stmt(DB::LAST_SEQ)).await?.int("seq")?.max(floor);
        (*tx).execute(stmt("DELETE FROM repl_log")).await?;
        for sql in DB::SET_LAST_SEQ {
            (*tx).execute(stmt(sql).int(last)).await?;
        }
        (*tx).execute(stmt("DELETE FROM restore_marks")).await?;
        tx.commit().await?;
        Ok(Some(last))
    }

    async fn write_committed(&self, key: &str, ts: Timestamp, value: Option<&str>, home: &str) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        writes::insert_row(&mut *tx, &VersionRow::untracked(key, ts, value, home), None).await?;
        let seq = writes::append::<DB>(&mut *tx, Append::version(key, ts, value, EntryState::Committed)).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn log_after(&self, after: i64, limit: u32) -> Result<Vec<LogEntry>> {
        let sql = "SELECT seq, key, ts_wall, ts_logical, value, state, kind, prev_wall, prev_logical, prev_home \
                   FROM repl_log WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows = self
            .writer()
            .await?
            .fetch_all(stmt(sql).int(after).int(i64::from(limit)))
            .await?;
        rows.iter().map(entry_of).collect()
    }

    async fn earliest_after(&self, after: i64) -> Result<Option<Timestamp>> {
        let sql = "SELECT ts_wall, ts_logical FROM repl_log WHERE seq > $1 ORDER BY ts_wall, ts_logical LIMIT 1";
        let row = self.writer().await?.fetch_optional(stmt(sql).int(after)).await?;
        row.as_ref().map(ts_of).transpose()
    }

    async fn last_seq(&self) -> Result<i64> {
        self.writer().await?.fetch_one(stmt(DB::LAST_SEQ)).await?.int("seq")
    }

    async fn first_seq(&self) -> Result<Option<i64>> {
        let sql = "SELECT MIN(seq) AS s FROM repl_log";
        self.writer().await?.fetch_one(stmt(sql)).await?.opt_int("s")
    }

    async fn log_len(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM repl_log";
        self.writer().await?.fetch_one(stmt(sql)).await?.int("n")
    }

    async fn truncate_log(&self, seq: i64) -> Result<u64> {
        let sql = "DELETE FROM repl_log WHERE seq <= $1 AND state <> 'pending'";
        self.writer().await?.execute(stmt(sql).int(seq)).await
    }

    async fn truncate_to_retention(&self, keep: u64) -> Result<u64> {
        let sql = "DELETE FROM repl_log WHERE seq <= (SELECT seq FROM repl_log ORDER BY seq DESC LIMIT 1 OFFSET $1) \
                   AND seq < COALESCE((SELECT MIN(seq) FROM repl_log WHERE state = 'pending'), 9223372036854775807)";
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.writer().await?.execute(stmt(sql).int(keep)).await
    }

    async fn cursors(&self) -> Result<HashMap<String, i64>> {
        let rows = self
            .writer()
            .await?
            .fetch_all(stmt("SELECT peer, acked_seq FROM peer_cursors"))
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("peer")?, r.int("acked_seq")?)))
            .collect()
    }

    async fn set_cursor(&self, peer: &str, seq: i64) -> Result<()> {
        let sql = "INSERT INTO peer_cursors (peer, acked_seq) VALUES ($1, $2) \
                   ON CONFLICT (peer) DO UPDATE SET acked_seq = excluded.acked_seq \
                   WHERE excluded.acked_seq > peer_cursors.acked_seq";
        self.writer().await?.execute(stmt(sql).text(peer).int(seq)).await?;
        Ok(())
    }

    async fn put_intent(&self, home: &str, entry: &LogEntry) -> Result<()> {
        let sql = "INSERT INTO intents (home, seq, key, ts_wall, ts_logical, value) VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT DO NOTHING";
        let s = stmt(sql)
            .text(home)
            .int(entry.seq)
            .text(&entry.key)
            .ts(entry.ts)
            .opt_text(entry.value.as_deref());
        self.writer().await?.execute(s).await?;
        Ok(())
    }

    async fn intent_count(&self, home: &str) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM intents WHERE home = $1";
        self.reader().await?.fetch_one(stmt(sql).text(home)).await?.int("n")
    }

    async fn apply_batch(&self, home: &str, incoming: Incoming<'_>, tracked: Tracked<'_>) -> Result<ReplicaState> {
        let mut tx = self.writer.begin().await?;
        let state = writes::apply_batch(&mut *tx, home, incoming, tracked).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn replica_states(&self) -> Result<HashMap<String, ReplicaState>> {
        let sql = format!("SELECT home, {STATE_COLUMNS} FROM replica_state");
        let rows = self.writer().await?.fetch_all(stmt(&sql)).await?;
        rows.iter().map(|r| Ok((r.text("home")?, state_of(r)?))).collect()
    }

    async fn close_gap(&self, home: &str, upto_seq: i64) -> Result<bool> {
        let sql = "UPDATE replica_state SET gap_seq = NULL, gap_wall = NULL, gap_logical = NULL, frozen_wall = NULL, \
                   frozen_logical = NULL WHERE home = $1 AND gap_seq = $2";
        Ok(self.writer().await?.execute(stmt(sql).text(home).int(upto_seq)).await? > 0)
    }

    async fn write_anywhere(
        &self,
        key: &str,
        ts: Timestamp,
        value: Option<&str>,
        origin: &str,
        prefix: &str,
    ) -> Result<i64> {
        let mut tx = self.writer.begin().await?;
        let seq = writes::write_anywhere::<DB>(&mut *tx, key, ts, value, origin, prefix).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn increment(
        &self,
        key: &str,
        region: &str,
        ts: Timestamp,
        delta: i64,
        op_id: Option<&str>,
    ) -> Result<Option<Component>> {
        let mut tx = self.writer.begin().await?;
        let next = writes::increment::<DB>(&mut *tx, key, region, ts, delta, op_id).await?;
        // A repeated op id changed nothing: the transaction is dropped (rolled back).
        if next.is_some() {
            tx.commit().await?;
        }
        Ok(next)
    }

    async fn counter(&self, key: &str) -> Result<Vec<CounterRow>> {
        let sql = "SELECT key, region, p, n FROM counters WHERE key = $1 ORDER BY region";
        let rows = self.reader().await?.fetch_all(stmt(sql).text(key)).await?;
        rows.iter().map(counter_row).collect()
    }

    async fn counters_of(&self, region: &str) -> Result<Vec<CounterRow>> {
        let sql = "SELECT key, region, p, n FROM counters WHERE region = $1 ORDER BY key";
        let rows = self.reader().await?.fetch_all(stmt(sql).text(region)).await?;
        rows.iter().map(counter_row).collect()
    }

    async fn conflicts(&self) -> Result<Vec<(String, i64)>> {
        let sql = "SELECT prefix, overwritten FROM conflicts ORDER BY prefix";
        let rows = self.reader().await?.fetch_all(stmt(sql)).await?;
        rows.iter()
            .map(|r| Ok((r.text("prefix")?, r.int("overwritten")?)))
            .collect()
    }

    async fn version_ids_of(&self, origin: &str) -> Result<Vec<(String, Timestamp)>> {
        let sql = "SELECT key, ts_wall, ts_logical FROM versions WHERE home = $1 \
                   ORDER BY key, ts_wall DESC, ts_logical DESC";
        let rows = self.reader().await?.fetch_all(stmt(sql).text(origin)).await?;
        rows.iter().map(|r| Ok((r.text("key")?, ts_of(r)?))).collect()
    }

    async fn versions_of(&self, origin: &str, keys: &[String]) -> Result<Vec<VersionRow>> {
        let keys = serde_json::to_string(keys).map_err(|e| Error::Corrupt(e.to_string()))?;
        let rows = self
            .reader()
            .await?
            .fetch_all(stmt(DB::VERSIONS_OF).text(origin).text(&keys))
            .await?;
        rows.iter().map(version_row_of).collect()
    }

    async fn repair(&self, rows: &[VersionRow], counters: &[CounterRow], tracked: Tracked<'_>) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let mut repaired = 0;
        for row in rows {
            repaired += u64::from(writes::insert_row(&mut *tx, row, tracked(&row.key).as_deref()).await?);
        }
        for c in counters {
            repaired += u64::from(writes::merge_counter(&mut *tx, &c.key, &c.region, c.component).await?);
        }
        tx.commit().await?;
        Ok(repaired)
    }

    async fn placement_overrides(&self) -> Result<Vec<(String, String)>> {
        let sql = "SELECT prefix, region FROM placement_overrides ORDER BY prefix";
        let rows = self.writer().await?.fetch_all(stmt(sql)).await?;
        rows.iter()
            .map(|r| Ok((r.text("prefix")?, r.text("region")?)))
            .collect()
    }

    async fn set_placement_override(&self, prefix: &str, region: &str) -> Result<()> {
        let sql = "INSERT INTO placement_overrides (prefix, region) VALUES ($1, $2) \
                   ON CONFLICT (prefix) DO UPDATE SET region = excluded.region";
        self.writer()
            .await?
            .execute(stmt(sql).text(prefix).text(region))
            .await?;
        Ok(())
    }

    async fn op_applied(&self, key: &str, op_id: &str) -> Result<Option<Applied>> {
        let sql = "SELECT ts_wall, ts_logical, prev_wall, prev_logical, prev_value FROM op_ids \
                   WHERE key = $1 AND op_id = $2 AND applied = 1";
        let row = self
            .writer()
            .await?
            .fetch_optional(stmt(sql).text(key).text(op_id))
            .await?;
        row.as_ref().map(applied_of).transpose()
    }

    async fn op_prepare(
        &self,
        key: &str,
        op_id: &str,
        at: Timestamp,
        previous: Option<&Version>,
        now_ms: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO op_ids (key, op_id, ts_wall, ts_logical, prev_wall, prev_logical, prev_value, applied, \
                   created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) \
                   ON CONFLICT (key, op_id) DO UPDATE SET ts_wall = excluded.ts_wall, ts_logical = excluded.ts_logical, \
                   prev_wall = excluded.prev_wall, prev_logical = excluded.prev_logical, \
                   prev_value = excluded.prev_value, applied = 0, created_ms = excluded.created_ms";
        let prev = previous.filter(|v| v.value.is_some());
        let s = stmt(sql)
            .text(key)
            .text(op_id)
            .ts(at)
            .opt_ts(prev.map(|v| v.ts))
            .opt_text(prev.and_then(|v| v.value.as_deref()))
            .int(now_ms);
        self.writer().await?.execute(s).await?;
        Ok(())
    }

    async fn op_cancel(&self, key: &str, op_id: &str, now_ms: i64) -> Result<()> {
        let sql = "INSERT INTO op_cancelled (key, op_id, created_ms) VALUES ($1, $2, $3) \
                   ON CONFLICT (key, op_id) DO NOTHING";
        let s = stmt(sql).text(key).text(op_id).int(now_ms);
        self.writer().await?.execute(s).await?;
        Ok(())
    }

    async fn op_cancelled(&self, key: &str, op_id: &str) -> Result<bool> {
        let sql = "SELECT 1 AS one FROM op_cancelled WHERE key = $1 AND op_id = $2";
        let row = self
            .writer()
            .await?
            .fetch_optional(stmt(sql).text(key).text(op_id))
            .await?;
        Ok(row.is_some())
    }

    async fn op_prune(&self, horizon_ms: i64) -> Result<u64> {
        let mut writer = self.writer().await?;
        let mut pruned = 0;
        for sql in [
            "DELETE FROM op_ids WHERE created_ms < $1",
            "DELETE FROM op_cancelled WHERE created_ms < $1",
        ] {
            pruned += writer.execute(stmt(sql).int(horizon_ms)).await?;
        }
        Ok(pruned)
    }

    async fn txn_intents_on(&self, key: &str) -> Result<Vec<TxnIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM txn_intents WHERE key = $1");
        let rows = self.writer().await?.fetch_all(stmt(&sql).text(key)).await?;
        rows.iter().map(txns::intent_of).collect()
    }

    async fn txn_intents(&self) -> Result<Vec<TxnIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM txn_intents ORDER BY prepared_ms");
        let rows = self.writer().await?.fetch_all(stmt(&sql)).await?;
        rows.iter().map(txns::intent_of).collect()
    }

    async fn txn_intents_of(&self, txn: &str) -> Result<Vec<TxnIntent>> {
        let sql = format!("SELECT {INTENT_COLUMNS} FROM txn_intents WHERE txn = $1 ORDER BY key");
        let rows = self.writer().await?.fetch_all(stmt(&sql).text(txn)).await?;
        rows.iter().map(txns::intent_of).collect()
    }

    async fn txn_lay(&self, intents: &[TxnIntent]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        for i in intents {
            txns::lay(&mut *tx, i).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn txn_resolve(&self, txn: &str, commit_ts: Option<Timestamp>, home: &str) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let resolved = txns::resolve::<DB>(&mut *tx, txn, commit_ts, home).await?;
        tx.commit().await?;
        Ok(resolved)
    }

    async fn txn_record(&self, txn: &str) -> Result<Option<TxnStatus>> {
        let sql = "SELECT status, ts_wall, ts_logical FROM txn_records WHERE txn = $1";
        let row = self.writer().await?.fetch_optional(stmt(sql).text(txn)).await?;
        row.as_ref().map(txns::status_of).transpose()
    }

    async fn txn_set_record(&self, txn: &str, status: TxnStatus, now_ms: u64) -> Result<()> {
        let (name, ts) = txns::status_columns(status);
        let sql = "INSERT INTO txn_records (txn, status, ts_wall, ts_logical, updated_ms) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (txn) DO UPDATE SET status = excluded.status, ts_wall = excluded.ts_wall, \
                   ts_logical = excluded.ts_logical, updated_ms = excluded.updated_ms";
        let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let s = stmt(sql).text(txn).text(name).ts(ts).int(now_ms);
        self.writer().await?.execute(s).await?;
        Ok(())
    }

    async fn txn_prune_records(&self, horizon_ms: i64, limit: u32) -> Result<u64> {
        let [op, tries] = regions_core::txn::OP_RECORD_PREFIXES;
        let sql = format!(
            "DELETE FROM txn_records WHERE txn IN (SELECT txn FROM txn_records WHERE updated_ms < $1 \
             AND status <> 'staging' AND txn NOT LIKE '{op}%' AND txn NOT LIKE '{tries}%' LIMIT $2)"
        );
        let s = stmt(&sql).int(horizon_ms).int(i64::from(limit));
        self.writer().await?.execute(s).await
    }

    async fn txn_copy_keep(&self, home: &str, copy: &TxnCopy, now_ms: u64) -> Result<()> {
        const NEWER: &str = "(excluded.ts_wall > txn_copies.ts_wall OR \
                             (excluded.ts_wall = txn_copies.ts_wall AND excluded.ts_logical > txn_copies.ts_logical))";
        if copy.intents.is_empty() && copy.record.is_none() {
            let sql = "DELETE FROM txn_copies WHERE home = $1 AND txn = $2 \
                       AND (ts_wall < $3 OR (ts_wall = $3 AND ts_logical < $4))";
            let s = stmt(sql).text(home).text(&copy.txn).ts(copy.at);
            self.writer().await?.execute(s).await?;
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO txn_copies (home, txn, ts_wall, ts_logical, body, kept_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (home, txn) DO UPDATE SET ts_wall = excluded.ts_wall, ts_logical = excluded.ts_logical, \
             body = excluded.body, kept_ms = excluded.kept_ms WHERE {NEWER}"
        );
        let body = serde_json::to_string(copy).map_err(|e| Error::Corrupt(e.to_string()))?;
        let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let s = stmt(&sql)
            .text(home)
            .text(&copy.txn)
            .ts(copy.at)
            .text(&body)
            .int(now_ms);
        self.writer().await?.execute(s).await?;
        Ok(())
    }

    async fn txn_copies_of(&self, home: &str) -> Result<Vec<TxnCopy>> {
        let sql = "SELECT body FROM txn_copies WHERE home = $1 ORDER BY txn";
        let rows = self.writer().await?.fetch_all(stmt(sql).text(home)).await?;
        rows.iter()
            .map(|row| {
                let body = row.text("body")?;
                serde_json::from_str(&body).map_err(|e| Error::Corrupt(format!("a transaction's copy {body:?}: {e}")))
            })
            .collect()
    }

    async fn txn_prune_copies(&self, horizon_ms: i64) -> Result<u64> {
        let s = stmt("DELETE FROM txn_copies WHERE kept_ms < $1").int(horizon_ms);
        self.writer().await?.execute(s).await
    }
}
