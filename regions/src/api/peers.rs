//! The internal routes peers call: intents of strong writes and batches of a home's log
//! (`crate::replication`), anti-entropy's digests (`crate::antientropy`), re-homing's
//! steps (`crate::rehome`), and membership's joins and heartbeats (`crate::membership`).
//! With a `[tls]` section only member regions reach them (`tls.rs`); handlers that act in
//! a region's name check that the client certificate names it, and a heartbeat changes
//! only its sender's own membership entry. With tokens configured, a re-homing step also
//! needs the admin token of the call that started it (`auth.rs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use regions_core::protocol::{
    DigestRequest, DigestResponse, Heartbeat, Intent, JoinRequest, JoinResponse, Member, RecoverRequest,
    RecoverResponse, RehomeStep, ReplicateBatch, Role, StepAck,
};

use super::auth::{self, Tokens, bearer};
use super::problem::{ApiError, ProblemType};
use super::tls::check_sender;
use super::{Shared, peer_body};
use crate::Error;
use crate::node::Region;
use crate::replication;
use crate::tls::PeerIdentity;

/// The internal routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/internal/v1/intents", post(intent))
        .route("/internal/v1/replicate", post(replicate))
        .route("/internal/v1/anti-entropy", post(anti_entropy))
        .route("/internal/v1/recover", post(recover))
        .route("/internal/v1/rehome/{step}", post(rehome_step))
        .route("/internal/v1/join", post(join))
        .route("/internal/v1/heartbeat", post(heartbeat))
}

/// The client certificate of a request's connection, over TLS.
type Identity = Option<Extension<PeerIdentity>>;

async fn intent(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let intent: Intent = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &intent.from)?;
    Ok(Json(replication::accept_intent(&region, &intent).await?).into_response())
}

async fn replicate(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let batch: ReplicateBatch = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &batch.from)?;
    Ok(Json(replication::accept_batch(&region, &batch).await?).into_response())
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
    Ok(Json(
        crate::antientropy::answer(&region, &req)
            .await
            .map_err(ApiError::from)?,
    ))
}

/// A restored region asks for its own writes: over TLS, only for itself.
async fn recover(State(region): Shared, identity: Identity, b: Bytes) -> Result<Json<RecoverResponse>, ApiError> {
    let req: RecoverRequest = peer_body(&b)?;
    check_sender(&region, identity.as_deref(), "/from", &req.from)?;
    Ok(Json(
        crate::restore::answer(&region, &req).await.map_err(ApiError::from)?,
    ))
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
        let tokens = Tokens::parse(&region.config.tokens).map_err(|e| ApiError::from(Error::Config(e)))?;
        if bearer(&headers).and_then(|t| tokens.role_of(t)) != Some(auth::Role::Admin) {
            let detail = "a re-homing step needs the admin token of the /v1/admin/rehome call";
            tracing::warn!(region = region.name, step, detail, "internal request refused");
            return Err(ApiError::new(ProblemType::Forbidden, detail).at(&region.name));
        }
    }
    let s: RehomeStep = peer_body(&b)?;
    Ok(Json(
        crate::rehome::step(&region, &step, &s).await.map_err(ApiError::from)?,
    ))
}

fn refuse(region: &Region, kind: ProblemType, detail: String) -> ApiError {
    tracing::warn!(region = region.name, detail, "membership request refused");
    ApiError::new(kind, detail).at(&region.name)
}

async fn join(
    State(region): State<Arc<Region>>,
    identity: Option<Extension<PeerIdentity>>,
    Json(request): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    if let Some(Extension(identity)) = identity
        && !identity.names(&request.name)
    {
        return Err(refuse(
            &region,
            ProblemType::PeerForbidden,
            format!("/name: the client certificate does not name {:?}", request.name),
        ));
    }
    if request.name.is_empty() || region.membership.is_configured(&request.name) {
        return Err(refuse(
            &region,
            ProblemType::InvalidParameter,
            format!("/name: {:?} is empty or a configured region", request.name),
        ));
    }
    if !request.address.starts_with("http://") && !request.address.starts_with("https://") {
        return Err(refuse(
            &region,
            ProblemType::InvalidParameter,
            format!("/address: {:?} is not an http(s) URL", request.address),
        ));
    }
    let version = region
        .membership
        .learners()
        .iter()
        .find(|m| m.name == request.name)
        .map_or(0, |m| m.version + 1)
        .max(crate::membership::now_ms());
    let member = Member {
        name: request.name.clone(),
        address: request.address.trim_end_matches('/').to_owned(),
        role: Role::Replica,
        version,
    };
    region.membership.merge(&[member]).map_err(ApiError::from)?;
    tracing::info!(
        region = region.name,
        joined = request.name,
        address = request.address,
        "region joined as a replica"
    );
    Ok(Json(JoinResponse {
        cluster_config: region.membership.cluster_config().to_owned(),
        members: region.membership.learners(),
    }))
}

async fn heartbeat(
    State(region): State<Arc<Region>>,
    identity: Option<Extension<PeerIdentity>>,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<Heartbeat>, ApiError> {
    if let Some(Extension(identity)) = identity
        && !identity.names(&beat.from)
    {
        return Err(refuse(
            &region,
            ProblemType::PeerForbidden,
            format!("/from: the client certificate does not name {:?}", beat.from),
        ));
    }
    region.membership.merge_from(&region.name, &beat.from, &beat.members);
    region.membership.heard(&beat.from);
    Ok(Json(Heartbeat {
        from: region.name.clone(),
        members: region.membership.learners(),
    }))
}
