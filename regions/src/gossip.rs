//! Membership over the network: a heartbeat task per member (each heartbeat carries the
//! list of replica-only members, and so does its answer), the failure detector's loop, and
//! a log shipper for each replica-only member that joins (see [`crate::membership`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regions_core::protocol::{Health, Heartbeat, Role};

use crate::node::{Peer, Region};

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
                        region.membership.merge_from(&region.name, &name, &ack.members);
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
                tasks.spawn(crate::replication::ship::ship_loop(
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
