-- Retention deletes finished sagas all day long (docs/operations.md): autovacuum should
-- clean up after it while the dead rows are few, not once a fifth of each table is dead
-- (the default scale factor), so that the space of deleted rows is reused by new ones and the
-- tables stay the size of what they hold. A change of storage settings only: it takes no
-- lock that writes wait for, and the binary before it runs on it unchanged.
ALTER TABLE sagas SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE saga_events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0.05
);
