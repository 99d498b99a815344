//! Transactions under the nemesis: a bank of accounts homed in every region, money moved
//! between two accounts with different homes by one-request transactions (`POST /v1/txn`:
//! an `add` with `min: 0` on one, the opposite on the other, a parallel commit across two
//! homes) sent to random regions, and audited by snapshots at the homes sent to random
//! regions. Checked ([`check`]): every answered snapshot saw the whole total and no
//! negative balance; once the faults healed, the total is conserved and each home's strong
//! read agrees with a final snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::testbed::PREFIXES;
use super::workload::Workload;

/// Each account's opening balance.
const INITIAL: i64 = 100;

/// A request's time limit (a cut region answers nothing until it is healed).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The accounts: two per home region.
pub fn accounts() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| [format!("{p}bank0"), format!("{p}bank1")])
        .collect()
}

/// What the bank's clients saw.
#[derive(Default)]
pub struct Bank {
    /// Transfers answered 200.
    pub committed: AtomicU64,
    /// Transfers answered 409 (a conflict, or the source could not pay): nothing applied.
    pub refused: AtomicU64,
    /// Transfers without a definite answer.
    pub unknown: AtomicU64,
    /// Snapshots answered.
    pub audits: AtomicU64,
    /// What answered snapshots saw that they must not have.
    pub violations: Mutex<Vec<String>>,
}

/// Opens every account at [`INITIAL`] in one transaction, before any fault.
pub async fn open(w: &Workload) {
    let writes: Vec<Value> = accounts()
        .iter()
        .map(|k| json!({"key": k, "value": {"balance": INITIAL}}))
        .collect();
    let mut last = String::new();
    for _ in 0..50 {
        let sent = w
            .http
            .post(format!("{}/v1/txn", w.regions[0]))
            .json(&json!({ "writes": writes }))
            .timeout(TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the bank's accounts could not be opened: {last}");
}

/// Moves money between random accounts of different homes through random regions until
/// the workload stops.
pub async fn transfer(w: &Workload, bank: &Bank) {
    let accounts = accounts();
    while !w.stop.load(Ordering::SeqCst) {
        let from = rand::random_range(0..accounts.len());
        // Another home: accounts of one home are adjacent pairs.
        let to = (from / 2 * 2 + 2 * rand::random_range(1..PREFIXES.len()) + rand::random_range(0..2)) % accounts.len();
        let amount = rand::random_range(1..40i64);
        let body = json!({"writes": [
            {"key": accounts[from], "add": {"path": "/balance", "delta": -amount, "min": 0}},
            {"key": accounts[to], "add": {"path": "/balance", "delta": amount}},
        ]});
        let base = &w.regions[rand::random_range(0..w.regions.len())];
        let sent = w
            .http
            .post(format!("{base}/v1/txn"))
            .json(&body)
            .timeout(TIMEOUT)
            .send()
            .await;
        let counter = match sent.map(|r| r.status().as_u16()) {
            Ok(200) => &bank.committed,
            Ok(409) => &bank.refused,
            _ => &bank.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if !std::ptr::eq(counter, &bank.committed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every account at one snapshot, read at the homes through `base`; `Err` when it was not
/// answered.
async fn snapshot(w: &Workload, base: &str) -> Result<(String, Vec<Option<i64>>), String> {
    let r = w
        .reader
        .post(format!("{base}/v1/snapshot"))
        .json(&json!({ "keys": accounts() }))
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{}", r.status()));
    }
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    let balances = accounts()
        .iter()
        .map(|k| body["values"][k]["value"]["balance"].as_i64())
        .collect();
    Ok((body["ts"].as_str().unwrap_or("?").to_owned(), balances))
}

/// What is wrong with a snapshot's balances, if anything.
fn wrong(balances: &[Option<i64>]) -> Option<String> {
    let total: i64 = balances.iter().flatten().sum();
    let expected = INITIAL * accounts().len() as i64;
    if balances.iter().any(Option::is_none) || total != expected || balances.iter().flatten().any(|b| *b < 0) {
        Some(format!("balances {balances:?} (total {total}, expected {expected})"))
    } else {
        None
    }
}

/// Audits the bank through random regions until the workload stops.
pub async fn audit(w: &Workload, bank: &Bank) {
    while !w.stop.load(Ordering::SeqCst) {
        let region = rand::random_range(0..w.regions.len());
        match snapshot(w, &w.regions[region]).await {
            Ok((ts, balances)) => {
                bank.audits.fetch_add(1, Ordering::Relaxed);
                if let Some(what) = wrong(&balances) {
                    bank.violations
                        .lock()
                        .unwrap()
                        .push(format!("a snapshot at {ts} through region {region} saw {what}"));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bank's check (see the module's notes), once the faults healed.
pub async fn check(w: &Workload, bank: &Bank) -> (&'static str, Result<String, String>) {
    const NAME: &str = "transactions kept the bank's total through the faults";
    let (committed, audits) = (
        bank.committed.load(Ordering::Relaxed),
        bank.audits.load(Ordering::Relaxed),
    );
    let violations = bank.violations.lock().unwrap().clone();
    if let Some(first) = violations.first() {
        return (
            NAME,
            Err(format!(
                "{} snapshot(s) were wrong; the first: {first}",
                violations.len()
            )),
        );
    }
    if committed == 0 || audits == 0 {
        return (
            NAME,
            Err(format!(
                "{committed} transfers committed and {audits} snapshots answered: nothing was shown"
            )),
        );
    }
    // Every transaction is decided within seconds of its prepare's expiry once every home
    // answers: a snapshot at the homes, and each home's strong read, then agree.
    let mut last = String::from("no snapshot answered");
    for _ in 0..60 {
        match snapshot(w, &w.regions[0]).await {
            Ok((ts, balances)) => {
                if let Some(what) = wrong(&balances) {
                    return (NAME, Err(format!("the final snapshot at {ts} saw {what}")));
                }
                let mut strong = Vec::new();
                for (key, prefix) in accounts().iter().zip(PREFIXES.iter().flat_map(|p| [p, p])) {
                    let home = PREFIXES.iter().position(|p| p == prefix).expect("a prefix");
                    let read = w
                        .reader
                        .get(format!("{}/v1/kv/{key}", w.regions[home]))
                        .timeout(TIMEOUT)
                        .send()
                        .await;
                    let body: Option<Value> = match read {
                        Ok(r) if r.status() == 200 => r.json().await.ok(),
                        _ => None,
                    };
                    strong.push(body.and_then(|b| b["value"]["balance"].as_i64()));
                }
                if strong == balances {
                    return (
                        NAME,
                        Ok(format!(
                            "{committed} transfers committed, {} refused, {} of unknown outcome; {audits} snapshots \
                             saw the whole total; final balances {balances:?}",
                            bank.refused.load(Ordering::Relaxed),
                            bank.unknown.load(Ordering::Relaxed),
                        )),
                    );
                }
                last = format!("the homes' strong reads {strong:?} differ from the snapshot at {ts}: {balances:?}");
            }
            Err(e) => last = format!("the final snapshot was not answered: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (NAME, Err(last))
}
