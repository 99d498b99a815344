//! The health of the coordinator's link to its database, as its writes find it: `/readyz`
//! answers 503 while they fail.

use std::sync::Mutex;

use serde::Serialize;

use crate::{Error, Result};

/// The health of the coordinator's link to its database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Whether the last write succeeded.
    pub store_ok: bool,
    /// The last store error, while failing.
    pub last_error: Option<String>,
    /// Consecutive failed writes.
    pub failures: u64,
}

/// The current [`Health`], updated by every store call the executor makes.
pub(crate) struct HealthCell(Mutex<Health>);

impl Default for HealthCell {
    fn default() -> HealthCell {
        HealthCell(Mutex::new(Health {
            store_ok: true,
            ..Health::default()
        }))
    }
}

impl HealthCell {
    /// The health now.
    pub(crate) fn get(&self) -> Health {
        self.0.lock().expect("lock").clone()
    }

    /// Takes in the result of a store call: a success heals, a store error counts, other
    /// errors (a fenced write, say) say nothing about the link.
    pub(crate) fn record<T>(&self, result: &Result<T>) {
        let mut health = self.0.lock().expect("lock");
        match result {
            Ok(_) => {
                health.store_ok = true;
                health.last_error = None;
                health.failures = 0;
            }
            Err(Error::Store(message)) => {
                health.store_ok = false;
                health.last_error = Some(message.clone());
                health.failures += 1;
            }
            Err(_) => {}
        }
    }
}
