//! HTTP steps: one request per attempt, and the outcome contract ([`sagas::outcome`] holds
//! the rules):
//!
//! - 2xx: success; the JSON body is the step's output (an empty body is `null`, a body that
//!   is not JSON is kept as a string).
//! - 408, 429, 5xx, a timeout, a connection lost once it was open: the outcome is unknown;
//!   retried by the step's policy, honouring `Retry-After` (in seconds); when the retries
//!   run out the step is possibly applied and is compensated if the saga unwinds.
//! - A connection that could not be opened: nothing was sent; retried, known not applied.
//! - Any other status: a refusal (known not applied), not retried.
//!
//! Every request carries `Idempotency-Key`, `X-Saga-Action-Key` (the idempotency key of
//! the step's action, on compensations too: what a participant's barrier is keyed by),
//! `X-Saga-Id`, `X-Saga-Step` and `traceparent` (the attempt's span; `tracestate` too when
//! the saga's caller sent one), and the attempt's span gets the standard HTTP client
//! attributes. Redirects are not followed (a 3xx is a refusal) so that the host
//! allow-list cannot be walked around.

use std::time::Duration;

use observability::semconv;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use reqwest::header::{HeaderName, HeaderValue};
use sagas::outcome::{self, NoAnswer};
use sagas::{Phase, StepError};
use serde_json::Value;

use super::body::{self, Capped};
use super::{RenderedAction, StepCall};

/// Largest response body kept as a step's output; reading stops past it.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// How much of a failed call's body is read, to quote in the step's error.
const MAX_QUOTED_BYTES: usize = 4 * 1024;

/// Which hosts HTTP steps may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// Any host (the dev mode's default).
    Any,
    /// Only these hosts (`host` or `host:port`, case-insensitive).
    Only(Vec<String>),
}

impl HostPolicy {
    /// Whether `url` may be called; `Err` says why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => return Err(format!("`{url}`: scheme `{other}` is not allowed (http or https)")),
        }
        match self {
            HostPolicy::Any => Ok(()),
            HostPolicy::Only(hosts) => {
                let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
                let with_port = parsed.port_or_known_default().map(|p| format!("{host}:{p}"));
                let allowed = hosts.iter().any(|h| {
                    let h = h.to_ascii_lowercase();
                    h == host || Some(&h) == with_port.as_ref()
                });
                if allowed {
                    Ok(())
                } else {
                    Err(format!(
                        "host `{host}` is not in the allowed hosts ({})",
                        hosts.join(", ")
                    ))
                }
            }
        }
    }
}

/// Runs HTTP steps with one shared connection pool.
#[derive(Clone)]
pub struct HttpRunner {
    client: reqwest::Client,
    hosts: HostPolicy,
    regions: super::region::RegionRunner,
}

impl HttpRunner {
    /// A runner that may call the hosts `hosts` allows.
    pub fn new(hosts: HostPolicy) -> HttpRunner {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("geosaga/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        let regions = super::region::RegionRunner::new(client.clone(), Default::default());
        HttpRunner { client, hosts, regions }
    }

    /// This runner, sending region steps to the regions of `directory` (the host policy
    /// does not apply to them: they come from the coordinator's configuration).
    pub fn with_regions(mut self, directory: super::region::RegionDirectory) -> HttpRunner {
        self.regions = super::region::RegionRunner::new(self.client.clone(), directory);
        self
    }

    /// This runner, reaching its regions with `access` (a cluster CA, a client
    /// certificate, a token); `Err` says which setting does not read.
    pub fn with_region_access(mut self, access: &super::region::RegionAccess) -> Result<HttpRunner, String> {
        self.regions = self.regions.with_access(access)?;
        Ok(self)
    }

    /// The runner of region steps.
    pub fn regions(&self) -> &super::region::RegionRunner {
        &self.regions
    }

    /// The host policy.
    pub fn hosts(&self) -> &HostPolicy {
        &self.hosts
    }

    /// Runs one attempt of an HTTP step.
    pub async fn run(&self, call: &StepCall) -> Result<Value, StepError> {
        let RenderedAction::Http {
            method,
            url,
            headers,
            body,
        } = &call.request
        else {
            return Err(StepError::permanent("not an HTTP step"));
        };
        self.hosts.check(url).map_err(StepError::permanent)?;
        let cx = Context::current();
        let span = cx.span();
        span.set_attribute(KeyValue::new(semconv::HTTP_REQUEST_METHOD, method.as_str()));
        if let Ok(mut parsed) = reqwest::Url::parse(url) {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            span.set_attribute(KeyValue::new(semconv::URL_FULL, parsed.to_string()));
            if let Some(host) = parsed.host_str() {
                span.set_attribute(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
            }
            if let Some(port) = parsed.port_or_known_default() {
                span.set_attribute(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            }
        }
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("a known method");
        let action_key = match call.phase {
            Phase::Action => call.idempotency_key.clone(),
            Phase::Compensation => sagas::idempotency_key(&call.saga_id.to_string(), &call.step, Phase::Action),
        };
        let mut request = self
            .client
            .request(method, url)
            .header("idempotency-key", &call.idempotency_key)
            .header("x-saga-action-key", action_key)
            .header("x-saga-id", call.saga_id.to_string())
            .header("x-saga-step", &call.step);
        if let Some(tp) = &call.traceparent {
            request = request.header("traceparent", tp);
        }
        if let Some(state) = &call.tracestate {
            request = request.header("tracestate", state);
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| StepError::permanent(format!("header `{name}`: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| StepError::permanent(format!("header `{name}` value: {e}")))?;
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            // `is_connect`: the error came from opening a new connection (refused,
            // unreachable, the TLS handshake), before any byte of the request was written;
            // a request on an open connection (new or pooled) that breaks may have been read.
            let why = if e.is_connect() {
                NoAnswer::NotSent
            } else if e.is_timeout() {
                NoAnswer::TimedOut
            } else {
                NoAnswer::Lost
            };
            StepError {
                kind: outcome::no_answer(why),
                ..StepError::transient(format!("request failed: {}", error_chain(&e)))
            }
        })?;
        let status = response.status();
        span.set_attribute(KeyValue::new(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status.as_u16()),
        ));
        let retry_after_ms = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| secs.saturating_mul(1000));
        let code = status.as_u16();
        // `None`: a success. A failure's body is only quoted (its first 500 characters): a
        // few KiB of it do.
        let kind = outcome::http_status(code);
        let cap = if kind.is_none() {
            MAX_OUTPUT_BYTES
        } else {
            MAX_QUOTED_BYTES
        };
        let read = body::read(response, cap).await.map_err(|e| StepError {
            kind: outcome::no_answer(NoAnswer::Lost),
            ..StepError::transient(format!("reading the response: {}", error_chain(&e)))
        })?;
        let bytes = match read {
            Capped::Whole(bytes) => bytes,
            Capped::Over(_) if kind.is_none() => {
                return Err(StepError::unusable_output(format!(
                    "response body is larger than the {MAX_OUTPUT_BYTES} bytes a step may output"
                )));
            }
            Capped::Over(quoted) => quoted,
        };
        let Some(kind) = kind else {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return Ok(serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())));
        };
        let snippet: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
        Err(StepError {
            kind,
            message: format!("HTTP {code} from {url}: {snippet}"),
            status: Some(code),
            retry_after_ms,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_policy_checks_hosts_and_schemes() {
        let only = HostPolicy::Only(vec!["api.example.com".into(), "127.0.0.1:9001".into()]);
        assert!(only.check("https://API.example.com/x").is_ok());
        assert!(only.check("http://127.0.0.1:9001/cars").is_ok());
        assert!(only.check("http://127.0.0.1:9002/cars").is_err());
        assert!(only.check("http://169.254.169.254/latest").is_err());
        assert!(HostPolicy::Any.check("file:///etc/passwd").is_err());
        assert!(HostPolicy::Any.check("http://anything:1/").is_ok());
    }
}
