//! `geosaga serve`: its options (flags, `GEOSAGA_*` variables, a TOML file), turned into a
//! [`ServerBuilder`]; the builder starts the coordinator. `geosaga dev` (`crate::dev`)
//! builds the same `Settings` its own way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use coordinator::HostPolicy;
use coordinator::retention::{self, RetentionOptions};
use coordinator::runner::region::{RegionAccess, RegionDirectory};
use observability::LogFormat;
use observability::otlp::{OtlpOptions, Protocol};
use serde::Deserialize;

use crate::region_access::{RegionAccessArgs, RegionAccessFile};
use crate::server::{Server, ServerBuilder};

/// Options of `geosaga serve`. Each can also come from a `GEOSAGA_*` variable or the
/// config file (flags win over variables, variables over the file).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the options below (`listen = "..."`, `tokens = [...]`, ...).
    #[arg(long, env = "GEOSAGA_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, env = "GEOSAGA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database: a SQLite file path (or `sqlite://PATH`), or a `postgres://` URL.
    #[arg(long, env = "GEOSAGA_DATABASE")]
    database: Option<String>,
    /// This coordinator's id (unique among coordinators sharing a database).
    #[arg(long, env = "GEOSAGA_NODE_ID")]
    node_id: Option<String>,
    /// Lease length in milliseconds: how soon others adopt this node's sagas if it dies.
    #[arg(long, env = "GEOSAGA_LEASE_MS")]
    lease_ms: Option<u64>,
    /// API tokens (`Authorization: Bearer ...`); repeat or separate with commas.
    #[arg(
        long = "token",
        env = "GEOSAGA_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Listen on a non-loopback address without tokens.
    #[arg(long)]
    insecure: bool,
    /// Hosts HTTP steps may call (`host` or `host:port`); repeat or separate with commas.
    #[arg(long = "allow-host", env = "GEOSAGA_ALLOW_HOSTS", value_delimiter = ',')]
    allow_hosts: Vec<String>,
    /// Let HTTP steps call any host.
    #[arg(long)]
    allow_any_host: bool,
    /// A region region steps may use, as `NAME=URL` (e.g. `us-east=http://10.0.0.1:7401`);
    /// repeat or separate with commas. Replaces the config file's `[regions]`.
    #[arg(long = "region", env = "GEOSAGA_REGIONS", value_delimiter = ',')]
    regions: Vec<String>,
    /// The region steps go through unless they name one (`via`); default: the first.
    #[arg(long, env = "GEOSAGA_REGION_VIA")]
    region_via: Option<String>,
    #[command(flatten)]
    region_access: RegionAccessArgs,
    /// Largest request body, in bytes.
    #[arg(long, env = "GEOSAGA_BODY_LIMIT")]
    body_limit: Option<usize>,
    /// Most sagas running at once on this node.
    #[arg(long, env = "GEOSAGA_MAX_RUNNING")]
    max_running: Option<usize>,
    #[command(flatten)]
    connections: ConnectionArgs,
    /// Base URL of a Jaeger UI, to link sagas to their traces.
    #[arg(long, env = "GEOSAGA_JAEGER_UI")]
    jaeger_ui: Option<String>,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    otlp: OtlpArgs,
    /// Log format: text or json.
    #[arg(long, env = "GEOSAGA_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// What one client may hold of the API's server (docs/security.md).
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// Most connections open at once (default 1024); past it, new ones wait to be accepted.
    #[arg(long, env = "GEOSAGA_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Milliseconds a client has to send a request's headers, from connecting or from the
    /// previous answer (default 30000); an idle keep-alive connection is closed after it.
    #[arg(long, env = "GEOSAGA_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// Milliseconds a connection may move no byte either way before it is closed (default
    /// 120000; keep it above the longest `wait_ms`, 60000).
    #[arg(long, env = "GEOSAGA_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
}

impl ConnectionArgs {
    /// The limits from these flags, else the config file's, else the defaults.
    fn limits(&self, file: &ConfigFile) -> anyhow::Result<http_server::Limits> {
        let defaults = http_server::Limits::default();
        let limits = http_server::Limits {
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            header_timeout: self
                .header_timeout_ms
                .or(file.header_timeout_ms)
                .map_or(defaults.header_timeout, Duration::from_millis),
            idle_timeout: self
                .idle_timeout_ms
                .or(file.idle_timeout_ms)
                .map_or(defaults.idle_timeout, Duration::from_millis),
        };
        if limits.max_connections == 0 || limits.header_timeout.is_zero() || limits.idle_timeout.is_zero() {
            bail!("--max-connections, --header-timeout-ms and --idle-timeout-ms must be above 0");
        }
        Ok(limits)
    }
}

/// Retention of finished sagas (off unless an age is given; docs/operations.md).
#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Delete completed and compensated sagas whose last change is older than this (`30d`,
    /// `12h`, `90m`); never running or stuck ones.
    #[arg(long, env = "GEOSAGA_RETENTION_AGE")]
    retention_age: Option<String>,
    /// Archive sagas to this directory (JSON lines, synced) before deleting them.
    #[arg(long, env = "GEOSAGA_RETENTION_ARCHIVE")]
    retention_archive: Option<PathBuf>,
    /// Sagas deleted per batch (default 100): each batch is one short write.
    #[arg(long, env = "GEOSAGA_RETENTION_BATCH")]
    retention_batch: Option<u32>,
    /// How long a saga started with an idempotency key is kept at least, so that a repeated
    /// start finds it (default 24h, at most the retention age).
    #[arg(long, env = "GEOSAGA_IDEMPOTENCY_WINDOW")]
    idempotency_window: Option<String>,
}

/// Where traces go. Without an endpoint here or in the `OTEL_EXPORTER_OTLP_*` variables,
/// no trace is exported.
#[derive(Args, Debug)]
pub struct OtlpArgs {
    /// Export traces over OTLP to this collector (e.g. `http://127.0.0.1:4317`); the
    /// default comes from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long)]
    pub(crate) otlp_endpoint: Option<String>,
    /// The OTLP transport: grpc or http/protobuf (default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).
    #[arg(long)]
    pub(crate) otlp_protocol: Option<Protocol>,
}

/// The config file: the same options as the flags.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    database: Option<String>,
    node_id: Option<String>,
    lease_ms: Option<u64>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    allow_hosts: Vec<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    insecure: bool,
    /// `[regions]`: name = base URL, in the order written.
    #[serde(default)]
    regions: toml::Table,
    region_via: Option<String>,
    region_ca: Option<PathBuf>,
    region_cert: Option<PathBuf>,
    region_key: Option<PathBuf>,
    region_token: Option<String>,
    body_limit: Option<usize>,
    max_running: Option<usize>,
    max_connections: Option<usize>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    jaeger_ui: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    retention_age: Option<String>,
    retention_archive: Option<PathBuf>,
    retention_batch: Option<u32>,
    idempotency_window: Option<String>,
}

/// Everything a coordinator is started with, from `serve`'s options or `dev`'s.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) database: String,
    pub(crate) node_id: Option<String>,
    pub(crate) lease: Duration,
    pub(crate) tokens: Vec<String>,
    pub(crate) insecure: bool,
    pub(crate) hosts: HostPolicy,
    pub(crate) regions: RegionDirectory,
    pub(crate) region_access: RegionAccess,
    pub(crate) body_limit: usize,
    pub(crate) max_running: usize,
    pub(crate) limits: http_server::Limits,
    pub(crate) jaeger_ui: Option<String>,
    pub(crate) otlp: OtlpOptions,
    pub(crate) retention: Option<RetentionOptions>,
}

/// The regions region steps may use: `--region NAME=URL` flags, else the config file's
/// `[regions]` table; `--region-via` (or `region_via`) names the default.
pub(crate) fn region_directory(
    flags: &[String],
    file: &toml::Table,
    via: Option<String>,
) -> anyhow::Result<RegionDirectory> {
    let mut regions = Vec::new();
    if flags.iter().any(|f| !f.is_empty()) {
        for flag in flags.iter().filter(|f| !f.is_empty()) {
            let (name, url) = flag
                .split_once('=')
                .with_context(|| format!("--region {flag:?}: expected NAME=URL"))?;
            regions.push((name.trim().to_owned(), url.trim().to_owned()));
        }
    } else {
        for (name, url) in file {
            let url = url
                .as_str()
                .with_context(|| format!("[regions] {name}: expected a URL string"))?;
            regions.push((name.clone(), url.to_owned()));
        }
    }
    RegionDirectory::new(regions, via).map_err(anyhow::Error::msg)
}

/// Retention from the flags, else the config file: `None` without an age.
fn retention_options(args: RetentionArgs, file: &ConfigFile) -> anyhow::Result<Option<RetentionOptions>> {
    let Some(age) = args.retention_age.or(file.retention_age.clone()) else {
        return Ok(None);
    };
    let age = retention::parse_duration(&age)
        .map_err(anyhow::Error::msg)
        .context("--retention-age")?;
    let mut options = RetentionOptions::new(age);
    if let Some(window) = args.idempotency_window.or(file.idempotency_window.clone()) {
        options.idempotency_window = retention::parse_duration(&window)
            .map_err(anyhow::Error::msg)
            .context("--idempotency-window")?;
    }
    if let Some(batch) = args.retention_batch.or(file.retention_batch) {
        options.batch = batch;
    }
    options.archive = args.retention_archive.or(file.retention_archive.clone());
    options.check().map_err(anyhow::Error::msg).context("retention")?;
    Ok(Some(options))
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let file: ConfigFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display()))?
        }
        None => ConfigFile::default(),
    };
    let retention = retention_options(args.retention, &file)?;
    let limits = args.connections.limits(&file)?;
    let tokens = if args.tokens.is_empty() {
        file.tokens
    } else {
        args.tokens
    };
    let allow_hosts = if args.allow_hosts.is_empty() {
        file.allow_hosts
    } else {
        args.allow_hosts
    };
    let hosts = if args.allow_any_host || file.allow_any_host {
        HostPolicy::Any
    } else {
        HostPolicy::Only(allow_hosts)
    };
    let file_protocol = match file.otlp_protocol.as_deref() {
        Some(p) => Some(
            p.parse::<Protocol>()
                .map_err(anyhow::Error::msg)
                .context("otlp_protocol in the config file")?,
        ),
        None => None,
    };
    let regions = region_directory(&args.regions, &file.regions, args.region_via.or(file.region_via))
        .context("the regions of region steps")?;
    let region_access = args.region_access.access(RegionAccessFile {
        region_ca: file.region_ca,
        region_cert: file.region_cert,
        region_key: file.region_key,
        region_token: file.region_token,
    })?;
    Ok(Settings {
        retention,
        regions,
        region_access,
        limits,
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7379".parse().expect("an address")),
        database: args
            .database
            .or(file.database)
            .unwrap_or_else(|| "./geosaga-data/geosaga.db".to_owned()),
        node_id: args.node_id.or(file.node_id),
        lease: Duration::from_millis(args.lease_ms.or(file.lease_ms).unwrap_or(10_000)),
        tokens: tokens.into_iter().filter(|t| !t.is_empty()).collect(),
        insecure: args.insecure || file.insecure,
        hosts,
        body_limit: args.body_limit.or(file.body_limit).unwrap_or(1024 * 1024),
        max_running: args.max_running.or(file.max_running).unwrap_or(10_000),
        jaeger_ui: args.jaeger_ui.or(file.jaeger_ui),
        otlp: OtlpOptions {
            endpoint: args.otlp.otlp_endpoint.or(file.otlp_endpoint),
            protocol: args.otlp.otlp_protocol.or(file_protocol),
            instance_id: None,
        },
    })
}

impl Settings {
    /// The builder these settings describe: the one way a coordinator is started.
    pub(crate) fn apply(self, builder: ServerBuilder) -> ServerBuilder {
        let mut builder = builder
            .listen(self.listen)
            .database(self.database)
            .lease(self.lease)
            .insecure(self.insecure)
            .hosts(self.hosts)
            .regions(self.regions)
            .region_access(self.region_access)
            .connection_limits(self.limits)
            .body_limit(self.body_limit)
            .max_running(self.max_running)
            .otlp(self.otlp)
            .retention(self.retention);
        if let Some(node_id) = self.node_id {
            builder = builder.node_id(node_id);
        }
        if let Some(jaeger_ui) = self.jaeger_ui {
            builder = builder.jaeger_ui(jaeger_ui);
        }
        self.tokens.into_iter().fold(builder, ServerBuilder::token)
    }
}

/// `builder` with the options of `args` (flags, `GEOSAGA_*` variables, the config file):
/// what `geosaga serve` runs, and what [`ServerBuilder::cli`] gives a service of its own.
pub fn configure(builder: ServerBuilder, args: ServeArgs) -> anyhow::Result<ServerBuilder> {
    let log_format = args.log_format;
    Ok(settings(args)?.apply(builder).log_format(Some(log_format)))
}

/// `geosaga serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    configure(Server::builder(), args)?.serve().await?;
    Ok(())
}
