//! Writes at this region: a write of a key homed here (or written anywhere) runs under the
//! key's lock, takes a timestamp registered as pending until it committed or aborted (no
//! closed timestamp passes a pending write), and becomes visible only once its quorum
//! stored it, if strong (`quorum.rs`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use regions_core::hlc::Timestamp;
use regions_core::protocol::{WriteCommand, WriteConsistency, WriteResponse};

use super::txn::Meeting;
use super::{KEY_LOCKS, LATEST, Region, op_ids, quorum};
use crate::{Error, Result};

/// Keeps a write's timestamp among the pending ones until dropped.
pub(crate) struct PendingGuard {
    pending: Arc<Mutex<BTreeSet<Timestamp>>>,
    pub(crate) ts: Timestamp,
    logged: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending.lock().expect("pending lock").remove(&self.ts);
        self.logged.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Region {
    /// A timestamp for a new write, registered as pending so that no closed timestamp
    /// passes it until the guard drops (the write committed or aborted).
    pub(crate) fn begin_write(&self) -> PendingGuard {
        let mut pending = self.pending.lock().expect("pending lock");
        let ts = self.clock.now();
        pending.insert(ts);
        PendingGuard {
            pending: self.pending.clone(),
            ts,
            logged: self.log_changed.clone(),
        }
    }

    /// Registers `ts` (a proposal restored after a restart) as pending until the guard drops.
    pub(crate) fn hold_at(&self, ts: Timestamp) -> PendingGuard {
        self.pending.lock().expect("pending lock").insert(ts);
        PendingGuard {
            pending: self.pending.clone(),
            ts,
            logged: self.log_changed.clone(),
        }
    }

    /// A receiver woken whenever a write was logged and resolved (the log shippers wait on
    /// it).
    pub(crate) fn log_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log_changed.subscribe()
    }

    /// The clock's `now` and the earliest pending write, read together.
    pub(crate) fn now_and_earliest_pending(&self) -> (Timestamp, Option<Timestamp>) {
        let pending = self.pending.lock().expect("pending lock");
        (self.clock.now(), pending.first().copied())
    }

    /// The lock a write of `key` holds from its checks to its commit or abort.
    pub(crate) fn key_lock(&self, key: &str) -> &tokio::sync::Mutex<()> {
        &self.key_locks[(regions_core::placement::hash(key.as_bytes()) % KEY_LOCKS as u64) as usize]
    }

    /// Waits for every write in progress to finish (re-homing: after the placement changed,
    /// none of the moved keys can start another here).
    pub(crate) async fn drain_writes(&self) {
        for lock in &self.key_locks {
            drop(lock.lock().await);
        }
    }

    /// Executes a write of a key homed here, in a task of its own: a caller that goes away
    /// (a client or a forwarding region disconnecting) cannot cancel it between logging and
    /// committing or aborting, which would leave a pending entry that blocks the log.
    pub async fn write_at_home(self: &Arc<Self>, key: &str, cmd: &WriteCommand) -> Result<WriteResponse> {
        let (region, key, cmd) = (self.clone(), key.to_owned(), cmd.clone());
        tokio::spawn(async move { region.execute_write(&key, &cmd).await })
            .await
            .map_err(|e| Error::Corrupt(format!("write task failed: {e}")))?
    }

    async fn execute_write(&self, key: &str, cmd: &WriteCommand) -> Result<WriteResponse> {
        let home = self.home(key).region;
        if !self.executes_writes(key) {
            return Err(Error::BadRequest(format!(
                "key {key:?} is homed in {home}, not here ({})",
                self.name
            )));
        }
        let _lock = self.key_lock(key).lock().await;
        if !self.executes_writes(key) {
            // Re-homed while this write waited: the new home takes it.
            return Err(Error::HomeUnreachable {
                region: self.home(key).region,
                reason: "the key's range was re-homed while this write waited; it was not applied, retry".into(),
            });
        }
        if self.placement().writes_anywhere(key).is_none() {
            // A transaction's intent on the key: committed, it becomes a version first (an
            // undo then sees it); else this write aborts it (a single write never waits for
            // a transaction).
            self.settle_intents(key, Meeting::Write, None).await?;
        }
        if let Some(undo) = &cmd.undo {
            return super::undo::undo_locked(self, key, &home, cmd, undo).await;
        }
        self.write_locked(key, &home, cmd).await
    }

    /// Executes a write of a key homed here (or written anywhere), its write lock held and
    /// the transactions' intents on it settled.
    pub(super) async fn write_locked(&self, key: &str, home: &str, cmd: &WriteCommand) -> Result<WriteResponse> {
        if let Some(prefix) = self.placement().writes_anywhere(key).map(str::to_owned) {
            return self.write_anywhere(key, home, &prefix, cmd).await;
        }
        // An op id seen before: answer with the first write's result (regions_core::op_ids).
        let op = op_ids::before_write(self, key, cmd).await?;
        if let Some(mut replay) = op.replay {
            if let Some(add) = &cmd.add {
                replay.value = add.result_from(replay.previous.as_ref().map(|p| &p.value));
            }
            return Ok(replay);
        }
        // The key's version now, read once for the checks below (with an op id, read already).
        let current = if cmd.op_id.is_some() {
            op.current
        } else if cmd.if_version.is_some() || cmd.add.is_some() {
            self.store.read(key, LATEST).await?
        } else {
            None
        };
        if let Some(expected) = cmd.if_version {
            let live = current
                .as_ref()
                .filter(|v| v.value.is_some())
                .map_or(Timestamp::default(), |v| v.ts);
            if live != expected {
                return Err(Error::VersionMismatch {
                    key: key.to_owned(),
                    expected,
                    current: live,
                });
            }
        }
        // An add is computed here, under the key's lock: no writer can come in between.
        let computed;
        let (cmd, added) = match &cmd.add {
            Some(add) => {
                let value = add.apply(key, current.as_ref())?;
                computed = WriteCommand {
                    value: Some(value.to_string()),
                    add: None,
                    ..cmd.clone()
                };
                (&computed, Some(value))
            }
            None => (cmd, None),
        };
        let guard = self.begin_write();
        let ts = guard.ts;
        let previous = op_ids::prepare_write(self, key, cmd, ts, current.as_ref()).await?;
        match cmd.consistency {
            WriteConsistency::Async => {
                self.store
                    .write_committed(key, ts, cmd.value.as_deref(), &self.name)
                    .await?;
            }
            WriteConsistency::Strong => {
                let seq = self.store.log_pending(key, ts, cmd.value.as_deref()).await?;
                let outcome = match quorum::store_intents(self, key, seq, ts, cmd.value.as_deref()).await {
                    Ok(()) => {
                        self.store
                            .commit_pending(seq, key, ts, cmd.value.as_deref(), &self.name)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = outcome {
                    // Never visible: the version was not inserted. The abort is shipped so
                    // that replicas drop the intent.
                    if let Err(abort) = self.store.abort_pending(seq).await {
                        tracing::error!(key, seq, error = %abort, "could not abort a failed strong write; a restart will");
                    }
                    return Err(e);
                }
            }
        }
        drop(guard);
        Ok(WriteResponse {
            key: key.to_owned(),
            version: ts.to_string(),
            home_region: self.name.clone(),
            served_by: self.name.clone(),
            consistency: cmd.consistency,
            previous,
            value: added,
            replayed: false,
            undo: None,
        })
    }

    /// An async write of a key written anywhere, executed here (see [`regions_core::conflict`]).
    async fn write_anywhere(&self, key: &str, home: &str, prefix: &str, cmd: &WriteCommand) -> Result<WriteResponse> {
        if cmd.add.is_some() {
            return Err(Error::BadRequest(format!(
                "/add: keys under {prefix:?} are written anywhere and merged by last-writer-wins, which \
                 would lose additions: use a counter (POST /v1/counters/{{key}})"
            )));
        }
        if cmd.consistency == WriteConsistency::Strong || cmd.if_version.is_some() {
            return Err(Error::BadRequest(format!(
                "/consistency: keys under {prefix:?} are written anywhere: send \"consistency\": \"async\" and no \
                 if_version (concurrent writes are merged by last-writer-wins)"
            )));
        }
        // An op id is remembered by the region that executed the write: a retry sent there
        // is answered with the first result (one sent elsewhere writes again).
        let op = op_ids::before_write(self, key, cmd).await?;
        if let Some(replay) = op.replay {
            return Ok(WriteResponse {
                home_region: home.to_owned(),
                ..replay
            });
        }
        let guard = self.begin_write();
        let ts = guard.ts;
        let previous = op_ids::prepare_write(self, key, cmd, ts, op.current.as_ref()).await?;
        self.store
            .write_anywhere(key, ts, cmd.value.as_deref(), &self.name, prefix)
            .await?;
        drop(guard);
        Ok(WriteResponse {
            key: key.to_owned(),
            version: ts.to_string(),
            home_region: home.to_owned(),
            served_by: self.name.clone(),
            consistency: WriteConsistency::Async,
            previous,
            value: None,
            replayed: false,
            undo: None,
        })
    }
}
