//! Registering, versioning, listing and reading definitions; bodies that are not JSON.

use super::*;

#[tokio::test]
async fn definitions_are_registered_versioned_listed_and_read() {
    let f = fixture().await;
    let first = f.post("/v1/definitions", json_trip("v1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["created"], true);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.headers[header::LOCATION], "/v1/definitions/json-trip?version=1");
    let again = f.post("/v1/definitions", json_trip("v1")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        (again.body["created"].clone(), again.body["version"].clone()),
        (json!(false), json!(1))
    );
    assert_eq!(again.body["content_hash"], first.body["content_hash"]);

    let changed = f.post("/v1/definitions", json_trip("v2")).await;
    assert_eq!(changed.status, StatusCode::CREATED);
    assert_eq!(changed.body["version"], 2);
    assert_ne!(changed.body["content_hash"], first.body["content_hash"]);

    let latest = f.get("/v1/definitions/json-trip").await;
    assert_eq!(latest.status, StatusCode::OK);
    assert_eq!(latest.body["version"], 2);
    assert_eq!(latest.body["document"]["description"], "v2");
    let v1 = f.get("/v1/definitions/json-trip?version=1").await;
    assert_eq!(
        (v1.body["version"].clone(), v1.body["document"]["description"].clone()),
        (json!(1), json!("v1"))
    );
    assert_eq!(v1.body["content_hash"], first.body["content_hash"]);
    assert!(v1.body["created_at"].as_str().unwrap().ends_with('Z'));

    let list = f.get("/v1/definitions").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].clone(), d["latest_version"].clone()))
        .collect();
    assert!(
        names.contains(&(json!("json-trip"), json!(2))) && names.contains(&(json!("trip"), json!(1))),
        "{names:?}"
    );

    f.get("/v1/definitions/nope").await.problem(404, "definition-not-found");
    f.get("/v1/definitions/json-trip?version=9")
        .await
        .problem(404, "definition-not-found");
    let bad = f.get("/v1/definitions/json-trip?version=0").await;
    bad.problem(400, "invalid-parameter");
    assert_eq!(bad.paths(), ["/query/version"]);
    assert_eq!(
        f.get("/v1/definitions/json-trip?version=x").await.paths(),
        ["/query/version"]
    );
}

#[tokio::test]
async fn invalid_definitions_are_422_with_every_path() {
    let f = fixture().await;
    let shape = f
        .post(
            "/v1/definitions",
            json!({"name": "x", "steps": [{"name": "a", "action": {"rust": {"handler": "h"}}, "bogus": 1}]}),
        )
        .await;
    shape.problem(422, "invalid-definition");
    assert_eq!(shape.paths(), ["/steps/0/bogus"]);

    let meaning = json!({"name": "bad name", "steps": [
        {"name": "a", "action": {"rust": {"handler": "trip.reserve"}}},
        {"name": "a", "depends_on": ["missing"], "action": {"rust": {"handler": "trip.reserve"}}}
    ]});
    let answer = f.post("/v1/definitions", meaning).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/name", "/steps/1/name", "/steps/1/depends_on/0"]);

    let unknown = json!({"name": "u", "steps": [{"name": "a", "action": {"rust": {"handler": "no.such"}}}]});
    let answer = f.post("/v1/definitions", unknown).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/steps/0/action/rust/handler"]);

    let host = json!({"name": "h", "steps": [
        {"name": "ok", "action": {"http": {"method": "POST", "url": "https://payments.example/pay"}},
         "compensation": {"http": {"method": "POST", "url": "https://evil.example/refund"}}}
    ]});
    let answer = f.post("/v1/definitions", host).await;
    answer.problem(422, "invalid-definition");
    assert_eq!(answer.paths(), ["/steps/0/compensation/http/url"]);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused() {
    let f = fixture().await;
    let malformed = Request::post("/v1/definitions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let answer = f.send(malformed).await;
    assert!(
        answer.problem(400, "malformed-json")["detail"]
            .as_str()
            .unwrap()
            .contains("EOF while parsing"),
        "{}",
        answer.body
    );

    let text = Request::post("/v1/sagas")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    f.send(text).await.problem(415, "unsupported-media-type");
    let untyped = Request::post("/v1/definitions").body(Body::from("{}")).unwrap();
    f.send(untyped).await.problem(415, "unsupported-media-type");

    let big = json!({"name": "big", "description": "x".repeat(2 << 20), "steps": []});
    f.post("/v1/definitions", big).await.problem(413, "payload-too-large");

    let shape = f.post("/v1/sagas", json!({"definition": 5})).await;
    shape.problem(422, "invalid-body");
    assert_eq!(shape.paths(), ["/definition"]);
    assert_eq!(
        f.post("/v1/sagas", json!({"definition": "trip", "inptu": {}}))
            .await
            .paths(),
        ["/inptu"]
    );
}
