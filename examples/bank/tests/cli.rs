//! The bank as a user runs it: its own process, driven with the `geosaga` CLI.
//!
//! The `geosaga` binary is the workspace's own, built beside this test (`cargo nextest run
//! --workspace` builds it; alone: `cargo build --bin geosaga`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `geosaga` CLI of this workspace.
fn geosaga_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("the test's path");
    let bin = deps
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("geosaga");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin geosaga` (cargo nextest run --workspace does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `geosaga saga start transfer --wait --json`: the exit code, and the saga (or, when the
/// start was refused, the error the CLI printed).
fn saga_start(url: &str, input: &str) -> (Option<i32>, serde_json::Value) {
    let output = Command::new(geosaga_binary())
        .args(["saga", "start", "transfer", "--input", input, "--wait", "--json"])
        .args(["--server", url, "--token", "bank-token"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let saga = serde_json::from_str(&stdout).unwrap_or_else(|_| serde_json::Value::String(format!("{stdout}{stderr}")));
    (output.status.code(), saga)
}

/// An account's balance in the bank's own database.
fn balance(bank: &Path, account: &str) -> i64 {
    let db = rusqlite::Connection::open(bank).unwrap();
    db.query_row("SELECT balance FROM accounts WHERE name = ?1", [account], |r| r.get(0))
        .unwrap_or(1000)
}

#[test]
fn transfers_run_as_sagas_driven_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.db");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("bank.log")).unwrap();
    // The flags of `geosaga serve`, and the bank's own database from its variable.
    let _service = Service(
        Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--token", "bank-token"])
            .arg("--database")
            .arg(dir.path().join("sagas.db"))
            .env("BANK_DATABASE", &bank)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the bank starts"),
    );
    let started = Instant::now();
    while reqwest::blocking::get(format!("{url}/readyz"))
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the bank is not ready: {}",
            std::fs::read_to_string(dir.path().join("bank.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, saga) = saga_start(&url, r#"{"from":"alice","to":"bob","amount":50}"#);
    assert_eq!((code, saga["status"].as_str()), (Some(0), Some("completed")), "{saga}");
    assert_eq!(
        saga["steps"][1]["output"],
        serde_json::json!({"account": "bob", "balance": 1050})
    );
    assert_eq!((balance(&bank, "alice"), balance(&bank, "bob")), (950, 1050));

    // A credit the bank refuses: the debit is refunded, the command exits 10.
    let (code, saga) = saga_start(&url, r#"{"from":"alice","to":"closed","amount":70}"#);
    assert_eq!(
        (code, saga["status"].as_str()),
        (Some(10), Some("compensated")),
        "{saga}"
    );
    assert_eq!(saga["steps"][0]["status"], "compensated", "{saga}");
    assert_eq!(balance(&bank, "alice"), 950);

    // An input that does not fit the Rust type is refused before any step (exit 5).
    let (code, saga) = saga_start(&url, r#"{"from":"alice","to":"bob","amount":"lots"}"#);
    assert_eq!(code, Some(5), "{saga}");
    assert!(saga.to_string().contains("/input/amount"), "{saga}");

    // The same API as geosaga serve: the console, metrics and the token.
    let client = reqwest::blocking::Client::new();
    let metrics = client.get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("geosaga_sagas_completed_total"), "{metrics}");
    assert_eq!(client.get(format!("{url}/ui")).send().unwrap().status(), 200);
    assert_eq!(client.get(format!("{url}/v1/sagas")).send().unwrap().status(), 401);
}
