-- Multi-key transactions (regions_core::txn); the twin of migrations/regions/0006_txns.sql.

-- The intents transactions laid on keys homed here, invisible to reads until resolved. A
-- write intent's value (NULL: a deletion) becomes a version at the commit timestamp in the
-- database transaction that drops the transaction's intents. ts is the timestamp this home
-- proposed; prepared_ms when it was stored (the region's clock, Unix ms).
CREATE TABLE txn_intents (
    txn TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('read', 'write')),
    value TEXT,
    record_home TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    prepared_ms BIGINT NOT NULL,
    PRIMARY KEY (txn, key)
);

CREATE INDEX txn_intents_by_key ON txn_intents (key);

-- The records of the transactions whose first written key is homed here: where each one's
-- outcome is decided. ts: the lowest commit timestamp left (pending) or the commit
-- timestamp (committed).
CREATE TABLE txn_records (
    txn TEXT COLLATE "C" PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'aborted')),
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
