-- One region's storage on PostgreSQL: the schema of `migrations/regions` (SQLite) as its
-- migrations 0001 to 0004 leave it, column for column, so that both backends behave alike.
-- A later migration there gets its twin here.
--
-- Integers are BIGINT (SQLite's INTEGER is 64 bits). Text that is compared or ordered
-- (keys, region names, prefixes) uses the "C" collation: byte order, as SQLite's BINARY,
-- so that last-writer-wins on (timestamp, region) and every ordered listing agree with
-- regions on SQLite whatever the database's default collation.

-- MVCC: every write is a new version stamped with its HLC timestamp, identified by (key,
-- timestamp, origin region). value is the JSON text of the value, NULL for a deletion.
CREATE TABLE versions (
    key TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    value TEXT,
    -- The region that executed the write (its origin).
    home TEXT COLLATE "C" NOT NULL,
    -- The version this write replaced in its origin's copy (NULL: none, or not tracked).
    prev_wall BIGINT,
    prev_logical BIGINT,
    prev_home TEXT COLLATE "C",
    PRIMARY KEY (key, ts_wall, ts_logical, home)
);

CREATE INDEX versions_by_ts ON versions (ts_wall);
CREATE INDEX versions_by_origin ON versions (home, key);
CREATE INDEX versions_by_prev ON versions (key, prev_wall, prev_logical, prev_home);

-- The home's replication log of its own writes, in commit order of appending (one writer
-- connection). A strong write is 'pending' until its quorum answered, then 'committed' or
-- 'aborted'. Sequence numbers come from repl_seq, in the appending transaction: like
-- SQLite's AUTOINCREMENT, a number is never reused after truncation, and (unlike a
-- PostgreSQL sequence) a rolled-back append gives none away.
CREATE TABLE repl_log (
    seq BIGINT PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    value TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'aborted')),
    -- 'version': a version of a key; 'counter': the origin's component of a counter, as
    -- JSON {"p": .., "n": ..}.
    kind TEXT NOT NULL DEFAULT 'version' CHECK (kind IN ('version', 'counter')),
    prev_wall BIGINT,
    prev_logical BIGINT,
    prev_home TEXT COLLATE "C"
);

-- The region this database belongs to (one row, written at its first start): another
-- region is refused.
CREATE TABLE region_identity (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    name TEXT NOT NULL
);

-- The last sequence number given (one row).
CREATE TABLE repl_seq (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq BIGINT NOT NULL
);
INSERT INTO repl_seq (seq) VALUES (0);

-- The highest log sequence number each peer acknowledged as durably applied.
CREATE TABLE peer_cursors (
    peer TEXT COLLATE "C" PRIMARY KEY,
    acked_seq BIGINT NOT NULL
);

-- For each other home: the last log entry applied here and the closed timestamp it carried;
-- a gap in what was received (entries up to gap_seq truncated before they got here, all at
-- or below gap_wall.gap_logical) and, until anti-entropy repaired it, the closed timestamp
-- held before it (frozen_*), which reads use.
CREATE TABLE replica_state (
    home TEXT COLLATE "C" PRIMARY KEY,
    applied_seq BIGINT NOT NULL,
    closed_wall BIGINT NOT NULL,
    closed_logical BIGINT NOT NULL,
    gap_seq BIGINT,
    gap_wall BIGINT,
    gap_logical BIGINT,
    frozen_wall BIGINT,
    frozen_logical BIGINT
);

-- Strong writes of other homes stored durably here before their home committed them;
-- invisible to reads, removed when the log entry (committed or aborted) is applied.
CREATE TABLE intents (
    home TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    value TEXT,
    PRIMARY KEY (home, seq)
);

-- Counters (PN-counters): each region's component; merged by per-region maximum.
CREATE TABLE counters (
    key TEXT COLLATE "C" NOT NULL,
    region TEXT COLLATE "C" NOT NULL,
    p BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (key, region)
);

-- Concurrent writes that lost (last-writer-wins), per multi-home rule prefix.
CREATE TABLE conflicts (
    prefix TEXT COLLATE "C" PRIMARY KEY,
    overwritten BIGINT NOT NULL
);

-- Re-homed rule prefixes: the home that replaced the configured one.
CREATE TABLE placement_overrides (
    prefix TEXT COLLATE "C" PRIMARY KEY,
    region TEXT COLLATE "C" NOT NULL
);

-- Idempotent writes (see `migrations/regions/0003_op_ids.sql`): the home prepares a row
-- under the key's write lock, before the write; the trigger below marks it applied in the
-- transaction that makes the version visible.
CREATE TABLE op_ids (
    key TEXT COLLATE "C" NOT NULL,
    op_id TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    prev_wall BIGINT,
    prev_logical BIGINT,
    prev_value TEXT,
    -- 1 once the version is visible.
    applied BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (key, op_id)
);

CREATE INDEX op_ids_by_version ON op_ids (key, ts_wall, ts_logical);
CREATE INDEX op_ids_by_age ON op_ids (created_ms);

CREATE FUNCTION op_ids_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE op_ids SET applied = 1
    WHERE key = NEW.key AND ts_wall = NEW.ts_wall AND ts_logical = NEW.ts_logical;
    RETURN NULL;
END;
$$;

-- Fires for rows actually inserted (not for INSERT ... ON CONFLICT DO NOTHING that skipped).
CREATE TRIGGER op_ids_applied AFTER INSERT ON versions
    FOR EACH ROW EXECUTE FUNCTION op_ids_applied();

-- Idempotent counter increments: an increment that carries an op_id is recorded in the
-- transaction that applies it, so that a retry of it at the same region changes nothing.
CREATE TABLE counter_ops (
    key TEXT COLLATE "C" NOT NULL,
    op_id TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (key, op_id)
);

CREATE INDEX counter_ops_by_age ON counter_ops (created_ms);
