//! Counters at this region: an increment changes this region's component (the log ships
//! it), a read sums every component held here (see [`regions_core::counter`] for the merge).

use std::collections::BTreeMap;

use regions_core::counter::Component;
use regions_core::protocol::CounterResponse;

use crate::{Error, Result};

use super::Region;

impl Region {
    /// Adds `delta` to this region's component of counter `key`; the log ships it. A repeat
    /// of `op_id` here changes nothing and says `replayed`.
    pub async fn increment(&self, key: &str, delta: i64, op_id: Option<&str>) -> Result<CounterResponse> {
        if let Some(op_id) = op_id {
            regions_core::op_ids::check(op_id).map_err(|e| Error::BadRequest(format!("/op_id: {e}")))?;
        }
        if !self.membership.is_voter() {
            return Err(Error::BadRequest(format!(
                "{} is a replica-only member (it ships no log): send increments to another region",
                self.name
            )));
        }
        let guard = self.begin_write();
        let applied = self.store.increment(key, &self.name, guard.ts, delta, op_id).await?;
        drop(guard);
        Ok(CounterResponse {
            replayed: applied.is_none(),
            ..self.counter(key).await?
        })
    }

    /// Counter `key` as held here: the sum of every region's component.
    pub async fn counter(&self, key: &str) -> Result<CounterResponse> {
        let components: BTreeMap<String, Component> = self
            .store
            .counter(key)
            .await?
            .into_iter()
            .map(|c| (c.region, c.component))
            .collect();
        Ok(CounterResponse {
            key: key.to_owned(),
            value: components.values().map(|c| c.value()).fold(0i64, i64::saturating_add),
            components,
            served_by: self.name.clone(),
            replayed: false,
        })
    }
}
