//! The cluster as a region sees it, and changes to it: where a key lives, every region's
//! status (with the failure detector's view), readiness, the conflict counts of keys written
//! anywhere, and re-homing a rule's keys (`crate::rehome`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use problem::Problem;
use regions_core::closed;
use regions_core::protocol::{
    ConflictsResponse, Health, PlacementResponse, PrefixConflicts, RegionStatus, RehomeRequest, RehomeResponse, Role,
};

use super::openapi::PROBLEM_JSON;
use super::problem::{ApiError, ProblemType};
use super::{Body, KeyParam, Shared, body_of, check_key};
use crate::node::Region;

/// The cluster routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/v1/placement/{*key}", get(placement))
        .route("/v1/regions", get(regions))
        .route("/readyz", get(ready))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/admin/rehome", post(rehome))
}

/// Longest a readiness check waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when the region's store answers a query (within [`READY_TIMEOUT`]): a region whose
/// database is down is up but cannot serve, and a load balancer should send elsewhere.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The region's store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn ready(State(region): Shared) -> Result<&'static str, ApiError> {
    let detail = match tokio::time::timeout(READY_TIMEOUT, region.store.last_seq()).await {
        Ok(Ok(_)) => return Ok("ready"),
        Ok(Err(e)) => format!("the region's {} store: {e}", region.store.backend_name()),
        Err(_) => format!(
            "the region's {} store did not answer within {} s",
            region.store.backend_name(),
            READY_TIMEOUT.as_secs()
        ),
    };
    Err(ApiError::new(ProblemType::StoreUnavailable, detail).at(&region.name))
}

/// Where a key lives, and why (a rule, or the hash ring).
#[utoipa::path(
    get,
    path = "/v1/placement/{key}",
    operation_id = "placement",
    tag = "cluster",
    params(KeyParam),
    responses(
        (status = 200, description = "The key's home region", body = PlacementResponse),
        (status = 400, description = "The key is wrong", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn placement(
    State(region): Shared,
    Path(key): Path<String>,
) -> Result<Json<PlacementResponse>, ApiError> {
    check_key(&key)?;
    let home = region.home(&key);
    Ok(Json(PlacementResponse::new(&key, home.region, &home.reason)))
}

/// Every region as this one sees it: health, replication lag, the failure detector's view.
#[utoipa::path(
    get,
    path = "/v1/regions",
    operation_id = "regions",
    tag = "cluster",
    responses(
        (status = 200, description = "This region first, then its peers and members", body = Vec<RegionStatus>),
    )
)]
pub(super) async fn regions(State(region): Shared) -> Result<Json<Vec<RegionStatus>>, ApiError> {
    let now_ms = region.clock.physical_ms();
    let last_seq = region.store.last_seq().await.map_err(ApiError::from)?;
    let healthy_within = u64::try_from(region.skew_window().as_millis()).unwrap_or(u64::MAX);
    let (now, pending) = region.now_and_earliest_pending();
    let mut out = vec![RegionStatus {
        name: region.name.clone(),
        address: region
            .config
            .region(&region.name)
            .map(|r| r.address.clone())
            .unwrap_or_default(),
        is_self: true,
        healthy: true,
        last_contact_ms_ago: None,
        closed_ts: Some(closed::closed_timestamp(now, pending, None).to_string()),
        replication_lag_ms: Some(0),
        unacked_entries: None,
        anti_entropy_repaired: None,
        anti_entropy_gap: None,
        ..RegionStatus::default()
    }];
    let states = region.store.replica_states().await.map_err(ApiError::from)?;
    for peer in &region.peers {
        let ago = region.last_contact_ms(&peer.name);
        let closed = region.closed_for(&peer.name);
        let acked = region.acked_by(&peer.name);
        let clock_skew = region.clock_skew.of(&peer.name);
        // A peer whose timestamps were refused lately is not healthy, whatever the contact.
        let skewed = clock_skew.iter().any(|s| s.last_ms_ago <= healthy_within);
        out.push(RegionStatus {
            name: peer.name.clone(),
            address: peer.address.clone(),
            is_self: false,
            healthy: ago.is_some_and(|a| a <= healthy_within) && !skewed,
            clock_skew,
            last_contact_ms_ago: ago,
            closed_ts: closed.map(|c| c.to_string()),
            replication_lag_ms: closed.map(|c| now_ms.saturating_sub(c.wall_ms)),
            unacked_entries: Some(last_seq - acked),
            anti_entropy_repaired: Some(region.repaired(&peer.name)),
            anti_entropy_gap: Some(states.get(&peer.name).is_some_and(|s| s.gap.is_some())),
            ..RegionStatus::default()
        });
    }
    annotate(&region, &mut out, last_seq);
    Ok(Json(out))
}

/// Adds the detector's view to `GET /v1/regions`: each entry's role, state and heartbeat
/// age, and an entry for every replica-only member not listed yet.
fn annotate(region: &Region, out: &mut Vec<RegionStatus>, last_seq: i64) {
    for m in region.membership.members() {
        if m.name != region.name && !out.iter().any(|s| s.name == m.name) {
            let ago = region.last_contact_ms(&m.name);
            out.push(RegionStatus {
                name: m.name.clone(),
                address: m.address.clone(),
                is_self: false,
                healthy: region.membership.health(&m.name).0 == Health::Up,
                last_contact_ms_ago: ago,
                unacked_entries: region
                    .membership
                    .is_voter()
                    .then(|| last_seq - region.acked_by(&m.name)),
                ..RegionStatus::default()
            });
        }
    }
    let members = region.membership.members();
    for status in out.iter_mut() {
        status.role = Some(
            members
                .iter()
                .find(|m| m.name == status.name)
                .map_or(Role::Voter, |m| m.role),
        );
        if status.is_self {
            status.state = Some(Health::Up);
        } else {
            let (health, ago) = region.membership.health(&status.name);
            status.state = Some(health);
            status.last_heartbeat_ms_ago = ago;
        }
    }
}

/// Concurrent writes overwritten by last-writer-wins, per rule whose keys are written anywhere.
#[utoipa::path(
    get,
    path = "/v1/conflicts",
    operation_id = "conflicts",
    tag = "cluster",
    responses(
        (status = 200, description = "Counts per rule prefix", body = ConflictsResponse),
    )
)]
pub(super) async fn conflicts(State(region): Shared) -> Result<Json<ConflictsResponse>, ApiError> {
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

/// Re-homes a range; the steps carry the caller's token to the regions involved.
#[utoipa::path(
    post,
    path = "/v1/admin/rehome",
    operation_id = "rehome",
    tag = "admin",
    request_body = RehomeRequest,
    responses(
        (status = 200, description = "Moved (`missed` names the regions to run it again for)", body = RehomeResponse),
        (status = 400, description = "The body is not JSON, `prefix` names no rule, or `to` is not one of its replicas", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is past the region's limit", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The range's old or new home cannot be reached", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn rehome(
    State(region): Shared,
    headers: HeaderMap,
    req: Body<RehomeRequest>,
) -> Result<Json<RehomeResponse>, ApiError> {
    let req = body_of(req)?;
    Ok(Json(
        crate::rehome::rehome(&region, &req, super::auth::bearer(&headers))
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}
