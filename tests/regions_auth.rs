//! Who may call a region, black-box over real TLS: three `geosaga region` processes with
//! certificates from `geosaga region certs`, and a `geosaga serve` coordinator whose region
//! steps reach them with the cluster CA and a client certificate of its own.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::http::{get, post};
use support::process::GeosagaProcess;
use support::regions::{Cluster, NAMES, tls_client};

const SETTINGS: &str = "quorum = \"quorum\"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\n\
                        max_clock_offset_ms = 10\n";

fn certs(out: &Path, names: &str) {
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["region", "certs", "--out", out.to_str().unwrap(), "--regions", names])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
}

/// A coordinator whose region steps go to the TLS `cluster`, trusting `certs/ca.pem` and
/// presenting `certs/coordinator.pem`, with `extra` flags.
async fn coordinator(dir: &Path, cluster: &Cluster, certs: &Path, extra: &[&str]) -> GeosagaProcess {
    let mut args: Vec<String> = vec![
        "--region-ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--region-cert".into(),
        certs.join("coordinator.pem").display().to_string(),
        "--region-key".into(),
        certs.join("coordinator.key").display().to_string(),
    ];
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        args.push("--region".into());
        args.push(format!("{name}={}", region.url));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let db = dir.join("geosaga.db");
    GeosagaProcess::start(db.to_str().unwrap(), &args, dir.join("coordinator.log")).await
}

/// A transfer between regions: a debit at us-east, a credit at eu-west, and a last step
/// that fails for an amount over 50 (so that the first two are undone).
fn transfer() -> Value {
    let region = |doc: Value| json!({"region": doc});
    json!({
        "name": "move",
        "defaults": {"retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 500}},
        "steps": [
            {"name": "debit", "action": region(json!({"op": "add", "key": "us/alice", "path": "/balance",
                "delta": "-{{input.amount}}", "min": 0}))},
            {"name": "credit", "action": region(json!({"op": "add", "key": "eu/bob", "path": "/balance",
                "delta": "{{input.amount}}"}))},
            {"name": "check", "action": region(json!({"op": "add", "key": "checks/{{saga.id}}",
                "delta": "{{input.amount}}", "max": 50}))}
        ]
    })
}

/// A strong read of `key` through `url`, with `client`.
async fn balance(client: &reqwest::Client, url: &str, key: &str) -> Value {
    let r = client.get(format!("{url}/v1/kv/{key}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["value"]["balance"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_sagas_run_through_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,coordinator");
    let cluster = Cluster::start_tls(dir.path(), SETTINGS, 2, &ours).await;
    let client = tls_client(&ours, Some("coordinator"));
    let us = cluster.regions[0].url.clone();
    for (key, balance) in [("us/alice", 100), ("eu/bob", 0)] {
        let r = client
            .put(format!("{us}/v1/kv/{key}"))
            .json(&json!({"value": {"balance": balance}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let coordinator = coordinator(dir.path(), &cluster, &ours, &[]).await;
    let (status, answer) = post(&coordinator.url, "/v1/definitions", transfer()).await;
    assert_eq!(status, 201, "{answer}");
    let (status, done) = post(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "move", "input": {"amount": 30}}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed", "{done}\n{}", coordinator.log_text());
    let (status, undone) = post(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "move", "input": {"amount": 60}}),
    )
    .await;
    assert_eq!(status, 201, "{undone}");
    // 60 passes the debit's bound but not the check's: the debit and credit are undone.
    assert_eq!(undone["status"], "compensated", "{undone}");
    assert_eq!(balance(&client, &us, "us/alice").await, 70);
    assert_eq!(balance(&client, &us, "eu/bob").await, 30);
    let (_, page) = get(&coordinator.url, "/v1/sagas").await;
    assert!(page.to_string().contains("completed"), "{page}");
}
