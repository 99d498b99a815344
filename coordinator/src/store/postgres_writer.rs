//! The PostgreSQL store's batch writer: what the group committer runs for each batch of saga
//! writes. A batch is one transaction of at most five statements whatever its size: BEGIN,
//! one INSERT of every new saga, one fenced UPDATE for every append, one INSERT of all their
//! events, COMMIT (plus one read when a create meets an idempotency key already taken).
//!
//! Lock order (why concurrent batches, of this coordinator or of others, do not deadlock):
//! a batch inserts its sagas in idempotency-key order (the unique index is where two
//! transactions creating one key wait for each other), then locks the rows it appends to in
//! id order, and it holds no lock another batch's creates wait on before its own creates are
//! done. A batch that still meets a deadlock (or a serialization failure) runs again.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sagas::SagaEvent;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::group_commit::{BatchWriter, Committing, Write, WriteAck};
use super::memory::same_request;
use super::postgres::{SAGA_COLUMNS, Sql, saga_from_row};
use super::{Append, AppendAck, Created, NewSaga, SagaRecord};
use crate::{Error, Result};

/// How often a batch runs when it meets a deadlock or a serialization failure.
const BATCH_ATTEMPTS: u32 = 3;

/// Commits batches of saga writes, each in one transaction on a connection of the pool.
pub(super) struct PgWriter {
    pub(super) pool: PgPool,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn write_batch(&self, batch: &[Write], committing: &mut Committing) -> Result<Vec<Result<WriteAck>>> {
        let order = lock_order(batch);
        let mut isolate = false;
        let mut attempt = 1;
        loop {
            match run_batch(&self.pool, batch, &order, isolate, committing).await {
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

/// Runs a batch in one transaction, in `order`; with `isolate`, each write within a
/// savepoint, so that a write the database refuses fails alone. Answers in batch order.
async fn run_batch(
    pool: &PgPool,
    batch: &[Write],
    order: &[usize],
    isolate: bool,
    committing: &mut Committing,
) -> Sql<Vec<Result<WriteAck>>> {
    let mut tx = pool.begin().await?;
    let mut results: Vec<Option<Result<WriteAck>>> = (0..batch.len()).map(|_| None).collect();
    if isolate {
        for &i in order {
            let mut savepoint = Connection::begin(&mut *tx).await?;
            let result = match write_together(&mut savepoint, &[&batch[i]]).await {
                Ok(mut one) => {
                    savepoint.commit().await?;
                    one.pop().expect("one write, one result")
                }
                Err(sqlx::Error::Database(e)) => {
                    savepoint.rollback().await?;
                    Err(Error::Store(format!(
                        "saga {}: the database refused the write: {e}",
                        saga_of(&batch[i])
                    )))
                }
                Err(e) => return Err(e),
            };
            results[i] = Some(result);
        }
    } else {
        let writes: Vec<&Write> = order.iter().map(|&i| &batch[i]).collect();
        for (&i, result) in order.iter().zip(write_together(&mut tx, &writes).await?) {
            results[i] = Some(result);
        }
    }
    committing.now();
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every write of the batch ran"))
        .collect())
}

fn saga_of(write: &Write) -> Uuid {
    match write {
        Write::Create(new) => new.id,
        Write::Append(append) => append.saga_id,
    }
}

/// Runs `writes` (in lock order) with one statement per kind: the INSERT of the new sagas,
/// the fenced UPDATE of the appended ones, the INSERT of the events of both. A new saga's
/// first events need no fenced UPDATE: its row was inserted with them counted, by this
/// transaction, under the creator's first generation.
async fn write_together(conn: &mut PgConnection, writes: &[&Write]) -> Sql<Vec<Result<WriteAck>>> {
    let mut creates = Vec::new();
    let mut appends = Vec::new();
    for write in writes {
        match write {
            Write::Create(new) => creates.push(new),
            Write::Append(append) => appends.push(append),
        }
    }
    let created = create_all(conn, &creates).await?;
    let appended = update_for_appends(conn, &appends).await?;
    let mut events = EventRows::default();
    for (new, created) in creates.iter().zip(&created) {
        if let Ok(Created::New(_)) = created {
            events.push(new.id, 0, new.now_ms, &new.events);
        }
    }
    for (append, updated) in appends.iter().zip(&appended) {
        if let Ok(updated) = updated {
            // Only the events not stored yet: a retried append that had committed adds none.
            let skip = usize::try_from(updated.stored - append.first_seq).unwrap_or(0);
            let new = append.events.get(skip..).unwrap_or_default();
            events.push(append.saga_id, append.first_seq + skip as i64, append.now_ms, new);
        }
    }
    events.insert(conn).await?;
    let (mut created, mut appended) = (created.into_iter(), appended.into_iter());
    Ok(writes
        .iter()
        .map(|write| match write {
            Write::Create(_) => created
                .next()
                .expect("one result per create")
                .map(|c| WriteAck::Created(Box::new(c))),
            Write::Append(_) => appended
                .next()
                .expect("one result per append")
                .map(|updated| WriteAck::Appended(updated.ack)),
        })
        .collect())
}

/// Creates `creates` (in idempotency-key order) with one INSERT. A create whose key is
/// already taken, by a saga committed before or by an earlier create of this batch, inserts
/// nothing and is answered as a repeated start: the saga holding the key when the same
/// request, else an idempotency conflict.
async fn create_all(conn: &mut PgConnection, creates: &[&NewSaga]) -> Sql<Vec<Result<Created>>> {
    if creates.is_empty() {
        return Ok(Vec::new());
    }
    // The first create of each key is inserted; a later one of the same key is a repeat.
    let mut first_of_key: HashMap<&str, &NewSaga> = HashMap::new();
    let mut inserting: Vec<&NewSaga> = Vec::with_capacity(creates.len());
    for &new in creates {
        match new.idempotency_key.as_deref() {
            Some(key) if first_of_key.contains_key(key) => {}
            Some(key) => {
                first_of_key.insert(key, new);
                inserting.push(new);
            }
            None => inserting.push(new),
        }
    }
    let inserted = insert_sagas(conn, &inserting).await?;
    // Keys whose first create inserted nothing: another transaction's saga holds them.
    let taken: Vec<&str> = first_of_key
        .iter()
        .filter(|(_, new)| !inserted.contains(&new.id))
        .map(|(key, _)| *key)
        .collect();
    let holders = sagas_by_keys(conn, &taken).await?;
    Ok(creates
        .iter()
        .map(|new| {
            if inserted.contains(&new.id) {
                return Ok(Created::New(new.record()));
            }
            let Some(key) = new.idempotency_key.as_deref() else {
                return Err(Error::Store(format!("saga {}: the database stored no row", new.id)));
            };
            let holder = match first_of_key.get(key) {
                Some(first) if inserted.contains(&first.id) => Some(first.record()),
                _ => holders.get(key).cloned(),
            };
            match holder {
                Some(existing) => repeated(existing, new, key),
                None => Err(Error::Store(format!(
                    "saga {}: idempotency key `{key}` conflicts with no visible saga",
                    new.id
                ))),
            }
        })
        .collect())
}

/// Inserts new saga rows (with their first events counted) in the given order, skipping
/// those whose idempotency key is taken; returns the ids inserted.
async fn insert_sagas(conn: &mut PgConnection, creates: &[&NewSaga]) -> Sql<HashSet<Uuid>> {
    let ids: Vec<Uuid> = creates.iter().map(|n| n.id).collect();
    let definitions: Vec<&str> = creates.iter().map(|n| n.definition.as_str()).collect();
    let versions: Vec<i64> = creates.iter().map(|n| n.version).collect();
    let inputs: Vec<Json<&serde_json::Value>> = creates.iter().map(|n| Json(&n.input)).collect();
    let owners: Vec<&str> = creates.iter().map(|n| n.owner.as_str()).collect();
    let leases: Vec<i64> = creates.iter().map(|n| n.lease_until_ms).collect();
    let keys: Vec<Option<&str>> = creates.iter().map(|n| n.idempotency_key.as_deref()).collect();
    let traces: Vec<Option<&str>> = creates.iter().map(|n| n.trace_context.as_deref()).collect();
    let times: Vec<i64> = creates.iter().map(|n| n.now_ms).collect();
    let counts: Vec<i64> = creates.iter().map(|n| n.events.len() as i64).collect();
    // `ORDER BY n` keeps the rows in the arrays' (key) order: the lock order.
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
           idempotency_key, trace_context, created_at_ms, updated_at_ms, event_count) \
         SELECT v.id, v.definition, v.version, v.input, 'running', v.owner, v.lease, 1, v.key, v.trace, \
           v.now_ms, v.now_ms, v.events \
         FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[], $6::bigint[], $7::text[], \
           $8::text[], $9::bigint[], $10::bigint[]) WITH ORDINALITY \
           AS v (id, definition, version, input, owner, lease, key, trace, now_ms, events, n) \
         ORDER BY v.n \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(ids)
    .bind(definitions)
    .bind(versions)
    .bind(inputs)
    .bind(owners)
    .bind(leases)
    .bind(keys)
    .bind(traces)
    .bind(times)
    .bind(counts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The sagas holding `keys`, by key, in one read.
async fn sagas_by_keys(conn: &mut PgConnection, keys: &[&str]) -> Sql<HashMap<String, SagaRecord>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE idempotency_key = ANY($1)"
    ))
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut holders = HashMap::with_capacity(rows.len());
    for row in &rows {
        let saga = saga_from_row(row)?;
        if let Some(key) = saga.idempotency_key.clone() {
            holders.insert(key, saga);
        }
    }
    Ok(holders)
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

/// What a fenced UPDATE answered for one append: its ack, and how many of the saga's
/// events were stored before it (more than its first seq when it is a retry of an append
/// that committed, whose answer was lost).
struct Updated {
    ack: AppendAck,
    stored: i64,
}

/// One fenced UPDATE for several appends, locking their rows in id order; answers each
/// append in order: what the update found, or why its fence failed.
async fn update_for_appends(conn: &mut PgConnection, appends: &[&Append]) -> Sql<Vec<Result<Updated>>> {
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
         locked AS (SELECT s.id, s.event_count FROM sagas s JOIN v ON s.id = v.id AND s.owner = v.owner \
               AND s.generation = v.generation ORDER BY s.id FOR UPDATE OF s) \
         UPDATE sagas s SET status = v.status, error = v.error, updated_at_ms = v.now_ms, \
           event_count = GREATEST(s.event_count, v.end_seq), \
           cancel_requested = (s.cancel_requested AND v.status = 'running') \
         FROM v, locked WHERE s.id = locked.id AND s.id = v.id AND s.owner = v.owner AND s.generation = v.generation \
         RETURNING s.id, s.owner, s.generation, s.cancel_requested, locked.event_count AS stored",
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
    let mut found: HashMap<(Uuid, String, i64), (bool, i64)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let fence = (row.try_get("id")?, row.try_get("owner")?, row.try_get("generation")?);
        found.insert(fence, (row.try_get("cancel_requested")?, row.try_get("stored")?));
    }
    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        let fence = (append.saga_id, append.fence.owner.clone(), append.fence.generation);
        results.push(match found.get(&fence) {
            Some(&(cancel_requested, stored)) => Ok(Updated {
                ack: AppendAck { cancel_requested },
                stored,
            }),
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

/// The events of a batch, as the columns of one INSERT.
#[derive(Default)]
struct EventRows<'a> {
    ids: Vec<Uuid>,
    seqs: Vec<i64>,
    times: Vec<i64>,
    events: Vec<Json<&'a SagaEvent>>,
}

impl<'a> EventRows<'a> {
    fn push(&mut self, saga_id: Uuid, first_seq: i64, at_ms: i64, events: &'a [SagaEvent]) {
        for (k, event) in events.iter().enumerate() {
            self.ids.push(saga_id);
            self.seqs.push(first_seq + k as i64);
            self.times.push(at_ms);
            self.events.push(Json(event));
        }
    }

    /// Writes them in one INSERT. They are all new (a retried append pushes only the events
    /// past the saga's stored count, which its fenced UPDATE read under the row's lock), so
    /// the INSERT needs no `ON CONFLICT` (a speculative insertion per row, twice the index
    /// work): a duplicate here would be a bug, and fails the write instead of hiding it.
    async fn insert(self, conn: &mut PgConnection) -> Sql<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO saga_events (saga_id, seq, at_ms, event) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::jsonb[])",
        )
        .bind(self.ids)
        .bind(self.seqs)
        .bind(self.times)
        .bind(self.events)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
