//! The REST API, route by route and error by error, on the in-memory store with Rust steps.

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
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, ListFilter, NewSaga, PutDefinition, SagaRecord,
    StoreStats, StoredEvent,
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
    async fn renew_leases(&self, owner: &str, until: i64) -> coordinator::Result<Vec<Uuid>> {
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

#[tokio::test]
async fn definitions_are_registered_versioned_listed_and_read() {
    let f = fixture().await;
    let first = f.post("/v1/definitions", json_trip("v1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["created"], true);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.headers[header::LOCATION], "/v1/definitions/json-trip?version=1");
    let again = f.post("/v1/definitions", json_trip("v1")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        (again.body["created"].clone(), again.body["version"].clone()),
        (json!(false), json!(1))
    );
    assert_eq!(again.body["content_hash"], first.body["content_hash"]);

    let changed = f.post("/v1/definitions", json_trip("v2")).await;
    assert_eq!(changed.status, StatusCode::CREATED);
    assert_eq!(changed.body["version"], 2);
    assert_ne!(changed.body["content_hash"], first.body["content_hash"]);

    let latest = f.get("/v1/definitions/json-trip").await;
    assert_eq!(latest.status, StatusCode::OK);
    assert_eq!(latest.body["version"], 2);
    assert_eq!(latest.body["document"]["description"], "v2");
    let v1 = f.get("/v1/definitions/json-trip?version=1").await;
    assert_eq!(
        (v1.body["version"].clone(), v1.body["document"]["description"].clone()),
        (json!(1), json!("v1"))
    );
    assert_eq!(v1.body["content_hash"], first.body["content_hash"]);
    assert!(v1.body["created_at"].as_str().unwrap().ends_with('Z'));

    let list = f.get("/v1/definitions").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].clone(), d["latest_version"].clone()))
        .collect();
    assert!(
        names.contains(&(json!("json-trip"), json!(2))) && names.contains(&(json!("trip"), json!(1))),
        "{names:?}"
    );

    f.get("/v1/definitions/nope").await.problem(404, "definition-not-found");
    f.get("/v1/definitions/json-trip?version=9")
        .await
        .problem(404, "definition-not-found");
    let bad = f.get("/v1/definitions/json-trip?version=0").await;
    bad.problem(400, "invalid-parameter");
    assert_eq!(bad.paths(), ["/query/version"]);
    assert_eq!(
        f.get("/v1/definitions/json-trip?version=x").await.paths(),
        ["/query/version"]
    );
}

#[tokio::test]
async fn invalid_definitions_are_422_with_every_path() {
    let f = fixture().await;
    let shape = f
        .post(
            "/v1/definitions",
            json!({"name": "x", "steps": [{"name": "a", "action": {"rust": {"handler": "h"}}, "bogus": 1}]}),
        )
        .await;
    shape.problem(422, "invalid-definition");
    assert_eq!(shape.paths(), ["/steps/0/bogus"]);

    let meaning = json!({"name": "bad name", "steps": [
        {"name": "a", "action": {"rust": {"handler": "trip.reserve"}}},
        {"name": "a", "depends_on": ["missing"], "action": {"rust": {"handler": "trip.reserve"}}}
    ]});
    let answer = f.post("/v1/definitions", meaning).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/name", "/steps/1/name", "/steps/1/depends_on/0"]);

    let unknown = json!({"name": "u", "steps": [{"name": "a", "action": {"rust": {"handler": "no.such"}}}]});
    let answer = f.post("/v1/definitions", unknown).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/steps/0/action/rust/handler"]);

    let host = json!({"name": "h", "steps": [
        {"name": "ok", "action": {"http": {"method": "POST", "url": "https://payments.example/pay"}},
         "compensation": {"http": {"method": "POST", "url": "https://evil.example/refund"}}}
    ]});
    let answer = f.post("/v1/definitions", host).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/steps/0/compensation/http/url"]);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused() {
    let f = fixture().await;
    let malformed = Request::post("/v1/definitions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let answer = f.send(malformed).await;
    assert!(
        answer.problem(400, "malformed-json")["detail"]
            .as_str()
            .unwrap()
            .contains("EOF while parsing"),
        "{}",
        answer.body
    );

    let text = Request::post("/v1/sagas")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    f.send(text).await.problem(415, "unsupported-media-type");
    let untyped = Request::post("/v1/definitions").body(Body::from("{}")).unwrap();
    f.send(untyped).await.problem(415, "unsupported-media-type");

    let big = json!({"name": "big", "description": "x".repeat(2 << 20), "steps": []});
    f.post("/v1/definitions", big).await.problem(413, "payload-too-large");

    let shape = f.post("/v1/sagas", json!({"definition": 5})).await;
    shape.problem(422, "invalid-body");
    assert_eq!(shape.paths(), ["/definition"]);
    assert_eq!(
        f.post("/v1/sagas", json!({"definition": "trip", "inptu": {}}))
            .await
            .paths(),
        ["/inptu"]
    );
}

#[tokio::test]
async fn a_saga_starts_and_answers_when_settled() {
    let f = fixture_with(Options::default(), |s| {
        s.jaeger_ui = Some("http://jaeger:16686/".into())
    })
    .await;
    let answer = f
        .call(
            "POST",
            "/v1/sagas?wait_ms=10000",
            &[("traceparent", TRACEPARENT)],
            Some(json!({"definition": "trip", "input": {"amount": 3}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let saga = &answer.body;
    let id = saga["id"].as_str().unwrap();
    assert_eq!(answer.headers[header::LOCATION], format!("/v1/sagas/{id}"));
    assert_eq!(
        (
            saga["definition"].as_str(),
            saga["version"].as_i64(),
            saga["status"].as_str()
        ),
        (Some("trip"), Some(1), Some("completed"))
    );
    assert_eq!(saga["input"], json!({"amount": 3}));
    assert_eq!(saga["error"], Value::Null);
    assert_eq!(saga["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        saga["trace_url"],
        "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let created = saga["created_at"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with('Z') && &created[10..11] == "T",
        "{created}"
    );
    let steps = saga["steps"].as_array().unwrap();
    assert_eq!(
        steps[0],
        json!({"name": "reserve", "status": "succeeded", "attempts": 1, "output": {"reserved": 3}, "error": null,
        "compensation": {"status": "not_needed", "attempts": 0, "error": null}})
    );
    assert_eq!(steps[1]["compensation"]["status"], "none");

    let shown = f.get(&format!("/v1/sagas/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(&shown.body, saga);

    let events = f.get(&format!("/v1/sagas/{id}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    let log = events.body["events"].as_array().unwrap();
    let types: Vec<_> = log.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["step_started", "step_succeeded", "step_started", "step_succeeded"]
    );
    assert_eq!(log[1]["seq"], 1);
    assert_eq!(
        (
            log[1]["step"].clone(),
            log[1]["attempt"].clone(),
            log[1]["output"].clone()
        ),
        (json!("reserve"), json!(1), json!({"reserved": 3}))
    );
    assert!(log[0]["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn bad_starts_are_refused() {
    let f = fixture().await;
    let wrong = f
        .post("/v1/sagas", json!({"definition": "trip", "input": {"amount": "3"}}))
        .await;
    wrong.problem(422, "invalid-input");
    assert_eq!(wrong.paths(), ["/input/amount"]);
    let missing = f.post("/v1/sagas", json!({"definition": "trip"})).await;
    missing.problem(422, "invalid-input");
    assert_eq!(missing.paths(), ["/input"]);
    f.post("/v1/sagas", json!({"definition": "nope"}))
        .await
        .problem(404, "definition-not-found");
    f.post(
        "/v1/sagas",
        json!({"definition": "trip", "version": 7, "input": {"amount": 1}}),
    )
    .await
    .problem(404, "definition-not-found");
    let wait = f
        .post(
            "/v1/sagas?wait_ms=soon",
            json!({"definition": "trip", "input": {"amount": 1}}),
        )
        .await;
    wait.problem(400, "invalid-parameter");
    assert_eq!(wait.paths(), ["/query/wait_ms"]);
}

#[tokio::test]
async fn idempotency_keys_start_one_saga() {
    let f = fixture().await;
    let body = json!({"definition": "trip", "input": {"amount": 1}});
    let first = f
        .call("POST", "/v1/sagas", &[("idempotency-key", "k1")], Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = f
        .call("POST", "/v1/sagas", &[("Idempotency-Key", "k1")], Some(body.clone()))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);
    let in_body = f
        .post(
            "/v1/sagas",
            json!({"definition": "trip", "input": {"amount": 1}, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(
        (in_body.status, &in_body.body["id"]),
        (StatusCode::OK, &first.body["id"])
    );

    let other = f
        .call(
            "POST",
            "/v1/sagas",
            &[("idempotency-key", "k1")],
            Some(json!({"definition": "trip", "input": {"amount": 2}})),
        )
        .await;
    other.problem(409, "idempotency-conflict");
    let both = json!({"definition": "trip", "input": {"amount": 1}, "idempotency_key": "k2"});
    let differ = f
        .call("POST", "/v1/sagas", &[("idempotency-key", "k1")], Some(both))
        .await;
    differ.problem(400, "invalid-parameter");
    assert_eq!(differ.paths(), ["/header/idempotency-key"]);
}

#[tokio::test]
async fn sagas_are_listed_newest_first_a_page_at_a_time() {
    let f = fixture().await;
    let mut started = Vec::new();
    for amount in 1..=12 {
        started.push(f.trip(amount).await["id"].as_str().unwrap().to_owned());
    }
    f.coordinator.runners().faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("declined")),
        Some(1),
    );
    let failed = f.trip(99).await;
    assert_eq!(failed["status"], "compensated");
    assert_eq!(failed["steps"][0]["compensation"]["status"], "succeeded");
    assert!(failed["error"].as_str().unwrap().contains("declined"));

    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/sagas?status=completed&limit=5&cursor={c}"),
            None => "/v1/sagas?status=completed&limit=5".to_owned(),
        };
        let page = f.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        seen.extend(
            page.body["sagas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 12);
    started.reverse();
    assert_eq!(seen, started, "newest first");

    let compensated = f.get("/v1/sagas?status=compensated").await;
    let ids: Vec<_> = compensated.body["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [failed["id"].clone()]);
    assert_eq!(
        f.get("/v1/sagas?definition=trip&limit=500").await.body["sagas"]
            .as_array()
            .unwrap()
            .len(),
        13
    );
    assert_eq!(f.get("/v1/sagas?definition=hold").await.body["sagas"], json!([]));

    for (query, path) in [
        ("status=done", "/query/status"),
        ("limit=0", "/query/limit"),
        ("limit=501", "/query/limit"),
        ("limit=x", "/query/limit"),
        ("cursor=zz", "/query/cursor"),
        ("cursor=4142", "/query/cursor"),
    ] {
        let answer = f.get(&format!("/v1/sagas?{query}")).await;
        answer.problem(400, "invalid-parameter");
        assert_eq!(answer.paths(), [path], "{query}");
    }
}

#[tokio::test]
async fn cancel_and_retry_follow_the_saga_status() {
    let f = fixture().await;
    let done = f.trip(1).await;
    let id = done["id"].as_str().unwrap();
    f.post(&format!("/v1/sagas/{id}/cancel"), json!({}))
        .await
        .problem(409, "illegal-transition");
    f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None)
        .await
        .problem(409, "illegal-transition");

    let held = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    assert_eq!(
        (held.status, held.body["status"].as_str()),
        (StatusCode::CREATED, Some("running"))
    );
    let id = held.body["id"].as_str().unwrap();
    let cancelled = f
        .post(&format!("/v1/sagas/{id}/cancel"), json!({"reason": "changed my mind"}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "compensating");
    assert_eq!(cancelled.body["error"], "cancelled: changed my mind");
    f.gate.add_permits(1);
    f.coordinator
        .wait(id.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let after = f.get(&format!("/v1/sagas/{id}")).await;
    assert_eq!(after.body["status"], "compensated");
    assert_eq!(
        after.body["steps"][0]["compensation"],
        json!({"status": "succeeded", "attempts": 1, "error": null})
    );
    let log = f.get(&format!("/v1/sagas/{id}/events")).await.body;
    assert!(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "cancel_requested" && e["reason"] == "changed my mind")
    );

    // A body-less cancel works too.
    let held = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    let answer = f
        .call(
            "POST",
            &format!("/v1/sagas/{}/cancel", held.body["id"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::OK, Some("cancelled: cancelled through the API"))
    );
    f.gate.add_permits(1);
}

#[tokio::test]
async fn a_stuck_saga_is_retried() {
    let f = fixture().await;
    let faults = &f.coordinator.runners().faults;
    faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("declined")),
        Some(1),
    );
    faults.inject(
        None,
        "reserve",
        Phase::Compensation,
        Fault::Fail(StepError::permanent("refund API down")),
        Some(1),
    );
    let stuck = f.trip(5).await;
    assert_eq!(stuck["status"], "stuck");
    let compensation = &stuck["steps"][0]["compensation"];
    assert_eq!(
        (compensation["status"].as_str(), compensation["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert_eq!(
        compensation["error"],
        json!({"kind": "permanent", "message": "refund API down"})
    );
    assert_eq!(
        stuck["steps"][1]["error"],
        json!({"kind": "permanent", "message": "declined"})
    );

    let id = stuck["id"].as_str().unwrap();
    let retried = f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    f.coordinator
        .wait(id.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let after = f.get(&format!("/v1/sagas/{id}")).await.body;
    assert_eq!(after["status"], "compensated");
    assert_eq!(
        (
            after["steps"][0]["compensation"]["status"].as_str(),
            after["steps"][0]["compensation"]["attempts"].as_u64()
        ),
        (Some("succeeded"), Some(2))
    );
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_ids_400() {
    let f = fixture().await;
    let id = Uuid::now_v7();
    f.get(&format!("/v1/sagas/{id}")).await.problem(404, "saga-not-found");
    f.get(&format!("/v1/sagas/{id}/events"))
        .await
        .problem(404, "saga-not-found");
    f.post(&format!("/v1/sagas/{id}/cancel"), json!({}))
        .await
        .problem(404, "saga-not-found");
    f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None)
        .await
        .problem(404, "saga-not-found");
    let bad = f.get("/v1/sagas/not-a-uuid").await;
    bad.problem(400, "invalid-parameter");
    assert_eq!(bad.paths(), ["/path/id"]);
    assert_eq!(
        f.call("POST", "/v1/sagas/42/retry", &[], None).await.paths(),
        ["/path/id"]
    );
    f.get("/v2/anything").await.problem(404, "not-found");
    let delete = f.call("DELETE", "/v1/sagas", &[], None).await;
    delete.problem(405, "method-not-allowed");
    let allow: HashSet<_> = delete.headers[header::ALLOW].to_str().unwrap().split(',').collect();
    assert_eq!(allow, HashSet::from(["GET", "HEAD", "POST"]));
}

#[tokio::test]
async fn tokens_guard_the_v1_routes_only() {
    let f = fixture_with(Options::default(), |s| s.tokens = vec!["other".into(), TOKEN.into()]).await;
    let none = f.get("/v1/sagas").await;
    none.problem(401, "unauthorized");
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    f.call("GET", "/v1/sagas", &[("authorization", "Bearer wrong")], None)
        .await
        .problem(401, "unauthorized");
    f.call(
        "GET",
        "/v1/schema/definition",
        &[("authorization", "Basic czNjcmV0")],
        None,
    )
    .await
    .problem(401, "unauthorized");
    let big = json!({"name": "big", "description": "x".repeat(2 << 20), "steps": []});
    f.post("/v1/definitions", big).await.problem(401, "unauthorized");
    let ok = f
        .call(
            "GET",
            "/v1/sagas",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        f.call(
            "GET",
            "/v1/definitions",
            &[("authorization", &format!("bearer {TOKEN}"))],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(f.get(open).await.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn probes_and_documents() {
    let f = fixture().await;
    let health = f.get("/healthz").await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(f.get("/readyz").await.status, StatusCode::OK);

    let schema = f.get("/v1/schema/definition").await;
    assert_eq!(schema.status, StatusCode::OK);
    assert_eq!(schema.body, sagas::document::definition_schema());

    let doc = f.get("/openapi.json").await.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/definitions",
        "/v1/definitions/{name}",
        "/v1/sagas",
        "/v1/sagas/{id}",
        "/v1/sagas/{id}/events",
        "/v1/sagas/{id}/cancel",
        "/v1/sagas/{id}/retry",
        "/v1/schema/definition",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    assert!(paths["/v1/sagas"]["post"]["responses"]["422"].is_object());
    let operations: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations.iter().collect::<HashSet<_>>().len(),
        operations.len(),
        "operation ids are unique: {operations:?}"
    );
    for schema in [
        "Problem",
        "SagaResponse",
        "SagaPage",
        "StartSagaRequest",
        "DefinitionCreated",
        "EventLog",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is not documented"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn store_failures_are_500_and_unready() {
    let f = fixture().await;
    f.store.down.store(true, Ordering::SeqCst);
    let answer = f.get("/v1/sagas").await;
    answer.problem(500, "internal");
    assert!(
        !answer.body["detail"].as_str().unwrap().contains("connection refused"),
        "store details stay in the log"
    );
    let ready = f.get("/readyz").await;
    assert!(
        ready.problem(503, "not-ready")["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(f.get("/healthz").await.status, StatusCode::OK);
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(f.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_overloaded_coordinator_is_503_with_retry_after() {
    let f = fixture_with(
        Options {
            max_running: 1,
            ..Options::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(
        f.post("/v1/sagas", json!({"definition": "hold"})).await.status,
        StatusCode::CREATED
    );
    let answer = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    answer.problem(503, "overloaded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    f.gate.add_permits(1);
}
