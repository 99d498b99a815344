//! Joining a cluster, before the region starts: a region with `bootstrap` set posts its
//! name and address to a member and receives the cluster's configuration and members (or,
//! after a restart, finds them in its membership file).

use std::time::{Duration, Instant};

use regions_core::config::{Config, RegionConfig};
use regions_core::protocol::{JoinRequest, JoinResponse};

use super::{Saved, load, members_path, save};
use crate::{Error, Result};

/// For a region that joins (`bootstrap` set): the cluster's configuration with this region
/// added as a replica-only member (weight 0), from its membership file after a restart,
/// otherwise from the first bootstrap member that accepts the join. Other regions' files
/// are returned as they are.
pub async fn prepare(config: Config, name: &str) -> Result<Config> {
    if config.bootstrap.is_empty() {
        return Ok(config);
    }
    let own = config.region(name)?.clone();
    let path = members_path(&own);
    let address = own.address.trim_end_matches('/');
    let text = match load(&path)? {
        // Joined before, at the same address: the cluster's configuration is kept here.
        Some(saved)
            if !saved.cluster_config.is_empty()
                && saved.members.iter().any(|m| m.name == own.name && m.address == address) =>
        {
            saved.cluster_config
        }
        // Never joined, or its address changed: join (again; a new version spreads it).
        _ => {
            let answer = join_through(&config, &own).await?;
            save(
                &path,
                &Saved {
                    cluster_config: answer.cluster_config.clone(),
                    members: answer.members,
                },
            )?;
            answer.cluster_config
        }
    };
    let mut cluster = Config::parse(&text)?;
    if cluster.regions.iter().any(|r| r.name == name) {
        return Err(Error::Config(format!(
            "{name} is in the cluster's own list of regions: start it without bootstrap"
        )));
    }
    cluster.regions.push(RegionConfig { weight: 0, ..own });
    cluster.tls = config.tls;
    cluster.bootstrap = config.bootstrap;
    // Its own tokens (a flag's, or its file's) and its own word on an open address.
    if !config.tokens.is_empty() {
        cluster.tokens = config.tokens;
    }
    cluster.insecure = config.insecure;
    cluster.source = text;
    Ok(cluster)
}

async fn join_through(config: &Config, own: &RegionConfig) -> Result<JoinResponse> {
    let http = crate::tls::http_client(config)?;
    let request = JoinRequest {
        name: own.name.clone(),
        address: own.address.trim_end_matches('/').to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut failures = Vec::new();
        for url in &config.bootstrap {
            let sent = http
                .post(format!("{}/internal/v1/join", url.trim_end_matches('/')))
                .json(&request)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => match r.json::<JoinResponse>().await {
                    Ok(answer) => {
                        tracing::info!(region = own.name, bootstrap = url, "joined the cluster");
                        return Ok(answer);
                    }
                    Err(e) => failures.push(format!("{url}: {e}")),
                },
                Ok(r) => {
                    let status = r.status();
                    let detail = r.text().await.unwrap_or_default();
                    if status.is_client_error() {
                        return Err(Error::Config(format!("{url} refused the join ({status}): {detail}")));
                    }
                    failures.push(format!("{url}: {status} {detail}"));
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Config(format!(
                "could not join through any bootstrap region within 60 s: {}",
                failures.join("; ")
            )));
        }
        tracing::warn!(
            region = own.name,
            failures = failures.join("; "),
            "join failed; retrying"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
