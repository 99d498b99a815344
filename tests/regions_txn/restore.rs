//! A home restored from a backup taken before a transaction prepared: it takes the
//! transaction's intents back from its peers' copies, so the transaction stays all or
//! nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::regions::{Cluster, PREFIXES, geosaga_cli};
use crate::{LATENCY_MS, SETTINGS, begin, post, txn_put};

/// The gateway (us-east) commits the record of a transaction writing a key in every region
/// and dies before resolving anything; eu-west, which prepared it, loses its disk before its
/// recovery resolved its intent, and is restored from a backup that predates the
/// transaction. The restored eu-west takes its intent back from its peers, and the
/// transaction is applied in every region; no snapshot ever sees part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_restored_from_before_a_prepare_keeps_the_transaction_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let keys: Vec<String> = PREFIXES.iter().map(|p| format!("{p}restored")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Every key holds "before", in the backup of eu-west's store taken while it runs.
    let writes: Vec<Value> = keys.iter().map(|k| json!({"key": k, "value": "before"})).collect();
    let (status, body) = post(&http, &format!("{}/v1/txn", urls[0]), &json!({ "writes": writes }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let store = dir.path().join("eu-west.db");
    let backup = dir.path().join("eu-west.backup");
    geosaga_cli(&[
        "region",
        "backup",
        "--database",
        store.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);

    // The gateway commits the record (every home prepared) and aborts at once.
    cluster.regions[0].set_env(regions::gateway::CRASH_AT, Some("decided"));
    cluster.regions[0].restart().await;
    let id = begin(&http, &urls[0]).await.unwrap();
    for k in &keys {
        assert!(txn_put(&http, &urls[0], &id, k, json!("txn")).await);
    }
    let answer = post(&http, &format!("{}/v1/txns/{id}/commit", urls[0]), &json!({})).await;
    assert!(answer.is_none(), "the gateway answered {answer:?}");
    for _ in 0..100 {
        if cluster.regions[0].exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cluster.regions[0].exited(), "the gateway did not die");

    // eu-west loses its disk well before its recovery loop settles its intent (the prepare
    // expires after 5 s), and comes back from the backup once the gateway is back.
    cluster.regions[1].kill();
    cluster.regions[0].set_env(regions::gateway::CRASH_AT, None);
    cluster.regions[0].restart().await;
    let said = geosaga_cli(&[
        "region",
        "restore",
        backup.to_str().unwrap(),
        "--database",
        store.to_str().unwrap(),
        "--force",
    ]);
    assert!(said.contains("takes its later writes back"), "{said}");
    cluster.regions[1].restart().await;

    // All of it or nothing in every snapshot, until all of it shows.
    let mut seen = Vec::new();
    for _ in 0..150 {
        let body = post(&http, &format!("{}/v1/snapshot", urls[2]), &json!({ "keys": refs })).await;
        if let Some((200, body)) = body {
            seen = refs.iter().map(|k| body["values"][k]["value"].clone()).collect();
            assert!(
                seen.iter().all(|v| *v == seen[0]),
                "a snapshot saw part of the transaction: {seen:?} (keys {refs:?})\n{}",
                cluster.logs()
            );
            if seen[0] == json!("txn") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().all(|v| *v == json!("txn")),
        "the transaction is not applied everywhere: {seen:?} (keys {refs:?})\n{}",
        cluster.logs()
    );
    // Strong reads agree in every region.
    for url in &urls {
        for k in &keys {
            let r: Value = http
                .get(format!("{url}/v1/kv/{k}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["value"], json!("txn"), "{url}: {k}: {r}");
        }
    }
    // It was eu-west's take-back that kept the transaction.
    let log = cluster.regions[1].log_text();
    assert!(
        log.contains("took back our transactions' intents and records"),
        "eu-west's log:\n{log}"
    );
}
