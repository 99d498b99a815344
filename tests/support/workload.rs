//! The workload of the crash tests: many sagas started over HTTP through coordinators that
//! may be dead at any moment, then checked against what the participant saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use testkit::participant::Participant;

/// Registers the definition through the first coordinator that answers.
pub async fn register(urls: &[String], definition: &Value) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        for url in urls {
            if let Ok(r) = client
                .post(format!("{url}/v1/definitions"))
                .json(definition)
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not register the definition");
}

/// Starts `n` sagas (every `fail_every`th one meant to fail at step c), `concurrency` at a
/// time, each with its own idempotency key so that a retry after a crash is harmless.
/// Returns saga id -> whether it was meant to fail.
pub async fn start_sagas(urls: Vec<String>, n: usize, fail_every: usize, concurrency: usize) -> HashMap<String, bool> {
    start_sagas_keyed(urls, n, fail_every, concurrency, "crash").await
}

/// [`start_sagas`] with idempotency keys `<prefix>-<i>`: sagas apart from those of another
/// call.
pub async fn start_sagas_keyed(
    urls: Vec<String>,
    n: usize,
    fail_every: usize,
    concurrency: usize,
    prefix: &'static str,
) -> HashMap<String, bool> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut started = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return started;
                }
                let fail = i % fail_every == 0;
                let body =
                    json!({"definition": "crashy", "input": {"fail": fail}, "idempotency_key": format!("{prefix}-{i}")});
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut attempt = worker;
                let id = loop {
                    let url = &urls[attempt % urls.len()];
                    attempt += 1;
                    match client.post(format!("{url}/v1/sagas")).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            let saga: Value = r.json().await.unwrap();
                            break saga["id"].as_str().unwrap().to_owned();
                        }
                        _ => {
                            assert!(Instant::now() < deadline, "saga {i} could not be started");
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                };
                started.push((id, fail));
            }
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), n, "every start returned a distinct saga");
    all
}

/// Waits until every saga is settled (at most `limit`); returns id -> status.
pub async fn wait_settled(urls: &[String], ids: &HashMap<String, bool>, limit: Duration) -> HashMap<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut settled = HashMap::new();
    let mut round = 0;
    while settled.len() < ids.len() {
        for id in ids
            .keys()
            .filter(|id| !settled.contains_key(*id))
            .cloned()
            .collect::<Vec<_>>()
        {
            let url = &urls[round % urls.len()];
            if let Ok(r) = client.get(format!("{url}/v1/sagas/{id}")).send().await
                && r.status().is_success()
            {
                let saga: Value = r.json().await.unwrap();
                let status = saga["status"].as_str().unwrap().to_owned();
                if matches!(status.as_str(), "completed" | "compensated" | "stuck") {
                    settled.insert(id, status);
                }
            }
        }
        round += 1;
        if settled.len() < ids.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} sagas did not settle",
                ids.len() - settled.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    settled
}

/// Checks every saga against the participant; panics with every violation found.
pub fn check(participant: &Participant, ids: &HashMap<String, bool>, settled: &HashMap<String, String>) {
    let violations: Vec<String> = ids
        .iter()
        .filter_map(|(id, fail)| participant.check(id, &settled[id], *fail).err())
        .collect();
    assert!(
        violations.is_empty(),
        "{} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    let ledger = participant.ledger.lock().unwrap();
    assert!(
        ledger.overlaps.is_empty(),
        "a step ran twice at once: {:?}",
        ledger.overlaps
    );
}

/// How many requests the participant got beyond one per key: work re-done after crashes.
pub fn repeated_requests(participant: &Participant) -> u32 {
    participant
        .ledger
        .lock()
        .unwrap()
        .requests
        .values()
        .map(|n| n - 1)
        .sum()
}
