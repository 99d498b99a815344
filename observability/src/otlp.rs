//! Trace export over OTLP, configured the standard way.
//!
//! [`install`] sets up the OpenTelemetry SDK as the global tracer provider when an
//! endpoint is configured (`--otlp-endpoint`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), and does nothing otherwise: the global tracer then stays
//! the API's no-op. Spans go through a `BatchSpanProcessor` (its own thread; tuned by the
//! `OTEL_BSP_*` variables), never on a saga's path. The protocol is gRPC or HTTP/protobuf
//! (`--otlp-protocol`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`;
//! gRPC by default); the service is named by `OTEL_SERVICE_NAME` (`geosaga` by default).
//!
//! Both transports need the caller's tokio runtime: tonic's channel runs on it, and HTTP
//! requests are spawned onto it ([`TokioHttpClient`]) from the processor's thread.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};

use crate::ids::PinnedIdGenerator;
use crate::semconv;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC (port 4317 by convention).
    Grpc,
    /// Protobuf over HTTP (port 4318 by convention, path `/v1/traces`).
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!("unsupported OTLP protocol `{other}` (grpc or http/protobuf)")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// What the command line says; the `OTEL_*` variables fill in the rest.
#[derive(Debug, Clone, Default)]
pub struct OtlpOptions {
    /// The collector's base URL (like `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is added
    /// for HTTP).
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: Option<Protocol>,
    /// This process's `service.instance.id` (the coordinator's node id).
    pub instance_id: Option<String>,
}

/// Why the exporter could not be set up.
#[derive(Debug)]
pub struct SetupError(String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// The installed exporter. [`Telemetry::shutdown`] flushes the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Where spans go.
    pub endpoint: String,
    /// How.
    pub protocol: Protocol,
}

impl Telemetry {
    /// Exports what is queued and stops the exporter (at most a few seconds).
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The processor's thread needs this runtime to send the last batch: wait for it on
        // a blocking thread, not on a worker.
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Installs the OTLP exporter as the global tracer provider, if an endpoint is configured
/// and `OTEL_SDK_DISABLED` is not `true`; returns `None` otherwise. Call it inside the
/// tokio runtime that lives as long as the exporter.
pub fn install(options: &OtlpOptions) -> Result<Option<Telemetry>, SetupError> {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    let signal_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint = options.endpoint.clone().or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if disabled || (options.endpoint.is_none() && signal_endpoint.is_none() && base_endpoint.is_none()) {
        return Ok(None);
    }
    let protocol = match options.protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            Some(p) => p.parse().map_err(SetupError)?,
            None => Protocol::Grpc,
        },
    };
    // The flag wins over both variables; the signal's own variable is a full URL, the
    // general one a base.
    let endpoint = match (&options.endpoint, signal_endpoint, base_endpoint) {
        (Some(flag), _, _) => signal_url(flag, protocol),
        (None, Some(signal), _) => signal,
        (None, None, Some(base)) => signal_url(&base, protocol),
        (None, None, None) => unreachable!("checked above"),
    };
    let built = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .with_endpoint(endpoint.clone())
            .build(),
        Protocol::HttpProtobuf => {
            let client =
                TokioHttpClient::new().map_err(|e| SetupError(format!("building the OTLP HTTP client: {e}")))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint.clone())
                .build()
        }
    };
    let exporter = built.map_err(|e| SetupError(format!("OTLP exporter for {endpoint}: {e}")))?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new(semconv::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(semconv::PROCESS_PID, i64::from(std::process::id())),
    ]);
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("geosaga");
    }
    if let Some(instance) = &options.instance_id {
        resource = resource.with_attribute(KeyValue::new(semconv::SERVICE_INSTANCE_ID, instance.clone()));
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_id_generator(PinnedIdGenerator::default())
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(Telemetry {
        provider,
        endpoint,
        protocol,
    }))
}

/// The traces URL for a base endpoint: gRPC takes it as it is, HTTP adds `/v1/traces`.
fn signal_url(base: &str, protocol: Protocol) -> String {
    match protocol {
        Protocol::Grpc => base.to_owned(),
        Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// An OTLP HTTP client for the batch processor's thread: each request runs on the tokio
/// runtime it was built in, with the workspace's `reqwest`.
#[derive(Debug)]
pub struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl TokioHttpClient {
    /// A client on the current tokio runtime (panics outside one).
    pub fn new() -> Result<TokioHttpClient, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(TokioHttpClient {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let (status, headers) = (response.status(), response.headers().clone());
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_their_standard_names() {
        assert_eq!("grpc".parse(), Ok(Protocol::Grpc));
        assert_eq!("http/protobuf".parse(), Ok(Protocol::HttpProtobuf));
        assert!("http/json".parse::<Protocol>().is_err());
        assert_eq!(
            signal_url("http://c:4318/", Protocol::HttpProtobuf),
            "http://c:4318/v1/traces"
        );
        assert_eq!(signal_url("http://c:4317", Protocol::Grpc), "http://c:4317");
    }
}
