//! A latency bench of transactions, ignored by default; it writes
//! `docs/benchmarks-transactions.md`. Run it with
//!
//! ```sh
//! cargo test --release -p geosaga --test regions_txn_bench -- --ignored --nocapture
//! ```
//!
//! The cluster of `tests/regions_bench.rs`: one-way latencies us-east to eu-west 40 ms,
//! us-east to ap-south 100 ms, eu-west to ap-south 80 ms; `quorum = "quorum"`.

mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::regions::Cluster;

const N: usize = 30;

/// What the figures say (true of the protocol, whatever the run's numbers).
const READING: &str = "\n\
Reading it: a transaction's intents and record are replicated with the keys' consistency:\n\
a home answers that it prepared once a quorum of its keys' replicas keeps a copy (see\n\
`docs/transactions.md`). A transaction whose keys share one home at the gateway therefore\n\
costs about a strong write of one key (the copy of the committed record and its intents\n\
goes to the nearest replica). Across homes, a commit is a parallel commit: the record is\n\
staged at its home in the same round as the prepares, a remote home counts the gateway\n\
towards its quorum (the gateway keeps the copy the answer carries, one local write), and\n\
the transaction is committed once every home prepared, so it costs one round trip to the\n\
farthest home plus, when the gateway keeps the record, its local writes; the other homes\n\
are resolved after the answer. That is about one strong write at the other home. A\n\
gateway that homes none of the keys pays the round trip to the farther home, as a strong\n\
write sent through it does. A read-only snapshot is served from a replica's own copies\n\
once the bound covers the one-way latency from the farther home plus the closed\n\
timestamp's interval and the clock offset.\n";
const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 2000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]),
    )
}

async fn timed(request: reqwest::RequestBuilder) -> (Duration, Value) {
    let start = Instant::now();
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.json::<Value>().await.unwrap();
    (start.elapsed(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a bench: run explicitly with --ignored"]
async fn transaction_latencies() {
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), SETTINGS, 0).await;
    c.set_latency(0, 1, 40);
    c.set_latency(0, 2, 100);
    c.set_latency(1, 2, 80);
    let (us, eu, ap) = (
        c.regions[0].url.clone(),
        c.regions[1].url.clone(),
        c.regions[2].url.clone(),
    );
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut measure = |label: &str, samples: Vec<Duration>| {
        let (p50, p99) = percentiles(samples);
        rows.push((label.to_owned(), p50, p99));
    };

    let mut s = Vec::new();
    for i in 0..N {
        s.push(
            timed(http.put(format!("{us}/v1/kv/us/w-{i}")).json(&json!({"value": i})))
                .await
                .0,
        );
    }
    measure("strong write of a us-east key, at us-east", s);
    let mut s = Vec::new();
    for i in 0..N {
        s.push(
            timed(http.put(format!("{eu}/v1/kv/eu/w-{i}")).json(&json!({"value": i})))
                .await
                .0,
        );
    }
    measure("strong write of an eu-west key, at eu-west", s);
    let mut s = Vec::new();
    for i in 0..N {
        s.push(
            timed(http.put(format!("{us}/v1/kv/eu/wf-{i}")).json(&json!({"value": i})))
                .await
                .0,
        );
    }
    measure("strong write of an eu-west key, at us-east (sent on to its home)", s);
    let mut s = Vec::new();
    for i in 0..N {
        let body = json!({"writes": [{"key": format!("us/t1-{i}"), "value": i}]});
        s.push(timed(http.post(format!("{us}/v1/txn")).json(&body)).await.0);
    }
    measure("transaction writing one us-east key, at us-east (POST /v1/txn)", s);
    let mut s = Vec::new();
    for i in 0..N {
        let body =
            json!({"writes": [{"key": format!("us/t2-{i}"), "value": i}, {"key": format!("eu/t2-{i}"), "value": i}]});
        s.push(timed(http.post(format!("{us}/v1/txn")).json(&body)).await.0);
    }
    measure("transaction writing a us-east and an eu-west key, at us-east", s);
    let mut s = Vec::new();
    for i in 0..N {
        let body =
            json!({"writes": [{"key": format!("us/t3-{i}"), "value": i}, {"key": format!("eu/t3-{i}"), "value": i}]});
        s.push(timed(http.post(format!("{ap}/v1/txn")).json(&body)).await.0);
    }
    measure(
        "transaction writing a us-east and an eu-west key, at ap-south (a gateway that homes neither)",
        s,
    );
    let mut s = Vec::new();
    for i in 0..N {
        let body = json!({"reads": [format!("us/t2-{i}"), format!("eu/t2-{i}")], "writes": [{"key": format!("us/t2-{i}"), "value": -1}, {"key": format!("eu/t2-{i}"), "value": -1}]});
        s.push(timed(http.post(format!("{us}/v1/txn")).json(&body)).await.0);
    }
    measure(
        "transaction reading and writing both (read two, write two), at us-east",
        s,
    );
    let keys = json!({"keys": ["us/t2-0", "eu/t2-0"]});
    let mut s = Vec::new();
    for _ in 0..N {
        s.push(timed(http.post(format!("{ap}/v1/snapshot")).json(&keys)).await.0);
    }
    measure("snapshot of both at ap-south, read at the homes", s);
    let mut local = keys.clone();
    local["max_staleness_ms"] = json!(5_000);
    let mut s = Vec::new();
    for _ in 0..N {
        let (d, body) = timed(http.post(format!("{ap}/v1/snapshot")).json(&local)).await;
        assert_eq!(body["local"], json!(true), "{body}");
        s.push(d);
    }
    measure("snapshot of both at ap-south, max_staleness_ms = 5000 (local)", s);

    // The tightest bound a snapshot of both keys is served locally at ap-south with.
    let mut sweep = String::new();
    for bound in [100u64, 125, 150, 175, 200, 250, 300, 400] {
        let mut body = keys.clone();
        body["max_staleness_ms"] = json!(bound);
        let mut served_here = 0;
        for _ in 0..100 {
            let (_, answer) = timed(http.post(format!("{ap}/v1/snapshot")).json(&body)).await;
            served_here += usize::from(answer["local"] == json!(true));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        writeln!(sweep, "| {bound} | {served_here}% |").unwrap();
    }

    let mut report = String::from(
        "# Transactions: latency bench\n\n\
         The cluster of `docs/benchmarks-regions.md`: three `geosaga region` processes on\n\
         loopback, a TCP proxy on every link injecting one-way latency: us-east to eu-west 40 ms,\n\
         us-east to ap-south 100 ms, eu-west to ap-south 80 ms; `quorum = \"quorum\"`,\n\
         `closed_ts_interval_ms = 50`, `max_clock_offset_ms = 10`, SQLite with\n\
         `synchronous=FULL`. 30 samples each, sequential, from a client next to the region it\n\
         calls.\n\nProduced by:\n\n```sh\n",
    );
    report.push_str(if cfg!(debug_assertions) {
        "cargo test -p geosaga --test regions_txn_bench -- --ignored --nocapture   # a debug build\n```\n\n"
    } else {
        "cargo test --release -p geosaga --test regions_txn_bench -- --ignored --nocapture\n```\n\n"
    });
    report.push_str("| measurement | p50 ms | p99 ms |\n|---|---|---|\n");
    for (label, p50, p99) in &rows {
        writeln!(report, "| {label} | {p50:.1} | {p99:.1} |").unwrap();
    }
    report.push_str(
        "\nThe tightest staleness bound: a snapshot of `us/t2-0` and `eu/t2-0` asked of ap-south\n\
         100 times per bound (3 ms apart); the share served from ap-south's own copies (the rest\n\
         went to the homes):\n\n| max_staleness_ms | served locally |\n|---|---|\n",
    );
    report.push_str(&sweep);
    report.push_str(READING);
    print!("{report}");
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks-transactions.md"),
        report,
    )
    .unwrap();
}
