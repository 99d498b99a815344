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
//!
//! [[regions]]
//! name = "us-east"
//! address = "http://127.0.0.1:7401"   # where peers and clients reach it
//! listen = "127.0.0.1:7401"           # where it binds (default: the address's host:port)
//! data = "geosaga-data/us-east.db"    # its SQLite file (default: geosaga-data/NAME.db)
//! weight = 1                          # share of the hash ring (0: rules only)
//!
//! [[rules]]
//! prefix = "eu/"
//! region = "eu-west"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::placement::{Placement, Rule};
use crate::{Error, Result};

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
    /// Its SQLite file (default: `geosaga-data/NAME.db`).
    pub data: Option<PathBuf>,
    /// Its share of the hash ring.
    #[serde(default = "one")]
    pub weight: u32,
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

impl Config {
    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Config::parse(&text)
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
            if !r.address.starts_with("http://") && !r.address.starts_with("https://") {
                return Err(Error::Config(format!(
                    "region {}: address {:?} is not an http(s) URL",
                    r.name, r.address
                )));
            }
        }
        if self.closed_ts_interval_ms == 0 || self.strong_timeout_ms == 0 || self.ship_batch == 0 {
            return Err(Error::Config(
                "intervals, timeouts and the batch size must be above 0".into(),
            ));
        }
        self.placement().map(|_| ())
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

impl RegionConfig {
    /// The socket address to bind.
    pub fn listen_addr(&self) -> String {
        self.listen.clone().unwrap_or_else(|| {
            let rest = self.address.split_once("://").map_or(self.address.as_str(), |(_, r)| r);
            rest.trim_end_matches('/').to_owned()
        })
    }

    /// The SQLite file.
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
