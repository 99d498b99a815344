//! Traces over the wire: a `geosaga serve` process exports to an OTLP receiver run by the
//! test (HTTP/protobuf, and gRPC), and the spans it receives must make one trace per saga:
//! a root span named after the definition, a child for every attempt, errors where steps
//! failed, and the same trace id at the participant. A saga resumed after a SIGKILL
//! continues its trace.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use serde_json::{Value, json};
use support::workload;
use testkit::http::JsonAnswer;
use testkit::participant;
use testkit::process::CoordinatorProcess;
use tokio::sync::Notify;

/// A span as received, with the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    span: Span,
    pid: i64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

impl Received {
    fn name(&self) -> &str {
        &self.span.name
    }
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn status(&self) -> SpanStatus {
        self.span.status.as_ref().map_or(SpanStatus::Unset, |s| s.code())
    }
    fn text(&self, key: &str) -> Option<&str> {
        match find(&self.span.attributes, key) {
            Some(Any::StringValue(s)) => Some(s),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match find(&self.span.attributes, key) {
            Some(Any::IntValue(i)) => Some(*i),
            _ => None,
        }
    }
    fn start_ms(&self) -> i64 {
        (self.span.start_time_unix_nano / 1_000_000) as i64
    }
}

/// An OTLP receiver on loopback, with every span it received.
struct Collector {
    url: String,
    protocol: &'static str,
    spans: Spans,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// OTLP/HTTP: `POST /v1/traces`, protobuf.
async fn export(
    State(spans): State<Spans>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    keep(&spans, request);
    (
        StatusCode::OK,
        protobuf,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// OTLP/gRPC: the `TraceService`.
struct GrpcReceiver(Spans);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn keep(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let pid = match find(&resource.attributes, "process.pid") {
            Some(Any::IntValue(pid)) => *pid,
            _ => 0,
        };
        for scope in resource_spans.scope_spans {
            received.extend(scope.spans.into_iter().map(|span| Received { span, pid }));
        }
    }
}

impl Collector {
    /// A receiver for `protocol`: `http/protobuf` or `grpc`.
    async fn start(protocol: &'static str) -> Collector {
        let spans: Spans = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        if protocol == "grpc" {
            let service = TraceServiceServer::new(GrpcReceiver(spans.clone()));
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
        } else {
            let app = Router::new()
                .route("/v1/traces", post(export))
                .with_state(spans.clone());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        Collector { url, protocol, spans }
    }

    /// The spans of saga `id` once `done` says they are all there (at most 30 s).
    async fn saga_spans(&self, id: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let spans: Vec<Received> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.text("saga.id") == Some(id))
                .cloned()
                .collect();
            if done(&spans) {
                return spans;
            }
            let names: Vec<&str> = spans.iter().map(Received::name).collect();
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "spans of saga {id} missing; got {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn coordinator_args<'a>(collector: &'a Collector, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--allow-host",
        "127.0.0.1",
        "--otlp-endpoint",
        &collector.url,
        "--otlp-protocol",
        collector.protocol,
    ];
    args.extend_from_slice(extra);
    args
}

/// Spans are batched for 100 ms, so that the test does not wait the default 5 s.
const BATCH: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensated_saga_is_one_trace_exported_over_otlp_http() {
    compensated_saga_trace("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensated_saga_is_one_trace_exported_over_otlp_grpc() {
    compensated_saga_trace("grpc").await;
}

async fn compensated_saga_trace(protocol: &'static str) {
    let collector = Collector::start(protocol).await;
    let (participant, base) = participant::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let args = coordinator_args(&collector, &["--jaeger-ui", "http://jaeger.test:16686"]);
    let coordinator =
        CoordinatorProcess::start_with_env(db.to_str().unwrap(), &args, BATCH, dir.path().join("coordinator.log"))
            .await;
    workload::register(std::slice::from_ref(&coordinator.url), &participant::definition(&base)).await;

    // A caller in a trace of its own starts a saga whose step c fails.
    let caller_trace = format!("{:032x}", rand::random::<u128>() | 1);
    let caller_span = "00f067aa0ba902b7";
    let saga: Value = reqwest::Client::new()
        .post(format!("{}/v1/sagas?wait_ms=20000", coordinator.url))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"definition": "crashy", "input": {"fail": true}}))
        .json_answer()
        .await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(saga["trace_id"], caller_trace.as_str());
    assert_eq!(
        saga["trace_url"],
        format!("http://jaeger.test:16686/trace/{caller_trace}")
    );
    let id = saga["id"].as_str().unwrap();

    let spans = collector
        .saga_spans(id, |spans| {
            spans.len() >= 6 && spans.iter().any(|s| s.name() == "crashy")
        })
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id() == caller_trace),
        "one trace: {spans:#?}"
    );
    let root = spans.iter().find(|s| s.name() == "crashy").unwrap();
    assert_eq!(
        root.parent(),
        caller_span,
        "the root span is a child of the caller's span"
    );
    assert_eq!(root.status(), SpanStatus::Error);
    assert_eq!(
        (root.text("saga.definition"), root.text("saga.status")),
        (Some("crashy"), Some("compensated"))
    );
    let unwind = root
        .span
        .events
        .iter()
        .find(|e| e.name == "saga.unwind")
        .expect("an unwind event");
    assert_eq!(
        find(&unwind.attributes, "saga.unwind.step"),
        Some(&Any::StringValue("c".into()))
    );
    match find(&unwind.attributes, "saga.unwind.reason") {
        Some(Any::StringValue(reason)) => assert!(reason.contains("422"), "{reason}"),
        other => panic!("no unwind reason: {other:?}"),
    }

    let children: HashMap<&str, &Received> = spans
        .iter()
        .filter(|s| s.name() != "crashy")
        .map(|s| (s.name(), s))
        .collect();
    let mut names: Vec<&str> = children.keys().copied().collect();
    names.sort();
    assert_eq!(
        names,
        ["action a", "action b", "action c", "compensation a", "compensation b"],
        "{spans:#?}"
    );
    for (name, span) in &children {
        let (kind, step) = name.split_once(' ').unwrap();
        assert_eq!(span.parent(), root.span_id(), "{name} is a child of the root span");
        assert_eq!(
            (span.text("saga.step"), span.text("saga.step.kind")),
            (Some(step), Some(kind)),
            "{name}"
        );
        assert_eq!(span.int("saga.step.attempt"), Some(1), "{name}");
        assert_eq!(
            span.text("saga.idempotency_key"),
            Some(format!("{id}:{step}:{kind}").as_str()),
            "{name}"
        );
        assert_eq!(span.text("http.request.method"), Some("POST"), "{name}");
        assert_eq!(span.text("server.address"), Some("127.0.0.1"), "{name}");
        let path = if kind == "action" { "act" } else { "undo" };
        assert_eq!(
            span.text("url.full"),
            Some(format!("{base}/{path}/{step}").as_str()),
            "{name}"
        );
        let failed = *name == "action c";
        assert_eq!(
            span.status(),
            if failed { SpanStatus::Error } else { SpanStatus::Unset },
            "{name}"
        );
        assert_eq!(
            span.int("http.response.status_code"),
            Some(if failed { 422 } else { 200 }),
            "{name}"
        );
        assert_eq!(
            span.text("saga.step.outcome"),
            Some(if failed { "failed" } else { "succeeded" }),
            "{name}"
        );
        assert!(
            root.span.start_time_unix_nano <= span.span.start_time_unix_nano
                && span.span.end_time_unix_nano <= root.span.end_time_unix_nano
        );
    }
    // The unwind runs in reverse: b's compensation ends before a's starts.
    assert!(children["compensation b"].span.end_time_unix_nano <= children["compensation a"].span.start_time_unix_nano);

    // Every request carried the traceparent of its own attempt span.
    let ledger = participant.ledger.lock().unwrap();
    let sent: HashMap<&str, &str> = ledger
        .traceparents
        .iter()
        .map(|(k, tp)| (k.as_str(), tp.as_str()))
        .collect();
    for (name, span) in &children {
        let (kind, step) = name.split_once(' ').unwrap();
        let key = format!("{id}:{step}:{kind}");
        assert_eq!(
            sent.get(key.as_str()).copied(),
            Some(format!("00-{caller_trace}-{}-01", span.span_id()).as_str()),
            "{key}"
        );
    }
}

/// A participant step that hangs on its first request (until the coordinator that sent it
/// dies) and succeeds on the next.
#[derive(Default)]
struct Gate {
    hits: AtomicU32,
    entered: Notify,
}

async fn gate(State(gate): State<Arc<Gate>>) -> Json<Value> {
    if gate.hits.fetch_add(1, Ordering::SeqCst) == 0 {
        gate.entered.notify_one();
        std::future::pending::<()>().await;
    }
    Json(json!({"opened": true}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_resumed_after_sigkill_continues_its_trace() {
    let collector = Collector::start("http/protobuf").await;
    let (_participant, base) = participant::start().await;
    let gate_state = Arc::new(Gate::default());
    let app = Router::new().route("/gate", post(gate)).with_state(gate_state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_url = format!("http://{}/gate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let args = coordinator_args(&collector, &["--node-id", "resumer"]);
    let mut coordinator =
        CoordinatorProcess::start_with_env(db.to_str().unwrap(), &args, BATCH, dir.path().join("coordinator.log"))
            .await;
    let definition = json!({"name": "gated", "steps": [
        {"name": "a", "action": {"http": {"method": "POST", "url": format!("{base}/act/a"), "body": {}}}},
        {"name": "gate", "action": {"http": {"method": "POST", "url": gate_url}}, "timeout_ms": 120000}
    ]});
    workload::register(std::slice::from_ref(&coordinator.url), &definition).await;
    let client = reqwest::Client::new();
    let saga: Value = client
        .post(format!("{}/v1/sagas", coordinator.url))
        .json(&json!({"definition": "gated"}))
        .json_answer()
        .await;
    let id = saga["id"].as_str().unwrap().to_owned();
    let trace_id = saga["trace_id"].as_str().unwrap().to_owned();

    // Step a's span leaves the first process before it dies in the middle of the gate.
    tokio::time::timeout(Duration::from_secs(30), gate_state.entered.notified())
        .await
        .expect("the gate was reached");
    let first = collector
        .saga_spans(&id, |spans| spans.iter().any(|s| s.name() == "action a"))
        .await;
    let first_pid = first[0].pid;
    coordinator.kill();
    coordinator.restart().await;

    let settled: Value = client
        .get(format!("{}/v1/sagas/{id}", coordinator.url))
        .json_answer()
        .await;
    assert_eq!(
        settled["trace_id"],
        trace_id.as_str(),
        "the API keeps the saga's trace id"
    );
    let spans = collector
        .saga_spans(&id, |spans| spans.iter().any(|s| s.name() == "gated"))
        .await;
    assert!(spans.iter().all(|s| s.trace_id() == trace_id), "one trace: {spans:#?}");
    let root = spans.iter().find(|s| s.name() == "gated").unwrap();
    assert_eq!(root.status(), SpanStatus::Unset);
    assert_eq!(
        root.parent(),
        "",
        "a saga started without a traceparent has a trace of its own"
    );
    assert_ne!(root.pid, first_pid, "the second process emitted the root span");
    assert_eq!(
        coordinator::api::views::rfc3339(root.start_ms()),
        saga["created_at"].as_str().unwrap(),
        "the root span starts when the saga was created, in the first process"
    );
    let a = spans.iter().find(|s| s.name() == "action a").unwrap();
    assert_eq!((a.pid, a.parent()), (first_pid, root.span_id()));
    // The first process died inside attempt 1 of the gate: its span never left. Attempt 2
    // ran in the second process, under the same root span.
    let gates: Vec<&Received> = spans.iter().filter(|s| s.name() == "action gate").collect();
    assert_eq!(gates.len(), 1, "{gates:#?}");
    assert_eq!(
        (gates[0].int("saga.step.attempt"), gates[0].pid, gates[0].parent()),
        (Some(2), root.pid, root.span_id())
    );
    assert_eq!(gate_state.hits.load(Ordering::SeqCst), 2);
}
