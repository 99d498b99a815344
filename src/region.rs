//! `geosaga region`: runs one region of the geo-distributed key-value layer (see the
//! `regions` crate and `docs/regions.md`); `geosaga region certs` makes the certificates
//! for mutual TLS between regions.

use geosaga::outln;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use observability::LogFormat;

/// Arguments of `geosaga region`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RegionArgs {
    #[command(subcommand)]
    command: Option<RegionCommand>,
    /// The cluster's configuration file (TOML: regions, placement rules, replication).
    #[arg(long, env = "GEOSAGA_REGIONS_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Which region this process is (listed in the file; with --join, the file may list
    /// this region only).
    #[arg(long, env = "GEOSAGA_REGION", required = true)]
    name: Option<String>,
    /// Join a running cluster through this member's URL (repeatable; adds to the file's
    /// `bootstrap`). The region joins as a replica-only member.
    #[arg(long = "join", value_name = "URL")]
    join: Vec<String>,
    /// This region's store, in place of the file's `database`/`data`: a `postgres://` URL
    /// (a database of its own), or a SQLite file path (or `sqlite://PATH`).
    #[arg(long, env = "GEOSAGA_REGION_DATABASE")]
    database: Option<String>,
    /// Tokens of the public routes, `ROLE:SECRET` (`read`, `write` or `admin`); repeat or
    /// separate with commas. Replaces the file's `tokens` (docs/security.md).
    #[arg(
        long = "token",
        env = "GEOSAGA_REGION_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Listen on a non-loopback address without TLS between regions and tokens.
    #[arg(long)]
    insecure: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum RegionCommand {
    /// Back up a region's SQLite store while it runs (PostgreSQL: pg_dump). The copy is
    /// marked restored: a region opened on it starts a new log incarnation and takes its
    /// later writes back from its peers (docs/operations.md).
    Backup(crate::region_backup::BackupArgs),
    /// Replace a stopped region's SQLite store with a backup, or (PostgreSQL, after
    /// pg_restore) mark its database restored, so that it rejoins its peers safely.
    Restore(crate::region_backup::RestoreArgs),
    /// Write a cluster CA (or reuse the one in --out) and a certificate and key per region,
    /// for mutual TLS between regions (the `[tls]` section of the configuration).
    Certs {
        /// The directory to write `ca.pem`, `ca.key`, `NAME.pem` and `NAME.key` into.
        #[arg(long)]
        out: PathBuf,
        /// The regions, comma-separated (each name goes into its certificate).
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// Further host names or IP addresses every certificate is valid for (the hosts in
        /// the regions' addresses), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
    },
}

/// `geosaga region`.
pub async fn run(args: RegionArgs) -> anyhow::Result<()> {
    match args.command {
        Some(RegionCommand::Backup(args)) => return crate::region_backup::backup(args).await,
        Some(RegionCommand::Restore(args)) => return crate::region_backup::restore(args).await,
        Some(RegionCommand::Certs { .. }) | None => {}
    }
    if let Some(RegionCommand::Certs { out, regions, hosts }) = args.command {
        let written = regions::tls::generate(&out, &regions, &hosts)?;
        outln!(
            "cluster CA: {} (its key {} signs new regions' certificates: keep it private)",
            written.ca.0.display(),
            written.ca.1.display()
        );
        for (name, cert, key) in &written.regions {
            outln!("{name}: {} {}", cert.display(), key.display());
        }
        let dir = out.display().to_string().trim_end_matches('/').to_owned();
        outln!(
            "\nIn the regions' configuration (addresses https://...; {{name}} stands for each region's name):\n\n\
             [tls]\nca = \"{dir}/ca.pem\"\ncert = \"{dir}/{{name}}.pem\"\nkey = \"{dir}/{{name}}.key\""
        );
        return Ok(());
    }
    let (Some(config_path), Some(name)) = (args.config, args.name) else {
        anyhow::bail!("geosaga region needs --config and --name");
    };
    observability::init_logging(args.log_format, "info");
    let mut config = regions::load_config(&config_path)?;
    config.bootstrap.extend(args.join);
    let tokens: Vec<String> = args.tokens.into_iter().filter(|t| !t.is_empty()).collect();
    if !tokens.is_empty() {
        regions::api::auth::Tokens::parse(&tokens).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
        config.tokens = tokens;
    }
    config.insecure |= args.insecure;
    if let Some(database) = args.database {
        regions::config::Storage::parse(&database).map_err(|e| anyhow::anyhow!("--database: {e}"))?;
        match config.regions.iter_mut().find(|r| r.name == name) {
            Some(me) => me.database = Some(database),
            None => anyhow::bail!("--database: no region is called {name:?} in {}", config_path.display()),
        }
    }
    if let Some(bad) = config
        .bootstrap
        .iter()
        .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
    {
        anyhow::bail!("--join {bad:?}: not an http(s) URL");
    }
    regions::serve(config, &name, geosaga::server::shutdown_signal())
        .await
        .with_context(|| format!("running region {name}"))
}
