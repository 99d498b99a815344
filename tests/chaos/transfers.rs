//! Cross-region transfer sagas in the chaos suite (`examples/transfer_regions.json` with a
//! shorter time limit and fewer attempts per step, [`definition`]: so that a region whose
//! answers are late leaves a write possibly applied): accounts in every region, transfers
//! between accounts of different regions started through the coordinators, each client on
//! one of them (retried there with one idempotency key while it is down or paused), and the
//! checks: every saga settles `completed` or `compensated`, and each account holds its
//! opening balance less what it sent plus what it received in completed sagas (so money is
//! conserved across regions).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::testbed::PREFIXES;
use super::workload::Workload;

/// Every account's opening balance.
pub const OPENING: i64 = 1_000;
/// The most an account may send in all (`daily_limit` in `examples/transfer_regions.json`).
const LIMIT: i64 = 500;
/// Accounts per region.
const PER_REGION: usize = 3;
/// The chaos suite's transfer saga.
pub const DEFINITION: &str = "chaos_transfer";
/// The time limit of each attempt of its steps, in ms.
pub const STEP_TIMEOUT_MS: u64 = 2_000;

/// `examples/transfer_regions.json` as [`DEFINITION`]: each step's attempts end after
/// [`STEP_TIMEOUT_MS`] (10 s in the example) and a step gives up after 3 of them (30), so
/// that answers held back for a few seconds leave a write possibly applied; undos keep the
/// example's patience.
pub fn definition() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/transfer_regions.json");
    let mut d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    d["name"] = json!(DEFINITION);
    d["defaults"]["timeout_ms"] = json!(STEP_TIMEOUT_MS);
    d["defaults"]["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 400});
    d
}

/// Registers [`definition`] (the coordinators share their database: once is enough).
pub async fn register(w: &Workload, coordinator: &str) {
    let r = w
        .coordinator
        .post(format!("{coordinator}/v1/definitions"))
        .json(&definition())
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "registering {DEFINITION}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// A transfer saga the coordinator accepted.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The saga's id.
    pub id: String,
    /// The sender's account.
    pub from: String,
    /// The receiver's account.
    pub to: String,
    /// The amount.
    pub amount: i64,
    /// The coordinator it was started on (an index of `coordinators::COORDINATORS`).
    pub coordinator: usize,
}

/// The sagas started, and starts that never got an answer.
#[derive(Default)]
pub struct Sagas {
    /// Accepted transfers.
    pub started: Mutex<Vec<Transfer>>,
}

/// The accounts, by region prefix.
pub fn accounts() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| (0..PER_REGION).map(move |i| format!("{p}acct{i}")))
        .collect()
}

/// Opens every account with [`OPENING`] (through its home, only if absent).
pub async fn open_accounts(w: &Workload) {
    for (i, key) in accounts().into_iter().enumerate() {
        let home = i / PER_REGION;
        let url = format!("{}/v1/kv/{key}", w.regions[home]);
        let body = json!({"value": {"balance": OPENING}, "if_version": "0.0"});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = w.http.put(&url).json(&body).send().await;
            match r {
                Ok(r) if r.status() == 200 || r.status() == 409 => break,
                other => assert!(Instant::now() < deadline, "opening {key}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts transfers through coordinator number `via` at `coordinator` until `w.stop`, one
/// at a time: each start waits for its saga to settle (up to 30 s, `wait_ms`), as a real
/// client does; it is retried with its idempotency key until the coordinator answers (it
/// may be down or paused).
pub async fn run(w: &Workload, sagas: &Sagas, (via, coordinator): (usize, &str), client: usize) {
    let accounts = accounts();
    let mut n = 0;
    while !w.stop.load(Ordering::SeqCst) {
        n += 1;
        let from = &accounts[rand::random_range(0..accounts.len())];
        let to = loop {
            let to = &accounts[rand::random_range(0..accounts.len())];
            if to[..3] != from[..3] {
                break to;
            }
        };
        // Every fourth transfer is over the sender's limit (the definition's last step
        // allows 500 sent in all): it must end compensated, its debit and credit undone.
        let amount = if n % 4 == 0 {
            rand::random_range(LIMIT + 1..=LIMIT + 40)
        } else {
            rand::random_range(1..=40i64)
        };
        let body = json!({
            "definition": DEFINITION,
            "input": {"from": from, "to": to, "amount": amount},
            "idempotency_key": format!("chaos-{client}-{n}"),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = w
                .coordinator
                .post(format!("{coordinator}/v1/sagas?wait_ms=30000"))
                .timeout(Duration::from_secs(40))
                .json(&body)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 || r.status() == 200 => {
                    let answer: Value = r.json().await.unwrap();
                    let id = answer["id"].as_str().unwrap_or_else(|| panic!("a saga id: {answer}"));
                    sagas.started.lock().unwrap().push(Transfer {
                        id: id.to_owned(),
                        from: from.clone(),
                        to: to.clone(),
                        amount,
                        coordinator: via,
                    });
                    break;
                }
                Ok(r) if r.status().is_client_error() => {
                    panic!(
                        "the coordinator refused a transfer: {}",
                        r.text().await.unwrap_or_default()
                    )
                }
                _ => {
                    w.rec.errors.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() > deadline {
                        panic!("the coordinator did not accept transfer chaos-{client}-{n} within 60 s");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every saga settled; fails on `stuck`, on one still running after 3 min, and
/// on a transfer over the limit that completed.
/// Returns the count per final status and the completed transfers.
pub async fn settle(
    w: &Workload,
    sagas: &Sagas,
    coordinator: &str,
) -> Result<(BTreeMap<String, usize>, Vec<Transfer>), String> {
    let started = sagas.started.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut statuses = BTreeMap::new();
    let mut completed = Vec::new();
    for t in &started {
        loop {
            let r = w
                .coordinator
                .get(format!("{coordinator}/v1/sagas/{}", t.id))
                .send()
                .await;
            let status = match r {
                Ok(r) if r.status() == 200 => {
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    body["status"].as_str().unwrap_or("").to_owned()
                }
                _ => String::new(),
            };
            match status.as_str() {
                "completed" if t.amount > LIMIT => {
                    return Err(format!(
                        "saga {} ({t:?}) is over the limit of {LIMIT} but completed",
                        t.id
                    ));
                }
                "completed" | "compensated" => {
                    if status == "completed" {
                        completed.push(t.clone());
                    }
                    *statuses.entry(status).or_insert(0) += 1;
                    break;
                }
                "stuck" => {
                    return Err(format!(
                        "saga {} ({t:?}) is stuck: {}",
                        t.id,
                        view(w, coordinator, &t.id).await
                    ));
                }
                other if Instant::now() > deadline => {
                    return Err(format!(
                        "saga {} ({t:?}) has not settled after 3 min: {other:?}; {}",
                        t.id,
                        view(w, coordinator, &t.id).await
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    Ok((statuses, completed))
}

/// The saga's steps as the coordinator shows them (for failure messages).
async fn view(w: &Workload, coordinator: &str, id: &str) -> String {
    match w.coordinator.get(format!("{coordinator}/v1/sagas/{id}")).send().await {
        Ok(r) => r.text().await.unwrap_or_default().chars().take(4_000).collect(),
        Err(e) => format!("(could not read it: {e})"),
    }
}

/// Checks each account's balance (strong read at its home) against the completed transfers.
pub async fn money_conserved(w: &Workload, completed: &[Transfer]) -> Result<String, String> {
    let mut expected: BTreeMap<String, i64> = accounts().into_iter().map(|a| (a, OPENING)).collect();
    for t in completed {
        *expected.get_mut(&t.from).unwrap() -= t.amount;
        *expected.get_mut(&t.to).unwrap() += t.amount;
    }
    let mut total = 0;
    for (i, (key, want)) in expected.iter().enumerate() {
        let url = format!("{}/v1/kv/{key}", w.regions[i / PER_REGION]);
        let mut got = None;
        for _ in 0..40 {
            if let Ok(r) = w.reader.get(&url).send().await
                && r.status() == 200
            {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                got = body["value"]["balance"].as_i64();
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let got = got.ok_or_else(|| format!("{key} could not be read"))?;
        if got != *want {
            return Err(format!(
                "{key} holds {got}, but its opening balance and the completed transfers make {want}"
            ));
        }
        total += got;
    }
    let opening = OPENING * expected.len() as i64;
    if total != opening {
        return Err(format!("the accounts hold {total} in all, not {opening}"));
    }
    Ok(format!(
        "{} accounts hold {total} in all, each as the completed transfers say",
        expected.len()
    ))
}
