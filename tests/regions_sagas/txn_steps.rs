//! A transaction step commits once although the coordinator dies between the commit and
//! its record, and its compensating transaction undoes it once.

use super::*;

/// A transfer as one transaction step (the debit and the credit commit together), then a
/// check that fails for an amount over 100 (so the transaction is undone by its automatic
/// compensating transaction).
fn txn_definition() -> Value {
    json!({
        "name": "txn-move",
        "defaults": {"retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 500},
                     "compensation_retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 500}},
        "steps": [
            {"name": "move", "action": {"txn": {"reads": ["{{input.to}}"], "writes": [
                {"op": "add", "key": "{{input.from}}", "path": "/balance", "delta": "-{{input.amount}}", "min": 0},
                {"op": "add", "key": "{{input.to}}", "path": "/balance", "delta": "{{input.amount}}"}
            ]}}},
            {"name": "check", "action": {"region": {"op": "add", "key": "checks/{{saga.id}}",
                "delta": "{{input.amount}}", "max": 100}}}
        ]
    })
}

async fn balance(cluster: &Cluster, key: &str) -> i64 {
    let (status, body) = read(&home_url(cluster, key), key).await;
    assert_eq!(status, 200, "{key}: {body}");
    body["value"]["balance"].as_i64().unwrap()
}

/// Runs a `txn-move` saga to its end; returns it.
async fn txn_move(setup: &Setup, input: Value) -> Value {
    let (_, saga) = start_and_settle_definition(&setup.coordinator.url, "txn-move", input).await;
    saga
}

/// A transaction step commits once: the coordinator aborts right after the regions
/// committed the step's transaction and before it recorded the step; restarted, it runs
/// the step again under the same op id, which the regions answer with the first commit
/// (`replayed`, with the reads as they were). A saga whose last step fails has its
/// transaction undone once by the compensating transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_step_commits_once_across_a_coordinator_crash() {
    let mut setup = setup(&[]).await;
    seed(&setup.cluster).await;
    workload::register(&[setup.coordinator.url.clone()], &txn_definition()).await;
    setup
        .coordinator
        .set_env(coordinator::runner::region::CRASH_AFTER_TXN, Some("move"));
    setup.coordinator.restart().await;
    let input = json!({"from": "us/a0", "to": "eu/b0", "amount": 30});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/sagas", setup.coordinator.url))
        .json(&json!({"definition": "txn-move", "input": input}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !setup.coordinator.exited() {
        assert!(
            Instant::now() < deadline,
            "the coordinator did not abort after the commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        setup
            .coordinator
            .log_text()
            .contains("between the commit and its record")
    );
    // Committed, not recorded: the debit and the credit are there once.
    assert_eq!(balance(&setup.cluster, "us/a0").await, INITIAL - 30);
    setup
        .coordinator
        .set_env(coordinator::runner::region::CRASH_AFTER_TXN, None);
    setup.coordinator.restart().await;
    let keyed = HashMap::from([(id.clone(), false)]);
    workload::wait_settled(&[setup.coordinator.url.clone()], &keyed, Duration::from_secs(60)).await;
    let saga: Value = reqwest::get(format!("{}/v1/sagas/{id}", setup.coordinator.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saga["status"], "completed", "{saga}");
    let output = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "move")
        .map(|s| s["output"].clone())
        .unwrap();
    assert_eq!(output["replayed"], true, "{saga}");
    assert_eq!(output["reads"]["eu/b0"]["value"]["balance"], INITIAL, "{output}");
    assert_eq!(balance(&setup.cluster, "us/a0").await, INITIAL - 30);
    assert_eq!(balance(&setup.cluster, "eu/b0").await, INITIAL + 30);

    // Over 100: the check fails and the transfer is undone, once.
    let saga = txn_move(&setup, json!({"from": "eu/b0", "to": "ap/c0", "amount": 120})).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(balance(&setup.cluster, "eu/b0").await, INITIAL + 30);
    assert_eq!(balance(&setup.cluster, "ap/c0").await, INITIAL);
    // A debit past the floor: refused, nothing applied, nothing to undo.
    let saga = txn_move(&setup, json!({"from": "ap/c1", "to": "us/a1", "amount": INITIAL + 1})).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(saga["steps"][0]["status"], "failed", "{saga}");
    assert_eq!(saga["steps"][0]["compensation"]["status"], "not_needed", "{saga}");
    assert_eq!(balance(&setup.cluster, "ap/c1").await, INITIAL);
    assert_eq!(balance(&setup.cluster, "us/a1").await, INITIAL);
}
