//! The HTTP API every region serves (axum), on top of everything else: the key-value routes
//! (`kv.rs`), counters (`counters.rs`), transactions and snapshots (`txns.rs`, with the internal
//! routes of their commit), the cluster's view and changes (`cluster.rs`:
//! placement, status, readiness, conflict counts, re-homing), the internal routes peers
//! call (`peers.rs`), and the mutual-TLS gate in front of them (`tls.rs`). Errors are
//! problem details ([`problem`]).

mod cluster;
mod counters;
mod kv;
mod peers;
pub mod problem;
pub mod tls;
mod txns;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::{Json, Router};
use regions_core::hlc::Timestamp;

use crate::node::Region;
use problem::{ApiError, ProblemType};

pub use kv::FORWARDED_BY;

/// Longest key accepted.
const MAX_KEY_BYTES: usize = 1024;

type Shared = State<Arc<Region>>;

/// Every route of the region, behind the gate that lets only member regions reach
/// `/internal/...` (with a `[tls]` section).
pub fn router(region: Arc<Region>) -> Router {
    Router::new()
        .merge(kv::routes())
        .merge(counters::routes())
        .merge(cluster::routes())
        .merge(peers::routes())
        .merge(txns::routes())
        .layer(axum::middleware::from_fn_with_state(region.clone(), tls::authorize))
        .with_state(region)
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("/path/key: a key has 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn parse_version(path: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        t.parse()
            .map_err(|e: String| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))
    })
    .transpose()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("/query: {}", e.body_text())))
}

/// A client's JSON body, or the problem with it (not JSON, or JSON of the wrong shape).
fn body_of<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(b)| b).map_err(|e| match e {
        JsonRejection::JsonDataError(e) => ApiError::new(ProblemType::InvalidBody, e.body_text()),
        other => ApiError::new(ProblemType::MalformedJson, other.body_text()),
    })
}

/// A peer's message, or its refusal.
fn peer_body<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))
}

fn checked_op_id(path: &str, op_id: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(id) = &op_id {
        regions_core::op_ids::check(id)
            .map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))?;
    }
    Ok(op_id)
}
