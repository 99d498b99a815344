//! Sagas across regions, with real processes: three `geosaga region` processes behind
//! latency-injecting proxies and a `geosaga serve` coordinator whose region steps move
//! money between accounts homed in different regions.
//!
//! - Many concurrent transfers while a region (the coordinator's `via` region and the home
//!   of the `us/` accounts) is killed with SIGKILL and restarted, and again while the
//!   coordinator is: every saga ends completed or compensated, the total across regions is
//!   conserved exactly (strong reads at the homes), and every balance is exactly what the
//!   completed sagas make it (each debit, credit and undo applied once).
//! - A compensation that meets someone else's newer write ends `stuck` with the conflict,
//!   and does not overwrite it; one that meets none restores the previous value.
//! - A transaction step commits once although the coordinator dies between the commit and
//!   its record, and its compensating transaction undoes it once.
//!
//! The undo that meets a newer write is in `undo.rs`, the transaction step in
//! `txn_steps.rs`.

#[path = "../support/mod.rs"]
mod support;

mod txn_steps;
mod undo;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use support::regions::{Cluster, NAMES};
use support::workload;
use testkit::process::GeosagaProcess;

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
const ACCOUNTS: [&str; 9] = [
    "us/a0", "us/a1", "us/a2", "eu/b0", "eu/b1", "eu/b2", "ap/c0", "ap/c1", "ap/c2",
];
const INITIAL: i64 = 1000;
const SAGAS: usize = 90;
/// Every `FAIL_EVERY`th saga fails at its last step (a business rule), after its debit and
/// credit: they are undone.
const FAIL_EVERY: usize = 5;

/// The transfer the tests run: a bounded-staleness read of the receiver whose output the
/// `note` step writes, a debit that may not go below 0, a credit, and a last step that
/// fails when `check` is over 100.
fn definition() -> Value {
    let region = |doc: Value| json!({"region": doc});
    json!({
        "name": "move",
        "defaults": {
            "timeout_ms": 10000,
            "retry": {"max_attempts": 100, "initial_backoff_ms": 50, "max_backoff_ms": 1000},
            "compensation_retry": {"max_attempts": 100, "initial_backoff_ms": 50, "max_backoff_ms": 1000}
        },
        "steps": [
            {"name": "peek", "action": region(json!({"op": "get", "key": "{{input.to}}",
                "consistency": "bounded_staleness", "max_staleness_ms": 2000, "via": "ap-south"}))},
            {"name": "debit", "action": region(json!({"op": "add", "key": "{{input.from}}", "path": "/balance",
                "delta": "-{{input.amount}}", "min": 0}))},
            {"name": "credit", "action": region(json!({"op": "add", "key": "{{input.to}}", "path": "/balance",
                "delta": "{{input.amount}}"}))},
            {"name": "note", "action": region(json!({"op": "put", "key": "notes/{{saga.id}}", "consistency": "async",
                "value": {"seen": "{{steps.peek.output.value.balance}}", "served_by": "{{steps.peek.output.served_by}}"}}))},
            {"name": "check", "action": region(json!({"op": "add", "key": "checks/{{saga.id}}", "delta": "{{input.check}}",
                "max": 100}))}
        ]
    })
}

struct Setup {
    cluster: Cluster,
    coordinator: GeosagaProcess,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 3).await;
    let mut args: Vec<String> = [
        "--lease-ms",
        "2000",
        "--node-id",
        "regions-sagas",
        "--region-via",
        "us-east",
    ]
    .map(String::from)
    .to_vec();
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        args.push("--region".into());
        args.push(format!("{name}={}", region.url));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let db = dir.path().join("geosaga.db");
    let coordinator = GeosagaProcess::start(db.to_str().unwrap(), &args, dir.path().join("coordinator.log")).await;
    Setup {
        cluster,
        coordinator,
        _dir: dir,
    }
}

/// The URL of the home region of `key` (by its prefix; other keys are hashed).
fn home_url(cluster: &Cluster, key: &str) -> String {
    let i = ["us/", "eu/", "ap/"]
        .iter()
        .position(|p| key.starts_with(p))
        .expect("an account key");
    cluster.regions[i].url.clone()
}

/// A strong read at the key's home (through any region for hashed keys).
async fn read(url: &str, key: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client.get(format!("{url}/v1/kv/{key}")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or(Value::Null);
                if status == 200 || status == 404 {
                    return (status, body);
                }
                format!("{status} {body}")
            }
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{key} could not be read at {url}: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A strong write, again while the regions answer 5xx (a loaded machine can miss the
/// strong-write timeout; such a write was not applied, or is written once more).
async fn put(url: &str, key: &str, value: Value) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client
            .put(format!("{url}/v1/kv/{key}"))
            .json(&json!({"value": value}))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => return r.json().await.unwrap(),
            Ok(r) if r.status().is_server_error() => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Ok(r) => panic!("{key}: {} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{key} could not be written at {url}: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The transfers: from and to in different regions, amounts large enough that some debits
/// hit the floor. Returns (input, idempotency key) per saga.
fn transfers() -> Vec<Value> {
    (0..SAGAS)
        .map(|i| {
            let from = ACCOUNTS[i % ACCOUNTS.len()];
            let to = ACCOUNTS[(i * 4 + 1 + i / ACCOUNTS.len()) % ACCOUNTS.len()];
            let to = if to[..3] == from[..3] {
                ACCOUNTS[(ACCOUNTS.iter().position(|a| *a == to).unwrap() + 3) % ACCOUNTS.len()]
            } else {
                to
            };
            let check = if i % FAIL_EVERY == 0 { 1000 } else { 1 };
            json!({"from": from, "to": to, "amount": 10 + (i * 37) % 190, "check": check})
        })
        .collect()
}

/// Starts every transfer, 12 at a time, retrying (with the same idempotency key) while the
/// coordinator is down. Returns saga id -> input.
async fn start_all(url: String, inputs: Vec<Value>) -> HashMap<String, Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let inputs = Arc::new(inputs);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, url, inputs, next) = (client.clone(), url.clone(), inputs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut started = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(input) = inputs.get(i) else {
                    return started;
                };
                let body = json!({"definition": "move", "input": input, "idempotency_key": format!("move-{i}")});
                let deadline = Instant::now() + Duration::from_secs(120);
                let id = loop {
                    match client.post(format!("{url}/v1/sagas")).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let saga: Value = r.json().await.unwrap();
                            break saga["id"].as_str().unwrap().to_owned();
                        }
                        _ => {
                            assert!(Instant::now() < deadline, "transfer {i} could not be started");
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                };
                started.push((id, input.clone()));
            }
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), SAGAS, "every start returned a distinct saga");
    all
}

/// Waits until `n` sagas of the coordinator have settled.
async fn wait_until_settled(url: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut settled = 0;
        for status in ["completed", "compensated"] {
            if let Ok(r) = reqwest::get(format!("{url}/v1/sagas?status={status}&limit=100")).await
                && let Ok(page) = r.json::<Value>().await
            {
                settled += page["sagas"].as_array().map_or(0, Vec::len);
            }
        }
        if settled >= n {
            return;
        }
        assert!(Instant::now() < deadline, "fewer than {n} sagas settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the end state: every saga terminal, the total conserved, each balance exactly
/// what the completed transfers make it, notes only for completed sagas.
async fn check(setup: &Setup, sagas: &HashMap<String, Value>) {
    let url = &setup.coordinator.url;
    let keyed: HashMap<String, bool> = sagas.keys().map(|id| (id.clone(), false)).collect();
    let settled = workload::wait_settled(std::slice::from_ref(url), &keyed, Duration::from_secs(240)).await;
    let mut expected: BTreeMap<&str, i64> = ACCOUNTS.iter().map(|a| (*a, INITIAL)).collect();
    let (mut completed, mut compensated, mut replayed) = (0, 0, 0);
    for (id, input) in sagas {
        let saga: Value = reqwest::get(format!("{url}/v1/sagas/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = saga.to_string();
        replayed += text.matches("\"replayed\":true").count();
        let status = settled[id].as_str();
        let (note_status, note) = read(&setup.cluster.regions[0].url, &format!("notes/{id}")).await;
        match status {
            "completed" => {
                completed += 1;
                let amount = input["amount"].as_i64().unwrap();
                *expected.get_mut(input["from"].as_str().unwrap()).unwrap() -= amount;
                *expected.get_mut(input["to"].as_str().unwrap()).unwrap() += amount;
                assert_ne!(input["check"], 1000, "saga {id} should have failed its check: {saga}");
                assert_eq!(note_status, 200, "the note of completed saga {id}");
                assert!(note["value"]["seen"].is_i64(), "the bounded read's balance: {note}");
                assert!(NAMES.contains(&note["value"]["served_by"].as_str().unwrap()), "{note}");
            }
            "compensated" => {
                compensated += 1;
                assert_eq!(
                    note_status, 404,
                    "the note of compensated saga {id} was deleted: {note}"
                );
            }
            other => panic!("saga {id} ended {other}: {saga}"),
        }
        if input["check"] == 1000 {
            assert_eq!(status, "compensated", "saga {id} fails its last step: {saga}");
        }
    }
    let mut total = 0;
    let mut actual = BTreeMap::new();
    for account in ACCOUNTS {
        let (status, body) = read(&home_url(&setup.cluster, account), account).await;
        assert_eq!(status, 200, "{account}: {body}");
        assert_eq!(body["staleness_bound_ms"], 0, "a strong read at the home");
        let balance = body["value"]["balance"].as_i64().unwrap();
        assert!(balance >= 0, "{account} went below its floor: {balance}");
        total += balance;
        actual.insert(account, balance);
    }
    assert_eq!(
        total,
        INITIAL * ACCOUNTS.len() as i64,
        "money was created or lost: {actual:?}"
    );
    assert_eq!(actual, expected, "each debit, credit and undo applied exactly once");
    assert!(
        completed > 0 && compensated >= SAGAS / FAIL_EVERY,
        "{completed} completed, {compensated} compensated"
    );
    eprintln!("{SAGAS} transfers: {completed} completed, {compensated} compensated, {replayed} replayed writes");
}

async fn seed(cluster: &Cluster) {
    for account in ACCOUNTS {
        put(&home_url(cluster, account), account, json!({"balance": INITIAL})).await;
    }
}

async fn register(url: &str) {
    workload::register(&[url.to_owned()], &definition()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_survive_a_region_killed_and_restarted() {
    let mut setup = setup(&[]).await;
    seed(&setup.cluster).await;
    register(&setup.coordinator.url).await;
    let starts = tokio::spawn(start_all(setup.coordinator.url.clone(), transfers()));
    wait_until_settled(&setup.coordinator.url, 8).await;
    // us-east: the home of the us/ accounts and the region steps go through.
    setup.cluster.regions[0].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await; // down for a while, not a sync
    setup.cluster.regions[0].restart().await;
    let sagas = starts.await.unwrap();
    check(&setup, &sagas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_survive_the_coordinator_killed_and_restarted() {
    let mut setup = setup(&[]).await;
    seed(&setup.cluster).await;
    register(&setup.coordinator.url).await;
    let starts = tokio::spawn(start_all(setup.coordinator.url.clone(), transfers()));
    for settled in [5, 30] {
        wait_until_settled(&setup.coordinator.url, settled).await;
        setup.coordinator.restart().await; // SIGKILL, then the same command again
    }
    let sagas = starts.await.unwrap();
    check(&setup, &sagas).await;
}

async fn start_and_settle_definition(url: &str, definition: &str, input: Value) -> (String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/sagas"))
        .json(&json!({"definition": definition, "input": input}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let keyed = HashMap::from([(id.clone(), false)]);
    workload::wait_settled(&[url.to_owned()], &keyed, Duration::from_secs(60)).await;
    let saga = reqwest::get(format!("{url}/v1/sagas/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, saga)
}

/// Every write and every undo of every transfer runs twice (the first result thrown
/// away, as when an answer is lost): the second is answered from the op id, so every
/// balance is still exactly what the completed transfers make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_and_every_undo_run_twice_apply_once() {
    use coordinator::runner::region::RegionDirectory;
    use coordinator::store::memory::MemoryStore;
    use coordinator::{Coordinator, Fault, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners};
    use sagas::Phase;

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 2).await;
    seed(&cluster).await;
    let regions = NAMES
        .iter()
        .zip(&cluster.regions)
        .map(|(name, region)| ((*name).to_owned(), region.url.clone()))
        .collect();
    let directory = RegionDirectory::new(regions, Some("us-east".into())).unwrap();
    let faults = Arc::new(Faults::new());
    let writes = ["debit", "credit", "note", "check"];
    for step in writes {
        for phase in [Phase::Action, Phase::Compensation] {
            faults.inject(None, step, phase, Fault::Repeat, None);
        }
    }
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any).with_regions(directory),
        rust: HandlerRegistry::new(),
        faults,
    };
    let coordinator = Coordinator::start(Arc::new(MemoryStore::new()), runners, Options::default())
        .await
        .unwrap();
    coordinator
        .register(&sagas::validate::validate_value(&definition()).unwrap())
        .await
        .unwrap();
    let inputs: Vec<Value> = transfers().into_iter().take(30).collect();
    let mut ids = Vec::new();
    for input in &inputs {
        let (view, _) = coordinator
            .start_saga(coordinator::StartSaga {
                definition: "move".into(),
                version: None,
                input: input.clone(),
                idempotency_key: None,
                trace_context: None,
            })
            .await
            .unwrap();
        ids.push(view.record.id);
    }
    let mut expected: BTreeMap<&str, i64> = ACCOUNTS.iter().map(|a| (*a, INITIAL)).collect();
    let mut compensated = 0;
    for (id, input) in ids.iter().zip(&inputs) {
        let record = coordinator.wait(*id, Duration::from_secs(120)).await.unwrap();
        let view = coordinator.saga(*id).await.unwrap();
        match record.status.as_str() {
            "completed" => {
                let amount = input["amount"].as_i64().unwrap();
                *expected.get_mut(input["from"].as_str().unwrap()).unwrap() -= amount;
                *expected.get_mut(input["to"].as_str().unwrap()).unwrap() += amount;
                for (def, step) in view.state.definition().steps.iter().zip(view.state.steps()) {
                    if writes.contains(&def.name.as_str()) {
                        let output = step.output.as_ref().unwrap();
                        assert_eq!(output["replayed"], true, "{} of {id}: {output}", def.name);
                    }
                }
            }
            "compensated" => compensated += 1,
            other => panic!("saga {id} ended {other}"),
        }
    }
    assert!(compensated >= inputs.len() / FAIL_EVERY, "{compensated} compensated");
    let mut actual = BTreeMap::new();
    for account in ACCOUNTS {
        let (_, body) = read(&home_url(&cluster, account), account).await;
        actual.insert(account, body["value"]["balance"].as_i64().unwrap());
    }
    assert_eq!(
        actual, expected,
        "each write and undo applied once though each ran twice"
    );
    coordinator.shutdown().await.unwrap();
}
