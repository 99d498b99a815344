//! A region restored from a backup rejoins its peers without losing or hiding a write, seen
//! from outside three `geosaga region` processes: load, `geosaga region backup` of us-east
//! while it runs, more writes, SIGKILL, `geosaga region restore`, restart. Every strong
//! write acknowledged (before or after the backup) is then readable at its home and in
//! every region's own copy, counters add up everywhere, and writes after the restore reach
//! every peer through the log: the restored log's new sequence numbers are not taken for
//! the lost incarnation's (periodic anti-entropy is off, so the log alone must deliver
//! them; only the gap the restore announces runs a round).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::regions::{Cluster, geosaga_cli};
use testkit::http::{self, get, post, put};

const SETTINGS: &str = "quorum = \"quorum\"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\n\
    max_clock_offset_ms = 10\nanti_entropy_interval_ms = 0\n";

/// Strong writes of `us/k0..us/k{n}` (homed at us-east) through `url`, each value naming
/// `round`; returns what was acknowledged.
async fn write_round(url: &str, n: usize, round: &str, acked: &mut BTreeMap<String, Value>) {
    for i in 0..n {
        let key = format!("us/k{i}");
        let value = json!({"round": round, "i": i});
        let (status, body) = put(url, &key, json!({"value": value})).await;
        assert_eq!(status, 200, "{key}: {body}");
        acked.insert(key, value);
    }
}

async fn increment(url: &str, by: i64) {
    let (status, body) = post(url, "/v1/counters/us/visits", json!({"increment": by})).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until us-east has shipped every entry to both peers.
async fn shipped(cluster: &Cluster) {
    http::eventually(
        &cluster.regions[0].url,
        "/v1/regions",
        Duration::from_secs(20),
        || cluster.logs(),
        |s, b| {
            s == 200
                && b.as_array().is_some_and(|regions| {
                    regions
                        .iter()
                        .filter(|r| r["is_self"] == false)
                        .all(|r| r["unacked_entries"] == 0)
                })
        },
    )
    .await;
}

/// Every region's own copy, and the home, hold every acknowledged value; the counter adds
/// up to `total` everywhere.
async fn converged(cluster: &Cluster, acked: &BTreeMap<String, Value>, total: i64) {
    for (key, value) in acked {
        let (status, body) = get(&cluster.regions[0].url, &format!("/v1/kv/{key}")).await;
        assert_eq!(
            (status, &body["value"]),
            (200, value),
            "strong read of {key} at its home: {body}"
        );
        for region in &cluster.regions {
            let name = region.name.clone();
            let local = format!("/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=600000");
            http::eventually(
                &region.url,
                &local,
                Duration::from_secs(30),
                || cluster.logs(),
                |s, b| s == 200 && b["served_by"] == name.as_str() && b["value"] == *value,
            )
            .await;
        }
    }
    for region in &cluster.regions {
        http::eventually(
            &region.url,
            "/v1/counters/us/visits",
            Duration::from_secs(30),
            || cluster.logs(),
            |s, b| s == 200 && b["value"] == total,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_region_loses_no_acknowledged_write_and_its_new_log_reaches_every_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, 0).await;
    let us = cluster.regions[0].url.clone();
    let eu = cluster.regions[1].url.clone();
    let mut acked = BTreeMap::new();

    // Load, then a backup of us-east while it runs.
    write_round(&eu, 20, "before", &mut acked).await;
    increment(&us, 5).await;
    let store = dir.path().join("us-east.db");
    let backup = dir.path().join("us-east.backup");
    let said = geosaga_cli(&[
        "region",
        "backup",
        "--database",
        store.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);
    assert!(said.contains("new log incarnation"), "{said}");

    // More writes, which the backup does not hold: overwrites and new keys, through both
    // the home and a peer, and increments of us-east's counter component.
    write_round(&us, 30, "after-backup", &mut acked).await;
    increment(&us, 7).await;
    increment(&eu, 1).await;
    shipped(&cluster).await;
    cluster.regions[0].kill();

    let said = geosaga_cli(&[
        "region",
        "restore",
        backup.to_str().unwrap(),
        "--database",
        store.to_str().unwrap(),
        "--force",
    ]);
    assert!(said.contains("takes its later writes back"), "{said}");
    cluster.regions[0].restart().await;
    let log = cluster.regions[0].log_text();
    assert!(log.contains("new incarnation"), "{log}");
    assert!(log.contains("every peer handed back our writes"), "{log}");
    converged(&cluster, &acked, 13).await;

    // The new incarnation's entries reach every peer by the log.
    write_round(&us, 10, "after-restore", &mut acked).await;
    for i in 0..5 {
        let key = format!("us/new{i}");
        let (status, body) = put(&us, &key, json!({"value": i})).await;
        assert_eq!(status, 200, "{body}");
        acked.insert(key, json!(i));
    }
    increment(&us, 100).await;
    converged(&cluster, &acked, 113).await;
    let logs = cluster.logs();
    assert!(
        !logs.contains("request failed"),
        "a region logged a server error:\n{logs}"
    );
}
