//! Region steps over TLS with tokens: a `geosaga serve` coordinator, and `geosaga dev`
//! pointed at the cluster.

use std::path::Path;

use serde_json::{Value, json};
use testkit::free_port;
use testkit::http::{get, post};
use testkit::process::GeosagaProcess;

use super::support::regions::{Cluster, NAMES, tls_client};
use super::{READ, WRITE, certs, settings};

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
        "--region-token".into(),
        WRITE.into(),
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
    let r = client
        .get(format!("{url}/v1/kv/{key}"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["value"]["balance"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_sagas_run_through_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,coordinator");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 2, &ours).await;
    let client = tls_client(&ours, Some("coordinator"));
    let us = cluster.regions[0].url.clone();
    for (key, balance) in [("us/alice", 100), ("eu/bob", 0)] {
        let r = client
            .put(format!("{us}/v1/kv/{key}"))
            .bearer_auth(WRITE)
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

/// `geosaga dev` pointed at a TLS cluster that wants tokens (`--region` with the same
/// `--region-ca`, `--region-cert`/`--region-key` and `--region-token` as `serve`): it starts
/// no regions of its own, and its `transfer_regions` example moves money across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn geosaga_dev_runs_region_sagas_on_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,coordinator");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 2, &ours).await;
    let client = tls_client(&ours, None);
    let us = cluster.regions[0].url.clone();
    for (key, balance) in [("us/alice", 1000), ("eu/bob", 0)] {
        let r = client
            .put(format!("{us}/v1/kv/{key}"))
            .bearer_auth(WRITE)
            .json(&json!({"value": {"balance": balance}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let (api, demo) = (free_port(), free_port());
    let path = |name: &str| ours.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--listen".into(),
        format!("127.0.0.1:{api}"),
        "--demo-listen".into(),
        format!("127.0.0.1:{demo}"),
        "--data-dir".into(),
        dir.path().join("dev").display().to_string(),
        "--region-ca".into(),
        path("ca.pem"),
        "--region-cert".into(),
        path("coordinator.pem"),
        "--region-key".into(),
        path("coordinator.key"),
        "--region-token".into(),
        WRITE.into(),
    ];
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        args.push("--region".into());
        args.push(format!("{name}={}", region.url));
    }
    let dev = GeosagaProcess::launch(
        args,
        Vec::new(),
        dir.path().join("dev.log"),
        format!("http://127.0.0.1:{api}"),
    );
    dev.wait_ready().await;
    let (status, done) = post(
        &dev.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "transfer_regions", "input": {"from": "us/alice", "to": "eu/bob", "amount": 300}}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed", "{done}\n{}", dev.log_text());
    assert_eq!(balance(&client, &us, "us/alice").await, 700);
    assert_eq!(balance(&client, &us, "eu/bob").await, 300);
    // It started no regions of its own: its welcome lists the cluster's.
    let log = dev.log_text();
    assert!(log.contains("Region steps go to your regions"), "{log}");
    assert!(!dir.path().join("dev/region-us-east.db").exists());
}
