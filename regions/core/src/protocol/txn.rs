//! Transactions on the wire: the public API's bodies (`/v1/txns`, `/v1/txn`,
//! `/v1/snapshot`) and the messages a gateway sends the homes and records
//! (`/internal/v1/txn/...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::hlc::Timestamp;
use crate::txn::{Conflict, IntentKind, Isolation, RecordEvent, TxnStatus};

/// `POST /v1/txns`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    /// Only `serializable` (the default).
    #[serde(default)]
    pub isolation: Isolation,
}

/// The answer to `POST /v1/txns`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BeginResponse {
    /// The transaction's id (its routes are `/v1/txns/{id}/...` at the same region).
    pub id: String,
    /// Its snapshot.
    pub read_ts: String,
}

/// `PUT /v1/txns/{id}/kv/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnPutRequest {
    /// The value.
    pub value: serde_json::Value,
}

/// A value read in a transaction or a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TxnValue {
    /// The value.
    pub value: serde_json::Value,
    /// Its version; `null` for the transaction's own write.
    pub version: Option<String>,
}

/// The schema of a map from keys to a [`TxnValue`] or `null`, which the derive cannot write
/// for a map of options.
fn values_by_key() -> utoipa::openapi::Object {
    by_key("Every key asked for: its value and version, or null where it is absent at `ts`.")
}

/// The schema of `CommitResponse::reads`.
fn reads_by_key() -> utoipa::openapi::Object {
    by_key("`POST /v1/txn` only: the keys it read, each with its value and version, or null where it is absent.")
}

/// A map from key to a value read or `null`, described by `description` (a field whose
/// schema is given by hand loses its doc comment).
fn by_key(description: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::{Ref, RefOr};
    let value = OneOfBuilder::new()
        .item(Ref::from_schema_name("TxnValue"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(value)))))
        .build()
}

/// The answer to `POST /v1/txns/{id}/commit` and `POST /v1/txn`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitResponse {
    /// The transaction.
    pub id: String,
    /// Its commit timestamp (its snapshot for a read-only transaction).
    pub commit_ts: String,
    /// `POST /v1/txn` only: the keys it read (`null`: absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = reads_by_key)]
    pub reads: BTreeMap<String, Option<TxnValue>>,
    /// `POST /v1/txn` with an `op_id` only: this answer repeats the first commit under that
    /// op id (nothing was applied again; `reads` are read again just below its commit
    /// timestamp, where they were as it read them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// `POST /v1/txn` with `undoes` only: `false` when the transaction it undoes never
    /// committed (it is cancelled now, and nothing was written), `true` when it did and
    /// this one committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone: Option<bool>,
}

/// A condition of a one-shot transaction: the key is at this version (`"0.0"`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The key.
    #[schema(min_length = 1, max_length = 1024)]
    pub key: String,
    /// The version it must have.
    #[schema(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub version: String,
}

/// A write of a one-shot transaction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OneShotWrite {
    /// The key.
    #[schema(min_length = 1, max_length = 1024)]
    pub key: String,
    /// The value; `null` or absent deletes the key (unless `add` is given).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Instead of a value: add a number to the one at a path of the key's value as the
    /// transaction's snapshot has it (the key is read, and its bounds checked, in the
    /// transaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<crate::add::Add>,
}

/// `POST /v1/txn`: reads, conditions and writes, committed in one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OneShotRequest {
    /// Keys to read at the snapshot (answered in `reads`).
    #[serde(default)]
    pub reads: Vec<String>,
    /// Versions keys must have at the snapshot, or nothing is written (409 `version-mismatch`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Writes applied atomically at the commit.
    #[serde(default)]
    pub writes: Vec<OneShotWrite>,
    /// Makes the transaction exactly-once: a repeat under the same op id (a saga step
    /// retried or recovered) is answered with the first commit and applies nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 512)]
    pub op_id: Option<String>,
    /// The op id of a transaction this one undoes (a saga step's compensation): if that
    /// one never committed it is cancelled (it never will) and this one writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 512)]
    pub undoes: Option<String>,
}

/// `POST /v1/snapshot`: several keys read at one timestamp.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The keys (1 to 1000).
    #[schema(min_items = 1, max_items = 1000)]
    pub keys: Vec<String>,
    /// Read at this timestamp (`WALL_MS.LOGICAL`); default: now, or the freshest timestamp
    /// every home's closed timestamp covers when `max_staleness_ms` allows it.
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,19}\.[0-9]{1,9}$")]
    pub as_of: Option<String>,
    /// Serve from this region's copies if they are at most this stale (at most a year;
    /// `2204.0` is taken for `2204`).
    #[serde(default, deserialize_with = "super::kv::whole_millis")]
    pub max_staleness_ms: Option<u64>,
}

/// The answer to `POST /v1/snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotResponse {
    /// The timestamp every key was read at.
    pub ts: String,
    /// Every key asked for (`null`: absent at `ts`).
    #[schema(schema_with = values_by_key)]
    pub values: BTreeMap<String, Option<TxnValue>>,
    /// The region that answered.
    pub served_by: String,
    /// Whether every key was read from this region's own copy.
    pub local: bool,
    /// How stale the snapshot may be (0: read at the homes).
    pub staleness_bound_ms: u64,
}

/// `/internal/v1/txn/read`: a read at a home at `ts`, resolving or pushing the intents it
/// meets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadAt {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The key.
    pub key: String,
    /// The timestamp.
    pub ts: Timestamp,
}

/// The answer to [`ReadAt`]: the version visible at `ts` (tombstones included).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadAtAnswer {
    /// The version's timestamp and JSON text (`None`: a deletion), if any.
    pub version: Option<(Timestamp, Option<String>)>,
}

/// `/internal/v1/txn/prepare`: lay a transaction's intents on keys homed at the receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepare {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The transaction.
    pub txn: String,
    /// Its snapshot.
    pub read_ts: Timestamp,
    /// Where its record is.
    pub record_home: String,
    /// The keys and their intents.
    pub intents: Vec<(String, IntentKind)>,
    /// Every home of its keys, for a parallel commit (empty: its gateway commits it
    /// explicitly at the record).
    #[serde(default)]
    pub homes: Vec<String>,
    /// Whether the receiver keeps the record and stages it as it prepares.
    #[serde(default)]
    pub stage: bool,
    /// The sender keeps the copy of the receiver's state that the answer carries before it
    /// counts the receiver as prepared: the receiver counts it towards the quorum that must
    /// keep a copy before it answers (`regions::node::txn`'s copies), which saves a round.
    #[serde(default)]
    pub keeps_copy: bool,
}

/// `/internal/v1/txn/status`: a recovery asks a home whether it prepared a transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The transaction.
    pub txn: String,
    /// Where its record is (only that region's record decides it).
    pub record_home: String,
    /// If it has not prepared: refuse its prepare for good ([`crate::txn::AtHome::Prevented`]).
    pub prevent: bool,
}

/// The answer to [`Prepare`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Prepared {
    /// Stored durably; the transaction may commit at `proposed` or later.
    Prepared {
        /// The home's proposal.
        proposed: Timestamp,
        /// Whether the home took part in a parallel commit: it stored the transaction's
        /// homes with its intents, and the record's home staged the record. A gateway
        /// answers before the record is committed only when every home says so (a region
        /// older than parallel commits omits it, and its prepare is committed explicitly).
        #[serde(default)]
        parallel: bool,
        /// The copy of the home's state that the gateway, which asked to keep it
        /// ([`Prepare::keeps_copy`]), must keep before it counts this answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        copy: Option<TxnCopy>,
    },
    /// Refused: nothing was laid.
    Conflict(Conflict),
}

/// `/internal/v1/txn/record`: an event for a record kept at the receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordRequest {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The transaction.
    pub txn: String,
    /// What happens to it.
    pub event: RecordEvent,
}

/// The answer to [`RecordRequest`]: the record after the event, or as it stands if it
/// refused the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordAnswer {
    /// The record.
    pub status: TxnStatus,
    /// Whether the event was refused.
    pub refused: bool,
}

/// `/internal/v1/txn/resolve`: a transaction's outcome, for its intents at the receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolve {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The transaction.
    pub txn: String,
    /// `Some(commit_ts)`: committed; `None`: aborted.
    pub commit_ts: Option<Timestamp>,
    /// A copy of the sender's state of the transaction (the record it keeps, decided) that
    /// the receiver keeps before it resolves: whoever resolves on the record's decision
    /// keeps a copy of it (`regions::node::txn`'s copies), which saves a round before the
    /// resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<TxnCopy>,
}

/// `/internal/v1/txn/claim` and `/internal/v1/txn/cancel`: an op id's transactions, at the
/// region that keeps their records (`regions::node::txn::ops`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpRequest {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The op id.
    pub op_id: String,
}

/// Where an op id stands, as a claim or a cancellation found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpState {
    /// A claim: run the transaction under this id (every earlier try is aborted).
    Run {
        /// The transaction id to use.
        txn: String,
    },
    /// A try committed: nothing may run again.
    Committed {
        /// The transaction that committed.
        txn: String,
        /// When.
        commit_ts: Timestamp,
    },
    /// Cancelled: nothing under the op id committed, and nothing ever will.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshots_bound_is_any_whole_number_of_milliseconds() {
        let parse = |text: &str| serde_json::from_str::<SnapshotRequest>(text).map(|r| r.max_staleness_ms);
        assert_eq!(parse(r#"{"keys": ["k"]}"#).unwrap(), None);
        assert_eq!(parse(r#"{"keys": ["k"], "max_staleness_ms": null}"#).unwrap(), None);
        assert_eq!(
            parse(r#"{"keys": ["k"], "max_staleness_ms": 2204.0}"#).unwrap(),
            Some(2204)
        );
        assert!(parse(r#"{"keys": ["k"], "max_staleness_ms": 1.5}"#).is_err());
        assert!(parse(r#"{"keys": ["k"], "max_staleness_ms": -1}"#).is_err());
    }
}

/// A home's state of one transaction, as its peers keep it (`/internal/v1/txn/copy`): a
/// home tells anyone it prepared, prevented or decided a transaction only once a quorum of
/// its peers keeps a copy at least as new, and a home restored from a backup takes the
/// copies back before it serves (`regions::node::txn::copies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCopy {
    /// The transaction.
    pub txn: String,
    /// When the home read this state (its clock): a holder keeps the copy with the greatest.
    pub at: Timestamp,
    /// Its intents on keys homed there (only those of keys the holder replicates).
    pub intents: Vec<crate::txn::TxnIntent>,
    /// Its record's row there: the record, at the region that keeps it; elsewhere only an
    /// aborted row, which stops a prepare for good.
    pub record: Option<TxnStatus>,
}

/// `/internal/v1/txn/copy`: keep a copy of the sender's state of a transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRequest {
    /// The region sending it (over TLS its certificate must name it).
    pub from: String,
    /// The copy.
    pub copy: TxnCopy,
}
