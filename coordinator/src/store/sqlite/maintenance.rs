//! The SQLite store's upkeep: retention's reads and deletes, giving freed pages back to the
//! file system, and the one-time switch of an older file to incremental auto-vacuum.
//!
//! Deletes run on the writer thread like every write, each batch one short transaction
//! between two group commits; the candidates are read on the reader pool, so that finding
//! them never holds the writer up.

use std::path::Path;
use std::time::Instant;

use rusqlite::{TransactionBehavior, params};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::SqliteStore;
use crate::Result;
use crate::store::rows::{SAGA_COLUMNS, saga_from_row};
use crate::store::{Expiry, SagaRecord};

/// What [`Expiry`] lets go, in SQL (`?1` finished before, `?2` keys created before): the scan
/// walks `sagas_newest` from its oldest end, so a round costs the rows it returns plus the
/// old unsettled or stuck sagas it steps over.
const EXPIRED: &str = "created_at_ms < ?1 AND updated_at_ms < ?1 AND status IN ('completed', 'compensated') \
     AND (idempotency_key IS NULL OR created_at_ms < ?2)";

/// Up to `limit` sagas that `expiry` lets go, oldest first.
pub(super) async fn expired(store: &SqliteStore, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE {EXPIRED} ORDER BY created_at_ms, id LIMIT ?3"
    ))
    .bind(expiry.finished_before_ms)
    .bind(expiry.keys_created_before_ms)
    .bind(i64::from(limit))
    .fetch_all(&store.readers)
    .await?;
    rows.iter().map(saga_from_row).collect()
}

/// Deletes those of `ids` that `expiry` still lets go, and their logs, in one transaction on
/// the writer thread.
pub(super) async fn delete_expired(store: &SqliteStore, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>> {
    let ids = serde_json::Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string();
    let expiry = *expiry;
    store
        .writer
        .run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut deleted = Vec::new();
            {
                let mut sagas = tx.prepare_cached(&format!(
                    "DELETE FROM sagas WHERE id IN (SELECT value FROM json_each(?3)) AND {EXPIRED} RETURNING id"
                ))?;
                let mut rows = sagas.query(params![expiry.finished_before_ms, expiry.keys_created_before_ms, ids])?;
                let mut events = tx.prepare_cached("DELETE FROM saga_events WHERE saga_id = ?")?;
                while let Some(row) = rows.next()? {
                    let id: String = row.get(0)?;
                    events.execute([&id])?;
                    if let Ok(id) = Uuid::parse_str(&id) {
                        deleted.push(id);
                    }
                }
            }
            tx.commit()?;
            Ok(deleted)
        })
        .await
}

/// Gives up to `pages` free pages back to the file system (one short write on the writer
/// thread); returns how many went.
pub(super) async fn reclaim_space(store: &SqliteStore, pages: u32) -> Result<u64> {
    store
        .writer
        .run(move |conn| {
            let free =
                |conn: &rusqlite::Connection| conn.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
            let before = free(conn)?;
            if before > 0 {
                conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
            }
            Ok(u64::try_from(before - free(conn)?).unwrap_or(0))
        })
        .await
}

/// Switches a file that is not in incremental auto-vacuum yet (one made before schema 2)
/// to it: `VACUUM` rewrites the whole file once, atomically (a crash leaves the old file
/// whole, and the next start tries again), and needs free space about the file's size. A
/// new file is already in that mode (its connection asked for it before any table existed).
pub(super) async fn ensure_incremental_vacuum(conn: &mut SqliteConnection, path: &Path) -> Result<()> {
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut *conn).await?;
    if mode == 2 {
        return Ok(());
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        path = %path.display(),
        bytes = size,
        "switching the database to incremental auto-vacuum: rewriting the file once (VACUUM)"
    );
    let started = Instant::now();
    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM").execute(&mut *conn).await?;
    tracing::info!(path = %path.display(), seconds = started.elapsed().as_secs_f64(), "database rewritten");
    Ok(())
}
