//! Opening a region's PostgreSQL database: the connections, the migrations, and a guard,
//! since a database named by URL is easier to share by mistake than a file named after its
//! region: the database records the name of the region it belongs to ([`Postgres::claim`]),
//! and another region is refused (two regions started at once on one database included:
//! one of them claims it first).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};

use super::postgres::Postgres;
use crate::{Error, Result};

/// The migrations of the PostgreSQL schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/regions-postgres");

/// Connections reading beside the writer.
const READERS: u32 = 4;

/// How long a call waits for a connection (or for the database to come back).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Postgres {
    /// Connects to the database at `url` (which must exist) and migrates it.
    pub async fn connect(url: &str) -> Result<Postgres> {
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
        Ok(Postgres { readers, writer })
    }

    /// Records that the database belongs to region `name`, or checks that it does.
    pub async fn claim(&self, name: &str) -> Result<()> {
        sqlx::query("INSERT INTO region_identity (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(&self.writer)
            .await?;
        let owner: String = sqlx::query("SELECT name FROM region_identity")
            .fetch_one(&self.writer)
            .await?
            .try_get("name")?;
        if owner != name {
            return Err(Error::StoreTaken(format!(
                "this database holds region {owner}'s data, not {name}'s (each region needs a PostgreSQL database \
                 of its own)"
            )));
        }
        Ok(())
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}
