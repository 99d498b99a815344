-- Records are pruned once they were last written longer ago than the op ids' retention
-- (`Store::txn_prune_records`): the index keeps that from reading the whole table.
CREATE INDEX txn_records_by_updated ON txn_records (updated_ms);
