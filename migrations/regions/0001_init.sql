-- One region's storage: versions of keys (its own and its replicas of other regions'),
-- its replication log, what each peer acknowledged, and what it applied from each home.

-- MVCC: every write is a new version stamped with its HLC timestamp. value is the JSON text
-- of the value, NULL for a deletion (tombstone).
CREATE TABLE versions (
    key TEXT NOT NULL,
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    value TEXT,
    home TEXT NOT NULL,
    PRIMARY KEY (key, ts_wall, ts_logical)
) WITHOUT ROWID;

CREATE INDEX versions_by_ts ON versions (ts_wall);

-- The home's replication log of its own writes, in commit order of appending. A strong
-- write is 'pending' until its quorum answered, then 'committed' or 'aborted'. AUTOINCREMENT:
-- a sequence number is never reused after truncation.
CREATE TABLE repl_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    value TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'aborted'))
);

-- The highest log sequence number each peer acknowledged as durably applied.
CREATE TABLE peer_cursors (
    peer TEXT PRIMARY KEY,
    acked_seq INTEGER NOT NULL
) WITHOUT ROWID;

-- For each other home: the last log entry applied here and the closed timestamp it carried.
CREATE TABLE replica_state (
    home TEXT PRIMARY KEY,
    applied_seq INTEGER NOT NULL,
    closed_wall INTEGER NOT NULL,
    closed_logical INTEGER NOT NULL
) WITHOUT ROWID;

-- Strong writes of other homes stored durably here before their home committed them;
-- invisible to reads, removed when the log entry (committed or aborted) is applied.
CREATE TABLE intents (
    home TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    value TEXT,
    PRIMARY KEY (home, seq)
) WITHOUT ROWID;
