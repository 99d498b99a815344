//! Transactions across three `geosaga region` processes (proxies with latency between
//! them): a bank in the style of Jepsen's under SIGKILL and SIGSTOP, write skew (two
//! on-call doctors), a gateway that dies at each point of the commit protocol, single-key
//! histories beside transactions, and the Rust client.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::regions::{Cluster, PREFIXES};

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 1000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
const LATENCY_MS: u64 = 5;
const INITIAL: i64 = 100;

fn accounts() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| (0..3).map(move |i| format!("{p}acct{i}")))
        .collect()
}

fn problem_type(body: &Value) -> String {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://geosaga.dev/problems/")
        .to_owned()
}

/// `POST url path body`: the status and the JSON answer (`None`: no answer).
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Option<(u16, Value)> {
    let r = http.post(url).json(body).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// Begins a transaction at `base`; its id.
async fn begin(http: &reqwest::Client, base: &str) -> Option<String> {
    match post(http, &format!("{base}/v1/txns"), &json!({})).await? {
        (201, body) => Some(body["id"].as_str().unwrap().to_owned()),
        _ => None,
    }
}

/// Reads `key` in transaction `id` at `base`: `Some(None)` when absent, `None` on failure.
async fn txn_get(http: &reqwest::Client, base: &str, id: &str, key: &str) -> Option<Option<Value>> {
    let r = http.get(format!("{base}/v1/txns/{id}/kv/{key}")).send().await.ok()?;
    match r.status().as_u16() {
        200 => Some(Some(r.json::<Value>().await.ok()?["value"].clone())),
        404 => Some(None),
        _ => None,
    }
}

async fn txn_put(http: &reqwest::Client, base: &str, id: &str, key: &str, value: Value) -> bool {
    let r = http
        .put(format!("{base}/v1/txns/{id}/kv/{key}"))
        .json(&json!({ "value": value }))
        .send()
        .await;
    r.is_ok_and(|r| r.status().as_u16() == 204)
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

/// Two doctors on call, in two regions; each, in a transaction begun at a different
/// region, goes off call if the other is still on. Serializable: never both off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_doctors_never_both_go_off_call() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let doctors = ["us/alice", "eu/bob"];
    let mut one_went = 0;
    for round in 0..15 {
        let reset = json!({"writes": doctors.map(|d| json!({"key": d, "value": true}))});
        let (status, body) = post(&http, &format!("{}/v1/txn", urls[2]), &reset).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let go_off = |me: usize| {
            let (http, base) = (http.clone(), urls[me].clone());
            async move {
                let id = begin(&http, &base).await.unwrap();
                let mine = txn_get(&http, &base, &id, doctors[me]).await.unwrap();
                let other = txn_get(&http, &base, &id, doctors[1 - me]).await.unwrap();
                if mine != Some(json!(true)) || other != Some(json!(true)) {
                    return false;
                }
                assert!(txn_put(&http, &base, &id, doctors[me], json!(false)).await);
                let (status, body) = post(&http, &format!("{base}/v1/txns/{id}/commit"), &json!({}))
                    .await
                    .unwrap();
                match status {
                    200 => true,
                    409 => {
                        assert_eq!(problem_type(&body), "txn-conflict", "{body}");
                        false
                    }
                    other => panic!("round {round}: commit answered {other}: {body}"),
                }
            }
        };
        let (a, b) = tokio::join!(go_off(0), go_off(1));
        assert!(!(a && b), "round {round}: both doctors went off call");
        let now = snapshot_of(&http, &urls[1], &doctors).await;
        assert!(now.contains(&json!(true)), "round {round}: nobody on call: {now:?}");
        assert_eq!(now.iter().filter(|v| **v == json!(false)).count(), usize::from(a || b));
        one_went += usize::from(a || b);
    }
    assert!(one_went > 0, "in 15 rounds no doctor ever went off call");
}

async fn snapshot_of(http: &reqwest::Client, base: &str, keys: &[&str]) -> Vec<Value> {
    let (status, body) = post(http, &format!("{base}/v1/snapshot"), &json!({ "keys": keys }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    keys.iter().map(|k| body["values"][k]["value"].clone()).collect()
}

/// A gateway (us-east) that dies at each point of the commit of a transaction writing a
/// key in every region: all of it or nothing becomes visible, for good, and the keys are
/// free for the next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_at_each_point_of_a_commit_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    // Staged alone: another home never prepared, so a recovery stops it and aborts. Every
    // home prepared: committed, though the record still said staging.
    for (point, applied) in [
        ("staged", false),
        ("prepared", true),
        ("decided", true),
        ("resolved-one", true),
    ] {
        let keys: Vec<String> = PREFIXES.iter().map(|p| format!("{p}crash-{point}")).collect();
        cluster.regions[0].set_env(regions::gateway::CRASH_AT, Some(point));
        cluster.regions[0].restart().await;
        let id = begin(&http, &urls[0]).await.unwrap();
        for k in &keys {
            assert!(txn_put(&http, &urls[0], &id, k, json!(point)).await);
        }
        let answer = post(&http, &format!("{}/v1/txns/{id}/commit", urls[0]), &json!({})).await;
        assert!(answer.is_none(), "{point}: the gateway answered {answer:?}");
        for _ in 0..100 {
            if cluster.regions[0].exited() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cluster.regions[0].exited(), "{point}: the gateway did not die");
        cluster.regions[0].set_env(regions::gateway::CRASH_AT, None);
        cluster.regions[0].restart().await;

        // Read at the homes (through another region) until the outcome is visible; the
        // intents expire after 5 s at most.
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let expected = if applied { json!(point) } else { Value::Null };
        let mut seen = Vec::new();
        for _ in 0..150 {
            let body = post(&http, &format!("{}/v1/snapshot", urls[1]), &json!({ "keys": refs })).await;
            if let Some((200, body)) = body {
                seen = refs.iter().map(|k| body["values"][k]["value"].clone()).collect();
                assert!(
                    seen.iter().all(|v| *v == seen[0]),
                    "{point}: a snapshot saw part of the transaction: {seen:?}"
                );
                if seen[0] == expected {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen.iter().all(|v| *v == expected),
            "{point}: {seen:?}, expected {expected}"
        );
        // The keys are free again (at the latest once the dead commit's prepare expired): a
        // transaction through the restarted gateway writes them all.
        let writes: Vec<Value> = keys.iter().map(|k| json!({"key": k, "value": "next"})).collect();
        let mut last = None;
        for _ in 0..100 {
            last = post(&http, &format!("{}/v1/txn", urls[0]), &json!({ "writes": writes })).await;
            match &last {
                Some((200, _)) => break,
                Some((409, body)) => assert_eq!(problem_type(body), "txn-conflict", "{body}"),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(last, Some((200, _))), "{point}: {last:?}");
        // Strong reads at each home agree.
        for k in &keys {
            let r: Value = http
                .get(format!("{}/v1/kv/{k}", urls[2]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["value"], json!("next"), "{point}: {k}: {r}");
        }
    }
}

/// A commit whose record the gateway (us-east) staged while eu-west refused its prepare (a
/// single-key write landed after the snapshot): the gateway decides it at once, telling
/// eu-west never to prepare it, so nothing of it stays and the key at us-east is free for
/// the next transaction straight away rather than once the prepare expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_that_refuses_aborts_a_staged_commit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let (us, eu) = (format!("{}staged", PREFIXES[0]), format!("{}staged", PREFIXES[1]));
    let id = begin(&http, &urls[0]).await.unwrap();
    assert!(txn_put(&http, &urls[0], &id, &us, json!("txn")).await);
    assert!(txn_put(&http, &urls[0], &id, &eu, json!("txn")).await);
    let written = http
        .put(format!("{}/v1/kv/{eu}", urls[1]))
        .json(&json!({ "value": "single" }))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);

    let (status, body) = post(&http, &format!("{}/v1/txns/{id}/commit", urls[0]), &json!({}))
        .await
        .unwrap();
    assert_eq!((status, problem_type(&body).as_str()), (409, "txn-conflict"), "{body}");
    assert!(
        body.to_string().contains(&eu),
        "the conflict names eu-west's key: {body}"
    );
    // A staged intent left at us-east would refuse this prepare for 5 s.
    let next = post(
        &http,
        &format!("{}/v1/txn", urls[0]),
        &json!({ "writes": [{"key": us, "value": "next"}] }),
    )
    .await;
    assert!(matches!(next, Some((200, _))), "{next:?}");
    let seen = snapshot_of(&http, &urls[2], &[&us, &eu]).await;
    assert_eq!(seen, vec![json!("next"), json!("single")]);
}

/// Transfers that must commit beside the single-key workload for its test to mean something.
const BESIDE_COMMITS: u64 = 5;

/// The single-key fault workload of `tests/regions_faults.rs` (strong writes and reads
/// checked for linearizability, bounded reads for freshness, through a SIGKILL and a
/// partition), with the bank's transactions running beside it on other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_key_histories_stay_linearizable_beside_transactions() {
    use support::regions_faults::{LATENCY_MS as FAULTS_LATENCY, SETTINGS as FAULTS, linearizable_beside};
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

/// The Rust client (`regions::client`, its requests built by `regions_client` from the
/// protocol's types) against three regions: a transaction across two homes commits, a
/// concurrent one that read and wrote the same key loses the conflict with nothing
/// applied, an aborted one leaves nothing, and the one-request and snapshot forms see it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_client_commits_aborts_and_loses_conflicts() {
    use regions::client::Client;
    use regions_client::{OneShotRequest, OneShotWrite, SnapshotRequest};
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let [us, eu, ap] = [&urls[0], &urls[1], &urls[2]].map(|u| Client::new(u));

    let t = us.begin().await.unwrap();
    t.put("us/x", &json!(1)).await.unwrap();
    t.put("eu/y", &json!({"n": 2})).await.unwrap();
    let own = t.get("us/x").await.unwrap().expect("its own write");
    assert_eq!((own.value, own.version), (json!(1), None));
    t.delete("ap/gone").await.unwrap();
    assert!(t.get("ap/gone").await.unwrap().is_none());
    let committed = t.commit().await.unwrap();
    assert!(!committed.commit_ts.is_empty(), "{committed:?}");

    let (a, b) = (us.begin().await.unwrap(), eu.begin().await.unwrap());
    for t in [&a, &b] {
        assert_eq!(t.get("us/x").await.unwrap().map(|v| v.value), Some(json!(1)));
        t.put("us/x", &json!(format!("by {}", t.id))).await.unwrap();
    }
    let winner = a.id.clone();
    a.commit().await.unwrap();
    match b.commit().await {
        Err(regions::Error::TxnConflict { key, .. }) => assert_eq!(key, "us/x"),
        other => panic!("the second commit of us/x: {other:?}"),
    }
    let c = ap.begin().await.unwrap();
    c.put("ap/z", &json!(3)).await.unwrap();
    c.abort().await.unwrap();

    let read = OneShotRequest {
        reads: vec!["us/x".into()],
        writes: vec![OneShotWrite {
            key: "eu/y".into(),
            value: None,
            add: None,
        }],
        ..OneShotRequest::default()
    };
    let answer = ap.one_shot(&read).await.unwrap();
    assert_eq!(
        answer.reads["us/x"].as_ref().map(|v| v.value.clone()),
        Some(json!(format!("by {winner}")))
    );
    let seen = eu
        .snapshot(&SnapshotRequest {
            keys: vec!["us/x".into(), "eu/y".into(), "ap/z".into()],
            as_of: None,
            max_staleness_ms: None,
        })
        .await
        .unwrap();
    let values: Vec<Option<Value>> = seen
        .values
        .values()
        .map(|v| v.as_ref().map(|v| v.value.clone()))
        .collect();
    // In key order: ap/z (aborted), eu/y (deleted by the one-request form), us/x.
    assert_eq!(values, [None, None, Some(json!(format!("by {winner}")))], "{seen:?}");
}
