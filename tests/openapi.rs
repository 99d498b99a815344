//! The OpenAPI documents say exactly what the servers do: schemathesis (from PyPI; see
//! `SCHEMATHESIS`) runs every one of its checks against the coordinator's `/openapi.json`
//! (started with an API token, and given it), a few hundred generated requests per
//! operation, and any finding fails the test with schemathesis's report, each with a
//! `curl` line that reproduces it.
//!
//! `GEOSAGA_SCHEMATHESIS_EXAMPLES` changes the examples per operation (default 300) and
//! `GEOSAGA_SCHEMATHESIS_SEED` the seed (default fixed, so that CI is reproducible; any
//! other seed explores other requests).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::process::CoordinatorProcess;

/// The schemathesis release the tests are written for; `scripts/test` installs it.
const SCHEMATHESIS: &str = "4.32.5";
const TOKEN: &str = "contract-token";

/// Runs `st run URL/openapi.json --checks all` with the settings in `config`; panics with
/// its report on any finding.
fn schemathesis(url: &str, config: &Path, work: &Path) {
    let version = Command::new("st").arg("--version").output();
    let found = version
        .as_ref()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert!(
        found.as_deref().is_some_and(|v| v.ends_with(SCHEMATHESIS)),
        "schemathesis {SCHEMATHESIS} is needed (found: {found:?}); install it with \
         `pip install schemathesis=={SCHEMATHESIS}` (scripts/test does)"
    );
    let examples = std::env::var("GEOSAGA_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "300".into());
    let seed = std::env::var("GEOSAGA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "22".into());
    let output = Command::new("st")
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("{url}/openapi.json"), "--checks", "all"])
        .args(["--max-examples", &examples, "--seed", &seed, "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .current_dir(work)
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found the document and the server apart ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains("generated"))
        .unwrap_or_default();
    println!("{url}: {summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinators_document_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("coordinator.db");
    let port = support::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    // The saga registered below calls the coordinator's own /healthz.
    let coordinator = CoordinatorProcess::launch(
        [
            "serve",
            "--database",
            database.to_str().unwrap(),
            "--listen",
            &listen,
            "--token",
            TOKEN,
            "--allow-host",
            &listen,
        ]
        .map(String::from)
        .to_vec(),
        Vec::new(),
        dir.path().join("coordinator.log"),
        format!("http://{listen}"),
    );
    coordinator.wait_ready().await;

    // Something to list and read: a definition and a saga of it. It is named as the
    // document's example start names its definition, so that the example starts a saga and
    // the stateful phase can follow the links from it.
    let client = reqwest::Client::new();
    let probe = json!({
        "name": "transfer",
        "steps": [{"name": "ask", "action": {"http": {"method": "GET", "url": format!("http://{listen}/healthz")}}}]
    });
    let registered = client
        .post(format!("{}/v1/definitions", coordinator.url))
        .bearer_auth(TOKEN)
        .json(&probe)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "{}", registered.text().await.unwrap());
    let started = client
        .post(format!("{}/v1/sagas?wait_ms=5000", coordinator.url))
        .bearer_auth(TOKEN)
        .json(&json!({"definition": "transfer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201, "{}", started.text().await.unwrap());

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/coordinator.toml");
    let url = coordinator.url.clone();
    let work = dir.path().to_owned();
    tokio::task::spawn_blocking(move || schemathesis(&url, &config, &work))
        .await
        .unwrap();
    assert!(
        !coordinator.log_text().contains("request failed"),
        "the coordinator logged a server error:\n{}",
        coordinator.log_text()
    );
}
