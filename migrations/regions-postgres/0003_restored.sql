-- A store restored from a backup (`geosaga region restore --database URL` after
-- `pg_restore`): while a row is here, the next open moves the log to a new incarnation
-- (`Store::rebase_if_restored`) before the region serves.
CREATE TABLE restore_marks (
    marked_ms BIGINT NOT NULL
);
