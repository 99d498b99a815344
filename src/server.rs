//! [`Server`]: a coordinator with its REST API, web console, metrics and traces, built in a
//! few lines around sagas written in Rust. `geosaga serve` is this builder configured from
//! its flags ([`crate::serve`]); a service of your own gets the same flags with
//! [`ServerBuilder::cli`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use geosaga::{RustSaga, Server, StepContext, StepError};
//!
//! struct Bank; // your own dependencies: a pool, a client
//!
//! async fn debit(_: Arc<Bank>, cx: StepContext) -> Result<serde_json::Value, StepError> {
//!     let input: serde_json::Value = cx.input()?;
//!     Ok(serde_json::json!({"debited": input["amount"]}))
//! }
//! async fn refund(_: Arc<Bank>, _: StepContext) -> Result<(), StepError> {
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), geosaga::server::Error> {
//! Server::builder()
//!     .database("./bank.db")
//!     .saga(RustSaga::new("transfer", Arc::new(Bank)).step("debit", debit).compensate(refund))
//!     .serve()
//!     .await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coordinator::api::{ApiState, DEFAULT_BODY_LIMIT, app};
use coordinator::retention::{self, Retention, RetentionOptions};
use coordinator::runner::region::{RegionAccess, RegionDirectory};
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;
use coordinator::{Coordinator, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga, Store};
use observability::LogFormat;
use observability::otlp::{OtlpOptions, Telemetry};
use sagas::{SagaDefinition, ValidationErrors};
use serde_json::Value;

/// Log levels without `RUST_LOG`: the OpenTelemetry SDK says only what goes wrong
/// (failed exports), not what it does.
pub const LOG_FILTER: &str = "info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry-otlp=warn";

/// Why a server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options do not make a server (a public address without tokens, a bad region).
    #[error("{0}")]
    Config(String),
    /// The database could not be opened.
    #[error("opening the database {database}")]
    Database {
        /// Where (credentials redacted).
        database: String,
        /// Why.
        #[source]
        source: coordinator::Error,
    },
    /// The coordinator failed (its store, registering a definition).
    #[error(transparent)]
    Coordinator(#[from] coordinator::Error),
    /// A saga written in Rust does not validate.
    #[error("saga `{name}` does not validate: {errors}")]
    Invalid {
        /// The saga's name.
        name: String,
        /// Every fault.
        errors: ValidationErrors,
    },
    /// The address could not be bound, or serving failed.
    #[error("serving on {listen}")]
    Io {
        /// The address.
        listen: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The trace exporter could not be set up.
    #[error("setting up trace export: {0}")]
    Telemetry(String),
}

type SagaRegistration = Box<dyn FnOnce(&HandlerRegistry) -> Result<SagaDefinition, Error> + Send>;

/// How to build a [`Server`]; every option has the default of `geosaga serve`.
pub struct ServerBuilder {
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
    log_format: Option<LogFormat>,
    sagas: Vec<SagaRegistration>,
    definitions: Vec<Value>,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        ServerBuilder {
            listen: "127.0.0.1:7379".parse().expect("an address"),
            database: "./geosaga-data/geosaga.db".to_owned(),
            node_id: None,
            lease: Duration::from_secs(10),
            tokens: Vec::new(),
            insecure: false,
            hosts: HostPolicy::Only(Vec::new()),
            regions: RegionDirectory::default(),
            region_access: RegionAccess::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            max_running: 10_000,
            limits: http_server::Limits::default(),
            jaeger_ui: None,
            otlp: OtlpOptions::default(),
            retention: None,
            log_format: Some(LogFormat::Text),
            sagas: Vec::new(),
            definitions: Vec::new(),
        }
    }
}

impl ServerBuilder {
    /// Takes every option `geosaga serve` takes from this process's command line, its
    /// `GEOSAGA_*` variables and its `--config` file; the sagas added stay. Exits with a
    /// usage message on bad flags, as `geosaga serve` does.
    pub fn cli(self) -> Result<ServerBuilder, Error> {
        use clap::{Args, Command, FromArgMatches};
        let name = std::env::args().next().unwrap_or_else(|| "server".into());
        let command = crate::serve::ServeArgs::augment_args(Command::new("server").bin_name(name));
        let matches = command.get_matches();
        let args = crate::serve::ServeArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        crate::serve::configure(self, args).map_err(|e| Error::Config(format!("{e:#}")))
    }

    /// Address of the REST API (default `127.0.0.1:7379`; port 0 picks a free one).
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// The database: a SQLite file path (or `sqlite://PATH`), or a `postgres://` URL
    /// (default `./geosaga-data/geosaga.db`).
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// This coordinator's id (default: `local` on SQLite, a fresh one on PostgreSQL).
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// How soon others adopt this node's sagas if it dies (default 10 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Accepts `token` as `Authorization: Bearer <token>` (without any, no authentication).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Listens on a non-loopback address without tokens.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Which hosts HTTP steps may call (default: none; Rust steps call what they like).
    pub fn hosts(mut self, hosts: HostPolicy) -> Self {
        self.hosts = hosts;
        self
    }

    /// The regions region steps may use.
    pub fn regions(mut self, regions: RegionDirectory) -> Self {
        self.regions = regions;
        self
    }

    /// How region steps reach TLS regions that ask for a token: the cluster CA, this
    /// coordinator's client certificate, the `write` token (default: plain HTTP, no token;
    /// docs/security.md).
    pub fn region_access(mut self, access: RegionAccess) -> Self {
        self.region_access = access;
        self
    }

    /// What one client may hold of the API's server: most connections at once, the
    /// header-read and idle timeouts (default 1024, 30 s, 120 s; docs/security.md).
    pub fn connection_limits(mut self, limits: crate::ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Largest request body, in bytes (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Most sagas running at once on this node (default 10,000).
    pub fn max_running(mut self, sagas: usize) -> Self {
        self.max_running = sagas;
        self
    }

    /// Base URL of a Jaeger UI, to link sagas to their traces.
    pub fn jaeger_ui(mut self, url: impl Into<String>) -> Self {
        self.jaeger_ui = Some(url.into());
        self
    }

    /// Where traces go (default: the `OTEL_EXPORTER_OTLP_*` variables, else nowhere).
    pub fn otlp(mut self, otlp: OtlpOptions) -> Self {
        self.otlp = otlp;
        self
    }

    /// Deletes (and archives) finished sagas past an age (default: off; docs/operations.md).
    pub fn retention(mut self, retention: Option<RetentionOptions>) -> Self {
        self.retention = retention;
        self
    }

    /// The log format of the subscriber the server installs (default text); `None`
    /// installs none, for a process that sets up `tracing` itself.
    pub fn log_format(mut self, format: Option<LogFormat>) -> Self {
        self.log_format = format;
        self
    }

    /// Adds a saga written in Rust: its handlers are registered and its definition stored
    /// (a changed saga becomes a new version, as a changed JSON file does).
    pub fn saga<C: Send + Sync + 'static>(mut self, saga: RustSaga<C>) -> Self {
        self.sagas.push(Box::new(move |registry| {
            let name = saga.document().name.clone();
            saga.build(registry).map_err(|errors| Error::Invalid { name, errors })
        }));
        self
    }

    /// Adds a definition document (JSON, as `geosaga definitions apply` sends it).
    pub fn definition(mut self, document: Value) -> Self {
        self.definitions.push(document);
        self
    }

    /// Opens the store, starts the coordinator (which resumes the sagas it owned), stores
    /// the sagas and definitions added, and binds the address. Serve it with
    /// [`Server::serve`].
    pub async fn start(self) -> Result<Server, Error> {
        if let Some(format) = self.log_format {
            observability::init_logging(format, LOG_FILTER);
        }
        if !self.listen.ip().is_loopback() && self.tokens.is_empty() && !self.insecure {
            return Err(Error::Config(format!(
                "refusing to listen on {} without API tokens: pass --token (or GEOSAGA_TOKENS), or --insecure to accept the risk",
                self.listen
            )));
        }
        let (store, shared) = open_store(&self.database).await.map_err(|source| Error::Database {
            database: redact(&self.database),
            source,
        })?;
        // On a shared database every coordinator needs its own id; on SQLite one process
        // owns the file, and a stable id lets a restart resume its sagas at once.
        let node_id = self.node_id.clone().unwrap_or_else(|| {
            if shared {
                format!("node-{}", uuid::Uuid::new_v4().simple())
            } else {
                "local".to_owned()
            }
        });
        // Before the coordinator starts, so that the sagas it resumes are traced too.
        let otlp = OtlpOptions {
            instance_id: Some(node_id.clone()),
            ..self.otlp.clone()
        };
        let telemetry = observability::otlp::install(&otlp).map_err(|e| Error::Telemetry(e.to_string()))?;
        if let Some(t) = &telemetry {
            tracing::info!(endpoint = %t.endpoint, protocol = %t.protocol, "exporting traces over OTLP");
        }
        // Handlers first: a resumed saga may call them as soon as the coordinator starts.
        let registry = HandlerRegistry::new();
        let definitions: Vec<SagaDefinition> = self
            .sagas
            .into_iter()
            .map(|register| register(&registry))
            .collect::<Result<_, _>>()?;
        let runners = Runners {
            http: HttpRunner::new(self.hosts)
                .with_regions(self.regions)
                .with_region_access(&self.region_access)
                .map_err(Error::Config)?,
            rust: registry,
            faults: Arc::new(Faults::new()),
        };
        let options = Options {
            node_id: node_id.clone(),
            lease: self.lease,
            max_running: self.max_running,
            ..Options::default()
        };
        let coordinator = Coordinator::start(store.clone(), runners, options).await?;
        let retention = match self.retention {
            Some(options) => {
                tracing::info!(
                    age = %retention::show(options.age),
                    idempotency_window = %retention::show(options.idempotency_window),
                    archive = ?options.archive,
                    "retention on"
                );
                Some(Retention::start(
                    store,
                    options,
                    &node_id,
                    coordinator.metrics().clone(),
                )?)
            }
            None => None,
        };
        for definition in &definitions {
            let put = coordinator.register(definition).await?;
            tracing::info!(definition = %put.record.name, version = put.record.version, "saga registered");
        }
        for document in &self.definitions {
            let put = coordinator.register_definition(document).await?;
            tracing::info!(definition = %put.record.name, version = put.record.version, "definition registered");
        }
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Io {
                listen: self.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            listen: self.listen,
            source,
        })?;
        tracing::info!(listen = %local_addr, node_id, database = %redact(&self.database), "coordinator started");
        let state = ApiState {
            coordinator: coordinator.clone(),
            tokens: self.tokens,
            body_limit: self.body_limit,
            jaeger_ui: self.jaeger_ui,
        };
        Ok(Server {
            coordinator,
            listener,
            local_addr,
            limits: self.limits,
            state,
            telemetry,
            retention,
        })
    }

    /// [`ServerBuilder::start`], then [`Server::serve`] until Ctrl-C or SIGTERM.
    pub async fn serve(self) -> Result<(), Error> {
        self.start().await?.serve().await
    }
}

/// A started coordinator with its bound API address.
pub struct Server {
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    limits: http_server::Limits,
    state: ApiState,
    telemetry: Option<Telemetry>,
    retention: Option<Retention>,
}

impl Server {
    /// A builder with the defaults of `geosaga serve`.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The coordinator, to start sagas from Rust (`start_and_wait`) or register more.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Serves the API until Ctrl-C or SIGTERM, then hands the running sagas over.
    pub async fn serve(self) -> Result<(), Error> {
        self.serve_until(shutdown_signal()).await
    }

    /// Serves the API until `shutdown` resolves, then stops taking requests, hands the
    /// running sagas over (their leases end, so another coordinator or the next start
    /// resumes them) and flushes the traces.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let Server {
            coordinator,
            listener,
            local_addr,
            limits,
            state,
            telemetry,
            retention,
        } = self;
        let served = http_server::serve(listener, app(state), limits, None, shutdown).await;
        drop(retention);
        tracing::info!("shutting down; handing over running sagas");
        let handed_over = coordinator.shutdown().await;
        if let Some(telemetry) = telemetry {
            telemetry.shutdown().await;
        }
        served.map_err(|source| Error::Io {
            listen: local_addr,
            source,
        })?;
        Ok(handed_over?)
    }
}

async fn open_store(database: &str) -> coordinator::Result<(Arc<dyn Store>, bool)> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok((Arc::new(PostgresStore::connect(database).await?), true))
    } else {
        let path = database.strip_prefix("sqlite://").unwrap_or(database);
        Ok((Arc::new(SqliteStore::open(Path::new(path)).await?), false))
    }
}

fn redact(database: &str) -> String {
    match (database.find("://"), database.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &database[..scheme], &database[at..]),
        _ => database.to_owned(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub use http_server::shutdown_signal;
