//! The HTTP routes of convergence under faults: counters, conflict counts, re-homing, and
//! the internal anti-entropy and re-homing steps (merged into [`crate::api::router`]).

use std::sync::Arc;

use crate::node::Region;
use crate::problem::{ApiError, ProblemType};
use crate::tls::PeerIdentity;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::routing::{get, post};
use regions_core::protocol::{
    ConflictsResponse, CounterResponse, DigestRequest, DigestResponse, IncrementRequest, PrefixConflicts,
    RehomeRequest, RehomeResponse, RehomeStep, StepAck,
};

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

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(b)| b).map_err(|e| match e {
        JsonRejection::JsonDataError(e) => ApiError::new(ProblemType::InvalidBody, e.body_text()),
        other => ApiError::new(ProblemType::MalformedJson, other.body_text()),
    })
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
    let req = body(req)?;
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
    req: Result<Json<RehomeRequest>, JsonRejection>,
) -> Result<Json<RehomeResponse>, ApiError> {
    let req = body(req)?;
    Ok(Json(
        region
            .rehome(&req)
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}

async fn rehome_step(State(region): Shared, Path(step): Path<String>, b: Bytes) -> Result<Json<StepAck>, ApiError> {
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
