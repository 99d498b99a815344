//! The SQLite store: the embedded default. One file in WAL mode with `synchronous=FULL`
//! (a commit is durable when it returns), one writer connection fed by the group
//! committer, and a pool of readers beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sagas::SagaStatus;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::group_commit::{BatchWriter, GroupCommit, Write, WriteAck};
use super::memory::same_request;
use super::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, ListFilter, NewSaga, PutDefinition, SagaRecord,
    Store, StoreStats, StoredEvent,
};
use crate::{Error, Result};

/// The migrations of the SQLite schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A store in one SQLite file.
pub struct SqliteStore {
    readers: SqlitePool,
    writer: SqlitePool,
    group: GroupCommit,
}

const SAGA_COLUMNS: &str = "id, definition, version, input, status, error, owner, lease_until_ms, generation, \
     idempotency_key, trace_context, cancel_requested, created_at_ms, updated_at_ms, event_count";

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Store(format!("creating {}: {e}", dir.display())))?;
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // No liveness ping before each acquire: a connection to a local file does not go
        // stale, and the ping is one more round trip to the connection's worker thread.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let group = GroupCommit::start(SqliteWriter { pool: writer.clone() });
        Ok(SqliteStore { readers, writer, group })
    }
}

struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(&mut self, batch: &[Write]) -> Result<Vec<Result<WriteAck>>> {
        // IMMEDIATE: take the write lock up front (waiting out `busy_timeout`), so that another
        // process writing the same file cannot make the batch's first write fail with
        // SQLITE_BUSY after its reads.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Each statement is a round trip to the connection's thread: a batch is its creates
        // (each carrying its first events' status in the row), one fenced UPDATE for all its
        // appends and one INSERT for all its events, whatever its size.
        let mut results: Vec<Option<Result<WriteAck>>> = (0..batch.len()).map(|_| None).collect();
        let mut initial = Vec::new();
        let mut appends = Vec::new();
        for (i, write) in batch.iter().enumerate() {
            match write {
                Write::Create(new) => {
                    let created = create(&mut tx, new).await?;
                    if let (Ok(Created::New(_)), Some(first)) = (&created, new.initial_append()) {
                        initial.push(first);
                    }
                    results[i] = Some(created.map(|c| WriteAck::Created(Box::new(c))));
                }
                Write::Append(append) => appends.push((i, append)),
            }
        }
        let acks = update_for_appends(&mut tx, appends.iter().map(|(_, a)| *a)).await?;
        let mut written: Vec<&Append> = initial.iter().collect();
        for ((i, append), ack) in appends.into_iter().zip(acks) {
            if ack.is_ok() {
                written.push(append);
            }
            results[i] = Some(ack.map(WriteAck::Appended));
        }
        insert_events(&mut tx, &written).await?;
        tx.commit().await?;
        Ok(results
            .into_iter()
            .map(|r| r.expect("every write of the batch ran"))
            .collect())
    }
}

async fn saga_by_id(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<SagaRecord>> {
    let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(saga_from_row).transpose()
}

async fn create(conn: &mut SqliteConnection, new: &NewSaga) -> Result<Result<Created>> {
    if let Some(key) = &new.idempotency_key {
        let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE idempotency_key = ?"))
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            let existing = saga_from_row(&row)?;
            return Ok(if same_request(&existing, new) {
                Ok(Created::Existing(existing))
            } else {
                Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    existing: existing.id,
                })
            });
        }
    }
    let row = sqlx::query(&format!(
        "INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
         idempotency_key, trace_context, created_at_ms, updated_at_ms, event_count) \
         VALUES (?, ?, ?, ?, 'running', ?, ?, 1, ?, ?, ?, ?, ?) RETURNING {SAGA_COLUMNS}"
    ))
    .bind(new.id.to_string())
    .bind(&new.definition)
    .bind(new.version)
    .bind(new.input.to_string())
    .bind(&new.owner)
    .bind(new.lease_until_ms)
    .bind(&new.idempotency_key)
    .bind(&new.trace_context)
    .bind(new.now_ms)
    .bind(new.now_ms)
    .bind(new.events.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Ok(Created::New(saga_from_row(&row)?)))
}

/// The saga-row half of a batch's appends: one fenced UPDATE for all of them (their rows
/// passed as one JSON array). Their events are written by [`insert_events`] with the rest of
/// the batch's. An append whose fence does not hold gets `Fenced` (or `SagaNotFound`).
async fn update_for_appends<'a>(
    conn: &mut SqliteConnection,
    appends: impl Iterator<Item = &'a Append>,
) -> Result<Vec<Result<AppendAck>>> {
    let appends: Vec<&Append> = appends.collect();
    if appends.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Value> = appends
        .iter()
        .map(|a| {
            serde_json::json!([
                a.saga_id.to_string(),
                a.fence.owner,
                a.fence.generation,
                a.status.as_str(),
                a.error,
                a.now_ms,
                a.first_seq + a.events.len() as i64,
            ])
        })
        .collect();
    // One saga appears once per batch (its task waits for each append), but should a fenced
    // task and its successor both have one queued, the rows joined to one saga differ in
    // their fence and at most one of them matches.
    let updated = sqlx::query(
        "UPDATE sagas SET status = v.status, error = v.error, updated_at_ms = v.now_ms, \
         event_count = MAX(event_count, v.end_seq), \
         cancel_requested = CASE WHEN v.status = 'running' THEN cancel_requested ELSE 0 END \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, value ->> 2 AS generation, value ->> 3 AS status, \
               value ->> 4 AS error, value ->> 5 AS now_ms, value ->> 6 AS end_seq FROM json_each(?)) AS v \
         WHERE sagas.id = v.id AND sagas.owner = v.owner AND sagas.generation = v.generation \
         RETURNING sagas.id, sagas.owner, sagas.generation, sagas.cancel_requested",
    )
    .bind(Value::Array(rows).to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut acks: HashMap<(String, String, i64), bool> = HashMap::with_capacity(updated.len());
    for row in &updated {
        let fence = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        acks.insert(fence, row.try_get::<i64, _>(3)? != 0);
    }
    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        let fence = (
            append.saga_id.to_string(),
            append.fence.owner.clone(),
            append.fence.generation,
        );
        results.push(match acks.get(&fence) {
            Some(&cancel_requested) => Ok(AppendAck { cancel_requested }),
            None if saga_by_id(conn, append.saga_id).await?.is_some() => Err(Error::Fenced(append.saga_id)),
            None => Err(Error::SagaNotFound(append.saga_id)),
        });
    }
    Ok(results)
}

/// Most event rows one INSERT carries: 4 parameters each, far below SQLite's 32,766.
const EVENTS_PER_INSERT: usize = 1000;

/// Writes the events of `appends` with multi-row INSERTs. An event already stored at its
/// `(saga_id, seq)` is left alone, which keeps appends idempotent.
async fn insert_events(conn: &mut SqliteConnection, appends: &[&Append]) -> Result<()> {
    let rows: Vec<(String, i64, i64, String)> = appends
        .iter()
        .flat_map(|append| {
            let id = append.saga_id.to_string();
            append.events.iter().enumerate().map(move |(k, event)| {
                let text = serde_json::to_string(event).expect("events are JSON");
                (id.clone(), append.first_seq + k as i64, append.now_ms, text)
            })
        })
        .collect();
    for chunk in rows.chunks(EVENTS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO saga_events (saga_id, seq, at_ms, event) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        // Keep the prepared statements of the common small batches; prepare large ones anew.
        let mut query = sqlx::query(&sql).persistent(chunk.len() <= 8);
        for (id, seq, at_ms, event) in chunk {
            query = query.bind(id).bind(seq).bind(at_ms).bind(event);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn parse_json(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Store(format!("{what} is not JSON: {e}")))
}

fn saga_from_row(row: &SqliteRow) -> Result<SagaRecord> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let input: String = row.try_get("input")?;
    Ok(SagaRecord {
        id: Uuid::parse_str(&id).map_err(|e| Error::Store(format!("saga id {id}: {e}")))?,
        definition: row.try_get("definition")?,
        version: row.try_get("version")?,
        input: parse_json(&input, "saga input")?,
        status: SagaStatus::parse(&status).ok_or_else(|| Error::Store(format!("unknown saga status {status}")))?,
        error: row.try_get("error")?,
        owner: row.try_get("owner")?,
        lease_until_ms: row.try_get("lease_until_ms")?,
        generation: row.try_get("generation")?,
        idempotency_key: row.try_get("idempotency_key")?,
        trace_context: row.try_get("trace_context")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        event_count: row.try_get("event_count")?,
    })
}

fn definition_from_row(row: &SqliteRow) -> Result<DefinitionRecord> {
    let document: String = row.try_get("document")?;
    Ok(DefinitionRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        document: parse_json(&document, "definition")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_definition(
        &self,
        name: &str,
        content_hash: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<PutDefinition> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query("SELECT * FROM definitions WHERE name = ? AND content_hash = ?")
            .bind(name)
            .bind(content_hash)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            return Ok(PutDefinition {
                record: definition_from_row(&row)?,
                created: false,
            });
        }
        let row = sqlx::query(
            "INSERT INTO definitions (name, version, content_hash, document, created_at_ms) \
             VALUES (?, (SELECT COALESCE(MAX(version), 0) + 1 FROM definitions WHERE name = ?), ?, ?, ?) RETURNING *",
        )
        .bind(name)
        .bind(name)
        .bind(content_hash)
        .bind(document.to_string())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let record = definition_from_row(&row)?;
        tx.commit().await?;
        Ok(PutDefinition { record, created: true })
    }

    async fn get_definition(&self, name: &str, version: Option<i64>) -> Result<Option<DefinitionRecord>> {
        let row = match version {
            Some(v) => sqlx::query("SELECT * FROM definitions WHERE name = ? AND version = ?")
                .bind(name)
                .bind(v),
            None => sqlx::query("SELECT * FROM definitions WHERE name = ? ORDER BY version DESC LIMIT 1").bind(name),
        }
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(definition_from_row).transpose()
    }

    async fn list_definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let rows = sqlx::query(
            "SELECT name, MAX(version) AS latest, MAX(created_at_ms) AS updated FROM definitions GROUP BY name ORDER BY name",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DefinitionSummary {
                    name: r.try_get("name")?,
                    latest_version: r.try_get("latest")?,
                    updated_at_ms: r.try_get("updated")?,
                })
            })
            .collect()
    }

    async fn create_saga(&self, new: NewSaga) -> Result<Created> {
        self.group.create(new).await
    }

    async fn append(&self, append: Append) -> Result<AppendAck> {
        self.group.append(append).await
    }

    async fn get_saga(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        let mut conn = self.readers.acquire().await?;
        saga_by_id(&mut conn, id).await
    }

    async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query("SELECT seq, at_ms, event FROM saga_events WHERE saga_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event")?;
                Ok(StoredEvent {
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    event: serde_json::from_str(&text).map_err(|e| Error::Store(format!("event of {id}: {e}")))?,
                })
            })
            .collect()
    }

    async fn events_of(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<StoredEvent>>> {
        let ids = Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string();
        let rows = sqlx::query(
            "SELECT saga_id, seq, at_ms, event FROM saga_events \
             WHERE saga_id IN (SELECT value FROM json_each(?)) ORDER BY saga_id, seq",
        )
        .bind(ids)
        .fetch_all(&self.readers)
        .await?;
        let mut logs: HashMap<Uuid, Vec<StoredEvent>> = HashMap::new();
        for r in &rows {
            let id: String = r.try_get("saga_id")?;
            let id = Uuid::parse_str(&id).map_err(|e| Error::Store(format!("saga id {id}: {e}")))?;
            let text: String = r.try_get("event")?;
            logs.entry(id).or_default().push(StoredEvent {
                seq: r.try_get("seq")?,
                at_ms: r.try_get("at_ms")?,
                event: serde_json::from_str(&text).map_err(|e| Error::Store(format!("event of {id}: {e}")))?,
            });
        }
        Ok(logs)
    }

    async fn list_sagas(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>> {
        let (before_ms, before_id) = filter
            .before
            .map_or((i64::MAX, String::new()), |(t, id)| (t, id.to_string()));
        let rows = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE (? IS NULL OR status = ?) AND (? IS NULL OR definition = ?) \
             AND (created_at_ms < ? OR (created_at_ms = ? AND (? = '' OR id < ?))) \
             ORDER BY created_at_ms DESC, id DESC LIMIT ?"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.definition)
        .bind(&filter.definition)
        .bind(before_ms)
        .bind(before_ms)
        .bind(&before_id)
        .bind(&before_id)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "UPDATE sagas SET lease_until_ms = ? WHERE owner = ? AND status IN ('running', 'compensating') \
             RETURNING id, cancel_requested",
        )
        .bind(lease_until_ms)
        .bind(owner)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .iter()
            .filter(|r| r.get::<i64, _>("cancel_requested") != 0)
            .filter_map(|r| Uuid::parse_str(&r.get::<String, _>("id")).ok())
            .collect())
    }

    async fn claim(
        &self,
        owner: &str,
        include_own: bool,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SagaRecord>> {
        let rows = sqlx::query(&format!(
            "UPDATE sagas SET owner = ?, generation = generation + 1, lease_until_ms = ? WHERE id IN ( \
               SELECT id FROM sagas WHERE status IN ('running', 'compensating') \
               AND (lease_until_ms < ? OR (? AND owner = ?)) ORDER BY lease_until_ms LIMIT ?) \
             RETURNING {SAGA_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(include_own)
        .bind(owner)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn take_over_stuck(&self, id: Uuid, owner: &str, lease_until_ms: i64) -> Result<Option<SagaRecord>> {
        let row = sqlx::query(&format!(
            "UPDATE sagas SET owner = ?, generation = generation + 1, lease_until_ms = ? \
             WHERE id = ? AND status = 'stuck' RETURNING {SAGA_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .bind(id.to_string())
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(saga_from_row).transpose()
    }

    async fn request_cancel(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        sqlx::query("UPDATE sagas SET cancel_requested = 1 WHERE id = ? AND status = 'running'")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        self.get_saga(id).await
    }

    async fn release(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE sagas SET lease_until_ms = 0 WHERE owner = ? AND status IN ('running', 'compensating')")
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.group.stats()
    }
}
