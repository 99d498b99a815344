//! `geosaga serve` and `geosaga dev`: their options (flags, `GEOSAGA_*` variables, a TOML
//! file), turned into a [`ServerBuilder`]; the builder starts the coordinator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use crate::server::{LOG_FILTER, Server, ServerBuilder};

/// The example definitions `geosaga dev` registers.
const EXAMPLES: &[(&str, &str)] = &[
    ("transfer.json", include_str!("../examples/transfer.json")),
    ("book_trip.json", include_str!("../examples/book_trip.json")),
];

/// The example `geosaga dev` registers when its three regions run (its steps need them).
const REGION_EXAMPLE: (&str, &str) = (
    "transfer_regions.json",
    include_str!("../examples/transfer_regions.json"),
);

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
    otlp_endpoint: Option<String>,
    /// The OTLP transport: grpc or http/protobuf (default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).
    #[arg(long)]
    otlp_protocol: Option<Protocol>,
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

/// Options of `geosaga dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:7379")]
    listen: SocketAddr,
    /// Address of the demo participant service.
    #[arg(long, default_value = "127.0.0.1:7380")]
    demo_listen: SocketAddr,
    /// Where the SQLite databases live.
    #[arg(long, default_value = "./geosaga-data")]
    data_dir: PathBuf,
    /// Port of the first of the three dev regions (the next two follow); 0 picks free ports.
    #[arg(long, default_value_t = 7401)]
    regions_port: u16,
    /// Do not start the three dev regions.
    #[arg(long)]
    no_regions: bool,
    /// Base URL of a Jaeger UI, to link sagas to their traces (e.g. `http://127.0.0.1:16686`).
    #[arg(long)]
    jaeger_ui: Option<String>,
    #[command(flatten)]
    otlp: OtlpArgs,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

struct Settings {
    listen: SocketAddr,
    database: String,
    node_id: Option<String>,
    lease: Duration,
    tokens: Vec<String>,
    insecure: bool,
    hosts: HostPolicy,
    regions: RegionDirectory,
    region_access: RegionAccess,
    body_limit: usize,
    max_running: usize,
    limits: http_server::Limits,
    jaeger_ui: Option<String>,
    otlp: OtlpOptions,
    retention: Option<RetentionOptions>,
}

/// The regions region steps may use: `--region NAME=URL` flags, else the config file's
/// `[regions]` table; `--region-via` (or `region_via`) names the default.
fn region_directory(flags: &[String], file: &toml::Table, via: Option<String>) -> anyhow::Result<RegionDirectory> {
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
    fn apply(self, builder: ServerBuilder) -> ServerBuilder {
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

/// `geosaga dev`.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    observability::init_logging(args.log_format, LOG_FILTER);
    let demo = crate::demo::serve(args.demo_listen)
        .await
        .with_context(|| format!("starting the demo participant on {}", args.demo_listen))?;
    let regions = if args.no_regions {
        Vec::new()
    } else {
        std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
        crate::dev_regions::start(&args.data_dir, args.regions_port).await?
    };
    // Region steps go through us-east, as a coordinator there would.
    let directory = RegionDirectory::new(regions.clone(), regions.first().map(|(name, _)| name.clone()))
        .map_err(anyhow::Error::msg)?;
    let settings = Settings {
        regions: directory,
        region_access: RegionAccess::default(),
        listen: args.listen,
        database: args.data_dir.join("geosaga.db").display().to_string(),
        node_id: Some("local".to_owned()),
        lease: Duration::from_secs(10),
        tokens: Vec::new(),
        insecure: false,
        hosts: HostPolicy::Any,
        body_limit: 1024 * 1024,
        max_running: 10_000,
        limits: http_server::Limits::default(),
        jaeger_ui: args.jaeger_ui,
        otlp: OtlpOptions {
            endpoint: args.otlp.otlp_endpoint,
            protocol: args.otlp.otlp_protocol,
            instance_id: None,
        },
        retention: None,
    };
    let with_regions = (!regions.is_empty()).then_some(&REGION_EXAMPLE);
    let mut builder = settings.apply(Server::builder()).log_format(None);
    for (file, text) in EXAMPLES.iter().chain(with_regions) {
        let mut doc: serde_json::Value = serde_json::from_str(text).with_context(|| format!("example {file}"))?;
        rebase_urls(&mut doc, demo);
        builder = builder.definition(doc);
    }
    let server = builder.start().await?;
    if let Some((_, us_east)) = regions.first() {
        crate::dev_regions::seed_accounts(us_east).await;
    }
    println!("{}", welcome(server.local_addr(), &args.data_dir, &regions));
    server.serve().await?;
    Ok(())
}

/// Points the examples' URLs at the demo participant's actual address.
fn rebase_urls(doc: &mut serde_json::Value, demo: SocketAddr) {
    match doc {
        serde_json::Value::String(s) if s.starts_with("http://127.0.0.1:7380") => {
            *s = s.replacen("http://127.0.0.1:7380", &format!("http://{demo}"), 1);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rebase_urls(v, demo)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| rebase_urls(v, demo)),
        _ => {}
    }
}

fn welcome(api: SocketAddr, data_dir: &Path, regions: &[(String, String)]) -> String {
    let mut text = welcome_sagas(api, data_dir);
    if let Some((_, first)) = regions.first() {
        text.push_str("\nRegions (geo-distributed key-value layer, see docs/regions.md):\n");
        for (name, address) in regions {
            text.push_str(&format!("  {name:<9} {address}\n"));
        }
        text.push_str(&format!(
            "  geosaga saga start transfer_regions --input '{{\"from\":\"us/alice\",\"to\":\"eu/bob\",\"amount\":300}}' --wait   # money across regions\n  curl -s -X PUT {first}/v1/kv/eu/alice -H 'content-type: application/json' -d '{{\"value\": 100, \"consistency\": \"strong\"}}'\n  curl -s '{first}/v1/kv/eu/alice?consistency=bounded_staleness&max_staleness_ms=5000'\n"
        ));
    }
    text
}

fn welcome_sagas(api: SocketAddr, data_dir: &Path) -> String {
    let data_dir = data_dir.display();
    format!(
        r#"
geosaga dev is running: API on http://{api}, data in {data_dir} (SQLite).
Web console: http://{api}/ui
Examples registered: transfer, book_trip. Try, in another terminal:

  geosaga saga start transfer --input '{{"from":"alice","to":"bob","amount":50}}' --wait
  geosaga saga start transfer --input '{{"from":"alice","to":"closed","amount":50}}' --wait   # credit fails: debit is refunded
  geosaga saga start transfer --input '{{"from":"alice","to":"flaky","amount":50}}' --wait    # notify retries twice, then succeeds
  geosaga saga list
  geosaga saga events <ID>

or with curl:
  curl -s http://{api}/v1/sagas -H 'content-type: application/json' \
       -d '{{"definition":"transfer","input":{{"from":"alice","to":"closed","amount":50}}}}'
"#
    )
}
