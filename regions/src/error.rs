//! The crate's one error type.

use regions_core::hlc::{ClockError, Timestamp};

/// Everything that can go wrong in a region.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is unreadable or inconsistent.
    #[error("invalid region configuration: {0}")]
    Config(String),
    /// A request named something malformed (a key, a version, a parameter).
    #[error("{0}")]
    BadRequest(String),
    /// An `add` whose result would be outside its bounds.
    #[error("{0}")]
    OutOfBounds(String),
    /// The key has no live version (never written, or deleted) in the answering region's
    /// copy, which reflects every write acknowledged `staleness_bound_ms` before the read.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
        /// How stale the answering copy may be (0: the home's).
        staleness_bound_ms: u64,
    },
    /// A conditional write found another current version.
    #[error("key {key:?} is at version {current}, not {expected}")]
    VersionMismatch {
        /// The key.
        key: String,
        /// The version the caller expected (`0.0`: no live version).
        expected: Timestamp,
        /// The version it has (`0.0`: no live version).
        current: Timestamp,
    },
    /// A write whose op id its compensation cancelled before it arrived (see
    /// the node's `undo.rs`); it was not applied.
    #[error(
        "the write to {key:?} with op_id {op_id:?} was cancelled by its compensation (an undo that found it not applied); it was not applied"
    )]
    OpCancelled {
        /// The key.
        key: String,
        /// The cancelled op id.
        op_id: String,
    },
    /// A strong write did not reach its quorum in time; it was aborted and is visible nowhere.
    #[error(
        "write to {key:?} reached {acked} of the {needed} replica acknowledgements it needs within {timeout_ms} ms; it was not applied"
    )]
    QuorumNotReached {
        /// The key.
        key: String,
        /// Replicas that stored it durably in time.
        acked: usize,
        /// Replicas needed.
        needed: usize,
        /// The time allowed.
        timeout_ms: u64,
    },
    /// The home region of a key could not be reached to forward a request; a forwarded
    /// write may or may not have been applied.
    #[error("home region {region} is unreachable: {reason}")]
    HomeUnreachable {
        /// The home region.
        region: String,
        /// What failed.
        reason: String,
    },
    /// The local replica is staler than the read allows and the home region is unreachable.
    #[error(
        "the local copy of region {home}'s data may be {staleness_ms} ms stale (bound {max_staleness_ms} ms) and {home} is unreachable; pass allow_stale=true to accept it"
    )]
    TooStale {
        /// The key's home region.
        home: String,
        /// How stale the local copy may be.
        staleness_ms: u64,
        /// The bound asked for.
        max_staleness_ms: u64,
    },
    /// A read as of a timestamp whose versions were garbage-collected.
    #[error("versions before {horizon} have been garbage-collected (asked for {as_of})")]
    BeyondRetention {
        /// The timestamp asked for.
        as_of: Timestamp,
        /// The oldest timestamp still readable.
        horizon: Timestamp,
    },
    /// A transaction lost a conflict (or was aborted while it committed): nothing of it was
    /// applied.
    #[error("transaction {txn} was not committed: {detail}")]
    TxnConflict {
        /// The transaction.
        txn: String,
        /// The key it lost on.
        key: String,
        /// The transaction it lost to, when known.
        with: Option<String>,
        /// What happened.
        detail: String,
    },
    /// No transaction has this id at this region.
    #[error("no transaction {0} here (transactions are served by the region that began them)")]
    TxnNotFound(String),
    /// The transaction expired or already ended.
    #[error("transaction {txn} {why}")]
    TxnGone {
        /// The transaction.
        txn: String,
        /// Expired, committed or aborted.
        why: String,
    },
    /// A peer sent something this region refuses.
    #[error("refused peer message: {0}")]
    Peer(String),
    /// A peer's clock is too far ahead.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
    /// The schema could not be migrated.
    #[error("storage migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store could not be opened (its database unreachable, refused, or not migrated).
    #[error("opening the store ({store})")]
    StoreOpen {
        /// The store, as [`regions_core::config::Storage::describe`] names it (no password).
        store: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The store belongs to another region, or another process writes to it.
    #[error("{0}")]
    StoreTaken(String),
    /// Stored data did not decode.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// I/O outside the database (binding a socket, reading the config).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<regions_core::Error> for Error {
    /// A refusal of the pure core, as the error of the same name.
    fn from(error: regions_core::Error) -> Error {
        match error {
            regions_core::Error::Config(e) => Error::Config(e),
            regions_core::Error::BadRequest(e) => Error::BadRequest(e),
            regions_core::Error::OutOfBounds(e) => Error::OutOfBounds(e),
            regions_core::Error::Peer(e) => Error::Peer(e),
            regions_core::Error::Corrupt(e) => Error::Corrupt(e),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
