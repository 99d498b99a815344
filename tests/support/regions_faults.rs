//! The fault workload of `tests/regions_faults.rs` (SQLite), `tests/regions_postgres.rs`
//! and `tests/regions_skew.rs`. Three regions under faults: latency on every link, a region
//! killed with SIGKILL and restarted, another cut off and reconnected (or clocks apart),
//! while clients send concurrent strong writes and reads, async writes and
//! bounded-staleness reads through every region, running on after the faults until they
//! have done enough to check (a minute at most, for a loaded machine). Afterwards: every
//! key's history is linearizable (Stateright's checker), every bounded-staleness answer was
//! as fresh as its bound promised, no acknowledged strong write is lost, and every async
//! write reached every replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::regions::{Cluster, PREFIXES};
use regions::Timestamp;
use serde_json::{Value, json};
use testkit::history::{self, Operation, Outcome};

/// The replication settings the workload expects.
pub const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 600\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
/// The one-way latency of every link.
pub const LATENCY_MS: u64 = 15;
const CLIENTS_PER_KEY: usize = 2;
/// The bound of the bounded-staleness reads of [`linearizable_through_kills_and_partitions`].
pub const MAX_STALENESS_MS: u64 = 250;
/// What the workload must have done before it stops, for its checks to mean something:
/// acknowledged strong writes, strong reads, and bounded-staleness reads served by replicas.
const ENOUGH: Done = Done {
    written: 21,
    read: 21,
    local: 10,
};
/// How long the workload may run on after its faults to do [`ENOUGH`]: a quiet machine has
/// done it by then, a loaded one (a few a second) needs longer than the faults take.
const ENOUGH_WITHIN: Duration = Duration::from_secs(60);

/// What the workload has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Done {
    /// Acknowledged strong writes.
    written: usize,
    /// Strong reads answered.
    read: usize,
    /// Bounded-staleness reads a replica served.
    local: usize,
}

impl Done {
    fn reaches(self, floor: Done) -> bool {
        self.written >= floor.written && self.read >= floor.read && self.local >= floor.local
    }
}

/// A bounded-staleness read: key, when invoked, the version seen (`None`: not found), the
/// staleness bound of the answer, and whether a replica served it.
type BoundedRead = (String, Duration, Option<Timestamp>, u64, bool);

#[derive(Default)]
struct Recorder {
    ops: history::Ops,
    /// (key, version, value, when acknowledged): every acknowledged write.
    acked: Mutex<Vec<(String, Timestamp, String, Duration)>>,
    /// (key, invoked, version or None for not found, staleness bound, served locally).
    bounded: Mutex<Vec<BoundedRead>>,
}

struct Workload {
    origin: Instant,
    urls: Vec<String>,
    http: reqwest::Client,
    rec: Recorder,
    stop: AtomicBool,
    max_staleness_ms: u64,
}

impl Workload {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn done(&self) -> Done {
        let ops = self.rec.ops.lock().unwrap();
        let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|(_, o)| f(&o.outcome)).count();
        Done {
            written: count(|o| matches!(o, Outcome::Written)),
            read: count(|o| matches!(o, Outcome::Read(_))),
            local: self.rec.bounded.lock().unwrap().iter().filter(|b| b.4).count(),
        }
    }

    /// Lets the workload run on until it has done [`ENOUGH`] and `beside_enough` holds, for
    /// [`ENOUGH_WITHIN`] at most (the checks then fail if not); what it did.
    async fn run_until_enough(&self, beside_enough: &Enough) -> Done {
        let deadline = Instant::now() + ENOUGH_WITHIN;
        loop {
            let done = self.done();
            if (done.reaches(ENOUGH) && beside_enough()) || Instant::now() >= deadline {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> &str {
        &self.urls[rand::random_range(0..self.urls.len())]
    }

    /// One strong write or read of `key` by `client`, recorded.
    async fn strong_call(&self, client: usize, key: &str, n: usize, write: bool) -> bool {
        let value = format!("c{client}-{n}");
        let url = format!("{}/v1/kv/{key}", self.url());
        let invoked = self.now();
        let sent = if write {
            self.http.put(&url).json(&json!({"value": value})).send().await
        } else {
            self.http.get(&url).send().await
        };
        let answer = match sent {
            Ok(r) => Some((r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))),
            Err(_) => None,
        };
        let returned = self.now();
        let outcome = history::strong_outcome(write, answer.as_ref());
        if let (Outcome::Written, Some((_, body))) = (&outcome, &answer) {
            let version = body["version"].as_str().unwrap().parse().unwrap();
            self.rec
                .acked
                .lock()
                .unwrap()
                .push((key.to_owned(), version, value.clone(), returned));
        }
        let ok = !matches!(outcome, Outcome::Unknown | Outcome::Failed);
        history::record(&self.rec.ops, key, client, write, value, (invoked, returned), outcome);
        ok
    }

    async fn async_write(&self, key: &str, n: usize) {
        let value = format!("async-{n}");
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.url()))
            .json(&json!({"value": value, "consistency": "async"}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            let body: Value = r.json().await.unwrap();
            let version = body["version"].as_str().unwrap().parse().unwrap();
            self.rec
                .acked
                .lock()
                .unwrap()
                .push((key.to_owned(), version, value, self.now()));
        }
    }

    async fn bounded_read(&self, key: &str) {
        let region = self.url();
        let invoked = self.now();
        let url = format!(
            "{region}/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms={}",
            self.max_staleness_ms
        );
        let Ok(r) = self.http.get(url).send().await else {
            return;
        };
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let version = match status {
            200 => Some(body["version"].as_str().unwrap().parse().unwrap()),
            404 => None,
            _ => return,
        };
        let bound = body["staleness_bound_ms"]
            .as_u64()
            .expect("every answer names its staleness bound");
        let local = status == 200 && body["served_by"] != body["home_region"];
        assert!(
            bound <= self.max_staleness_ms,
            "a bounded read promised {bound} ms: {body}"
        );
        self.rec
            .bounded
            .lock()
            .unwrap()
            .push((key.to_owned(), invoked, version, bound, local));
    }
}

fn strong_keys() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| [format!("{p}s0"), format!("{p}s1")])
        .collect()
}

/// The keys of the async writes, one per home (`us/a0`, `eu/a0`, `ap/a0`).
pub fn async_keys() -> Vec<String> {
    PREFIXES.iter().map(|p| format!("{p}a0")).collect()
}

fn run_workload(w: Arc<Workload>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (k, key) in strong_keys().into_iter().enumerate() {
        for c in 0..CLIENTS_PER_KEY {
            let (w, key) = (w.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let client = k * CLIENTS_PER_KEY + c;
                let mut n = 0;
                while !w.stop.load(Ordering::SeqCst) {
                    n += 1;
                    if !w.strong_call(client, &key, n, rand::random_bool(0.4)).await {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }));
        }
    }
    let aw = w.clone();
    tasks.push(tokio::spawn(async move {
        let mut n = 0;
        while !aw.stop.load(Ordering::SeqCst) {
            n += 1;
            for key in async_keys() {
                aw.async_write(&key, n).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    for _ in 0..2 {
        let bw = w.clone();
        tasks.push(tokio::spawn(async move {
            let keys: Vec<String> = strong_keys().into_iter().chain(async_keys()).collect();
            while !bw.stop.load(Ordering::SeqCst) {
                bw.bounded_read(&keys[rand::random_range(0..keys.len())]).await;
            }
        }));
    }
    tasks
}

/// Runs the workload on `cluster` (started with [`SETTINGS`] and [`LATENCY_MS`]) while
/// eu-west is killed with SIGKILL and restarted and ap-south is cut off and reconnected,
/// then checks what the module says.
pub async fn linearizable_through_kills_and_partitions(cluster: &mut Cluster) {
    linearizable_beside(cluster, Box::new(|| true)).await;
}

/// [`linearizable_through_kills_and_partitions`] with other work running beside the
/// workload: it also runs on (within the same minute) until `beside_enough` says that work
/// has done enough to mean something.
pub async fn linearizable_beside(cluster: &mut Cluster, beside_enough: Enough) {
    let mut running = start_workload(cluster, MAX_STALENESS_MS);
    running.beside_enough = beside_enough;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.regions[1].kill(); // eu-west, SIGKILL
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    cluster.regions[1].restart().await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.set_cut(2, true); // ap-south cut off
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.set_cut(2, false);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop_and_check(cluster, running, &async_keys(), None).await;
    assert!(
        cluster.regions[1].log_text().contains("region serving"),
        "eu-west restarted"
    );
}

/// Whether work running beside the workload has done enough (see [`linearizable_beside`]).
pub type Enough = Box<dyn Fn() -> bool + Send + Sync>;

/// The workload, running.
pub struct Running {
    w: Arc<Workload>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    beside_enough: Enough,
}

/// Starts the workload's clients on `cluster`, bounded-staleness reads with a bound of
/// `max_staleness_ms`.
pub fn start_workload(cluster: &Cluster, max_staleness_ms: u64) -> Running {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let urls = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let w = Arc::new(Workload {
        origin: Instant::now(),
        urls,
        http,
        rec: Recorder::default(),
        stop: AtomicBool::new(false),
        max_staleness_ms,
    });
    let tasks = run_workload(w.clone());
    Running {
        w,
        tasks,
        beside_enough: Box::new(|| true),
    }
}

/// A home whose clock is ahead of the others' by more than `max_clock_offset_ms`.
pub struct BeyondOffset {
    /// The prefix of the keys it is home of.
    pub prefix: &'static str,
    /// By how much its clock exceeds the maximum offset, in milliseconds.
    pub excess_ms: u64,
}

/// Lets the workload run on until it has done enough to check (a minute at most), stops it,
/// then checks what the module says; of the async keys, those in
/// `converge` must reach every replica (a region whose log is refused cannot ship its own).
///
/// With `beyond`, the bounded-staleness check of that home's keys allows what the system
/// guarantees there (docs/regions.md, "Clock skew"): a replica relies on a closed timestamp
/// of a home whose clock is beyond the offset only until it first refuses one of its
/// messages, and an answer it served before may be staler than its bound by up to the
/// excess.
pub async fn stop_and_check(cluster: &Cluster, running: Running, converge: &[String], beyond: Option<BeyondOffset>) {
    let Running {
        w,
        tasks,
        beside_enough,
    } = running;
    let done = w.run_until_enough(&beside_enough).await;
    eprintln!(
        "the workload stopped {:?} after it began, having done {done:?}",
        w.now()
    );
    w.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    // Final strong reads through every region join the histories.
    for key in strong_keys() {
        for (i, region) in cluster.regions.iter().enumerate() {
            let final_reader = Workload {
                origin: w.origin,
                urls: vec![region.url.clone()],
                http: w.http.clone(),
                rec: Recorder::default(),
                stop: AtomicBool::new(false),
                max_staleness_ms: w.max_staleness_ms,
            };
            let mut read = false;
            for attempt in 0..50 {
                if final_reader.strong_call(1_000 + i, &key, attempt, false).await {
                    read = true;
                    break;
                }
            }
            assert!(
                read,
                "no final read of {key} through {} succeeded; {}",
                region.name,
                cluster.logs()
            );
            w.rec
                .ops
                .lock()
                .unwrap()
                .extend(final_reader.rec.ops.into_inner().unwrap());
        }
    }

    // 1. Linearizability of every key's strong history.
    let ops = w.rec.ops.lock().unwrap().clone();
    let mut summary = HashMap::new();
    for key in strong_keys() {
        let history: Vec<Operation> = ops.iter().filter(|(k, _)| *k == key).map(|(_, o)| o.clone()).collect();
        for o in &history {
            let kind = match o.outcome {
                Outcome::Written => "written",
                Outcome::Read(_) => "read",
                Outcome::Failed => "failed",
                Outcome::Unknown => "unknown",
            };
            *summary.entry(kind).or_insert(0usize) += 1;
        }
        let checked = tokio::task::spawn_blocking(move || history::check(None, &history))
            .await
            .unwrap();
        assert!(checked.is_ok(), "{key}: {}", checked.unwrap_err());
    }
    eprintln!("strong operations: {summary:?}");
    assert!(
        done.written >= ENOUGH.written && done.read >= ENOUGH.read,
        "too few strong operations to check within {ENOUGH_WITHIN:?}: {done:?}, at least {ENOUGH:?} needed; {summary:?}"
    );

    // 2. No acknowledged strong write is lost: each is still readable as of its version.
    let acked = w.rec.acked.lock().unwrap().clone();
    let home_url = |key: &str| {
        cluster.regions[PREFIXES.iter().position(|p| key.starts_with(p)).unwrap()]
            .url
            .clone()
    };
    for (key, version, value, _) in acked.iter().filter(|(k, ..)| strong_keys().contains(k)) {
        let r: Value = reqwest::get(format!("{}/v1/kv/{key}?as_of={version}", home_url(key)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["value"].as_str(), Some(value.as_str()), "{key}@{version}: {r}");
    }

    // 3. Every bounded-staleness answer was at least as fresh as its bound promised.
    let bounded = w.rec.bounded.lock().unwrap().clone();
    let local = bounded.iter().filter(|b| b.4).count();
    for (key, invoked, version, bound, _) in &bounded {
        let excess = beyond
            .as_ref()
            .filter(|b| key.starts_with(b.prefix))
            .map_or(0, |b| b.excess_ms);
        let promised = u128::from(*bound) + u128::from(excess);
        let must_see = acked
            .iter()
            .filter(|(k, _, _, at)| k == key && at.as_millis() + promised < invoked.as_millis())
            .map(|a| a.1)
            .max();
        if let Some(must) = must_see {
            assert!(
                version.is_some_and(|v| v >= must),
                "{key}: read at {invoked:?} with bound {bound} ms saw {version:?}, older than {must}"
            );
        }
    }
    eprintln!(
        "bounded-staleness reads: {} checked, {local} served locally",
        bounded.len()
    );
    assert!(
        local >= ENOUGH.local,
        "only {local} bounded reads were served by replicas within {ENOUGH_WITHIN:?} (at least {} needed)",
        ENOUGH.local
    );

    // 4. Async writes reach every replica once the faults healed.
    for key in converge {
        let last = acked
            .iter()
            .filter(|a| a.0 == *key)
            .map(|a| a.1)
            .max()
            .expect("async writes acknowledged");
        for region in &cluster.regions {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let r: Value = reqwest::get(format!(
                    "{}/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=600000",
                    region.url
                ))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
                let seen: Option<Timestamp> = r["version"].as_str().and_then(|v| v.parse().ok());
                if r["served_by"] == region.name.as_str() && seen.is_some_and(|v| v >= last) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key} never reached {} at {last}: {r}\n{}",
                    region.name,
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
