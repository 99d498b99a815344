//! The PostgreSQL store: for several coordinators sharing one database.
//!
//! A pool of [`POOL_SIZE`] connections serves reads and lease work; saga writes go through
//! the group committer, which commits each batch as one statement (`postgres_writer/`) on
//! a connection of its own pool, with up to [`PIPELINE_DEPTH`] batches in flight.
//!
//! The group committer's connections run with `enable_seqscan = off`. Its statement finds
//! saga rows by primary key only, and PostgreSQL plans a statement it has run five times
//! once for all (a generic plan): a generic plan made while the table was small (a new
//! database, its first minute, before autovacuum has analyzed it) scanned the whole table
//! for every batch long after it had grown, and throughput fell with every saga stored.
//! Planning every statement afresh instead (`plan_cache_mode = force_custom_plan`) cost
//! more than half of the database's CPU per saga at concurrency 1 (bench/notes.md, sixth
//! and seventh passes).
//!
//! Safety with several coordinators on one database:
//! - [`Store::claim`] locks the rows it adopts with `FOR UPDATE SKIP LOCKED`, so two
//!   coordinators never adopt the same saga in one round and never wait on each other.
//! - Appends are fenced by `(owner, generation)` in the `UPDATE` itself.
//! - Two coordinators (or two batches) creating sagas with the same idempotency key race on
//!   the unique index (`ON CONFLICT DO NOTHING`, then a re-read): the loser answers `Existing`
//!   or `IdempotencyConflict`, never a SQL error. Two creates with one key in one batch: the
//!   first is inserted, the second answered the same way.
//! - [`Store::put_definition`] holds a transaction-scoped advisory lock on the definition's
//!   name, so concurrent registrations get consecutive versions.
//! - Statements that lock several saga rows lock them in id order, and a batch inserts its
//!   sagas in idempotency-key order before it locks any row, so they do not deadlock; a batch
//!   that still meets a deadlock (or a serialization failure) runs again.
//! - When a write of a batch fails in the database (a JSON string holding `\u0000`, which
//!   `jsonb` refuses, for example), the batch runs again with a savepoint around each write,
//!   so only that write fails.
//!
//! Connection failures surface as [`crate::Error::Store`], which the executor retries with backoff.

mod maintenance;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder, Row};
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::postgres_writer::PgWriter;
use super::rows::{DEFINITION_COLUMNS, SAGA_COLUMNS, definition_from_row, saga_from_row};
use super::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, Expiry, ListFilter, NewSaga, PutDefinition,
    Renewed, SagaRecord, Store, StoreStats, StoredEvent, schema,
};
use crate::Result;

/// The migrations of the PostgreSQL schema, applied by [`PostgresStore::connect`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections in a store's pool for reads and lease work (the group committer has
/// [`PIPELINE_DEPTH`] more of its own).
pub const POOL_SIZE: u32 = 8;

/// Batches the group committer has in flight at once, each a statement of its own on a
/// connection of its own: while one is at the server (running, then waiting for its WAL
/// flush), the next collects the writes queued meanwhile and is sent (`group_commit.rs` says
/// why batches in flight together are safe). With one-statement batches, 1, 2 and 3 made
/// the same throughput and p99 at concurrency 64 within the noise (2 is kept); with
/// batches of several statements, 4 split the queue into three times the commits and were
/// slower than 1 (bench/notes.md, fourth and seventh passes).
pub const PIPELINE_DEPTH: usize = 2;

/// How long a caller waits for a pooled connection (or for the database to come back).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first key of the advisory locks that serialise definition registrations.
const DEFINITION_LOCK_CLASS: i32 = 0x6773_6167; // "gsag"

/// The unsettled sagas of `$1`, locked in id order (as every statement locking several saga
/// rows does, so that they never deadlock); `= ANY(ARRAY(..))` keeps the update on the
/// primary key instead of a join over the whole table.
const OWNED: &str = "SELECT id FROM sagas WHERE owner = $1 AND status IN ('running', 'compensating') \
     ORDER BY id FOR UPDATE";

/// What a statement returns: database errors stay apart from the store's own.
pub(super) type Sql<T> = std::result::Result<T, sqlx::Error>;

/// A store in a PostgreSQL database, shareable by several coordinators.
pub struct PostgresStore {
    pool: PgPool,
    group: GroupCommit,
    options: PgConnectOptions,
    /// The connection holding the retention lock, while this store holds it.
    retention_lock: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and
    /// migrates it.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url)?.application_name("geosaga-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let applied = schema::applied_postgres(&pool).await?;
        schema::refuse_newer(applied, &MIGRATOR, "the PostgreSQL database")?;
        MIGRATOR.run(&pool).await?;
        let writer_pool = PgPoolOptions::new()
            .max_connections(PIPELINE_DEPTH as u32)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone().options([("enable_seqscan", "off")]))
            .await?;
        let group = GroupCommit::start(PgWriter { pool: writer_pool }, PIPELINE_DEPTH);
        Ok(PostgresStore {
            pool,
            group,
            options,
            retention_lock: tokio::sync::Mutex::new(None),
        })
    }
}

/// The second key of the advisory lock for a definition name (32-bit FNV-1a).
fn definition_lock_key(name: &str) -> i32 {
    let hash = name
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_definition(
        &self,
        name: &str,
        content_hash: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<PutDefinition> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(DEFINITION_LOCK_CLASS)
            .bind(definition_lock_key(name))
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = $1 AND content_hash = $2"
        ))
        .bind(name)
        .bind(content_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let (record, created) = (definition_from_row(&row)?, false);
            tx.commit().await?;
            return Ok(PutDefinition { record, created });
        }
        let row = sqlx::query(&format!(
            "INSERT INTO definitions (name, version, content_hash, document, created_at_ms) \
             VALUES ($1, (SELECT COALESCE(MAX(version), 0) + 1 FROM definitions WHERE name = $1), $2, $3, $4) \
             RETURNING {DEFINITION_COLUMNS}"
        ))
        .bind(name)
        .bind(content_hash)
        .bind(document)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let (record, created) = (definition_from_row(&row)?, true);
        tx.commit().await?;
        Ok(PutDefinition { record, created })
    }

    async fn get_definition(&self, name: &str, version: Option<i64>) -> Result<Option<DefinitionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = $1 AND ($2::bigint IS NULL OR version = $2) \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(definition_from_row).transpose()?)
    }

    async fn list_definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let rows = sqlx::query(
            "SELECT name, MAX(version) AS latest, MAX(created_at_ms) AS updated FROM definitions \
             GROUP BY name ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        let summary = |r: &PgRow| -> Sql<DefinitionSummary> {
            Ok(DefinitionSummary {
                name: r.try_get("name")?,
                latest_version: r.try_get("latest")?,
                updated_at_ms: r.try_get("updated")?,
            })
        };
        Ok(rows.iter().map(summary).collect::<Sql<_>>()?)
    }

    async fn create_saga(&self, new: NewSaga) -> Result<Created> {
        self.group.create(new).await
    }

    async fn append(&self, append: Append) -> Result<AppendAck> {
        self.group.append(append).await
    }

    async fn get_saga(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(saga_from_row).transpose()?)
    }

    async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query("SELECT seq, at_ms, event FROM saga_events WHERE saga_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let event = |r: &PgRow| -> Sql<StoredEvent> {
            let (seq, at_ms, Json(event)) = (r.try_get("seq")?, r.try_get("at_ms")?, r.try_get("event")?);
            Ok(StoredEvent { seq, at_ms, event })
        };
        Ok(rows.iter().map(event).collect::<Sql<_>>()?)
    }

    async fn events_of(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<StoredEvent>>> {
        let rows = sqlx::query(
            "SELECT saga_id, seq, at_ms, event FROM saga_events WHERE saga_id = ANY($1) ORDER BY saga_id, seq",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut logs: HashMap<Uuid, Vec<StoredEvent>> = HashMap::new();
        for r in &rows {
            let (seq, at_ms, Json(event)) = (r.try_get("seq")?, r.try_get("at_ms")?, r.try_get("event")?);
            logs.entry(r.try_get("saga_id")?)
                .or_default()
                .push(StoredEvent { seq, at_ms, event });
        }
        Ok(logs)
    }

    async fn list_sagas(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>> {
        // Only the filters asked for, so that `before` is an index condition on `sagas_newest`
        // and a deep page does not scan every newer row.
        let mut query = QueryBuilder::new(format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE TRUE"));
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(definition) = &filter.definition {
            query.push(" AND definition = ").push_bind(definition.clone());
        }
        if let Some(key) = &filter.idempotency_key {
            query.push(" AND idempotency_key = ").push_bind(key.clone());
        }
        if let Some((at, id)) = filter.before {
            query.push(" AND (created_at_ms, id) < (").push_bind(at);
            query.push(", ").push_bind(id).push(")");
        }
        query.push(" ORDER BY created_at_ms DESC, id DESC LIMIT ");
        query.push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(saga_from_row).collect::<Sql<_>>()?)
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Renewed> {
        let rows = sqlx::query(&format!(
            "UPDATE sagas SET lease_until_ms = $2 WHERE id = ANY(ARRAY({OWNED})) RETURNING id, cancel_requested"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut renewed = Renewed::default();
        for row in &rows {
            let id = row.try_get("id")?;
            renewed.owned.push(id);
            if row.try_get::<bool, _>("cancel_requested")? {
                renewed.cancels.push(id);
            }
        }
        Ok(renewed)
    }

    async fn claim(
        &self,
        owner: &str,
        include_own: bool,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SagaRecord>> {
        // Without `include_own` (every round but the first), a range of `sagas_unsettled`.
        let due = if include_own {
            "(lease_until_ms < $1 OR owner = $2)"
        } else {
            "lease_until_ms < $1"
        };
        let rows = sqlx::query(&format!(
            "WITH c AS (SELECT id FROM sagas WHERE status IN ('running', 'compensating') AND {due} \
               ORDER BY lease_until_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE sagas s SET owner = $2, generation = s.generation + 1, lease_until_ms = $4 \
             FROM c WHERE s.id = c.id RETURNING s.*"
        ))
        .bind(now_ms)
        .bind(owner)
        .bind(i64::from(limit))
        .bind(lease_until_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(saga_from_row).collect::<Sql<_>>()?)
    }

    async fn take_over_stuck(&self, id: Uuid, owner: &str, lease_until_ms: i64) -> Result<Option<SagaRecord>> {
        let row = sqlx::query(&format!(
            "UPDATE sagas SET owner = $1, generation = generation + 1, lease_until_ms = $2 \
             WHERE id = $3 AND status = 'stuck' RETURNING {SAGA_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(saga_from_row).transpose()?)
    }

    async fn request_cancel(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        sqlx::query("UPDATE sagas SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_saga(id).await
    }

    async fn release(&self, owner: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE sagas SET lease_until_ms = 0 WHERE id = ANY(ARRAY({OWNED}))"
        ))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn expired(&self, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>> {
        maintenance::expired(self, expiry, limit).await
    }

    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>> {
        maintenance::delete_expired(self, ids, expiry).await
    }

    async fn retention_turn(&self) -> Result<bool> {
        maintenance::retention_turn(self).await
    }

    async fn clock_ms(&self) -> Result<i64> {
        // The database's clock: every coordinator of the database judges leases by it.
        let ms: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&self.pool)
            .await?;
        Ok(ms)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.group.stats()
    }
}
