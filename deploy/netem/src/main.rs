//! `geosaga-netem`: the testbed's network emulator with the HTTP API of [Toxiproxy] (the subset the
//! testbed and the chaos suite need), so that WAN latency and partitions are injected on
//! the network path between containers without the kernel's netem and without an image
//! from a registry.
//!
//! Each *proxy* listens on a TCP address and forwards every connection to its upstream
//! (`host:port`, resolved again for every connection, so a restarted container is found
//! at its new address). *Toxics* act on the bytes of one direction (`upstream`: client to
//! server, `downstream`: server to client) of every connection, live ones included:
//!
//! - `latency` (`latency`, `jitter` in ms): each chunk is delivered that much later,
//!   in order;
//! - `timeout` (`timeout` in ms): no data gets through, and the connection is closed after
//!   `timeout` (0: never; data is dropped until the toxic is removed).
//!
//! A disabled proxy stops listening and closes its connections: the link is cut.
//!
//! The routes are Toxiproxy's: `GET /version`, `POST /reset`, `GET|POST /proxies`,
//! `POST /populate`, `GET|POST|DELETE /proxies/{name}`, `GET|POST /proxies/{name}/toxics`,
//! `GET|POST|DELETE /proxies/{name}/toxics/{toxic}`. Errors are `{"error": ..., "status": ...}`.
//!
//! [Toxiproxy]: https://github.com/Shopify/toxiproxy

mod api;
mod link;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use observability::LogFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

pub use link::Link;

/// Arguments of `geosaga-netem`.
#[derive(Parser, Debug)]
#[command(version, about = "A TCP proxy with Toxiproxy's HTTP API, for geosaga's testbed")]
struct Args {
    /// Address of the Toxiproxy-compatible HTTP API.
    #[arg(long, env = "GEOSAGA_NETEM_LISTEN", default_value = "127.0.0.1:8474")]
    listen: SocketAddr,
    /// A JSON file of proxies to create at start-up, as Toxiproxy's `-config`:
    /// `[{"name": ..., "listen": "0.0.0.0:8001", "upstream": "host:port", "enabled": true}]`.
    #[arg(long, env = "GEOSAGA_NETEM_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    observability::init_logging(args.log_format, "info");
    let netem = Netem::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let specs: Vec<ProxySpec> =
            serde_json::from_str(&text).with_context(|| format!("{} is not a list of proxies", path.display()))?;
        for spec in specs {
            let name = spec.name.clone();
            netem
                .create(spec)
                .await
                .map_err(|e| anyhow::anyhow!("{}: proxy {name}: {}", path.display(), e.message))?;
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "netem API serving");
    axum::serve(listener, api::router(netem.clone()))
        .with_graceful_shutdown(http_server::shutdown_signal())
        .await?;
    netem.reset_all(true).await;
    Ok(())
}

/// A proxy as created: Toxiproxy's JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Its unique name.
    pub name: String,
    /// Where it listens (`host:port`; port 0 picks one).
    pub listen: String,
    /// Where it forwards (`host:port`).
    pub upstream: String,
    /// Whether it accepts connections (default: yes).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The direction of a connection a toxic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to upstream.
    Upstream,
    /// Upstream to client (Toxiproxy's default).
    Downstream,
}

/// What a toxic does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToxicKind {
    /// Delays every chunk by `latency` ± `jitter` milliseconds.
    Latency {
        /// Milliseconds.
        latency: u64,
        /// Milliseconds.
        jitter: u64,
    },
    /// Drops every chunk; closes the connection after `timeout` milliseconds (0: never).
    Timeout {
        /// Milliseconds.
        timeout: u64,
    },
}

/// One toxic of a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    /// Its name, unique in its proxy (default `TYPE_STREAM`).
    pub name: String,
    /// The direction it acts on.
    pub stream: Stream,
    /// The share of connections it acts on, 0.0 to 1.0.
    pub toxicity: f64,
    /// What it does.
    pub kind: ToxicKind,
}

impl Toxic {
    fn type_name(&self) -> &'static str {
        match self.kind {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Timeout { .. } => "timeout",
        }
    }

    /// Toxiproxy's JSON for it.
    pub fn to_json(&self) -> Value {
        let attributes = match self.kind {
            ToxicKind::Latency { latency, jitter } => serde_json::json!({"latency": latency, "jitter": jitter}),
            ToxicKind::Timeout { timeout } => serde_json::json!({"timeout": timeout}),
        };
        serde_json::json!({
            "name": self.name,
            "type": self.type_name(),
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": attributes,
        })
    }

    /// Whether it acts on connection `conn` (by its toxicity; the same answer every time).
    fn affects(&self, conn: u64) -> bool {
        if self.toxicity >= 1.0 {
            return true;
        }
        let mut h = conn ^ 0x9e37_79b9_7f4a_7c15;
        for b in self.name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
        }
        (split_mix(h) as f64 / u64::MAX as f64) < self.toxicity
    }
}

/// SplitMix64: spreads a seed over 64 bits (for toxicity and jitter, not for security).
pub(crate) fn split_mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A request the API refuses: Toxiproxy's `{"error", "status"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetemError {
    /// The HTTP status.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

impl NetemError {
    fn new(status: u16, message: impl Into<String>) -> NetemError {
        NetemError {
            status,
            message: message.into(),
        }
    }
}

/// Reads a toxic from Toxiproxy's JSON; `current` is the toxic it updates, if any.
pub fn parse_toxic(body: &Value, current: Option<&Toxic>) -> Result<Toxic, NetemError> {
    let bad = |m: String| NetemError::new(400, m);
    let obj = body.as_object().ok_or_else(|| bad("a toxic is a JSON object".into()))?;
    let type_name = match (obj.get("type"), current) {
        (Some(t), _) => t.as_str().ok_or_else(|| bad("type: a string".into()))?.to_owned(),
        (None, Some(c)) => c.type_name().to_owned(),
        (None, None) => return Err(bad("type: missing (latency or timeout)".into())),
    };
    let stream = match (obj.get("stream"), current) {
        (Some(s), _) => serde_json::from_value(s.clone())
            .map_err(|_| bad(format!("stream: {s} is neither \"upstream\" nor \"downstream\"")))?,
        (None, Some(c)) => c.stream,
        (None, None) => Stream::Downstream,
    };
    let toxicity = match (obj.get("toxicity"), current) {
        (Some(t), _) => t
            .as_f64()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| bad(format!("toxicity: {t} is not a number from 0 to 1")))?,
        (None, Some(c)) => c.toxicity,
        (None, None) => 1.0,
    };
    let empty = Map::new();
    let attributes = match obj.get("attributes") {
        Some(Value::Object(a)) => a,
        Some(other) => return Err(bad(format!("attributes: {other} is not an object"))),
        None => &empty,
    };
    let attr = |name: &str, old: u64| -> Result<u64, NetemError> {
        match attributes.get(name) {
            None => Ok(old),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad(format!("attributes.{name}: {v} is not a whole number of milliseconds"))),
        }
    };
    let kind = match (type_name.as_str(), current.map(|c| c.kind)) {
        ("latency", old) => {
            let (l, j) = match old {
                Some(ToxicKind::Latency { latency, jitter }) => (latency, jitter),
                _ => (0, 0),
            };
            ToxicKind::Latency {
                latency: attr("latency", l)?,
                jitter: attr("jitter", j)?,
            }
        }
        ("timeout", old) => {
            let t = match old {
                Some(ToxicKind::Timeout { timeout }) => timeout,
                _ => 0,
            };
            ToxicKind::Timeout {
                timeout: attr("timeout", t)?,
            }
        }
        (other, _) => {
            return Err(bad(format!(
                "type: {other:?} is not a toxic geosaga-netem implements (latency, timeout)"
            )));
        }
    };
    let name = match (obj.get("name"), current) {
        (Some(n), _) => n
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("name: a non-empty string".into()))?
            .to_owned(),
        (None, Some(c)) => c.name.clone(),
        (None, None) => format!(
            "{type_name}_{}",
            if stream == Stream::Upstream {
                "upstream"
            } else {
                "downstream"
            }
        ),
    };
    Ok(Toxic {
        name,
        stream,
        toxicity,
        kind,
    })
}

/// Every proxy, by name.
#[derive(Clone, Default)]
pub struct Netem {
    proxies: Arc<Mutex<BTreeMap<String, Arc<Link>>>>,
}

impl Netem {
    /// Creates and (if enabled) starts a proxy.
    pub async fn create(&self, spec: ProxySpec) -> Result<Arc<Link>, NetemError> {
        if spec.name.is_empty() || spec.upstream.is_empty() || spec.listen.is_empty() {
            return Err(NetemError::new(400, "name, listen and upstream must not be empty"));
        }
        let mut proxies = self.proxies.lock().await;
        if proxies.contains_key(&spec.name) {
            return Err(NetemError::new(409, format!("proxy {} already exists", spec.name)));
        }
        let link = Arc::new(Link::new(spec.name.clone(), spec.listen, spec.upstream));
        if spec.enabled {
            link.enable().await.map_err(|e| NetemError::new(500, e))?;
        }
        let listen = link.listen().await;
        tracing::info!(proxy = %spec.name, listen = %listen, upstream = %link.upstream, "proxy created");
        proxies.insert(spec.name, link.clone());
        Ok(link)
    }

    /// The proxy called `name`.
    pub async fn get(&self, name: &str) -> Result<Arc<Link>, NetemError> {
        self.proxies
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| NetemError::new(404, format!("proxy {name} not found")))
    }

    /// Every proxy, by name.
    pub async fn all(&self) -> BTreeMap<String, Arc<Link>> {
        self.proxies.lock().await.clone()
    }

    /// Stops and forgets the proxy called `name`.
    pub async fn delete(&self, name: &str) -> Result<(), NetemError> {
        let link = self
            .proxies
            .lock()
            .await
            .remove(name)
            .ok_or_else(|| NetemError::new(404, format!("proxy {name} not found")))?;
        link.disable().await;
        Ok(())
    }

    /// Toxiproxy's reset: every proxy enabled, every toxic removed (`stop`: every proxy
    /// disabled instead, on shutdown).
    pub async fn reset_all(&self, stop: bool) -> Vec<String> {
        let mut failures = Vec::new();
        for (name, link) in self.all().await {
            link.clear_toxics();
            if stop {
                link.disable().await;
            } else if let Err(e) = link.enable().await {
                failures.push(format!("{name}: {e}"));
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests;
