//! What a home does for transactions: lays a transaction's intents on its keys after
//! validating them (prepare), turns them into versions or drops them (resolve), reads at a
//! timestamp, and settles the intents a read or a write of one of its keys meets by asking
//! their records.
//!
//! Locking: a prepare and a read at a timestamp hold the write locks of their keys (so a
//! strong write in progress finishes first); a resolve takes none. A prepare lays its
//! intents under its transaction's gate too, which a recovery's question takes
//! (`staged.rs`). A resolve advances the
//! clock past the commit timestamp before the versions appear, and versions and intents
//! change in one database transaction, so whoever holds a key's lock sees either the
//! intent (and asks the record) or the version (and writes above it).

use std::collections::BTreeSet;

use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::protocol::{Prepare, Prepared};
use regions_core::txn::{EXPIRY_MS, IntentKind, RecordEvent, TxnIntent, TxnStatus, locks};

use super::super::{KEY_LOCKS, LATEST, Region};
use crate::{Error, Result};

/// What settling a key's intents left.
#[derive(Debug)]
pub struct Settled {
    /// The undecided intents.
    pub held: Vec<TxnIntent>,
    /// Whether a read at a timestamp must wait for one of them and settle again.
    pub wait: bool,
}

/// Who meets an intent, which decides what it asks the intent's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meeting {
    /// A single-key write: it aborts the transaction unless it committed (writes never wait
    /// for a transaction).
    Write,
    /// Another transaction's prepare: it aborts only an expired transaction, and is refused
    /// by a live one.
    Prepare,
    /// A read at a timestamp: it pushes a pending writer above it.
    ReadAt(Timestamp),
    /// A strong read of the latest version: it sees a committed writer, and reads before a
    /// pending one (whose commit, the record's, comes after this read).
    ReadLatest,
}

impl Region {
    fn key_is_transactional(&self, key: &str) -> Result<()> {
        let placement = self.placement();
        if let Some(prefix) = placement.writes_anywhere(key) {
            return Err(Error::BadRequest(format!(
                "key {key:?} is under {prefix:?}, written anywhere: transactions need a key's home"
            )));
        }
        let home = placement.home(key).region;
        if home != self.name {
            return Err(Error::BadRequest(format!(
                "key {key:?} is homed in {home}, not here ({})",
                self.name
            )));
        }
        Ok(())
    }

    /// Settles the intents on `key` that `meeting` cannot pass (the caller holds the key's
    /// lock): asks each one's record and resolves it here once decided. Returns the
    /// undecided ones left (a prepare is refused by those it conflicts with), and whether a
    /// read at a timestamp must wait for one of them (a staging transaction that may still
    /// commit below the read: the caller lets go of the key's lock, waits
    /// [`super::staged::WAIT`] and settles again).
    pub async fn settle_intents(&self, key: &str, meeting: Meeting, own: Option<&str>) -> Result<Settled> {
        let mut left = Vec::new();
        let mut wait = false;
        let mut resolved = BTreeSet::new();
        for intent in self.store.txn_intents_on(key).await? {
            if own == Some(intent.txn.as_str()) || resolved.contains(&intent.txn) {
                continue;
            }
            let reading = matches!(meeting, Meeting::ReadAt(_) | Meeting::ReadLatest);
            if reading && intent.kind == IntentKind::Read {
                continue;
            }
            let expired = self.clock.physical_ms().saturating_sub(intent.prepared_ms) >= EXPIRY_MS;
            let event = match (meeting, expired) {
                (Meeting::Write, _) | (_, true) => RecordEvent::Abort,
                (Meeting::Prepare | Meeting::ReadLatest, false) => RecordEvent::Get,
                (Meeting::ReadAt(ts), false) => RecordEvent::Push { above: ts },
            };
            if let Meeting::ReadAt(ts) = meeting
                && intent.proposed > ts
            {
                // It commits at or above its proposal here, whatever happens: after this read.
                continue;
            }
            let answer = self
                .txn_record_event_at(&intent.record_home, &intent.txn, event)
                .await?;
            let status = match answer.status {
                TxnStatus::Staging { proposed } => match self.settle_staged(&intent, proposed, meeting).await? {
                    Some(status) => status,
                    None => {
                        wait = true;
                        answer.status
                    }
                },
                status => status,
            };
            match status {
                TxnStatus::Committed { commit_ts } => {
                    self.txn_resolve(&intent.txn, Some(commit_ts)).await?;
                    resolved.insert(intent.txn.clone());
                }
                TxnStatus::Aborted => {
                    self.txn_resolve(&intent.txn, None).await?;
                    resolved.insert(intent.txn.clone());
                }
                TxnStatus::Pending { .. } | TxnStatus::Staging { .. } => left.push(intent),
            }
        }
        Ok(Settled { held: left, wait })
    }

    /// Validates and lays a transaction's intents on keys homed here. Nothing is laid when
    /// one key conflicts.
    pub async fn txn_prepare(&self, p: &Prepare) -> Result<Prepared> {
        for (key, _) in &p.intents {
            self.key_is_transactional(key)?;
        }
        self.clock.update(p.read_ts)?;
        let stripes: BTreeSet<usize> = p.intents.iter().map(|(k, _)| self.key_stripe(k)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.key_locks[s].lock().await);
        }
        for (key, kind) in &p.intents {
            let held = self.settle_intents(key, Meeting::Prepare, Some(&p.txn)).await?.held;
            let latest = self.store.read(key, LATEST).await?.map(|v| v.ts);
            if let Err(conflict) = locks::check(&p.txn, p.read_ts, key, kind, latest, &held) {
                return Ok(Prepared::Conflict(conflict));
            }
        }
        let refused = || {
            Prepared::Conflict(locks::Conflict {
                key: p.intents.first().map(|(k, _)| k.clone()).unwrap_or_default(),
                with: None,
                newer: None,
            })
        };
        let _gate = self.txn_gate(&p.txn).lock().await;
        let parallel = !p.homes.is_empty();
        match self.store.txn_record(&p.txn).await? {
            // Aborted before this prepare came (by a recovery that asked here, or at its
            // record): it never prepares.
            Some(TxnStatus::Aborted) => return Ok(refused()),
            // A repeat of a prepare after the record committed: nothing to lay again (the
            // first one's hold stays until its intents are resolved).
            Some(TxnStatus::Committed { commit_ts }) => {
                return Ok(Prepared::Prepared {
                    proposed: commit_ts,
                    parallel,
                    copy: None,
                });
            }
            Some(TxnStatus::Pending { .. } | TxnStatus::Staging { .. }) | None => {}
        }
        let hold = self.txn_hold(&p.txn);
        let proposed = hold.ts;
        let prepared_ms = self.clock.physical_ms();
        let intents: Vec<TxnIntent> = p
            .intents
            .iter()
            .map(|(key, kind)| TxnIntent {
                txn: p.txn.clone(),
                key: key.clone(),
                kind: kind.clone(),
                record_home: p.record_home.clone(),
                homes: p.homes.clone(),
                proposed,
                prepared_ms,
            })
            .collect();
        self.store.txn_lay(&intents).await?;
        hold.keep();
        // A quorum keeps them (and the record staged below) before anyone is told
        // (`copies.rs`), the gateway counted if it keeps the copy this answer carries.
        let keeper = p.keeps_copy.then_some(p.from.as_str());
        if !p.stage {
            // Where the gateway commits explicitly at a record kept here, that commit's copy
            // holds them.
            let copy = if p.from == self.name && !parallel && p.record_home == self.name {
                None
            } else {
                self.txn_copy_out_keeping(&p.txn, keeper).await?
            };
            return Ok(Prepared::Prepared {
                proposed,
                parallel,
                copy,
            });
        }
        // The record is kept here: staged now, with every push it took so far.
        let staged = {
            let _one_at_a_time = self.records_lock.lock().await;
            self.record_event_locked(&p.txn, RecordEvent::Stage { proposed })
                .await?
        };
        match staged.status {
            TxnStatus::Staging { proposed } | TxnStatus::Committed { commit_ts: proposed } if !staged.refused => {
                let copy = self.txn_copy_out_keeping(&p.txn, keeper).await?;
                Ok(Prepared::Prepared {
                    proposed,
                    parallel: true,
                    copy,
                })
            }
            _ => {
                // Aborted meanwhile (a single-key write met its intent at another home):
                // what was just laid goes.
                self.txn_resolve(&p.txn, None).await?;
                Ok(refused())
            }
        }
    }

    /// Resolves `txn`'s intents here: versions at `commit_ts` if it committed, nothing if
    /// it aborted. Idempotent. Returns how many intents it resolved.
    pub async fn txn_resolve(&self, txn: &str, commit_ts: Option<Timestamp>) -> Result<u64> {
        if let Some(ts) = commit_ts {
            // Every later write here is above the versions about to appear.
            self.clock.update(ts)?;
        }
        self.txn_copies_resolving(txn, commit_ts).await?;
        let resolved = self.store.txn_resolve(txn, commit_ts, &self.name).await?;
        // Dropping the hold lets the closed timestamp pass, and wakes the log shippers.
        self.txn_holds.lock().expect("holds lock").remove(txn);
        self.txn_copies_resolved(txn, commit_ts, resolved).await?;
        Ok(resolved)
    }

    /// The version of `key` (homed here) visible at `ts`, after the intents in the way were
    /// settled: no transaction that commits later can commit at or below `ts`, and no write
    /// started later here takes a timestamp at or below it.
    pub async fn txn_read_at(&self, key: &str, ts: Timestamp) -> Result<Option<Version>> {
        self.key_is_transactional(key)?;
        self.clock.update(ts)?;
        loop {
            let lock = self.key_lock(key).lock().await;
            if !self.settle_intents(key, Meeting::ReadAt(ts), None).await?.wait {
                return self.store.read(key, ts).await;
            }
            drop(lock);
            tokio::time::sleep(super::staged::WAIT).await;
        }
    }

    /// The hold that keeps the closed timestamp below `txn`'s proposal here until it is
    /// resolved (created at its first prepare here, which keeps it once its intents are
    /// laid).
    fn txn_hold(&self, txn: &str) -> NewHold<'_> {
        let mut holds = self.txn_holds.lock().expect("holds lock");
        let created = !holds.contains_key(txn);
        let ts = holds.entry(txn.to_owned()).or_insert_with(|| self.begin_write()).ts;
        NewHold {
            region: self,
            txn: txn.to_owned(),
            created,
            ts,
        }
    }

    /// Holds the proposals of the intents a restart found (their transactions are still
    /// open: they may commit at their proposal).
    pub(crate) fn txn_hold_restored(&self, intents: &[TxnIntent]) {
        let mut holds = self.txn_holds.lock().expect("holds lock");
        for i in intents {
            holds.entry(i.txn.clone()).or_insert_with(|| self.hold_at(i.proposed));
        }
    }

    /// The gate of transaction `txn` (see `txn_gates`).
    pub(super) fn txn_gate(&self, txn: &str) -> &tokio::sync::Mutex<()> {
        let stripe = (regions_core::placement::hash(txn.as_bytes()) % KEY_LOCKS as u64) as usize;
        &self.txn_gates[stripe]
    }

    fn key_stripe(&self, key: &str) -> usize {
        (regions_core::placement::hash(key.as_bytes()) % KEY_LOCKS as u64) as usize
    }
}

/// A proposal's hold a prepare took: let go again if the prepare does not lay its intents
/// (it failed, or its request was dropped midway), unless an earlier prepare of the same
/// transaction had taken it.
struct NewHold<'a> {
    region: &'a Region,
    txn: String,
    created: bool,
    ts: Timestamp,
}

impl NewHold<'_> {
    /// The intents are laid: the hold stays until they are resolved.
    fn keep(mut self) {
        self.created = false;
    }
}

impl Drop for NewHold<'_> {
    fn drop(&mut self) {
        if self.created {
            self.region.txn_holds.lock().expect("holds lock").remove(&self.txn);
        }
    }
}
