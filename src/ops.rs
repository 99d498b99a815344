//! `geosaga backup`, `geosaga restore` and `geosaga archive`: the operator's commands
//! (docs/operations.md).

use geosaga::outln;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use coordinator::api::views::{EventLog, EventView, SagaResponse};
use coordinator::store::sqlite::backup::{self, Summary};
use uuid::Uuid;

/// The tables a backup summary counts.
const TABLES: &[&str] = &["definitions", "sagas", "saga_events"];

/// Options of `geosaga backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The coordinator's SQLite database (a path or `sqlite://PATH`); may be in use.
    #[arg(long, env = "GEOSAGA_DATABASE")]
    database: String,
    /// The backup file to write.
    out: PathBuf,
    /// Replace `OUT` if it exists.
    #[arg(long)]
    force: bool,
}

/// Options of `geosaga restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (written by `geosaga backup`).
    backup: PathBuf,
    /// The SQLite database to replace (a path or `sqlite://PATH`); nothing may run on it.
    #[arg(long, env = "GEOSAGA_DATABASE")]
    database: String,
    /// Replace the database if it exists.
    #[arg(long)]
    force: bool,
}

/// `geosaga archive`: read what retention archived.
#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Print an archived saga as `GET /v1/sagas/ID` showed it (or its log, as
    /// `GET /v1/sagas/ID/events` did).
    Show {
        /// The archive directory (`--retention-archive`).
        dir: PathBuf,
        /// The saga id.
        id: String,
        /// Print its event log instead.
        #[arg(long)]
        events: bool,
    },
}

fn sqlite_path(database: &str, verb: &str) -> anyhow::Result<PathBuf> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        bail!(
            "{verb} of a PostgreSQL database is PostgreSQL's own: `pg_dump --format=custom --file=OUT URL` to back up \
             (online, one consistent snapshot), `pg_restore --dbname=URL --no-owner OUT` into an empty database to \
             restore (docs/operations.md, \"Backups\")"
        );
    }
    Ok(PathBuf::from(database.strip_prefix("sqlite://").unwrap_or(database)))
}

/// `geosaga backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<u8> {
    let source = sqlite_path(&args.database, "a backup")?;
    let summary = backup::backup(&source, &args.out, args.force, TABLES)
        .with_context(|| format!("backing up {}", source.display()))?;
    outln!("backup written to {}: {}", args.out.display(), describe(&summary));
    Ok(0)
}

/// `geosaga restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<u8> {
    let target = sqlite_path(&args.database, "a restore")?;
    let summary = backup::restore(
        &args.backup,
        &target,
        args.force,
        &coordinator::store::sqlite::MIGRATOR,
        TABLES,
    )
    .with_context(|| format!("restoring {} into {}", args.backup.display(), target.display()))?;
    outln!(
        "restored {} into {}: {}",
        args.backup.display(),
        target.display(),
        describe(&summary)
    );
    let unsettled: i64 = summary
        .statuses
        .iter()
        .filter(|(status, _)| status == "running" || status == "compensating")
        .map(|(_, n)| n)
        .sum();
    if unsettled > 0 {
        outln!(
            "{unsettled} sagas were running: a coordinator started on it resumes them (their steps run again \
             under the same idempotency keys). Sagas started after the backup are not in it."
        );
    }
    Ok(0)
}

fn describe(summary: &Summary) -> String {
    let mut text = format!(
        "{} bytes, schema version {}",
        summary.bytes,
        summary.schema_version.map_or("none".to_owned(), |v| v.to_string())
    );
    for (table, n) in &summary.rows {
        text.push_str(&format!(", {n} {table}"));
    }
    if !summary.statuses.is_empty() {
        let statuses: Vec<String> = summary.statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
        text.push_str(&format!(" ({})", statuses.join(", ")));
    }
    text
}

/// `geosaga archive ...`.
pub fn archive(command: ArchiveCommand) -> anyhow::Result<u8> {
    match command {
        ArchiveCommand::Show { dir, id, events } => show(&dir, &id, events),
    }
}

fn show(dir: &Path, id: &str, events: bool) -> anyhow::Result<u8> {
    let id = Uuid::parse_str(id).with_context(|| format!("`{id}` is not a saga id"))?;
    let Some((saga, definition)) = coordinator::archive::find(dir, id)? else {
        eprintln!("error: no saga {id} in the archive {}", dir.display());
        return Ok(3);
    };
    let json = if events {
        serde_json::to_string_pretty(&EventLog {
            events: saga.events.iter().map(EventView::from).collect(),
        })?
    } else {
        serde_json::to_string_pretty(&SagaResponse::new(&saga.view(&definition)?, None))?
    };
    outln!("{json}");
    Ok(0)
}
