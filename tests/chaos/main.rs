//! The chaos suite: the containerised multi-region testbed (`deploy/testbed`: three regions
//! and two coordinators sharing a PostgreSQL database on the host, WAN latency from
//! `geosaga-netem`; mutual TLS between the regions, TLS and tokens of each role for their
//! clients, a token on the coordinators' API, and the coordinators' region steps over TLS
//! with a client certificate and a write token; eu-west's clock 40 ms ahead of the others',
//! within `max_clock_offset_ms`) under a workload of cross-region transfer sagas (spread
//! over both coordinators), strong and async writes, bounded-staleness reads, counter
//! increments, writes-anywhere keys, and a bank of transactions across two homes audited
//! by snapshots ([`bank`]), while a nemesis SIGKILLs and restarts regions and
//! one coordinator, pauses the other past its lease (`docker pause`, the cgroup freezer),
//! cuts regions off and heals them, changes latencies, and holds eu-west's and ap-south's
//! answers back longer than a step's time limit (their writes apply, the coordinator sees a
//! timeout). The first six faults are one of each kind, in a random order, however short
//! the run. Then every promise is checked
//! (see [`checks`]) and a short report printed; when a check fails, the whole history is
//! kept as JSON.
//!
//! Needs Docker and PostgreSQL's server binaries (`scripts/test` installs both as root). `GEOSAGA_CHAOS_SECS` sets how long
//! the nemesis runs (default 120; a soak: `GEOSAGA_CHAOS_SECS=3600 cargo nextest run -p
//! geosaga --test chaos --run-ignored all`... or simply the same command with a longer
//! duration), `GEOSAGA_CHAOS_SEED` replays a nemesis schedule, `GEOSAGA_CHAOS_KEEP=1` leaves
//! the testbed up afterwards.

mod bank;
mod checks;
mod coordinators;
mod history_file;
mod testbed;
mod transfers;
mod uncertain;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use coordinators::{COORDINATORS, LEASE_MS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testbed::{CLOCK_OFFSET, MAX_CLOCK_OFFSET_MS, REGIONS, TABLE_RTT, Testbed};
use workload::Workload;

/// One fault the nemesis injected.
#[derive(Debug, Clone)]
pub struct Fault {
    /// When it began (since the workload's origin).
    pub at: Duration,
    /// Its kind: `kill` (a region), `kill-coordinator`, `pause`, `cut`, `latency`, `slow`.
    pub kind: &'static str,
    /// What exactly.
    pub what: String,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

async fn sleep_ms(rng: &mut StdRng, range: std::ops::Range<u64>) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(range))).await;
}

/// The kinds of fault: a region killed, the first coordinator killed, the second paused
/// past its lease, a region cut off, a latency changed, a region's answers held back past
/// a step's time limit.
const KINDS: usize = 6;

/// Kills, pauses, cuts and slows down parts of the testbed, one fault at a time, until
/// `until`: first one fault of each kind in a random order, then kinds drawn at random.
async fn nemesis(tb: &Testbed, w: &Workload, seed: u64, until: Instant) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut first: Vec<usize> = (0..KINDS).collect();
    rand::seq::SliceRandom::shuffle(first.as_mut_slice(), &mut rng);
    let mut faults = Vec::new();
    // However short the run, one fault of each kind.
    while Instant::now() < until || faults.len() < KINDS {
        sleep_ms(&mut rng, 1_500..4_000).await;
        let at = w.now();
        let kind = match faults.len() {
            n if n < KINDS => first[n],
            _ => rng.random_range(0..KINDS),
        };
        match kind {
            0 => {
                let r = REGIONS[rng.random_range(0..REGIONS.len())];
                tb.must(&["kill", r]).await;
                faults.push(Fault {
                    at,
                    kind: "kill",
                    what: format!("{r} SIGKILLed"),
                });
                sleep_ms(&mut rng, 1_000..6_000).await;
                tb.must(&["start", r]).await;
            }
            1 => {
                tb.must(&["kill", "coordinator"]).await;
                faults.push(Fault {
                    at,
                    kind: "kill-coordinator",
                    what: "coordinator SIGKILLed".into(),
                });
                sleep_ms(&mut rng, 500..4_000).await;
                tb.must(&["start", "coordinator"]).await;
            }
            2 => {
                let r = REGIONS[rng.random_range(0..REGIONS.len())];
                tb.must(&["cut", r]).await;
                faults.push(Fault {
                    at,
                    kind: "cut",
                    what: format!("{r} cut off"),
                });
                sleep_ms(&mut rng, 2_000..8_000).await;
                tb.must(&["heal", r]).await;
            }
            3 => {
                let (a, b, _) = TABLE_RTT[rng.random_range(0..TABLE_RTT.len())];
                let ms = rng.random_range(10..800u64);
                tb.must(&["latency", a, b, &ms.to_string()]).await;
                faults.push(Fault {
                    at,
                    kind: "latency",
                    what: format!("{a}<->{b} {ms} ms"),
                });
            }
            4 => {
                // Past its lease: the other coordinator adopts its sagas meanwhile, and
                // its own tasks find they were fenced once it runs again.
                let paused = COORDINATORS[1];
                tb.must(&["pause", paused]).await;
                let ms = rng.random_range(LEASE_MS + 1_000..LEASE_MS + 4_000);
                faults.push(Fault {
                    at,
                    kind: "pause",
                    what: format!("{paused} paused {ms} ms (lease {LEASE_MS} ms)"),
                });
                tokio::time::sleep(Duration::from_millis(ms)).await;
                tb.must(&["unpause", paused]).await;
            }
            _ => {
                // Answers later than a step's time limit, for longer than a step's three
                // attempts: writes sent meanwhile apply at the home, and end possibly
                // applied at the coordinator. Both regions behind netem, so that every
                // transfer running then has a write there (sender and receiver live in
                // different regions).
                let late = (transfers::STEP_TIMEOUT_MS + 1_000).to_string();
                for r in &REGIONS[1..] {
                    tb.must(&["slow", r, &late]).await;
                }
                faults.push(Fault {
                    at,
                    kind: "slow",
                    what: format!("{}'s answers {late} ms late", REGIONS[1..].join("'s and ")),
                });
                sleep_ms(&mut rng, 8_000..12_000).await;
                for r in &REGIONS[1..] {
                    tb.must(&["slow", r, "0"]).await;
                }
            }
        }
    }
    tb.must(&["heal"]).await;
    tb.must(&["latencies"]).await;
    for r in &REGIONS[1..] {
        tb.must(&["slow", r, "0"]).await;
    }
    faults
}

/// The testbed runs as a deployment should: the regions answer only over TLS, and refuse
/// a call without a token (401) or with a token of too low a role (403); the coordinator
/// refuses a call without its token.
async fn callers_need_their_token(tb: &Testbed) {
    let status =
        |r: Result<reqwest::Response, reqwest::Error>| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
    let region = &tb.regions[0];
    let plain = region.replacen("https://", "http://", 1);
    assert!(
        reqwest::get(format!("{plain}/readyz")).await.is_err(),
        "{plain} speaks plain HTTP"
    );
    let anonymous = tb.secrets.client(None);
    assert_eq!(status(anonymous.get(format!("{region}/readyz")).send().await), Ok(200));
    let put = |client: &reqwest::Client| {
        client
            .put(format!("{region}/v1/kv/us/roles"))
            .json(&serde_json::json!({"value": 1}))
            .send()
    };
    assert_eq!(status(put(&anonymous).await), Ok(401), "a write without a token");
    let reader = tb.secrets.client(Some(&tb.secrets.read));
    assert_eq!(status(put(&reader).await), Ok(403), "a write with the read token");
    let writer = tb.secrets.client(Some(&tb.secrets.write));
    let rehome = writer
        .post(format!("{region}/v1/admin/rehome"))
        .json(&serde_json::json!({"prefix": "us/", "to": "eu-west"}))
        .send()
        .await;
    assert_eq!(status(rehome), Ok(403), "a re-homing with the write token");
    let saga = anonymous
        .post(format!("{}/v1/sagas", tb.coordinator))
        .json(&serde_json::json!({"definition": "transfer_regions", "input": {}}))
        .send()
        .await;
    assert_eq!(status(saga), Ok(401), "a saga started without the API token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_testbed_keeps_its_promises_under_a_nemesis() {
    testbed::require_docker();
    let secs = env_u64("GEOSAGA_CHAOS_SECS", 120);
    let seed = env_u64("GEOSAGA_CHAOS_SEED", rand::random_range(0..1_000_000));
    let project = std::env::var("GEOSAGA_CHAOS_PROJECT").unwrap_or_else(|_| "geosaga-chaos".to_owned());
    eprintln!(
        "chaos: {secs} s of faults, seed {seed} (GEOSAGA_CHAOS_SEED={seed} replays the schedule), project {project}"
    );
    let started = Instant::now();
    let tb = Testbed::up(&project).await;
    let setup = started.elapsed();
    callers_need_their_token(&tb).await;

    let w = Arc::new(Workload::new(tb.regions.clone(), &tb.secrets));
    transfers::open_accounts(&w).await;
    transfers::register(&w, &tb.coordinator).await;
    bank::open(&w).await;
    let sagas = Arc::new(transfers::Sagas::default());
    let bank = Arc::new(bank::Bank::default());
    let mut tasks = workload::start(&w);
    for client in 0..3 {
        let (w, bank) = (w.clone(), bank.clone());
        tasks.push(tokio::spawn(async move {
            match client {
                0 => bank::audit(&w, &bank).await,
                _ => bank::transfer(&w, &bank).await,
            }
        }));
    }
    for client in 0..4 {
        let via = client % tb.coordinators.len();
        let (w, sagas, coordinator) = (w.clone(), sagas.clone(), tb.coordinators[via].clone());
        tasks.push(tokio::spawn(async move {
            transfers::run(&w, &sagas, (via, &coordinator), client).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let faults = nemesis(&tb, &w, seed, Instant::now() + Duration::from_secs(secs)).await;
    let proxies: serde_json::Value = reqwest::get(format!("{}/proxies", tb.netem))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let links = proxies.as_object().expect("netem lists its proxies");
    assert!(
        links.len() == 6 && links.values().all(|p| p["enabled"] == true),
        "every link is up again: {proxies}"
    );
    // A little traffic on the healed testbed, then the clients stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    let workload = started.elapsed() - setup;
    let report = checks::run(&tb, &w, &sagas, &bank).await;
    let checking = started.elapsed() - setup - workload;
    let mut by_kind = BTreeMap::new();
    for f in &faults {
        *by_kind.entry(f.kind).or_insert(0usize) += 1;
    }
    eprintln!(
        "chaos report ({secs} s, seed {seed}; image and testbed up in {:.0} s, workload {:.0} s, checks {:.0} s)\n  \
         testbed: coordinators {COORDINATORS:?} on PostgreSQL (lease {LEASE_MS} ms); {}'s clock {} ms ahead of the others' \
         (max_clock_offset_ms {MAX_CLOCK_OFFSET_MS})\n  operations: {}\n  faults: {} ({by_kind:?}): {}\n  checks:\n{}",
        setup.as_secs_f64(),
        workload.as_secs_f64(),
        checking.as_secs_f64(),
        CLOCK_OFFSET.0,
        CLOCK_OFFSET.1,
        report.operations,
        faults.len(),
        faults
            .iter()
            .map(|f| format!("{:.0}s {}", f.at.as_secs_f64(), f.what))
            .collect::<Vec<_>>()
            .join(", "),
        report
            .checks
            .iter()
            .map(|(name, failure)| match failure {
                None => format!("    ok    {name}"),
                Some(f) => format!("    FAIL  {name}: {f}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    let failed: Vec<&String> = report
        .checks
        .iter()
        .filter(|(_, f)| f.is_some())
        .map(|(n, _)| n)
        .collect();
    if !failed.is_empty() {
        let path = history_file::keep(&w, &sagas, &faults, &report, seed, &tb.logs().await);
        panic!(
            "{} check(s) failed: {failed:?}; the history is in {}",
            failed.len(),
            path.display()
        );
    }
    assert!(
        by_kind.len() == KINDS,
        "the nemesis injected a fault of every kind: {by_kind:?}"
    );
}
