//! Starting sagas: start-with-wait, bad starts, idempotency keys, listing.

use super::*;

#[tokio::test]
async fn a_saga_starts_and_answers_when_settled() {
    let f = fixture_with(Options::default(), |s| {
        s.jaeger_ui = Some("http://jaeger:16686/".into())
    })
    .await;
    let answer = f
        .call(
            "POST",
            "/v1/sagas?wait_ms=10000",
            &[("traceparent", TRACEPARENT)],
            Some(json!({"definition": "trip", "input": {"amount": 3}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let saga = &answer.body;
    let id = saga["id"].as_str().unwrap();
    assert_eq!(answer.headers[header::LOCATION], format!("/v1/sagas/{id}"));
    assert_eq!(
        (
            saga["definition"].as_str(),
            saga["version"].as_i64(),
            saga["status"].as_str()
        ),
        (Some("trip"), Some(1), Some("completed"))
    );
    assert_eq!(saga["input"], json!({"amount": 3}));
    assert_eq!(saga["error"], Value::Null);
    assert_eq!(saga["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        saga["trace_url"],
        "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let created = saga["created_at"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with('Z') && &created[10..11] == "T",
        "{created}"
    );
    let steps = saga["steps"].as_array().unwrap();
    assert_eq!(
        steps[0],
        json!({"name": "reserve", "status": "succeeded", "attempts": 1, "outcome_unknown": false,
        "output": {"reserved": 3}, "error": null, "compensation": {"status": "not_needed", "attempts": 0, "error": null}})
    );
    assert_eq!(steps[1]["compensation"]["status"], "none");

    let shown = f.get(&format!("/v1/sagas/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(&shown.body, saga);

    let events = f.get(&format!("/v1/sagas/{id}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    let log = events.body["events"].as_array().unwrap();
    let types: Vec<_> = log.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["step_started", "step_succeeded", "step_started", "step_succeeded"]
    );
    assert_eq!(log[1]["seq"], 1);
    assert_eq!(
        (
            log[1]["step"].clone(),
            log[1]["attempt"].clone(),
            log[1]["output"].clone()
        ),
        (json!("reserve"), json!(1), json!({"reserved": 3}))
    );
    assert!(log[0]["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn bad_starts_are_refused() {
    let f = fixture().await;
    let wrong = f
        .post("/v1/sagas", json!({"definition": "trip", "input": {"amount": "3"}}))
        .await;
    wrong.problem(422, "invalid-input");
    assert_eq!(wrong.paths(), ["/input/amount"]);
    let missing = f.post("/v1/sagas", json!({"definition": "trip"})).await;
    missing.problem(422, "invalid-input");
    assert_eq!(missing.paths(), ["/input"]);
    // An array of the request's fields, which serde's structs would take in order.
    let array = f.post("/v1/sagas", json!(["trip", null, {"amount": 1}])).await;
    array.problem(422, "invalid-body");
    assert_eq!(array.paths(), [""]);
    f.post("/v1/sagas", json!({"definition": "nope"}))
        .await
        .problem(404, "definition-not-found");
    f.post(
        "/v1/sagas",
        json!({"definition": "trip", "version": 7, "input": {"amount": 1}}),
    )
    .await
    .problem(404, "definition-not-found");
    let wait = f
        .post(
            "/v1/sagas?wait_ms=soon",
            json!({"definition": "trip", "input": {"amount": 1}}),
        )
        .await;
    wait.problem(400, "invalid-parameter");
    assert_eq!(wait.paths(), ["/query/wait_ms"]);
    let long = f
        .post(
            "/v1/sagas?wait_ms=60001",
            json!({"definition": "trip", "input": {"amount": 1}}),
        )
        .await;
    long.problem(400, "invalid-parameter");
    assert_eq!(long.paths(), ["/query/wait_ms"]);
}

#[tokio::test]
async fn idempotency_keys_start_one_saga() {
    let f = fixture().await;
    let body = json!({"definition": "trip", "input": {"amount": 1}});
    let first = f
        .call("POST", "/v1/sagas", &[("idempotency-key", "k1")], Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = f
        .call("POST", "/v1/sagas", &[("Idempotency-Key", "k1")], Some(body.clone()))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);
    let in_body = f
        .post(
            "/v1/sagas",
            json!({"definition": "trip", "input": {"amount": 1}, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(
        (in_body.status, &in_body.body["id"]),
        (StatusCode::OK, &first.body["id"])
    );

    let other = f
        .call(
            "POST",
            "/v1/sagas",
            &[("idempotency-key", "k1")],
            Some(json!({"definition": "trip", "input": {"amount": 2}})),
        )
        .await;
    other.problem(409, "idempotency-conflict");
    let both = json!({"definition": "trip", "input": {"amount": 1}, "idempotency_key": "k2"});
    let differ = f
        .call("POST", "/v1/sagas", &[("idempotency-key", "k1")], Some(both))
        .await;
    differ.problem(400, "invalid-parameter");
    assert_eq!(differ.paths(), ["/header/idempotency-key"]);

    let found = f.get("/v1/sagas?idempotency_key=k1").await;
    let ids: Vec<&Value> = found.body["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, [&first.body["id"]], "the key finds its saga");
    let none = f.get("/v1/sagas?idempotency_key=k9").await;
    assert_eq!(none.body["sagas"], json!([]));
}

#[tokio::test]
async fn sagas_are_listed_newest_first_a_page_at_a_time() {
    let f = fixture().await;
    let mut started = Vec::new();
    for amount in 1..=12 {
        started.push(f.trip(amount).await["id"].as_str().unwrap().to_owned());
    }
    f.coordinator.runners().faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("declined")),
        Some(1),
    );
    let failed = f.trip(99).await;
    assert_eq!(failed["status"], "compensated");
    assert_eq!(failed["steps"][0]["compensation"]["status"], "succeeded");
    assert!(failed["error"].as_str().unwrap().contains("declined"));

    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/sagas?status=completed&limit=5&cursor={c}"),
            None => "/v1/sagas?status=completed&limit=5".to_owned(),
        };
        let page = f.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        seen.extend(
            page.body["sagas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 12);
    started.reverse();
    assert_eq!(seen, started, "newest first");

    let compensated = f.get("/v1/sagas?status=compensated").await;
    let ids: Vec<_> = compensated.body["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [failed["id"].clone()]);
    assert_eq!(
        f.get("/v1/sagas?definition=trip&limit=500").await.body["sagas"]
            .as_array()
            .unwrap()
            .len(),
        13
    );
    assert_eq!(f.get("/v1/sagas?definition=hold").await.body["sagas"], json!([]));

    for (query, path) in [
        ("status=done", "/query/status"),
        ("limit=0", "/query/limit"),
        ("limit=501", "/query/limit"),
        ("limit=x", "/query/limit"),
        ("cursor=zz", "/query/cursor"),
        ("cursor=4142", "/query/cursor"),
    ] {
        let answer = f.get(&format!("/v1/sagas?{query}")).await;
        answer.problem(400, "invalid-parameter");
        assert_eq!(answer.paths(), [path], "{query}");
    }
}
