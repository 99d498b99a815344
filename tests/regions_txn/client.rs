//! The Rust client against three regions.

use serde_json::{Value, json};

use crate::support::regions::Cluster;
use crate::{LATENCY_MS, SETTINGS};

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
