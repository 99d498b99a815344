//! The demo participant of `geosaga dev`: small payment, inventory and shipping services in
//! the same process, whose failures are chosen by the saga input so that compensation can be
//! seen at once.
//!
//! - `POST /payment/debit` fails (422) when `amount` is over 1000: insufficient funds.
//! - `POST /payment/credit` fails (422) when the account is `"closed"`; to the account
//!   `"slow"` it applies the credit at once but answers only after 1.5 s, every attempt:
//!   longer than the step's time limit, so the coordinator never learns that it did.
//! - `POST /shipping/notify` answers 503 twice per idempotency key when the account is
//!   `"flaky"`, then succeeds: retries in action.
//! - `POST /inventory/car` fails (422) when the city is `"Atlantis"`.
//! - Every other action succeeds. `GET /payment/balances` shows the books: every account
//!   opens with 1000; a debit takes from it, a credit adds to it.
//!
//! It follows the participant contract (README, "Participants"): each action is applied
//! once per `Idempotency-Key` (a repeat gets the first answer), and the compensations
//! (`/payment/refund`, `/payment/uncredit`, `/inventory/{op}/cancel`) are keyed by the
//! action's idempotency key (`X-Saga-Action-Key`), as DTM's barrier is: a compensation
//! undoes what its action did, or, if the action never ran here, changes nothing and bars
//! it, so that an action arriving after its compensation is refused (409) and not applied.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// What every account holds before anything happened to it.
const OPENING_BALANCE: f64 = 1000.0;
/// How long the account `slow` takes to answer a credit (applied at once).
const SLOW_ANSWER: Duration = Duration::from_millis(1500);

/// What the demo knows of one action, by its idempotency key.
#[derive(Debug, Clone)]
enum Barrier {
    /// It ran: its answer, and the change it made to the books, if any.
    Ran {
        answer: (u16, Value),
        effect: Option<(String, f64)>,
    },
    /// Its compensation came; `undone` says whether there was an effect to undo.
    Compensated { undone: bool },
}

#[derive(Default)]
struct Demo {
    barriers: Mutex<HashMap<String, Barrier>>,
    balances: Mutex<BTreeMap<String, f64>>,
    attempts: Mutex<HashMap<String, u32>>,
    counter: Mutex<u64>,
}

impl Demo {
    fn add(&self, account: &str, delta: f64) {
        *self
            .balances
            .lock()
            .expect("lock")
            .entry(account.to_owned())
            .or_insert(OPENING_BALANCE) += delta;
    }
}

/// The demo participant's routes.
pub fn router() -> Router {
    Router::new()
        .route("/payment/balances", get(balances))
        .route("/payment/refund", post(compensate))
        .route("/payment/uncredit", post(compensate))
        .route("/payment/{op}", post(act))
        .route("/inventory/{op}", post(act))
        .route("/inventory/{op}/cancel", post(compensate))
        .route("/shipping/{op}", post(act))
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

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

fn reply(status: u16, body: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body))
}

async fn balances(State(demo): State<Arc<Demo>>) -> Json<Value> {
    Json(json!(*demo.balances.lock().expect("lock")))
}

/// An action: applied once per idempotency key, refused once its compensation came.
async fn act(
    State(demo): State<Arc<Demo>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let key = header(&headers, "idempotency-key");
    let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
    let account = field("account").as_str().unwrap_or_default().to_owned();
    let amount = field("amount").as_f64().unwrap_or(0.0);
    let attempt = {
        let mut attempts = demo.attempts.lock().expect("lock");
        let n = attempts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    if op == "notify" && field("to") == "flaky" && attempt <= 2 {
        return reply(503, json!({"error": "shipping is busy, try again", "attempt": attempt}));
    }
    let answer = {
        let mut barriers = demo.barriers.lock().expect("lock");
        match barriers.get(&key) {
            Some(Barrier::Compensated { .. }) => (
                409,
                json!({"error": "this action was compensated before it arrived; it was not applied"}),
            ),
            Some(Barrier::Ran { answer, .. }) if !key.is_empty() => answer.clone(),
            Some(Barrier::Ran { .. }) | None => {
                let id = {
                    let mut c = demo.counter.lock().expect("lock");
                    *c += 1;
                    *c
                };
                let (answer, effect) = match op.as_str() {
                    "debit" | "charge" if amount > 1000.0 => {
                        ((422, json!({"error": "insufficient funds", "amount": amount})), None)
                    }
                    "credit" if account == "closed" => ((422, json!({"error": "account closed"})), None),
                    "car" if field("city") == "Atlantis" => ((422, json!({"error": "no cars in Atlantis"})), None),
                    "debit" => (
                        (200, json!({"id": format!("{op}-{id}")})),
                        Some((account.clone(), -amount)),
                    ),
                    "credit" => (
                        (200, json!({"id": format!("{op}-{id}")})),
                        Some((account.clone(), amount)),
                    ),
                    _ => ((200, json!({"id": format!("{op}-{id}")})), None),
                };
                if let Some((account, delta)) = &effect {
                    demo.add(account, *delta);
                }
                if !key.is_empty() {
                    barriers.insert(
                        key.clone(),
                        Barrier::Ran {
                            answer: answer.clone(),
                            effect,
                        },
                    );
                }
                answer
            }
        }
    };
    if op == "credit" && account == "slow" {
        tokio::time::sleep(SLOW_ANSWER).await;
    }
    reply(answer.0, answer.1)
}

/// A compensation, keyed by its action's idempotency key: undoes what the action did, or
/// bars an action that never ran.
async fn compensate(State(demo): State<Arc<Demo>>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let action = header(&headers, "x-saga-action-key");
    if action.is_empty() {
        return reply(
            400,
            json!({"error": "a compensation names its action in X-Saga-Action-Key"}),
        );
    }
    let mut barriers = demo.barriers.lock().expect("lock");
    let undone = match barriers.get(&action) {
        Some(Barrier::Compensated { undone }) => *undone,
        Some(Barrier::Ran { effect, .. }) => {
            if let Some((account, delta)) = effect {
                demo.add(account, -delta);
            }
            effect.is_some()
        }
        None => false,
    };
    barriers.insert(action.clone(), Barrier::Compensated { undone });
    reply(200, json!({"action": action, "undone": undone}))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(client: &reqwest::Client, url: &str, key: &str, action: &str, body: Value) -> (u16, Value) {
        let r = client
            .post(url)
            .header("idempotency-key", key)
            .header("x-saga-action-key", action)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The barrier: a compensation undoes its action once; one that comes before its
    /// action changes nothing and bars it; the books balance either way.
    #[tokio::test]
    async fn compensations_are_keyed_by_their_action_and_bar_late_ones() {
        let addr = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let credit = json!({"account": "bob", "amount": 30});

        let (status, _) = post(
            &client,
            &format!("{base}/payment/credit"),
            "s:c:action",
            "s:c:action",
            credit.clone(),
        )
        .await;
        assert_eq!(status, 200);
        let repeat = post(
            &client,
            &format!("{base}/payment/credit"),
            "s:c:action",
            "s:c:action",
            credit.clone(),
        )
        .await;
        assert_eq!(repeat.0, 200);
        let books: Value = client
            .get(format!("{base}/payment/balances"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(books["bob"], 1030.0, "applied once");
        for _ in 0..2 {
            let (status, body) = post(
                &client,
                &format!("{base}/payment/uncredit"),
                "s:c:compensation",
                "s:c:action",
                Value::Null,
            )
            .await;
            assert_eq!((status, &body["undone"]), (200, &json!(true)));
        }
        let books: Value = client
            .get(format!("{base}/payment/balances"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(books["bob"], 1000.0, "undone once");

        let (status, body) = post(
            &client,
            &format!("{base}/payment/uncredit"),
            "t:c:compensation",
            "t:c:action",
            Value::Null,
        )
        .await;
        assert_eq!((status, &body["undone"]), (200, &json!(false)), "nothing to undo");
        let (status, _) = post(
            &client,
            &format!("{base}/payment/credit"),
            "t:c:action",
            "t:c:action",
            credit,
        )
        .await;
        assert_eq!(status, 409, "an action after its compensation is refused");
        let books: Value = client
            .get(format!("{base}/payment/balances"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(books["bob"], 1000.0);

        let (status, _) = post(
            &client,
            &format!("{base}/payment/refund"),
            "u:d:compensation",
            "",
            Value::Null,
        )
        .await;
        assert_eq!(status, 400, "a compensation must name its action");
    }
}
