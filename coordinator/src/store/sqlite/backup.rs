//! Backups of a SQLite database while it is in use, and restores of them
//! (`geosaga backup`, `geosaga restore`).
//!
//! A backup goes through SQLite's online backup API in one step: it reads one consistent
//! snapshot of the file under a read transaction, which in WAL mode never holds the writer
//! up (the WAL grows meanwhile, and is checkpointed after). The copy is checked
//! (`PRAGMA integrity_check`), made a single file (rollback journal instead of WAL), synced,
//! and only then renamed into place, so a half-written backup never carries the name.
//!
//! A restore checks the backup the same way (and that its schema is one the binary knows),
//! refuses a target in use by another process, and replaces the target file whole: its stale
//! `-wal` and `-shm` files are removed first, so that nothing of the old database is replayed
//! into the restored one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use sqlx::migrate::Migrator;

use crate::store::schema;
use crate::{Error, Result};

/// What a backup or a restore holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The file's size in bytes.
    pub bytes: u64,
    /// Its newest applied migration.
    pub schema_version: Option<i64>,
    /// Rows per table, for the tables asked for (a table that does not exist is left out).
    pub rows: Vec<(String, i64)>,
    /// Sagas per status, when the database is a coordinator's.
    pub statuses: Vec<(String, i64)>,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Store(what.to_string())
}

/// Copies the live database at `source` to `out` (which must not exist unless `force`).
pub fn backup(source: &Path, out: &Path, force: bool, tables: &[&str]) -> Result<Summary> {
    if !source.is_file() {
        return Err(fail(format!("{}: no such database file", source.display())));
    }
    if out.exists() && !force {
        return Err(fail(format!("{} exists; pass --force to replace it", out.display())));
    }
    let from = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    from.busy_timeout(Duration::from_secs(10))?;
    let partial = sibling(out, ".partial");
    copy(&from, &partial)?;
    let summary = finish(&partial, tables)?;
    std::fs::rename(&partial, out).map_err(|e| fail(format!("renaming to {}: {e}", out.display())))?;
    sync_dir(out)?;
    Ok(summary)
}

/// Replaces the database at `target` with the backup at `from_backup`, after checking it
/// (its schema must be one `migrator` knows). `target` must not exist unless `force`, and no
/// process may have it open.
pub fn restore(
    from_backup: &Path,
    target: &Path,
    force: bool,
    migrator: &Migrator,
    tables: &[&str],
) -> Result<Summary> {
    if !from_backup.is_file() {
        return Err(fail(format!("{}: no such backup file", from_backup.display())));
    }
    let backup = Connection::open_with_flags(from_backup, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check_integrity(&backup, from_backup)?;
    let version = schema_version(&backup)?;
    if version.is_none() {
        return Err(fail(format!(
            "{}: not a geosaga database (no migrations table)",
            from_backup.display()
        )));
    }
    schema::refuse_newer(version, migrator, &from_backup.display().to_string())?;
    let (wal, shm) = (sibling(target, "-wal"), sibling(target, "-shm"));
    if target.exists() || wal.exists() {
        if !force {
            return Err(fail(format!(
                "{} exists; stop what runs on it and pass --force to replace it",
                target.display()
            )));
        }
        refuse_if_in_use(target)?;
    }
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    }
    let partial = sibling(target, ".restoring");
    copy(&backup, &partial)?;
    let summary = finish(&partial, tables)?;
    for stale in [&wal, &shm] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(format!("removing {}: {e}", stale.display()))),
        }
    }
    std::fs::rename(&partial, target).map_err(|e| fail(format!("renaming to {}: {e}", target.display())))?;
    sync_dir(target)?;
    Ok(summary)
}

/// What the database at `path` holds (read-only).
pub fn summary(path: &Path, tables: &[&str]) -> Result<Summary> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    describe(&conn, path, tables)
}

/// Copies every page of `from` into a new file at `to`, in one step (one snapshot).
fn copy(from: &Connection, to: &Path) -> Result<()> {
    match std::fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(format!("removing {}: {e}", to.display()))),
    }
    let mut dest = Connection::open(to)?;
    {
        let backup = Backup::new(from, &mut dest)?;
        let mut waited = 0;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    waited += 1;
                    if waited > 200 {
                        return Err(fail("the database stayed locked for 10 s; try again"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return Err(fail(format!("backup step: {other:?}"))),
            }
        }
    }
    // One self-contained file: no WAL beside it until a store opens it again.
    let _: String = dest.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    dest.close().map_err(|(_, e)| Error::from(e))?;
    Ok(())
}

/// Checks the copy at `path`, syncs it, and says what it holds.
fn finish(path: &Path, tables: &[&str]) -> Result<Summary> {
    let conn = Connection::open(path)?;
    check_integrity(&conn, path)?;
    let summary = describe(&conn, path, tables)?;
    conn.close().map_err(|(_, e)| Error::from(e))?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(format!("syncing {}: {e}", path.display())))?;
    Ok(summary)
}

fn check_integrity(conn: &Connection, path: &Path) -> Result<()> {
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(fail(format!("{}: integrity check failed: {verdict}", path.display())))
    }
}

fn schema_version(conn: &Connection) -> Result<Option<i64>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(conn.query_row("SELECT MAX(version) FROM _sqlx_migrations", [], |r| r.get(0))?)
}

fn describe(conn: &Connection, path: &Path, tables: &[&str]) -> Result<Summary> {
    let mut rows = Vec::new();
    for table in tables {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
            [table],
            |r| r.get(0),
        )?;
        if exists {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| r.get(0))?;
            rows.push(((*table).to_owned(), n));
        }
    }
    let mut statuses = Vec::new();
    if rows.iter().any(|(t, _)| t == "sagas") {
        let mut statement = conn.prepare("SELECT status, COUNT(*) FROM sagas GROUP BY status ORDER BY status")?;
        let mut found = statement.query([])?;
        while let Some(row) = found.next()? {
            statuses.push((row.get(0)?, row.get(1)?));
        }
    }
    Ok(Summary {
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        schema_version: schema_version(conn)?,
        rows,
        statuses,
    })
}

/// Fails when another process has the database at `path` open (a coordinator on it).
fn refuse_if_in_use(path: &Path) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::ZERO)?;
    let locked = conn
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;")
        .is_err();
    drop(conn);
    if locked {
        return Err(fail(format!(
            "{}: another process has the database open (a coordinator?); stop it before restoring",
            path.display()
        )));
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(format!("syncing {}: {e}", dir.display())))
}
