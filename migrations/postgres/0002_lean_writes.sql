-- Leaner writes for the group committer (bench/notes.md, sixth pass).
--
-- The events' foreign key made every event row look up and share-lock its saga row: six
-- index scans and row locks per saga, for a guarantee the writer already gives by
-- construction (a batch inserts a saga's events in the transaction that inserted the saga
-- or passed its fenced UPDATE, and sagas are never deleted).
ALTER TABLE saga_events DROP CONSTRAINT saga_events_saga_id_fkey;

-- A saga row is updated about four times in its life (status, counters) and almost never
-- in an indexed column: room on its page lets those updates be HOT (no new index entries).
-- Applies to pages written from now on.
ALTER TABLE sagas SET (fillfactor = 70);
