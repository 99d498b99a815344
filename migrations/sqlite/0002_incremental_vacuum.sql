-- From schema 2 on, the file is in incremental auto-vacuum: pages freed by retention's
-- deletes go back to the file system a few at a time (`PRAGMA incremental_vacuum(N)`, run by
-- the retention task between group commits) instead of staying in the file for good.
--
-- The mode of an existing file changes only when the whole file is rewritten (VACUUM), which
-- cannot run inside the transaction sqlx wraps a migration in: `SqliteStore::open` runs
-- `PRAGMA auto_vacuum = INCREMENTAL; VACUUM;` itself before this migration, once, when the
-- file is not in that mode yet (docs/operations.md, "Upgrades", says what it costs). A new
-- file is created in that mode. This statement is a no-op kept for the record.
PRAGMA auto_vacuum = INCREMENTAL;
