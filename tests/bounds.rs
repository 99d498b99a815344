//! Inputs that used to cost without bound, from outside the process: a template that
//! renders a huge request, a definition with 20,000 faulty steps, credentials in a step's
//! URL. Each is refused or failed with a clear error at a bounded cost.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use testkit::http::{eventually, get, post as post_json};
use testkit::process::CoordinatorProcess;
use tokio::sync::Notify;

/// The peak resident set of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

const RSS_BOUND: u64 = 256 << 20;

/// A definition whose last step's body holds 5,000 references to the input's `blob`.
fn blow_up(name: &str, before: Option<&str>) -> Value {
    let body: Vec<Value> = (0..5000).map(|_| json!("{{input.blob}}")).collect();
    let mut steps = Vec::new();
    if let Some(url) = before {
        steps.push(json!({"name": "wait", "action": {"http": {"method": "POST", "url": url}}}));
    }
    steps.push(
        json!({"name": "send", "action": {"http": {"method": "POST", "url": "http://127.0.0.1:9/blob", "body": body}}}),
    );
    json!({"name": name, "steps": steps})
}

/// A participant whose one route answers only once `release` is notified.
async fn held_participant(release: Arc<Notify>) -> String {
    let app = Router::new().route(
        "/wait",
        post(move || {
            let release = release.clone();
            async move {
                release.notified().await;
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wait", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn step<'v>(saga: &'v Value, name: &str) -> &'v Value {
    saga["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {saga}"))
}

/// 5,000 references to a 150,000-byte input would render 750 MB: the step fails for good
/// with the limit in its error, the coordinator stays under 256 MiB, and a saga that meets
/// that step after a crash and a recovery fails the same way.
#[tokio::test]
async fn a_template_blow_up_fails_the_step_and_not_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let mut coordinator = CoordinatorProcess::start(
        db.to_str().unwrap(),
        &["--allow-host", "127.0.0.1"],
        dir.path().join("log"),
    )
    .await;
    let release = Arc::new(Notify::new());
    let wait_url = held_participant(release.clone()).await;
    for definition in [blow_up("blowup", None), blow_up("blowup_later", Some(&wait_url))] {
        let (status, answer) = post_json(&coordinator.url, "/v1/definitions", definition).await;
        assert_eq!(status, 201, "{answer}");
    }
    let input = json!({"blob": "b".repeat(150_000)});

    let (status, saga) = post_json(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "blowup", "input": input}),
    )
    .await;
    assert_eq!(status, 201, "{saga}");
    assert_eq!(saga["status"], "compensated", "{saga}");
    let error = step(&saga, "send")["error"].clone();
    assert_eq!(error["kind"], "permanent", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("render more than 4194304 bytes") && message.contains("{{input.blob}}"),
        "{message}"
    );
    let pid = coordinator.pid().unwrap();
    assert!(peak_rss(pid) < RSS_BOUND, "peak RSS {} bytes", peak_rss(pid));

    // A second saga is in its first step (held by the participant) when the coordinator is
    // killed; the restarted one resumes it, and its next step is the blow-up.
    let (status, later) = post_json(
        &coordinator.url,
        "/v1/sagas",
        json!({"definition": "blowup_later", "input": input}),
    )
    .await;
    assert_eq!(status, 201, "{later}");
    let later_id = later["id"].as_str().unwrap().to_owned();
    let logs = || String::new();
    eventually(
        &coordinator.url,
        &format!("/v1/sagas/{later_id}/events"),
        Duration::from_secs(30),
        logs,
        |_, b| {
            b["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["type"] == "step_started"))
        },
    )
    .await;
    coordinator.kill();
    release.notify_waiters();
    // From now on the participant answers at once.
    let release_all = release.clone();
    tokio::spawn(async move {
        loop {
            release_all.notify_waiters();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    coordinator.restart().await;
    let id = saga["id"].as_str().unwrap();
    let (status, again) = get(&coordinator.url, &format!("/v1/sagas/{id}")).await;
    assert_eq!((status, &again["status"]), (200, &json!("compensated")), "{again}");
    let (_, events) = get(&coordinator.url, &format!("/v1/sagas/{id}/events")).await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "step_failed"),
        "{events}"
    );
    let resumed = eventually(
        &coordinator.url,
        &format!("/v1/sagas/{later_id}"),
        Duration::from_secs(60),
        || coordinator.log_text(),
        |_, b| b["status"] == "compensated",
    )
    .await;
    assert_eq!(step(&resumed, "wait")["status"], "succeeded", "{resumed}");
    let message = step(&resumed, "send")["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("render more than 4194304 bytes"), "{message}");
    let pid = coordinator.pid().unwrap();
    assert!(
        peak_rss(pid) < RSS_BOUND,
        "peak RSS after the restart {} bytes",
        peak_rss(pid)
    );
}

/// `geosaga definitions validate` on 20,000 faulty steps: one fault, at `/steps`, in well
/// under a second of CPU. The CPU time is the child's own (`wait4`), which a loaded
/// machine does not inflate the way it does wall-clock time; the bound is 5 s, against
/// about 0.1 s measured, so it cannot flake, yet the quadratic validation it replaced
/// (14.8 s) fails it.
#[test]
fn twenty_thousand_faulty_steps_are_refused_at_once() {
    let steps: Vec<Value> = (0..20_000)
        .map(|i| {
            json!({
                "name": format!("step {i}"),
                "depends_on": ["missing"],
                "action": {"http": {"method": "POST", "url": "ftp://x/{{steps.nope.output}}"}},
                "surplus": i,
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.json");
    std::fs::write(&file, json!({"name": "huge", "steps": steps}).to_string()).unwrap();

    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reports its CPU time"
    )]
    let child = Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args(["definitions", "validate", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let output = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.unwrap(), &mut out).unwrap();
        out
    });
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid, and wait4 reaps our own child exactly once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let stdout = output.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 5,
        "exit {status}: {stdout}"
    );
    assert!(
        stdout.contains("/steps: 20000 steps: at most 256 steps are allowed"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("/steps").count(), 1, "one fault only: {stdout}");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    println!("definitions validate, 20,000 faulty steps: {cpu:.3} s of CPU");
    assert!(cpu < 5.0, "{cpu:.3} s of CPU");
}

/// A step's URL with credentials: the error stored and shown has them redacted.
#[tokio::test]
async fn credentials_in_a_step_url_are_not_stored_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let coordinator = CoordinatorProcess::start(
        db.to_str().unwrap(),
        &["--allow-host", "127.0.0.1"],
        dir.path().join("log"),
    )
    .await;
    // A participant that refuses the call: the error names the URL the step called.
    let refusing = Router::new().route(
        "/x",
        post(|| async { (axum::http::StatusCode::BAD_REQUEST, "no such account") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, refusing).await.unwrap() });
    let definition = json!({"name": "creds", "steps": [{"name": "call", "retry": {"max_attempts": 1},
        "action": {"http": {"method": "POST", "url": format!("http://alice:hunter2@127.0.0.1:{port}/x")}}}]});
    let (status, answer) = post_json(&coordinator.url, "/v1/definitions", definition).await;
    assert_eq!(status, 201, "{answer}");
    let (status, saga) = post_json(
        &coordinator.url,
        "/v1/sagas?wait_ms=30000",
        json!({"definition": "creds", "input": {}}),
    )
    .await;
    assert_eq!(status, 201, "{saga}");
    let id = saga["id"].as_str().unwrap();
    let (_, events) = get(&coordinator.url, &format!("/v1/sagas/{id}/events")).await;
    let (_, listed) = get(&coordinator.url, "/v1/sagas").await;
    for shown in [&saga, &events, &listed] {
        let text = shown.to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(
        saga.to_string().contains("HTTP 400 from http://***@127.0.0.1"),
        "{saga}"
    );
    // And the store holds no copy outside the definition, as its author wrote it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let stored: Vec<(String,)> =
        sqlx::query_as("SELECT event FROM saga_events UNION ALL SELECT coalesce(error, '') FROM sagas")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        stored.iter().any(|(text,)| text.contains("http://***@127.0.0.1")),
        "{stored:?}"
    );
    assert!(stored.iter().all(|(text,)| !text.contains("hunter2")), "{stored:?}");
    drop(coordinator);
}
