//! Transactions with tokens: one belongs to the token that began it, and each of its
//! routes needs its role.

use serde_json::{Value, json};

use super::support::regions::{Cluster, tls_client};
use super::{ADMIN, READ, WRITE, call, certs, settings};

/// A transaction belongs to the token that began it: any other token, even `admin`, is
/// refused (403 `forbidden`) reading, writing, deleting, committing and aborting it, before
/// and after it ended, and learns nothing of it; the token that began it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_goes_on_only_with_the_token_that_began_it() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &settings(), 0).await;
    let client = reqwest::Client::new();
    let us = cluster.regions[0].url.clone();
    let (status, begun) = call(&client, Method::POST, &format!("{us}/v1/txns"), Some(WRITE), None).await;
    assert_eq!(status, 201, "{begun}");
    let txn = format!("{us}/v1/txns/{}", begun["id"].as_str().unwrap());
    let one = Some(json!({"value": 1}));
    let (status, answer) = call(
        &client,
        Method::PUT,
        &format!("{txn}/kv/us/a"),
        Some(WRITE),
        one.clone(),
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    let refused = |what: &str, (status, problem): (u16, Value)| {
        assert_eq!(status, 403, "{what}: {problem}");
        assert_eq!(
            problem["type"], "https://geosaga.dev/problems/forbidden",
            "{what}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("begun with another token"),
            "{what}: {problem}"
        );
    };
    // (A `read` token's writes are refused for its role before that.)
    let put = call(
        &client,
        Method::PUT,
        &format!("{txn}/kv/us/b"),
        Some(ADMIN),
        one.clone(),
    )
    .await;
    refused("a write", put);
    let delete = call(&client, Method::DELETE, &format!("{txn}/kv/us/a"), Some(ADMIN), None).await;
    refused("a deletion", delete);
    for other in [ADMIN, READ] {
        let get = call(&client, Method::GET, &format!("{txn}/kv/us/a"), Some(other), None).await;
        refused("a read", get);
        for action in ["commit", "abort"] {
            let ended = call(&client, Method::POST, &format!("{txn}/{action}"), Some(other), None).await;
            refused(action, ended);
        }
    }
    let (status, own) = call(&client, Method::GET, &format!("{txn}/kv/us/a"), Some(WRITE), None).await;
    assert_eq!((status, &own["value"]), (200, &json!(1)), "{own}");
    let (status, committed) = call(&client, Method::POST, &format!("{txn}/commit"), Some(WRITE), None).await;
    assert_eq!(status, 200, "{committed}");
    // Ended, it stays its own: another token hears 403, not why it ended.
    let late = call(&client, Method::POST, &format!("{txn}/abort"), Some(ADMIN), None).await;
    refused("an abort after the commit", late);
    let (status, gone) = call(&client, Method::POST, &format!("{txn}/abort"), Some(WRITE), None).await;
    assert_eq!(status, 410, "{gone}");
    let (status, unknown) = call(
        &client,
        Method::POST,
        &format!("{us}/v1/txns/nope/commit"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    // The committed write is there for everyone.
    let (status, read) = call(&client, Method::GET, &format!("{us}/v1/kv/us/a"), Some(READ), None).await;
    assert_eq!((status, &read["value"]), (200, &json!(1)), "{read}");
}

/// Transactions with tokens: `read` begins, reads, snapshots and commits a read-only
/// transaction; writing in one, or committing or aborting one that writes, needs `write`;
/// a transaction's value past `max_value_bytes` is 413 naming its path; the internal routes
/// of the commit need a member's certificate and take it in its own name only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_need_their_roles_and_keep_the_value_limit() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south");
    let settings = format!("{}max_value_bytes = 1024\n", settings());
    let cluster = Cluster::start_tls(dir.path(), &settings, 0, &ours).await;
    let client = tls_client(&ours, None);
    let us = cluster.regions[0].url.clone();
    let (status, _) = call(&client, Method::POST, &format!("{us}/v1/txns"), None, None).await;
    assert_eq!(status, 401, "begin anonymous");

    // A reader's transaction: begun, read and committed with `read`; it cannot write.
    let (status, begun) = call(&client, Method::POST, &format!("{us}/v1/txns"), Some(READ), None).await;
    assert_eq!(status, 201, "{begun}");
    let reader = format!("{us}/v1/txns/{}", begun["id"].as_str().unwrap());
    let (status, answer) = call(&client, Method::GET, &format!("{reader}/kv/eu/b"), Some(READ), None).await;
    assert_eq!(status, 404, "an absent key, read as a reader: {answer}");
    let one = Some(json!({"value": 1}));
    let (status, answer) = call(
        &client,
        Method::PUT,
        &format!("{reader}/kv/us/a"),
        Some(READ),
        one.clone(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(&client, Method::POST, &format!("{reader}/commit"), Some(READ), None).await;
    assert_eq!(status, 200, "a read-only commit as a reader: {answer}");

    // A writer's transaction: a reader can neither commit nor abort it.
    let (status, begun) = call(&client, Method::POST, &format!("{us}/v1/txns"), Some(WRITE), None).await;
    assert_eq!(status, 201, "{begun}");
    let writer = format!("{us}/v1/txns/{}", begun["id"].as_str().unwrap());
    let (status, answer) = call(
        &client,
        Method::PUT,
        &format!("{writer}/kv/us/a"),
        Some(WRITE),
        one.clone(),
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    let big = Some(json!({"value": "b".repeat(1024)}));
    let (status, problem) = call(&client, Method::PUT, &format!("{writer}/kv/eu/b"), Some(WRITE), big).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["type"], "https://geosaga.dev/problems/too-large", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("/value") && detail.contains("max_value_bytes (1024)"),
        "{problem}"
    );
    for action in ["commit", "abort"] {
        let (status, problem) = call(&client, Method::POST, &format!("{writer}/{action}"), Some(READ), None).await;
        assert_eq!(status, 403, "{action} as a reader: {problem}");
        // Refused as another token's transaction (see
        // a_transaction_goes_on_only_with_the_token_that_began_it, above), before its writes matter.
        assert!(
            problem["detail"].as_str().unwrap().contains("another token"),
            "{problem}"
        );
    }
    let (status, answer) = call(&client, Method::POST, &format!("{writer}/commit"), Some(WRITE), None).await;
    assert_eq!(status, 200, "{answer}");

    // Snapshots and the one-request form: reading needs `read`, writing `write`.
    let keys = Some(json!({"keys": ["us/a", "eu/b"]}));
    let (status, snapshot) = call(&client, Method::POST, &format!("{us}/v1/snapshot"), Some(READ), keys).await;
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["values"]["us/a"]["value"], 1, "{snapshot}");
    let one_shot = format!("{us}/v1/txn");
    let reads = Some(json!({"reads": ["us/a"]}));
    let (status, answer) = call(&client, Method::POST, &one_shot, Some(READ), reads).await;
    assert_eq!(status, 200, "{answer}");
    let writes = Some(json!({"writes": [{"key": "us/a", "value": 2}]}));
    let (status, answer) = call(&client, Method::POST, &one_shot, Some(READ), writes.clone()).await;
    assert_eq!(status, 403, "{answer}");
    let too_big = Some(json!({"writes": [{"key": "us/a", "value": 2}, {"key": "eu/b", "value": "b".repeat(1024)}]}));
    let (status, problem) = call(&client, Method::POST, &one_shot, Some(WRITE), too_big).await;
    assert_eq!(status, 413, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("/writes/1/value"),
        "{problem}"
    );
    let (status, answer) = call(&client, Method::POST, &one_shot, Some(WRITE), writes).await;
    assert_eq!(status, 200, "{answer}");

    // The commit's internal routes: a member's certificate, in its own name only.
    let ts = json!({"wall_ms": 1, "logical": 0});
    let messages = |from: &str| {
        [
            (
                "/internal/v1/txn/prepare",
                json!({"from": from, "txn": "t", "read_ts": ts, "record_home": "us-east", "intents": []}),
            ),
            (
                "/internal/v1/txn/record",
                json!({"from": from, "txn": "t", "event": {"event": "get"}}),
            ),
            (
                "/internal/v1/txn/resolve",
                json!({"from": from, "txn": "t", "commit_ts": null}),
            ),
            ("/internal/v1/txn/read", json!({"from": from, "key": "us/a", "ts": ts})),
        ]
    };
    let eu = tls_client(&ours, Some("eu-west"));
    for (path, body) in messages("ap-south") {
        let r = eu.post(format!("{us}{path}")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            problem["type"], "https://geosaga.dev/problems/peer-forbidden",
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("\"ap-south\""),
            "{problem}"
        );
        let r = client.post(format!("{us}{path}")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a certificate");
    }
    for (path, body) in messages("eu-west") {
        let r = eu.post(format!("{us}{path}")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} in its own name: {}", r.text().await.unwrap());
    }
}
