//! The SQLite store: the embedded default. One file in WAL mode with `synchronous=FULL`
//! (a commit is durable when it returns), one writer connection on its own thread that
//! group-commits the saga writes (`sqlite_writer.rs`), and a pool of sqlx readers
//! beside it.

pub mod backup;
mod maintenance;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use sqlx::sqlite::{SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::rows::{DEFINITION_COLUMNS, SAGA_COLUMNS, definition_from_row, saga_from_row};
use super::sqlite_writer::{SqliteWriter, saga_rows};
use super::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, Expiry, ListFilter, NewSaga, PutDefinition,
    Renewed, SagaRecord, Store, StoreStats, StoredEvent, schema,
};
use crate::{Error, Result};

/// The migrations of the SQLite schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A store in one SQLite file.
pub struct SqliteStore {
    readers: SqlitePool,
    writer: SqliteWriter,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Store(format!("creating {}: {e}", dir.display())))?;
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // The schema is migrated through sqlx (its migrator and its bookkeeping table), on a
        // connection closed before the writer thread opens its own. A new file is made in
        // incremental auto-vacuum; an older one is switched before its migrations run.
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().auto_vacuum(SqliteAutoVacuum::Incremental))
            .await?;
        {
            let mut conn = migrating.acquire().await?;
            let applied = schema::applied_sqlite(&mut conn).await?;
            schema::refuse_newer(applied, &MIGRATOR, &path.display().to_string())?;
            maintenance::ensure_incremental_vacuum(&mut conn, path).await?;
        }
        MIGRATOR.run(&migrating).await?;
        migrating.close().await;
        let writer = SqliteWriter::open(path).await?;
        // No liveness ping before each acquire: a connection to a local file does not go
        // stale, and the ping is one more round trip to the connection's worker thread.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { readers, writer })
    }
}

async fn saga_by_id(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<SagaRecord>> {
    let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(saga_from_row).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_definition(
        &self,
        name: &str,
        content_hash: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<PutDefinition> {
        let (name, content_hash, document) = (name.to_owned(), content_hash.to_owned(), document.to_string());
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing = tx
                    .prepare_cached(&format!(
                        "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = ? AND content_hash = ?"
                    ))?
                    .query_row([&name, &content_hash], |row| Ok(definition_from_row(row)))
                    .optional()?
                    .transpose()?;
                if let Some(record) = existing {
                    return Ok(PutDefinition { record, created: false });
                }
                let record = tx
                    .prepare_cached(&format!(
                        "INSERT INTO definitions (name, version, content_hash, document, created_at_ms) \
                         VALUES (?1, (SELECT COALESCE(MAX(version), 0) + 1 FROM definitions WHERE name = ?1), ?2, ?3, ?4) \
                         RETURNING {DEFINITION_COLUMNS}"
                    ))?
                    .query_row(params![name, content_hash, document, now_ms], |row| {
                        Ok(definition_from_row(row))
                    })??;
                tx.commit()?;
                Ok(PutDefinition { record, created: true })
            })
            .await
    }

    async fn get_definition(&self, name: &str, version: Option<i64>) -> Result<Option<DefinitionRecord>> {
        // The latest version when none is named.
        let sql = format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE name = ? AND (? IS NULL OR version = ?) \
             ORDER BY version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(version)
            .bind(version)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(definition_from_row).transpose()
    }

    async fn list_definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let rows = sqlx::query(
            "SELECT name, MAX(version) AS latest, MAX(created_at_ms) AS updated FROM definitions GROUP BY name ORDER BY name",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DefinitionSummary {
                    name: r.try_get("name")?,
                    latest_version: r.try_get("latest")?,
                    updated_at_ms: r.try_get("updated")?,
                })
            })
            .collect()
    }

    async fn create_saga(&self, new: NewSaga) -> Result<Created> {
        self.writer.create(new).await
    }

    async fn append(&self, append: Append) -> Result<AppendAck> {
        self.writer.append(append).await
    }

    async fn get_saga(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        let mut conn = self.readers.acquire().await?;
        saga_by_id(&mut conn, id).await
    }

    async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query("SELECT seq, at_ms, event FROM saga_events WHERE saga_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event")?;
                Ok(StoredEvent {
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    event: serde_json::from_str(&text).map_err(|e| Error::Store(format!("event of {id}: {e}")))?,
                })
            })
            .collect()
    }

    async fn events_of(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<StoredEvent>>> {
        let ids = Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string();
        let rows = sqlx::query(
            "SELECT saga_id, seq, at_ms, event FROM saga_events \
             WHERE saga_id IN (SELECT value FROM json_each(?)) ORDER BY saga_id, seq",
        )
        .bind(ids)
        .fetch_all(&self.readers)
        .await?;
        let mut logs: HashMap<Uuid, Vec<StoredEvent>> = HashMap::new();
        for r in &rows {
            let id: String = r.try_get("saga_id")?;
            let id = Uuid::parse_str(&id).map_err(|e| Error::Store(format!("saga id {id}: {e}")))?;
            let text: String = r.try_get("event")?;
            logs.entry(id).or_default().push(StoredEvent {
                seq: r.try_get("seq")?,
                at_ms: r.try_get("at_ms")?,
                event: serde_json::from_str(&text).map_err(|e| Error::Store(format!("event of {id}: {e}")))?,
            });
        }
        Ok(logs)
    }

    async fn list_sagas(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>> {
        let (before_ms, before_id) = filter
            .before
            .map_or((i64::MAX, String::new()), |(t, id)| (t, id.to_string()));
        let rows = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE (? IS NULL OR status = ?) AND (? IS NULL OR definition = ?) \
             AND (? IS NULL OR idempotency_key = ?) AND (created_at_ms < ? OR (created_at_ms = ? AND (? = '' OR id < ?))) \
             ORDER BY created_at_ms DESC, id DESC LIMIT ?"
        ))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.definition)
        .bind(&filter.definition)
        .bind(&filter.idempotency_key)
        .bind(&filter.idempotency_key)
        .bind(before_ms)
        .bind(before_ms)
        .bind(&before_id)
        .bind(&before_id)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Renewed> {
        let owner = owner.to_owned();
        self.writer
            .run(move |conn| {
                let mut statement = conn.prepare_cached(
                    "UPDATE sagas SET lease_until_ms = ? WHERE owner = ? AND status IN ('running', 'compensating') \
                     RETURNING id, cancel_requested",
                )?;
                let mut rows = statement.query(params![lease_until_ms, owner])?;
                let mut renewed = Renewed::default();
                while let Some(row) = rows.next()? {
                    let Ok(id) = Uuid::parse_str(&row.get::<_, String>(0)?) else {
                        continue;
                    };
                    renewed.owned.push(id);
                    if row.get::<_, i64>(1)? != 0 {
                        renewed.cancels.push(id);
                    }
                }
                Ok(renewed)
            })
            .await
    }

    async fn claim(
        &self,
        owner: &str,
        include_own: bool,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SagaRecord>> {
        let owner = owner.to_owned();
        self.writer
            .run(move |conn| {
                saga_rows(
                    conn,
                    &format!(
                        "UPDATE sagas SET owner = ?1, generation = generation + 1, lease_until_ms = ?2 WHERE id IN ( \
                           SELECT id FROM sagas WHERE status IN ('running', 'compensating') \
                           AND (lease_until_ms < ?3 OR (?4 AND owner = ?1)) ORDER BY lease_until_ms LIMIT ?5) \
                         RETURNING {SAGA_COLUMNS}"
                    ),
                    params![owner, lease_until_ms, now_ms, include_own, i64::from(limit)],
                )
            })
            .await
    }

    async fn take_over_stuck(&self, id: Uuid, owner: &str, lease_until_ms: i64) -> Result<Option<SagaRecord>> {
        let owner = owner.to_owned();
        let rows = self
            .writer
            .run(move |conn| {
                saga_rows(
                    conn,
                    &format!(
                        "UPDATE sagas SET owner = ?, generation = generation + 1, lease_until_ms = ? \
                         WHERE id = ? AND status = 'stuck' RETURNING {SAGA_COLUMNS}"
                    ),
                    params![owner, lease_until_ms, id.to_string()],
                )
            })
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn request_cancel(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        self.writer
            .run(move |conn| {
                conn.prepare_cached("UPDATE sagas SET cancel_requested = 1 WHERE id = ? AND status = 'running'")?
                    .execute([id.to_string()])?;
                Ok(())
            })
            .await?;
        self.get_saga(id).await
    }

    async fn release(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.writer
            .run(move |conn| {
                conn.prepare_cached(
                    "UPDATE sagas SET lease_until_ms = 0 WHERE owner = ? AND status IN ('running', 'compensating')",
                )?
                .execute([owner])?;
                Ok(())
            })
            .await
    }

    async fn expired(&self, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>> {
        maintenance::expired(self, expiry, limit).await
    }

    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>> {
        maintenance::delete_expired(self, ids, expiry).await
    }

    async fn reclaim_space(&self, pages: u32) -> Result<u64> {
        maintenance::reclaim_space(self, pages).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.writer.stats()
    }
}
