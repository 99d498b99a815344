//! Who may call a region, black-box over real TLS: three `geosaga region` processes with
//! certificates from `geosaga region certs` and tokens of each role: every public route
//! needs a token of its role, a member's certificate speaks only for that member, and the
//! value limit holds (here); a `geosaga serve` or `geosaga dev` coordinator whose region
//! steps reach the cluster with its CA, a client certificate of its own and a `write` token
//! (`sagas.rs`); and transactions, which belong to the token that began them (`txns.rs`).

#[path = "../support/mod.rs"]
mod support;

mod sagas;
mod txns;

use std::path::Path;

use serde_json::{Value, json};
use support::regions::{Cluster, tls_client};
use testkit::http::get;
use testkit::process::GeosagaProcess;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// The cluster's settings, with a token of each role.
fn settings() -> String {
    format!(
        "quorum = \"quorum\"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n\
         tokens = [\"read:{READ}\", \"write:{WRITE}\", \"admin:{ADMIN}\"]\n"
    )
}

fn certs(out: &Path, names: &str) {
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["region", "certs", "--out", out.to_str().unwrap(), "--regions", names])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
}

/// Sends `method path` with `token` (none: anonymous) and `body`; the status and problem.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every class of public route, anonymous and with each role: 401 without a token (or with
/// an unknown one), 403 with a role too low, served with one high enough; `/readyz` open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_public_route_needs_a_token_of_its_role() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 0, &ours).await;
    let client = tls_client(&ours, None);
    let us = cluster.regions[0].url.clone();
    let eu = cluster.regions[1].url.clone();
    let put = json!({"value": {"n": 1}});
    let routes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::GET, format!("{us}/v1/kv/us/k"), None, "read"),
        (Method::GET, format!("{us}/v1/regions"), None, "read"),
        (Method::GET, format!("{us}/v1/conflicts"), None, "read"),
        (Method::GET, format!("{us}/v1/counters/c"), None, "read"),
        (Method::PUT, format!("{us}/v1/kv/us/k"), Some(put.clone()), "write"),
        // Through a region that is not the key's home: forwarded with the client's token.
        (Method::PUT, format!("{eu}/v1/kv/us/k"), Some(put.clone()), "write"),
        (
            Method::PATCH,
            format!("{us}/v1/kv/us/n"),
            Some(json!({"add": {"delta": 1}})),
            "write",
        ),
        (
            Method::POST,
            format!("{us}/v1/counters/c"),
            Some(json!({"increment": 1})),
            "write",
        ),
        (Method::DELETE, format!("{us}/v1/kv/us/k"), None, "write"),
        (
            Method::POST,
            format!("{us}/v1/admin/rehome"),
            Some(json!({"prefix": "nope/", "to": "eu-west"})),
            "admin",
        ),
    ];
    let rank = |role: &str| ["read", "write", "admin"].iter().position(|r| *r == role).unwrap();
    for (method, url, body, needed) in &routes {
        let what = format!("{method} {url}");
        let (status, problem) = call(&client, method.clone(), url, None, body.clone()).await;
        assert_eq!(status, 401, "{what} anonymous: {problem}");
        assert_eq!(
            problem["type"], "https://geosaga.dev/problems/unauthenticated",
            "{what}: {problem}"
        );
        let (status, _) = call(
            &client,
            method.clone(),
            url,
            Some("not-a-token-of-this-cluster"),
            body.clone(),
        )
        .await;
        assert_eq!(status, 401, "{what} with an unknown token");
        for (role, token) in [("read", READ), ("write", WRITE), ("admin", ADMIN)] {
            let (status, answer) = call(&client, method.clone(), url, Some(token), body.clone()).await;
            if rank(role) < rank(needed) {
                assert_eq!(status, 403, "{what} as {role}: {answer}");
                assert_eq!(
                    answer["type"], "https://geosaga.dev/problems/forbidden",
                    "{what}: {answer}"
                );
                assert!(answer["detail"].as_str().unwrap().contains(needed), "{answer}");
            } else {
                // Served: whatever the route answers, it is not a refusal of the caller.
                assert!(![401, 403].contains(&status), "{what} as {role}: {status} {answer}");
            }
        }
    }
    let (status, _) = call(&client, Method::GET, &format!("{us}/readyz"), None, None).await;
    assert_eq!(status, 200);
    let log = cluster.regions[0].log_text();
    assert!(log.contains("request refused"), "{log}");
    for secret in [READ, WRITE, ADMIN] {
        assert!(!log.contains(secret), "a token in the log");
    }
}

/// `geosaga region` on a non-loopback address: refused without TLS and tokens, and says
/// how to go on; `--insecure` lets it start.
#[tokio::test]
async fn a_region_refuses_an_open_address_without_tls_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::regions::free_port();
    let config = dir.path().join("open.toml");
    std::fs::write(
        &config,
        format!(
            "[[regions]]\nname = \"solo\"\naddress = \"http://127.0.0.1:{port}\"\nlisten = \"0.0.0.0:{port}\"\ndata = \"{}\"\n",
            dir.path().join("solo.db").display()
        ),
    )
    .unwrap();
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["region", "--config", config.to_str().unwrap(), "--name", "solo"])
        .output()
        .unwrap();
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains(&format!(
            "refusing to listen on 0.0.0.0:{port} without [tls] and without tokens"
        )) && stderr.contains("--insecure"),
        "{stderr}"
    );
    // Tokens alone are not enough: the internal routes would still trust anyone.
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "region",
            "--config",
            config.to_str().unwrap(),
            "--name",
            "solo",
            "--token",
        ])
        .arg(format!("admin:{ADMIN}"))
        .output()
        .unwrap();
    assert!(!done.status.success());
    assert!(String::from_utf8_lossy(&done.stderr).contains("without [tls]"));
    // A malformed token is refused at once, without its secret in the message.
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "region",
            "--config",
            config.to_str().unwrap(),
            "--name",
            "solo",
            "--token",
            "root:0123456789abcdefXYZ",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        !done.status.success() && stderr.contains("unknown role \"root\"") && !stderr.contains("XYZ"),
        "{stderr}"
    );

    let args = [
        "region",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "solo",
        "--insecure",
    ]
    .map(String::from)
    .to_vec();
    let region = GeosagaProcess::launch(
        args,
        Vec::new(),
        dir.path().join("solo.log"),
        format!("http://127.0.0.1:{port}"),
    );
    region.wait_ready().await;
    let (status, _) = get(&region.url, "/v1/regions").await;
    assert_eq!(status, 200, "no tokens configured: the public routes are open");
}

/// A member's certificate cannot speak for another member: an intent, a batch of the log,
/// a forwarded write and a forwarded undo in ap-south's name, sent with eu-west's certificate, are refused
/// (403); a heartbeat listing a member nobody admitted is answered, and the member is not
/// learned: no region lists it, and nothing connects to the address it named (no log
/// shipper starts towards it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_certificate_speaks_only_for_that_member() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 0, &ours).await;
    let us = cluster.regions[0].url.clone();
    let eu = tls_client(&ours, Some("eu-west"));
    let entry = json!({"seq": 1, "key": "ap/x", "ts": {"wall_ms": 1, "logical": 0}, "value": "1", "state": "pending"});
    let forged = [
        ("/internal/v1/intents", json!({"from": "ap-south", "entry": entry})),
        (
            "/internal/v1/replicate",
            json!({"from": "ap-south", "entries": [], "closed": {"wall_ms": 1, "logical": 0}}),
        ),
    ];
    for (path, body) in forged {
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
    }
    let r = eu
        .post(format!("{us}/internal/v1/write/us/forged"))
        .header("x-geosaga-forwarded-by", "ap-south")
        .json(&json!({"value": "1", "consistency": "async"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // An undo (a saga compensation's, forwarded) is checked the same way.
    let r = eu
        .post(format!("{us}/internal/v1/undo/us/forged"))
        .header("x-geosaga-forwarded-by", "ap-south")
        .json(&json!({"consistency": "async", "op_id": "undo-1", "undo": {"op_id": "op-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("\"ap-south\""),
        "{problem}"
    );
    // In its own name it passes the check (and the write is applied at the home).
    let r = eu
        .post(format!("{us}/internal/v1/write/us/fine"))
        .header("x-geosaga-forwarded-by", "eu-west")
        .json(&json!({"value": "1", "consistency": "async"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A re-homing step with a member's certificate but no admin token: 403.
    let r = eu
        .post(format!("{us}/internal/v1/rehome/apply"))
        .json(&json!({"prefix": "us/", "to": "eu-west", "from": "us-east"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("admin token"), "{problem}");

    // mallory's address is a socket of ours: a log shipper sent there would connect to it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let address = format!("https://{}", trap.local_addr().unwrap());
    let mallory = json!({"name": "mallory", "address": address, "role": "replica", "version": 1});
    let r = eu
        .post(format!("{us}/internal/v1/heartbeat"))
        .json(&json!({"from": "eu-west", "members": [mallory]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Heartbeats go on between the regions; none brings mallory in.
    for _ in 0..3 {
        let r = tls_client(&ours, None)
            .get(format!("{us}/v1/regions"))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        let regions: Value = r.json().await.unwrap();
        assert!(!regions.to_string().contains("mallory"), "{regions}");
        assert_eq!(regions.as_array().unwrap().len(), 3, "{regions}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        !cluster.regions[0].log_text().contains("learned a member"),
        "{}",
        cluster.logs()
    );
    // Shipping runs every 50 ms (closed_ts_interval_ms): in the 600 ms above, a ship loop
    // towards mallory would have connected at least once.
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a region connected to the address the heartbeat named"
    );
}

/// A value at the limit replicates to every region; one past it is refused with 413 naming
/// the limit, and shipping goes on (a small write after it arrives everywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_at_the_limit_replicates_and_one_past_it_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south");
    let limit = 1 << 20;
    let settings = format!("{}max_value_bytes = {limit}\n", settings());
    let cluster = Cluster::start_tls(dir.path(), &settings, 0, &ours).await;
    let client = tls_client(&ours, None);
    let us = cluster.regions[0].url.clone();
    // A JSON string of exactly `limit` bytes: its quotes and its text.
    let at_limit = "a".repeat(limit - 2);
    let put = |key: &str, value: Value| {
        client
            .put(format!("{us}/v1/kv/{key}"))
            .bearer_auth(WRITE)
            .json(&json!({"value": value, "consistency": "async"}))
            .send()
    };
    let r = put("us/big", json!(at_limit)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = put("us/bigger", json!(format!("{at_limit}a"))).await.unwrap();
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "https://geosaga.dev/problems/too-large", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("max_value_bytes ({limit})")),
        "{problem}"
    );
    // 3 MiB: past the body limit of a public write too: 413, not 400.
    let r = put("us/huge", json!("h".repeat(3 << 20))).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = put("us/after", json!("small")).await.unwrap();
    assert_eq!(r.status(), 200);
    for region in &cluster.regions[1..] {
        for (key, expected) in [("us/big", json!(at_limit)), ("us/after", json!("small"))] {
            let url = format!(
                "{}/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=60000&allow_stale=true",
                region.url
            );
            let start = std::time::Instant::now();
            loop {
                let r = client.get(&url).bearer_auth(READ).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if status == 200 && body["served_by"] == region.name.as_str() {
                    assert!(body["value"] == expected, "{key} at {}", region.name);
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "{key} never reached {}: {status}\n{}",
                    region.name,
                    cluster.logs()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
