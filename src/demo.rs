//! The demo participant of `geosaga dev`: small payment, inventory and shipping services in
//! the same process, whose failures are chosen by the saga input so that compensation can be
//! seen at once.
//!
//! - `POST /payment/debit` fails (422) when `amount` is over 1000: insufficient funds.
//! - `POST /payment/credit` fails (422) when the account is `"closed"`.
//! - `POST /shipping/notify` answers 503 twice per idempotency key when the account is
//!   `"flaky"`, then succeeds: retries in action.
//! - `POST /inventory/car` fails (422) when the city is `"Atlantis"`.
//! - Every other route succeeds. Each effect is applied once per `Idempotency-Key`; a repeat
//!   returns the first answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Demo {
    answers: Mutex<HashMap<String, (u16, Value)>>,
    attempts: Mutex<HashMap<String, u32>>,
    counter: Mutex<u64>,
}

/// The demo participant's routes.
pub fn router() -> Router {
    Router::new()
        .route("/payment/{op}", post(handle))
        .route("/inventory/{op}", post(handle))
        .route("/inventory/{op}/cancel", post(cancel))
        .route("/shipping/{op}", post(handle))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(Demo::default()))
}

/// Serves the demo participant on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router()).await {
            tracing::error!(error = %e, "demo participant stopped");
        }
    });
    Ok(bound)
}

fn key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn cancel(
    State(demo): State<Arc<Demo>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    respond(&demo, &headers, || {
        (200, json!({"cancelled": op, "reservation": body.get("id")}))
    })
}

async fn handle(
    State(demo): State<Arc<Demo>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let key = key(&headers);
    let attempt = {
        let mut attempts = demo.attempts.lock().expect("lock");
        let n = attempts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
    let amount = field("amount").as_f64().unwrap_or(0.0);
    if op == "notify" && field("to") == "flaky" && attempt <= 2 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "shipping is busy, try again", "attempt": attempt})),
        );
    }
    let next_id = {
        let mut c = demo.counter.lock().expect("lock");
        *c += 1;
        *c
    };
    respond(&demo, &headers, || match op.as_str() {
        "debit" | "charge" if amount > 1000.0 => (422, json!({"error": "insufficient funds", "amount": amount})),
        "credit" if field("account") == "closed" => (422, json!({"error": "account closed"})),
        "car" if field("city") == "Atlantis" => (422, json!({"error": "no cars in Atlantis"})),
        _ => (200, json!({"id": format!("{op}-{next_id}")})),
    })
}

/// Applies an effect once per idempotency key; repeats get the first answer.
fn respond(demo: &Demo, headers: &HeaderMap, effect: impl FnOnce() -> (u16, Value)) -> (StatusCode, Json<Value>) {
    let key = key(headers);
    if key.is_empty() {
        let (status, body) = effect();
        return (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body));
    }
    let mut answers = demo.answers.lock().expect("lock");
    let (status, body) = answers.entry(key).or_insert_with(effect).clone();
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body))
}
