//! What travels on the wire: the public API's bodies and the messages between regions.
//! Every field is typed here; handlers never see raw JSON they must distrust.

use serde::{Deserialize, Serialize};

use crate::closed::ReadConsistency;
use crate::hlc::Timestamp;
use crate::placement::Reason;

/// The state of a replication log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// A strong write waiting for its quorum.
    Pending,
    /// Applied at the home; replicas apply it.
    Committed,
    /// A strong write that failed; replicas drop its intent.
    Aborted,
}

impl EntryState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Committed => "committed",
            EntryState::Aborted => "aborted",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<EntryState> {
        match s {
            "pending" => Some(EntryState::Pending),
            "committed" => Some(EntryState::Committed),
            "aborted" => Some(EntryState::Aborted),
            _ => None,
        }
    }
}

/// One write of a home region, as logged and shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its position in the home's log.
    pub seq: i64,
    /// The key.
    pub key: String,
    /// The version's timestamp.
    pub ts: Timestamp,
    /// The value as JSON text; `None` for a deletion.
    pub value: Option<String>,
    /// Its state.
    pub state: EntryState,
    /// A version of `key` (the default) or the origin's component of counter `key`.
    #[serde(default)]
    pub kind: EntryKind,
    /// The version this write replaced at its origin (tracked for keys written anywhere).
    #[serde(default)]
    pub prev: Option<VersionId>,
}

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A version of a key (`value`: its JSON text, `None` for a deletion).
    #[default]
    Version,
    /// The origin's component of a counter (`value`: `{"p": N, "n": N}`).
    Counter,
}

impl EntryKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Version => "version",
            EntryKind::Counter => "counter",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<EntryKind> {
        match s {
            "version" => Some(EntryKind::Version),
            "counter" => Some(EntryKind::Counter),
            _ => None,
        }
    }
}

/// A version's identity: its timestamp and the region that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionId {
    /// Its timestamp.
    pub ts: Timestamp,
    /// The region that executed the write.
    pub origin: String,
}

/// Log entries a replica will never receive: they were truncated before it acknowledged
/// them. It must repair them by anti-entropy before it trusts its closed timestamp again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Entries up to this sequence number are gone from the home's log.
    pub upto_seq: i64,
    /// Every one of them has a timestamp at or below this one.
    pub upto_ts: Timestamp,
}

/// A batch of a home's log, with the timestamp it closes (see [`crate::closed`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateBatch {
    /// The home region.
    pub from: String,
    /// Entries in log order, none of them pending.
    pub entries: Vec<LogEntry>,
    /// Every write of `from` at or below this is in these entries or earlier ones.
    pub closed: Timestamp,
    /// Every entry up to this sequence number that concerns the receiver was in this batch
    /// or an earlier one (entries of keys it holds no replica of are not sent).
    #[serde(default)]
    pub skip_to: Option<i64>,
    /// Entries truncated before the receiver acknowledged them.
    #[serde(default)]
    pub gap: Option<Gap>,
    /// The log position this batch follows: the receiver refuses it unless it applied
    /// everything up to there (batches are pipelined and may arrive out of order).
    #[serde(default)]
    pub after: Option<i64>,
}

/// A replica's answer to a batch or an intent: what it has durably applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReplicateAck {
    /// The last entry of the home applied (batches) or stored (intents).
    pub applied_seq: i64,
}

/// A strong write sent to a replica before its home commits it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    /// The home region.
    pub from: String,
    /// The pending entry.
    pub entry: LogEntry,
}

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
/// the undo of an earlier write by its op id (see [`crate::undo`]): exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// The addition.
    #[serde(default)]
    pub add: Option<crate::add::Add>,
    /// The undo.
    #[serde(default)]
    pub undo: Option<crate::undo::Undo>,
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
    pub undo: Option<crate::undo::Undo>,
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
    pub undo: Option<crate::undo::Undone>,
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

/// One region as seen from the region answering `GET /v1/regions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionStatus {
    /// Its name.
    pub name: String,
    /// Its address as configured here.
    pub address: String,
    /// True for the answering region.
    pub is_self: bool,
    /// The answering region is itself, or heard from it recently.
    pub healthy: bool,
    /// Milliseconds since the last successful exchange with it (`None`: never, or self).
    pub last_contact_ms_ago: Option<u64>,
    /// For a peer: the closed timestamp this region holds for it. For self: what it
    /// closes now.
    pub closed_ts: Option<String>,
    /// For a peer: how far behind real time our copy of its data may be, in milliseconds.
    pub replication_lag_ms: Option<u64>,
    /// For a peer: entries of our log it has not acknowledged yet.
    pub unacked_entries: Option<i64>,
    /// A voter (configured: homes keys) or a replica-only member (joined).
    #[serde(default)]
    pub role: Option<crate::membership::Role>,
    /// The failure detector's view: up, suspect or down (self: up).
    #[serde(default)]
    pub state: Option<crate::membership::Health>,
    /// For a peer: milliseconds since it was last heard from (a heartbeat sent or answered).
    #[serde(default)]
    pub last_heartbeat_ms_ago: Option<u64>,
    /// For a peer: versions and counter components anti-entropy fetched from it since
    /// this region started.
    #[serde(default)]
    pub anti_entropy_repaired: Option<u64>,
    /// For a peer: entries of its log were truncated before they reached us, and
    /// anti-entropy has not repaired them yet (our closed timestamp for it is frozen).
    #[serde(default)]
    pub anti_entropy_gap: Option<bool>,
    /// For a peer: the exchanges refused because the two clocks are further apart than
    /// `max_clock_offset_ms` (`peer_ahead`: refused here; `ours_ahead`: refused by it),
    /// the last of each side (see [`crate::skew`]). Empty when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_skew: Vec<crate::skew::ClockSkew>,
}
