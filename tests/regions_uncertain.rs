//! Uncertain region writes, with real processes: three `geosaga region` processes, a
//! `geosaga serve` coordinator, and TCP proxies that hold a link's requests or answers.
//!
//! - A saga's credit reaches its home and is applied, but every answer is held past the
//!   step's time limit: the step ends possibly applied, its automatic undo runs by op id
//!   once the answers flow again, and both balances are back where they were.
//! - The barrier: an undo that arrives before its write (held on the way) cancels it, and
//!   the write, when it arrives, is refused (`op-cancelled`) and changes nothing; an undo of
//!   an applied write restores what it replaced, once however often it is repeated.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::regions::{Cluster, NAMES, Proxy};
use support::workload;
use testkit::process::GeosagaProcess;

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";

/// Port of a region's URL.
fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A strong write, again while the regions answer 5xx.
async fn put(url: &str, key: &str, value: Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = send(
            reqwest::Client::new()
                .put(format!("{url}/v1/kv/{key}"))
                .json(&json!({"value": value})),
        )
        .await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{key}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn balance(url: &str, key: &str) -> Value {
    let (status, body) = send(reqwest::Client::new().get(format!("{url}/v1/kv/{key}"))).await;
    assert_eq!(status, 200, "{key}: {body}");
    body["value"]["balance"].clone()
}

/// What the key's home recorded for `op_id`: the write it made, or `null`.
async fn op(url: &str, key: &str, op_id: &str) -> Value {
    let (status, body) = send(
        reqwest::Client::new()
            .get(format!("{url}/v1/kv/{key}"))
            .query(&[("op_id", op_id)]),
    )
    .await;
    assert!(status == 200 || status == 404, "{key}: {status} {body}");
    body["op"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_write_applied_but_answered_too_late_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 3).await;
    let (us, eu) = (cluster.regions[0].url.clone(), cluster.regions[1].url.clone());
    put(&us, "us/alice", json!({"balance": 100})).await;
    put(&eu, "eu/bob", json!({"balance": 100})).await;
    // The coordinator reaches eu-west through a proxy whose answers the test holds.
    let slow = Proxy::start(port(&eu)).await;
    let mut args: Vec<String> = ["--region-via", "us-east"].map(String::from).to_vec();
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        let url = if *name == "eu-west" {
            format!("http://127.0.0.1:{}", slow.port)
        } else {
            region.url.clone()
        };
        args.extend(["--region".to_owned(), format!("{name}={url}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let db = dir.path().join("geosaga.db");
    let coordinator = GeosagaProcess::start(db.to_str().unwrap(), &args, dir.path().join("coordinator.log")).await;
    let definition = json!({
        "name": "move",
        "defaults": {
            "timeout_ms": 500,
            "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10},
            "compensation_retry": {"max_attempts": 100, "initial_backoff_ms": 50, "max_backoff_ms": 200}
        },
        "steps": [
            {"name": "debit", "action": {"region": {"op": "add", "key": "us/alice", "path": "/balance", "delta": "-{{input.amount}}", "min": 0}}},
            {"name": "credit", "action": {"region": {"op": "add", "key": "eu/bob", "path": "/balance", "delta": "{{input.amount}}", "via": "eu-west"}}}
        ]
    });
    workload::register(std::slice::from_ref(&coordinator.url), &definition).await;

    slow.hold_answers(true);
    let client = reqwest::Client::new();
    let (status, saga) = send(
        client
            .post(format!("{}/v1/sagas", coordinator.url))
            .json(&json!({"definition": "move", "input": {"amount": 30}})),
    )
    .await;
    assert_eq!(status, 201, "{saga}");
    let id = saga["id"].as_str().unwrap().to_owned();
    // Once the credit's outcome is unknown for good, let the answers through again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, saga) = send(client.get(format!("{}/v1/sagas/{id}", coordinator.url))).await;
        if saga["status"] == "compensating" {
            assert_eq!(saga["steps"][1]["outcome_unknown"], true, "{saga:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the credit never ended possibly applied: {saga:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.hold_answers(false);
    let settled = workload::wait_settled(
        std::slice::from_ref(&coordinator.url),
        &HashMap::from([(id.clone(), false)]),
        Duration::from_secs(60),
    )
    .await;
    let (_, saga) = send(client.get(format!("{}/v1/sagas/{id}", coordinator.url))).await;
    assert_eq!(settled[&id], "compensated", "{saga:#}\n{}", coordinator.log_text());
    assert_eq!(saga["steps"][1]["status"], "compensated", "{saga:#}");
    assert_eq!(saga["steps"][1]["error"]["kind"], "timeout", "{saga:#}");

    // The credit was applied at eu-west (its answer only was late), and the undo undid it.
    let credit = op(&eu, "eu/bob", &format!("{id}:credit:action")).await;
    assert!(credit.is_object(), "the credit reached its home: {credit}");
    let undo = op(&eu, "eu/bob", &format!("{id}:credit:compensation")).await;
    assert!(undo.is_object(), "the undo wrote: {undo}");
    assert_eq!(balance(&eu, "eu/bob").await, 100);
    assert_eq!(balance(&us, "us/alice").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_arrives_after_its_undo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 3).await;
    let (us, eu) = (cluster.regions[0].url.clone(), cluster.regions[1].url.clone());
    put(&eu, "eu/bob", json!({"balance": 100})).await;
    let client = reqwest::Client::new();
    let add = |delta: i64, op_id: &str| json!({"add": {"path": "/balance", "delta": delta}, "op_id": op_id});
    let undo = |of: &str, delta: Option<i64>, op_id: &str| {
        let mut undo = json!({"op_id": of});
        if let Some(d) = delta {
            undo["add"] = json!({"path": "/balance", "delta": d});
        }
        json!({"undo": undo, "op_id": op_id})
    };

    // The write is held on its way to the home; its undo, sent through another region
    // (forwarded), gets there first and cancels it.
    let held = Proxy::start(port(&eu)).await;
    held.hold_requests(true);
    let late = {
        let request = client
            .patch(format!("http://127.0.0.1:{}/v1/kv/eu/bob", held.port))
            .json(&add(30, "s1:credit:action"));
        tokio::spawn(send(request))
    };
    let (status, body) = send(client.patch(format!("{us}/v1/kv/eu/bob")).json(&undo(
        "s1:credit:action",
        Some(-30),
        "s1:credit:compensation",
    )))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["undo"],
        json!({"op_id": "s1:credit:action", "applied": false}),
        "{body}"
    );
    assert_eq!(body["home_region"], "eu-west");
    // Repeated, it says the same.
    let (status, again) = send(client.patch(format!("{eu}/v1/kv/eu/bob")).json(&undo(
        "s1:credit:action",
        Some(-30),
        "s1:credit:compensation",
    )))
    .await;
    assert_eq!((status, &again["undo"]["applied"]), (200, &json!(false)), "{again}");
    held.hold_requests(false);
    let (status, refused) = late.await.unwrap();
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["type"].as_str().unwrap().ends_with("/op-cancelled"),
        "{refused}"
    );
    assert_eq!(balance(&eu, "eu/bob").await, 100, "the late write changed nothing");
    assert_eq!(op(&eu, "eu/bob", "s1:credit:action").await, Value::Null);

    // An applied add is undone by its inverse, once however often the undo comes.
    let (status, body) = send(
        client
            .patch(format!("{eu}/v1/kv/eu/bob"))
            .json(&add(7, "s2:credit:action")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (status, body) = send(client.patch(format!("{eu}/v1/kv/eu/bob")).json(&undo(
            "s2:credit:action",
            Some(-7),
            "s2:credit:compensation",
        )))
        .await;
        assert_eq!((status, &body["undo"]["applied"]), (200, &json!(true)), "{body}");
    }
    assert_eq!(balance(&eu, "eu/bob").await, 100);

    // An applied put is undone by writing back what it replaced (here: nothing, so the key
    // is deleted), but not over someone else's newer write.
    let (status, _) = send(
        client
            .put(format!("{eu}/v1/kv/eu/new"))
            .json(&json!({"value": 1, "op_id": "s3:set:action"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(client.patch(format!("{eu}/v1/kv/eu/new")).json(&undo(
        "s3:set:action",
        None,
        "s3:set:compensation",
    )))
    .await;
    assert_eq!((status, &body["undo"]["applied"]), (200, &json!(true)), "{body}");
    let (status, _) = send(client.get(format!("{eu}/v1/kv/eu/new"))).await;
    assert_eq!(status, 404, "the put's key had no value before it");
    let (status, _) = send(
        client
            .put(format!("{eu}/v1/kv/eu/other"))
            .json(&json!({"value": 1, "op_id": "s4:set:action"})),
    )
    .await;
    assert_eq!(status, 200);
    put(&eu, "eu/other", json!(2)).await;
    let (status, body) = send(client.patch(format!("{eu}/v1/kv/eu/other")).json(&undo(
        "s4:set:action",
        None,
        "s4:set:compensation",
    )))
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["type"].as_str().unwrap().ends_with("/version-mismatch"), "{body}");

    // Bad undos are refused with the path at fault.
    let (status, body) = send(
        client
            .patch(format!("{eu}/v1/kv/eu/bob"))
            .json(&json!({"undo": {"op_id": "x"}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("/op_id"), "{body}");
    let (status, body) = send(client.patch(format!("{eu}/v1/kv/eu/bob")).json(&json!({"op_id": "x"}))).await;
    assert_eq!(status, 422, "{body}");
}
