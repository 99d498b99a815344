-- Cancelled op ids: the barrier between a saga step's write and its compensation. A
-- compensation that finds the write's op_id not applied records it here (at the key's
-- home, under the key's write lock) instead of undoing anything, and a write carrying a
-- recorded op_id is refused from then on: an original that arrives after its
-- compensation never applies. Rows are dropped after a week, like `op_ids`.
CREATE TABLE op_cancelled (
    key TEXT NOT NULL,
    op_id TEXT NOT NULL,
    -- When it was cancelled (Unix ms, the home's clock).
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (key, op_id)
) WITHOUT ROWID;

CREATE INDEX op_cancelled_by_age ON op_cancelled (created_ms);
