//! Saga and definition rows as the SQL stores read them: which columns, in which order, and
//! how they become a [`SagaRecord`] or a [`DefinitionRecord`], written once for the three
//! ways rows are read (sqlx on SQLite and on PostgreSQL, rusqlite on SQLite's writer).
//!
//! A backend says only how to read one column of each kind ([`Columns`]); SQLite keeps
//! ids and JSON as text and flags as integers, PostgreSQL has native types for them.

use sagas::SagaStatus;
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{DefinitionRecord, SagaRecord};
use crate::Error;

/// The columns [`saga_from_row`] reads, in its order.
pub(super) const SAGA_COLUMNS: &str = "id, definition, version, input, status, error, owner, lease_until_ms, \
     generation, idempotency_key, trace_context, cancel_requested, created_at_ms, updated_at_ms, event_count";

/// The columns [`definition_from_row`] reads, in its order.
pub(super) const DEFINITION_COLUMNS: &str = "name, version, content_hash, document, created_at_ms";

/// A column's value that does not make a record: named, with what is wrong.
#[derive(Debug)]
pub(super) struct BadRow(String);

impl From<BadRow> for Error {
    fn from(bad: BadRow) -> Error {
        Error::Store(bad.0)
    }
}

impl From<BadRow> for sqlx::Error {
    fn from(bad: BadRow) -> sqlx::Error {
        sqlx::Error::Decode(bad.0.into())
    }
}

/// How a backend's row reads the column at an index.
pub(super) trait Columns {
    /// The backend's error.
    type Error: From<BadRow>;
    /// A text column.
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// An integer column.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// An id (SQLite: hyphenated text).
    fn uuid(&self, i: usize) -> Result<Uuid, Self::Error> {
        let text = self.text(i)?;
        Uuid::parse_str(&text).map_err(|e| BadRow(format!("saga id {text}: {e}")).into())
    }
    /// A JSON document (SQLite: text).
    fn json(&self, i: usize, what: &str) -> Result<Value, Self::Error> {
        let text = self.text(i)?;
        serde_json::from_str(&text).map_err(|e| BadRow(format!("{what} is not JSON: {e}")).into())
    }
    /// A flag (SQLite: 0 or 1).
    fn flag(&self, i: usize) -> Result<bool, Self::Error> {
        Ok(self.int(i)? != 0)
    }
}

/// A saga row selected as [`SAGA_COLUMNS`].
pub(super) fn saga_from_row<R: Columns>(row: &R) -> Result<SagaRecord, R::Error> {
    let status = row.text(4)?;
    Ok(SagaRecord {
        id: row.uuid(0)?,
        definition: row.text(1)?,
        version: row.int(2)?,
        input: row.json(3, "saga input")?,
        status: SagaStatus::parse(&status).ok_or_else(|| BadRow(format!("unknown saga status `{status}`")))?,
        error: row.opt_text(5)?,
        owner: row.opt_text(6)?,
        lease_until_ms: row.int(7)?,
        generation: row.int(8)?,
        idempotency_key: row.opt_text(9)?,
        trace_context: row.opt_text(10)?,
        cancel_requested: row.flag(11)?,
        created_at_ms: row.int(12)?,
        updated_at_ms: row.int(13)?,
        event_count: row.int(14)?,
    })
}

/// A definition row selected as [`DEFINITION_COLUMNS`].
pub(super) fn definition_from_row<R: Columns>(row: &R) -> Result<DefinitionRecord, R::Error> {
    Ok(DefinitionRecord {
        name: row.text(0)?,
        version: row.int(1)?,
        content_hash: row.text(2)?,
        document: row.json(3, "definition")?,
        created_at_ms: row.int(4)?,
    })
}

impl Columns for rusqlite::Row<'_> {
    type Error = Error;
    fn text(&self, i: usize) -> Result<String, Error> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, Error> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, Error> {
        Ok(self.get(i)?)
    }
}

impl Columns for SqliteRow {
    type Error = Error;
    fn text(&self, i: usize) -> Result<String, Error> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, Error> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, Error> {
        Ok(self.try_get(i)?)
    }
}

impl Columns for PgRow {
    type Error = sqlx::Error;
    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.try_get(i)
    }
    fn uuid(&self, i: usize) -> Result<Uuid, sqlx::Error> {
        self.try_get(i)
    }
    fn json(&self, i: usize, _: &str) -> Result<Value, sqlx::Error> {
        self.try_get(i)
    }
    fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
        self.try_get(i)
    }
}
