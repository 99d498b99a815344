//! A bank participant with a flaw chosen by the first path segment, for `geosaga check`'s
//! tests: `/sound/...` keeps the participant contract, `/ignores-key/...` applies every
//! debit it is sent, `/double-refund/...` refunds every refund it is sent, and
//! `/late-applies/...` keeps no barrier, so a debit that arrives after its refund is applied.
//! `GET /{flavour}/balances` shows the books of that flavour.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Books {
    balances: BTreeMap<String, i64>,
    /// The answer of each applied action, by idempotency key.
    applied: HashMap<String, (i64, Value)>,
    /// Action keys compensated (the barrier).
    compensated: HashSet<String>,
    next_id: u64,
}

type Flawed = Arc<Mutex<HashMap<String, Books>>>;

/// Serves the flawed participant on a free port; returns its base URL.
pub async fn serve() -> String {
    let state: Flawed = Arc::default();
    let app = Router::new()
        .route("/{flavour}/balances", get(balances))
        .route("/{flavour}/{op}", post(act))
        .route("/{flavour}/{op}/undo", post(undo))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn balances(State(state): State<Flawed>, Path(flavour): Path<String>) -> Json<Value> {
    let state = state.lock().unwrap();
    Json(json!(
        state.get(&flavour).map(|b| b.balances.clone()).unwrap_or_default()
    ))
}

/// `debit` or `credit` of `amount` on `account`.
async fn act(
    State(state): State<Flawed>,
    Path((flavour, op)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = header(&headers, "idempotency-key");
    let mut state = state.lock().unwrap();
    let books = state.entry(flavour.clone()).or_default();
    if flavour != "late-applies" && books.compensated.contains(&key) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "compensated before it arrived"})),
        );
    }
    if flavour != "ignores-key"
        && let Some((_, answer)) = books.applied.get(&key)
    {
        return (StatusCode::OK, Json(answer.clone()));
    }
    let account = body["account"].as_str().unwrap_or_default().to_owned();
    let amount = body["amount"].as_i64().unwrap_or_default();
    let delta = if op == "debit" { -amount } else { amount };
    *books.balances.entry(account).or_insert(1000) += delta;
    books.next_id += 1;
    let answer = json!({"id": format!("{op}-{}", books.next_id)});
    books.applied.insert(key, (delta, answer.clone()));
    (StatusCode::OK, Json(answer))
}

/// Undoes the action named by `X-Saga-Action-Key`.
async fn undo(
    State(state): State<Flawed>,
    Path((flavour, _op)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let action = header(&headers, "x-saga-action-key");
    let mut state = state.lock().unwrap();
    let books = state.entry(flavour.clone()).or_default();
    let account = body["account"].as_str().unwrap_or_default().to_owned();
    let first = books.compensated.insert(action.clone());
    if flavour == "double-refund" {
        // Refunds by the amount in the request, every time it is sent.
        if let Some((delta, _)) = books.applied.get(&action) {
            *books.balances.entry(account).or_insert(1000) -= *delta;
        }
    } else if first && let Some((delta, _)) = books.applied.get(&action) {
        *books.balances.entry(account).or_insert(1000) -= *delta;
    }
    Json(json!({"undone": action}))
}
