//! The SQL stores' writes of more than one statement, each run inside its caller's
//! transaction: appending to the log, inserting a version (with the conflict count of keys
//! written anywhere), merging a counter component, applying a batch of another home's log,
//! an async write of a key written anywhere, and an increment.

use regions_core::conflict;
use regions_core::counter::Component;
use regions_core::hlc::Timestamp;
use regions_core::op_ids::RETENTION_MS;
use regions_core::protocol::{EntryKind, EntryState, VersionId, VersionRow};
use regions_core::replica::{Apply, Incoming, ReplicaState, apply_entry, next_state};

use super::Dialect;
use super::conn::{Cols, Conn, stmt, wall};
use super::rows::{STATE_COLUMNS, state_of, ts_of};
use crate::Result;
use crate::store::Tracked;

/// A log entry as appended.
pub(super) struct Append<'a> {
    pub(super) key: &'a str,
    pub(super) ts: Timestamp,
    pub(super) value: Option<&'a str>,
    pub(super) state: EntryState,
    pub(super) kind: EntryKind,
    pub(super) prev: Option<&'a VersionId>,
}

impl<'a> Append<'a> {
    /// A version of `key` with no tracked ancestry.
    pub(super) fn version(key: &'a str, ts: Timestamp, value: Option<&'a str>, state: EntryState) -> Append<'a> {
        Append {
            key,
            ts,
            value,
            state,
            kind: EntryKind::Version,
            prev: None,
        }
    }
}

/// Appends `entry` to the log (in the caller's transaction, if any). Returns its number.
pub(super) async fn append<DB: Dialect>(conn: &mut DB::Connection, entry: Append<'_>) -> Result<i64> {
    let s = stmt(DB::APPEND)
        .text(entry.key)
        .ts(entry.ts)
        .opt_text(entry.value)
        .text(entry.state.as_str())
        .text(entry.kind.as_str())
        .opt_ts(entry.prev.map(|p| p.ts))
        .opt_text(entry.prev.map(|p| p.origin.as_str()));
    conn.fetch_one(s).await?.int("seq")
}

/// How many versions of `key` match `sql` (which binds the key, then `id` if given).
async fn count(conn: &mut impl Conn, sql: &str, key: &str, id: Option<&VersionId>) -> Result<i64> {
    let mut s = stmt(sql).text(key);
    if let Some(id) = id {
        s = s.ts(id.ts).text(&id.origin);
    }
    conn.fetch_one(s).await?.int("n")
}

/// Inserts a version unless present. When `tracked` names the rule prefix of a key written
/// anywhere, keeps that prefix's count of overwritten concurrent writes (see
/// [`conflict::leaf_delta`]). Returns whether it was new.
pub(super) async fn insert_row(conn: &mut impl Conn, row: &VersionRow, tracked: Option<&str>) -> Result<bool> {
    let had_versions = match tracked {
        Some(_) => {
            count(
                conn,
                "SELECT COUNT(*) AS n FROM versions WHERE key = $1",
                &row.key,
                None,
            )
            .await?
                > 0
        }
        None => false,
    };
    let prev = row.prev.as_ref();
    let insert = stmt(
        "INSERT INTO versions (key, ts_wall, ts_logical, value, home, prev_wall, prev_logical, prev_home) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .text(&row.key)
    .ts(row.ts)
    .opt_text(row.value.as_deref())
    .text(&row.origin)
    .opt_ts(prev.map(|p| p.ts))
    .opt_text(prev.map(|p| p.origin.as_str()));
    let inserted = conn.execute(insert).await? == 1;
    let Some(prefix) = tracked.filter(|_| inserted) else {
        return Ok(inserted);
    };
    const NAMERS: &str = "SELECT COUNT(*) AS n FROM versions \
                          WHERE key = $1 AND prev_wall = $2 AND prev_logical = $3 AND prev_home = $4";
    const PRESENT: &str = "SELECT COUNT(*) AS n FROM versions \
                           WHERE key = $1 AND ts_wall = $2 AND ts_logical = $3 AND home = $4";
    let named = count(conn, NAMERS, &row.key, Some(&row.id())).await? > 0;
    let prev_was_leaf = match prev {
        Some(p) => {
            count(conn, PRESENT, &row.key, Some(p)).await? > 0 && count(conn, NAMERS, &row.key, Some(p)).await? == 1
        }
        None => false,
    };
    let delta = conflict::leaf_delta(had_versions, named, prev_was_leaf);
    if delta != 0 {
        let s = stmt(
            "INSERT INTO conflicts (prefix, overwritten) VALUES ($1, $2) \
             ON CONFLICT (prefix) DO UPDATE SET overwritten = conflicts.overwritten + excluded.overwritten",
        )
        .text(prefix)
        .int(delta);
        conn.execute(s).await?;
    }
    Ok(true)
}

/// Merges a counter component (per-field maximum). Returns whether it changed anything.
pub(super) async fn merge_counter(conn: &mut impl Conn, key: &str, region: &str, c: Component) -> Result<bool> {
    let s = stmt(
        "INSERT INTO counters (key, region, p, n) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key, region) DO UPDATE SET \
         p = CASE WHEN excluded.p > counters.p THEN excluded.p ELSE counters.p END, \
         n = CASE WHEN excluded.n > counters.n THEN excluded.n ELSE counters.n END \
         WHERE excluded.p > counters.p OR excluded.n > counters.n",
    )
    .text(key)
    .text(region)
    .int(c.p)
    .int(c.n);
    Ok(conn.execute(s).await? > 0)
}

/// Applies a batch of `home`'s log, skipping entries applied before, and records the
/// state it leads to. Returns that state.
pub(super) async fn apply_batch(
    conn: &mut impl Conn,
    home: &str,
    incoming: Incoming<'_>,
    tracked: Tracked<'_>,
) -> Result<ReplicaState> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM replica_state WHERE home = $1");
    let before = conn.fetch_optional(stmt(&sql).text(home)).await?;
    let before = before.as_ref().map(state_of).transpose()?;
    let mut applied_seq = before.map_or(0, |s| s.applied_seq);
    for e in incoming.fresh(applied_seq) {
        match apply_entry(home, e)? {
            Apply::Version(row) => {
                insert_row(conn, &row, tracked(&row.key).as_deref()).await?;
            }
            Apply::Counter { key, component } => {
                merge_counter(conn, &key, home, component).await?;
            }
            Apply::Nothing => {}
        }
        let resolved = stmt("DELETE FROM intents WHERE home = $1 AND seq = $2")
            .text(home)
            .int(e.seq);
        conn.execute(resolved).await?;
        applied_seq = e.seq;
    }
    let state = next_state(before, &incoming, applied_seq);
    let save = stmt(
        "INSERT INTO replica_state (home, applied_seq, closed_wall, closed_logical, gap_seq, gap_wall, gap_logical, \
         frozen_wall, frozen_logical) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (home) DO UPDATE SET applied_seq = excluded.applied_seq, closed_wall = excluded.closed_wall, \
         closed_logical = excluded.closed_logical, gap_seq = excluded.gap_seq, gap_wall = excluded.gap_wall, \
         gap_logical = excluded.gap_logical, frozen_wall = excluded.frozen_wall, \
         frozen_logical = excluded.frozen_logical",
    )
    .text(home)
    .int(state.applied_seq)
    .ts(state.closed)
    .opt_int(state.gap.map(|g| g.upto_seq))
    .opt_ts(state.gap.map(|g| g.upto_ts))
    .opt_ts(state.frozen);
    conn.execute(save).await?;
    Ok(state)
}

/// An async write of a key written anywhere, executed here (`origin`): the version it
/// replaces (the latest here) recorded, a conflict counted if it is concurrent with one
/// already here, and logged. Returns its log sequence number.
pub(super) async fn write_anywhere<DB: Dialect>(
    conn: &mut DB::Connection,
    key: &str,
    ts: Timestamp,
    value: Option<&str>,
    origin: &str,
    prefix: &str,
) -> Result<i64> {
    let latest = stmt(
        "SELECT ts_wall, ts_logical, home FROM versions WHERE key = $1 \
         ORDER BY ts_wall DESC, ts_logical DESC, home DESC LIMIT 1",
    )
    .text(key);
    let prev = match conn.fetch_optional(latest).await? {
        Some(r) => Some(VersionId {
            ts: ts_of(&r)?,
            origin: r.text("home")?,
        }),
        None => None,
    };
    let row = VersionRow {
        key: key.to_owned(),
        ts,
        value: value.map(str::to_owned),
        origin: origin.to_owned(),
        prev: prev.clone(),
    };
    insert_row(conn, &row, Some(prefix)).await?;
    let entry = Append {
        prev: prev.as_ref(),
        ..Append::version(key, ts, value, EntryState::Committed)
    };
    append::<DB>(conn, entry).await
}

/// Adds `delta` to `region`'s component of counter `key` and logs the new component. With
/// an `op_id` seen before for this key, returns `None` before changing anything; the caller
/// then rolls back (op ids older than a week, by `ts`, were dropped first).
pub(super) async fn increment<DB: Dialect>(
    conn: &mut DB::Connection,
    key: &str,
    region: &str,
    ts: Timestamp,
    delta: i64,
    op_id: Option<&str>,
) -> Result<Option<Component>> {
    if let Some(op_id) = op_id {
        let week_ago = wall(ts).saturating_sub(i64::try_from(RETENTION_MS).unwrap_or(i64::MAX));
        conn.execute(stmt("DELETE FROM counter_ops WHERE created_ms < $1").int(week_ago))
            .await?;
        let fresh = stmt("INSERT INTO counter_ops (key, op_id, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .text(key)
            .text(op_id)
            .int(wall(ts));
        if conn.execute(fresh).await? == 0 {
            return Ok(None);
        }
    }
    let current = stmt("SELECT p, n FROM counters WHERE key = $1 AND region = $2")
        .text(key)
        .text(region);
    let current = match conn.fetch_optional(current).await? {
        Some(r) => Component {
            p: r.int("p")?,
            n: r.int("n")?,
        },
        None => Component::default(),
    };
    let next = current.plus(delta)?;
    merge_counter(conn, key, region, next).await?;
    let json = next.to_json();
    let entry = Append {
        kind: EntryKind::Counter,
        ..Append::version(key, ts, Some(&json), EntryState::Committed)
    };
    append::<DB>(conn, entry).await?;
    Ok(Some(next))
}
