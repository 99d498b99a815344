//! The membership's network side: the join and heartbeat routes, a heartbeat task per
//! member, the failure detector's loop, and the membership's part of `GET /v1/regions`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};

use super::now_ms;
use crate::node::{Peer, Region};
use crate::problem::{ApiError, ProblemType};
use crate::tls::PeerIdentity;
use regions_core::protocol::{Health, Heartbeat, JoinRequest, JoinResponse, Member, RegionStatus, Role};

/// The membership routes (internal).
pub fn router(region: Arc<Region>) -> Router {
    Router::new()
        .route("/internal/v1/join", post(join))
        .route("/internal/v1/heartbeat", post(heartbeat))
        .with_state(region)
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
    if request.name.is_empty() || region.membership.voters.iter().any(|v| v.name == request.name) {
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
        .max(now_ms());
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
        cluster_config: region.membership.cluster_config.clone(),
        members: region.membership.learners(),
    }))
}

fn merge_logged(region: &Region, members: &[Member]) {
    match region.membership.merge(members) {
        Ok(new) => {
            for m in new {
                tracing::info!(
                    region = region.name,
                    member = m.name,
                    address = m.address,
                    "learned a member"
                );
            }
        }
        Err(e) => tracing::error!(region = region.name, error = %e, "could not keep the membership"),
    }
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
    merge_logged(&region, &beat.members);
    region.membership.heard(&beat.from);
    Ok(Json(Heartbeat {
        from: region.name.clone(),
        members: region.membership.learners(),
    }))
}

async fn heartbeat_loop(region: Arc<Region>, name: String) {
    let interval = Duration::from_millis(region.config.heartbeat_interval_ms);
    let timeout = Duration::from_millis(region.config.suspect_after_ms);
    loop {
        let address = region
            .membership
            .members()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.address);
        if let Some(address) = address {
            let beat = Heartbeat {
                from: region.name.clone(),
                members: region.membership.learners(),
            };
            let answer = region
                .http
                .post(format!("{address}/internal/v1/heartbeat"))
                .timeout(timeout)
                .json(&beat)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    if let Ok(ack) = r.json::<Heartbeat>().await {
                        region.membership.heard(&name);
                        merge_logged(&region, &ack.members);
                    }
                }
                Ok(r) => tracing::debug!(region = region.name, peer = name, status = %r.status(), "heartbeat refused"),
                Err(e) => tracing::debug!(region = region.name, peer = name, error = %e, "heartbeat failed"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs the membership for ever: a heartbeat task per member, the failure detector, and
/// (at a voter) a log shipper for each replica-only member that joins.
pub async fn run(region: Arc<Region>) {
    let config = &region.config;
    let (suspect_after, down_after) = (
        Duration::from_millis(config.suspect_after_ms),
        Duration::from_millis(config.down_after_ms),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms.div_ceil(2)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut beating = HashSet::new();
    let mut shipping: HashSet<String> = region.peers.iter().map(|p| p.name.clone()).collect();
    loop {
        tick.tick().await;
        for m in region.membership.members() {
            if m.name == region.name {
                continue;
            }
            if beating.insert(m.name.clone()) {
                tasks.spawn(heartbeat_loop(region.clone(), m.name.clone()));
            }
            if region.membership.is_voter() && m.role == Role::Replica && shipping.insert(m.name.clone()) {
                tasks.spawn(crate::shipper::ship_loop(
                    region.clone(),
                    Peer {
                        name: m.name.clone(),
                        address: m.address.clone(),
                    },
                ));
            }
        }
        for (name, before, after) in region.membership.evaluate(Instant::now(), suspect_after, down_after) {
            let (_, ago) = region.membership.health(&name);
            match after {
                Health::Up => {
                    tracing::info!(region = region.name, peer = name, ?before, state = ?after, "region state changed")
                }
                Health::Suspect | Health::Down => tracing::warn!(
                    region = region.name,
                    peer = name,
                    ?before,
                    state = ?after,
                    last_heartbeat_ms_ago = ?ago,
                    "region state changed"
                ),
            }
        }
        while tasks.try_join_next().is_some() {}
    }
}

/// Adds the detector's view to `GET /v1/regions`: each entry's role, state and heartbeat
/// age, and an entry for every replica-only member not listed yet.
pub fn annotate(region: &Region, out: &mut Vec<RegionStatus>, last_seq: i64) {
    for m in region.membership.members() {
        if m.name != region.name && !out.iter().any(|s| s.name == m.name) {
            let ago = region
                .contact
                .lock()
                .expect("contact lock")
                .get(&m.name)
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
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
