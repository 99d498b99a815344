//! The PostgreSQL store's upkeep: retention's reads and deletes, and the lock that lets one
//! coordinator of a database run retention at a time.
//!
//! The space of deleted rows comes back through autovacuum, tuned for a steady churn by
//! migration 0003 (`migrations/postgres/0003_churn.sql`); nothing here vacuums.

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{PostgresStore, Sql};
use crate::Result;
use crate::store::rows::{SAGA_COLUMNS, saga_from_row};
use crate::store::{Expiry, SagaRecord};

/// The advisory lock (one `bigint` key: a key space apart from the two-key locks of
/// definition registrations) held by the coordinator that runs retention: "gsagretn".
const RETENTION_LOCK: i64 = 0x6773_6167_7265_746e;

/// What [`Expiry`] lets go, in SQL (`$1` finished before, `$2` keys created before); the scan
/// walks `sagas_newest` from its oldest end.
const EXPIRED: &str = "created_at_ms < $1 AND updated_at_ms < $1 AND status IN ('completed', 'compensated') \
     AND (idempotency_key IS NULL OR created_at_ms < $2)";

/// Up to `limit` sagas that `expiry` lets go, oldest first.
pub(super) async fn expired(store: &PostgresStore, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE {EXPIRED} ORDER BY created_at_ms, id LIMIT $3"
    ))
    .bind(expiry.finished_before_ms)
    .bind(expiry.keys_created_before_ms)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(saga_from_row).collect::<Sql<_>>()?)
}

/// Deletes those of `ids` that `expiry` still lets go, and their logs, in one statement.
pub(super) async fn delete_expired(store: &PostgresStore, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>> {
    let deleted = sqlx::query_scalar(&format!(
        "WITH d AS (DELETE FROM sagas WHERE id = ANY($3) AND {EXPIRED} RETURNING id), \
           e AS (DELETE FROM saga_events WHERE saga_id IN (SELECT id FROM d)) \
         SELECT id FROM d"
    ))
    .bind(expiry.finished_before_ms)
    .bind(expiry.keys_created_before_ms)
    .bind(ids)
    .fetch_all(&store.pool)
    .await?;
    Ok(deleted)
}

/// Whether this store holds the retention lock: kept on a connection of its own for as long
/// as that connection lives (another coordinator takes over when this one dies), taken when
/// free.
pub(super) async fn retention_turn(store: &PostgresStore) -> Result<bool> {
    let mut held = store.retention_lock.lock().await;
    if let Some(conn) = held.as_mut() {
        if conn.ping().await.is_ok() {
            return Ok(true);
        }
        // The connection is gone, and the lock with it.
        *held = None;
    }
    let mut conn = PgConnection::connect_with(&store.options).await?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RETENTION_LOCK)
        .fetch_one(&mut conn)
        .await?;
    if taken {
        *held = Some(conn);
    } else {
        let _ = conn.close().await;
    }
    Ok(taken)
}
