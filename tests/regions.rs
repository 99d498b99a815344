//! Black-box tests of the regions: three `geosaga region` processes on loopback, with a
//! latency-injecting TCP proxy on every link between them.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::regions::Cluster;
use testkit::http::{self, get, put};

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 800\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";

/// Polls `path` at `url` until `done` holds for its answer (at most 10 s).
async fn eventually(url: &str, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    http::eventually(url, path, Duration::from_secs(10), String::new, done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reads_forwarding_and_conditional_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());

    let (status, placed) = get(&ap, "/v1/placement/us/alice").await;
    assert_eq!(
        (status, placed["home_region"].as_str()),
        (200, Some("us-east")),
        "{placed}"
    );
    assert_eq!(placed["reason"]["by"], "rule");
    let (_, hashed) = get(&ap, "/v1/placement/anything").await;
    assert_eq!(hashed["reason"]["by"], "hash");

    // A strong write sent to eu-west is forwarded to us-east, its home.
    let (status, w1) = put(&eu, "us/alice", json!({"value": {"balance": 10}})).await;
    assert_eq!(status, 200, "{w1}");
    assert_eq!(
        (w1["home_region"].as_str(), w1["consistency"].as_str()),
        (Some("us-east"), Some("strong"))
    );
    let (status, r) = get(&ap, "/v1/kv/us/alice").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            r["value"]["balance"].as_i64(),
            r["served_by"].as_str(),
            r["staleness_bound_ms"].as_u64()
        ),
        (Some(10), Some("us-east"), Some(0))
    );
    assert_eq!(r["version"], w1["version"]);

    // Compare-and-set: the current version wins, another one is refused with 409.
    let v1 = w1["version"].as_str().unwrap();
    let (status, w2) = put(&ap, "us/alice", json!({"value": {"balance": 20}, "if_version": v1})).await;
    assert_eq!(status, 200, "{w2}");
    let (status, conflict) = put(&us, "us/alice", json!({"value": {"balance": 30}, "if_version": v1})).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["type"], "https://geosaga.dev/problems/version-mismatch");
    let (status, _) = put(&us, "us/new", json!({"value": 1, "if_version": "0.0"})).await;
    assert_eq!(status, 200, "0.0: only if absent");
    let (status, _) = put(&us, "us/new", json!({"value": 2, "if_version": "0.0"})).await;
    assert_eq!(status, 409);

    // An async write becomes readable locally at every replica.
    let (status, a) = put(&ap, "eu/bob", json!({"value": "hello", "consistency": "async"})).await;
    assert_eq!((status, a["home_region"].as_str()), (200, Some("eu-west")), "{a}");
    for url in [&us, &ap] {
        let local = eventually(
            url,
            "/v1/kv/eu/bob?consistency=bounded_staleness&max_staleness_ms=60000",
            |s, b| s == 200 && b["version"] == a["version"],
        )
        .await;
        assert_ne!(local["served_by"], "eu-west", "served from the local replica: {local}");
        assert!(local["staleness_bound_ms"].as_u64().unwrap() <= 60_000);
    }
    // As of the first version, the old value is still readable (MVCC).
    let (status, old) = get(&us, &format!("/v1/kv/us/alice?as_of={v1}")).await;
    assert_eq!((status, old["value"]["balance"].as_i64()), (200, Some(10)), "{old}");

    // Deleting: a tombstone; the key reads as not found everywhere.
    let r = reqwest::Client::new()
        .delete(format!("{ap}/v1/kv/us/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, missing) = get(&eu, "/v1/kv/us/new").await;
    assert_eq!(
        (status, missing["type"].as_str()),
        (404, Some("https://geosaga.dev/problems/key-not-found"))
    );

    // Bad input is a problem document naming the parameter.
    let (status, bad) = get(&us, "/v1/kv/us/alice?consistency=bounded_staleness").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("max_staleness_ms"));

    // Every region sees the others healthy, with a closed timestamp and a small lag.
    let regions = eventually(&us, "/v1/regions", |_, b| {
        b.as_array().is_some_and(|rs| rs.iter().all(|r| r["healthy"] == true))
    })
    .await;
    assert_eq!(regions.as_array().unwrap().len(), 3);
    for r in regions.as_array().unwrap().iter().filter(|r| r["is_self"] == false) {
        assert!(
            r["closed_ts"].is_string() && r["replication_lag_ms"].as_u64().unwrap() < 5_000,
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_home_fails_strong_writes_cleanly_and_refuses_stale_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let [us, eu, _] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    let (status, w) = put(&us, "us/k", json!({"value": "before"})).await;
    assert_eq!(status, 200, "{w}");
    eventually(
        &eu,
        "/v1/kv/us/k?consistency=bounded_staleness&max_staleness_ms=60000",
        |s, b| s == 200 && b["served_by"] == "eu-west",
    )
    .await;

    cluster.set_cut(0, true);
    let (status, failed) = put(&us, "us/k", json!({"value": "during"})).await;
    assert_eq!(status, 503, "{failed}");
    assert_eq!(failed["type"], "https://geosaga.dev/problems/quorum-not-reached");
    let (_, r) = get(&us, "/v1/kv/us/k").await;
    assert_eq!(r["value"], "before", "a failed strong write is not visible at the home");
    // Async writes still commit at the home and are shipped once the cut heals.
    let (status, late) = put(&us, "us/k", json!({"value": "async", "consistency": "async"})).await;
    assert_eq!(status, 200);

    // eu-west's copy goes stale: a tight bound is refused, a loose one or allow_stale served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, refused) = get(&eu, "/v1/kv/us/k?consistency=bounded_staleness&max_staleness_ms=100").await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (503, Some("https://geosaga.dev/problems/too-stale")),
        "{refused}"
    );
    let (status, stale) = get(
        &eu,
        "/v1/kv/us/k?consistency=bounded_staleness&max_staleness_ms=100&allow_stale=true",
    )
    .await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(
        (stale["value"].as_str(), stale["stale"].as_bool()),
        (Some("before"), Some(true))
    );
    assert!(stale["staleness_bound_ms"].as_u64().unwrap() >= 400, "{stale}");
    let (status, strong) = get(&eu, "/v1/kv/us/k").await;
    assert_eq!(
        (status, strong["type"].as_str()),
        (503, Some("https://geosaga.dev/problems/home-unreachable"))
    );

    cluster.set_cut(0, false);
    let healed = eventually(
        &eu,
        "/v1/kv/us/k?consistency=bounded_staleness&max_staleness_ms=1000",
        |s, b| s == 200 && b["served_by"] == "eu-west" && b["version"] == late["version"],
    )
    .await;
    assert_eq!(
        healed["value"], "async",
        "the failed strong write never shows, the async one arrives"
    );
    let regions = eventually(&us, "/v1/regions", |_, b| {
        b.as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["unacked_entries"].as_i64().unwrap_or(0) == 0))
    })
    .await;
    assert!(
        regions.as_array().unwrap().iter().all(|r| r["healthy"] == true),
        "{regions}"
    );
}

async fn patch(url: &str, key: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .patch(format!("{url}/v1/kv/{key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `PATCH` with `add`: the home adds under the key's lock, so concurrent additions sent
/// through every region all count, bounds are checked against the value they apply to, and
/// a repeated op id applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn additions_are_applied_by_the_home_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let (status, _) = put(&urls[0], "us/acct", json!({"value": {"balance": 100, "owner": "a"}})).await;
    assert_eq!(status, 200);

    // 3 regions x 4 additions of +2 and 4 of -1, all at once: +12 in all. (Strong writes of
    // one key queue at its home; many more at once would outwait a forward's timeout.)
    let mut tasks = Vec::new();
    for (r, url) in urls.iter().enumerate() {
        for i in 0..8 {
            let url = url.clone();
            let delta = if i % 2 == 0 { 2 } else { -1 };
            tasks.push(tokio::spawn(async move {
                let body =
                    json!({"add": {"path": "/balance", "delta": delta, "min": 0}, "op_id": format!("t-{r}-{i}")});
                patch(&url, "us/acct", body).await
            }));
        }
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["home_region"], "us-east", "{body}");
        assert!(
            body["value"]["balance"].is_i64(),
            "the answer carries the new value: {body}"
        );
    }
    let (_, now) = get(&urls[2], "/v1/kv/us/acct").await;
    assert_eq!(now["value"], json!({"balance": 112, "owner": "a"}), "{now}");

    // Below the floor: refused with 409 out-of-bounds, nothing written.
    let (status, refused) = patch(
        &urls[1],
        "us/acct",
        json!({"add": {"path": "/balance", "delta": -113, "min": 0}}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["type"].as_str().unwrap().ends_with("/out-of-bounds"),
        "{refused}"
    );
    let (_, same) = get(&urls[0], "/v1/kv/us/acct").await;
    assert_eq!(same["version"], now["version"], "the refused addition wrote nothing");

    // A repeated op id applies once and answers as the first time.
    let body = json!({"add": {"path": "/balance", "delta": -12, "min": 0}, "op_id": "once"});
    let (_, first) = patch(&urls[2], "us/acct", body.clone()).await;
    let (status, again) = patch(&urls[1], "us/acct", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(
        (&again["version"], &again["value"]),
        (&first["version"], &first["value"])
    );
    assert_eq!(first["value"]["balance"], 100, "{first}");
    let (_, after) = get(&urls[0], "/v1/kv/us/acct").await;
    assert_eq!(after["value"]["balance"], 100, "{after}");

    // Bad input: a path that is no JSON Pointer, a value that is no number.
    let (status, bad) = patch(&urls[0], "us/acct", json!({"add": {"path": "balance", "delta": 1}})).await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["detail"].as_str().unwrap().starts_with("/add/path: "), "{bad}");
    assert_eq!(bad["errors"][0]["path"], "/add/path", "{bad}");
    let (status, bad) = patch(&urls[0], "us/acct", json!({"add": {"path": "/owner", "delta": 1}})).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("not a number"), "{bad}");
    // A body of the wrong shape names where: inside the object, or the body itself when it
    // is an array of the fields (which serde's structs would take) or a scalar.
    let (status, bad) = patch(&urls[0], "us/acct", json!({"add": {"path": "/balance", "delta": "x"}})).await;
    // The fault is located by its JSON Pointer, in the detail and in `errors`.
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["type"], "https://geosaga.dev/problems/invalid-body", "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().starts_with("/add/delta: invalid type"),
        "{bad}"
    );
    assert_eq!(bad["errors"][0]["path"], "/add/delta", "{bad}");
    for shape in [json!([{"path": "/balance", "delta": 1}]), json!(7)] {
        let (status, bad) = patch(&urls[0], "us/acct", shape.clone()).await;
        assert_eq!(status, 422, "{shape}: {bad}");
        assert_eq!(bad["detail"], "(body): expected a JSON object", "{bad}");
        assert_eq!(bad["errors"][0]["path"], "", "{bad}");
    }
    // What is not JSON at all is a 400, with where serde stopped.
    let not_json = reqwest::Client::new()
        .patch(format!("{}/v1/kv/us/acct", urls[0]))
        .header("content-type", "application/json")
        .body(r#"{"add": {"path": "/balance", "delta": 1"#)
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let bad: Value = not_json.json().await.unwrap();
    assert_eq!(bad["type"], "https://geosaga.dev/problems/malformed-json", "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("line 1 column"), "{bad}");
    let put = reqwest::Client::new()
        .put(format!("{}/v1/kv/us/acct", urls[0]))
        .json(&json!([{"balance": 0}]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 422, "an array is no PUT body");
    let (_, unchanged) = get(&urls[0], "/v1/kv/us/acct").await;
    assert_eq!(
        unchanged["version"], after["version"],
        "the refused bodies wrote nothing"
    );
    // A body must be declared as JSON; a charset is fine.
    let client = reqwest::Client::new();
    let body = r#"{"add": {"path": "/balance", "delta": 0}}"#;
    for (content_type, status) in [
        (None, 400),
        (Some("text/plain"), 400),
        (Some("application/json; charset=utf-8"), 200),
    ] {
        let mut request = client.patch(format!("{}/v1/kv/us/acct", urls[0])).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            status,
            "{content_type:?}: {}",
            response.text().await.unwrap()
        );
    }
    // Beginning a transaction takes no body, `null` or an object; its faults are located too.
    for (body, status, path) in [
        ("", 201, None),
        (" null\n", 201, None),
        ("{}", 201, None),
        ("[]", 422, Some("")),
        (r#"{"isolation": "chaos"}"#, 422, Some("/isolation")),
        ("{} {}", 400, None),
        ("\u{c}{}", 400, None),
    ] {
        let response = client
            .post(format!("{}/v1/txns", urls[0]))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body:?}");
        if let Some(path) = path {
            let bad: Value = response.json().await.unwrap();
            assert_eq!(bad["errors"][0]["path"], path, "{body:?}: {bad}");
        }
    }
}
