//! Uncertain outcomes, with real processes and real HTTP: `geosaga dev` runs the coordinator
//! and the demo participant, whose account `slow` applies a credit at once but answers
//! after the step's time limit, on every attempt. The coordinator cannot know that the
//! credit happened: the step ends possibly applied and is compensated like a succeeded one,
//! and the participant's books balance (issue #18 measured 130 where there should be 100).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::process::GeosagaProcess;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_applied_but_answered_too_late_is_compensated_and_the_books_balance() {
    let dir = tempfile::tempdir().unwrap();
    let (api, demo) = (free_port(), free_port());
    let args = [
        "dev",
        "--no-regions",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--demo-listen",
        &format!("127.0.0.1:{demo}"),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let dev = GeosagaProcess::launch(
        args,
        Vec::new(),
        dir.path().join("dev.log"),
        format!("http://127.0.0.1:{api}"),
    );
    dev.wait_ready().await;
    let demo = format!("http://127.0.0.1:{demo}");
    let client = reqwest::Client::new();
    // The examples are registered just after the API is ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let saga: Value = loop {
        let r = client
            .post(format!("{}/v1/sagas?wait_ms=60000", dev.url))
            .json(&json!({"definition": "transfer", "input": {"from": "alice", "to": "slow", "amount": 30}}))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break r.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no transfer started: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(saga["status"], "compensated", "{saga:#}\n{}", dev.log_text());
    let [debit, credit, notify] = [0, 1, 2].map(|i| &saga["steps"][i]);
    assert_eq!(debit["status"], "compensated", "{saga:#}");
    assert_eq!(
        credit["status"], "compensated",
        "the credit may have been applied: {saga:#}"
    );
    assert_eq!(credit["outcome_unknown"], true, "{saga:#}");
    assert_eq!(credit["output"], Value::Null);
    assert_eq!(credit["error"]["kind"], "timeout", "{saga:#}");
    assert_eq!(credit["attempts"], 3, "every attempt timed out: {saga:#}");
    assert_eq!(notify["status"], "not_run");

    // The participant applied the credit (once) and the coordinator undid it: the books
    // are as they were.
    let books = get(&format!("{demo}/payment/balances")).await;
    assert_eq!(books, json!({"alice": 1000.0, "slow": 1000.0}), "{saga:#}");

    let id = saga["id"].as_str().unwrap();
    let events = get(&format!("{}/v1/sagas/{id}/events", dev.url)).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"step_outcome_unknown"), "{kinds:?}");
    let metrics = client
        .get(format!("{}/metrics", dev.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"geosaga_step_duration_seconds_count{definition="transfer",step="credit",outcome="possibly_applied"} 1"#
        ),
        "{metrics}"
    );
}
