//! A saga's state as its task takes it over, folded once: built by the start that wrote it,
//! or folded from the log by whoever resumes the saga (adoption, a retry, a lost
//! acknowledgement), with the times its root span needs.

use std::sync::Arc;

use sagas::{SagaDefinition, SagaEvent, SagaState};
use uuid::Uuid;

use crate::store::StoredEvent;
use crate::{Error, Result};

/// A saga's state as its task takes it over, folded once: built by the start that wrote
/// it, or folded from the log by whoever resumes it (adoption, a retry, a lost
/// acknowledgement).
pub(crate) struct Folded {
    pub(super) state: SagaState,
    /// When the saga began to unwind (Unix ms), if it did.
    pub(super) unwind_at_ms: Option<i64>,
    /// When an operator last retried it (Unix ms), if one did.
    pub(super) retried_at_ms: Option<i64>,
}

impl Folded {
    /// A new saga's state, as its start built and wrote it.
    pub(crate) fn new(state: SagaState) -> Folded {
        Folded {
            state,
            unwind_at_ms: None,
            retried_at_ms: None,
        }
    }

    /// Folds the stored log of saga `id`.
    pub(crate) fn replay(id: Uuid, def: Arc<SagaDefinition>, log: &[StoredEvent]) -> Result<Folded> {
        let mut folded = Folded::new(SagaState::new(def));
        for stored in log {
            folded.apply(id, &stored.event, stored.at_ms)?;
        }
        Ok(folded)
    }

    /// Applies `event`, written at `at_ms`.
    pub(crate) fn apply(&mut self, id: Uuid, event: &SagaEvent, at_ms: i64) -> Result<()> {
        let unwinding = self.state.unwind_cause().is_some();
        self.state
            .apply(event)
            .map_err(|source| Error::CorruptLog { id, source })?;
        if !unwinding && self.state.unwind_cause().is_some() {
            self.unwind_at_ms = Some(at_ms);
        }
        if let SagaEvent::RetryRequested {} = event {
            self.retried_at_ms = Some(at_ms);
        }
        Ok(())
    }

    /// The state.
    pub(crate) fn state(&self) -> &SagaState {
        &self.state
    }
}
