//! HTTP steps against a real participant on loopback: the outcome contract, retries,
//! time limits and the idempotency headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use coordinator::store::memory::MemoryStore;
use coordinator::{Coordinator, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, StartSaga};
use sagas::{SagaStatus, StepStatus};
use serde_json::{Value, json};

/// One request as the participant saw it.
#[derive(Debug, Clone)]
struct Seen {
    route: String,
    idempotency_key: String,
    action_key: String,
    saga_id: String,
    step: String,
    body: Value,
}

#[derive(Default)]
struct Participant {
    seen: Mutex<Vec<Seen>>,
    counts: Mutex<HashMap<String, u32>>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Routes: `/ok` answers 200 with an id; `/flaky/{n}` answers 503 (with Retry-After: 0) for
/// the first n requests of each idempotency key; `/reject` answers 422; `/slow` never
/// answers in time; `/undo` records compensations.
async fn handle(
    State(p): State<Arc<Participant>>,
    Path(route): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let seen = Seen {
        route: route.clone(),
        idempotency_key: header(&headers, "idempotency-key"),
        action_key: header(&headers, "x-saga-action-key"),
        saga_id: header(&headers, "x-saga-id"),
        step: header(&headers, "x-saga-step"),
        body: body.map(|b| b.0).unwrap_or(Value::Null),
    };
    let n = {
        let mut counts = p.counts.lock().unwrap();
        let c = counts.entry(format!("{route}/{}", seen.idempotency_key)).or_default();
        *c += 1;
        *c
    };
    p.seen.lock().unwrap().push(seen);
    let mut out = HeaderMap::new();
    let failures: u32 = route.strip_prefix("flaky-").and_then(|n| n.parse().ok()).unwrap_or(0);
    if n <= failures {
        out.insert("retry-after", "0".parse().unwrap());
        return (StatusCode::SERVICE_UNAVAILABLE, out, Json(json!({"error": "busy"})));
    }
    match route.as_str() {
        "reject" => (StatusCode::UNPROCESSABLE_ENTITY, out, Json(json!({"error": "no"}))),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (StatusCode::OK, out, Json(json!({})))
        }
        _ => (StatusCode::OK, out, Json(json!({"id": format!("{route}-{n}")}))),
    }
}

async fn participant() -> (Arc<Participant>, String) {
    let state = Arc::new(Participant::default());
    let app = Router::new().route("/{route}", post(handle)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, base)
}

async fn coordinator() -> Coordinator {
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Only(vec!["127.0.0.1".into()])),
        rust: HandlerRegistry::new(),
        faults: Arc::new(Faults::new()),
    };
    Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
        .await
        .unwrap()
}

fn step(name: &str, url: String, compensation: Option<String>) -> Value {
    let mut s = json!({
        "name": name,
        "action": {"http": {"method": "POST", "url": url, "body": {"saga": "{{saga.id}}", "amount": "{{input.amount}}"}}},
        "retry": {"max_attempts": 4, "initial_backoff_ms": 1, "max_backoff_ms": 10},
        "timeout_ms": 500
    });
    if let Some(c) = compensation {
        s["compensation"] =
            json!({"http": {"method": "POST", "url": c, "body": {"id": format!("{{{{steps.{name}.output.id}}}}")}}});
    }
    s
}

async fn run(coordinator: &Coordinator, steps: Vec<Value>) -> coordinator::SagaView {
    let doc = json!({"name": "t", "steps": steps});
    coordinator.register_definition(&doc).await.unwrap();
    let (coordinator::SagaView { record: saga, .. }, _) = coordinator
        .start_saga(StartSaga {
            definition: "t".into(),
            version: None,
            input: json!({"amount": 5}),
            idempotency_key: None,
            trace_context: None,
        })
        .await
        .unwrap();
    coordinator.wait(saga.id, Duration::from_secs(20)).await.unwrap();
    coordinator.saga(saga.id).await.unwrap()
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_idempotency_key() {
    let (p, base) = participant().await;
    let c = coordinator().await;
    let view = run(&c, vec![step("pay", format!("{base}/flaky-2"), None)]).await;
    assert_eq!(view.state.status(), SagaStatus::Completed);
    assert_eq!(view.state.steps()[0].attempts, 3);
    assert_eq!(view.state.steps()[0].output.as_ref().unwrap()["id"], "flaky-2-3");
    let seen = p.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let id = view.record.id.to_string();
    for s in &seen {
        assert_eq!(s.idempotency_key, format!("{id}:pay:action"));
        assert_eq!(s.saga_id, id);
        assert_eq!(s.step, "pay");
        assert_eq!(
            s.body,
            json!({"saga": id, "amount": 5}),
            "a whole-string template keeps the JSON type"
        );
    }
}

#[tokio::test]
async fn a_422_is_not_retried_and_unwinds_the_saga() {
    let (p, base) = participant().await;
    let c = coordinator().await;
    let view = run(
        &c,
        vec![
            step("reserve", format!("{base}/ok"), Some(format!("{base}/undo"))),
            step("charge", format!("{base}/reject"), None),
        ],
    )
    .await;
    assert_eq!(view.state.status(), SagaStatus::Compensated);
    let steps = view.state.steps();
    assert_eq!(steps[1].attempts, 1, "a business failure is not retried");
    assert_eq!(steps[1].error.as_ref().unwrap().status, Some(422));
    assert_eq!(steps[0].status, StepStatus::Compensated);
    let seen = p.seen.lock().unwrap().clone();
    let undo = seen.iter().find(|s| s.route == "undo").expect("the compensation ran");
    assert_eq!(
        undo.body,
        json!({"id": "ok-1"}),
        "the compensation sees its step's output"
    );
    assert_eq!(undo.idempotency_key, format!("{}:reserve:compensation", view.record.id));
    assert_eq!(undo.action_key, format!("{}:reserve:action", view.record.id));
    let action = seen.iter().find(|s| s.route == "ok").unwrap();
    assert_eq!(action.action_key, action.idempotency_key);
}

/// A participant that answers 5xx until the retries run out may have acted: the step ends
/// possibly applied and is compensated, keyed by the action's idempotency key; a refusal
/// (422) is not compensated.
#[tokio::test]
async fn a_5xx_until_the_retries_run_out_is_possibly_applied_and_compensated() {
    let (p, base) = participant().await;
    let c = coordinator().await;
    let mut pay = step("pay", format!("{base}/flaky-99"), None);
    pay["compensation"] =
        json!({"http": {"method": "POST", "url": format!("{base}/undo"), "body": {"saga": "{{saga.id}}"}}});
    let view = run(&c, vec![pay]).await;
    assert_eq!(view.state.status(), SagaStatus::Compensated);
    let s = &view.state.steps()[0];
    assert_eq!((s.status, s.attempts, s.uncertain), (StepStatus::Compensated, 4, true));
    assert_eq!(s.error.as_ref().unwrap().status, Some(503));
    let seen = p.seen.lock().unwrap().clone();
    let undo = seen.iter().find(|s| s.route == "undo").expect("the compensation ran");
    assert_eq!(undo.action_key, format!("{}:pay:action", view.record.id));
    let events = c.events(view.record.id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind()).collect();
    assert!(kinds.contains(&"step_outcome_unknown"), "{kinds:?}");

    let refused = run(
        &c,
        vec![{
            let mut s = step("pay", format!("{base}/reject"), None);
            s["compensation"] = json!({"http": {"method": "POST", "url": format!("{base}/undo")}});
            s
        }],
    )
    .await;
    assert_eq!(refused.state.steps()[0].status, StepStatus::Failed);
    let undos = p.seen.lock().unwrap().iter().filter(|s| s.route == "undo").count();
    assert_eq!(undos, 1, "a refused action is not compensated");
}

#[tokio::test]
async fn a_step_that_does_not_answer_in_time_times_out_and_is_retried() {
    let (p, base) = participant().await;
    let c = coordinator().await;
    let view = run(&c, vec![step("wait", format!("{base}/slow"), None)]).await;
    assert_eq!(view.state.status(), SagaStatus::Compensated);
    let s = &view.state.steps()[0];
    assert_eq!(s.attempts, 4, "timeouts are retried");
    assert_eq!(s.error.as_ref().unwrap().kind, sagas::FailureKind::Timeout);
    assert_eq!(s.status, StepStatus::PossiblyApplied, "it may have acted");
    assert_eq!(p.seen.lock().unwrap().len(), 4);
}

/// A connection that cannot be opened carried nothing: retried, and the step fails known
/// not applied (nothing to compensate).
#[tokio::test]
async fn a_connection_refused_is_retried_and_known_not_applied() {
    let c = coordinator().await;
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/x", listener.local_addr().unwrap());
    drop(listener);
    let view = run(&c, vec![step("call", dead, None)]).await;
    let s = &view.state.steps()[0];
    assert_eq!(s.attempts, 4);
    assert_eq!(s.error.as_ref().unwrap().kind, sagas::FailureKind::NotDelivered);
    assert_eq!((s.status, s.uncertain), (StepStatus::Failed, false));
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_at_registration() {
    let c = coordinator().await;
    let doc = json!({"name": "evil", "steps": [step("s", "http://169.254.169.254/latest".into(), None)]});
    let err = c.register_definition(&doc).await.unwrap_err();
    let coordinator::Error::Invalid(errors) = err else {
        panic!("{err}")
    };
    assert_eq!(errors.paths(), ["/steps/0/action/http/url"]);
}

/// A participant whose answer never ends (200 with no length, then 64 KiB chunks forever):
/// the step fails for good at the output limit instead of reading it whole, and is not
/// retried; its output is unusable (the action did run, so it counts as applied).
#[tokio::test]
async fn an_endless_answer_fails_the_step_at_the_output_limit() {
    let endless = || async {
        let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b'7'; 64 << 10]));
        axum::body::Body::from_stream(chunks)
    };
    let app = Router::new().route("/endless", post(endless));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = coordinator().await;
    let view = run(&c, vec![step("call", format!("{base}/endless"), None)]).await;
    assert_eq!(view.state.status(), SagaStatus::Compensated);
    let s = &view.state.steps()[0];
    assert_eq!(s.attempts, 1);
    let error = s.error.as_ref().unwrap();
    assert_eq!(error.kind, sagas::FailureKind::UnusableOutput);
    assert!(
        error.message.contains("larger than the 262144 bytes"),
        "{}",
        error.message
    );
}
