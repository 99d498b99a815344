//! Idempotent writes. A write may carry an `op_id` (a saga step's idempotency key): its
//! home records it, and a repeat of it is answered with the first one's result
//! (`"replayed": true`) instead of writing again, so a client that lost an answer, or a
//! coordinator that crashed, can retry without applying anything twice.
//!
//! Under the key's write lock, before a write, the home *prepares* a row (key, op_id) with
//! the write's timestamp and the live version it replaces; a trigger marks the row applied
//! in the transaction that makes the version visible (`migrations/regions/0003_op_ids.sql`,
//! and its PostgreSQL twin in `migrations/regions-postgres`).
//! A write that aborted, or that a crash cut off, leaves its row unapplied: a repeat then
//! writes afresh and prepares the row again. Rows are kept for [`RETENTION_MS`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::mvcc::Version;
use crate::{Error, Result};

/// How long a home remembers an op id: a repeat later than this writes again.
pub const RETENTION_MS: u64 = 7 * 24 * 3_600_000;
/// Longest op id accepted, in characters (what the OpenAPI document can say).
pub const MAX_OP_ID_CHARS: usize = 512;
/// The live version a write replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Previous {
    /// Its version (`WALL_MS.LOGICAL`).
    pub version: String,
    /// Its value.
    pub value: serde_json::Value,
}

/// What an applied write with an op id did, as recorded at its home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The version it made.
    pub version: String,
    /// The live version it replaced (`None`: the key had none).
    pub previous: Option<Previous>,
}

/// Checks an op id given by a client.
pub fn check(op_id: &str) -> std::result::Result<(), String> {
    if op_id.is_empty() || op_id.chars().count() > MAX_OP_ID_CHARS {
        return Err(format!("an op_id has 1 to {MAX_OP_ID_CHARS} characters"));
    }
    Ok(())
}

/// The live version of a key as [`Previous`] (`None`: absent or deleted).
pub fn previous_of(version: Option<&Version>) -> Result<Option<Previous>> {
    match version {
        Some(Version { ts, value: Some(text) }) => Ok(Some(Previous {
            version: ts.to_string(),
            value: serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored value: {e}")))?,
        })),
        Some(Version { value: None, .. }) | None => Ok(None),
    }
}
