-- Copies of peers' transaction states (regions::node::txn::copies): a home answers that it
-- prepared, prevented or decided a transaction only once a quorum of its peers keeps a copy,
-- and a home restored from a backup takes its copies back. body: the copy (JSON,
-- regions_core::protocol::TxnCopy); ts: when the home read that state (the newest is kept);
-- kept_ms: when it was kept here (Unix ms), for pruning.
CREATE TABLE txn_copies (
    home TEXT NOT NULL,
    txn TEXT NOT NULL,
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    body TEXT NOT NULL,
    kept_ms INTEGER NOT NULL,
    PRIMARY KEY (home, txn)
) WITHOUT ROWID;

CREATE INDEX txn_copies_by_kept ON txn_copies (kept_ms);
