//! The coordinator's error type.

use uuid::Uuid;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definition or an input did not validate.
    #[error(transparent)]
    Invalid(#[from] sagas::ValidationErrors),
    /// No definition has this name (and version).
    #[error("no definition `{name}`{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    DefinitionNotFound {
        /// The name asked for.
        name: String,
        /// The version asked for, if any.
        version: Option<i64>,
    },
    /// No saga has this id.
    #[error("no saga {0}")]
    SagaNotFound(Uuid),
    /// An idempotency key was used before for a different saga.
    #[error("idempotency key `{key}` was already used for saga {existing} with a different definition or input")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The saga it started.
        existing: Uuid,
    },
    /// The request does not fit the saga's state (cancel a completed saga, for example).
    #[error("saga {id} is {status}: {reason}")]
    IllegalTransition {
        /// The saga.
        id: Uuid,
        /// Its status.
        status: sagas::SagaStatus,
        /// What was refused.
        reason: String,
    },
    /// The coordinator runs as many sagas as it may; try again later.
    #[error("the coordinator is at its limit of {0} running sagas")]
    Overloaded(usize),
    /// Another coordinator owns the saga now; this one may no longer write it.
    #[error("saga {0}: ownership lost (fenced by a newer generation)")]
    Fenced(Uuid),
    /// The event log and the state machine disagree: a bug or a corrupted log.
    #[error("saga {id}: corrupted log")]
    CorruptLog {
        /// The saga.
        id: Uuid,
        /// What the state machine said.
        #[source]
        source: sagas::IllegalEvent,
    },
    /// The database failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        Error::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Error {
        Error::Store(format!("migration: {e}"))
    }
}

/// The coordinator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
