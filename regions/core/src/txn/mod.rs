//! Multi-key transactions: the decisions, with no I/O.
//!
//! A transaction reads at one snapshot (`read_ts`, an HLC timestamp) and buffers its writes
//! at the region it was begun at, its *gateway* ([`session`]). To commit, the gateway sends
//! each key's home a *prepare*: the home validates the keys it holds ([`locks`]: no
//! version newer than `read_ts`, no other transaction's intent) and stores them durably as
//! *intents* (a write intent carries the new value; a read intent only locks the key
//! against writers), then proposes a timestamp above its clock. One durable *record* at
//! one home of a written key (the gateway, when it is one) decides ([`record`]): the
//! gateway asks it to commit at the greatest proposal, and whoever meets an intent asks
//! the record too (to push a pending transaction above its read, to abort one whose
//! prepare expired, or to learn that it committed and resolve the intent into a version).
//! The record's home stages it as it prepares, so the transaction commits in that one
//! round ([`staged`]: parallel commits).
//!
//! Why this is serializable: every key a transaction read or wrote is locked by its intent
//! from its validation to its resolution, so no other write lands on it in between; its
//! commit timestamp is above every proposal, so above every version it validated against;
//! and readers at a timestamp either see a committed intent or push its transaction above
//! them. A transaction therefore behaves as if it ran alone at its commit timestamp.

pub mod locks;
pub mod record;
pub mod session;
pub mod staged;

pub use locks::{Conflict, IntentKind, TxnIntent};
pub use record::{RecordEvent, Refusal, TxnStatus};
pub use session::{Planned, Txn};
pub use staged::AtHome;

/// How the records of an op id (`op/OP`, naming its latest try, or cancelled) and of its
/// tries (`try/N/OP`) begin. They sit beside transactions' records but are never pruned:
/// a compensation may cancel or undo an op id at any time after it ran.
pub const OP_RECORD_PREFIXES: [&str; 2] = ["op/", "try/"];

/// Whether record `id` is an op id's or one of its tries' (see [`OP_RECORD_PREFIXES`]).
pub fn is_op_record(id: &str) -> bool {
    OP_RECORD_PREFIXES.iter().any(|p| id.starts_with(p))
}

/// A prepare older than this whose record is still undecided may be aborted by anyone
/// (its gateway is presumed gone; CockroachDB abandons a transaction after 5 s too).
pub const EXPIRY_MS: u64 = 5_000;

/// A transaction begun at a gateway and left untouched this long is forgotten there.
pub const IDLE_MS: u64 = 30_000;

/// How a transaction's keys are isolated. Only serializable is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// No write skew: reads are locked at commit like writes.
    #[default]
    Serializable,
}
