//! The cluster configuration: a TOML file listing the regions, the placement rules and the
//! replication settings. Every region of a cluster reads the same file (each may have its
//! own copy with different peer addresses, e.g. through a proxy; placement must agree).
//!
//! ```toml
//! quorum = "quorum"            # one | quorum | all: replica acks a strong write waits for
//! strong_timeout_ms = 2000     # a strong write not acknowledged by then fails, unapplied
//! closed_ts_interval_ms = 100  # how often a home ships its log and closes a timestamp
//! max_clock_offset_ms = 250    # the largest offset assumed between two regions' clocks
//! retention_ms = 3600000       # how long old versions stay readable
//! anti_entropy_interval_ms = 10000  # digest comparison with each peer (0: only to close gaps)
//! log_retention_entries = 100000    # most log entries kept for a slow peer (0: no limit)
//! heartbeat_interval_ms = 500  # heartbeats between members (membership, failure detection)
//! suspect_after_ms = 1500      # a member not heard from this long is suspect,
//! down_after_ms = 5000         # and down after this long
//! max_value_bytes = 1048576    # largest value a write may carry (JSON bytes; past it: 413)
//! ship_batch_bytes = 4194304   # most value bytes in one shipped batch (one larger travels alone)
//! # tokens = ["admin:...", "write:...", "read:..."]  # public routes need one (docs/security.md)
//! # insecure = false           # listen on a public address without TLS and tokens
//! # max_connections = 1024     # the server's limits (geosaga-server's defaults)
//! # header_timeout_ms = 30000
//! # idle_timeout_ms = 120000
//! # bootstrap = ["http://..."] # a region not listed below joins through a member
//!
//! # [tls]                      # mutual TLS between regions (none: plain HTTP)
//! # ca = "certs/ca.pem"        # `geosaga region certs` writes these
//! # cert = "certs/{name}.pem"  # {name}: the region's name
//! # key = "certs/{name}.key"
//!
//! [[regions]]
//! name = "us-east"
//! address = "http://127.0.0.1:7401"   # where peers and clients reach it
//! listen = "127.0.0.1:7401"           # where it binds (default: the address's host:port)
//! data = "geosaga-data/us-east.db"    # its SQLite file (default: geosaga-data/NAME.db)
//! # database = "postgres://geosaga@db-us/us_east"  # PostgreSQL instead (a database of its
//! #                                   # own; `geosaga region --database` overrides it)
//! weight = 1                          # share of the hash ring (0: rules only)
//! # clock_offset_ms = 0               # TESTING ONLY: move this region's clock (skew tests)
//!
//! [[rules]]
//! prefix = "eu/"
//! region = "eu-west"
//! # writes = "anywhere"               # accept async writes at every replica (LWW)
//! # replicas = ["eu-west", "us-east"] # only these regions hold a copy (default: all)
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::placement::{Placement, Rule};

use crate::{Error, Result};

mod storage;
pub use storage::{Storage, redact};

/// How many replica regions must durably store a strong write before the home commits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quorum {
    /// One replica.
    One,
    /// Enough replicas that, with the home, a majority of all regions has the write.
    Quorum,
    /// Every replica.
    All,
}

impl Quorum {
    /// Replica acknowledgements needed when there are `replicas` replica regions.
    pub fn needed(self, replicas: usize) -> usize {
        match self {
            Quorum::One => replicas.min(1),
            Quorum::Quorum => replicas.div_ceil(2),
            Quorum::All => replicas,
        }
    }
}

/// One region as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Its unique name.
    pub name: String,
    /// Its base URL, as peers and clients reach it.
    pub address: String,
    /// The socket address it binds (default: the host and port of `address`).
    pub listen: Option<String>,
    /// Its SQLite file (default: `geosaga-data/NAME.db`); its membership file is kept
    /// beside it (`NAME.members.json`), also when `database` names PostgreSQL.
    pub data: Option<PathBuf>,
    /// Its store, as `geosaga serve --database` takes it: a `postgres://` (or
    /// `postgresql://`) URL, or a SQLite file (`sqlite://PATH` or a path, in place of
    /// `data`). Default: the SQLite file `data`.
    pub database: Option<String>,
    /// Its share of the hash ring.
    #[serde(default = "one")]
    pub weight: u32,
    /// **For testing only**: this region's clock reads the system clock moved by this many
    /// milliseconds (negative: behind), to test clock skew between regions that run on one
    /// machine. Leave it out (0) in production: a real region's clock is its host's.
    #[serde(default)]
    pub clock_offset_ms: i64,
}

fn one() -> u32 {
    1
}

/// A prefix rule as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The key prefix.
    pub prefix: String,
    /// The home region of matching keys.
    pub region: String,
    /// Where matching keys may be written: at their home (default) or anywhere.
    #[serde(default)]
    pub writes: Writes,
    /// The regions holding a copy of matching keys (default: every region).
    #[serde(default)]
    pub replicas: Option<Vec<String>>,
}

/// Where the keys of a rule accept writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Writes {
    /// Only the home executes writes (strong or async).
    #[default]
    Home,
    /// Every replica accepts async writes; replicas merge by last-writer-wins on
    /// (timestamp, region) and count the concurrent writes that lost.
    Anywhere,
}

/// The `[tls]` section: PEM files of the cluster's CA and of this region's certificate
/// (`geosaga region certs` writes them). Paths are relative to the working directory;
/// `{name}` in `cert` and `key` stands for the region's name, so one file serves every region.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate: peers must present a certificate it signed.
    pub ca: PathBuf,
    /// This region's certificate (its name in the subject alternative names).
    pub cert: PathBuf,
    /// This region's private key.
    pub key: PathBuf,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Acks a strong write needs.
    #[serde(default = "default_quorum")]
    pub quorum: Quorum,
    /// Deadline of a strong write's replication, in milliseconds.
    #[serde(default = "default_strong_timeout")]
    pub strong_timeout_ms: u64,
    /// Interval of log shipping and closed timestamps, in milliseconds.
    #[serde(default = "default_interval")]
    pub closed_ts_interval_ms: u64,
    /// Maximum clock offset between regions, in milliseconds.
    #[serde(default = "default_offset")]
    pub max_clock_offset_ms: u64,
    /// Retention of old versions, in milliseconds.
    #[serde(default = "default_retention")]
    pub retention_ms: u64,
    /// Ring points per unit of weight.
    #[serde(default = "default_vnodes")]
    pub vnodes_per_weight: u32,
    /// Most log entries shipped in one batch.
    #[serde(default = "default_batch")]
    pub ship_batch: u32,
    /// Interval of anti-entropy rounds with each peer, in milliseconds (0: none but those
    /// that close a gap, which run about every second while one is open).
    #[serde(default = "default_anti_entropy")]
    pub anti_entropy_interval_ms: u64,
    /// Most entries the replication log keeps (0: no limit). Beyond it the oldest entries
    /// are dropped even if a peer has not acknowledged them; that peer is repaired by
    /// anti-entropy.
    #[serde(default = "default_log_retention")]
    pub log_retention_entries: u64,
    /// Interval of heartbeats between members, in milliseconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// A member not heard from for this long is `suspect`, in milliseconds.
    #[serde(default = "default_suspect")]
    pub suspect_after_ms: u64,
    /// A member not heard from for this long is `down`, in milliseconds.
    #[serde(default = "default_down")]
    pub down_after_ms: u64,
    /// Regions to join through (any member's address): set for a region that is not in
    /// the cluster's static list; it learns the cluster's configuration and members there
    /// and joins as a replica-only member (see the regions crate's `membership`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Mutual TLS between regions (and TLS for clients); none: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Tokens of the public routes, each `ROLE:SECRET` (`read`, `write`, `admin`); none:
    /// the public routes are open (docs/security.md). `geosaga region --token` replaces them.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Listen on a non-loopback address without `[tls]` and tokens.
    #[serde(default)]
    pub insecure: bool,
    /// Largest value a write may carry, in bytes of JSON; past it a write is refused (413).
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// Most bytes of values in one shipped batch (besides `ship_batch` entries); an entry
    /// larger than this travels alone.
    #[serde(default = "default_batch_bytes")]
    pub ship_batch_bytes: usize,
    /// Most connections the region's server holds at once (default 1024).
    pub max_connections: Option<usize>,
    /// Milliseconds a client has to send a request's headers (default 30000).
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a connection may move no byte before it is closed (default 120000).
    pub idle_timeout_ms: Option<u64>,
    /// The text this configuration was parsed from (handed to joining regions).
    #[serde(skip)]
    pub source: String,
    /// The regions.
    pub regions: Vec<RegionConfig>,
    /// The prefix rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_quorum() -> Quorum {
    Quorum::Quorum
}
fn default_strong_timeout() -> u64 {
    2_000
}
fn default_interval() -> u64 {
    100
}
fn default_offset() -> u64 {
    250
}
fn default_retention() -> u64 {
    3_600_000
}
fn default_vnodes() -> u32 {
    64
}
fn default_batch() -> u32 {
    500
}
fn default_heartbeat() -> u64 {
    500
}
fn default_suspect() -> u64 {
    1_500
}
fn default_down() -> u64 {
    5_000
}
fn default_anti_entropy() -> u64 {
    10_000
}
fn default_log_retention() -> u64 {
    100_000
}
fn default_max_value() -> usize {
    1 << 20
}
fn default_batch_bytes() -> usize {
    4 << 20
}

impl Config {
    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.source = text.to_owned();
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for r in &self.regions {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(Error::Config(format!(
                    "region names must be unique and not empty ({:?})",
                    r.name
                )));
            }
            if let Some(database) = &r.database {
                Storage::parse(database).map_err(|e| Error::Config(format!("region {}: {e}", r.name)))?;
            }
            if !r.address.starts_with("http://") && !r.address.starts_with("https://") {
                return Err(Error::Config(format!(
                    "region {}: address {:?} is not an http(s) URL",
                    r.name, r.address
                )));
            }
        }
        if self.heartbeat_interval_ms == 0
            || self.suspect_after_ms <= self.heartbeat_interval_ms
            || self.down_after_ms <= self.suspect_after_ms
        {
            return Err(Error::Config(
                "heartbeats need 0 < heartbeat_interval_ms < suspect_after_ms < down_after_ms".into(),
            ));
        }
        if let Some(bad) = self
            .bootstrap
            .iter()
            .find(|b| !b.starts_with("http://") && !b.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "bootstrap address {bad:?} is not an http(s) URL"
            )));
        }
        if self.max_value_bytes == 0
            || self.ship_batch_bytes == 0
            || self.max_connections == Some(0)
            || self.header_timeout_ms == Some(0)
            || self.idle_timeout_ms == Some(0)
        {
            return Err(Error::Config(
                "max_value_bytes, ship_batch_bytes and the server's limits must be above 0".into(),
            ));
        }
        if self.closed_ts_interval_ms == 0 || self.strong_timeout_ms == 0 || self.ship_batch == 0 {
            return Err(Error::Config(
                "intervals, timeouts and the batch size must be above 0".into(),
            ));
        }
        self.placement().map(|_| ())
    }

    /// The largest request body the region reads: a shipped batch at its byte bound plus
    /// one value past it, each value escaped into a JSON string (at most twice its bytes),
    /// with room for every entry's key and metadata.
    pub fn body_limit(&self) -> usize {
        2 * (self.ship_batch_bytes + self.max_value_bytes) + self.ship_batch as usize * 4096 + (1 << 20)
    }

    /// The placement function.
    pub fn placement(&self) -> Result<Placement> {
        let regions: Vec<(String, u32)> = self.regions.iter().map(|r| (r.name.clone(), r.weight)).collect();
        let rules = self
            .rules
            .iter()
            .map(|r| Rule {
                prefix: r.prefix.clone(),
                region: r.region.clone(),
                writes_anywhere: r.writes == Writes::Anywhere,
                replicas: r.replicas.clone(),
            })
            .collect();
        Placement::new(&regions, self.vnodes_per_weight, rules).map_err(Error::Config)
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Result<&RegionConfig> {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::Config(format!("no region is called {name:?}")))
    }
}

impl TlsConfig {
    /// The section for region `name`: `{name}` in `cert` and `key` replaced by it.
    pub fn for_region(&self, name: &str) -> TlsConfig {
        let fill = |p: &PathBuf| PathBuf::from(p.to_string_lossy().replace("{name}", name));
        TlsConfig {
            ca: self.ca.clone(),
            cert: fill(&self.cert),
            key: fill(&self.key),
        }
    }
}

impl RegionConfig {
    /// The socket address to bind.
    pub fn listen_addr(&self) -> String {
        self.listen.clone().unwrap_or_else(|| {
            let rest = self.address.split_once("://").map_or(self.address.as_str(), |(_, r)| r);
            rest.trim_end_matches('/').to_owned()
        })
    }

    /// The SQLite file `data` names (or its default).
    pub fn data_path(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("geosaga-data/{}.db", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
        quorum = "all"
        [[regions]]
        name = "us-east"
        address = "http://127.0.0.1:7401"
        [[regions]]
        name = "eu-west"
        address = "http://127.0.0.1:7402/"
        weight = 2
        [[regions]]
        name = "ap-south"
        address = "http://127.0.0.1:7403"
        listen = "0.0.0.0:9000"
        [[rules]]
        prefix = "eu/"
        region = "eu-west"
    "#;

    #[test]
    fn a_cluster_file_parses_with_defaults() {
        let c = Config::parse(THREE).unwrap();
        assert_eq!(c.quorum, Quorum::All);
        assert_eq!(c.closed_ts_interval_ms, 100);
        assert_eq!(c.region("eu-west").unwrap().listen_addr(), "127.0.0.1:7402");
        assert_eq!(c.region("ap-south").unwrap().listen_addr(), "0.0.0.0:9000");
        assert_eq!(c.placement().unwrap().home("eu/x").region, "eu-west");
        assert!(c.region("mars").is_err());
    }

    #[test]
    fn inconsistent_files_are_refused() {
        assert!(
            Config::parse(&THREE.replace("ap-south", "us-east")).is_err(),
            "duplicate name"
        );
        assert!(Config::parse(&THREE.replace("region = \"eu-west\"", "region = \"mars\"")).is_err());
        assert!(Config::parse(&THREE.replace("\"all\"", "\"most\"")).is_err());
        assert!(Config::parse(&format!("{THREE}\nsurprise = 1")).is_err());
        let anywhere = format!("{THREE}writes = \"anywhere\"\nreplicas = [\"eu-west\", \"us-east\"]\n");
        let placement = Config::parse(&anywhere).unwrap().placement().unwrap();
        assert_eq!(placement.writes_anywhere("eu/x"), Some("eu/"));
        assert!(!placement.replicates_to("eu/x", "ap-south"));
        let outside = THREE.replace("region = \"eu-west\"", "region = \"eu-west\"\nreplicas = [\"us-east\"]");
        assert!(Config::parse(&outside).is_err(), "the home is not among the replicas");
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(
            [Quorum::One, Quorum::Quorum, Quorum::All].map(|q| q.needed(2)),
            [1, 1, 2]
        );
        assert_eq!(
            [Quorum::One, Quorum::Quorum, Quorum::All].map(|q| q.needed(4)),
            [1, 2, 4]
        );
        assert_eq!(Quorum::Quorum.needed(0), 0);
    }
}
