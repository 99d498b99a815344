//! The PostgreSQL store's batch writer: what the group committer runs for each batch of saga
//! writes. A batch is **one statement** (`statements.rs`), sent without `BEGIN`, so it is its
//! own transaction and costs one round trip to the server whatever its size: the INSERT of
//! every new saga, the fenced UPDATE of every appended one and the INSERT of all their
//! events, as data-modifying `WITH` queries over arrays (`UNNEST`). A batch of one write (all
//! of them at low concurrency) has smaller statements of its own. A create meeting an
//! idempotency key already taken, or an append that its fence refused, costs one read more,
//! after it.
//!
//! Locks: the appended rows are locked in id order (`ORDER BY id FOR UPDATE`), as by every
//! statement that locks several saga rows. Within one statement PostgreSQL may insert the
//! new sagas before or after it takes those locks, so two batches of two coordinators that
//! both create one idempotency key while appending to rows the other one locked can meet
//! a deadlock: PostgreSQL breaks it by failing one of them, and that batch runs again.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sagas::SagaEvent;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use self::statements::{APPEND_ONE, CREATE_ONE, WRITE_BATCH};
use super::group_commit::{BatchWriter, Committing, Write, WriteAck};
use super::postgres::Sql;
use super::rows::{SAGA_COLUMNS, saga_from_row};
use super::{Append, AppendAck, Created, NewSaga, SagaRecord};
use crate::{Error, Result};

mod statements;

/// How often a batch runs when it meets a deadlock or a serialization failure.
const BATCH_ATTEMPTS: u32 = 3;

/// Commits batches of saga writes, each as one statement on a connection of the pool.
pub(super) struct PgWriter {
    pub(super) pool: PgPool,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn write_batch(&self, batch: &[Write], committing: &mut Committing) -> Result<Vec<Result<WriteAck>>> {
        let mut conn = self.pool.acquire().await?;
        // The batch is sent whole and commits as it ends: the next batch may start now.
        committing.now();
        if let [write] = batch {
            return Ok(vec![write_alone(&mut conn, write).await?]);
        }
        let order = lock_order(batch);
        let writes: Vec<&Write> = order.iter().map(|&i| &batch[i]).collect();
        let mut attempt = 1;
        loop {
            match write_together(&mut conn, &writes).await {
                Ok(results) => return Ok(in_batch_order(&order, results)),
                Err(e) if is_conflict(&e) && attempt < BATCH_ATTEMPTS => attempt += 1,
                Err(sqlx::Error::Database(e)) => {
                    tracing::debug!(error = %e, "a write of the batch failed; running it again write by write");
                    let mut results = Vec::with_capacity(batch.len());
                    for write in batch {
                        results.push(write_alone(&mut conn, write).await?);
                    }
                    return Ok(results);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Runs one write in a statement of its own ([`write_one`]), again after a deadlock; a
/// write the database refuses fails alone, with the database's reason.
async fn write_alone(conn: &mut PgConnection, write: &Write) -> Result<Result<WriteAck>> {
    let mut attempt = 1;
    loop {
        match write_one(conn, write).await {
            Ok(result) => return Ok(result),
            Err(e) if is_conflict(&e) && attempt < BATCH_ATTEMPTS => attempt += 1,
            Err(sqlx::Error::Database(e)) => {
                return Ok(Err(Error::Store(format!(
                    "saga {}: the database refused the write: {e}",
                    saga_of(write)
                ))));
            }
            Err(e) => return Err(e.into()),
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

/// Puts answers given in `order` back in batch order.
fn in_batch_order(order: &[usize], answers: Vec<Result<WriteAck>>) -> Vec<Result<WriteAck>> {
    let mut results: Vec<Option<Result<WriteAck>>> = (0..order.len()).map(|_| None).collect();
    for (&i, answer) in order.iter().zip(answers) {
        results[i] = Some(answer);
    }
    results
        .into_iter()
        .map(|r| r.expect("every write of the batch ran"))
        .collect()
}

/// A deadlock or a serialization failure: the transaction may succeed when run again.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40P01" | "40001")))
}

fn saga_of(write: &Write) -> Uuid {
    match write {
        Write::Create(new) => new.id,
        Write::Append(append) => append.saga_id,
    }
}

/// Runs several `writes` (in lock order) as one statement, [`WRITE_BATCH`]; answers them in
/// that order. A new saga's first events need no fenced UPDATE: its row is inserted with
/// them counted, under the creator's first generation, by the same statement.
async fn write_together(conn: &mut PgConnection, writes: &[&Write]) -> Sql<Vec<Result<WriteAck>>> {
    let mut creates: Vec<&NewSaga> = Vec::new();
    let mut appends: Vec<&Append> = Vec::new();
    for write in writes {
        match write {
            Write::Create(new) => creates.push(new),
            Write::Append(append) => appends.push(append),
        }
    }
    // The first create of each key is inserted; a later one of the same key is a repeat.
    let mut first_of_key: HashMap<&str, &NewSaga> = HashMap::new();
    let mut inserting: Vec<&NewSaga> = Vec::with_capacity(creates.len());
    for &new in &creates {
        match new.idempotency_key.as_deref() {
            Some(key) if first_of_key.contains_key(key) => {}
            Some(key) => {
                first_of_key.insert(key, new);
                inserting.push(new);
            }
            None => inserting.push(new),
        }
    }
    let mut events = EventRows::default();
    for new in &inserting {
        events.push(new.id, 0, new.now_ms, -1, &new.events);
    }
    for (w, append) in appends.iter().enumerate() {
        events.push(
            append.saga_id,
            append.first_seq,
            append.now_ms,
            w as i64,
            &append.events,
        );
    }
    let query = bind_appends(bind_sagas(sqlx::query(WRITE_BATCH), &inserting), &appends);
    let rows = events.bind(query).fetch_all(&mut *conn).await?;
    let mut inserted = HashSet::new();
    let mut appended: HashMap<usize, AppendAck> = HashMap::new();
    for row in &rows {
        match row.try_get::<Option<i64>, _>("w")? {
            Some(w) => {
                let cancel_requested = row.try_get("cancel_requested")?;
                appended.insert(w as usize, AppendAck { cancel_requested });
            }
            None => {
                inserted.insert(row.try_get::<Uuid, _>("id")?);
            }
        }
    }
    let created = answer_creates(conn, &creates, &first_of_key, &inserted).await?;
    let appended = answer_appends(conn, &appends, &appended).await?;
    let (mut created, mut appended) = (created.into_iter(), appended.into_iter());
    Ok(writes
        .iter()
        .map(|write| match write {
            Write::Create(_) => created
                .next()
                .expect("one result per create")
                .map(|c| WriteAck::Created(Box::new(c))),
            Write::Append(_) => appended.next().expect("one result per append").map(WriteAck::Appended),
        })
        .collect())
}

/// Runs a batch of one write as one statement ([`CREATE_ONE`] or [`APPEND_ONE`]).
async fn write_one(conn: &mut PgConnection, write: &Write) -> Sql<Result<WriteAck>> {
    let seqs = |first: i64, n: usize| (first..first + n as i64).collect::<Vec<i64>>();
    match write {
        Write::Create(new) => {
            let inserted: Option<Uuid> = sqlx::query_scalar(CREATE_ONE)
                .bind(new.id)
                .bind(&new.definition)
                .bind(new.version)
                .bind(Json(&new.input))
                .bind(&new.owner)
                .bind(new.lease_until_ms)
                .bind(new.idempotency_key.as_deref())
                .bind(new.trace_context.as_deref())
                .bind(new.now_ms)
                .bind(new.events.len() as i64)
                .bind(seqs(0, new.events.len()))
                .bind(new.events.iter().map(Json).collect::<Vec<_>>())
                .fetch_optional(&mut *conn)
                .await?;
            let first_of_key: HashMap<&str, &NewSaga> = new
                .idempotency_key
                .as_deref()
                .map(|key| (key, new))
                .into_iter()
                .collect();
            let created = answer_creates(conn, &[new], &first_of_key, &inserted.into_iter().collect()).await?;
            Ok(created
                .into_iter()
                .next()
                .expect("one create, one answer")
                .map(|c| WriteAck::Created(Box::new(c))))
        }
        Write::Append(append) => {
            let ack: Option<bool> = sqlx::query_scalar(APPEND_ONE)
                .bind(append.saga_id)
                .bind(&append.fence.owner)
                .bind(append.fence.generation)
                .bind(append.status.as_str())
                .bind(append.error.as_deref())
                .bind(append.now_ms)
                .bind(append.first_seq + append.events.len() as i64)
                .bind(seqs(append.first_seq, append.events.len()))
                .bind(append.events.iter().map(Json).collect::<Vec<_>>())
                .fetch_optional(&mut *conn)
                .await?;
            let passed: HashMap<usize, AppendAck> = ack
                .map(|cancel_requested| (0, AppendAck { cancel_requested }))
                .into_iter()
                .collect();
            let appended = answer_appends(conn, &[append], &passed).await?;
            Ok(appended
                .into_iter()
                .next()
                .expect("one append, one answer")
                .map(WriteAck::Appended))
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1`–`$10` of [`WRITE_BATCH`]: the sagas to insert, in idempotency-key order.
fn bind_sagas<'q>(query: PgQuery<'q>, new: &[&'q NewSaga]) -> PgQuery<'q> {
    query
        .bind(new.iter().map(|n| n.id).collect::<Vec<Uuid>>())
        .bind(new.iter().map(|n| n.definition.as_str()).collect::<Vec<&str>>())
        .bind(new.iter().map(|n| n.version).collect::<Vec<i64>>())
        .bind(new.iter().map(|n| Json(&n.input)).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.owner.as_str()).collect::<Vec<&str>>())
        .bind(new.iter().map(|n| n.lease_until_ms).collect::<Vec<i64>>())
        .bind(
            new.iter()
                .map(|n| n.idempotency_key.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(
            new.iter()
                .map(|n| n.trace_context.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(new.iter().map(|n| n.now_ms).collect::<Vec<i64>>())
        .bind(new.iter().map(|n| n.events.len() as i64).collect::<Vec<i64>>())
}

/// Binds `$11`–`$18` of [`WRITE_BATCH`]: the appends, each with its index `w` among them.
fn bind_appends<'q>(query: PgQuery<'q>, appends: &[&'q Append]) -> PgQuery<'q> {
    query
        .bind(appends.iter().map(|a| a.saga_id).collect::<Vec<Uuid>>())
        .bind(appends.iter().map(|a| a.fence.owner.as_str()).collect::<Vec<&str>>())
        .bind(appends.iter().map(|a| a.fence.generation).collect::<Vec<i64>>())
        .bind(appends.iter().map(|a| a.status.as_str()).collect::<Vec<&str>>())
        .bind(
            appends
                .iter()
                .map(|a| a.error.as_deref())
                .collect::<Vec<Option<&str>>>(),
        )
        .bind(appends.iter().map(|a| a.now_ms).collect::<Vec<i64>>())
        .bind(
            appends
                .iter()
                .map(|a| a.first_seq + a.events.len() as i64)
                .collect::<Vec<i64>>(),
        )
        .bind((0..appends.len() as i64).collect::<Vec<i64>>())
}

/// The answers to `creates` (in lock order), given the ids the statement inserted. A create
/// whose key was already taken, by a saga committed before or by an earlier create of this
/// batch, inserted nothing and is answered as a repeated start: the saga holding the key
/// when it is the same request, else an idempotency conflict.
async fn answer_creates(
    conn: &mut PgConnection,
    creates: &[&NewSaga],
    first_of_key: &HashMap<&str, &NewSaga>,
    inserted: &HashSet<Uuid>,
) -> Sql<Vec<Result<Created>>> {
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
    if new.repeats(&existing) {
        Ok(Created::Existing(existing))
    } else {
        let (key, existing) = (key.to_owned(), existing.id);
        Err(Error::IdempotencyConflict { key, existing })
    }
}

/// The answers to `appends`, given those that passed their fence (by index); the others
/// are fenced, or name a saga that does not exist (one read for all of them).
async fn answer_appends(
    conn: &mut PgConnection,
    appends: &[&Append],
    passed: &HashMap<usize, AppendAck>,
) -> Sql<Vec<Result<AppendAck>>> {
    let refused: Vec<Uuid> = (0..appends.len())
        .filter(|w| !passed.contains_key(w))
        .map(|w| appends[w].saga_id)
        .collect();
    let existing: HashSet<Uuid> = if refused.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar("SELECT id FROM sagas WHERE id = ANY($1)")
            .bind(&refused)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    Ok(appends
        .iter()
        .enumerate()
        .map(|(w, append)| match passed.get(&w) {
            Some(&ack) => Ok(ack),
            None if existing.contains(&append.saga_id) => Err(Error::Fenced(append.saga_id)),
            None => Err(Error::SagaNotFound(append.saga_id)),
        })
        .collect())
}

/// The events of a batch, as `$19`–`$23` of [`WRITE_BATCH`]. The statement
/// inserts those of the sagas it inserted and, of an append that passed its fence, those
/// past the saga's stored count, so it needs no `ON CONFLICT` (a speculative insertion per
/// row, twice the index work): a duplicate would be a bug, and fails the write instead of
/// hiding it.
#[derive(Default)]
struct EventRows<'a> {
    ids: Vec<Uuid>,
    seqs: Vec<i64>,
    times: Vec<i64>,
    events: Vec<Json<&'a SagaEvent>>,
    writes: Vec<i64>,
}

impl<'a> EventRows<'a> {
    /// Adds the events of one write (`w`: the append's index, −1 for a new saga).
    fn push(&mut self, saga_id: Uuid, first_seq: i64, at_ms: i64, w: i64, events: &'a [SagaEvent]) {
        for (k, event) in events.iter().enumerate() {
            self.ids.push(saga_id);
            self.seqs.push(first_seq + k as i64);
            self.times.push(at_ms);
            self.events.push(Json(event));
            self.writes.push(w);
        }
    }

    fn bind(self, query: PgQuery<'a>) -> PgQuery<'a> {
        query
            .bind(self.ids)
            .bind(self.seqs)
            .bind(self.times)
            .bind(self.events)
            .bind(self.writes)
    }
}
