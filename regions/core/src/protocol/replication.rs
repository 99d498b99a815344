//! The messages between regions: the replication log as shipped, strong writes' intents,
//! and anti-entropy's digests and repairs.

use serde::{Deserialize, Serialize};

use crate::counter::Component;
use crate::hlc::Timestamp;

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

/// One stored version with its identity and ancestry, as anti-entropy ships it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    /// The key.
    pub key: String,
    /// Its timestamp.
    pub ts: Timestamp,
    /// The value as JSON text; `None` for a deletion.
    pub value: Option<String>,
    /// The region that executed the write.
    pub origin: String,
    /// The version it replaced at its origin (tracked for keys written anywhere).
    pub prev: Option<VersionId>,
}

impl VersionRow {
    /// A version of `key` executed at `origin`, its ancestry not tracked (a key written at
    /// its home only).
    pub fn untracked(key: &str, ts: Timestamp, value: Option<&str>, origin: &str) -> VersionRow {
        VersionRow {
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            origin: origin.to_owned(),
            prev: None,
        }
    }

    /// Its identity.
    pub fn id(&self) -> VersionId {
        VersionId {
            ts: self.ts,
            origin: self.origin.clone(),
        }
    }
}

/// One region's component of a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    /// The counter's key.
    pub key: String,
    /// The region whose component this is.
    pub region: String,
    /// Its component.
    #[serde(flatten)]
    pub component: Component,
}

/// `POST /internal/v1/anti-entropy/digest`: the digests of the answering region's own
/// writes that `from` holds replicas of, over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestRequest {
    /// The asking region.
    pub from: String,
    /// The window's lower end.
    pub since: Timestamp,
    /// The window's upper end.
    pub upto: Timestamp,
    /// `None`: the digests; a list: the items of these buckets.
    #[serde(default)]
    pub buckets: Option<Vec<usize>>,
}

/// The answer: digests, or the items of the buckets asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DigestResponse {
    /// Per bucket (when digests were asked for).
    #[serde(default)]
    pub digests: Vec<u64>,
    /// Versions in the window of the keys of the buckets asked for.
    #[serde(default)]
    pub versions: Vec<VersionRow>,
    /// Counter components of the buckets asked for.
    #[serde(default)]
    pub counters: Vec<CounterRow>,
}

/// `POST /internal/v1/recover`: a region restored from a backup asks a peer for every
/// version and counter component of its own (origin `from`) the peer holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// The restored region.
    pub from: String,
    /// Every timestamp the lost incarnation gave is below it: a copy of a transaction's
    /// state stamped below it and not kept yet never will be (it was sent before the loss,
    /// and the restore did not see it).
    #[serde(default)]
    pub floor: Option<crate::hlc::Timestamp>,
}

/// The answer: what the peer holds of `from`'s writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoverResponse {
    /// Every version whose origin is `from`.
    pub versions: Vec<VersionRow>,
    /// Every counter component of `from`.
    pub counters: Vec<CounterRow>,
    /// How far `from` acknowledged the answering region's own log: the restored region
    /// lost what it applied after its backup, and records the entries up to here as a gap
    /// for anti-entropy to repair (they are not shipped again).
    #[serde(default)]
    pub acked_seq: i64,
    /// The copies the peer keeps of `from`'s transaction states (`regions::node::txn`'s
    /// copies): the restored region takes the newest of each back.
    #[serde(default)]
    pub txns: Vec<super::TxnCopy>,
}
