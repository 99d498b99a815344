//! The `geosaga` command line as scripts use it: exit codes, offline commands, and `serve`'s
//! configuration from a file and from the environment.

mod support;

use std::process::Command;

use testkit::process::CoordinatorProcess;

fn geosaga(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn validate_accepts_the_examples_and_names_every_fault_of_a_bad_file() {
    let ok = geosaga(&[
        "definitions",
        "validate",
        "examples/transfer.json",
        "examples/book_trip.json",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "x", "steps": [{"name": "a", "depends_on": ["nope"], "action": {"rust": {"handler": "h"}}, "retry": {"max_attempts": 0}}]}"#,
    )
    .unwrap();
    let out = geosaga(&["definitions", "validate", bad.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "invalid definitions exit with 5");
    assert!(
        stdout.contains("/steps/0/depends_on/0: no step is named `nope`"),
        "{stdout}"
    );
    assert!(stdout.contains("/steps/0/retry/max_attempts"), "{stdout}");
}

#[test]
fn plan_prints_text_and_graphviz() {
    let text = geosaga(&["plan", "examples/book_trip.json"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reserve_car") && text.contains("[parallel]") && text.contains("undo reserve_car"),
        "{text}"
    );
    let dot = geosaga(&["plan", "--dot", "examples/book_trip.json"]);
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph \"book_trip\" {"), "{dot}");
    assert!(dot.contains("\"reserve_car\" -> \"charge\";"), "{dot}");
    assert!(
        dot.contains("\"undo reserve_car\" [label=\"undo reserve_car\\nPOST"),
        "{dot}"
    );
    assert!(
        !dot.contains("car\nPOST"),
        "labels use the \\n escape, not raw newlines: {dot}"
    );
}

#[test]
fn schema_command_prints_the_published_schema() {
    let out = geosaga(&["definitions", "schema"]);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/definition.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let out = geosaga(&["serve", "--listen", "0.0.0.0:0", "--database", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API tokens"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_reads_tokens_from_its_config_file_and_the_cli_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("geosaga.toml");
    std::fs::write(&config, "tokens = [\"s3cret\"]\nallow_hosts = [\"127.0.0.1\"]\n").unwrap();
    let db = dir.path().join("g.db");
    let coordinator = CoordinatorProcess::start(
        db.to_str().unwrap(),
        &["--config", config.to_str().unwrap()],
        dir.path().join("log"),
    )
    .await;
    let client = reqwest::Client::new();
    let anonymous = client
        .get(format!("{}/v1/sagas", coordinator.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let with = client
        .get(format!("{}/v1/sagas", coordinator.url))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);

    let url = coordinator.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_geosaga"))
            .args([
                "definitions",
                "apply",
                "examples/transfer.json",
                "--server",
                &url,
                "--json",
            ])
            .env("GEOSAGA_TOKEN", "s3cret")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    // The example calls 127.0.0.1:7380, which the config allows.
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["name"], "transfer");

    let url = coordinator.url.clone();
    let missing = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_geosaga"))
            .args(["saga", "show", "01a20177-0000-7000-8000-000000000000", "--server", &url])
            .env("GEOSAGA_TOKEN", "s3cret")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(missing.status.code(), Some(3), "an unknown saga exits with 3");
}

/// Runs `geosaga args` with its stdout a pipe whose reading end is already closed (what
/// `geosaga ... | head` comes to once `head` has read its lines).
fn geosaga_into_a_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(writer)
        .output()
        .unwrap()
}

fn assert_ends_quietly(out: &std::process::Output, command: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(geosaga::output::CLOSED_STDOUT),
        "{command} exits with 141 (128 + SIGPIPE) when its reader is gone: {stderr}"
    );
}

#[tokio::test]
async fn client_commands_end_quietly_when_their_reader_closes_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = geosaga_into_a_closed_pipe(&["region", "certs", "--out", certs.to_str().unwrap(), "--regions", "a,b"]);
    assert_ends_quietly(&out, "region certs");
    assert!(
        certs.join("a.pem").exists(),
        "the certificates are written before the printing"
    );
    assert_ends_quietly(
        &geosaga_into_a_closed_pipe(&["plan", "examples/book_trip.json"]),
        "plan",
    );

    // One step whose participant is nowhere (the discard port): the saga only has to start.
    let definition = dir.path().join("nowhere.json");
    std::fs::write(
        &definition,
        r#"{"name": "nowhere", "steps": [{"name": "call", "action": {"http": {"method": "POST", "url": "http://127.0.0.1:9/call"}}}]}"#,
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path().join("g.db").to_str().unwrap(),
        &["--allow-host", "127.0.0.1"],
        dir.path().join("log"),
    )
    .await;
    let url = coordinator.url.clone();
    let definition = definition.to_str().unwrap().to_owned();
    let outs = tokio::task::spawn_blocking(move || {
        [
            geosaga_into_a_closed_pipe(&["definitions", "apply", &definition, "--server", &url]),
            geosaga_into_a_closed_pipe(&["saga", "start", "nowhere", "--server", &url]),
            geosaga_into_a_closed_pipe(&["saga", "list", "--server", &url]),
        ]
    })
    .await
    .unwrap();
    for (out, command) in outs.iter().zip(["definitions apply", "saga start", "saga list"]) {
        assert_ends_quietly(out, command);
    }
}

#[tokio::test]
async fn server_token_and_json_may_come_before_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path().join("g.db").to_str().unwrap(),
        &["--config", &tokens_file(&dir)],
        dir.path().join("log"),
    )
    .await;
    let url = coordinator.url.clone();
    let [before, after_wins, refused] = tokio::task::spawn_blocking(move || {
        [
            geosaga(&["--server", &url, "--token", "s3cret", "--json", "saga", "list"]),
            // The same option after the subcommand wins over the one before it.
            geosaga(&[
                "--server",
                "http://127.0.0.1:1",
                "saga",
                "list",
                "--server",
                &url,
                "--token",
                "s3cret",
            ]),
            geosaga(&["--server", &url, "plan", "examples/transfer.json"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(
        before.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    assert!(page.is_object(), "--json before the subcommand prints JSON: {page}");
    assert_eq!(
        after_wins.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after_wins.stderr)
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a command without a server refuses --server"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("go with the client commands"), "{stderr}");
}

/// A coordinator configuration requiring the token `s3cret`; returns its path.
fn tokens_file(dir: &tempfile::TempDir) -> String {
    let config = dir.path().join("geosaga.toml");
    std::fs::write(&config, "tokens = [\"s3cret\"]\n").unwrap();
    config.to_str().unwrap().to_owned()
}

#[test]
fn region_refuses_a_wrong_tls_path_before_creating_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("solo.db");
    let config = dir.path().join("regions.toml");
    std::fs::write(
        &config,
        format!(
            "[[regions]]\nname = \"solo\"\naddress = \"https://127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\ndata = \"{}\"\n\n\
             [tls]\nca = \"{dir}/missing/ca.pem\"\ncert = \"{dir}/missing/{{name}}.pem\"\nkey = \"{dir}/missing/{{name}}.key\"\n",
            store.display(),
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let out = geosaga(&["region", "--config", config.to_str().unwrap(), "--name", "solo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "tls: reading the CA certificate {}/missing/ca.pem",
            dir.path().display()
        )),
        "names the file it could not read: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["regions.toml"], "no store (or anything else) was created");
}

/// `geosaga dev | head -3`: once the reader is gone, the server goes on serving (it printed
/// its banner into a closed pipe; `println!` panicked there before).
#[tokio::test]
async fn dev_serves_on_when_its_banner_finds_stdout_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--demo-listen",
            "127.0.0.1:0",
        ])
        .args(["--no-regions", "--data-dir", dir.path().to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/definitions");
    let mut served = None;
    for _ in 0..300 {
        if let Ok(r) = reqwest::get(&url).await {
            served = Some(r.status());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The banner is printed before the server answers anything: an answer means it was.
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(served.map(|s| s.as_u16()), Some(200), "dev answered on {url}");
    assert_eq!(exited, None, "dev is still running after printing into a closed pipe");
}
