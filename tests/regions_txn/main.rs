//! Transactions across three `geosaga region` processes (proxies with latency between
//! them): a bank in the style of Jepsen's under SIGKILL and SIGSTOP, and single-key
//! histories beside it (`bank.rs`); a gateway that dies at each point of the commit
//! protocol and a home that refuses a staged commit (`commit_faults.rs`); a home restored
//! from a backup taken before a transaction prepared (`restore.rs`); the Rust client
//! (`client.rs`); and write skew (two on-call doctors, here).

#[path = "../support/mod.rs"]
mod support;

mod bank;
mod client;
mod commit_faults;
mod restore;

use serde_json::{Value, json};
use support::regions::Cluster;

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 1000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";
const LATENCY_MS: u64 = 5;

fn problem_type(body: &Value) -> String {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://geosaga.dev/problems/")
        .to_owned()
}

/// `POST url path body`: the status and the JSON answer (`None`: no answer).
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Option<(u16, Value)> {
    let r = http.post(url).json(body).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// Begins a transaction at `base`; its id.
async fn begin(http: &reqwest::Client, base: &str) -> Option<String> {
    match post(http, &format!("{base}/v1/txns"), &json!({})).await? {
        (201, body) => Some(body["id"].as_str().unwrap().to_owned()),
        _ => None,
    }
}

/// Reads `key` in transaction `id` at `base`: `Some(None)` when absent, `None` on failure.
async fn txn_get(http: &reqwest::Client, base: &str, id: &str, key: &str) -> Option<Option<Value>> {
    let r = http.get(format!("{base}/v1/txns/{id}/kv/{key}")).send().await.ok()?;
    match r.status().as_u16() {
        200 => Some(Some(r.json::<Value>().await.ok()?["value"].clone())),
        404 => Some(None),
        _ => None,
    }
}

async fn txn_put(http: &reqwest::Client, base: &str, id: &str, key: &str, value: Value) -> bool {
    let r = http
        .put(format!("{base}/v1/txns/{id}/kv/{key}"))
        .json(&json!({ "value": value }))
        .send()
        .await;
    r.is_ok_and(|r| r.status().as_u16() == 204)
}

/// Two doctors on call, in two regions; each, in a transaction begun at a different
/// region, goes off call if the other is still on. Serializable: never both off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_doctors_never_both_go_off_call() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let doctors = ["us/alice", "eu/bob"];
    let mut one_went = 0;
    for round in 0..15 {
        let reset = json!({"writes": doctors.map(|d| json!({"key": d, "value": true}))});
        let (status, body) = post(&http, &format!("{}/v1/txn", urls[2]), &reset).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let go_off = |me: usize| {
            let (http, base) = (http.clone(), urls[me].clone());
            async move {
                let id = begin(&http, &base).await.unwrap();
                let mine = txn_get(&http, &base, &id, doctors[me]).await.unwrap();
                let other = txn_get(&http, &base, &id, doctors[1 - me]).await.unwrap();
                if mine != Some(json!(true)) || other != Some(json!(true)) {
                    return false;
                }
                assert!(txn_put(&http, &base, &id, doctors[me], json!(false)).await);
                let (status, body) = post(&http, &format!("{base}/v1/txns/{id}/commit"), &json!({}))
                    .await
                    .unwrap();
                match status {
                    200 => true,
                    409 => {
                        assert_eq!(problem_type(&body), "txn-conflict", "{body}");
                        false
                    }
                    other => panic!("round {round}: commit answered {other}: {body}"),
                }
            }
        };
        let (a, b) = tokio::join!(go_off(0), go_off(1));
        assert!(!(a && b), "round {round}: both doctors went off call");
        let now = snapshot_of(&http, &urls[1], &doctors).await;
        assert!(now.contains(&json!(true)), "round {round}: nobody on call: {now:?}");
        assert_eq!(now.iter().filter(|v| **v == json!(false)).count(), usize::from(a || b));
        one_went += usize::from(a || b);
    }
    assert!(one_went > 0, "in 15 rounds no doctor ever went off call");
}

async fn snapshot_of(http: &reqwest::Client, base: &str, keys: &[&str]) -> Vec<Value> {
    let (status, body) = post(http, &format!("{base}/v1/snapshot"), &json!({ "keys": keys }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    keys.iter().map(|k| body["values"][k]["value"].clone()).collect()
}
