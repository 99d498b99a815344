//! # geosaga observability
//!
//! The names and mechanisms that traces, logs and dashboards share.
//!
//! ## Layout
//! - [`semconv`]: every span, event and log attribute name, in one place.
//! - [`ids`]: pins the ids of the next span built, so that a saga's root span gets the ids
//!   stored with the saga (see ARCHITECTURE.md, "Observability").
//! - `otlp` (feature `setup`): the OpenTelemetry SDK with its OTLP exporter, installed as
//!   the global tracer provider when configured.
//! - `init_logging` (feature `setup`): the process-wide `tracing` subscriber, plain text
//!   for a person or JSON for machines.
//!
//! Library crates depend on this crate without `setup`: they use only the OpenTelemetry
//! API (a no-op until a binary installs a provider) and `tracing`. Binaries enable `setup`
//! and call `init_logging` and `otlp::install` once.

pub mod ids;
#[cfg(feature = "setup")]
pub mod otlp;
pub mod semconv;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" | "plain" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}` (text or json)")),
        }
    }
}

/// Installs the global subscriber, writing to standard error. The level comes from
/// `RUST_LOG` when set, else `default_filter` (for example `info`). JSON lines carry the
/// fields of the spans they were written in: `saga_id` and `trace_id` for a saga's lines.
#[cfg(feature = "setup")]
pub fn init_logging(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    let _ = result;
}
