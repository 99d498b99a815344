-- Idempotent counter increments: an increment that carries an op_id is recorded in the
-- transaction that applies it, so that a retry of it at the same region changes nothing.
CREATE TABLE counter_ops (
    key TEXT NOT NULL,
    op_id TEXT NOT NULL,
    -- When it was applied (Unix ms, the region's clock): rows are dropped after a week.
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (key, op_id)
) WITHOUT ROWID;

CREATE INDEX counter_ops_by_age ON counter_ops (created_ms);
