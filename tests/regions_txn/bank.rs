//! The bank: accounts homed in every region, clients transferring and auditing through
//! random regions, under SIGKILL and SIGSTOP, and beside the single-key fault workload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::regions::{Cluster, PREFIXES};
use crate::{LATENCY_MS, SETTINGS, begin, post, problem_type, txn_get, txn_put};

const INITIAL: i64 = 100;

fn accounts() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| (0..3).map(move |i| format!("{p}acct{i}")))
        .collect()
}

/// Every account read in one snapshot at `base` (at the homes, or locally within `bound`);
/// `None` on failure, or for a local snapshot older than the accounts (they were opened in
/// one transaction: a snapshot holds all of them or none).
async fn snapshot(http: &reqwest::Client, base: &str, bound: Option<u64>) -> Option<Vec<i64>> {
    let mut body = json!({ "keys": accounts() });
    if let Some(ms) = bound {
        body["max_staleness_ms"] = json!(ms);
    }
    let (status, answer) = post(http, &format!("{base}/v1/snapshot"), &body).await?;
    if status != 200 {
        return None;
    }
    let balances: Vec<Option<i64>> = accounts()
        .iter()
        .map(|k| answer["values"][k]["value"].as_i64())
        .collect();
    if balances.iter().all(Option::is_none) && answer["local"] == json!(true) {
        return None;
    }
    assert!(
        balances.iter().all(Option::is_some),
        "a snapshot saw part of the accounts' opening: {answer}"
    );
    balances.into_iter().collect()
}

#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    conflicts: AtomicU64,
    refused_overdraft: AtomicU64,
    reads_checked: AtomicU64,
}

/// One transfer through `base`: read two accounts, move an amount if the source has it.
async fn transfer(http: &reqwest::Client, base: &str, tally: &Tally) {
    let names = accounts();
    let a = rand::random_range(0..names.len());
    let b = (a + rand::random_range(1..names.len())) % names.len();
    let amount = rand::random_range(1..60);
    let Some(id) = begin(http, base).await else { return };
    let (Some(Some(from)), Some(Some(to))) = (
        txn_get(http, base, &id, &names[a]).await,
        txn_get(http, base, &id, &names[b]).await,
    ) else {
        return;
    };
    let (from, to) = (from.as_i64().unwrap(), to.as_i64().unwrap());
    if from < amount {
        tally.refused_overdraft.fetch_add(1, Ordering::Relaxed);
        let _ = post(http, &format!("{base}/v1/txns/{id}/abort"), &json!({})).await;
        return;
    }
    if !txn_put(http, base, &id, &names[a], json!(from - amount)).await
        || !txn_put(http, base, &id, &names[b], json!(to + amount)).await
    {
        return;
    }
    match post(http, &format!("{base}/v1/txns/{id}/commit"), &json!({})).await {
        Some((200, _)) => {
            tally.committed.fetch_add(1, Ordering::Relaxed);
        }
        Some((409, body)) => {
            assert_eq!(problem_type(&body), "txn-conflict", "{body}");
            assert!(body["key"].is_string(), "a conflict names its key: {body}");
            tally.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// A read-only transaction over every account; checks the total and that no balance is
/// negative.
async fn audit(http: &reqwest::Client, base: &str, tally: &Tally) {
    let checks = [None, Some(2_000)];
    let bound = checks[rand::random_range(0..checks.len())];
    let balances = if rand::random_bool(0.5) {
        snapshot(http, base, bound).await
    } else {
        let Some(id) = begin(http, base).await else { return };
        let mut balances = Vec::new();
        for key in accounts() {
            match txn_get(http, base, &id, &key).await {
                Some(Some(v)) => balances.push(v.as_i64().unwrap()),
                _ => return,
            }
        }
        match post(http, &format!("{base}/v1/txns/{id}/commit"), &json!({})).await {
            Some((200, _)) => Some(balances),
            _ => None,
        }
    };
    if let Some(balances) = balances {
        assert_eq!(
            balances.iter().sum::<i64>(),
            INITIAL * accounts().len() as i64,
            "a read saw part of a transfer: {balances:?}"
        );
        assert!(
            balances.iter().all(|b| *b >= 0),
            "a balance went negative: {balances:?}"
        );
        tally.reads_checked.fetch_add(1, Ordering::Relaxed);
    }
}

async fn open_accounts(http: &reqwest::Client, base: &str) {
    let writes: Vec<Value> = accounts().iter().map(|k| json!({"key": k, "value": INITIAL})).collect();
    let (status, body) = post(http, &format!("{base}/v1/txn"), &json!({ "writes": writes }))
        .await
        .expect("the cluster answers");
    assert_eq!(status, 200, "{body}");
}

/// Waits until every intent has been resolved or aborted (a snapshot at the homes then
/// answers) and returns the balances read at the homes.
async fn settled_balances(http: &reqwest::Client, base: &str) -> Vec<i64> {
    for _ in 0..200 {
        if let Some(b) = snapshot(http, base, None).await {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no snapshot answered within 20 s");
}

/// Four clients transferring and two auditing, through random regions, until `stop`.
fn bank_clients(
    http: &reqwest::Client,
    urls: &[String],
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|c| {
            let (http, urls, tally, stop) = (http.clone(), urls.to_vec(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let base = &urls[rand::random_range(0..urls.len())];
                    if c < 4 {
                        transfer(&http, base, &tally).await;
                    } else {
                        audit(&http, base, &tally).await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_conserves_its_total_through_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    open_accounts(&http, &urls[0]).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = bank_clients(&http, &urls, &tally, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.regions[1].kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.regions[1].restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.regions[2].pause();
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.regions[2].resume();
    // Run on until the workload has done enough to mean something (10 transfers, 10 audits)
    // rather than for a fixed time, which a loaded machine may not fill; a minute at most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    tokio::time::sleep(Duration::from_secs(2)).await;
    while (tally.committed.load(Ordering::Relaxed) < 10 || tally.reads_checked.load(Ordering::Relaxed) < 10)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("no client panicked (every read saw the whole total)");
    }

    // A commit a client gave up on may still finish, and a dead gateway's prepares expire
    // after 5 s: past that, nothing is pending anywhere.
    tokio::time::sleep(Duration::from_millis(regions::txn::EXPIRY_MS + 1_500)).await;
    let balances = settled_balances(&http, &urls[0]).await;
    assert_eq!(
        balances.iter().sum::<i64>(),
        INITIAL * accounts().len() as i64,
        "{balances:?}"
    );
    // Every home agrees with the snapshot (strong reads at the homes).
    for (key, expected) in accounts().iter().zip(&balances) {
        let r: Value = http
            .get(format!("{}/v1/kv/{key}", urls[2]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["value"].as_i64(), Some(*expected), "{key}: {r}");
    }
    let committed = tally.committed.load(Ordering::Relaxed);
    let reads = tally.reads_checked.load(Ordering::Relaxed);
    eprintln!(
        "transfers committed {committed}, conflicts {}, overdrafts refused {}, reads checked {reads}",
        tally.conflicts.load(Ordering::Relaxed),
        tally.refused_overdraft.load(Ordering::Relaxed)
    );
    assert!(
        committed >= 10 && reads >= 10,
        "the workload ran: {committed} transfers, {reads} reads"
    );
}

/// Transfers that must commit beside the single-key workload for its test to mean something.
const BESIDE_COMMITS: u64 = 5;

/// The single-key fault workload of `tests/regions_faults.rs` (strong writes and reads
/// checked for linearizability, bounded reads for freshness, through a SIGKILL and a
/// partition), with the bank's transactions running beside it on other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_key_histories_stay_linearizable_beside_transactions() {
    use crate::support::regions_faults::{LATENCY_MS as FAULTS_LATENCY, SETTINGS as FAULTS, linearizable_beside};
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), FAULTS, FAULTS_LATENCY).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    open_accounts(&http, &urls[0]).await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = bank_clients(&http, &urls, &tally, &stop);
    // The workload runs on until the bank, too, has done enough beside it (a minute at most).
    let beside = tally.clone();
    let enough = Box::new(move || beside.committed.load(Ordering::Relaxed) >= BESIDE_COMMITS);
    linearizable_beside(&mut cluster, enough).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("no client panicked (every read saw the whole total)");
    }
    tokio::time::sleep(Duration::from_millis(regions::txn::EXPIRY_MS + 1_500)).await;
    let balances = settled_balances(&http, &urls[0]).await;
    assert_eq!(
        balances.iter().sum::<i64>(),
        INITIAL * accounts().len() as i64,
        "{balances:?}"
    );
    let committed = tally.committed.load(Ordering::Relaxed);
    assert!(
        committed >= BESIDE_COMMITS,
        "transactions ran beside the workload: {committed} committed"
    );
}
