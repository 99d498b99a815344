//! `geosaga region backup` and `geosaga region restore`: a region's SQLite store copied
//! while it runs (SQLite's online backup API, the coordinator's `backup` module), and put
//! back. Either way the result is *marked restored*, so that the region opened on it starts
//! a new log incarnation and takes back from its peers what it wrote after the backup
//! (`regions::restore`): its peers applied entries the backup never saw. For PostgreSQL the
//! copy is `pg_dump`'s, and `restore --database URL` (no file) marks the restored database.

use geosaga::outln;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use coordinator::store::sqlite::backup;
use regions::store::{PostgresStore, SqliteStore, Store};

/// The tables a backup's summary counts.
const TABLES: &[&str] = &["versions", "repl_log", "counters"];

/// `geosaga region backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The region's store: its SQLite file (or `sqlite://PATH`).
    #[arg(long, env = "GEOSAGA_REGION_DATABASE")]
    database: String,
    /// Where to write the backup (a SQLite file).
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

/// `geosaga region restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup to restore (SQLite). None: a SQLite store is rebuilt empty from the peers
    /// (with --force if it exists), a `postgres://` one restored by `pg_restore` is marked.
    backup: Option<PathBuf>,
    /// The stopped region's store: its SQLite file, or its PostgreSQL URL.
    #[arg(long, env = "GEOSAGA_REGION_DATABASE")]
    database: String,
    /// Replace the SQLite file if it exists (the region must be stopped).
    #[arg(long)]
    force: bool,
}

fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

fn sqlite_path(database: &str) -> PathBuf {
    PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database))
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Marks the SQLite store at `path` restored.
async fn mark_sqlite(path: &std::path::Path) -> anyhow::Result<()> {
    let store = SqliteStore::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let marked = store.mark_restored(now_ms()).await;
    store.close().await;
    marked.with_context(|| format!("marking {} restored", path.display()))
}

/// `geosaga region backup`.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if is_postgres(&args.database) {
        bail!(
            "a backup of a region's PostgreSQL database is PostgreSQL's own: `pg_dump --format=custom --file=OUT URL`; \
             after `pg_restore`, run `geosaga region restore --database URL` before the region starts \
             (docs/operations.md, \"Backing up a region\")"
        );
    }
    let source = sqlite_path(&args.database);
    let summary = backup::backup(&source, &args.out, args.force, TABLES)
        .with_context(|| format!("backing up {}", source.display()))?;
    mark_sqlite(&args.out)
        .await
        .context("the backup was written but not marked: run `geosaga region restore` on it")?;
    outln!(
        "backup written to {} ({} bytes; {}); a region opened on it starts a new log incarnation",
        args.out.display(),
        summary.bytes,
        rows(&summary)
    );
    Ok(())
}

fn rows(summary: &backup::Summary) -> String {
    let rows: Vec<String> = summary.rows.iter().map(|(t, n)| format!("{n} {t}")).collect();
    rows.join(", ")
}

/// `geosaga region restore`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if is_postgres(&args.database) {
        if args.backup.is_some() {
            bail!("a PostgreSQL database is restored by `pg_restore`; then run this without a backup file to mark it");
        }
        let store = PostgresStore::connect(&args.database)
            .await
            .context("connecting to the region's database")?;
        let marked = store.mark_restored(now_ms()).await;
        store.close().await;
        marked.context("marking the database restored")?;
        outln!("marked restored: the region started on it takes its later writes back from its peers");
        return Ok(());
    }
    let target = sqlite_path(&args.database);
    let Some(from) = args.backup else {
        // No backup: an empty store, marked, which takes everything back from the peers.
        if target.exists() && !args.force {
            bail!(
                "{} exists: give the backup to restore, or --force to rebuild it empty from the peers \
                 (stop the region first)",
                target.display()
            );
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut path = target.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", PathBuf::from(path).display())),
            }
        }
        mark_sqlite(&target).await?;
        outln!(
            "{} is empty and marked restored: the region started on it takes back its own writes from its peers, \
             and anti-entropy brings theirs",
            target.display()
        );
        return Ok(());
    };
    let summary = backup::restore(&from, &target, args.force, &regions::store::SQLITE_MIGRATOR, TABLES)
        .with_context(|| format!("restoring {} into {}", from.display(), target.display()))?;
    mark_sqlite(&target).await?;
    outln!(
        "restored {} into {} ({}): the region started on it takes its later writes back from its peers \
         before it serves",
        from.display(),
        target.display(),
        rows(&summary)
    );
    Ok(())
}
