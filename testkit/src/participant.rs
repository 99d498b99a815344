//! A participant service for the black-box tests: it applies each effect once per
//! idempotency key, remembers every request, and notices two requests for one key in flight
//! at once (which would mean two coordinators ran the same step at the same time).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the participant saw.
#[derive(Default)]
pub struct Ledger {
    /// Requests per idempotency key.
    pub requests: HashMap<String, u32>,
    /// Action keys whose effect was applied.
    pub applied: HashSet<String>,
    /// Action keys undone, with the compensation key that undid each.
    pub undone: HashMap<String, String>,
    /// Keys seen with two requests in flight at once.
    pub overlaps: HashSet<String>,
    /// The `traceparent` header of every request that had one, with its idempotency key.
    pub traceparents: Vec<(String, String)>,
    in_flight: HashMap<String, u32>,
}

/// The participant's shared state.
#[derive(Default)]
pub struct Participant {
    /// What it saw.
    pub ledger: Mutex<Ledger>,
    /// Woken whenever a compensation request is in flight.
    pub undo_in_flight: Notify,
}

struct InFlight {
    participant: Arc<Participant>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut ledger = self.participant.ledger.lock().unwrap();
        if let Some(n) = ledger.in_flight.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

fn enter(p: &Arc<Participant>, key: &str, headers: &HeaderMap) -> InFlight {
    let mut ledger = p.ledger.lock().unwrap();
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        ledger.traceparents.push((key.to_owned(), tp.to_owned()));
    }
    *ledger.requests.entry(key.to_owned()).or_default() += 1;
    let n = ledger.in_flight.entry(key.to_owned()).or_default();
    *n += 1;
    if *n > 1 {
        ledger.overlaps.insert(key.to_owned());
    }
    InFlight {
        participant: p.clone(),
        key: key.to_owned(),
    }
}

fn key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::random::<u64>() % (max_ms + 1))
}

/// `POST /act/{step}`: applies the step (once per key). Step `c` refuses with 422 when the
/// body says `"fail": true`.
async fn act(
    State(p): State<Arc<Participant>>,
    Path(step): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = key(&headers);
    let _guard = enter(&p, &key, &headers);
    tokio::time::sleep(jitter(15)).await;
    if step == "c" && body["fail"] == json!(true) {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "refused"})));
    }
    p.ledger.lock().unwrap().applied.insert(key.clone());
    (StatusCode::OK, Json(json!({"id": key})))
}

/// `POST /undo/{step}`: undoes the action whose key is `X-Saga-Action-Key` (the participant
/// contract: keyed by the action, not by its output).
async fn undo(
    State(p): State<Arc<Participant>>,
    Path(_step): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let key = key(&headers);
    let _guard = enter(&p, &key, &headers);
    p.undo_in_flight.notify_waiters();
    tokio::time::sleep(Duration::from_millis(10) + jitter(40)).await;
    let of = headers
        .get("x-saga-action-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    p.ledger.lock().unwrap().undone.entry(of).or_insert(key);
    (StatusCode::OK, Json(json!({})))
}

/// Starts the participant on a free loopback port; returns it and its base URL.
pub async fn start() -> (Arc<Participant>, String) {
    let state = Arc::new(Participant::default());
    let app = Router::new()
        .route("/act/{step}", post(act))
        .route("/undo/{step}", post(undo))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, base)
}

/// The three-step saga of the crash tests: `a`, `b` (both compensated), then `c`, which the
/// participant refuses when the input says `"fail": true`.
pub fn definition(base: &str) -> Value {
    let step = |name: &str, undo: bool| {
        let mut s = json!({
            "name": name,
            "action": {"http": {"method": "POST", "url": format!("{base}/act/{name}"), "body": {"fail": "{{input.fail}}"}}},
            "retry": {"max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 100},
            "timeout_ms": 2000
        });
        if undo {
            s["compensation"] = json!({"http": {"method": "POST", "url": format!("{base}/undo/{name}"),
                "body": {"saga": "{{saga.id}}"}}});
        }
        s
    };
    json!({"name": "crashy", "steps": [step("a", true), step("b", true), step("c", false)]})
}

impl Participant {
    /// Checks what the participant saw of saga `id` against its final `status` and whether
    /// it was meant to fail; returns a description of the first violation.
    pub fn check(&self, id: &str, status: &str, fail: bool) -> Result<(), String> {
        let ledger = self.ledger.lock().unwrap();
        let applied = |step: &str| ledger.applied.contains(&format!("{id}:{step}:action"));
        let undone = |step: &str| ledger.undone.get(&format!("{id}:{step}:action"));
        match (status, fail) {
            ("completed", false) => {
                for step in ["a", "b", "c"] {
                    if !applied(step) {
                        return Err(format!("{id}: completed but step {step} was never applied"));
                    }
                    if undone(step).is_some() {
                        return Err(format!("{id}: completed but step {step} was undone"));
                    }
                }
            }
            ("compensated", true) => {
                for step in ["a", "b"] {
                    if !applied(step) {
                        return Err(format!("{id}: step {step} was not applied before c failed"));
                    }
                    match undone(step) {
                        Some(by) if by == &format!("{id}:{step}:compensation") => {}
                        other => return Err(format!("{id}: step {step} undone by {other:?}")),
                    }
                }
                if applied("c") {
                    return Err(format!("{id}: the refused step c counts as applied"));
                }
            }
            _ => return Err(format!("{id}: ended {status} though fail = {fail}")),
        }
        Ok(())
    }
}
