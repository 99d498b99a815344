//! Counters that every region may increment (PN-counters, a CRDT): each region keeps its own
//! component, the total of its increments (`p`) and of its decrements (`n`), and only it
//! changes that component. Replicas merge components by per-region maximum, which is
//! commutative, associative and idempotent, so components arriving late, twice, or out of
//! order (through the log or anti-entropy) lose nothing: once every component reached every
//! region, all of them read the same value, the sum of every increment ever acknowledged.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Error, Result};

/// One region's component of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Component {
    /// The sum of its increments.
    pub p: i64,
    /// The sum of its decrements (as a positive number).
    pub n: i64,
}

impl Component {
    /// The component after adding `delta` (negative: a decrement).
    pub fn plus(self, delta: i64) -> Result<Component> {
        let overflow = || Error::BadRequest(format!("/increment: {delta} overflows the counter"));
        Ok(if delta >= 0 {
            Component {
                p: self.p.checked_add(delta).ok_or_else(overflow)?,
                ..self
            }
        } else {
            Component {
                n: self
                    .n
                    .checked_add(delta.checked_neg().ok_or_else(overflow)?)
                    .ok_or_else(overflow)?,
                ..self
            }
        })
    }

    /// The merge of two copies of one region's component: per-field maximum.
    pub fn merge(self, other: Component) -> Component {
        Component {
            p: self.p.max(other.p),
            n: self.n.max(other.n),
        }
    }

    /// Its contribution to the counter's value.
    pub fn value(self) -> i64 {
        self.p.saturating_sub(self.n)
    }

    /// The JSON text logged for it.
    pub fn to_json(self) -> String {
        serde_json::to_string(&self).unwrap_or_default()
    }

    /// Parses the logged JSON text.
    pub fn parse(text: Option<&str>) -> Result<Component> {
        text.and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| Error::Corrupt(format!("counter component {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn increments_and_decrements_go_to_their_own_fields() {
        let c = Component::default().plus(5).unwrap().plus(-2).unwrap();
        assert_eq!((c, c.value()), (Component { p: 5, n: 2 }, 3));
        assert!(Component { p: i64::MAX, n: 0 }.plus(1).is_err());
        assert!(Component::default().plus(i64::MIN).is_err());
        assert_eq!(Component::parse(Some(&c.to_json())).unwrap(), c);
        assert!(Component::parse(Some("nope")).is_err());
    }

    proptest! {
        /// Three regions increment concurrently; whatever subset of stale copies each replica
        /// merges, in whatever order, the total once every latest copy arrived is exact.
        #[test]
        fn merging_by_maximum_loses_no_increment(
            ops in proptest::collection::vec((0usize..3, -50i64..50), 1..40),
            order in proptest::collection::vec(0usize..40, 0..80),
        ) {
            let mut own = [Component::default(); 3];
            let mut history: Vec<(usize, Component)> = Vec::new();
            for (region, delta) in &ops {
                own[*region] = own[*region].plus(*delta).unwrap();
                history.push((*region, own[*region]));
            }
            let mut replica = [Component::default(); 3];
            for i in order.iter().filter(|i| **i < history.len()) {
                let (r, c) = history[*i];
                replica[r] = replica[r].merge(c);
            }
            for (r, c) in own.iter().enumerate() {
                replica[r] = replica[r].merge(*c).merge(*c);
            }
            let total: i64 = ops.iter().map(|(_, d)| d).sum();
            prop_assert_eq!(replica.iter().map(|c| c.value()).sum::<i64>(), total);
        }
    }
}
