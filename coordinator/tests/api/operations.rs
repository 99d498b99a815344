//! Cancel, retry, 404s, tokens, probes and documents, store failures, overload.

use super::*;

#[tokio::test]
async fn cancel_and_retry_follow_the_saga_status() {
    let f = fixture().await;
    let done = f.trip(1).await;
    let id = done["id"].as_str().unwrap();
    f.post(&format!("/v1/sagas/{id}/cancel"), json!({}))
        .await
        .problem(409, "illegal-transition");
    f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None)
        .await
        .problem(409, "illegal-transition");

    let held = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    assert_eq!(
        (held.status, held.body["status"].as_str()),
        (StatusCode::CREATED, Some("running"))
    );
    let id = held.body["id"].as_str().unwrap();
    let cancelled = f
        .post(&format!("/v1/sagas/{id}/cancel"), json!({"reason": "changed my mind"}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "compensating");
    assert_eq!(cancelled.body["error"], "cancelled: changed my mind");
    f.gate.add_permits(1);
    f.coordinator
        .wait(id.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let after = f.get(&format!("/v1/sagas/{id}")).await;
    assert_eq!(after.body["status"], "compensated");
    assert_eq!(
        after.body["steps"][0]["compensation"],
        json!({"status": "succeeded", "attempts": 1, "error": null})
    );
    let log = f.get(&format!("/v1/sagas/{id}/events")).await.body;
    assert!(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "cancel_requested" && e["reason"] == "changed my mind")
    );

    // A body-less cancel works too.
    let held = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    let answer = f
        .call(
            "POST",
            &format!("/v1/sagas/{}/cancel", held.body["id"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::OK, Some("cancelled: cancelled through the API"))
    );
    // And so does a body of `null`, which the document allows.
    let held = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    let answer = f
        .post(
            &format!("/v1/sagas/{}/cancel", held.body["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (StatusCode::OK, Some("cancelled: cancelled through the API")),
        "{}",
        answer.body
    );
    f.gate.add_permits(2);
}

#[tokio::test]
async fn a_stuck_saga_is_retried() {
    let f = fixture().await;
    let faults = &f.coordinator.runners().faults;
    faults.inject(
        None,
        "charge",
        Phase::Action,
        Fault::Fail(StepError::permanent("declined")),
        Some(1),
    );
    faults.inject(
        None,
        "reserve",
        Phase::Compensation,
        Fault::Fail(StepError::permanent("refund API down")),
        Some(1),
    );
    let stuck = f.trip(5).await;
    assert_eq!(stuck["status"], "stuck");
    let compensation = &stuck["steps"][0]["compensation"];
    assert_eq!(
        (compensation["status"].as_str(), compensation["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert_eq!(
        compensation["error"],
        json!({"kind": "permanent", "message": "refund API down"})
    );
    assert_eq!(
        stuck["steps"][1]["error"],
        json!({"kind": "permanent", "message": "declined"})
    );

    let id = stuck["id"].as_str().unwrap();
    let retried = f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    f.coordinator
        .wait(id.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let after = f.get(&format!("/v1/sagas/{id}")).await.body;
    assert_eq!(after["status"], "compensated");
    assert_eq!(
        (
            after["steps"][0]["compensation"]["status"].as_str(),
            after["steps"][0]["compensation"]["attempts"].as_u64()
        ),
        (Some("succeeded"), Some(2))
    );
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_ids_400() {
    let f = fixture().await;
    let id = Uuid::now_v7();
    f.get(&format!("/v1/sagas/{id}")).await.problem(404, "saga-not-found");
    f.get(&format!("/v1/sagas/{id}/events"))
        .await
        .problem(404, "saga-not-found");
    f.post(&format!("/v1/sagas/{id}/cancel"), json!({}))
        .await
        .problem(404, "saga-not-found");
    f.call("POST", &format!("/v1/sagas/{id}/retry"), &[], None)
        .await
        .problem(404, "saga-not-found");
    let bad = f.get("/v1/sagas/not-a-uuid").await;
    bad.problem(400, "invalid-parameter");
    assert_eq!(bad.paths(), ["/path/id"]);
    assert_eq!(
        f.call("POST", "/v1/sagas/42/retry", &[], None).await.paths(),
        ["/path/id"]
    );
    f.get("/v2/anything").await.problem(404, "not-found");
    let delete = f.call("DELETE", "/v1/sagas", &[], None).await;
    delete.problem(405, "method-not-allowed");
    let allow: HashSet<_> = delete.headers[header::ALLOW].to_str().unwrap().split(',').collect();
    assert_eq!(allow, HashSet::from(["GET", "HEAD", "POST"]));
}

#[tokio::test]
async fn tokens_guard_the_v1_routes_only() {
    let f = fixture_with(Options::default(), |s| s.tokens = vec!["other".into(), TOKEN.into()]).await;
    let none = f.get("/v1/sagas").await;
    none.problem(401, "unauthorized");
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    f.call("GET", "/v1/sagas", &[("authorization", "Bearer wrong")], None)
        .await
        .problem(401, "unauthorized");
    f.call(
        "GET",
        "/v1/schema/definition",
        &[("authorization", "Basic czNjcmV0")],
        None,
    )
    .await
    .problem(401, "unauthorized");
    let big = json!({"name": "big", "description": "x".repeat(2 << 20), "steps": []});
    f.post("/v1/definitions", big).await.problem(401, "unauthorized");
    let ok = f
        .call(
            "GET",
            "/v1/sagas",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        f.call(
            "GET",
            "/v1/definitions",
            &[("authorization", &format!("bearer {TOKEN}"))],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(f.get(open).await.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn probes_and_documents() {
    let f = fixture().await;
    let health = f.get("/healthz").await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(f.get("/readyz").await.status, StatusCode::OK);

    let schema = f.get("/v1/schema/definition").await;
    assert_eq!(schema.status, StatusCode::OK);
    assert_eq!(schema.body, sagas::document::definition_schema());

    let doc = f.get("/openapi.json").await.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/definitions",
        "/v1/definitions/{name}",
        "/v1/sagas",
        "/v1/sagas/{id}",
        "/v1/sagas/{id}/events",
        "/v1/sagas/{id}/cancel",
        "/v1/sagas/{id}/retry",
        "/v1/schema/definition",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    assert!(paths["/v1/sagas"]["post"]["responses"]["422"].is_object());
    let operations: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations.iter().collect::<HashSet<_>>().len(),
        operations.len(),
        "operation ids are unique: {operations:?}"
    );
    for schema in [
        "Problem",
        "SagaResponse",
        "SagaPage",
        "StartSagaRequest",
        "DefinitionCreated",
        "EventLog",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is not documented"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // Every operation behind the tokens documents their 401; the open ones do not.
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let guarded = operation["security"].is_array();
            assert_eq!(
                operation["responses"]["401"].is_object(),
                guarded,
                "{method} {path}: 401 documented iff guarded"
            );
            assert_eq!(guarded, path.starts_with("/v1/"), "{method} {path}");
        }
    }
    // The definition body is the definition's JSON Schema, its `$defs` as components.
    let body = &paths["/v1/definitions"]["post"]["requestBody"];
    assert_eq!(body["required"], true);
    assert_eq!(
        body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Definition"
    );
    let definition = &doc["components"]["schemas"]["Definition"];
    assert_eq!(definition["required"], json!(["name", "steps"]));
    let text = serde_json::to_string(&doc).unwrap();
    assert!(!text.contains("#/$defs/"), "every $ref points into the components");
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referenced, not defined"
        );
    }
    // Links spelled as OpenAPI spells them.
    let link = &paths["/v1/sagas"]["post"]["responses"]["201"]["links"]["getSaga"];
    assert_eq!(link["operationId"], "getSaga", "{link}");
    // The constraints the server enforces.
    let list = paths["/v1/sagas"]["get"]["parameters"].as_array().unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(500))
    );
    let status = &doc["components"]["schemas"]["SagaStatus"]["enum"];
    assert_eq!(
        status,
        &json!(["running", "compensating", "completed", "compensated", "stuck"])
    );
}

#[tokio::test]
async fn store_failures_are_500_and_unready() {
    let f = fixture().await;
    f.store.down.store(true, Ordering::SeqCst);
    let answer = f.get("/v1/sagas").await;
    answer.problem(500, "internal");
    assert!(
        !answer.body["detail"].as_str().unwrap().contains("connection refused"),
        "store details stay in the log"
    );
    let ready = f.get("/readyz").await;
    let detail = ready.problem(503, "not-ready")["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("store unavailable") && !detail.contains("connection refused"),
        "the probe is open to all: the database's words stay in the log: {detail}"
    );
    assert_eq!(f.get("/healthz").await.status, StatusCode::OK);
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(f.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_overloaded_coordinator_is_503_with_retry_after() {
    let f = fixture_with(
        Options {
            max_running: 1,
            ..Options::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(
        f.post("/v1/sagas", json!({"definition": "hold"})).await.status,
        StatusCode::CREATED
    );
    let answer = f.post("/v1/sagas", json!({"definition": "hold"})).await;
    answer.problem(503, "overloaded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    f.gate.add_permits(1);
}
