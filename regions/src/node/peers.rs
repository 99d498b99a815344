//! What a region keeps about each other region: how to reach it, when it last answered,
//! what it acknowledged of our log, the closed timestamp we hold for it, and what
//! anti-entropy repaired from it.

use std::time::Instant;

use regions_core::hlc::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Region;
use crate::{Error, Result};

/// Another region as this one reaches it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Its base URL.
    pub address: String,
}

impl Region {
    /// Posts `body` to `path` at `peer` and decodes its answer; a failure to reach it, a
    /// refusal or an answer that does not decode is [`Error::Peer`] naming the peer.
    pub(crate) async fn post_to_peer<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        peer: &Peer,
        path: &str,
        body: &B,
    ) -> Result<R> {
        let failed = |e: reqwest::Error| Error::Peer(format!("{}: {e}", peer.name));
        let response = self
            .http
            .post(format!("{}{path}", peer.address))
            .json(body)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(Error::Peer(format!("{} answered {}", peer.name, response.status())));
        }
        response.json().await.map_err(failed)
    }

    /// The configured peer called `name`.
    pub fn peer(&self, name: &str) -> Result<&Peer> {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Peer(format!("unknown region {name:?}")))
    }

    /// Notes a successful exchange with `peer`.
    pub(crate) fn touch(&self, peer: &str) {
        self.contact
            .lock()
            .expect("contact lock")
            .insert(peer.to_owned(), Instant::now());
    }

    /// Milliseconds since the last successful exchange with `peer` (`None`: never).
    pub fn last_contact_ms(&self, peer: &str) -> Option<u64> {
        self.contact
            .lock()
            .expect("contact lock")
            .get(peer)
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The log position `peer` acknowledged.
    pub(crate) fn acked_by(&self, peer: &str) -> i64 {
        self.acked.lock().expect("acked lock").get(peer).copied().unwrap_or(0)
    }

    /// Records that `peer` acknowledged the log up to `seq`.
    pub(crate) fn set_acked(&self, peer: &str, seq: i64) {
        self.acked.lock().expect("acked lock").insert(peer.to_owned(), seq);
    }

    /// The closed timestamp this region holds for `home` (`None`: never heard from it).
    pub fn closed_for(&self, home: &str) -> Option<Timestamp> {
        self.closed.lock().expect("closed lock").get(home).copied()
    }

    /// Sets the closed timestamp reads use for `home`.
    pub(crate) fn set_closed(&self, home: &str, closed: Timestamp) {
        self.closed.lock().expect("closed lock").insert(home.to_owned(), closed);
    }

    /// Holds the replica states still while one is written and the closed timestamp reads
    /// use is set from it (log shipping and anti-entropy both change them).
    pub(crate) async fn lock_replica_states(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.replica_lock.lock().await
    }

    /// Items anti-entropy fetched from `peer` that were new here, since this region started.
    pub fn repaired(&self, peer: &str) -> u64 {
        self.repaired
            .lock()
            .expect("repaired lock")
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    /// Counts `n` more items repaired from `peer`.
    pub(crate) fn add_repaired(&self, peer: &str, n: u64) {
        *self
            .repaired
            .lock()
            .expect("repaired lock")
            .entry(peer.to_owned())
            .or_default() += n;
    }
}
