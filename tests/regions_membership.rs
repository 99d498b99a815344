//! Membership and failure detection, black-box: a fourth `geosaga region` joins a running
//! three-region cluster through one member, and a region killed with SIGKILL is marked down
//! by the others and up again after its restart.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::regions::Cluster;
use testkit::http::JsonAnswer;
use testkit::http::{self, get};
use testkit::process::GeosagaProcess;

const SETTINGS: &str = "quorum = \"quorum\"\nstrong_timeout_ms = 800\nclosed_ts_interval_ms = 50\n\
                        max_clock_offset_ms = 10\nheartbeat_interval_ms = 100\nsuspect_after_ms = 400\n\
                        down_after_ms = 1200\nanti_entropy_interval_ms = 300\n";

/// Polls `path` at `url` until `done` holds for its answer (generous deadline: 30 s).
async fn eventually(url: &str, path: &str, logs: impl Fn() -> String, done: impl Fn(u16, &Value) -> bool) -> Value {
    http::eventually(url, path, Duration::from_secs(30), logs, done).await
}

fn entry<'a>(regions: &'a Value, name: &str) -> Option<&'a Value> {
    regions.as_array()?.iter().find(|r| r["name"] == name)
}

fn state_of(regions: &Value, name: &str) -> Option<String> {
    entry(regions, name)
        .and_then(|r| r["state"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_region_joins_through_one_member_and_every_region_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();

    // Written (and truncated from us-east's log) before sa-east exists: sa-east gets it
    // through anti-entropy, and serves it from its own copy once that repaired the gap.
    let before: Value = reqwest::Client::new()
        .put(format!("{}/v1/kv/us/before-join", urls[0]))
        .json(&json!({"value": 1, "consistency": "async"}))
        .json_answer()
        .await;

    // sa-east's file names only itself; it learns the cluster through eu-west (--join).
    let port = support::regions::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("sa-east.toml");
    std::fs::write(
        &config,
        format!(
            "[[regions]]\nname = \"sa-east\"\naddress = \"{url}\"\ndata = \"{}\"\n",
            dir.path().join("sa-east.db").display()
        ),
    )
    .unwrap();
    let args = [
        "region",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "sa-east",
        "--join",
        &urls[1],
    ]
    .map(String::from)
    .to_vec();
    let mut joiner = GeosagaProcess::launch(args, Vec::new(), dir.path().join("sa-east.log"), url.clone());
    joiner.wait_ready().await;
    let logs = || format!("{}==== sa-east\n{}", cluster.logs(), joiner.log_text());

    // Every region lists the four members, each up, sa-east as a replica-only member.
    for u in urls.iter().chain([&url]) {
        let regions = eventually(u, "/v1/regions", logs, |s, b| {
            s == 200
                && b.as_array().is_some_and(|rs| rs.len() == 4)
                && ["us-east", "eu-west", "ap-south", "sa-east"]
                    .iter()
                    .all(|n| state_of(b, n).as_deref() == Some("up"))
        })
        .await;
        let sa = entry(&regions, "sa-east").unwrap();
        assert_eq!(sa["role"], "replica", "{regions}");
        assert_eq!(entry(&regions, "us-east").unwrap()["role"], "voter", "{regions}");
    }
    // us-east and ap-south did not see the join: they learned it by gossip.
    for r in [&cluster.regions[0], &cluster.regions[2]] {
        let log = r.log_text();
        assert!(
            log.contains("learned a member") && log.contains("sa-east"),
            "{} log: {log}",
            r.name
        );
    }

    // Placement did not move: keys hashed anywhere still have the same home everywhere.
    for key in ["k1", "k2", "k3", "k4", "k5", "k6"] {
        let (_, at_us) = get(&urls[0], &format!("/v1/placement/{key}")).await;
        let (_, at_sa) = get(&url, &format!("/v1/placement/{key}")).await;
        assert_eq!(at_us["home_region"], at_sa["home_region"], "{key}");
        assert_ne!(at_sa["home_region"], "sa-east");
    }

    // The new member receives the log: an async write at us-east is served by sa-east's copy.
    let written: Value = reqwest::Client::new()
        .put(format!("{}/v1/kv/us/after-join", urls[0]))
        .json(&json!({"value": 42, "consistency": "async"}))
        .json_answer()
        .await;
    let local = eventually(
        &url,
        "/v1/kv/us/after-join?consistency=bounded_staleness&max_staleness_ms=60000",
        logs,
        |s, b| s == 200 && b["version"] == written["version"] && b["served_by"] == "sa-east",
    )
    .await;
    assert_eq!(local["served_by"], "sa-east", "{local}");
    let old = eventually(
        &url,
        "/v1/kv/us/before-join?consistency=bounded_staleness&max_staleness_ms=600000&allow_stale=true",
        logs,
        |s, b| s == 200 && b["version"] == before["version"] && b["served_by"] == "sa-east",
    )
    .await;
    assert_eq!(old["served_by"], "sa-east", "{old}");
    // A strong write sent to sa-east is forwarded to the key's home.
    let r = reqwest::Client::new()
        .put(format!("{url}/v1/kv/eu/via-sa"))
        .json(&json!({"value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["home_region"], "eu-west", "{w}");

    // The membership is durable: sa-east restarts while its bootstrap (eu-west) is down,
    // and us-east, restarted, lists sa-east at once from its file.
    let mut cluster = cluster;
    cluster.regions[1].kill();
    joiner.restart().await;
    cluster.regions[1].restart().await;
    cluster.regions[0].restart().await;
    let (_, regions) = get(&urls[0], "/v1/regions").await;
    assert!(entry(&regions, "sa-east").is_some(), "{regions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_region_is_marked_down_then_up_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let logs = |c: &Cluster| c.logs();
    for u in &urls {
        eventually(
            u,
            "/v1/regions",
            || logs(&cluster),
            |_, b| {
                ["us-east", "eu-west", "ap-south"]
                    .iter()
                    .all(|n| state_of(b, n).as_deref() == Some("up"))
            },
        )
        .await;
    }

    cluster.regions[2].kill();
    for u in &urls[..2] {
        let regions = eventually(
            u,
            "/v1/regions",
            || logs(&cluster),
            |_, b| state_of(b, "ap-south").as_deref() == Some("down"),
        )
        .await;
        let ap = entry(&regions, "ap-south").unwrap();
        assert!(ap["last_heartbeat_ms_ago"].as_u64().unwrap() >= 1_200, "{ap}");
        assert_eq!(state_of(&regions, "us-east").as_deref(), Some("up"), "{regions}");
        assert_eq!(state_of(&regions, "eu-west").as_deref(), Some("up"), "{regions}");
    }
    let log = cluster.regions[0].log_text();
    assert!(
        log.contains("region state changed") && log.contains("Down"),
        "the change is logged: {log}"
    );

    cluster.regions[2].restart().await;
    for u in &urls {
        eventually(
            u,
            "/v1/regions",
            || logs(&cluster),
            |_, b| state_of(b, "ap-south").as_deref() == Some("up"),
        )
        .await;
    }
}
