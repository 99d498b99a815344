-- Parallel commits (regions_core::txn::staged).

-- Every home of the transaction's keys (a JSON array of region names), when its record is
-- staged beside the prepares; '[]' when its gateway commits it explicitly.
ALTER TABLE txn_intents ADD COLUMN homes TEXT NOT NULL DEFAULT '[]';

-- A record may now be 'staging' (ts: the record's home's proposal).
ALTER TABLE txn_records DROP CONSTRAINT txn_records_status_check;
ALTER TABLE txn_records ADD CONSTRAINT txn_records_status_check
    CHECK (status IN ('pending', 'staging', 'committed', 'aborted'));
