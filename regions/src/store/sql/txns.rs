//! The SQL stores' transaction rows: intents laid and resolved, records read and written.

use regions_core::hlc::Timestamp;
use regions_core::protocol::{EntryState, VersionRow};
use regions_core::txn::{IntentKind, TxnIntent, TxnStatus};

use super::Dialect;
use super::conn::{Cols, Conn, stmt};
use super::rows::ts_of;
use super::writes::{self, Append};
use crate::{Error, Result};

/// The columns of `txn_intents` that [`intent_of`] reads.
pub(super) const INTENT_COLUMNS: &str = "txn, key, kind, value, record_home, homes, ts_wall, ts_logical, prepared_ms";

/// An intent row.
pub(super) fn intent_of(row: &impl Cols) -> Result<TxnIntent> {
    let kind = match row.text("kind")?.as_str() {
        "read" => IntentKind::Read,
        "write" => IntentKind::Write {
            value: row.opt_text("value")?,
        },
        other => return Err(Error::Corrupt(format!("intent kind {other:?}"))),
    };
    let prepared_ms = row.int("prepared_ms")?;
    let homes = row.text("homes")?;
    let homes = serde_json::from_str(&homes).map_err(|e| Error::Corrupt(format!("intent homes {homes:?}: {e}")))?;
    Ok(TxnIntent {
        txn: row.text("txn")?,
        key: row.text("key")?,
        kind,
        record_home: row.text("record_home")?,
        homes,
        proposed: ts_of(row)?,
        prepared_ms: u64::try_from(prepared_ms).map_err(|_| Error::Corrupt(format!("prepared_ms {prepared_ms}")))?,
    })
}

/// Lays (or replaces) one intent.
pub(super) async fn lay(conn: &mut impl Conn, i: &TxnIntent) -> Result<()> {
    let sql = "INSERT INTO txn_intents (txn, key, kind, value, record_home, homes, ts_wall, ts_logical, prepared_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
               ON CONFLICT (txn, key) DO UPDATE SET kind = excluded.kind, value = excluded.value, \
               record_home = excluded.record_home, homes = excluded.homes, ts_wall = excluded.ts_wall, \
               ts_logical = excluded.ts_logical, prepared_ms = excluded.prepared_ms";
    let value = match &i.kind {
        IntentKind::Read => None,
        IntentKind::Write { value } => value.as_deref(),
    };
    let homes = serde_json::to_string(&i.homes).map_err(|e| Error::Corrupt(e.to_string()))?;
    let s = stmt(sql)
        .text(&i.txn)
        .text(&i.key)
        .text(i.kind.as_str())
        .opt_text(value)
        .text(&i.record_home)
        .text(&homes)
        .ts(i.proposed)
        .int(i64::try_from(i.prepared_ms).unwrap_or(i64::MAX));
    conn.execute(s).await?;
    Ok(())
}

/// Resolves the intents of `txn` (in the caller's transaction): with a commit timestamp,
/// each write intent becomes a version and a committed log entry; then all are dropped.
pub(super) async fn resolve<DB: Dialect>(
    conn: &mut DB::Connection,
    txn: &str,
    commit_ts: Option<Timestamp>,
    home: &str,
) -> Result<u64> {
    let sql = format!("SELECT {INTENT_COLUMNS} FROM txn_intents WHERE txn = $1 ORDER BY key");
    let rows = conn.fetch_all(stmt(&sql).text(txn)).await?;
    let intents: Vec<TxnIntent> = rows.iter().map(intent_of).collect::<Result<_>>()?;
    if let Some(ts) = commit_ts {
        for i in &intents {
            if let IntentKind::Write { value } = &i.kind {
                writes::insert_row(conn, &VersionRow::untracked(&i.key, ts, value.as_deref(), home), None).await?;
                writes::append::<DB>(
                    conn,
                    Append::version(&i.key, ts, value.as_deref(), EntryState::Committed),
                )
                .await?;
            }
        }
    }
    conn.execute(stmt("DELETE FROM txn_intents WHERE txn = $1").text(txn))
        .await?;
    Ok(intents.len() as u64)
}

/// A record row's status.
pub(super) fn status_of(row: &impl Cols) -> Result<TxnStatus> {
    let ts = ts_of(row)?;
    match row.text("status")?.as_str() {
        "pending" => Ok(TxnStatus::Pending { min_commit_ts: ts }),
        "staging" => Ok(TxnStatus::Staging { proposed: ts }),
        "committed" => Ok(TxnStatus::Committed { commit_ts: ts }),
        "aborted" => Ok(TxnStatus::Aborted),
        other => Err(Error::Corrupt(format!("transaction status {other:?}"))),
    }
}

/// A status as its row's columns.
pub(super) fn status_columns(status: TxnStatus) -> (&'static str, Timestamp) {
    match status {
        TxnStatus::Pending { min_commit_ts } => ("pending", min_commit_ts),
        TxnStatus::Staging { proposed } => ("staging", proposed),
        TxnStatus::Committed { commit_ts } => ("committed", commit_ts),
        TxnStatus::Aborted => ("aborted", Timestamp::default()),
    }
}
