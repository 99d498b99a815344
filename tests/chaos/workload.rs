//! The chaos suite's clients: strong writes and reads of a few keys per home region, async
//! writes, bounded-staleness reads, counter increments and writes-anywhere keys, each sent
//! to a random region over its published port (TLS) and recorded with real-time intervals.
//! Writers send the regions' `write` token, bounded-staleness readers and the checks the
//! `read` token, saga clients the coordinator's API token.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regions::Timestamp;
use serde_json::{Value, json};
use testkit::history::{self, Outcome, problem_type};

use super::testbed::{PREFIXES, Secrets};

/// Strong clients per strong key.
pub const CLIENTS_PER_KEY: usize = 2;
/// The bound of the bounded-staleness reads, in ms (above the worst link's one-way delay
/// plus the closed-timestamp interval and clock offset of the testbed).
pub const MAX_STALENESS_MS: u64 = 1_500;

/// An acknowledged write.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: Timestamp,
    /// The value written.
    pub value: String,
    /// When the acknowledgement arrived.
    pub at: Duration,
}

/// A bounded-staleness read that was answered.
#[derive(Debug, Clone)]
pub struct BoundedRead {
    /// The key.
    pub key: String,
    /// The region asked.
    pub region: usize,
    /// When it was sent.
    pub invoked: Duration,
    /// The version seen (`None`: not found).
    pub version: Option<Timestamp>,
    /// The staleness bound the answer promised.
    pub bound: u64,
    /// Whether a replica (not the home) served it.
    pub local: bool,
}

/// Everything the clients saw.
#[derive(Default)]
pub struct Recorder {
    /// Every strong call, by key.
    pub ops: history::Ops,
    /// Acknowledged strong writes.
    pub strong_acked: Mutex<Vec<Acked>>,
    /// Acknowledged async writes (home-written keys).
    pub async_acked: Mutex<Vec<Acked>>,
    /// Answered bounded-staleness reads.
    pub bounded: Mutex<Vec<BoundedRead>>,
    /// Bounded-staleness reads refused (`too-stale`: the home was unreachable).
    pub bounded_refused: AtomicU64,
    /// Per counter: (sum of acknowledged increments, sum of increments of unknown outcome).
    pub counters: Mutex<BTreeMap<String, (i64, i64)>>,
    /// Acknowledged writes of writes-anywhere keys.
    pub anywhere_acked: AtomicU64,
    /// Calls without an answer or refused (not counted above).
    pub errors: AtomicU64,
}

/// The clients' shared state.
pub struct Workload {
    /// The common time origin of every recorded interval.
    pub origin: Instant,
    /// The regions' base URLs.
    pub regions: Vec<String>,
    /// The regions' HTTP client of writers (and of the strong reads among their calls):
    /// it sends the `write` token.
    pub http: reqwest::Client,
    /// The regions' HTTP client of readers: it sends the `read` token.
    pub reader: reqwest::Client,
    /// The coordinator's HTTP client: it sends the API token.
    pub coordinator: reqwest::Client,
    /// What they saw.
    pub rec: Recorder,
    /// Set to stop the clients.
    pub stop: AtomicBool,
}

/// The keys strong clients use: two per home region.
pub fn strong_keys() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| [format!("{p}s0"), format!("{p}s1")])
        .collect()
}

/// The keys async writes use: one per home region.
pub fn async_keys() -> Vec<String> {
    PREFIXES.iter().map(|p| format!("{p}a0")).collect()
}

/// The counters (any region increments them).
pub fn counter_keys() -> Vec<String> {
    vec!["counters/c0".to_owned(), "counters/c1".to_owned()]
}

/// The keys written at every region (the testbed's `any/` rule).
pub fn anywhere_keys() -> Vec<String> {
    vec!["any/k0".to_owned(), "any/k1".to_owned()]
}

impl Workload {
    /// Clients of the regions at `regions` and of the coordinator, with `secrets`' CA and
    /// tokens.
    pub fn new(regions: Vec<String>, secrets: &Secrets) -> Workload {
        Workload {
            origin: Instant::now(),
            regions,
            http: secrets.client(Some(&secrets.write)),
            reader: secrets.client(Some(&secrets.read)),
            coordinator: secrets.client(Some(&secrets.api)),
            rec: Recorder::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// Time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn region(&self) -> usize {
        rand::random_range(0..self.regions.len())
    }

    /// One strong write or read of `key` through `region`, recorded. A call that could
    /// not even connect was never sent and is not recorded. True if it had a definite
    /// answer.
    pub async fn strong_call(&self, client: usize, key: &str, region: usize, n: usize, write: bool) -> bool {
        let value = format!("c{client}-{n}");
        let url = format!("{}/v1/kv/{key}", self.regions[region]);
        let invoked = self.now();
        let sent = if write {
            self.http.put(&url).json(&json!({"value": value})).send().await
        } else {
            self.http.get(&url).send().await
        };
        let answer = match sent {
            Ok(r) => Some((r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))),
            Err(e) if e.is_connect() => {
                self.rec.errors.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Err(_) => None,
        };
        let returned = self.now();
        let outcome = history::strong_outcome(write, answer.as_ref());
        if let (Outcome::Written, Some((_, body))) = (&outcome, &answer) {
            let version = body["version"].as_str().unwrap().parse().unwrap();
            self.rec.strong_acked.lock().unwrap().push(Acked {
                key: key.to_owned(),
                version,
                value: value.clone(),
                at: returned,
            });
        }
        let definite = !matches!(outcome, Outcome::Unknown | Outcome::Failed);
        if !definite {
            self.rec.errors.fetch_add(1, Ordering::Relaxed);
        }
        history::record(&self.rec.ops, key, client, write, value, (invoked, returned), outcome);
        definite
    }

    async fn async_write(&self, key: &str, n: usize) {
        let value = format!("async-{n}");
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.regions[self.region()]))
            .json(&json!({"value": value, "consistency": "async"}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap();
                let version = body["version"].as_str().unwrap().parse().unwrap();
                self.rec.async_acked.lock().unwrap().push(Acked {
                    key: key.to_owned(),
                    version,
                    value,
                    at: self.now(),
                });
            }
            _ => {
                self.rec.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn bounded_read(&self, key: &str) {
        let region = self.region();
        let invoked = self.now();
        let url = format!(
            "{}/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms={MAX_STALENESS_MS}",
            self.regions[region]
        );
        let Ok(r) = self.reader.get(url).send().await else {
            self.rec.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let version = match (status, problem_type(&body)) {
            (200, _) => Some(body["version"].as_str().unwrap().parse().unwrap()),
            (404, "key-not-found") => None,
            (503, "too-stale") => {
                self.rec.bounded_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {
                self.rec.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let bound = body["staleness_bound_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("every answer names its staleness bound: {body}"));
        let local = status == 200 && body["served_by"] != body["home_region"];
        self.rec.bounded.lock().unwrap().push(BoundedRead {
            key: key.to_owned(),
            region,
            invoked,
            version,
            bound,
            local,
        });
    }

    async fn increment(&self, key: &str) {
        let delta = rand::random_range(1..=5i64);
        let r = self
            .http
            .post(format!("{}/v1/counters/{key}", self.regions[self.region()]))
            .json(&json!({"increment": delta}))
            .send()
            .await;
        let acked = match r {
            Ok(r) if r.status() == 200 => true,
            Err(e) if e.is_connect() => return,
            // 4xx: refused, nothing applied; other answers: unknown.
            Ok(r) if r.status().is_client_error() => {
                panic!("an increment was refused: {}", r.text().await.unwrap_or_default())
            }
            _ => false,
        };
        let mut counters = self.rec.counters.lock().unwrap();
        let entry = counters.entry(key.to_owned()).or_default();
        if acked {
            entry.0 += delta;
        } else {
            entry.1 += delta;
        }
    }

    async fn write_anywhere(&self, key: &str, n: usize) {
        let region = self.region();
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.regions[region]))
            .json(&json!({"value": format!("r{region}-{n}"), "consistency": "async"}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            self.rec.anywhere_acked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rec.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts every client; they run until `w.stop` is set.
pub fn start(w: &std::sync::Arc<Workload>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (k, key) in strong_keys().into_iter().enumerate() {
        for c in 0..CLIENTS_PER_KEY {
            let (w, key) = (w.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let client = k * CLIENTS_PER_KEY + c;
                let (mut n, mut backoff) = (0, 100u64);
                while !w.stop.load(Ordering::SeqCst) {
                    n += 1;
                    let region = w.region();
                    if w.strong_call(client, &key, region, n, rand::random_bool(0.4)).await {
                        backoff = 100;
                    } else {
                        // Fewer calls of unknown outcome while a region is down.
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                        backoff = (backoff * 2).min(2_000);
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
            for key in anywhere_keys() {
                aw.write_anywhere(&key, n).await;
            }
            for key in counter_keys() {
                aw.increment(&key).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
    for _ in 0..2 {
        let bw = w.clone();
        tasks.push(tokio::spawn(async move {
            let keys: Vec<String> = strong_keys().into_iter().chain(async_keys()).collect();
            while !bw.stop.load(Ordering::SeqCst) {
                bw.bounded_read(&keys[rand::random_range(0..keys.len())]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tasks
}
