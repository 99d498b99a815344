-- Copies of peers' transaction states; the twin of migrations/regions/0010_txn_copies.sql.
CREATE TABLE txn_copies (
    home TEXT COLLATE "C" NOT NULL,
    txn TEXT COLLATE "C" NOT NULL,
    ts_wall BIGINT NOT NULL,
    ts_logical BIGINT NOT NULL,
    body TEXT NOT NULL,
    kept_ms BIGINT NOT NULL,
    PRIMARY KEY (home, txn)
);

CREATE INDEX txn_copies_by_kept ON txn_copies (kept_ms);
