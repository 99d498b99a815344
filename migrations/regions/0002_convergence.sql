-- Convergence under faults: versions identified by (key, timestamp, origin region) so that
-- writes of two regions with equal timestamps both survive and last-writer-wins on
-- (timestamp, region) decides which one reads see; the version each write replaced (its
-- "prev", for counting concurrent writes that lost); counter components; per-prefix
-- conflict counts; log gaps a replica must repair by anti-entropy; placement overrides
-- (re-homing).

CREATE TABLE versions_v2 (
    key TEXT NOT NULL,
    ts_wall INTEGER NOT NULL,
    ts_logical INTEGER NOT NULL,
    value TEXT,
    -- The region that executed the write (its origin): the key's home, or for keys that
    -- accept writes anywhere, the region that took it.
    home TEXT NOT NULL,
    -- The version this write replaced in its origin's copy (NULL: none, or not tracked).
    prev_wall INTEGER,
    prev_logical INTEGER,
    prev_home TEXT,
    PRIMARY KEY (key, ts_wall, ts_logical, home)
) WITHOUT ROWID;

INSERT INTO versions_v2 (key, ts_wall, ts_logical, value, home)
SELECT key, ts_wall, ts_logical, value, home FROM versions;

DROP TABLE versions;
ALTER TABLE versions_v2 RENAME TO versions;
CREATE INDEX versions_by_ts ON versions (ts_wall);
CREATE INDEX versions_by_origin ON versions (home, key);
CREATE INDEX versions_by_prev ON versions (key, prev_wall, prev_logical, prev_home);

-- 'version': a version of a key; 'counter': the origin's component of a counter, as JSON
-- {"p": .., "n": ..}.
ALTER TABLE repl_log ADD COLUMN kind TEXT NOT NULL DEFAULT 'version' CHECK (kind IN ('version', 'counter'));
ALTER TABLE repl_log ADD COLUMN prev_wall INTEGER;
ALTER TABLE repl_log ADD COLUMN prev_logical INTEGER;
ALTER TABLE repl_log ADD COLUMN prev_home TEXT;

-- A gap in what this region received from a home: entries up to gap_seq were truncated
-- before this region got them, all with timestamps at or below gap_wall.gap_logical. Until
-- anti-entropy repaired them, reads use frozen_* (the closed timestamp held before the gap).
ALTER TABLE replica_state ADD COLUMN gap_seq INTEGER;
ALTER TABLE replica_state ADD COLUMN gap_wall INTEGER;
ALTER TABLE replica_state ADD COLUMN gap_logical INTEGER;
ALTER TABLE replica_state ADD COLUMN frozen_wall INTEGER;
ALTER TABLE replica_state ADD COLUMN frozen_logical INTEGER;

-- Counters (PN-counters): each region's component; merged by per-region maximum.
CREATE TABLE counters (
    key TEXT NOT NULL,
    region TEXT NOT NULL,
    p INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key, region)
) WITHOUT ROWID;

-- Concurrent writes that lost (last-writer-wins), per multi-home rule prefix.
CREATE TABLE conflicts (
    prefix TEXT PRIMARY KEY,
    overwritten INTEGER NOT NULL
) WITHOUT ROWID;

-- Re-homed rule prefixes: the home that replaced the configured one.
CREATE TABLE placement_overrides (
    prefix TEXT PRIMARY KEY,
    region TEXT NOT NULL
) WITHOUT ROWID;
