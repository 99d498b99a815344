//! Mutual TLS between regions, black-box: certificates made by `geosaga region certs`,
//! three `geosaga region` processes over TLS behind the test proxies; internal routes refuse
//! callers without a certificate of the cluster CA naming a member, and say so in the log.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::regions::{Cluster, tls_client};

const SETTINGS: &str = "quorum = \"quorum\"\nstrong_timeout_ms = 2000\nclosed_ts_interval_ms = 50\n\
                        max_clock_offset_ms = 10\nheartbeat_interval_ms = 100\nsuspect_after_ms = 400\n\
                        down_after_ms = 1200\n";

fn certs(out: &Path, regions: &str) {
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["region", "certs", "--out", out.to_str().unwrap(), "--regions", regions])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("[tls]"), "prints the configuration to use: {stdout}");
}

async fn eventually(client: &reqwest::Client, url: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = match client.get(url).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(e) => (0, json!(e.to_string())),
        };
        if done(status, &body) {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} still answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `region`'s log holds `text` (the log is written asynchronously).
/// Posts `body` to `url` and asserts that it is refused with `status` and the problem `kind`.
async fn assert_refused(client: &reqwest::Client, url: &str, body: &Value, status: u16, kind: &str) {
    let r = client.post(url).json(body).send().await.unwrap();
    assert_eq!(r.status(), status);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        problem["type"],
        format!("https://geosaga.dev/problems/{kind}"),
        "{problem}"
    );
}

async fn logged(cluster: &Cluster, region: usize, text: &str) -> String {
    let start = Instant::now();
    loop {
        let log = cluster.regions[region].log_text();
        if log.contains(text) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {text:?} in the log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_over_mutual_tls_and_intruders_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south,mallory");
    let cluster = Cluster::start_tls(dir.path(), SETTINGS, 5, &ours).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    assert!(us.starts_with("https://"));
    let client = tls_client(&ours, None);

    // End to end: a strong write sent to eu-west is forwarded to us-east over mTLS,
    // replicated, read strongly through ap-south and locally from ap-south's copy.
    let r = client
        .put(format!("{eu}/v1/kv/us/alice"))
        .json(&json!({"value": {"balance": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let written: Value = r.json().await.unwrap();
    assert_eq!(written["home_region"], "us-east", "{written}");
    let strong = eventually(&client, &format!("{ap}/v1/kv/us/alice"), |s, _| s == 200).await;
    assert_eq!(strong["value"]["balance"], 10, "{strong}");
    let local = eventually(
        &client,
        &format!("{ap}/v1/kv/us/alice?consistency=bounded_staleness&max_staleness_ms=60000"),
        |s, b| s == 200 && b["served_by"] == "ap-south",
    )
    .await;
    assert_eq!(local["version"], written["version"]);
    let regions = eventually(&client, &format!("{us}/v1/regions"), |_, b| {
        b.as_array()
            .is_some_and(|rs| rs.len() == 3 && rs.iter().all(|r| r["state"] == "up" && r["healthy"] == true))
    })
    .await;
    assert!(
        regions
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["address"].as_str().unwrap().starts_with("https://")),
        "{regions}"
    );

    // The port speaks TLS only: plain HTTP gets no answer.
    let plain = us.replace("https://", "http://");
    let refused = reqwest::Client::new().get(format!("{plain}/v1/regions")).send().await;
    assert!(refused.is_err(), "plain HTTP answered: {refused:?}");
    logged(&cluster, 0, "TLS handshake refused").await;

    // No client certificate: public routes answer, internal ones are refused (401).
    let batch = json!({"from": "eu-west", "entries": [], "closed": {"wall_ms": 1, "logical": 0}});
    assert_refused(
        &client,
        &format!("{us}/internal/v1/replicate"),
        &batch,
        401,
        "peer-unauthenticated",
    )
    .await;
    let log = logged(&cluster, 0, "internal request refused").await;
    assert!(log.contains("/internal/v1/replicate"), "{log}");

    // A certificate of the cluster CA that names no member: 403.
    let mallory = tls_client(&ours, Some("mallory"));
    assert_refused(
        &mallory,
        &format!("{us}/internal/v1/replicate"),
        &batch,
        403,
        "peer-forbidden",
    )
    .await;

    // A certificate naming a member but signed by another CA: the handshake fails.
    let theirs = dir.path().join("other-ca");
    certs(&theirs, "eu-west");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ours.join("ca.pem")).unwrap()).unwrap();
    let mut pem = std::fs::read(theirs.join("eu-west.pem")).unwrap();
    pem.extend(std::fs::read(theirs.join("eu-west.key")).unwrap());
    let impostor = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let before = cluster.regions[0].log_text().matches("TLS handshake refused").count();
    let r = impostor
        .post(format!("{us}/internal/v1/replicate"))
        .json(&batch)
        .send()
        .await;
    assert!(r.is_err(), "a certificate of another CA was accepted: {r:?}");
    let start = Instant::now();
    while cluster.regions[0].log_text().matches("TLS handshake refused").count() == before {
        assert!(start.elapsed() < Duration::from_secs(10), "the refusal is not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The real eu-west certificate passes (a heartbeat in its name is answered).
    let eu_client = tls_client(&ours, Some("eu-west"));
    let r = eu_client
        .post(format!("{us}/internal/v1/heartbeat"))
        .json(&json!({"from": "eu-west", "members": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...but not in another member's name.
    let r = eu_client
        .post(format!("{us}/internal/v1/heartbeat"))
        .json(&json!({"from": "ap-south", "members": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn bad_certificate_requests_get_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "region",
            "certs",
            "--out",
            dir.path().to_str().unwrap(),
            "--regions",
            "us_east!",
        ])
        .output()
        .unwrap();
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("\"us_east!\" is not a valid DNS name"), "{stderr}");
    assert!(!dir.path().join("us_east!.pem").exists());
    let config = dir.path().join("x.toml");
    std::fs::write(&config, "[[regions]]\nname = \"x\"\naddress = \"http://127.0.0.1:1\"\n").unwrap();
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "region",
            "--config",
            config.to_str().unwrap(),
            "--name",
            "x",
            "--join",
            "ftp://a",
        ])
        .output()
        .unwrap();
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("--join \"ftp://a\": not an http(s) URL"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_joins_over_mutual_tls_only_with_a_certificate_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("certs");
    certs(&ours, "us-east,eu-west,ap-south");
    let cluster = Cluster::start_tls(dir.path(), SETTINGS, 5, &ours).await;
    let us = cluster.regions[0].url.clone();
    // Later, with the same CA (certs reuses the one in --out): sa-east's certificate.
    certs(&ours, "sa-east");
    let joiner_file = |name: &str, cert: &str, port: u16| {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "bootstrap = [\"{}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 [[regions]]\nname = \"{name}\"\naddress = \"https://127.0.0.1:{port}\"\ndata = \"{}\"\n",
                cluster.regions[1].url,
                ours.join("ca.pem").display(),
                ours.join(format!("{cert}.pem")).display(),
                ours.join(format!("{cert}.key")).display(),
                dir.path().join(format!("{name}.db")).display()
            ),
        )
        .unwrap();
        file
    };
    let free_port = support::regions::free_port;

    // A region presenting sa-east's certificate under another name is refused, and says so.
    let rogue = joiner_file("rogue", "sa-east", free_port());
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["region", "--config", rogue.to_str().unwrap(), "--name", "rogue"])
        .output()
        .unwrap();
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains("refused the join") && stderr.contains("does not name \\\"rogue\\\""),
        "{stderr}"
    );

    let port = free_port();
    let file = joiner_file("sa-east", "sa-east", port);
    let args = ["region", "--config", file.to_str().unwrap(), "--name", "sa-east"]
        .map(String::from)
        .to_vec();
    let url = format!("https://127.0.0.1:{port}");
    let joiner =
        testkit::process::GeosagaProcess::launch(args, Vec::new(), dir.path().join("sa-east.log"), url.clone());
    let client = tls_client(&ours, None);
    for u in [&us, &url] {
        let regions = eventually(&client, &format!("{u}/v1/regions"), |_, b| {
            b.as_array()
                .is_some_and(|rs| rs.len() == 4 && rs.iter().all(|r| r["state"] == "up"))
        })
        .await;
        assert!(
            regions
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "sa-east" && r["role"] == "replica"),
            "{regions}\n{}",
            joiner.log_text()
        );
    }
    assert!(!cluster.regions[0].log_text().contains("internal request refused"));
}
