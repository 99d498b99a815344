//! Schema versions: the migrations a binary knows, and its refusal to open a database that a
//! newer binary has migrated past them.
//!
//! Migrations only move forward (there are no down migrations), and each one keeps the
//! binary before it working on the migrated schema (new tables, indexes, storage settings,
//! columns with defaults), so that coordinators sharing a database can be upgraded one at a
//! time. A binary never opens a schema newer than its own: it could not know what the newer
//! migrations changed.

use sqlx::migrate::Migrator;

use crate::{Error, Result};

/// The newest schema version `migrator` knows.
pub fn known_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Fails with a clear error when the database's schema (`applied`: its newest applied
/// migration, `None` for a new database) is newer than `migrator` knows.
pub(crate) fn refuse_newer(applied: Option<i64>, migrator: &Migrator, database: &str) -> Result<()> {
    let known = known_version(migrator);
    match applied {
        Some(version) if version > known => Err(Error::Store(format!(
            "{database}: the schema is at version {version}, newer than this geosaga ({}) knows (version {known}): \
             a newer geosaga has migrated it. Run that version or a later one, or restore a backup taken before the \
             upgrade (docs/operations.md, \"Upgrades\")",
            env!("CARGO_PKG_VERSION")
        ))),
        Some(_) | None => Ok(()),
    }
}

/// The newest migration applied to a SQLite database (`None` for a new one).
pub(crate) async fn applied_sqlite(conn: &mut sqlx::SqliteConnection) -> Result<Option<i64>> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(None);
    }
    Ok(sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await?)
}

/// The newest migration applied to a PostgreSQL database (`None` for a new one).
pub(crate) async fn applied_postgres(pool: &sqlx::PgPool) -> Result<Option<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(None);
    }
    Ok(sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?)
}
