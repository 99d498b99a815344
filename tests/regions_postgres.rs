//! Regions on PostgreSQL: three `geosaga region` processes, each with a database of its own
//! on one throwaway PostgreSQL server (`testkit::pg`; or the server of
//! `GEOSAGA_TEST_POSTGRES_URL`), named three ways: `database = URL` in the file (us-east),
//! `--database URL` (eu-west) and `GEOSAGA_REGION_DATABASE` (ap-south). Without PostgreSQL
//! these tests fail saying how to get it.

mod support;

use testkit::pg;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use support::regions::{Cluster, NAMES, RegionStore};
use support::regions_faults::{LATENCY_MS, SETTINGS, linearizable_through_kills_and_partitions};
use testkit::http::{self, get, put};

/// A database per region, and the stores naming them.
async fn databases() -> (Vec<pg::TestDb>, [RegionStore; 3]) {
    let dbs = vec![
        pg::fresh_database().await,
        pg::fresh_database().await,
        pg::fresh_database().await,
    ];
    let stores = [
        RegionStore::PostgresInFile(dbs[0].url().to_owned()),
        RegionStore::PostgresFlag(dbs[1].url().to_owned()),
        RegionStore::PostgresEnv(dbs[2].url().to_owned()),
    ];
    (dbs, stores)
}

/// Every region says it stores in PostgreSQL, and none made a SQLite file.
fn assert_on_postgres(cluster: &Cluster, dir: &std::path::Path) {
    for region in &cluster.regions {
        let log = region.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("store opened") && l.contains("store=postgres postgres://")),
            "{} does not store in PostgreSQL: {log}",
            region.name
        );
    }
    for name in NAMES {
        assert!(!dir.join(format!("{name}.db")).exists(), "{name} made a SQLite file");
    }
}

/// Rows of `table` in `db`, read by SQL.
async fn count(db: &pg::TestDb, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
    n
}

/// The fault workload of `tests/regions_faults.rs` on three PostgreSQL-backed regions:
/// strong and async writes, strong and bounded-staleness reads through every region while
/// eu-west (PostgreSQL, named by `--database`) is killed with SIGKILL and restarted and
/// ap-south is cut off. Strong histories stay linearizable, no acknowledged strong write is
/// lost, bounded reads are as fresh as promised, async writes reach every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histories_stay_linearizable_on_postgres_through_kills_and_partitions() {
    let (dbs, stores) = databases().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with_stores(dir.path(), SETTINGS, LATENCY_MS, &stores).await;
    linearizable_through_kills_and_partitions(&mut cluster).await;
    assert_on_postgres(&cluster, dir.path());
    let eu = count(
        &dbs[1],
        "SELECT COUNT(*) FROM versions WHERE key LIKE 'eu/%' AND home = 'eu-west'",
    )
    .await;
    assert!(eu > 0, "eu-west's own writes are rows of its database");
    let replicated = count(&dbs[2], "SELECT COUNT(*) FROM versions WHERE home = 'us-east'").await;
    assert!(replicated > 0, "ap-south holds replicas of us-east's keys");
}

/// Polls `path` at `url` until `done` holds for its answer (at most 15 s).
async fn eventually(url: &str, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    http::eventually(url, path, Duration::from_secs(15), String::new, done).await
}

/// us-east (PostgreSQL, named in the file) takes strong writes, async writes and an
/// idempotent write, is killed with SIGKILL in the middle of a stream of strong writes and
/// restarted: every acknowledged write is there, at its version, at the home and at the
/// replicas; a repeat of the idempotent write is still answered from its first result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_home_killed_mid_stream_loses_no_acknowledged_write() {
    let (dbs, stores) = databases().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = "quorum = \"all\"\nstrong_timeout_ms = 800\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
    let mut cluster = Cluster::start_with_stores(dir.path(), settings, 5, &stores).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    assert_on_postgres(&cluster, dir.path());

    // An idempotent strong write, forwarded by eu-west to us-east, and its repeat.
    let op = json!({"value": {"balance": 10}, "op_id": "saga-1:debit:action"});
    let (status, first) = put(&eu, "us/alice", op.clone()).await;
    assert_eq!(
        (status, first["replayed"].as_bool().unwrap_or(false)),
        (200, false),
        "{first}"
    );
    let (_, again) = put(&us, "us/alice", op.clone()).await;
    assert_eq!(
        (again["replayed"].as_bool(), &again["version"]),
        (Some(true), &first["version"])
    );
    // An async write at us-east, read locally by bounded staleness at the replicas.
    let (status, late) = put(&us, "us/cart", json!({"value": [1, 2], "consistency": "async"})).await;
    assert_eq!(status, 200, "{late}");
    for url in [&eu, &ap] {
        let path = "/v1/kv/us/cart?consistency=bounded_staleness&max_staleness_ms=60000";
        let seen = eventually(url, path, |s, b| s == 200 && b["version"] == late["version"]).await;
        assert_ne!(seen["served_by"], "us-east", "served by the local replica: {seen}");
    }

    // A stream of strong writes through ap-south; us-east is killed in the middle of it.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ap, acked, stop) = (ap.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = http
                    .put(format!("{ap}/v1/kv/us/w{i}"))
                    .json(&json!({"value": i}))
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status() == 200
                {
                    let body: Value = r.json().await.unwrap();
                    let version = body["version"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().push((i, version));
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let acked_at_least = |n: usize| {
        let acked = acked.clone();
        async move {
            while acked.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    acked_at_least(20).await;
    cluster.regions[0].kill(); // us-east, SIGKILL
    let before_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.regions[0].restart().await;
    acked_at_least(before_kill + 20).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} strong writes acknowledged, {before_kill} before us-east was killed",
        acked.len()
    );

    // Every acknowledged write is at the home at its version, and reaches each replica.
    for (i, version) in &acked {
        let (status, r) = get(&us, &format!("/v1/kv/us/w{i}")).await;
        assert_eq!(
            (status, r["value"].as_i64(), r["version"].as_str()),
            (200, Some(*i), Some(version.as_str())),
            "{r}"
        );
    }
    let (last, version) = acked.last().unwrap();
    for url in [&eu, &ap] {
        let path = format!("/v1/kv/us/w{last}?consistency=bounded_staleness&max_staleness_ms=60000");
        eventually(url, &path, |s, b| s == 200 && b["version"] == version.as_str()).await;
    }
    let (_, replay) = put(&ap, "us/alice", op).await;
    assert_eq!(
        (replay["replayed"].as_bool(), &replay["version"]),
        (Some(true), &first["version"]),
        "after the restart"
    );
    let (_, cart) = get(&us, "/v1/kv/us/cart").await;
    assert_eq!(cart["value"], json!([1, 2]));
    // The restart aborted what the kill left pending: nothing stays pending.
    assert_eq!(
        count(&dbs[0], "SELECT COUNT(*) FROM repl_log WHERE state = 'pending'").await,
        0
    );
    assert!(
        cluster.regions[0].log_text().matches("store opened").count() >= 2,
        "us-east restarted"
    );
}

/// The PostgreSQL server under all three regions crashes and comes back: a strong write
/// meanwhile fails with a server error and is never visible; once the server is back,
/// writes succeed again without a region restart and replicate as before, and nothing is
/// left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_ride_out_a_postgres_restart() {
    let server = Arc::new(tokio::task::spawn_blocking(pg::PgServer::dedicated).await.unwrap());
    let mut dbs = Vec::new();
    for _ in NAMES {
        dbs.push(server.fresh_database().await);
    }
    let stores = [0, 1, 2].map(|i| RegionStore::PostgresFlag(dbs[i].url().to_owned()));
    let dir = tempfile::tempdir().unwrap();
    let settings =
        "quorum = \"quorum\"\nstrong_timeout_ms = 800\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
    let cluster = Cluster::start_with_stores(dir.path(), settings, 5, &stores).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    let (status, before) = put(&eu, "us/a", json!({"value": "before"})).await;
    assert_eq!(status, 200, "{before}");

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    let (status, failed) = put(&us, "us/b", json!({"value": "during"})).await;
    assert!((500..600).contains(&status), "{status} {failed}");
    for url in [&us, &eu, &ap] {
        let (status, problem) = get(url, "/readyz").await;
        assert_eq!(status, 503, "not ready while the database is down: {problem}");
        assert!(
            problem["type"].as_str().unwrap().ends_with("/store-unavailable"),
            "{problem}"
        );
    }
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.start()).await.unwrap();

    // The regions reconnect on their own.
    let start = std::time::Instant::now();
    let after = loop {
        let (status, w) = put(&eu, "us/c", json!({"value": "after"})).await;
        if status == 200 {
            break w;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no write succeeds after the restart: {w}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for url in [&us, &eu, &ap] {
        eventually(url, "/readyz", |s, _| s == 200).await;
    }
    let (status, missing) = get(&us, "/v1/kv/us/b").await;
    assert_eq!(status, 404, "the failed write is not visible: {missing}");
    let (_, a) = get(&ap, "/v1/kv/us/a").await;
    assert_eq!(a["version"], before["version"]);
    for url in [&eu, &ap] {
        let path = "/v1/kv/us/c?consistency=bounded_staleness&max_staleness_ms=60000";
        eventually(url, path, |s, b| s == 200 && b["version"] == after["version"]).await;
    }
    assert_eq!(
        count(&dbs[0], "SELECT COUNT(*) FROM repl_log WHERE state = 'pending'").await,
        0
    );
}
