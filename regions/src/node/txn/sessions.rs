//! The open transactions of the clients this region is the gateway of: each one's snapshot,
//! reads and buffered writes ([`regions_core::txn::Txn`]), until it commits, aborts, or is
//! left idle for [`IDLE_MS`]. They live in memory: a gateway that restarts forgets them
//! (none has laid an intent before its commit, so nothing is left behind). On a region with
//! tokens each one belongs to the [`Caller`] that began it: only that caller may go on
//! with it (the API refuses others, 403).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use regions_core::txn::{IDLE_MS, Txn};

use crate::{Error, Result};

/// Who sent a request, on a region with tokens: a token, named by its place in the
/// region's list (never by its secret), or a member region by its certificate's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// An open transaction.
#[derive(Debug, Clone)]
pub struct Session {
    /// The transaction.
    pub txn: Txn,
    /// Who began it (`None`: a region without tokens, where anyone may go on with it).
    owner: Option<Caller>,
    /// When a request last touched it.
    touched: Instant,
}

#[derive(Debug)]
enum Slot {
    Open(Session),
    /// Committing, committed or aborted (said in the text), kept for [`IDLE_MS`] so that a
    /// late request hears why it is gone (its owner's only).
    Ended {
        why: String,
        at: Instant,
        owner: Option<Caller>,
    },
}

impl Slot {
    fn owner(&self) -> Option<&Caller> {
        match self {
            Slot::Open(s) => s.owner.as_ref(),
            Slot::Ended { owner, .. } => owner.as_ref(),
        }
    }
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
    /// Opens `txn` for `owner` (and forgets the slots idle for too long).
    pub fn open(&self, txn: Txn, owner: Option<Caller>) {
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
                owner,
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
                let owner = s.owner.clone();
                slots.insert(
                    id.to_owned(),
                    Slot::Ended {
                        why: why.clone(),
                        at: Instant::now(),
                        owner,
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
            Some(Slot::Open(s)) => {
                let owner = s.owner.clone();
                slots.insert(
                    id.to_owned(),
                    Slot::Ended {
                        why: why.to_owned(),
                        at: Instant::now(),
                        owner,
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
        let mut slots = self.slots.lock().expect("sessions lock");
        let owner = slots.get(id).and_then(Slot::owner).cloned();
        slots.insert(
            id.to_owned(),
            Slot::Ended {
                why: why.to_owned(),
                at: Instant::now(),
                owner,
            },
        );
    }

    /// Whether `caller` may go on with transaction `id` (open or ended): `Ok(false)` when
    /// another caller began it; `Err` when this region knows no transaction `id`.
    pub fn may(&self, id: &str, caller: Option<&Caller>) -> Result<bool> {
        let slots = self.slots.lock().expect("sessions lock");
        match slots.get(id) {
            None => Err(Error::TxnNotFound(id.to_owned())),
            Some(slot) => Ok(slot.owner().is_none_or(|owner| Some(owner) == caller)),
        }
    }
}
