//! The PostgreSQL store: for several coordinators sharing one database.
//!
//! A pool of [`POOL_SIZE`] connections serves reads and lease work; saga writes go through
//! the group committer, which takes a connection from the pool for each batch and commits
//! the whole batch in one transaction.
//!
//! Safety with several coordinators on one database:
//! - [`Store::claim`] locks the rows it adopts with `FOR UPDATE SKIP LOCKED`, so two
//!   coordinators never adopt the same saga in one round and never wait on each other.
//! - Appends are fenced by `(owner, generation)` in the `UPDATE` itself.
//! - Two coordinators creating sagas with the same idempotency key race on the unique index
//!   (`ON CONFLICT DO NOTHING`, then a re-read): the loser answers `Existing` or
//!   `IdempotencyConflict`, never a SQL error.
//! - [`Store::put_definition`] holds a transaction-scoped advisory lock on the definition's
//!   name, so concurrent registrations get consecutive versions.
//! - Statements that lock several saga rows lock them in id order, and a batch writes its
//!   sagas in id order, so they do not deadlock; a batch that still meets a deadlock (or a
//!   serialization failure) runs again.
//! - When a write of a batch fails in the database (a JSON string holding `\u0000`, which
//!   `jsonb` refuses, for example), the batch runs again with a savepoint around each write,
//!   so only that write fails.
//!
//! Connection failures surface as [`Error::Store`], which the executor retries with backoff.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sagas::{SagaEvent, SagaStatus};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool, QueryBuilder, Row};
use uuid::Uuid;

use super::group_commit::{BatchWriter, GroupCommit, Write, WriteAck};
use super::memory::same_request;
use super::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, ListFilter, NewSaga, PutDefinition, SagaRecord,
    Store, StoreStats, StoredEvent,
};
use crate::{Error, Result};

/// The migrations of the PostgreSQL schema, applied by [`PostgresStore::connect`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections in a store's pool (readers, lease work and the group committer together).
pub const POOL_SIZE: u32 = 8;

/// How long a caller waits for a pooled connection (or for the database to come back).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a batch runs when it meets a deadlock or a serialization failure.
const BATCH_ATTEMPTS: u32 = 3;

/// The first key of the advisory locks that serialise definition registrations.
const DEFINITION_LOCK_CLASS: i32 = 0x6773_6167; // "gsag"

const SAGA_COLUMNS: &str = "id, definition, version, input, status, error, owner, lease_until_ms, generation, \
     idempotency_key, trace_context, cancel_requested, created_at_ms, updated_at_ms, event_count";

const DEFINITION_COLUMNS: &str = "name, version, content_hash, document, created_at_ms";

/// The unsettled sagas of `$1`, locked in id order (as every statement locking several saga
/// rows does, so that they never deadlock); `= ANY(ARRAY(..))` keeps the update on the
/// primary key instead of a join over the whole table.
const OWNED: &str = "SELECT id FROM sagas WHERE owner = $1 AND status IN ('running', 'compensating') \
     ORDER BY id FOR UPDATE";

/// What a statement returns: database errors stay apart from the store's own.
type Sql<T> = std::result::Result<T, sqlx::Error>;

/// A store in a PostgreSQL database, shareable by several coordinators.
pub struct PostgresStore {
    pool: PgPool,
    group: GroupCommit,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and
    /// migrates it.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url)?.application_name("geosaga-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let group = GroupCommit::start(PgWriter { pool: pool.clone() });
        Ok(PostgresStore { pool, group })
    }
}

struct PgWriter {
    pool: PgPool,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn write_batch(&mut self, batch: &[Write]) -> Result<Vec<Result<WriteAck>>> {
        let order = lock_order(batch);
        let mut isolate = false;
        let mut attempt = 1;
        loop {
            match run_batch(&self.pool, batch, &order, isolate).await {
                Ok(results) => return Ok(results),
                Err(e) if is_conflict(&e) && attempt < BATCH_ATTEMPTS => attempt += 1,
                Err(sqlx::Error::Database(e)) if !isolate => {
                    tracing::debug!(error = %e, "a write of the batch failed; running it again write by write");
                    isolate = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The order a batch's writes run in: creates by idempotency key, then appends by saga id
/// (stable, so two writes of one saga keep their order). Every writer taking row locks in
/// one order is what keeps concurrent batches from deadlocking.
fn lock_order(batch: &[Write]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| match &batch[i] {
        Write::Create(new) => (0, new.idempotency_key.as_deref().unwrap_or(""), new.id),
        Write::Append(append) => (1, "", append.saga_id),
    });
    order
}

/// A deadlock or a serialization failure: the transaction may succeed when run again.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40P01" | "40001")))
}

/// Runs a batch in one transaction; with `isolate`, each write within a savepoint, so that a
/// write the database refuses fails alone.
async fn run_batch(pool: &PgPool, batch: &[Write], order: &[usize], isolate: bool) -> Sql<Vec<Result<WriteAck>>> {
    if !isolate {
        return run_batch_together(pool, batch, order).await;
    }
    let mut tx = pool.begin().await?;
    let mut results: Vec<Option<Result<WriteAck>>> = (0..batch.len()).map(|_| None).collect();
    for &i in order {
        let result = if isolate {
            let mut savepoint = Connection::begin(&mut *tx).await?;
            match write_one(&mut savepoint, &batch[i]).await {
                Ok(result) => {
                    savepoint.commit().await?;
                    result
                }
                Err(sqlx::Error::Database(e)) => {
                    savepoint.rollback().await?;
                    Err(Error::Store(format!(
                        "saga {}: the database refused the write: {e}",
                        saga_of(&batch[i])
                    )))
                }
                Err(e) => return Err(e),
            }
        } else {
            write_one(&mut tx, &batch[i]).await?
        };
        results[i] = Some(result);
    }
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every write of the batch ran"))
        .collect())
}

/// Runs a batch in one transaction with few statements, each a round trip to the server:
/// its creates one by one, then one fenced UPDATE for every append (and every new saga's
/// first events), then one INSERT for all their events.
async fn run_batch_together(pool: &PgPool, batch: &[Write], order: &[usize]) -> Sql<Vec<Result<WriteAck>>> {
    let mut tx = pool.begin().await?;
    let mut results: Vec<Option<Result<WriteAck>>> = (0..batch.len()).map(|_| None).collect();
    let mut initial: Vec<(usize, Append)> = Vec::new();
    let mut appends: Vec<(usize, &Append)> = Vec::new();
    for &i in order {
        match &batch[i] {
            Write::Create(new) => {
                let created = create(&mut tx, new).await?;
                if let (Ok(Created::New(_)), Some(first)) = (&created, new.initial_append()) {
                    initial.push((i, first));
                }
                results[i] = Some(created.map(|c| WriteAck::Created(Box::new(c))));
            }
            Write::Append(append) => appends.push((i, append)),
        }
    }
    let all: Vec<(usize, &Append)> = initial.iter().map(|(i, a)| (*i, a)).chain(appends).collect();
    let acks = update_for_appends(&mut tx, all.iter().map(|(_, a)| *a)).await?;
    let mut written = Vec::with_capacity(all.len());
    for (k, ((i, append), ack)) in all.into_iter().zip(acks).enumerate() {
        let first_events = k < initial.len();
        match ack {
            Ok(ack) => {
                written.push(append);
                if !first_events {
                    results[i] = Some(Ok(WriteAck::Appended(ack)));
                }
            }
            // A new saga's first events are fenced by the row just inserted: they fail only
            // if something is badly wrong; the create fails with them.
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    insert_events(&mut tx, &written).await?;
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every write of the batch ran"))
        .collect())
}

/// The saga-row half of several appends: one UPDATE joined to their rows passed as arrays,
/// locking the rows in id order first (as every statement locking several saga rows does).
async fn update_for_appends<'a>(
    conn: &mut PgConnection,
    appends: impl Iterator<Item = &'a Append>,
) -> Sql<Vec<Result<AppendAck>>> {
    let appends: Vec<&Append> = appends.collect();
    if appends.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = appends.iter().map(|a| a.saga_id).collect();
    let owners: Vec<&str> = appends.iter().map(|a| a.fence.owner.as_str()).collect();
    let generations: Vec<i64> = appends.iter().map(|a| a.fence.generation).collect();
    let statuses: Vec<&str> = appends.iter().map(|a| a.status.as_str()).collect();
    let errors: Vec<Option<&str>> = appends.iter().map(|a| a.error.as_deref()).collect();
    let times: Vec<i64> = appends.iter().map(|a| a.now_ms).collect();
    let ends: Vec<i64> = appends.iter().map(|a| a.first_seq + a.events.len() as i64).collect();
    let rows = sqlx::query(
        "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
               $6::bigint[], $7::bigint[]) AS v (id, owner, generation, status, error, now_ms, end_seq)), \
         locked AS (SELECT s.id FROM sagas s JOIN v ON s.id = v.id AND s.owner = v.owner \
               AND s.generation = v.generation ORDER BY s.id FOR UPDATE OF s) \
         UPDATE sagas s SET status = v.status, error = v.error, updated_at_ms = v.now_ms, \
           event_count = GREATEST(s.event_count, v.end_seq), \
           cancel_requested = (s.cancel_requested AND v.status = 'running') \
         FROM v, locked WHERE s.id = locked.id AND s.id = v.id AND s.owner = v.owner AND s.generation = v.generation \
         RETURNING s.id, s.owner, s.generation, s.cancel_requested",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&generations)
    .bind(&statuses)
    .bind(&errors)
    .bind(&times)
    .bind(&ends)
    .fetch_all(&mut *conn)
    .await?;
    let mut acks: HashMap<(Uuid, String, i64), bool> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let fence = (row.try_get("id")?, row.try_get("owner")?, row.try_get("generation")?);
        acks.insert(fence, row.try_get("cancel_requested")?);
    }
    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        let fence = (append.saga_id, append.fence.owner.clone(), append.fence.generation);
        results.push(match acks.get(&fence) {
            Some(&cancel_requested) => Ok(AppendAck { cancel_requested }),
            None => {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM sagas WHERE id = $1")
                    .bind(append.saga_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                Err(match exists {
                    Some(_) => Error::Fenced(append.saga_id),
                    None => Error::SagaNotFound(append.saga_id),
                })
            }
        });
    }
    Ok(results)
}

/// The events of several appends, in one INSERT; an event already stored at its
/// `(saga_id, seq)` is left alone, which keeps appends idempotent.
async fn insert_events(conn: &mut PgConnection, appends: &[&Append]) -> Sql<()> {
    let (mut ids, mut seqs, mut times, mut events) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for append in appends {
        for (k, event) in append.events.iter().enumerate() {
            ids.push(append.saga_id);
            seqs.push(append.first_seq + k as i64);
            times.push(append.now_ms);
            events.push(Json(event));
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO saga_events (saga_id, seq, at_ms, event) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::jsonb[]) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(seqs)
    .bind(times)
    .bind(events)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn saga_of(write: &Write) -> Uuid {
    match write {
        Write::Create(new) => new.id,
        Write::Append(append) => append.saga_id,
    }
}

async fn write_one(conn: &mut PgConnection, write: &Write) -> Sql<Result<WriteAck>> {
    Ok(match write {
        Write::Create(new) => {
            let created = create(conn, new).await?;
            if let (Ok(Created::New(_)), Some(first)) = (&created, new.initial_append()) {
                // The saga's first events, in the transaction that creates it.
                if let Err(e) = append_events(conn, &first).await? {
                    return Ok(Err(e));
                }
            }
            created.map(|c| WriteAck::Created(Box::new(c)))
        }
        Write::Append(append) => append_events(conn, append).await?.map(WriteAck::Appended),
    })
}

async fn saga_by_key(conn: &mut PgConnection, key: &str) -> Sql<Option<SagaRecord>> {
    let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE idempotency_key = $1"))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(saga_from_row).transpose()
}

/// What a start with an idempotency key that is already taken gets.
fn repeated(existing: SagaRecord, new: &NewSaga, key: &str) -> Result<Created> {
    if same_request(&existing, new) {
        Ok(Created::Existing(existing))
    } else {
        let (key, existing) = (key.to_owned(), existing.id);
        Err(Error::IdempotencyConflict { key, existing })
    }
}

async fn create(conn: &mut PgConnection, new: &NewSaga) -> Sql<Result<Created>> {
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = saga_by_key(conn, key).await?
    {
        return Ok(repeated(existing, new, key));
    }
    let row = sqlx::query(&format!(
        "INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
         idempotency_key, trace_context, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, 'running', $5, $6, 1, $7, $8, $9, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {SAGA_COLUMNS}"
    ))
    .bind(new.id)
    .bind(&new.definition)
    .bind(new.version)
    .bind(&new.input)
    .bind(&new.owner)
    .bind(new.lease_until_ms)
    .bind(&new.idempotency_key)
    .bind(&new.trace_context)
    .bind(new.now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Ok(Created::New(saga_from_row(&row)?)));
    }
    // Another coordinator committed a saga with this key after our first look.
    let key = new.idempotency_key.as_deref().unwrap_or_default();
    Ok(match saga_by_key(conn, key).await? {
        Some(existing) => repeated(existing, new, key),
        None => Err(Error::Store(format!(
            "saga {}: idempotency key `{key}` conflicts with no visible saga",
            new.id
        ))),
    })
}

async fn append_events(conn: &mut PgConnection, append: &Append) -> Sql<Result<AppendAck>> {
    let end = append.first_seq + append.events.len() as i64;
    let cancel_requested: Option<bool> = sqlx::query_scalar(
        "UPDATE sagas SET status = $1, error = $2, updated_at_ms = $3, event_count = GREATEST(event_count, $4), \
         cancel_requested = (cancel_requested AND $1 = 'running') \
         WHERE id = $5 AND owner = $6 AND generation = $7 RETURNING cancel_requested",
    )
    .bind(append.status.as_str())
    .bind(&append.error)
    .bind(append.now_ms)
    .bind(end)
    .bind(append.saga_id)
    .bind(&append.fence.owner)
    .bind(append.fence.generation)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(cancel_requested) = cancel_requested else {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM sagas WHERE id = $1")
            .bind(append.saga_id)
            .fetch_optional(&mut *conn)
            .await?;
        return Ok(Err(match exists {
            Some(_) => Error::Fenced(append.saga_id),
            None => Error::SagaNotFound(append.saga_id),
        }));
    };
    if !append.events.is_empty() {
        let seqs: Vec<i64> = (append.first_seq..end).collect();
        let events: Vec<Json<&SagaEvent>> = append.events.iter().map(Json).collect();
        sqlx::query(
            "INSERT INTO saga_events (saga_id, seq, at_ms, event) \
             SELECT $1, e.seq, $2, e.event FROM UNNEST($3::bigint[], $4::jsonb[]) AS e (seq, event) \
             ON CONFLICT DO NOTHING",
        )
        .bind(append.saga_id)
        .bind(append.now_ms)
        .bind(seqs)
        .bind(events)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Ok(AppendAck { cancel_requested }))
}

fn saga_from_row(row: &PgRow) -> Sql<SagaRecord> {
    let status: String = row.try_get("status")?;
    Ok(SagaRecord {
        id: row.try_get("id")?,
        definition: row.try_get("definition")?,
        version: row.try_get("version")?,
        input: row.try_get("input")?,
        status: SagaStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown saga status `{status}`").into()))?,
        error: row.try_get("error")?,
        owner: row.try_get("owner")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        generation: row.try_get("generation")?,
        idempotency_key: row.try_get("idempotency_key")?,
        trace_context: row.try_get("trace_context")?,
        cancel_requested: row.try_get("cancel_requested")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        event_count: row.try_get("event_count")?,
    })
}

fn definition_from_row(row: &PgRow) -> Sql<DefinitionRecord> {
    Ok(DefinitionRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        document: row.try_get("document")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
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
        if let Some((at, id)) = filter.before {
            query.push(" AND (created_at_ms, id) < (").push_bind(at);
            query.push(", ").push_bind(id).push(")");
        }
        query.push(" ORDER BY created_at_ms DESC, id DESC LIMIT ");
        query.push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(saga_from_row).collect::<Sql<_>>()?)
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(&format!(
            "UPDATE sagas SET lease_until_ms = $2 WHERE id = ANY(ARRAY({OWNED})) RETURNING id, cancel_requested"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut cancels = Vec::new();
        for row in &rows {
            if row.try_get::<bool, _>("cancel_requested")? {
                cancels.push(row.try_get("id")?);
            }
        }
        Ok(cancels)
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

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.group.stats()
    }
}
