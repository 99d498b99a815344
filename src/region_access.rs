//! `geosaga serve`'s settings for reaching the regions: the cluster CA, the client
//! certificate and the token (flags, variables, or the config file; docs/security.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use coordinator::runner::region::RegionAccess;

/// How region steps reach TLS regions that ask for a token.
#[derive(Args, Debug, Default)]
pub struct RegionAccessArgs {
    /// The cluster CA (PEM) that `https://` regions' certificates must chain to.
    #[arg(long, env = "GEOSAGA_REGION_CA")]
    region_ca: Option<PathBuf>,
    /// A certificate (PEM) presented to the regions as this coordinator's client
    /// certificate (`geosaga region certs` writes one per name); needs --region-key.
    #[arg(long, env = "GEOSAGA_REGION_CERT", requires = "region_key")]
    region_cert: Option<PathBuf>,
    /// The private key (PEM) of --region-cert.
    #[arg(long, env = "GEOSAGA_REGION_KEY", requires = "region_cert")]
    region_key: Option<PathBuf>,
    /// A token with the `write` role on the regions, sent as `Authorization: Bearer`.
    #[arg(long, env = "GEOSAGA_REGION_TOKEN", hide_env_values = true)]
    region_token: Option<String>,
}

/// The same settings from the config file (`region_ca = "..."`, ...).
#[derive(Debug, Default)]
pub struct RegionAccessFile {
    /// `region_ca`.
    pub region_ca: Option<PathBuf>,
    /// `region_cert`.
    pub region_cert: Option<PathBuf>,
    /// `region_key`.
    pub region_key: Option<PathBuf>,
    /// `region_token`.
    pub region_token: Option<String>,
}

impl RegionAccessArgs {
    /// The flags, else the config file's settings, read into a [`RegionAccess`].
    pub fn access(self, file: RegionAccessFile) -> anyhow::Result<RegionAccess> {
        let ca = self.region_ca.or(file.region_ca);
        let (cert, key) = match (self.region_cert, self.region_key) {
            (Some(cert), Some(key)) => (Some(cert), Some(key)),
            _ => (file.region_cert, file.region_key),
        };
        let identity_pem = match (cert, key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(&cert, "--region-cert")?;
                pem.push(b'\n');
                pem.extend(read(&key, "--region-key")?);
                Some(pem)
            }
            (None, None) => None,
            _ => bail!("region_cert and region_key go together"),
        };
        let access = RegionAccess {
            ca_pem: ca.map(|ca| read(&ca, "--region-ca")).transpose()?,
            identity_pem,
            token: self.region_token.or(file.region_token).filter(|t| !t.is_empty()),
        };
        // Read now, so that a bad file stops the start-up rather than every region step.
        access.client().map_err(anyhow::Error::msg)?;
        Ok(access)
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what}: reading {}", path.display()))
}
