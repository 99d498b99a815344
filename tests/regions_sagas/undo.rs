//! A compensation that meets someone else's newer write ends `stuck` with the conflict, and
//! does not overwrite it; one that meets none restores the previous value.

use super::*;

/// A participant whose `/hold` answers 422 once the test opens the gate, and whose
/// `/refuse` answers 422 at once.
async fn gate() -> (String, Arc<tokio::sync::watch::Sender<bool>>) {
    let (open, _) = tokio::sync::watch::channel(false);
    let open = Arc::new(open);
    let held = open.clone();
    let app = Router::new()
        .route(
            "/hold",
            post(move || {
                let mut rx = held.subscribe();
                async move {
                    let _ = rx.wait_for(|o| *o).await;
                    (StatusCode::UNPROCESSABLE_ENTITY, "refused")
                }
            }),
        )
        .route(
            "/refuse",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "refused") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, open)
}

fn overwrite_definition(gate: &str) -> Value {
    json!({
        "name": "overwrite",
        "steps": [
            {"name": "set", "action": {"region": {"op": "put", "key": "{{input.key}}", "value": {"by": "saga"}}}},
            {"name": "drop", "action": {"region": {"op": "delete", "key": "{{input.gone}}"}}},
            {"name": "wait", "action": {"http": {"method": "POST", "url": format!("{gate}/{{{{input.path}}}}")}},
             "retry": {"max_attempts": 1}}
        ]
    })
}

async fn start_and_settle(url: &str, input: Value) -> (String, Value) {
    start_and_settle_definition(url, "overwrite", input).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undo_that_meets_a_newer_write_is_stuck_and_does_not_overwrite() {
    let (gate, open) = gate().await;
    let setup = setup(&["--allow-host", "127.0.0.1"]).await;
    let url = setup.coordinator.url.clone();
    let us = setup.cluster.regions[0].url.clone();
    let eu = setup.cluster.regions[1].url.clone();
    workload::register(std::slice::from_ref(&url), &overwrite_definition(&gate)).await;

    // Without interference the undo restores what was there: a value, or nothing; the
    // deleted key comes back.
    put(&us, "us/kept", json!({"by": "before"})).await;
    put(&eu, "eu/gone", json!({"by": "before"})).await;
    let (_, saga) = start_and_settle(&url, json!({"key": "us/kept", "gone": "eu/gone", "path": "refuse"})).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(read(&us, "us/kept").await.1["value"], json!({"by": "before"}));
    assert_eq!(read(&eu, "eu/gone").await.1["value"], json!({"by": "before"}));
    let (_, saga) = start_and_settle(&url, json!({"key": "us/fresh", "gone": "eu/none", "path": "refuse"})).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert_eq!(
        read(&us, "us/fresh").await.0,
        404,
        "a key the saga created is deleted again"
    );

    // Someone writes the key after the saga did, before it unwinds.
    put(&us, "us/doc", json!({"by": "before"})).await;
    let input = json!({"key": "us/doc", "gone": "eu/none", "path": "hold"});
    let started = reqwest::Client::new()
        .post(format!("{url}/v1/sagas"))
        .json(&json!({"definition": "overwrite", "input": input}))
        .send()
        .await
        .unwrap();
    let id = started.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saga: Value = reqwest::get(format!("{url}/v1/sagas/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if saga["steps"][2]["status"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the saga did not reach its wait step: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&us, "us/doc").await.1["value"], json!({"by": "saga"}));
    let theirs = put(&eu, "us/doc", json!({"by": "someone else"})).await;
    open.send_replace(true);
    let keyed = HashMap::from([(id.clone(), false)]);
    workload::wait_settled(std::slice::from_ref(&url), &keyed, Duration::from_secs(60)).await;
    let saga: Value = reqwest::get(format!("{url}/v1/sagas/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saga["status"], "stuck", "{saga}");
    let set = &saga["steps"][0];
    assert_eq!(set["compensation"]["status"], "failed", "{saga}");
    let reason = set["compensation"]["error"]["message"].as_str().unwrap();
    assert!(
        reason.starts_with("conflict: us/doc was written by someone else"),
        "{reason}"
    );
    assert_eq!(set["compensation"]["error"]["kind"], "permanent");
    let (_, now) = read(&us, "us/doc").await;
    assert_eq!(
        now["value"],
        json!({"by": "someone else"}),
        "their write was not overwritten"
    );
    assert_eq!(now["version"], theirs["version"]);
}
