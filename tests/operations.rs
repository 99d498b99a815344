//! Operations with real processes: retention under load (sagas deleted once past their age,
//! archived lines that rebuild the API's views), backups taken under load and restored, and
//! the refusal of a schema newer than the binary.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::workload;
use testkit::participant;
use testkit::process::CoordinatorProcess;

use testkit::pg;

fn geosaga(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_geosaga")).args(args).output().unwrap()
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A saga that ends `stuck`: step `c` is refused, and `a`'s compensation calls a path the
/// participant does not have (404, a permanent failure).
fn stuck_definition(base: &str) -> Value {
    json!({"name": "doomed", "steps": [
        {"name": "a", "action": {"http": {"method": "POST", "url": format!("{base}/act/a"), "body": {}}},
         "compensation": {"http": {"method": "POST", "url": format!("{base}/nowhere"), "body": {}}}},
        {"name": "c", "depends_on": ["a"],
         "action": {"http": {"method": "POST", "url": format!("{base}/act/c"), "body": {"fail": true}}}}
    ]})
}

/// A saga that stays `running`: its one step calls a server that never answers.
fn held_definition(silent: &str) -> Value {
    json!({"name": "held", "steps": [
        {"name": "wait", "timeout_ms": 3_600_000,
         "action": {"http": {"method": "POST", "url": format!("{silent}/hold"), "body": {}}}}
    ]})
}

/// A server that accepts connections and never answers; returns its base URL.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    base
}

async fn start(url: &str, definition: &str) -> String {
    let client = reqwest::Client::new();
    let body = json!({"definition": definition, "input": {}});
    let saga: Value = client
        .post(format!("{url}/v1/sagas"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    saga["id"].as_str().expect("started").to_owned()
}

/// Reads each saga's view and log as soon as it has settled, until every one is read.
async fn capture_settled(url: &str, ids: &HashMap<String, bool>) -> HashMap<String, (Value, Value)> {
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.len() < ids.len() {
        for id in ids
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect::<Vec<_>>()
        {
            let (status, view) = get(&format!("{url}/v1/sagas/{id}")).await;
            assert_eq!(
                status, 200,
                "saga {id} was deleted before it was read (the test reads every 100 ms)"
            );
            if matches!(view["status"].as_str(), Some("completed" | "compensated")) {
                let (_, events) = get(&format!("{url}/v1/sagas/{id}/events")).await;
                seen.insert(id, (view, events));
            }
        }
        assert!(Instant::now() < deadline, "sagas did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Sagas run while retention (age 5 s, batches of 10, archive on) deletes the finished ones:
/// every finished saga is archived once and then gone (404), while older stuck and running
/// sagas stay; the archive rebuilds exactly the views the API showed.
async fn retention_under_load(database: &str, dir: &Path) {
    const SAGAS: usize = 120;
    let archive = dir.join("archive");
    let (participant, base) = participant::start().await;
    let silent = silent_server().await;
    let coordinator = CoordinatorProcess::start(
        database,
        &[
            "--allow-host",
            "127.0.0.1",
            "--retention-age",
            "5s",
            "--idempotency-window",
            "2s",
            "--retention-batch",
            "10",
            "--retention-archive",
            archive.to_str().unwrap(),
        ],
        dir.join("coordinator.log"),
    )
    .await;
    let url = coordinator.url.clone();
    let urls = vec![url.clone()];
    for definition in [
        participant::definition(&base),
        stuck_definition(&base),
        held_definition(&silent),
    ] {
        workload::register(&urls, &definition).await;
    }
    let stuck = start(&url, "doomed").await;
    let held = start(&url, "held").await;

    let ids = workload::start_sagas(urls.clone(), SAGAS, 4, 8).await;
    let views = capture_settled(&url, &ids).await;
    let settled: HashMap<String, String> = views
        .iter()
        .map(|(id, (view, _))| (id.clone(), view["status"].as_str().unwrap().to_owned()))
        .collect();
    workload::check(&participant, &ids, &settled);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut gone = HashSet::new();
    while gone.len() < ids.len() {
        for id in ids.keys().filter(|id| !gone.contains(*id)).cloned().collect::<Vec<_>>() {
            if get(&format!("{url}/v1/sagas/{id}")).await.0 == 404 {
                assert_eq!(get(&format!("{url}/v1/sagas/{id}/events")).await.0, 404);
                gone.insert(id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} finished sagas were not deleted",
            ids.len() - gone.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Older than every deleted saga, but not finished: kept.
    for (id, status) in [(&stuck, "stuck"), (&held, "running")] {
        let (code, view) = get(&format!("{url}/v1/sagas/{id}")).await;
        assert_eq!((code, view["status"].as_str()), (200, Some(status)), "{view}");
    }

    let archived = coordinator::archive::read_sagas(&archive).unwrap();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for saga in &archived {
        *lines.entry(saga.saga.id.to_string()).or_default() += 1;
    }
    assert_eq!(lines.len(), SAGAS, "every deleted saga archived, nothing else");
    assert!(lines.values().all(|&n| n == 1), "each once");
    for (id, (view, events)) in &views {
        let id = id.parse().unwrap();
        let (saga, definition) = coordinator::archive::find(&archive, id).unwrap().expect("archived");
        let rebuilt = coordinator::api::views::SagaResponse::new(&saga.view(&definition).unwrap(), None);
        assert_eq!(&serde_json::to_value(rebuilt).unwrap(), view, "the view of {id}");
        let log = coordinator::api::views::EventLog {
            events: saga.events.iter().map(Into::into).collect(),
        };
        assert_eq!(&serde_json::to_value(log).unwrap(), events, "the log of {id}");
    }
    let (one, (view, events)) = views.iter().next().unwrap();
    let shown = geosaga(&["archive", "show", archive.to_str().unwrap(), one]);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert_eq!(&serde_json::from_slice::<Value>(&shown.stdout).unwrap(), view);
    let shown = geosaga(&["archive", "show", archive.to_str().unwrap(), one, "--events"]);
    assert_eq!(&serde_json::from_slice::<Value>(&shown.stdout).unwrap(), events);
    let missing = geosaga(&["archive", "show", archive.to_str().unwrap(), &stuck]);
    assert_eq!(missing.status.code(), Some(3), "a saga not archived is not found");

    let (_, metrics) = get(&format!("{url}/metrics")).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for line in [
        format!("geosaga_retention_deleted_sagas_total {SAGAS}"),
        format!("geosaga_retention_archived_sagas_total {SAGAS}"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in the metrics");
    }
    eprintln!("{SAGAS} sagas archived and deleted; the stuck and the running saga kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_retention_deletes_finished_sagas_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    retention_under_load(db.to_str().unwrap(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_retention_deletes_finished_sagas_under_load() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    retention_under_load(db.url(), dir.path()).await;
}

/// The statuses of a SQLite file's sagas, read directly.
async fn statuses_in(path: &Path) -> HashMap<String, String> {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, status FROM sagas")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

/// A backup taken while sagas run, restored after the coordinator is lost: a coordinator on
/// the restored file finishes every saga that was running in it, running again the steps
/// it had run since the backup under the same idempotency keys, so that the participant
/// applies nothing twice; sagas started after the backup are not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_restores_and_finishes_its_sagas() {
    const SAGAS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let copy = dir.path().join("backup.db");
    let (participant, base) = participant::start().await;
    let mut first = CoordinatorProcess::start(
        db.to_str().unwrap(),
        &["--allow-host", "127.0.0.1", "--node-id", "first"],
        dir.path().join("first.log"),
    )
    .await;
    let urls = vec![first.url.clone()];
    workload::register(&urls, &participant::definition(&base)).await;
    let load = tokio::spawn(workload::start_sagas(urls.clone(), SAGAS, 4, 8));
    // Take the backup once some sagas are done and others run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while participant.ledger.lock().unwrap().applied.len() < 60 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = geosaga(&["backup", "--database", db.to_str().unwrap(), copy.to_str().unwrap()]);
    assert_eq!(
        taken.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let printed = String::from_utf8_lossy(&taken.stdout);
    assert!(
        printed.contains("backup written to") && printed.contains("sagas"),
        "{printed}"
    );
    let ids = load.await.unwrap();
    let ran_on = workload::wait_settled(&urls, &ids, Duration::from_secs(120)).await;
    workload::check(&participant, &ids, &ran_on);
    first.kill();

    let in_backup = statuses_in(&copy).await;
    let unsettled: Vec<&String> = in_backup
        .iter()
        .filter(|(_, s)| *s == "running" || *s == "compensating")
        .map(|(id, _)| id)
        .collect();
    assert!(
        !unsettled.is_empty(),
        "the backup caught sagas mid-flight: {in_backup:?}"
    );
    assert!(in_backup.len() < SAGAS, "and before the last ones started");
    let requests_before: u32 = participant.ledger.lock().unwrap().requests.values().sum();

    let restored = dir.path().join("restored").join("geosaga.db");
    let refused = geosaga(&["restore", copy.to_str().unwrap(), "--database", db.to_str().unwrap()]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "an existing database is not replaced without --force"
    );
    let done = geosaga(&[
        "restore",
        copy.to_str().unwrap(),
        "--database",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("sagas were running"));

    let second = CoordinatorProcess::start(
        restored.to_str().unwrap(),
        &["--allow-host", "127.0.0.1", "--node-id", "second"],
        dir.path().join("second.log"),
    )
    .await;
    let restored_ids: HashMap<String, bool> = in_backup.keys().map(|id| (id.clone(), ids[id])).collect();
    let settled = workload::wait_settled(
        std::slice::from_ref(&second.url),
        &restored_ids,
        Duration::from_secs(120),
    )
    .await;
    for id in &unsettled {
        assert!(
            matches!(settled[*id].as_str(), "completed" | "compensated"),
            "{id}: {}",
            settled[*id]
        );
        assert_eq!(settled[*id], ran_on[*id], "{id} ends as it did before the restore");
    }
    workload::check(&participant, &restored_ids, &settled);
    let requests_after: u32 = participant.ledger.lock().unwrap().requests.values().sum();
    assert!(requests_after > requests_before, "steps ran again after the restore");
    let known: HashSet<&str> = ids.keys().map(String::as_str).collect();
    let keys: Vec<String> = participant.ledger.lock().unwrap().requests.keys().cloned().collect();
    assert!(
        keys.iter().all(|k| known.contains(k.split(':').next().unwrap())),
        "every request carried a key of a saga that was started"
    );
    let later = ids.keys().find(|id| !in_backup.contains_key(*id)).unwrap();
    assert_eq!(get(&format!("{}/v1/sagas/{later}", second.url)).await.0, 404);
    eprintln!(
        "backup held {} of {SAGAS} sagas, {} of them unsettled; all finished after the restore, {} requests repeated",
        in_backup.len(),
        unsettled.len(),
        requests_after - requests_before
    );
}

/// `geosaga backup` and `restore` refuse a PostgreSQL URL with the pg_dump commands to use,
/// and a database another process has open is not replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_refuses_a_database_in_use_and_points_postgres_to_pg_dump() {
    let out = geosaga(&["backup", "--database", "postgres://db.example/geosaga", "/tmp/never"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("pg_dump --format=custom"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let copy = dir.path().join("copy.db");
    let running = CoordinatorProcess::start(db.to_str().unwrap(), &[], dir.path().join("c.log")).await;
    let taken = geosaga(&["backup", "--database", db.to_str().unwrap(), copy.to_str().unwrap()]);
    assert_eq!(
        taken.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let again = geosaga(&["backup", "--database", db.to_str().unwrap(), copy.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"));
    let busy = geosaga(&[
        "restore",
        copy.to_str().unwrap(),
        "--database",
        db.to_str().unwrap(),
        "--force",
    ]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another process has the database open"), "{stderr}");
    assert_eq!(
        get(&format!("{}/readyz", running.url)).await.0,
        200,
        "the running coordinator is unharmed"
    );
}

/// A coordinator refuses to start on a database migrated by a newer geosaga, and says so.
#[test]
fn serve_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        drop(coordinator::store::sqlite::SqliteStore::open(&db).await.unwrap());
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let out = geosaga(&["serve", "--database", db.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the schema is at version 9999, newer than this geosaga"),
        "{stderr}"
    );
}
