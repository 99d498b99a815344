//! Region steps: reads and writes of geosaga's geo-distributed key-value layer, exactly
//! once under retries and crashes.
//!
//! The coordinator's configuration names the regions it may call ([`RegionDirectory`]); a
//! step goes to its `via` region (else the configured default), and to the others in turn
//! when that one cannot be reached. Any region forwards a write to the key's home. An
//! attempt's span (a client span) gets the HTTP attributes of its requests to the regions.
//!
//! Every write carries the attempt's idempotency key as `op_id`; the home records it with
//! the write, in the same transaction, and answers a repeat with the recorded result, so a
//! retried or recovered attempt never applies twice. A write's answer names the version it
//! replaced, which is what the automatic compensation needs:
//!
//! - `put`, `cas`, `delete` are undone by a conditional write (`if_version` = the version
//!   the action wrote) that restores the previous value, or deletes the key if it had none.
//!   If someone wrote the key since, the undo is refused with a conflict (the saga ends
//!   `stuck`): overwriting their write would lose it.
//! - `add` is applied by the key's home (`PATCH` with `add`: it reads, adds, checks the
//!   bounds and writes under the key's lock) and undone by adding the inverse delta the
//!   same way. Additions commute, so the undo is right whatever others added since.
//! - A write whose outcome is unknown (its attempts timed out, or a region answered 5xx:
//!   the step is possibly applied and has no output) is undone by its op id (`PATCH` with
//!   `undo`, `regions/src/node/undo.rs`): the key's home undoes it as above if it was applied, and
//!   otherwise records it cancelled, so that the original, should it still arrive, is
//!   refused and never applies.
//!
//! Answers are classified by [`sagas::outcome`] like HTTP steps': a region that could not
//! be reached at all was sent nothing (known not applied); any other failure to get an
//! answer, and 5xx, leave the outcome unknown.
//!
//! Requests are built by the `geosaga-regions-client` crate from the regions' own wire
//! types, so a field renamed on the regions' side fails to compile here.

use std::sync::Arc;

use observability::semconv;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use regions_client::{DeleteQuery, PutRequest, ReadConsistency, ReadQuery, WriteConsistency};
use sagas::outcome::{self, NoAnswer};
use sagas::template::{RenderContext, RenderError};
use sagas::{Phase, RegionCall, RegionConsistency, RegionOperation, StepError};
use serde_json::{Map, Value, json};

use super::body::{self, Capped};
use super::http::MAX_OUTPUT_BYTES;
use super::{RenderedAction, StepCall};

mod access;
mod add;
mod txn;

pub use access::RegionAccess;
pub use txn::{CRASH_AFTER_TXN, RenderedWrite, TxnRequest, render as render_txn};

/// The regions a coordinator may send region steps to, by name, and the default one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionDirectory {
    regions: Vec<(String, String)>,
    via: Option<String>,
}

impl RegionDirectory {
    /// `regions` as (name, base URL); `via` names the default (absent: the first).
    pub fn new(regions: Vec<(String, String)>, via: Option<String>) -> Result<RegionDirectory, String> {
        for (name, url) in &regions {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("region {name}: `{url}` is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("region {name}: `{url}` is not an http:// or https:// URL"));
            }
        }
        if let Some(via) = &via
            && !regions.iter().any(|(n, _)| n == via)
        {
            return Err(format!(
                "the default region `{via}` is not among the configured regions"
            ));
        }
        let regions = regions
            .into_iter()
            .map(|(n, u)| (n, u.trim_end_matches('/').to_owned()))
            .collect();
        Ok(RegionDirectory { regions, via })
    }

    /// Whether no region is configured.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The configured regions, (name, base URL).
    pub fn regions(&self) -> &[(String, String)] {
        &self.regions
    }

    /// Checks that a step may go `via` that region (`None`: the default); `Err` says why not.
    pub fn check(&self, via: Option<&str>) -> Result<(), String> {
        self.order(via).map(|_| ())
    }

    /// The base URLs to try, the step's region first.
    fn order(&self, via: Option<&str>) -> Result<Vec<&str>, String> {
        if self.regions.is_empty() {
            return Err("this coordinator has no regions configured (`[regions]` in its config, or --region)".into());
        }
        let first = match via.or(self.via.as_deref()) {
            Some(name) => self.regions.iter().position(|(n, _)| n == name).ok_or_else(|| {
                let known: Vec<&str> = self.regions.iter().map(|(n, _)| n.as_str()).collect();
                format!("no region `{name}` is configured (known: {})", known.join(", "))
            })?,
            None => 0,
        };
        let mut order = vec![self.regions[first].1.as_str()];
        order.extend(
            self.regions
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, (_, u))| u.as_str()),
        );
        Ok(order)
    }
}

/// A region step with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionRequest {
    /// The region to go through (`None`: the default).
    pub via: Option<String>,
    /// The key.
    pub key: String,
    /// The consistency.
    pub consistency: RegionConsistency,
    /// What to do.
    pub op: RegionOp,
}

/// A region operation with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionOp {
    /// Read.
    Get {
        /// Bounded-staleness reads: the bound.
        max_staleness_ms: Option<u64>,
    },
    /// Write a value.
    Put {
        /// The value.
        value: Value,
    },
    /// Write a value if the key is at `if_version`.
    Cas {
        /// The value.
        value: Value,
        /// The expected version.
        if_version: String,
    },
    /// Delete.
    Delete,
    /// Add `delta` at `path`, not below `min` nor above `max`.
    Add {
        /// JSON Pointer in the value.
        path: String,
        /// The number to add.
        delta: Value,
        /// The floor.
        min: Option<f64>,
        /// The ceiling.
        max: Option<f64>,
    },
    /// Undo the step's action: from its output, or by its op id when it has none.
    Undo {
        /// For an `add`: where and what the action added (to add the inverse).
        add: Option<(String, Value)>,
    },
}

/// Renders a checked region step for one attempt.
pub fn render(call: &RegionCall, cx: &RenderContext<'_>) -> Result<RenderedAction, RenderError> {
    let op = match &call.operation {
        RegionOperation::Get { max_staleness_ms } => RegionOp::Get {
            max_staleness_ms: *max_staleness_ms,
        },
        RegionOperation::Put { value } => RegionOp::Put {
            value: value.render(cx)?,
        },
        RegionOperation::Cas { value, if_version } => RegionOp::Cas {
            value: value.render(cx)?,
            if_version: if_version.render_string(cx)?,
        },
        RegionOperation::Delete => RegionOp::Delete,
        RegionOperation::Add { path, delta, min, max } => RegionOp::Add {
            path: path.clone(),
            delta: delta.render(cx)?,
            min: *min,
            max: *max,
        },
        RegionOperation::Undo { action } => RegionOp::Undo {
            add: match &**action {
                RegionOperation::Add { path, delta, .. } => Some((path.clone(), delta.render(cx)?)),
                RegionOperation::Get { .. }
                | RegionOperation::Put { .. }
                | RegionOperation::Cas { .. }
                | RegionOperation::Delete
                | RegionOperation::Undo { .. } => None,
            },
        },
    };
    Ok(RenderedAction::Region(RegionRequest {
        via: call.via.clone(),
        key: call.key.render_string(cx)?,
        consistency: call.consistency,
        op,
    }))
}

/// Runs region steps over one connection pool.
#[derive(Clone)]
pub struct RegionRunner {
    client: reqwest::Client,
    directory: Arc<RegionDirectory>,
    token: Option<Arc<str>>,
}

/// What a region answered.
pub(crate) struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The last segment of a problem's `type` (`version-mismatch`, ...), if it is one.
    pub(crate) fn problem(&self) -> Option<&str> {
        self.body["type"].as_str().and_then(|t| t.rsplit('/').next())
    }

    pub(crate) fn error(&self, what: &str) -> StepError {
        let detail = self.body["detail"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_owned);
        let message = format!(
            "{what}: HTTP {} {}: {detail}",
            self.status,
            self.problem().unwrap_or("")
        );
        StepError {
            kind: outcome::http_status(self.status).unwrap_or(sagas::FailureKind::Permanent),
            status: Some(self.status),
            ..StepError::permanent(message)
        }
    }
}

/// A write as sent to a region: a `PUT` of `value`, or a `DELETE` without one.
struct Write<'a> {
    key: &'a str,
    value: Option<Value>,
    if_version: Option<String>,
    consistency: WriteConsistency,
    op_id: &'a str,
}

/// The consistency of a write step, as the regions spell it (validation allows only these
/// two for writes).
fn write_consistency(consistency: RegionConsistency) -> Result<WriteConsistency, StepError> {
    match consistency {
        RegionConsistency::Strong => Ok(WriteConsistency::Strong),
        RegionConsistency::Async => Ok(WriteConsistency::Async),
        RegionConsistency::BoundedStaleness => Err(StepError::permanent(
            "a region write is `strong` or `async`, not `bounded_staleness`",
        )),
    }
}

/// The consistency of a read step, as the regions spell it (validation allows only these
/// two for reads).
fn read_consistency(consistency: RegionConsistency) -> Result<ReadConsistency, StepError> {
    match consistency {
        RegionConsistency::Strong => Ok(ReadConsistency::Strong),
        RegionConsistency::BoundedStaleness => Ok(ReadConsistency::BoundedStaleness),
        RegionConsistency::Async => Err(StepError::permanent(
            "a region read is `strong` or `bounded_staleness`, not `async`",
        )),
    }
}

/// A request to a region, or the step's permanent failure if its address cannot take a
/// key's path (never: the directory checked every address is an http(s) URL).
fn built(
    request: Result<reqwest::RequestBuilder, regions_client::BadAddress>,
) -> Result<reqwest::RequestBuilder, StepError> {
    request.map_err(|e| StepError::permanent(e.to_string()))
}

impl RegionRunner {
    /// A runner sending requests with `client` to the regions of `directory`.
    pub fn new(client: reqwest::Client, directory: RegionDirectory) -> RegionRunner {
        RegionRunner {
            client,
            directory: Arc::new(directory),
            token: None,
        }
    }

    /// This runner, reaching the regions with `access`'s TLS settings and token.
    pub fn with_access(mut self, access: &RegionAccess) -> Result<RegionRunner, String> {
        if access.has_tls() {
            self.client = access.client()?;
        }
        self.token = access.token.as_deref().map(Arc::from);
        Ok(self)
    }

    /// A request to a region (`url` under one of the directory's bases), with the token.
    pub fn request(&self, method: reqwest::Method, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// The configured regions.
    pub fn directory(&self) -> &RegionDirectory {
        &self.directory
    }

    /// Runs one attempt of a region step.
    pub async fn run(&self, call: &StepCall) -> Result<Value, StepError> {
        let RenderedAction::Region(req) = &call.request else {
            return Err(StepError::permanent("not a region step"));
        };
        if req.key.is_empty() {
            return Err(StepError::permanent("the key rendered empty"));
        }
        let op_id = call.idempotency_key.as_str();
        if matches!(req.op, RegionOp::Undo { .. }) && call.phase != Phase::Compensation {
            return Err(StepError::permanent("an undo runs only as a compensation"));
        }
        match &req.op {
            RegionOp::Get { max_staleness_ms } => self.get(req, *max_staleness_ms).await,
            RegionOp::Put { value } => self.write_step("put", req, Some(value.clone()), None, op_id).await,
            RegionOp::Cas { value, if_version } => {
                self.write_step("cas", req, Some(value.clone()), Some(if_version.clone()), op_id)
                    .await
            }
            RegionOp::Delete => self.write_step("delete", req, None, None, op_id).await,
            RegionOp::Add { path, delta, min, max } => {
                let delta = add::number(delta, "delta")?;
                self.add(req, path, &delta, (*min, *max), op_id).await
            }
            RegionOp::Undo { add } => match call.outputs.get(&call.step) {
                Some(output) => self.undo(req, output, op_id).await,
                // Possibly applied: the home knows whether it was.
                None => {
                    let action = sagas::idempotency_key(&call.saga_id.to_string(), &call.step, Phase::Action);
                    self.undo_by_op_id(req, &action, add.as_ref(), op_id).await
                }
            },
        }
    }

    /// Sends a request to the step's region, or the next one when a region cannot be
    /// reached (safe for writes: they carry their `op_id`).
    pub(crate) async fn send(
        &self,
        via: Option<&str>,
        build: impl Fn(&reqwest::Client, &str) -> Result<reqwest::RequestBuilder, StepError>,
    ) -> Result<Answer, StepError> {
        let order = self.directory.order(via).map_err(StepError::permanent)?;
        let mut failures = Vec::new();
        // Whether some region may have read the request (an open connection broke).
        let mut maybe_sent = false;
        let cx = Context::current();
        let span = cx.span();
        for base in order {
            let mut request = build(&self.client, base)?;
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let request = request
                .build()
                .map_err(|e| StepError::permanent(format!("a request to {base}: {e}")))?;
            span.set_attribute(KeyValue::new(
                semconv::HTTP_REQUEST_METHOD,
                request.method().as_str().to_owned(),
            ));
            span.set_attribute(KeyValue::new(semconv::URL_FULL, request.url().to_string()));
            if let Some(host) = request.url().host_str() {
                span.set_attribute(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
            }
            if let Some(port) = request.url().port_or_known_default() {
                span.set_attribute(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            }
            match self.client.execute(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    span.set_attribute(KeyValue::new(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
                    let read = body::read(response, MAX_OUTPUT_BYTES).await.map_err(|e| StepError {
                        kind: outcome::no_answer(NoAnswer::Lost),
                        ..StepError::transient(format!("reading the answer of {base}: {e}"))
                    })?;
                    let bytes = match read {
                        Capped::Whole(bytes) => bytes,
                        Capped::Over(_) => {
                            // Whatever it says, the region may have applied the write: an
                            // unusable output is undone by its op id on unwind, which
                            // cancels a write that never applied.
                            return Err(StepError::unusable_output(format!(
                                "the answer of {base} is larger than the {MAX_OUTPUT_BYTES} bytes a step may output"
                            )));
                        }
                    };
                    let body = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
                    return Ok(Answer { status, body });
                }
                Err(e) => {
                    // Only a connection that could not be opened carried nothing (see the
                    // HTTP runner); the next region gets the same op id either way.
                    maybe_sent |= !e.is_connect();
                    failures.push(format!("{base}: {e}"));
                }
            }
        }
        let why = if maybe_sent { NoAnswer::Lost } else { NoAnswer::NotSent };
        Err(StepError {
            kind: outcome::no_answer(why),
            ..StepError::transient(format!("no region could be reached: {}", failures.join("; ")))
        })
    }

    async fn get(&self, req: &RegionRequest, max_staleness_ms: Option<u64>) -> Result<Value, StepError> {
        let query = ReadQuery {
            max_staleness_ms,
            ..ReadQuery::new(read_consistency(req.consistency)?)
        };
        let answer = self.read(req, &query).await?;
        let found = answer.status == 200;
        Ok(json!({
            "op": "get",
            "key": req.key,
            "found": found,
            "value": if found { answer.body["value"].clone() } else { Value::Null },
            "version": if found { answer.body["version"].clone() } else { json!("0.0") },
            "served_by": answer.body["served_by"],
            "home_region": answer.body["home_region"],
            "staleness_bound_ms": answer.body["staleness_bound_ms"],
            "consistency": req.consistency.as_str(),
        }))
    }

    /// A read: 200, or 404 `key-not-found`; anything else is the step's error.
    async fn read(&self, req: &RegionRequest, query: &ReadQuery) -> Result<Answer, StepError> {
        let answer = self
            .send(req.via.as_deref(), |client, base| {
                built(regions_client::get(client, base, &req.key, query))
            })
            .await?;
        match (answer.status, answer.problem()) {
            (200, _) | (404, Some("key-not-found")) => Ok(answer),
            _ => Err(answer.error(&format!("reading {}", req.key))),
        }
    }

    /// One write; the answer (200 or a problem) is returned as is.
    async fn write(&self, via: Option<&str>, w: &Write<'_>) -> Result<Answer, StepError> {
        let put = w.value.as_ref().map(|value| PutRequest {
            value: value.clone(),
            consistency: w.consistency,
            if_version: w.if_version.clone(),
            op_id: Some(w.op_id.to_owned()),
        });
        let delete = DeleteQuery {
            consistency: w.consistency,
            if_version: w.if_version.clone(),
            op_id: Some(w.op_id.to_owned()),
        };
        self.send(via, |client, base| {
            built(match &put {
                Some(put) => regions_client::put(client, base, w.key, put),
                None => regions_client::delete(client, base, w.key, &delete),
            })
        })
        .await
    }

    async fn write_step(
        &self,
        op: &str,
        req: &RegionRequest,
        value: Option<Value>,
        if_version: Option<String>,
        op_id: &str,
    ) -> Result<Value, StepError> {
        let w = Write {
            key: &req.key,
            value,
            if_version,
            consistency: write_consistency(req.consistency)?,
            op_id,
        };
        let answer = self.write(req.via.as_deref(), &w).await?;
        if answer.status != 200 {
            return Err(answer.error(&format!("{op} {}", req.key)));
        }
        Ok(write_output(op, req, &answer.body, Map::new()))
    }
}

/// A write step's output: what it wrote and what it replaced.
fn write_output(op: &str, req: &RegionRequest, body: &Value, extra: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("op".into(), json!(op));
    out.insert("key".into(), json!(req.key));
    out.insert("version".into(), body["version"].clone());
    out.insert("previous".into(), body.get("previous").cloned().unwrap_or(Value::Null));
    out.insert("home_region".into(), body["home_region"].clone());
    out.insert("served_by".into(), body["served_by"].clone());
    out.insert("consistency".into(), json!(req.consistency.as_str()));
    out.insert("replayed".into(), json!(body["replayed"].as_bool().unwrap_or(false)));
    out.extend(extra);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator accepts region steps only for regions it knows, and a Rust saga's
    /// region writes get their automatic undo.
    #[tokio::test]
    async fn registration_checks_the_regions_of_region_steps() {
        use crate::store::memory::MemoryStore;
        use crate::{Coordinator, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga};
        let registry = HandlerRegistry::new();
        let def = RustSaga::new("r", Arc::new(()))
            .region(
                "debit",
                sagas::RegionDoc::add("us/{{input.from}}", "/balance", "-{{input.amount}}").min(0.0),
            )
            .region("read", sagas::RegionDoc::get_bounded("us/a", 100).via("mars"))
            .build(&registry)
            .unwrap();
        assert!(def.steps[0].compensation.is_some() && def.steps[1].compensation.is_none());
        for (directory, expected) in [
            (
                RegionDirectory::default(),
                vec!["/steps/0/action/region", "/steps/1/action/region/via"],
            ),
            (
                RegionDirectory::new(vec![("us-east".into(), "http://127.0.0.1:1".into())], None).unwrap(),
                vec!["/steps/1/action/region/via"],
            ),
        ] {
            let runners = Runners {
                http: HttpRunner::new(HostPolicy::Any).with_regions(directory),
                rust: registry.clone(),
                faults: Arc::new(Faults::new()),
            };
            let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
                .await
                .unwrap();
            match coordinator.register(&def).await {
                Err(crate::Error::Invalid(errors)) => assert_eq!(errors.paths(), expected, "{errors}"),
                other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
            }
            coordinator.shutdown().await.unwrap();
        }
    }

    #[test]
    fn the_step_region_goes_first_then_the_others() {
        let d = RegionDirectory::new(
            vec![
                ("us-east".into(), "http://a:1/".into()),
                ("eu-west".into(), "http://b:2".into()),
            ],
            Some("eu-west".into()),
        )
        .unwrap();
        assert_eq!(d.order(None).unwrap(), ["http://b:2", "http://a:1"]);
        assert_eq!(d.order(Some("us-east")).unwrap(), ["http://a:1", "http://b:2"]);
        assert!(
            d.check(Some("ap-south"))
                .unwrap_err()
                .contains("known: us-east, eu-west")
        );
        assert!(RegionDirectory::default().check(None).is_err());
        assert!(RegionDirectory::new(vec![("x".into(), "ftp://h".into())], None).is_err());
        assert!(RegionDirectory::new(vec![], Some("x".into())).is_err());
    }
}
