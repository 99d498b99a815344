//! A gateway killed at each point of the commit protocol, and a home that refuses a staged
//! commit's prepare.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::regions::{Cluster, PREFIXES};
use crate::{LATENCY_MS, SETTINGS, begin, post, problem_type, snapshot_of, txn_put};

/// A gateway (us-east) that dies at each point of the commit of a transaction writing a
/// key in every region: all of it or nothing becomes visible, for good, and the keys are
/// free for the next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_at_each_point_of_a_commit_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    // Staged alone: another home never prepared, so a recovery stops it and aborts. Every
    // home prepared: committed, though the record still said staging.
    for (point, applied) in [
        ("staged", false),
        ("prepared", true),
        ("decided", true),
        ("resolved-one", true),
    ] {
        let keys: Vec<String> = PREFIXES.iter().map(|p| format!("{p}crash-{point}")).collect();
        cluster.regions[0].set_env(regions::gateway::CRASH_AT, Some(point));
        cluster.regions[0].restart().await;
        let id = begin(&http, &urls[0]).await.unwrap();
        for k in &keys {
            assert!(txn_put(&http, &urls[0], &id, k, json!(point)).await);
        }
        let answer = post(&http, &format!("{}/v1/txns/{id}/commit", urls[0]), &json!({})).await;
        assert!(answer.is_none(), "{point}: the gateway answered {answer:?}");
        for _ in 0..100 {
            if cluster.regions[0].exited() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cluster.regions[0].exited(), "{point}: the gateway did not die");
        cluster.regions[0].set_env(regions::gateway::CRASH_AT, None);
        cluster.regions[0].restart().await;

        // Read at the homes (through another region) until the outcome is visible; the
        // intents expire after 5 s at most.
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let expected = if applied { json!(point) } else { Value::Null };
        let mut seen = Vec::new();
        for _ in 0..150 {
            let body = post(&http, &format!("{}/v1/snapshot", urls[1]), &json!({ "keys": refs })).await;
            if let Some((200, body)) = body {
                seen = refs.iter().map(|k| body["values"][k]["value"].clone()).collect();
                assert!(
                    seen.iter().all(|v| *v == seen[0]),
                    "{point}: a snapshot saw part of the transaction: {seen:?}"
                );
                if seen[0] == expected {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen.iter().all(|v| *v == expected),
            "{point}: {seen:?}, expected {expected}"
        );
        // The keys are free again (at the latest once the dead commit's prepare expired): a
        // transaction through the restarted gateway writes them all.
        let writes: Vec<Value> = keys.iter().map(|k| json!({"key": k, "value": "next"})).collect();
        let mut last = None;
        for _ in 0..100 {
            last = post(&http, &format!("{}/v1/txn", urls[0]), &json!({ "writes": writes })).await;
            match &last {
                Some((200, _)) => break,
                Some((409, body)) => assert_eq!(problem_type(body), "txn-conflict", "{body}"),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(matches!(last, Some((200, _))), "{point}: {last:?}");
        // Strong reads at each home agree.
        for k in &keys {
            let r: Value = http
                .get(format!("{}/v1/kv/{k}", urls[2]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["value"], json!("next"), "{point}: {k}: {r}");
        }
    }
}

/// A commit whose record the gateway (us-east) staged while eu-west refused its prepare (a
/// single-key write landed after the snapshot): the gateway decides it at once, telling
/// eu-west never to prepare it, so nothing of it stays and the key at us-east is free for
/// the next transaction straight away rather than once the prepare expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_home_that_refuses_aborts_a_staged_commit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let (us, eu) = (format!("{}staged", PREFIXES[0]), format!("{}staged", PREFIXES[1]));
    let id = begin(&http, &urls[0]).await.unwrap();
    assert!(txn_put(&http, &urls[0], &id, &us, json!("txn")).await);
    assert!(txn_put(&http, &urls[0], &id, &eu, json!("txn")).await);
    let written = http
        .put(format!("{}/v1/kv/{eu}", urls[1]))
        .json(&json!({ "value": "single" }))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);

    let (status, body) = post(&http, &format!("{}/v1/txns/{id}/commit", urls[0]), &json!({}))
        .await
        .unwrap();
    assert_eq!((status, problem_type(&body).as_str()), (409, "txn-conflict"), "{body}");
    assert!(
        body.to_string().contains(&eu),
        "the conflict names eu-west's key: {body}"
    );
    // A staged intent left at us-east would refuse this prepare for 5 s.
    let next = post(
        &http,
        &format!("{}/v1/txn", urls[0]),
        &json!({ "writes": [{"key": us, "value": "next"}] }),
    )
    .await;
    assert!(matches!(next, Some((200, _))), "{next:?}");
    let seen = snapshot_of(&http, &urls[2], &[&us, &eu]).await;
    assert_eq!(seen, vec![json!("next"), json!("single")]);
}
