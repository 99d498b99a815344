//! The spans and metrics of sagas, in process: the OpenTelemetry SDK with an in-memory
//! exporter stands in for a collector (the OTLP wire is tested by the root crate's
//! `tests/otlp.rs`). Retries are spans of their own, an operator's retry of a stuck saga
//! gets a span under the root, and the root span carries the ids stored with the saga.

use std::sync::Arc;
use std::time::Duration;

use coordinator::store::memory::MemoryStore;
use coordinator::{
    Coordinator, Fault, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga, SagaTrace,
    StartSaga, StepContext,
};
use observability::ids::PinnedIdGenerator;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sagas::document::RetryDoc;
use sagas::{Phase, SagaStatus, StepError};

async fn ok(_: Arc<()>, _: StepContext) -> Result<(), StepError> {
    Ok(())
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn spans_of(exporter: &InMemorySpanExporter, id: &str) -> Vec<SpanData> {
    let id = Value::from(id.to_owned());
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| attribute(s, "saga.id") == Some(&id))
        .collect()
}

async fn settle(coordinator: &Coordinator, id: uuid::Uuid) -> SagaStatus {
    coordinator.wait(id, Duration::from_secs(10)).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_unwinds_and_operator_retries_are_spans_of_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_id_generator(PinnedIdGenerator::default())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let registry = HandlerRegistry::new();
    let quick = RetryDoc {
        max_attempts: Some(3),
        initial_backoff_ms: Some(1),
        max_backoff_ms: Some(2),
        ..RetryDoc::default()
    };
    let pair = RustSaga::new("pair", Arc::new(()))
        .step("one", ok)
        .compensate(ok)
        .compensation_retry(RetryDoc {
            max_attempts: Some(1),
            ..quick.clone()
        })
        .step("two", ok)
        .retry(quick)
        .build(&registry)
        .unwrap();
    let faults = Arc::new(Faults::new());
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: faults.clone(),
    };
    let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
        .await
        .unwrap();
    coordinator.register(&pair).await.unwrap();
    let start = || StartSaga {
        definition: "pair".into(),
        version: None,
        input: serde_json::json!({}),
        idempotency_key: None,
        trace_context: None,
    };

    // Two transient failures of `two`, then success: three attempt spans.
    let busy = Fault::Fail(StepError::transient("busy"));
    faults.inject(None, "two", Phase::Action, busy, Some(2));
    let record = coordinator.start_saga(start()).await.unwrap().0.record;
    assert_eq!(settle(&coordinator, record.id).await, SagaStatus::Completed);
    let trace = SagaTrace::of(&record);
    let spans = spans_of(&exporter, &record.id.to_string());
    let root = spans.iter().find(|s| s.name == "pair").expect("a root span");
    assert_eq!(
        (
            root.span_context.trace_id(),
            root.span_context.span_id(),
            root.parent_span_id
        ),
        (trace.trace_id, trace.span_id, SpanId::INVALID),
        "the root span has the ids stored with the saga"
    );
    let mut twos: Vec<&SpanData> = spans.iter().filter(|s| s.name == "action two").collect();
    twos.sort_by_key(|s| s.start_time);
    let seen: Vec<(Option<&Value>, Option<&Value>, bool)> = twos
        .iter()
        .map(|s| {
            let error = matches!(s.status, Status::Error { .. });
            (
                attribute(s, "saga.step.attempt"),
                attribute(s, "saga.step.outcome"),
                error,
            )
        })
        .collect();
    let (retry, succeeded) = (Value::from("retry"), Value::from("succeeded"));
    assert_eq!(
        seen,
        [
            (Some(&Value::I64(1)), Some(&retry), true),
            (Some(&Value::I64(2)), Some(&retry), true),
            (Some(&Value::I64(3)), Some(&succeeded), false),
        ]
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.name != "pair")
            .all(|s| s.parent_span_id == trace.span_id)
    );
    let metrics = coordinator.render_metrics();
    let retries = "geosaga_step_retries_total{definition=\"pair\",step=\"two\",kind=\"action\"} 2";
    assert!(metrics.lines().any(|l| l == retries), "{metrics}");

    // `two` refused, and `one`'s compensation fails: stuck. An operator's retry then
    // compensates, under a span of its own below the root.
    let refused = Fault::Fail(StepError::permanent("refused"));
    faults.inject(None, "two", Phase::Action, refused, Some(1));
    let broken = Fault::Fail(StepError::permanent("undo broken"));
    faults.inject(None, "one", Phase::Compensation, broken, Some(1));
    let record = coordinator.start_saga(start()).await.unwrap().0.record;
    assert_eq!(settle(&coordinator, record.id).await, SagaStatus::Stuck);
    coordinator.retry(record.id).await.unwrap();
    assert_eq!(settle(&coordinator, record.id).await, SagaStatus::Compensated);
    let trace = SagaTrace::of(&record);
    let spans = spans_of(&exporter, &record.id.to_string());
    let root = spans.iter().find(|s| s.name == "pair").expect("a root span");
    assert_eq!(root.span_context.span_id(), trace.span_id);
    assert!(matches!(&root.status, Status::Error { description } if description.starts_with("stuck")));
    let unwind = root
        .events
        .iter()
        .find(|e| e.name == "saga.unwind")
        .expect("an unwind event");
    assert!(
        unwind
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "saga.unwind.step" && kv.value == Value::from("two"))
    );
    let retried = spans.iter().find(|s| s.name == "pair retry").expect("a retry span");
    assert_eq!(retried.parent_span_id, trace.span_id);
    assert_eq!(
        retried.status,
        Status::error("compensated: step `two` failed: permanent: refused")
    );
    let mut undos: Vec<&SpanData> = spans.iter().filter(|s| s.name == "compensation one").collect();
    undos.sort_by_key(|s| s.start_time);
    assert_eq!(undos.len(), 2, "{undos:#?}");
    assert!(matches!(undos[0].status, Status::Error { .. }) && undos[1].status == Status::Unset);
    provider.shutdown().unwrap();
}
