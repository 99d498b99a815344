//! The PostgreSQL store (schema in `migrations/regions-postgres`), with the same behaviour
//! as the SQLite one: every connection runs with `synchronous_commit=on`, so a write is
//! durable when its call returns; every write goes through one writer connection (the
//! replication log's sequence numbers are given in commit order), reads through a pool
//! beside it. What PostgreSQL does its own way: the log's numbers come from a one-row
//! counter (`repl_seq`, bumped in the appending transaction: unlike a sequence, a rolled
//! back append gives none away), and a list of keys is read with `jsonb_array_elements_text`.
//!
//! A database named by URL is easier to share by mistake than a file named after its
//! region, so the database records the name of the region it belongs to
//! ([`Store::claim`](super::Store::claim)), and another region is refused (two regions
//! started at once on one database included: one of them claims it first).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres};

use super::sql::{Dialect, SqlStore};
use crate::Result;

/// The migrations of the PostgreSQL schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/regions-postgres");

/// Connections reading beside the writer.
const READERS: u32 = 4;

/// How long a call waits for a connection (or for the database to come back).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A region's store in a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const APPEND: &'static str = "WITH s AS (UPDATE repl_seq SET seq = seq + 1 RETURNING seq) \
         INSERT INTO repl_log (seq, key, ts_wall, ts_logical, value, state, kind, prev_wall, prev_logical, prev_home) \
         SELECT s.seq, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM s RETURNING seq";
    const LAST_SEQ: &'static str = "SELECT seq FROM repl_seq";
    const VERSIONS_OF: &'static str = "SELECT key, ts_wall, ts_logical, value, home, prev_wall, prev_logical, \
         prev_home FROM versions WHERE home = $1 AND key IN (SELECT jsonb_array_elements_text($2::jsonb)) \
         ORDER BY key, ts_wall DESC, ts_logical DESC";
    const CLAIMED: bool = true;
    const SET_LAST_SEQ: &'static [&'static str] = &["UPDATE repl_seq SET seq = $1"];
}

impl SqlStore<Postgres> {
    /// Connects to the PostgreSQL database at `url` (`postgres://...`; it must exist, and
    /// hold no other region's data) and migrates it.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url)?
            // Durable at commit whatever the server's default; no NOTICEs in the log (the
            // migrator's "already exists, skipping" at every start).
            .options([("synchronous_commit", "on"), ("client_min_messages", "warning")])
            .application_name("geosaga-region");
        // A pool that cannot connect only says it timed out; one connection says why.
        PgConnection::connect_with(&options).await?.close().await?;
        let writer = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers = PgPoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(SqlStore { readers, writer })
    }
}
