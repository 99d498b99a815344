//! The SQLite store (schema in `migrations/regions`): WAL mode with `synchronous=FULL`, so
//! a write is durable when its call returns. One writer connection, a pool of readers
//! beside it. What SQLite does its own way: the log's numbers come from `AUTOINCREMENT`
//! (never reused after truncation), and a list of keys is read with `json_each`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::{Dialect, SqlStore};
use crate::Result;

/// The migrations of the SQLite schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/regions");

/// A region's store in a SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const APPEND: &'static str = "INSERT INTO repl_log (key, ts_wall, ts_logical, value, state, kind, prev_wall, \
         prev_logical, prev_home) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq";
    const LAST_SEQ: &'static str =
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'repl_log'), 0) AS seq";
    const VERSIONS_OF: &'static str = "SELECT key, ts_wall, ts_logical, value, home, prev_wall, prev_logical, \
         prev_home FROM versions WHERE home = $1 AND key IN (SELECT value FROM json_each($2)) \
         ORDER BY key, ts_wall DESC, ts_logical DESC";
    const CLAIMED: bool = false;
    const SET_LAST_SEQ: &'static [&'static str] = &[
        "UPDATE sqlite_sequence SET seq = $1 WHERE name = 'repl_log'",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'repl_log', $1 \
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'repl_log')",
    ];
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqlStore { readers, writer })
    }
}
