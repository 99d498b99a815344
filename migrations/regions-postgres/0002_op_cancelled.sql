-- Cancelled op ids (see `migrations/regions/0005_op_cancelled.sql`): a compensation that
-- finds its action's op_id not applied records it here, and a write carrying it is refused
-- from then on.
CREATE TABLE op_cancelled (
    key TEXT COLLATE "C" NOT NULL,
    op_id TEXT COLLATE "C" NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (key, op_id)
);

CREATE INDEX op_cancelled_by_age ON op_cancelled (created_ms);
