//! `geosaga check` as a user runs it: the binary against real participants over HTTP. The
//! demo participant of `geosaga dev` keeps the participant contract and passes every case;
//! a participant with one flaw at a time is caught, by the checks that name that flaw.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use testkit::free_port;
use testkit::process::GeosagaProcess;

/// Runs `geosaga check FILE --input INPUT --json`: the exit code and the report.
fn check(file: &Path, input: &Value) -> (Option<i32>, Value) {
    check_with(&[file.to_str().unwrap()], input)
}

/// Runs `geosaga check ARGS --input INPUT --json`.
fn check_with(args: &[&str], input: &Value) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .arg("check")
        .args(args)
        .args(["--input", &input.to_string(), "--json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// `(case, check)` of every check that did not hold.
fn failures(report: &Value) -> BTreeSet<(String, String)> {
    let mut failed = BTreeSet::new();
    for case in report["cases"].as_array().unwrap() {
        for check in case["checks"].as_array().unwrap() {
            if check["verdict"] == "fail" {
                failed.insert((
                    case["case"].as_str().unwrap().to_owned(),
                    check["name"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_participant_passes_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let (api, demo) = (free_port(), free_port());
    let dev = GeosagaProcess::launch(
        [
            "dev",
            "--listen",
            &format!("127.0.0.1:{api}"),
            "--demo-listen",
            &format!("127.0.0.1:{demo}"),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--no-regions",
        ]
        .map(String::from)
        .to_vec(),
        Vec::new(),
        dir.path().join("dev.log"),
        format!("http://127.0.0.1:{api}"),
    );
    dev.wait_ready().await;
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/transfer.json")).unwrap();
    let file = dir.path().join("transfer.json");
    std::fs::write(&file, text.replace("127.0.0.1:7380", &format!("127.0.0.1:{demo}"))).unwrap();

    let input = json!({"from": "alice", "to": "bob", "amount": 5});
    let (code, report) = tokio::task::spawn_blocking(move || check(&file, &input)).await.unwrap();
    assert_eq!(failures(&report), BTreeSet::new(), "{report:#}");
    assert_eq!(code, Some(0));
    let cases: Vec<&str> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    // Plain, three failures, four repeats, three lost answers, three exhausted, two late
    // actions (notify has no compensation), three restarts (one per action).
    assert_eq!(cases.len(), 19, "{cases:#?}");
    assert!(
        cases.contains(&"the coordinator restarts when action 3 arrives"),
        "{cases:#?}"
    );
    // The same definition, registered with `geosaga dev`, checked by name.
    let server = dev.url.clone();
    let input = json!({"from": "alice", "to": "bob", "amount": 5});
    let (code, by_name) = tokio::task::spawn_blocking(move || check_with(&["transfer", "--server", &server], &input))
        .await
        .unwrap();
    assert_eq!((code, failures(&by_name)), (Some(0), BTreeSet::new()), "{by_name:#}");
    assert_eq!(by_name["cases"].as_array().unwrap().len(), 19);
    // The verify reads were made and compared.
    let repeated = &report["cases"][4];
    assert!(
        repeated["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("`debit` applied once")),
        "{repeated:#}"
    );
}

/// A transfer at the flawed participant's `flavour`, quick to retry.
fn transfer(base: &str, flavour: &str) -> Value {
    let http = |op: &str, account: &str| {
        json!({"http": {"method": "POST", "url": format!("{base}/{flavour}/{op}"),
                        "body": {"account": format!("{{{{input.{account}}}}}"), "amount": "{{input.amount}}"}}})
    };
    let verify = json!({"method": "GET", "url": format!("{base}/{flavour}/balances")});
    json!({
        "name": format!("transfer-{flavour}"),
        "defaults": {"timeout_ms": 2000, "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 10},
                     "compensation_retry": {"initial_backoff_ms": 10, "max_backoff_ms": 10}},
        "steps": [
            {"name": "debit", "action": http("debit", "from"), "compensation": http("debit/undo", "from"), "verify": verify},
            {"name": "credit", "action": http("credit", "to"), "compensation": http("credit/undo", "to"), "verify": verify},
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flawed_participant_is_caught_by_the_check_that_names_its_flaw() {
    let base = support::flawed::serve().await;
    let dir = tempfile::tempdir().unwrap();
    let input = json!({"from": "alice", "to": "bob", "amount": 5});
    let mut runs = Vec::new();
    for flavour in ["sound", "ignores-key", "double-refund", "late-applies"] {
        let file = dir.path().join(format!("{flavour}.json"));
        std::fs::write(&file, transfer(&base, flavour).to_string()).unwrap();
        let input = input.clone();
        runs.push((
            flavour,
            tokio::task::spawn_blocking(move || check(&file, &input)).await.unwrap(),
        ));
    }
    let has = |failed: &BTreeSet<(String, String)>, case: &str, check: &str| {
        failed.iter().any(|(c, k)| c.starts_with(case) && k.starts_with(check))
    };
    for (flavour, (code, report)) in runs {
        let failed = failures(&report);
        println!("{flavour}: exit {code:?}, failed {failed:#?}");
        match flavour {
            "sound" => {
                assert_eq!(failed, BTreeSet::new(), "{report:#}");
                assert_eq!(code, Some(0));
            }
            "ignores-key" => {
                assert_eq!(code, Some(20));
                assert!(
                    has(
                        &failed,
                        "every action delivered twice, in sequence",
                        "every copy gets the same answer"
                    ),
                    "{failed:#?}"
                );
                assert!(
                    has(
                        &failed,
                        "every action delivered twice, concurrently",
                        "`debit` applied once"
                    ),
                    "{failed:#?}"
                );
                assert!(
                    has(
                        &failed,
                        "the answer of `debit` lost once",
                        "the retry gets the first answer"
                    ),
                    "{failed:#?}"
                );
            }
            "double-refund" => {
                assert_eq!(code, Some(20));
                assert!(
                    has(
                        &failed,
                        "every action and compensation delivered twice, in sequence",
                        "`debit` applied once"
                    ),
                    "{failed:#?}"
                );
                assert!(
                    failed
                        .iter()
                        .all(|(case, _)| case.contains("compensation delivered twice")),
                    "only repeated compensations show the flaw: {failed:#?}"
                );
            }
            "late-applies" => {
                assert_eq!(code, Some(20));
                assert!(
                    has(
                        &failed,
                        "the action of `debit` arrives after its compensation",
                        "the late action is refused"
                    ),
                    "{failed:#?}"
                );
                assert!(
                    has(
                        &failed,
                        "the action of `credit` arrives after its compensation",
                        "neither changes what verify reads"
                    ),
                    "{failed:#?}"
                );
            }
            other => unreachable!("{other}"),
        }
    }
}

#[test]
fn steps_check_cannot_run_are_refused_with_the_reason() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_geosaga"))
            .arg("check")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let input = r#"{"from":"us/alice","to":"eu/bob","amount":5}"#;
    let (code, stderr) = run(&["examples/transfer_regions.json", "--input", input]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("reads or writes the regions: pass --region NAME=URL"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let rust = dir.path().join("rust.json");
    let doc = json!({"name": "r", "steps": [{"name": "a", "action": {"rust": {"handler": "pay"}}}]});
    std::fs::write(&rust, doc.to_string()).unwrap();
    let (code, stderr) = run(&[rust.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("runs the Rust handler `pay`"), "{stderr}");

    let (code, stderr) = run(&["examples/transfer.json", "--input", r#"{"from":"alice"}"#]);
    assert_eq!(code, Some(5), "an input the definition refuses: {stderr}");
}
