//! The pure core's one error type: what a decision refuses. The region crate turns each
//! into its own error of the same name.

/// Why the core refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("invalid region configuration: {0}")]
    Config(String),
    /// A request asked for something malformed or impossible.
    #[error("{0}")]
    BadRequest(String),
    /// An `add` whose result would be outside its bounds.
    #[error("{0}")]
    OutOfBounds(String),
    /// A peer sent something this region refuses.
    #[error("refused peer message: {0}")]
    Peer(String),
    /// Stored data did not decode.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
