//! The statements of the PostgreSQL batch writer. Each writes a whole batch and is sent
//! without `BEGIN`: it is its own transaction, one round trip to the server.
//!
//! They read `sagas` only by primary key (`id = $1`, `id = ANY($ids)`) or through the unique
//! index of `ON CONFLICT`, which is what lets the writer's connections run with
//! `enable_seqscan = off` (see `postgres.rs`).

/// A batch of several writes. Parameters: `$1`–`$10` the new sagas (in idempotency-key
/// order), `$11`–`$18` the appends (`w`: the append's index among them, in saga-id order),
/// `$19`–`$23` the events of both (`w`: their append's index, −1 for a new saga's).
///
/// Answers a row per saga inserted (`id`) and one per append that passed its fence (`w`, with
/// its cancel flag). The appended rows are locked in id order (`locked`), as by every
/// statement that locks several saga rows; the count of events found under that lock is
/// where an append's new events start, so a retried append that had committed inserts none.
pub(super) const WRITE_BATCH: &str = "\
WITH c AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[], $6::bigint[], \
        $7::text[], $8::text[], $9::bigint[], $10::bigint[]) WITH ORDINALITY \
        AS c (id, definition, version, input, owner, lease, key, trace, now_ms, events, n)), \
  created AS (INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
        idempotency_key, trace_context, created_at_ms, updated_at_ms, event_count) \
      SELECT c.id, c.definition, c.version, c.input, 'running', c.owner, c.lease, 1, c.key, c.trace, c.now_ms, \
        c.now_ms, c.events FROM c ORDER BY c.n \
      ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), \
  a AS (SELECT * FROM UNNEST($11::uuid[], $12::text[], $13::bigint[], $14::text[], $15::text[], $16::bigint[], \
        $17::bigint[], $18::bigint[]) AS a (id, owner, generation, status, error, now_ms, end_seq, w)), \
  locked AS (SELECT s.id, s.event_count FROM sagas s \
        JOIN a ON s.id = a.id AND s.owner = a.owner AND s.generation = a.generation \
      WHERE s.id = ANY($11::uuid[]) ORDER BY s.id FOR UPDATE OF s), \
  appended AS (UPDATE sagas s SET status = a.status, error = a.error, updated_at_ms = a.now_ms, \
        event_count = GREATEST(s.event_count, a.end_seq), \
        cancel_requested = (s.cancel_requested AND a.status = 'running') \
      FROM a, locked WHERE s.id = ANY($11::uuid[]) AND s.id = locked.id AND s.id = a.id \
        AND s.owner = a.owner AND s.generation = a.generation \
      RETURNING a.w, s.cancel_requested, locked.event_count AS stored), \
  e AS (SELECT * FROM UNNEST($19::uuid[], $20::bigint[], $21::bigint[], $22::jsonb[], $23::bigint[]) \
        AS e (saga_id, seq, at_ms, event, w)), \
  events AS (INSERT INTO saga_events (saga_id, seq, at_ms, event) \
      SELECT e.saga_id, e.seq, e.at_ms, e.event FROM e JOIN created ON created.id = e.saga_id WHERE e.w < 0 \
      UNION ALL \
      SELECT e.saga_id, e.seq, e.at_ms, e.event FROM e JOIN appended p ON p.w = e.w WHERE e.seq >= p.stored) \
SELECT created.id, NULL::bigint AS w, NULL::boolean AS cancel_requested FROM created \
UNION ALL \
SELECT NULL::uuid, p.w, p.cancel_requested FROM appended p";

/// A batch of one append: at low concurrency every batch is one write, and this plan is a
/// fraction of [`WRITE_BATCH`]'s for the server to start and run. Parameters: the saga, its
/// fence (owner, generation), its new status, error and time, its event count after the
/// append, the events' sequence numbers and the events.
///
/// Answers the cancel flag when the fence passed, no row otherwise. The events inserted are
/// those past the count the statement's snapshot holds: a retried append that had committed
/// inserts none. (The snapshot, not a lock: a saga's appends come one at a time from its
/// owner, each after the one before committed. Should a retry overlap the very attempt it
/// repeats, its events collide with that attempt's at the primary key, the write fails and
/// the executor retries it, by then seeing what committed.)
pub(super) const APPEND_ONE: &str = "\
WITH updated AS (UPDATE sagas SET status = $4, error = $5, updated_at_ms = $6, \
        event_count = GREATEST(event_count, $7), cancel_requested = (cancel_requested AND $4 = 'running') \
      WHERE id = $1 AND owner = $2 AND generation = $3 RETURNING cancel_requested), \
  events AS (INSERT INTO saga_events (saga_id, seq, at_ms, event) \
      SELECT $1, e.seq, $6, e.event FROM UNNEST($8::bigint[], $9::jsonb[]) AS e (seq, event) \
      WHERE EXISTS (SELECT 1 FROM updated) AND e.seq >= (SELECT event_count FROM sagas WHERE id = $1)) \
SELECT cancel_requested FROM updated";

/// A batch of one new saga (see [`APPEND_ONE`]). Parameters: the saga's columns, as in the
/// first ten of [`WRITE_BATCH`] but single values, then its events' sequence numbers and
/// its events. Answers the saga's id when it was inserted, no row when its idempotency key
/// was taken.
pub(super) const CREATE_ONE: &str = "\
WITH created AS (INSERT INTO sagas (id, definition, version, input, status, owner, lease_until_ms, generation, \
        idempotency_key, trace_context, created_at_ms, updated_at_ms, event_count) \
      VALUES ($1, $2, $3, $4, 'running', $5, $6, 1, $7, $8, $9, $9, $10) \
      ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), \
  events AS (INSERT INTO saga_events (saga_id, seq, at_ms, event) \
      SELECT $1, e.seq, $9, e.event FROM UNNEST($11::bigint[], $12::jsonb[]) AS e (seq, event) \
      WHERE EXISTS (SELECT 1 FROM created)) \
SELECT id FROM created";
