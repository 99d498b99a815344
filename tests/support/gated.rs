//! A bank participant with a gate, for the test of a paused coordinator (`tests/paused.rs`):
//! the action of step `b` is held until the test opens the gate, so that a coordinator
//! stopped with SIGSTOP certainly has attempts in flight, and the coordinator that adopts
//! its sagas re-runs them while the first requests are still held.
//!
//! It keeps the participant contract: an action applies once per idempotency key; a
//! compensation names its action (`X-Saga-Action-Key`), undoes it once, and is recorded
//! even when the action never ran (the barrier), after which that action is refused (409).
//! Step `c` refuses (422) when the input says `"fail": true`.
//!
//! It watches the requests of each (saga, step): requests for one key in flight at once are
//! a repeat (a coordinator re-running an attempt whose first request it could not see the
//! end of: allowed, and counted); requests under two keys of one step in flight at once (an
//! action and its compensation) mean two coordinators drove the step at once: a violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The step whose actions are held until [`Gated::open`].
pub const HELD_STEP: &str = "b";

/// What the participant saw.
#[derive(Default)]
pub struct Books {
    /// The balance of each step's account: the sum of the amounts of its applied actions,
    /// less those compensated.
    pub balances: BTreeMap<String, i64>,
    /// Applied actions: idempotency key -> amount.
    pub applied: HashMap<String, i64>,
    /// Action keys compensated (or whose compensation came first: the barrier).
    pub compensated: HashSet<String>,
    /// Requests per idempotency key.
    pub requests: HashMap<String, u32>,
    /// Keys with two requests in flight at once (a repeat, allowed).
    pub concurrent_repeats: HashSet<String>,
    /// Requests under two keys of one (saga, step) in flight at once: violations.
    pub overlaps: Vec<String>,
    /// Keys in flight now, by (saga, step).
    in_flight: HashMap<(String, String), Vec<String>>,
    /// Held requests per saga id.
    held: HashMap<String, u32>,
}

/// The participant: its books, its gate and its base URL.
pub struct Gated {
    /// What it saw.
    pub books: Mutex<Books>,
    open: watch::Sender<bool>,
    /// Its base URL.
    pub url: String,
}

impl Gated {
    /// Serves the participant on a free loopback port, its gate closed.
    pub async fn start() -> Arc<Gated> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gated = Arc::new(Gated {
            books: Mutex::default(),
            open: watch::channel(false).0,
            url: format!("http://{}", listener.local_addr().unwrap()),
        });
        let app = Router::new()
            .route("/act/{step}", post(act))
            .route("/undo/{step}", post(undo))
            .with_state(gated.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        gated
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// How many requests of saga `id` are held at the gate now.
    pub fn held(&self, id: &str) -> u32 {
        self.books.lock().unwrap().held.get(id).copied().unwrap_or(0)
    }

    /// Requests beyond the first of each key: attempts re-run (after an adoption).
    pub fn repeats(&self) -> u32 {
        self.books.lock().unwrap().requests.values().map(|n| n - 1).sum()
    }

    /// The saga `"paused"` of this participant: `a` and `b` compensated, `c` refused when
    /// the input says `"fail": true`; every action carries the input's amount.
    pub fn definition(&self) -> Value {
        let base = &self.url;
        let step = |name: &str, undo: bool| {
            let mut s = json!({
                "name": name,
                "action": {"http": {"method": "POST", "url": format!("{base}/act/{name}"),
                    "body": {"amount": "{{input.amount}}", "fail": "{{input.fail}}"}}},
                "retry": {"max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 100},
                // Longer than the gate stays closed, however loaded the machine.
                "timeout_ms": 120_000
            });
            if undo {
                s["compensation"] = json!({"http": {"method": "POST", "url": format!("{base}/undo/{name}"),
                    "body": {"saga": "{{saga.id}}"}}});
            }
            s
        };
        json!({"name": "paused", "steps": [step("a", true), step("b", true), step("c", false)]})
    }

    /// Checks saga `id`, which ended `status`, against the books: a completed saga has
    /// every action applied and none undone, a compensated one (meant to fail) has `a` and
    /// `b` applied and undone and `c` not applied.
    pub fn check(&self, id: &str, status: &str, fail: bool) -> Result<(), String> {
        let books = self.books.lock().unwrap();
        let key = |step: &str| format!("{id}:{step}:action");
        let applied = |step: &str| books.applied.contains_key(&key(step));
        let undone = |step: &str| books.compensated.contains(&key(step));
        match (status, fail) {
            ("completed", false) => {
                if let Some(step) = ["a", "b", "c"].into_iter().find(|s| !applied(s) || undone(s)) {
                    return Err(format!("{id}: completed, but step {step} is not applied or was undone"));
                }
            }
            ("compensated", true) => {
                if let Some(step) = ["a", "b"].into_iter().find(|s| !applied(s) || !undone(s)) {
                    return Err(format!("{id}: compensated, but step {step} was not applied and undone"));
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

/// A request in flight: entered into the books on arrival, removed when dropped.
struct InFlight {
    gated: Arc<Gated>,
    at: (String, String),
    key: String,
}

impl InFlight {
    fn enter(gated: &Arc<Gated>, key: &str) -> InFlight {
        let mut parts = key.split(':');
        let at = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut books = gated.books.lock().unwrap();
        *books.requests.entry(key.to_owned()).or_default() += 1;
        let keys = books.in_flight.entry(at.clone()).or_default();
        let same = keys.iter().any(|k| k == key);
        let other = keys.iter().find(|k| *k != key).cloned();
        keys.push(key.to_owned());
        if same {
            books.concurrent_repeats.insert(key.to_owned());
        }
        if let Some(other) = other {
            books
                .overlaps
                .push(format!("{key} arrived while {other} was in flight"));
        }
        InFlight {
            gated: gated.clone(),
            at,
            key: key.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut books = self.gated.books.lock().unwrap();
        if let Some(keys) = books.in_flight.get_mut(&self.at)
            && let Some(i) = keys.iter().position(|k| *k == self.key)
        {
            keys.swap_remove(i);
        }
    }
}

/// A request held at the gate: counted for its saga until it is let through (or dropped).
struct Held {
    gated: Arc<Gated>,
    saga: String,
}

impl Held {
    fn enter(gated: &Arc<Gated>, key: &str) -> Held {
        let saga = key.split(':').next().unwrap_or_default().to_owned();
        *gated.books.lock().unwrap().held.entry(saga.clone()).or_default() += 1;
        Held {
            gated: gated.clone(),
            saga,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(n) = self.gated.books.lock().unwrap().held.get_mut(&self.saga) {
            *n -= 1;
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `POST /act/{step}`: applies the action once per key (held at the gate for step `b`).
async fn act(
    State(gated): State<Arc<Gated>>,
    Path(step): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = header(&headers, "idempotency-key");
    let _in_flight = InFlight::enter(&gated, &key);
    if step == HELD_STEP {
        let _held = Held::enter(&gated, &key);
        let _ = gated.open.subscribe().wait_for(|open| *open).await;
    }
    if step == "c" && body["fail"] == json!(true) {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "refused"})));
    }
    let mut books = gated.books.lock().unwrap();
    if books.compensated.contains(&key) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "compensated before it arrived"})),
        );
    }
    if !books.applied.contains_key(&key) {
        let amount = body["amount"].as_i64().unwrap_or_default();
        books.applied.insert(key.clone(), amount);
        *books.balances.entry(step).or_default() += amount;
    }
    (StatusCode::OK, Json(json!({"id": key})))
}

/// `POST /undo/{step}`: undoes the action named by `X-Saga-Action-Key`, once.
async fn undo(
    State(gated): State<Arc<Gated>>,
    Path(step): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let _in_flight = InFlight::enter(&gated, &header(&headers, "idempotency-key"));
    let action = header(&headers, "x-saga-action-key");
    let mut books = gated.books.lock().unwrap();
    if books.compensated.insert(action.clone())
        && let Some(amount) = books.applied.get(&action).copied()
    {
        *books.balances.entry(step).or_default() -= amount;
    }
    (StatusCode::OK, Json(json!({"undone": action})))
}
