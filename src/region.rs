//! `geosaga region`: runs one region of the geo-distributed key-value layer (see the
//! `regions` crate and `docs/regions.md`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use observability::LogFormat;

/// Arguments of `geosaga region`.
#[derive(Args)]
pub struct RegionArgs {
    /// The cluster's configuration file (TOML: regions, placement rules, replication).
    #[arg(long, env = "GEOSAGA_REGIONS_CONFIG")]
    config: PathBuf,
    /// Which of the configured regions this process is.
    #[arg(long, env = "GEOSAGA_REGION")]
    name: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

/// `geosaga region`.
pub async fn run(args: RegionArgs) -> anyhow::Result<()> {
    observability::init_logging(args.log_format, "info");
    let config = regions::Config::load(&args.config)?;
    regions::serve(config, &args.name, crate::serve::shutdown_signal())
        .await
        .with_context(|| format!("running region {}", args.name))
}
