-- Idempotent writes: a write that carries an op_id (a saga step's idempotency key) is
-- recorded at the key's home, so that a repeat of it (a retry, a coordinator recovering
-- after a crash) gets the first one's result instead of writing again.
--
-- The home prepares the row under the key's write lock, before the write, with the
-- timestamp the write will have and the version it replaces; the trigger below marks it
-- applied in the same transaction that makes the version visible (a strong write's
-- commit, or an async write). A write that aborts or is cut off by a crash leaves its row
-- unapplied, and a repeat writes afresh. Replicas never hold rows here, so the trigger
-- changes nothing when they apply their homes' logs.
CREATE TABLE op_ids (
    key TEXT NOT NULL,
    op_id TEXT NOT NULL,
    -- The version the write makes.
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    -- The live version it replaces (NULL: the key had none) and that version's JSON text.
    prev_wall INTEGER,
    prev_logical INTEGER,
    prev_value TEXT,
    -- 1 once the version is visible.
    applied INTEGER NOT NULL DEFAULT 0,
    -- When it was prepared (Unix ms, the home's clock): rows are dropped after a week.
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (key, op_id)
) WITHOUT ROWID;

CREATE INDEX op_ids_by_version ON op_ids (key, ts_wall, ts_logical);
CREATE INDEX op_ids_by_age ON op_ids (created_ms);

-- A migration that rebuilds `versions` must create this trigger again.
CREATE TRIGGER op_ids_applied AFTER INSERT ON versions
BEGIN
    UPDATE op_ids SET applied = 1
    WHERE key = NEW.key AND ts_wall = NEW.ts_wall AND ts_logical = NEW.ts_logical;
END;
