//! The error type of the saga core.

use crate::state::IllegalEvent;
use crate::validate::ValidationErrors;

/// Everything that can go wrong in the saga core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A definition or an input did not validate.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// An event does not fit the saga's state.
    #[error(transparent)]
    IllegalEvent(#[from] IllegalEvent),
}
