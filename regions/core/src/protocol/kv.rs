//! The public API's bodies: writes, reads, placement, counters and conflict counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::closed::ReadConsistency;
use crate::counter::Component;
use crate::hlc::Timestamp;
use crate::placement::Reason;

/// The consistency of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// The home commits once the quorum stored it; linearizable.
    #[default]
    Strong,
    /// The home commits and answers at once, and ships it afterwards.
    Async,
}

/// `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The value.
    pub value: serde_json::Value,
    /// Strong (default) or async.
    #[serde(default)]
    pub consistency: WriteConsistency,
    /// Write only if the current version is this one (`0.0`: only if the key has no live value).
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub if_version: Option<String>,
    /// Makes the write idempotent: a repeat with the same op id is answered with the first
    /// one's result and writes nothing (see [`crate::op_ids`]).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
}

/// `PATCH /v1/kv/{key}`: an addition applied by the key's home (see [`crate::add`]), or
/// the undo of an earlier write by its op id (see [`Undo`]): exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// The addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<crate::add::Add>,
    /// The undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
    /// Strong (default) or async.
    #[serde(default)]
    pub consistency: WriteConsistency,
    /// Apply only if the current version is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub if_version: Option<String>,
    /// Makes the addition idempotent, as for `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
}

/// The query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `strong` (the default) or `async`.
    #[serde(default)]
    #[param(inline)]
    pub consistency: WriteConsistency,
    /// Delete only if the current version is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub if_version: Option<String>,
    /// Makes the deletion idempotent, as for `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
}

/// The query of `GET /v1/kv/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// `strong` (the default: linearizable, served by the home) or `bounded_staleness`.
    #[serde(default = "strong")]
    #[param(inline)]
    pub consistency: ReadConsistency,
    /// `bounded_staleness` reads (and required by them): how stale the answer may be, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 0, maximum = 31_536_000_000_u64)]
    pub max_staleness_ms: Option<u64>,
    /// Accept an answer staler than asked for when the home cannot be reached (the answer
    /// says `"stale": true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_stale: bool,
    /// Read the version visible at this timestamp (`WALL_MS.LOGICAL`) instead of the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub as_of: Option<String>,
    /// Strong reads of the latest version only: also say whether a write with this op id
    /// was applied (`"op"`: what it did, or `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
}

impl ReadQuery {
    /// A read of the latest version at `consistency`, with nothing else set.
    pub fn new(consistency: ReadConsistency) -> ReadQuery {
        ReadQuery {
            consistency,
            max_staleness_ms: None,
            allow_stale: false,
            as_of: None,
            op_id: None,
        }
    }
}

fn strong() -> ReadConsistency {
    ReadConsistency::Strong
}

/// A write as the home region executes it (forwarded between regions as is).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteCommand {
    /// The value as JSON text; `None` deletes.
    pub value: Option<String>,
    /// Strong or async.
    pub consistency: WriteConsistency,
    /// The expected current version.
    pub if_version: Option<Timestamp>,
    /// The write's op id, if it has one.
    #[serde(default)]
    pub op_id: Option<String>,
    /// An addition computed by the home from the live value (`value` is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<crate::add::Add>,
    /// The undo of an earlier write (`value` and `add` are then ignored); forwarded on a
    /// route of its own, so that a home that does not know it refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
}

/// The undo of the write whose op id is `op_id`: the compensation of a saga step whose
/// write may or may not have been applied. The key's home undoes the write if it was
/// applied, or cancels its op id if it was not, so that it never applies (`op-cancelled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    /// The op id of the write to undo.
    #[schema(min_length = 1, max_length = 512)]
    pub op_id: String,
    /// For an `add`: the inverse addition (bounds are not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<crate::add::Add>,
}

/// What an undo found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Undone {
    /// The op id of the write it undid or cancelled.
    pub op_id: String,
    /// Whether that write had been applied (and is now undone); `false`: it was not, and is
    /// now cancelled.
    pub applied: bool,
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WriteResponse {
    /// The key.
    pub key: String,
    /// The new version (`WALL_MS.LOGICAL`).
    pub version: String,
    /// The key's home region, which committed it.
    pub home_region: String,
    /// The region that took the request.
    pub served_by: String,
    /// The write's consistency.
    pub consistency: WriteConsistency,
    /// Writes with an op id: the live version this write replaced (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<crate::op_ids::Previous>,
    /// For an `add`: the value it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// True when this answers a repeat of a write already applied (same op id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// For an undo: what it found of the write it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undone>,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadResponse {
    /// The key.
    pub key: String,
    /// The value.
    pub value: serde_json::Value,
    /// Its version (`WALL_MS.LOGICAL`).
    pub version: String,
    /// The key's home region.
    pub home_region: String,
    /// The region whose storage answered.
    pub served_by: String,
    /// The answer reflects every write acknowledged at least this long before the read
    /// (0: linearizable).
    pub staleness_bound_ms: u64,
    /// True when the caller accepted an answer staler than it asked for.
    pub stale: bool,
    /// The consistency asked for.
    pub consistency: ReadConsistency,
}

/// `GET /v1/placement/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlacementResponse {
    /// The key.
    pub key: String,
    /// Its home region.
    pub home_region: String,
    /// Why: a rule (with its prefix) or the hash ring (with the position).
    pub reason: serde_json::Value,
}

impl PlacementResponse {
    /// From a placement decision.
    pub fn new(key: &str, region: String, reason: &Reason) -> PlacementResponse {
        PlacementResponse {
            key: key.to_owned(),
            home_region: region,
            reason: serde_json::to_value(reason).unwrap_or_default(),
        }
    }
}

/// `POST /v1/counters/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementRequest {
    /// How much to add (negative: subtract): an integer in 64 bits (`3.0` is taken for `3`
    /// within 2^53).
    #[serde(deserialize_with = "whole_number")]
    pub increment: i64,
    /// An idempotency key: a repeat of this increment at the same region changes nothing.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
}

/// A counter as one region holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CounterResponse {
    /// The counter's key.
    pub key: String,
    /// The sum of every component held here.
    pub value: i64,
    /// Each region's component.
    pub components: BTreeMap<String, Component>,
    /// The region that answered (counters are read locally).
    pub served_by: String,
    /// True when this answers a repeat of an increment already applied (same op id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// `GET /v1/conflicts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConflictsResponse {
    /// The answering region.
    pub region: String,
    /// Per rule whose keys are written anywhere: concurrent writes that lost.
    pub prefixes: Vec<PrefixConflicts>,
}

/// Overwritten concurrent writes under one rule prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrefixConflicts {
    /// The rule's prefix.
    pub prefix: String,
    /// Concurrent writes (of keys under it) overwritten by last-writer-wins, as counted
    /// from the versions this region holds.
    pub overwritten: i64,
}

/// A JSON number with no fraction that fits in an `i64`, written as an integer or not
/// (`3.0`): JSON Schema's `integer`, which the OpenAPI document promises.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    // Written with a fraction, or an integer past 64 bits (which JSON parsing turns into a
    // float): taken only where a float holds every whole number exactly, so that nothing
    // past `i64` is rounded into it.
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (-EXACT..=EXACT).contains(&f) => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number within 64 bits"
        ))),
    }
}

/// An optional count of milliseconds written as a [`whole_number`] (`2204.0` is `2204`);
/// `null` or absent is `None`.
pub(crate) fn whole_millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let n = whole_number(number).map_err(serde::de::Error::custom)?;
    u64::try_from(n)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{n} is below 0")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_increment_is_any_whole_number_in_64_bits() {
        let parse = |text: &str| serde_json::from_str::<IncrementRequest>(text).map(|r| r.increment);
        assert_eq!(parse(r#"{"increment": 3}"#).unwrap(), 3);
        assert_eq!(parse(r#"{"increment": -103442.0}"#).unwrap(), -103_442);
        assert_eq!(parse(r#"{"increment": -9223372036854775808}"#).unwrap(), i64::MIN);
        assert!(parse(r#"{"increment": 1.5}"#).is_err());
        assert!(parse(r#"{"increment": 9223372036854775808}"#).is_err());
        assert!(parse(r#"{"increment": -9223372036854775809}"#).is_err());
        assert!(parse(r#"{"increment": 1e19}"#).is_err());
    }
}
