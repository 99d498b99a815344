//! How the shared SQL reaches either database: a statement with its arguments ([`Stmt`]),
//! run on a connection of either backend ([`Conn`]), whose rows are read by column name
//! ([`Cols`]). SQLite (through sqlx) takes PostgreSQL's numbered placeholders (`$1`), so
//! one text serves both.

use async_trait::async_trait;
use regions_core::hlc::Timestamp;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::Result;

/// One argument of a statement, in the types both schemas store.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// An integer (`INTEGER`, `BIGINT`).
    Int(i64),
    /// A nullable integer.
    OptInt(Option<i64>),
    /// Text.
    Text(&'a str),
    /// Nullable text.
    OptText(Option<&'a str>),
}

/// A statement and its arguments, in placeholder order (`$1`, `$2`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'a str,
    pub(crate) args: Vec<Arg<'a>>,
}

/// A timestamp's wall time as stored (the column's integer type).
pub(crate) fn wall(ts: Timestamp) -> i64 {
    i64::try_from(ts.wall_ms).unwrap_or(i64::MAX)
}

/// The statement `sql`, with no argument yet.
pub(crate) fn stmt(sql: &str) -> Stmt<'_> {
    Stmt { sql, args: Vec::new() }
}

impl<'a> Stmt<'a> {
    /// Binds an integer.
    pub(crate) fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(v));
        self
    }

    /// Binds a nullable integer.
    pub(crate) fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Arg::OptInt(v));
        self
    }

    /// Binds text.
    pub(crate) fn text(mut self, v: &'a str) -> Self {
        self.args.push(Arg::Text(v));
        self
    }

    /// Binds nullable text.
    pub(crate) fn opt_text(mut self, v: Option<&'a str>) -> Self {
        self.args.push(Arg::OptText(v));
        self
    }

    /// Binds a timestamp as two integers (wall, logical).
    pub(crate) fn ts(self, ts: Timestamp) -> Self {
        self.int(wall(ts)).int(i64::from(ts.logical))
    }

    /// Binds a nullable timestamp as two nullable integers.
    pub(crate) fn opt_ts(self, ts: Option<Timestamp>) -> Self {
        self.opt_int(ts.map(wall)).opt_int(ts.map(|t| i64::from(t.logical)))
    }
}

/// A connection (or a transaction) of either backend.
#[async_trait]
pub(crate) trait Conn: Send {
    /// Its rows.
    type Row: Cols + Send;

    /// Runs a statement; returns the rows it changed.
    async fn execute(&mut self, s: Stmt<'_>) -> Result<u64>;

    /// Runs a query; returns its rows.
    async fn fetch_all(&mut self, s: Stmt<'_>) -> Result<Vec<Self::Row>>;

    /// Runs a query that returns at most one row.
    async fn fetch_optional(&mut self, s: Stmt<'_>) -> Result<Option<Self::Row>>;

    /// Runs a query that returns exactly one row.
    async fn fetch_one(&mut self, s: Stmt<'_>) -> Result<Self::Row>;
}

/// The columns of a row, by name, in the types both schemas store.
pub(crate) trait Cols {
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    /// A text column.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
}

/// The sqlx query of a statement, its arguments bound.
fn bound<'q, DB: sqlx::Database>(s: &Stmt<'q>) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    s.args.iter().fold(sqlx::query(s.sql), |q, arg| match *arg {
        Arg::Int(v) => q.bind(v),
        Arg::OptInt(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
        Arg::OptText(v) => q.bind(v),
    })
}

/// [`Conn`] and [`Cols`] for one backend's connection and row types.
macro_rules! backend {
    ($db:ty, $conn:ty, $row:ty) => {
        impl Cols for $row {
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
        }

        #[async_trait]
        impl Conn for $conn {
            type Row = $row;

            async fn execute(&mut self, s: Stmt<'_>) -> Result<u64> {
                Ok(bound::<$db>(&s).execute(self).await?.rows_affected())
            }

            async fn fetch_all(&mut self, s: Stmt<'_>) -> Result<Vec<$row>> {
                Ok(bound::<$db>(&s).fetch_all(self).await?)
            }

            async fn fetch_optional(&mut self, s: Stmt<'_>) -> Result<Option<$row>> {
                Ok(bound::<$db>(&s).fetch_optional(self).await?)
            }

            async fn fetch_one(&mut self, s: Stmt<'_>) -> Result<$row> {
                Ok(bound::<$db>(&s).fetch_one(self).await?)
            }
        }
    };
}

backend!(sqlx::Sqlite, sqlx::SqliteConnection, SqliteRow);
backend!(sqlx::Postgres, sqlx::PgConnection, PgRow);
