-- Parallel commits (regions_core::txn::staged).

-- Every home of the transaction's keys (a JSON array of region names), when its record is
-- staged beside the prepares; '[]' when its gateway commits it explicitly.
ALTER TABLE txn_intents ADD COLUMN homes TEXT NOT NULL DEFAULT '[]';

-- A record may now be 'staging' (ts: the record's home's proposal). SQLite cannot change a
-- CHECK constraint in place, so the table is copied.
CREATE TABLE txn_records_new (
    txn TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'staging', 'committed', 'aborted')),
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO txn_records_new (txn, status, ts_wall, ts_logical, updated_ms)
    SELECT txn, status, ts_wall, ts_logical, updated_ms FROM txn_records;
DROP TABLE txn_records;
ALTER TABLE txn_records_new RENAME TO txn_records;
CREATE INDEX txn_records_by_updated ON txn_records (updated_ms);
