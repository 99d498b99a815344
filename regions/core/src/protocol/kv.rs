//! The public API's bodies: writes, reads, placement, counters and conflict counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::closed::ReadConsistency;
use crate::counter::Component;
use crate::hlc::Timestamp;
use crate::placement::Reason;

/// The consistency of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// The home commits once the quorum stored it; linearizable.
    #[default]
    Strong,
    /// The home commits and answers at once, and ships it afterwards.
    Async,
}

/// `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The value.
    pub value: serde_json::Value,
    /// Strong (default) or async.
    #[serde(default)]
    pub consistency: WriteConsistency,
    /// Write only if the current version is this one (`0.0`: only if the key has no live value).
    #[serde(default)]
    pub if_version: Option<String>,
    /// Makes the write idempotent: a repeat with the same op id is answered with the first
    /// one's result and writes nothing (see [`crate::op_ids`]).
    #[serde(default)]
    pub op_id: Option<String>,
}

/// `PATCH /v1/kv/{key}`: an addition applied by the key's home (see [`crate::add`]), or
/// the undo of an earlier write by its op id (see [`Undo`]): exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// The addition.
    #[serde(default)]
    pub add: Option<crate::add::Add>,
    /// The undo.
    #[serde(default)]
    pub undo: Option<Undo>,
    /// Strong (default) or async.
    #[serde(default)]
    pub consistency: WriteConsistency,
    /// Apply only if the current version is this one.
    #[serde(default)]
    pub if_version: Option<String>,
    /// Makes the addition idempotent, as for `PUT`.
    #[serde(default)]
    pub op_id: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    /// The op id of the write to undo.
    pub op_id: String,
    /// For an `add`: the inverse addition (bounds are not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<crate::add::Add>,
}

/// What an undo found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undone {
    /// The op id of the write it undid or cancelled.
    pub op_id: String,
    /// Whether that write had been applied (and is now undone); `false`: it was not, and is
    /// now cancelled.
    pub applied: bool,
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementRequest {
    /// How much to add (negative: subtract).
    pub increment: i64,
    /// An idempotency key: a repeat of this increment at the same region changes nothing.
    #[serde(default)]
    pub op_id: Option<String>,
}

/// A counter as one region holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictsResponse {
    /// The answering region.
    pub region: String,
    /// Per rule whose keys are written anywhere: concurrent writes that lost.
    pub prefixes: Vec<PrefixConflicts>,
}

/// Overwritten concurrent writes under one rule prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixConflicts {
    /// The rule's prefix.
    pub prefix: String,
    /// Concurrent writes (of keys under it) overwritten by last-writer-wins, as counted
    /// from the versions this region holds.
    pub overwritten: i64,
}
