//! Who may call a region, black-box over real TLS: three `geosaga region` processes with
//! certificates from `geosaga region certs` and tokens of each role, and a `geosaga serve`
//! coordinator whose region steps reach them with the cluster CA, a client certificate of
//! its own and a `write` token.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::regions::{Cluster, NAMES, tls_client};
use testkit::free_port;
use testkit::http::{get, post};
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

/// A coordinator whose region steps go to the TLS `cluster`, trusting `certs/ca.pem` and
/// presenting `certs/coordinator.pem`, with `extra` flags.
async fn coordinator(dir: &Path, cluster: &Cluster, certs: &Path, extra: &[&str]) -> GeosagaProcess {
    let mut args: Vec<String> = vec![
        "--region-ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--region-cert".into(),
        certs.join("coordinator.pem").display().to_string(),
        "--region-key".into(),
        certs.join("coordinator.key").display().to_string(),
        "--region-token".into(),
        WRITE.into(),
    ];
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        args.push("--region".into());
        args.push(format!("{name}={}", region.url));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let db = dir.join("geosaga.db");
    GeosagaProcess::start(db.to_str().unwrap(), &args, dir.join("coordinator.log")).await
}

/// A transfer between regions: a debit at us-east, a credit at eu-west, and a last step
/// that fails for an amount over 50 (so that the first two are undone).
fn transfer() -> Value {
    let region = |doc: Value| json!({"region": doc});
    json!({
        "name": "move",
        "defaults": {"retry": {"max_attempts": 50, "initial_backoff_ms": 50, "max_backoff_ms": 500}},
        "steps": [
            {"name": "debit", "action": region(json!({"op": "add", "key": "us/alice", "path": "/balance",
                "delta": "-{{input.amount}}", "min": 0}))},
            {"name": "credit", "action": region(json!({"op": "add", "key": "eu/bob", "path": "/balance",
                "delta": "{{input.amount}}"}))},
            {"name": "check", "action": region(json!({"op": "add", "key": "checks/{{saga.id}}",
                "delta": "{{input.amount}}", "max": 50}))}
        ]
    })
}

/// A strong read of `key` through `url`, with `client`.
async fn balance(client: &reqwest::Client, url: &str, key: &str) -> Value {
    let r = client
        .get(format!("{url}/v1/kv/{key}"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["value"]["balance"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_sagas_run_through_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,coordinator");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 2, &ours).await;
    let client = tls_client(&ours, Some("coordinator"));
    let us = cluster.regions[0].url.clone();
    for (key, balance) in [("us/alice", 100), ("eu/bob", 0)] {
        let r = client
            .put(format!("{us}/v1/kv/{key}"))
            .bearer_auth(WRITE)
            .json(&json!({"value": {"balance": balance}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let coordinator = coordinator(dir.path(), &cluster, &ours, &[]).await;
    let (status, answer) = post(&coordinator.url, "/v1/definitions", transfer()).await;
    assert_eq!(status, 201, "{answer}");
    let (status, done) = post(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "move", "input": {"amount": 30}}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed", "{done}\n{}", coordinator.log_text());
    let (status, undone) = post(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "move", "input": {"amount": 60}}),
    )
    .await;
    assert_eq!(status, 201, "{undone}");
    // 60 passes the debit's bound but not the check's: the debit and credit are undone.
    assert_eq!(undone["status"], "compensated", "{undone}");
    assert_eq!(balance(&client, &us, "us/alice").await, 70);
    assert_eq!(balance(&client, &us, "eu/bob").await, 30);
    let (_, page) = get(&coordinator.url, "/v1/sagas").await;
    assert!(page.to_string().contains("completed"), "{page}");
}

/// `geosaga dev` pointed at a TLS cluster that wants tokens (`--region` with the same
/// `--region-ca`, `--region-cert`/`--region-key` and `--region-token` as `serve`): it starts
/// no regions of its own, and its `transfer_regions` example moves money across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn geosaga_dev_runs_region_sagas_on_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,coordinator");
    let cluster = Cluster::start_tls(dir.path(), &settings(), 2, &ours).await;
    let client = tls_client(&ours, None);
    let us = cluster.regions[0].url.clone();
    for (key, balance) in [("us/alice", 1000), ("eu/bob", 0)] {
        let r = client
            .put(format!("{us}/v1/kv/{key}"))
            .bearer_auth(WRITE)
            .json(&json!({"value": {"balance": balance}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let (api, demo) = (free_port(), free_port());
    let path = |name: &str| ours.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--listen".into(),
        format!("127.0.0.1:{api}"),
        "--demo-listen".into(),
        format!("127.0.0.1:{demo}"),
        "--data-dir".into(),
        dir.path().join("dev").display().to_string(),
        "--region-ca".into(),
        path("ca.pem"),
        "--region-cert".into(),
        path("coordinator.pem"),
        "--region-key".into(),
        path("coordinator.key"),
        "--region-token".into(),
        WRITE.into(),
    ];
    for (name, region) in NAMES.iter().zip(&cluster.regions) {
        args.push("--region".into());
        args.push(format!("{name}={}", region.url));
    }
    let dev = GeosagaProcess::launch(
        args,
        Vec::new(),
        dir.path().join("dev.log"),
        format!("http://127.0.0.1:{api}"),
    );
    dev.wait_ready().await;
    let (status, done) = post(
        &dev.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "transfer_regions", "input": {"from": "us/alice", "to": "eu/bob", "amount": 300}}),
    )
    .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["status"], "completed", "{done}\n{}", dev.log_text());
    assert_eq!(balance(&client, &us, "us/alice").await, 700);
    assert_eq!(balance(&client, &us, "eu/bob").await, 300);
    // It started no regions of its own: its welcome lists the cluster's.
    let log = dev.log_text();
    assert!(log.contains("Region steps go to your regions"), "{log}");
    assert!(!dir.path().join("dev/region-us-east.db").exists());
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
        // Refused as another token's transaction (tests/regions_auth.rs's
        // a_transaction_goes_on_only_with_the_token_that_began_it), before its writes matter.
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
