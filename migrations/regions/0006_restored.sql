-- A store restored from a backup (`geosaga region backup` marks the copy, `geosaga region
-- restore` the target): while a row is here, the next open moves the log to a new
-- incarnation (`Store::rebase_if_restored`) before the region serves, so that no sequence
-- number its lost incarnation gave is given again.
CREATE TABLE restore_marks (
    marked_ms INTEGER NOT NULL
);
