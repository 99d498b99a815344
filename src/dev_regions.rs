//! The three regions `geosaga dev` runs beside the coordinator: us-east, eu-west and
//! ap-south on loopback, each with its own SQLite file, keys homed by prefix (`us/`, `eu/`,
//! `ap/`) and by consistent hashing otherwise.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;

/// The regions and the key prefix homed in each.
const REGIONS: [(&str, &str); 3] = [("us-east", "us/"), ("eu-west", "eu/"), ("ap-south", "ap/")];

/// Starts the three regions; `first_port` 0 picks free ports. Returns each region's name
/// and address.
pub async fn start(data_dir: &Path, first_port: u16) -> anyhow::Result<Vec<(String, String)>> {
    let mut listeners = Vec::new();
    for (i, _) in REGIONS.iter().enumerate() {
        let port = if first_port == 0 { 0 } else { first_port + i as u16 };
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding a region on 127.0.0.1:{port} (use --regions-port to pick others)"))?;
        listeners.push(listener);
    }
    let mut toml = String::from("quorum = \"quorum\"\n");
    let mut addresses = Vec::new();
    for ((name, prefix), listener) in REGIONS.iter().zip(&listeners) {
        let address = format!("http://{}", listener.local_addr()?);
        let data = data_dir.join(format!("region-{name}.db"));
        toml.push_str(&format!(
            "\n[[regions]]\nname = \"{name}\"\naddress = \"{address}\"\ndata = {:?}\n\n[[rules]]\nprefix = \"{prefix}\"\nregion = \"{name}\"\n",
            data.display().to_string()
        ));
        addresses.push(((*name).to_owned(), address));
    }
    let config = regions::Config::parse(&toml).context("the dev regions' configuration")?;
    for ((name, _), listener) in REGIONS.iter().zip(listeners) {
        let config = config.clone();
        let clock = regions::Clock::system(config.max_clock_offset_ms);
        tokio::spawn(async move {
            if let Err(e) = regions::serve_on(listener, config, name, clock, std::future::pending()).await {
                tracing::error!(region = name, error = %e, "region stopped");
            }
        });
    }
    Ok(addresses)
}

/// The demo accounts of `examples/transfer_regions.json`, written only if absent (a
/// restart keeps their balances): `us/alice` (homed in us-east) and `eu/bob` (eu-west).
pub const DEMO_ACCOUNTS: [(&str, i64); 2] = [("us/alice", 1000), ("eu/bob", 0)];

/// Writes the demo accounts through the region at `url`; a failure is logged, not fatal.
pub async fn seed_accounts(url: &str) {
    let client = reqwest::Client::new();
    for (key, balance) in DEMO_ACCOUNTS {
        let body = regions_client::PutRequest {
            value: serde_json::json!({"balance": balance}),
            consistency: regions_client::WriteConsistency::Strong,
            if_version: Some("0.0".to_owned()),
            op_id: None,
        };
        let request = match regions_client::put(&client, url, key, &body) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(key, error = %e, "could not create a demo account");
                continue;
            }
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => tracing::info!(key, balance, "demo account created"),
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {} // kept from an earlier run
            Ok(r) => tracing::warn!(key, status = %r.status(), "could not create a demo account"),
            Err(e) => tracing::warn!(key, error = %e, "could not create a demo account"),
        }
    }
}
