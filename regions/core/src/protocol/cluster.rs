//! The cluster: the regions' status, membership (joins and heartbeats), and re-homing a
//! key range.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hlc::Timestamp;

/// One region as seen from the region answering `GET /v1/regions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
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
    pub role: Option<Role>,
    /// The failure detector's view: up, suspect or down (self: up).
    #[serde(default)]
    pub state: Option<Health>,
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
    /// the last of each side. Empty when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_skew: Vec<ClockSkew>,
}

/// Which end of an exchange refused for clock skew a region was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkewSide {
    /// The peer's timestamps were too far ahead of this region's clock: refused here.
    PeerAhead,
    /// This region's timestamps were too far ahead of the peer's clock: refused there.
    OursAhead,
}

/// The last refusal for clock skew of one side for one peer, as `/v1/regions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClockSkew {
    /// Which side refused.
    pub side: SkewSide,
    /// Why, as the refusing clock said it (how far ahead, the maximum offset).
    pub error: String,
    /// Refusals so far, since this region started.
    pub count: u64,
    /// Milliseconds since the last one.
    pub last_ms_ago: u64,
}

/// A member's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// In the configuration file: homes keys, counts toward quorums.
    Voter,
    /// Joined: holds a replica of every home's keys, homes none.
    Replica,
}

/// What the failure detector thinks of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Heard from within `suspect_after_ms`.
    Up,
    /// Not heard from for `suspect_after_ms`, or not yet heard from.
    Suspect,
    /// Not heard from for `down_after_ms`.
    Down,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its base URL.
    pub address: String,
    /// Voter or replica-only.
    pub role: Role,
    /// The entry's version: the wall-clock millisecond it joined (voters: 0).
    pub version: u64,
}

/// `POST /internal/v1/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining region's name.
    pub name: String,
    /// Its base URL.
    pub address: String,
}

/// The answer to a join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster's configuration file, as the answering member has it.
    pub cluster_config: String,
    /// The replica-only members known there (the joining one among them).
    pub members: Vec<Member>,
}

/// `POST /internal/v1/heartbeat`, and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender.
    pub from: String,
    /// The replica-only members the sender knows.
    pub members: Vec<Member>,
}

/// `POST /v1/admin/rehome`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RehomeRequest {
    /// The prefix of an existing placement rule.
    pub prefix: String,
    /// Its new home (one of the rule's replicas).
    pub to: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RehomeResponse {
    /// The rule's prefix.
    pub prefix: String,
    /// The old home.
    pub from: String,
    /// The new home.
    pub to: String,
    /// The old home's clock when it stopped executing writes of the range.
    pub switch_ts: Option<String>,
    /// Keys stored under the prefix (at the new home) whose home changed.
    pub moved_keys: usize,
    /// Regions that installed the new placement.
    pub updated: Vec<String>,
    /// Regions that could not be reached (run the call again).
    pub missed: Vec<String>,
}

/// One step, as sent between regions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RehomeStep {
    /// The rule's prefix.
    pub prefix: String,
    /// The new home.
    pub to: String,
    /// The old home.
    pub from: String,
    /// The switch point (adopt only).
    #[serde(default)]
    pub switch_ts: Option<Timestamp>,
}

/// A step's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepAck {
    /// freeze: the switch point.
    #[serde(default)]
    pub switch_ts: Option<Timestamp>,
    /// adopt: the keys moved.
    #[serde(default)]
    pub moved_keys: usize,
}
