//! Reads: where one is served (here, at the home, or refused as too stale) and the local
//! answer with its staleness bound.

use regions_core::closed::{self, ReadConsistency, ReadPlan};
use regions_core::hlc::Timestamp;
use regions_core::mvcc::Version;
use regions_core::protocol::ReadResponse;

use crate::{Error, Result};

use super::txn::Meeting;
use super::{LATEST, Region};

/// A read as asked.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest {
    /// Strong or bounded staleness.
    pub consistency: ReadConsistency,
    /// The staleness bound (bounded-staleness reads).
    pub max_staleness_ms: u64,
    /// Accept a staler local answer when the home is unreachable.
    pub allow_stale: bool,
    /// Read the version visible at this timestamp instead of the latest.
    pub as_of: Option<Timestamp>,
}

impl Region {
    /// The closed timestamp reads of `key` may rely on here, and whether this region is its
    /// only source: for a key written anywhere, the oldest over every other replica. `None`
    /// for a source whose clock is suspect ([`Region::clock_suspect`]).
    fn closed_for_key(&self, key: &str, home: &str) -> (bool, Option<Timestamp>) {
        let placement = self.placement();
        if placement.writes_anywhere(key).is_none() {
            return (home == self.name, self.closed_for_reads(home));
        }
        let others: Vec<Option<Timestamp>> = self
            .peers
            .iter()
            .filter(|p| placement.replicates_to(key, &p.name))
            .map(|p| self.closed_for_reads(&p.name))
            .collect();
        let oldest = others.iter().try_fold(LATEST, |m, c| c.map(|c| m.min(c)));
        (others.is_empty(), oldest)
    }

    /// The closed timestamp of `home` a read may rely on: none while `home`'s clock is
    /// suspect, since a bound computed from it would not hold.
    fn closed_for_reads(&self, home: &str) -> Option<Timestamp> {
        if home != self.name && self.clock_suspect(home) {
            return None;
        }
        self.closed_for(home)
    }

    /// Decides where a read is served: here (`Ok(Some)`), or at the home (`Ok(None)`).
    pub async fn read_here(&self, key: &str, req: ReadRequest) -> Result<Option<ReadResponse>> {
        let home = self.home(key).region;
        if !self.placement().replicates_to(key, &self.name) {
            // Not a replica of this key (a rule's replica set): the home answers.
            return Ok(None);
        }
        if home == self.name && self.placement().writes_anywhere(key).is_none() {
            // A transaction's intent: seen if its record says committed; pushed above an
            // `as_of` read if it is still pending (it then commits after it).
            // A staging one that may commit below an `as_of` read is waited for.
            let meeting = req.as_of.map_or(Meeting::ReadLatest, Meeting::ReadAt);
            while self.settle_intents(key, meeting, None).await?.wait {
                tokio::time::sleep(super::txn::WAIT).await;
            }
        }
        let (only_source, closed) = self.closed_for_key(key, &home);
        if let Some(as_of) = req.as_of {
            let horizon = self.gc_horizon();
            if as_of < horizon {
                return Err(Error::BeyondRetention { as_of, horizon });
            }
            let fresh = only_source || home == self.name || closed.is_some_and(|c| c >= as_of);
            return if fresh {
                self.read_local(key, &home, as_of, 0, req, false).await.map(Some)
            } else {
                Ok(None)
            };
        }
        if home == self.name && !only_source {
            // A key written anywhere, at its nominal home: the local copy is the answer,
            // with the staleness of the other replicas' writes.
            let bound = closed.map_or(u64::MAX, |c| {
                closed::staleness_bound_ms(c, self.clock.physical_ms(), self.config.max_clock_offset_ms)
            });
            let stale = req.consistency == ReadConsistency::BoundedStaleness && bound > req.max_staleness_ms;
            if stale && !req.allow_stale {
                // Nowhere fresher to send it: the stalest other replica is the one to blame.
                let placement = self.placement();
                let stalest = self
                    .peers
                    .iter()
                    .filter(|p| placement.replicates_to(key, &p.name))
                    .min_by_key(|p| self.closed_for(&p.name))
                    .map_or_else(|| home.clone(), |p| p.name.clone());
                return Err(Error::TooStale {
                    home: stalest,
                    staleness_ms: bound,
                    max_staleness_ms: req.max_staleness_ms,
                });
            }
            return self.read_local(key, &home, LATEST, bound, req, stale).await.map(Some);
        }
        let plan = closed::plan_read(
            req.consistency,
            only_source,
            req.max_staleness_ms,
            closed,
            self.clock.physical_ms(),
            self.config.max_clock_offset_ms,
        );
        match plan {
            ReadPlan::Local { staleness_bound_ms } => self
                .read_local(key, &home, LATEST, staleness_bound_ms, req, false)
                .await
                .map(Some),
            ReadPlan::Forward { .. } => Ok(None),
        }
    }

    /// The fallback when the home cannot be reached: a stale local answer if the caller
    /// accepts one, else the error that says why not.
    pub async fn read_unreachable_home(&self, key: &str, req: ReadRequest, reason: String) -> Result<ReadResponse> {
        let home = self.home(key).region;
        if !self.placement().replicates_to(key, &self.name) {
            return Err(Error::HomeUnreachable { region: home, reason });
        }
        let staleness_ms = self.closed_for_key(key, &home).1.map_or(u64::MAX, |c| {
            closed::staleness_bound_ms(c, self.clock.physical_ms(), self.config.max_clock_offset_ms)
        });
        match (req.consistency, req.allow_stale) {
            (ReadConsistency::BoundedStaleness, true) => {
                self.read_local(key, &home, LATEST, staleness_ms, req, true).await
            }
            (ReadConsistency::BoundedStaleness, false) => Err(Error::TooStale {
                home,
                staleness_ms,
                max_staleness_ms: req.max_staleness_ms,
            }),
            (ReadConsistency::Strong, _) => Err(Error::HomeUnreachable { region: home, reason }),
        }
    }

    async fn read_local(
        &self,
        key: &str,
        home: &str,
        as_of: Timestamp,
        staleness_bound_ms: u64,
        req: ReadRequest,
        stale: bool,
    ) -> Result<ReadResponse> {
        let version = self.store.read(key, as_of).await?;
        let (ts, text) = match version {
            Some(Version { ts, value: Some(text) }) => (ts, text),
            Some(Version { value: None, .. }) | None => {
                return Err(Error::NotFound {
                    key: key.to_owned(),
                    staleness_bound_ms,
                });
            }
        };
        let value = serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("value of {key:?}: {e}")))?;
        Ok(ReadResponse {
            key: key.to_owned(),
            value,
            version: ts.to_string(),
            home_region: home.to_owned(),
            served_by: self.name.clone(),
            staleness_bound_ms,
            stale,
            consistency: req.consistency,
        })
    }
}
