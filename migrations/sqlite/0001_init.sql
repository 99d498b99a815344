-- geosaga coordinator schema, SQLite.
-- Definitions are versioned and immutable; a saga keeps the version it started with.
CREATE TABLE definitions (
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL,
    document      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX definitions_content ON definitions (name, content_hash);

-- One row per saga: its status and its ownership (owner, lease, fencing generation).
CREATE TABLE sagas (
    id               TEXT    PRIMARY KEY,
    definition       TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    input            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    error            TEXT,
    owner            TEXT,
    lease_until_ms   INTEGER NOT NULL,
    generation       INTEGER NOT NULL,
    idempotency_key  TEXT    UNIQUE,
    trace_context    TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    event_count      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sagas_newest ON sagas (created_at_ms DESC, id DESC);
CREATE INDEX sagas_unsettled ON sagas (lease_until_ms) WHERE status IN ('running', 'compensating');
CREATE INDEX sagas_owned ON sagas (owner) WHERE status IN ('running', 'compensating');

-- The append-only log; (saga_id, seq) makes a retried append harmless.
CREATE TABLE saga_events (
    saga_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    event   TEXT    NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;
