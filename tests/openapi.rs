//! The OpenAPI documents say exactly what the servers do: schemathesis (from PyPI; see
//! `SCHEMATHESIS`) runs every one of its checks against the coordinator's `/openapi.json`
//! and a region's (each started with a token, and given it), a few hundred generated
//! requests per operation, and any finding fails the test with schemathesis's report, each
//! with a `curl` line that reproduces it.
//!
//! `GEOSAGA_SCHEMATHESIS_EXAMPLES` changes the examples per operation (default 300 for the
//! coordinator, 100 for the region) and
//! `GEOSAGA_SCHEMATHESIS_SEED` the seed (default fixed, so that CI is reproducible; any
//! other seed explores other requests).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use testkit::process::{CoordinatorProcess, GeosagaProcess};

/// The schemathesis release the tests are written for; `scripts/test` installs it.
const SCHEMATHESIS: &str = "4.32.5";
const TOKEN: &str = "contract-token";

/// The schemas of `url`'s document that are maps (`additionalProperties`) with no
/// description: a field whose schema is written by hand loses its doc comment, which
/// schemathesis cannot see.
async fn undescribed_maps(url: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if o.contains_key("additionalProperties") && !o.contains_key("description") {
                    out.push(path.clone());
                }
                for (k, v) in o {
                    walk(v, format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let doc: serde_json::Value = reqwest::get(format!("{url}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    walk(&doc["components"]["schemas"], String::new(), &mut out);
    out
}

/// Runs `st run URL/openapi.json --checks all` with the settings in `config`; panics with
/// its report on any finding.
fn schemathesis(url: &str, token: &str, examples: &str, config: &Path, work: &Path) {
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
    let examples = std::env::var("GEOSAGA_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| examples.into());
    let seed = std::env::var("GEOSAGA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "22".into());
    let output = Command::new("st")
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("{url}/openapi.json"), "--checks", "all"])
        .args(["--max-examples", &examples, "--seed", &seed, "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
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
    let port = testkit::free_port();
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
    assert_eq!(
        undescribed_maps(&url).await,
        Vec::<String>::new(),
        "maps without a description"
    );
    let work = dir.path().to_owned();
    tokio::task::spawn_blocking(move || schemathesis(&url, TOKEN, "300", &config, &work))
        .await
        .unwrap();
    assert!(
        !coordinator.log_text().contains("request failed"),
        "the coordinator logged a server error:\n{}",
        coordinator.log_text()
    );
}

/// A region's token: the admin role, so that every route is reached (the 401s and 403s of
/// the roles are `tests/regions_auth/`'s).
const REGION_TOKEN: &str = "admin:region-contract-token";
/// Examples per operation against the region: 100 keeps the run near 45 s on two cores
/// with the transaction routes (20 operations, and a stateful phase that follows a begun
/// transaction's links; 25 s before them); `GEOSAGA_SCHEMATHESIS_EXAMPLES` overrides it.
const REGION_EXAMPLES: &str = "100";

#[tokio::test(flavor = "multi_thread")]
async fn a_regions_document_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    // One region: every key is homed here, so that writes run to the end (strong ones with
    // a quorum of one) rather than stopping at a peer that is not there.
    let config = dir.path().join("region.toml");
    std::fs::write(
        &config,
        format!(
            "max_value_bytes = 4096\n\n[[regions]]\nname = \"solo\"\naddress = \"{url}\"\nlisten = \"127.0.0.1:{port}\"\ndata = \"{}\"\n",
            dir.path().join("solo.db").display()
        ),
    )
    .unwrap();
    let region = GeosagaProcess::launch(
        [
            "region",
            "--config",
            config.to_str().unwrap(),
            "--name",
            "solo",
            "--token",
            REGION_TOKEN,
        ]
        .map(String::from)
        .to_vec(),
        Vec::new(),
        dir.path().join("region.log"),
        url.clone(),
    );
    region.wait_ready().await;
    let token = REGION_TOKEN.split_once(':').unwrap().1.to_owned();
    // Something to read.
    let put = reqwest::Client::new()
        .put(format!("{url}/v1/kv/example"))
        .bearer_auth(&token)
        .json(&json!({"value": {"balance": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());

    assert_eq!(
        undescribed_maps(&url).await,
        Vec::<String>::new(),
        "maps without a description"
    );
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/region.toml");
    let work = dir.path().to_owned();
    tokio::task::spawn_blocking(move || schemathesis(&url, &token, REGION_EXAMPLES, &settings, &work))
        .await
        .unwrap();
    let log = region.log_text();
    assert!(
        !log.contains("request failed"),
        "the region logged a server error:\n{log}"
    );
}
