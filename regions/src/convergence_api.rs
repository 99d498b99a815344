//! The HTTP routes of convergence under faults: counters, conflict counts, re-homing, and
//! the internal anti-entropy and re-homing steps (merged into [`crate::api::router`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::antientropy::{DigestRequest, DigestResponse};
use crate::counter::{CounterResponse, IncrementRequest};
use crate::node::Region;
use crate::problem::{ApiError, ProblemType};
use crate::rehome::{RehomeRequest, RehomeResponse, RehomeStep, StepAck};
use crate::tls::PeerIdentity;

type Shared = State<Arc<Region>>;

const MAX_KEY_BYTES: usize = 1024;

/// The routes.
pub fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/v1/counters/{*key}", get(counter).post(increment))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/admin/rehome", post(rehome))
        .route("/internal/v1/anti-entropy", post(anti_entropy))
        .route("/internal/v1/rehome/{step}", post(rehome_step))
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

fn body<T>(region: &Region, b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(b)| b).map_err(|e| crate::api::rejected(region, e))
}

fn peer_body<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))
}

async fn increment(
    State(region): Shared,
    Path(key): Path<String>,
    req: Result<Json<IncrementRequest>, JsonRejection>,
) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    let req = body(&region, req)?;
    Ok(Json(
        region
            .increment(&key, req.increment, req.op_id.as_deref())
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}

async fn counter(State(region): Shared, Path(key): Path<String>) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    Ok(Json(region.counter(&key).await.map_err(ApiError::from)?))
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

async fn conflicts(State(region): Shared) -> Result<Json<ConflictsResponse>, ApiError> {
    let counted = region.store.conflicts().await.map_err(ApiError::from)?;
    let prefixes = region
        .placement()
        .rules()
        .iter()
        .filter(|r| r.writes_anywhere)
        .map(|r| PrefixConflicts {
            prefix: r.prefix.clone(),
            overwritten: counted.iter().find(|(p, _)| *p == r.prefix).map_or(0, |(_, n)| *n),
        })
        .collect();
    Ok(Json(ConflictsResponse {
        region: region.name.clone(),
        prefixes,
    }))
}

async fn rehome(
    State(region): Shared,
    headers: HeaderMap,
    req: Result<Json<RehomeRequest>, JsonRejection>,
) -> Result<Json<RehomeResponse>, ApiError> {
    let req = body(&region, req)?;
    Ok(Json(
        region
            .rehome(&req, bearer(&headers))
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}

/// The token of `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// A re-homing step. With tokens configured it needs an `admin` token (the one the
/// `/v1/admin/rehome` call came with, which the driving region passes on): a member's
/// certificate alone cannot move a range.
async fn rehome_step(
    State(region): Shared,
    Path(step): Path<String>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Json<StepAck>, ApiError> {
    if !region.config.tokens.is_empty() {
        let tokens = crate::auth::Tokens::parse(&region.config.tokens).map_err(|e| ApiError::from(Error::Config(e)))?;
        if bearer(&headers).and_then(|t| tokens.role_of(t)) != Some(crate::auth::Role::Admin) {
            let detail = "a re-homing step needs the admin token of the /v1/admin/rehome call";
            tracing::warn!(region = region.name, step, detail, "internal request refused");
            return Err(ApiError::new(ProblemType::Forbidden, detail).at(&region.name));
        }
    }
    let s: RehomeStep = peer_body(&b)?;
    Ok(Json(region.rehome_step(&step, &s).await.map_err(ApiError::from)?))
}

async fn anti_entropy(
    State(region): Shared,
    identity: Option<Extension<PeerIdentity>>,
    b: Bytes,
) -> Result<Json<DigestResponse>, ApiError> {
    let req: DigestRequest = peer_body(&b)?;
    // Over mutual TLS, a region asks for what it holds replicas of as itself only (a rule's
    // replica set keeps its keys from the others).
    if let Some(Extension(identity)) = identity
        && !identity.names(&req.from)
    {
        return Err(ApiError::new(
            ProblemType::PeerForbidden,
            format!("/from: the client certificate does not name {:?}", req.from),
        )
        .at(&region.name));
    }
    Ok(Json(region.anti_entropy_answer(&req).await.map_err(ApiError::from)?))
}
