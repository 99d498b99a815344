//! The executor on the in-memory store, with sagas written in Rust.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator::store::memory::MemoryStore;
use coordinator::{
    Coordinator, Fault, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga, StartSaga,
    StepContext,
};
use sagas::document::RetryDoc;
use sagas::{Phase, SagaStatus, StepError, StepStatus};
use serde_json::{Value, json};

/// What the steps did, in order: `"debit"`, `"undo debit"`, ...
#[derive(Default)]
struct Journal(Mutex<Vec<String>>);

impl Journal {
    fn note(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// What the test's step functions return.
type StepFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, StepError>> + Send>>;

fn action(name: &'static str) -> impl Fn(Arc<Journal>, StepContext) -> StepFuture + Send + Sync + 'static {
    move |journal: Arc<Journal>, cx: StepContext| {
        Box::pin(async move {
            journal.note(format!("{name} {}", cx.saga_id));
            Ok(json!({"step": name}))
        })
    }
}

/// A compensation keyed on its action, as the participant contract asks: it may come for
/// an action whose outcome was unknown and that never ran, and then changes nothing.
fn undo(name: &'static str) -> impl Fn(Arc<Journal>, StepContext) -> StepFuture + Send + Sync + 'static {
    move |journal: Arc<Journal>, cx: StepContext| {
        Box::pin(async move {
            if let Ok(own) = cx.output::<Value>(&cx.step) {
                assert_eq!(own["step"], name, "a compensation sees its own step's output");
            }
            assert_eq!(cx.action_key(), format!("{}:{name}:action", cx.saga_id));
            if journal.entries().contains(&format!("{name} {}", cx.saga_id)) {
                journal.note(format!("undo {name} {}", cx.saga_id));
            }
            Ok(Value::Null)
        })
    }
}

async fn setup(journal: Arc<Journal>) -> (Coordinator, Arc<Faults>) {
    let registry = HandlerRegistry::new();
    let faults = Arc::new(Faults::new());
    let trip = RustSaga::new("trip", journal)
        .step("car", action("car"))
        .compensate(undo("car"))
        .step("hotel", action("hotel"))
        .depends_on(&[])
        .compensate(undo("hotel"))
        .step("charge", action("charge"))
        .depends_on(&["car", "hotel"])
        .retry(RetryDoc {
            max_attempts: Some(3),
            initial_backoff_ms: Some(1),
            max_backoff_ms: Some(5),
            ..RetryDoc::default()
        })
        .build(&registry)
        .expect("valid saga");
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: faults.clone(),
    };
    let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
        .await
        .unwrap();
    coordinator.register(&trip).await.unwrap();
    (coordinator, faults)
}

async fn run(coordinator: &Coordinator, input: Value) -> coordinator::SagaView {
    let (coordinator::SagaView { record: saga, .. }, created) = coordinator
        .start_saga(StartSaga {
            definition: "trip".into(),
            version: None,
            input,
            idempotency_key: None,
            trace_context: None,
        })
        .await
        .unwrap();
    assert!(created);
    let record = coordinator.wait(saga.id, Duration::from_secs(10)).await.unwrap();
    assert!(record.status.is_settled(), "saga did not settle: {record:?}");
    coordinator.saga(saga.id).await.unwrap()
}

#[tokio::test]
async fn a_saga_without_failures_completes() {
    let journal = Arc::new(Journal::default());
    let (coordinator, _) = setup(journal.clone()).await;
    let view = run(&coordinator, json!({})).await;
    assert_eq!(view.state.status(), SagaStatus::Completed);
    assert!(view.state.steps().iter().all(|s| s.status == StepStatus::Succeeded));
    let id = view.record.id;
    let entries = journal.entries();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries.last().unwrap(), &format!("charge {id}"));
}

#[tokio::test]
async fn a_failed_step_compensates_the_others_in_reverse() {
    let journal = Arc::new(Journal::default());
    let (coordinator, faults) = setup(journal.clone()).await;
    faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("card declined")),
        None,
    );
    let view = run(&coordinator, json!({})).await;
    assert_eq!(view.state.status(), SagaStatus::Compensated);
    let statuses: Vec<_> = view.state.steps().iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [StepStatus::Compensated, StepStatus::Compensated, StepStatus::Failed]
    );
    assert!(view.record.error.as_deref().unwrap().contains("card declined"));
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let journal = Arc::new(Journal::default());
    let (coordinator, faults) = setup(journal.clone()).await;
    faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::transient("503")),
        Some(2),
    );
    let view = run(&coordinator, json!({})).await;
    assert_eq!(view.state.status(), SagaStatus::Completed);
    assert_eq!(view.state.steps()[2].attempts, 3);
}

#[tokio::test]
async fn a_failing_compensation_makes_the_saga_stuck_until_retried() {
    let journal = Arc::new(Journal::default());
    let (coordinator, faults) = setup(journal.clone()).await;
    faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("no")),
        None,
    );
    faults.inject(
        None,
        "car",
        Phase::Compensation,
        Fault::Fail(StepError::permanent("car API down")),
        Some(1),
    );
    let view = run(&coordinator, json!({})).await;
    assert_eq!(view.state.status(), SagaStatus::Stuck);
    assert_eq!(view.state.steps()[0].status, StepStatus::CompensationFailed);

    coordinator.retry(view.record.id).await.unwrap();
    let record = coordinator.wait(view.record.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(record.status, SagaStatus::Compensated);
    let err = coordinator.retry(view.record.id).await.unwrap_err();
    assert!(matches!(err, coordinator::Error::IllegalTransition { .. }), "{err}");
}

#[tokio::test]
async fn idempotency_keys_start_one_saga() {
    let journal = Arc::new(Journal::default());
    let (coordinator, _) = setup(journal).await;
    let start = |input: Value| StartSaga {
        definition: "trip".into(),
        version: None,
        input,
        idempotency_key: Some("k1".into()),
        trace_context: None,
    };
    let (first, created) = coordinator.start_saga(start(json!({"a": 1}))).await.unwrap();
    assert!(created);
    let (again, created) = coordinator.start_saga(start(json!({"a": 1}))).await.unwrap();
    assert!(!created);
    assert_eq!(first.record.id, again.record.id);
    let err = coordinator.start_saga(start(json!({"a": 2}))).await.unwrap_err();
    assert!(matches!(err, coordinator::Error::IdempotencyConflict { .. }), "{err}");
}

/// A start repeated with its idempotency key and no version, after a new version of the
/// definition was registered, is the same request: it answers the saga it started (issue
/// #18: it answered 409), and a different input is still the conflict.
#[tokio::test]
async fn a_repeated_start_finds_its_saga_after_a_new_version() {
    let journal = Arc::new(Journal::default());
    let (coordinator, _) = setup(journal).await;
    let start = |input: Value| StartSaga {
        definition: "trip".into(),
        version: None,
        input,
        idempotency_key: Some("k-versions".into()),
        trace_context: None,
    };
    let (first, created) = coordinator.start_saga(start(json!({"a": 1}))).await.unwrap();
    assert!(created);
    let first = first.record;
    let (stored, _) = coordinator.definition("trip", None).await.unwrap();
    let mut document = stored.document.clone();
    document["description"] = json!("a second version");
    let put = coordinator.register_definition(&document).await.unwrap();
    assert_eq!(put.record.version, first.version + 1, "a new version");

    let (again, created) = coordinator.start_saga(start(json!({"a": 1}))).await.unwrap();
    assert!(!created);
    let again = again.record;
    assert_eq!((again.id, again.version), (first.id, first.version));
    let err = coordinator.start_saga(start(json!({"a": 2}))).await.unwrap_err();
    assert!(matches!(err, coordinator::Error::IdempotencyConflict { .. }), "{err}");
    // Naming the new version is another request.
    let mut pinned = start(json!({"a": 1}));
    pinned.version = Some(put.record.version);
    let err = coordinator.start_saga(pinned).await.unwrap_err();
    assert!(matches!(err, coordinator::Error::IdempotencyConflict { .. }), "{err}");
}

#[tokio::test]
async fn the_conformance_check_passes_for_the_trip_saga() {
    let journal = Arc::new(Journal::default());
    let registry = HandlerRegistry::new();
    let trip = RustSaga::new("trip", journal.clone())
        .step("car", action("car"))
        .compensate(undo("car"))
        .step("hotel", action("hotel"))
        .compensate(undo("hotel"))
        .step("charge", action("charge"))
        .build(&registry)
        .unwrap();
    coordinator::conformance::check(&trip, registry, json!({}), |case, view| {
        // Count the undos that changed something, per step.
        let id = view.record.id.to_string();
        let entries = journal.entries();
        let undos = |step: &str| entries.iter().filter(|e| **e == format!("undo {step} {id}")).count();
        let ran = |step: &str| entries.contains(&format!("{step} {id}"));
        use coordinator::conformance::Case;
        let expected = match case {
            // car compensated twice (every compensation is repeated).
            Case::FailAt(step) if step == "hotel" => [("car", 2), ("hotel", 0)],
            // The action ran, its answer was lost: it is undone.
            Case::AnswerLostAt(step) if step == "hotel" => [("car", 1), ("hotel", 1)],
            // The action never ran: its compensation came and changed nothing.
            Case::RequestLostAt(step) if step == "hotel" => [("car", 1), ("hotel", 0)],
            Case::RequestLostAt(step) if step == "car" => [("car", 0), ("hotel", 0)],
            _ => return Ok(()),
        };
        for (step, n) in expected {
            if undos(step) != n {
                return Err(format!(
                    "{step}: {} undo calls, {n} expected ({entries:?})",
                    undos(step)
                ));
            }
        }
        if matches!(case, Case::AnswerLostAt(_)) && !ran("hotel") {
            return Err("the lost answer's action did not run".into());
        }
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn text_no_store_can_keep_is_refused_at_the_edge() {
    let registry = HandlerRegistry::new();
    let def = RustSaga::new("nul", Arc::new(()))
        .step("emit", |_: Arc<()>, _: StepContext| async {
            Ok(json!({"bad": "a\u{0}b"}))
        })
        .build(&registry)
        .unwrap();
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: Arc::new(Faults::new()),
    };
    let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
        .await
        .unwrap();
    coordinator.register(&def).await.unwrap();

    let start = |input: Value| StartSaga {
        definition: "nul".into(),
        version: None,
        input,
        idempotency_key: None,
        trace_context: None,
    };
    let err = coordinator
        .start_saga(start(json!({"note": "x\u{0}"})))
        .await
        .unwrap_err();
    let coordinator::Error::Invalid(errors) = err else {
        panic!("{err}")
    };
    assert_eq!(errors.paths(), ["/input/note"]);

    let (coordinator::SagaView { record: saga, .. }, _) = coordinator.start_saga(start(json!({}))).await.unwrap();
    let record = coordinator.wait(saga.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        record.status,
        SagaStatus::Compensated,
        "an output with NUL fails its step for good"
    );
    let view = coordinator.saga(saga.id).await.unwrap();
    assert!(view.state.steps()[0].error.as_ref().unwrap().message.contains("NUL"));
}
