//! The REST API, route by route and error by error, on the in-memory store with Rust steps:
//! the fixture and request helpers here, the cases by theme in the modules below.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use coordinator::api::{ApiState, app};
use coordinator::store::memory::MemoryStore;
use coordinator::store::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, Expiry, ListFilter, NewSaga, PutDefinition,
    SagaRecord, StoreStats, StoredEvent,
};
use coordinator::{
    Coordinator, Fault, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga, StepContext, Store,
};
use sagas::{Phase, StepError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use uuid::Uuid;

const TOKEN: &str = "s3cret";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A store that fails on demand (pings and saga listings), for the 500 and 503 cases.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> coordinator::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(coordinator::Error::Store("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn put_definition(
        &self,
        name: &str,
        hash: &str,
        doc: &Value,
        now: i64,
    ) -> coordinator::Result<PutDefinition> {
        self.inner.put_definition(name, hash, doc, now).await
    }
    async fn get_definition(&self, name: &str, version: Option<i64>) -> coordinator::Result<Option<DefinitionRecord>> {
        self.inner.get_definition(name, version).await
    }
    async fn list_definitions(&self) -> coordinator::Result<Vec<DefinitionSummary>> {
        self.inner.list_definitions().await
    }
    async fn create_saga(&self, new: NewSaga) -> coordinator::Result<Created> {
        self.inner.create_saga(new).await
    }
    async fn append(&self, append: Append) -> coordinator::Result<AppendAck> {
        self.inner.append(append).await
    }
    async fn get_saga(&self, id: Uuid) -> coordinator::Result<Option<SagaRecord>> {
        self.inner.get_saga(id).await
    }
    async fn events(&self, id: Uuid) -> coordinator::Result<Vec<StoredEvent>> {
        self.inner.events(id).await
    }
    async fn list_sagas(&self, filter: &ListFilter) -> coordinator::Result<Vec<SagaRecord>> {
        self.check()?;
        self.inner.list_sagas(filter).await
    }
    async fn renew_leases(&self, owner: &str, until: i64) -> coordinator::Result<coordinator::store::Renewed> {
        self.inner.renew_leases(owner, until).await
    }
    async fn claim(
        &self,
        owner: &str,
        own: bool,
        now: i64,
        until: i64,
        limit: u32,
    ) -> coordinator::Result<Vec<SagaRecord>> {
        self.inner.claim(owner, own, now, until, limit).await
    }
    async fn take_over_stuck(&self, id: Uuid, owner: &str, until: i64) -> coordinator::Result<Option<SagaRecord>> {
        self.inner.take_over_stuck(id, owner, until).await
    }
    async fn request_cancel(&self, id: Uuid) -> coordinator::Result<Option<SagaRecord>> {
        self.inner.request_cancel(id).await
    }
    async fn release(&self, owner: &str) -> coordinator::Result<()> {
        self.inner.release(owner).await
    }
    async fn expired(&self, expiry: &Expiry, limit: u32) -> coordinator::Result<Vec<SagaRecord>> {
        self.inner.expired(expiry, limit).await
    }
    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> coordinator::Result<Vec<Uuid>> {
        self.inner.delete_expired(ids, expiry).await
    }
    async fn ping(&self) -> coordinator::Result<()> {
        self.check()
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

struct Fixture {
    app: Router,
    coordinator: Coordinator,
    gate: Arc<Semaphore>,
    store: Arc<FlakyStore>,
}

async fn reserve(_: Arc<()>, cx: StepContext) -> Result<Value, StepError> {
    Ok(json!({"reserved": cx.input::<Value>()?["amount"]}))
}

async fn nothing(_: Arc<()>, _: StepContext) -> Result<(), StepError> {
    Ok(())
}

async fn held(gate: Arc<Semaphore>, _: StepContext) -> Result<(), StepError> {
    gate.acquire()
        .await
        .map_err(|e| StepError::permanent(e.to_string()))?
        .forget();
    Ok(())
}

/// `trip` (reserve, compensated; then charge; input `{amount >= 1}`) and `hold` (one step
/// that waits for a permit of the gate).
async fn fixture_with(options: Options, configure: impl FnOnce(&mut ApiState)) -> Fixture {
    let registry = HandlerRegistry::new();
    let schema =
        json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer", "minimum": 1}}});
    let trip = RustSaga::new("trip", Arc::new(()))
        .input_schema(schema)
        .step("reserve", reserve)
        .compensate(nothing)
        .step("charge", nothing)
        .build(&registry)
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let hold = RustSaga::new("hold", gate.clone())
        .step("wait", held)
        .compensate(|_: Arc<Semaphore>, _| async { Ok(()) })
        .build(&registry)
        .unwrap();
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Only(vec!["payments.example".into()])),
        rust: registry,
        faults: Default::default(),
    };
    let store = Arc::new(FlakyStore::default());
    let coordinator = Coordinator::start(store.clone(), runners, options).await.unwrap();
    coordinator.register(&trip).await.unwrap();
    coordinator.register(&hold).await.unwrap();
    let mut state = ApiState::new(coordinator.clone());
    configure(&mut state);
    Fixture {
        app: app(state),
        coordinator,
        gate,
        store,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Options::default(), |_| {}).await
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer { status, headers, body }
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: Option<Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call("GET", uri, &[], None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.call("POST", uri, &[], Some(body)).await
    }

    /// Starts a trip and waits for it to settle.
    async fn trip(&self, amount: i64) -> Value {
        let answer = self
            .post(
                "/v1/sagas?wait_ms=10000",
                json!({"definition": "trip", "input": {"amount": amount}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body
    }
}

impl Answer {
    /// Asserts a problem answer with this status and type; returns it.
    #[track_caller]
    fn problem(&self, status: u16, slug: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(
            self.body["type"],
            format!("https://geosaga.dev/problems/{slug}"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["title"].is_string() && self.body["detail"].is_string(),
            "{}",
            self.body
        );
        &self.body
    }

    fn paths(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect()
    }
}

fn json_trip(description: &str) -> Value {
    json!({
        "name": "json-trip",
        "description": description,
        "steps": [{"name": "reserve", "action": {"rust": {"handler": "trip.reserve"}}, "compensation": {"rust": {"handler": "trip.reserve.undo"}}}]
    })
}

mod console;
mod definitions;
mod operations;
mod starts;
