//! The open transactions of the clients this region is the gateway of: each one's snapshot,
//! reads and buffered writes ([`regions_core::txn::Txn`]), until it commits, aborts, or is
//! left idle for [`IDLE_MS`]. They live in memory: a gateway that restarts forgets them
//! (none has laid an intent before its commit, so nothing is left behind).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use regions_core::txn::{IDLE_MS, Txn};

use crate::{Error, Result};

/// An open transaction.
#[derive(Debug, Clone)]
pub struct Session {
    /// The transaction.
    pub txn: Txn,
    /// When a request last touched it.
    touched: Instant,
}

#[derive(Debug)]
enum Slot {
    Open(Session),
    /// Committing, committed or aborted (said in the text), kept for [`IDLE_MS`] so that a
    /// late request hears why it is gone.
    Ended {
        why: String,
        at: Instant,
    },
}

/// The open transactions at this gateway.
#[derive(Debug, Default)]
pub struct Sessions {
    slots: Mutex<HashMap<String, Slot>>,
}

fn idle() -> Duration {
    Duration::from_millis(IDLE_MS)
}

impl Sessions {
    /// Opens `txn` (and forgets the slots idle for too long).
    pub fn open(&self, txn: Txn) {
        let mut slots = self.slots.lock().expect("sessions lock");
        slots.retain(|_, s| match s {
            Slot::Open(s) => s.touched.elapsed() < idle() * 2,
            Slot::Ended { at, .. } => at.elapsed() < idle(),
        });
        let id = txn.id.clone();
        slots.insert(
            id,
            Slot::Open(Session {
                txn,
                touched: Instant::now(),
            }),
        );
    }

    /// Runs `f` on open transaction `id`.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&mut Txn) -> T) -> Result<T> {
        let mut slots = self.slots.lock().expect("sessions lock");
        match slots.get_mut(id) {
            None => Err(Error::TxnNotFound(id.to_owned())),
            Some(Slot::Ended { why, .. }) => Err(Error::TxnGone {
                txn: id.to_owned(),
                why: why.clone(),
            }),
            Some(Slot::Open(s)) if s.touched.elapsed() >= idle() => {
                let why = format!("expired: left idle more than {IDLE_MS} ms");
                slots.insert(
                    id.to_owned(),
                    Slot::Ended {
                        why: why.clone(),
                        at: Instant::now(),
                    },
                );
                Err(Error::TxnGone {
                    txn: id.to_owned(),
                    why,
                })
            }
            Some(Slot::Open(s)) => {
                s.touched = Instant::now();
                Ok(f(&mut s.txn))
            }
        }
    }

    /// Ends open transaction `id` (`why`: what happened to it) and returns it.
    /// Atomic: of two concurrent commits, one gets the transaction and the other hears why
    /// it is gone.
    pub fn end(&self, id: &str, why: &str) -> Result<Txn> {
        let txn = self.with(id, |t| t.clone())?;
        let mut slots = self.slots.lock().expect("sessions lock");
        match slots.get(id) {
            Some(Slot::Open(_)) => {
                slots.insert(
                    id.to_owned(),
                    Slot::Ended {
                        why: why.to_owned(),
                        at: Instant::now(),
                    },
                );
                Ok(txn)
            }
            Some(Slot::Ended { why, .. }) => Err(Error::TxnGone {
                txn: id.to_owned(),
                why: why.clone(),
            }),
            None => Err(Error::TxnNotFound(id.to_owned())),
        }
    }

    /// Records why transaction `id` ended.
    pub fn ended(&self, id: &str, why: &str) {
        self.slots.lock().expect("sessions lock").insert(
            id.to_owned(),
            Slot::Ended {
                why: why.to_owned(),
                at: Instant::now(),
            },
        );
    }
}
