//! Upgrades: a database of every schema version, written by the geosaga of that version
//! and left with sagas in flight by a SIGKILL (`tests/fixtures/upgrade/`, whose README and
//! `make` script say how each was made), opens with this binary, which migrates it and
//! finishes every saga that was in flight: the steps that were running run again under
//! their idempotency keys, and no step that had finished runs twice.
//!
//! The fixtures' steps call `http://participant.fixture/...`; the coordinator reaches the
//! test's participant through `HTTP_PROXY` (which the HTTP client honours), so the fixtures
//! name no port.
//!
//! `make_fixture` (ignored) is the other half: it runs the binary named by
//! `GEOSAGA_FIXTURE_BIN` and writes `GEOSAGA_FIXTURE_OUT` (`.db`: SQLite, `.sql`: a
//! PostgreSQL dump).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;
use support::workload;
use testkit::participant;
use testkit::process::CoordinatorProcess;

use testkit::pg;

/// The host the fixtures' steps call.
const HOST: &str = "participant.fixture";
/// Sagas in a fixture.
const SAGAS: usize = 60;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// What a fixture's log says of one saga before the upgrade.
#[derive(Debug, Default)]
struct Before {
    status: String,
    fail: bool,
    /// Idempotency keys of actions and compensations whose final outcome the log holds.
    finished: HashSet<String>,
    /// Keys of attempts started and not finished: in flight at the SIGKILL.
    open: HashSet<String>,
}

/// Reads every saga and its log from `rows` (`id, status, input, event` per event, in order).
fn before(rows: Vec<(String, String, Value, Value)>) -> HashMap<String, Before> {
    let mut sagas: HashMap<String, Before> = HashMap::new();
    for (id, status, input, event) in rows {
        let saga = sagas.entry(id.clone()).or_default();
        saga.status = status;
        saga.fail = input["fail"] == json!(true);
        let step = event["step"].as_str().unwrap_or_default();
        // An attempt that failed and will be retried is neither: it may run again or not.
        let (phase, state) = match event["type"].as_str().unwrap_or_default() {
            "step_started" => ("action", Some(false)),
            "compensation_started" => ("compensation", Some(false)),
            "step_succeeded" | "step_failed" => ("action", Some(true)),
            "compensation_succeeded" | "compensation_failed" => ("compensation", Some(true)),
            "step_attempt_failed" => ("action", None),
            "compensation_attempt_failed" => ("compensation", None),
            _ => continue,
        };
        let key = format!("{id}:{step}:{phase}");
        saga.open.remove(&key);
        match state {
            Some(true) => {
                saga.finished.insert(key);
            }
            Some(false) => {
                saga.open.insert(key);
            }
            None => {}
        }
    }
    sagas
}

async fn sqlite_before(path: &Path) -> HashMap<String, Before> {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT s.id, s.status, s.input, e.event FROM sagas s JOIN saga_events e ON e.saga_id = s.id \
         ORDER BY s.id, e.seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let json = |text: String| serde_json::from_str::<Value>(&text).unwrap();
    before(
        rows.into_iter()
            .map(|r| (r.get(0), r.get(1), json(r.get(2)), json(r.get(3))))
            .collect(),
    )
}

async fn postgres_before(url: &str) -> HashMap<String, Before> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT s.id::text, s.status, s.input, e.event FROM sagas s JOIN saga_events e ON e.saga_id = s.id \
         ORDER BY s.id, e.seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    before(
        rows.into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect(),
    )
}

/// Opens `database` (a copy of a fixture) with this binary and checks that every saga in
/// flight finishes, running again exactly the attempts that were open.
async fn upgrade(database: &str, sagas: HashMap<String, Before>, dir: &Path) {
    let in_flight: Vec<&String> = sagas
        .iter()
        .filter(|(_, s)| s.status == "running" || s.status == "compensating")
        .map(|(id, _)| id)
        .collect();
    assert!(!in_flight.is_empty(), "the fixture has sagas in flight");
    let (participant, base) = participant::start().await;
    let coordinator = CoordinatorProcess::start_with_env(
        database,
        &["--allow-host", HOST, "--node-id", "upgraded"],
        &[("HTTP_PROXY", &base), ("NO_PROXY", "")],
        dir.join("coordinator.log"),
    )
    .await;
    let ids: HashMap<String, bool> = sagas.iter().map(|(id, s)| (id.clone(), s.fail)).collect();
    let settled = workload::wait_settled(std::slice::from_ref(&coordinator.url), &ids, Duration::from_secs(120)).await;
    let ledger = participant.ledger.lock().unwrap();
    for (id, saga) in &sagas {
        let expected = if saga.fail { "compensated" } else { "completed" };
        assert_eq!(settled[id], expected, "{id} (was {})", saga.status);
        for key in &saga.open {
            assert!(
                ledger.requests.contains_key(key),
                "{key} was in flight and did not run again"
            );
        }
        for key in &saga.finished {
            assert!(!ledger.requests.contains_key(key), "{key} had finished and ran again");
        }
    }
    assert!(ledger.overlaps.is_empty(), "{:?}", ledger.overlaps);
    eprintln!(
        "{} sagas, {} in flight at the SIGKILL: all finished; {} idempotency keys called after the upgrade",
        sagas.len(),
        in_flight.len(),
        ledger.requests.len()
    );
}

/// The fixtures of a backend (`sqlite-vN.db`, `postgres-vN.sql`), by version; one per
/// schema version this binary knows, or the test fails.
fn fixtures_of(backend: &str, extension: &str, known: i64) -> Vec<(i64, PathBuf)> {
    let found: Vec<(i64, PathBuf)> = (1..=known)
        .map(|v| (v, fixtures().join(format!("{backend}-v{v}.{extension}"))))
        .collect();
    for (version, path) in &found {
        assert!(
            path.is_file(),
            "no fixture for {backend} schema version {version} ({}): make one with tests/fixtures/upgrade/make",
            path.display()
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sqlite_schema_upgrades_with_its_sagas() {
    let known = coordinator::store::schema::known_version(&coordinator::store::sqlite::MIGRATOR);
    for (version, fixture) in fixtures_of("sqlite", "db", known) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("geosaga.db");
        std::fs::copy(&fixture, &db).unwrap();
        eprintln!("schema {version}:");
        let sagas = sqlite_before(&db).await;
        upgrade(db.to_str().unwrap(), sagas, dir.path()).await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&pool).await.unwrap();
        assert_eq!((newest, mode), (known, 2), "migrated, in incremental auto-vacuum");
        pool.close().await;
    }
}

/// Loads a plain-SQL dump into a fresh database.
async fn load_dump(dump: &Path) -> pg::TestDb {
    let db = pg::fresh_database().await;
    let sql = std::fs::read_to_string(dump).unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
    pool.close().await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_postgres_schema_upgrades_with_its_sagas() {
    let known = coordinator::store::schema::known_version(&coordinator::store::postgres::MIGRATOR);
    for (version, fixture) in fixtures_of("postgres", "sql", known) {
        let dir = tempfile::tempdir().unwrap();
        let db = load_dump(&fixture).await;
        eprintln!("schema {version}:");
        let sagas = postgres_before(db.url()).await;
        upgrade(db.url(), sagas, dir.path()).await;
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(newest, known, "migrated");
        pool.close().await;
    }
}

/// Runs the binary `GEOSAGA_FIXTURE_BIN` on a new database, starts sagas whose steps call
/// this test's participant, SIGKILLs it while many are in flight, and writes the database
/// to `GEOSAGA_FIXTURE_OUT` (`.db`: the SQLite file, its WAL folded in; `.sql`: a plain
/// `pg_dump --inserts` of the PostgreSQL database). `tests/fixtures/upgrade/make` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "makes a fixture; run by tests/fixtures/upgrade/make"]
async fn make_fixture() {
    let bin = PathBuf::from(std::env::var("GEOSAGA_FIXTURE_BIN").expect("GEOSAGA_FIXTURE_BIN"));
    let out = PathBuf::from(std::env::var("GEOSAGA_FIXTURE_OUT").expect("GEOSAGA_FIXTURE_OUT"));
    let dir = tempfile::tempdir().unwrap();
    let postgres = out.extension().is_some_and(|e| e == "sql");
    let pg_db = if postgres {
        Some(pg::fresh_database().await)
    } else {
        None
    };
    let sqlite = dir.path().join("geosaga.db");
    let database = match &pg_db {
        Some(db) => db.url().to_owned(),
        None => sqlite.display().to_string(),
    };
    let (participant, base) = participant::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("old.log")).unwrap();
    let mut old: Child = Command::new(&bin)
        .args([
            "serve",
            "--database",
            &database,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--allow-host", HOST, "--node-id", "old"])
        .env("HTTP_PROXY", &base)
        .env("NO_PROXY", "")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    workload::register(
        std::slice::from_ref(&url),
        &participant::definition(&format!("http://{HOST}")),
    )
    .await;
    let client = reqwest::Client::new();
    // All at once, so that many are in flight together.
    let starts = (0..SAGAS).map(|i| {
        let body =
            json!({"definition": "crashy", "input": {"fail": i % 4 == 0}, "idempotency_key": format!("fixture-{i}")});
        client.post(format!("{url}/v1/sagas")).json(&body).send()
    });
    for started in futures::future::join_all(starts).await {
        let r = started.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while participant.ledger.lock().unwrap().applied.len() < SAGAS * 3 / 2 {
        assert!(Instant::now() < deadline, "the old binary did not run the sagas");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    old.kill().unwrap();
    old.wait().unwrap();
    if let Some(db) = &pg_db {
        let server = pg::server();
        let dump = Command::new(server.program("pg_dump"))
            .args(["--inserts", "--no-owner", "--no-privileges", db.url()])
            .output()
            .unwrap();
        assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
        // psql's meta-commands (`\restrict` in newer pg_dumps) are not SQL: leave them out.
        let sql: String = String::from_utf8(dump.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('\\'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&out, sql).unwrap();
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&sqlite)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        pool.close().await;
        std::fs::copy(&sqlite, &out).unwrap();
    }
    let sagas = match &pg_db {
        Some(db) => postgres_before(db.url()).await,
        None => sqlite_before(&out).await,
    };
    let in_flight = sagas
        .values()
        .filter(|s| s.status == "running" || s.status == "compensating")
        .count();
    assert!(in_flight > 0, "no saga was in flight at the SIGKILL; run it again");
    eprintln!("{}: {} sagas, {in_flight} in flight", out.display(), sagas.len());
}

/// Several coordinators on one PostgreSQL, upgraded one at a time while sagas run: two run
/// the older binary `GEOSAGA_OLD_BIN` (the schema before this one); one is stopped and
/// started again with this binary, which migrates the database while the other old one
/// keeps running sagas on the migrated schema; then the second is upgraded the same way.
/// Every saga finishes, each step applied once, none run by two coordinators at once.
/// Needs the old binary, so it is run by hand (docs/operations.md, "Upgrades", says how
/// and what it printed):
///
/// `GEOSAGA_OLD_BIN=... cargo test -p geosaga --test upgrade rolling -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an older geosaga binary in GEOSAGA_OLD_BIN"]
async fn rolling_upgrade_on_one_postgres() {
    let old = PathBuf::from(std::env::var("GEOSAGA_OLD_BIN").expect("GEOSAGA_OLD_BIN"));
    let new = PathBuf::from(env!("CARGO_BIN_EXE_geosaga"));
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (participant, base) = participant::start().await;
    let start = |program: PathBuf, node: &'static str| {
        let (url, log) = (db.url().to_owned(), dir.path().join(format!("{node}.log")));
        async move {
            let args = ["--allow-host", "127.0.0.1", "--lease-ms", "2000", "--node-id", node];
            CoordinatorProcess::start_program(&program, &url, &args, &[], log).await
        }
    };
    let mut a = start(old.clone(), "a").await;
    let mut b = start(old.clone(), "b").await;
    let urls = vec![a.url.clone(), b.url.clone()];
    workload::register(&urls, &participant::definition(&base)).await;
    let first = tokio::spawn(workload::start_sagas_keyed(urls.clone(), 150, 4, 8, "first"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.terminate();
    let b = start(new.clone(), "b").await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    let known = coordinator::store::schema::known_version(&coordinator::store::postgres::MIGRATOR);
    assert_eq!(newest, known, "the upgraded coordinator migrated the database");
    // The old coordinator runs sagas on the migrated schema.
    let on_old = workload::start_sagas_keyed(vec![a.url.clone()], 50, 4, 4, "on-old").await;
    let ids_first = first.await.unwrap();
    a.terminate();
    let a = start(new, "a").await;
    let urls = vec![a.url.clone(), b.url.clone()];
    let last = workload::start_sagas_keyed(urls.clone(), 50, 4, 8, "last").await;
    let mut ids = ids_first;
    ids.extend(on_old);
    ids.extend(last);
    let settled = workload::wait_settled(&urls, &ids, Duration::from_secs(180)).await;
    workload::check(&participant, &ids, &settled);
    eprintln!(
        "rolling upgrade: {} sagas across two old and two new coordinators, all settled, {} requests repeated",
        ids.len(),
        workload::repeated_requests(&participant)
    );
    pool.close().await;
}
