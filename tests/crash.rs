//! Crash tests with real processes: coordinators killed with SIGKILL at random moments
//! (and once while a compensation is in flight), restarted, and every saga checked against
//! what a real participant service saw.

mod support;

use std::time::Duration;

use support::workload;
use testkit::participant;
use testkit::process::CoordinatorProcess;

const SAGAS: usize = 300;
const KILLS: usize = 20;

/// Kills `coordinator` `KILLS` times at random moments while sagas start and run; the first
/// kill waits for a compensation to be in flight. Returns after the last restart.
async fn kill_repeatedly(coordinator: &mut CoordinatorProcess, participant: &participant::Participant) {
    for k in 0..KILLS {
        if k == 0 {
            let undo = participant.undo_in_flight.notified();
            tokio::time::timeout(Duration::from_secs(60), undo)
                .await
                .expect("a compensation ran");
        } else {
            tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 250)).await;
        }
        coordinator.restart().await;
    }
}

async fn crash_run(database: &str, dir: &std::path::Path) {
    let (participant, base) = participant::start().await;
    let mut coordinator = CoordinatorProcess::start(
        database,
        &[
            "--allow-host",
            "127.0.0.1",
            "--lease-ms",
            "2000",
            "--node-id",
            "crash-test",
        ],
        dir.join("coordinator.log"),
    )
    .await;
    let urls = vec![coordinator.url.clone()];
    workload::register(&urls, &participant::definition(&base)).await;

    let starts = tokio::spawn(workload::start_sagas(urls.clone(), SAGAS, 4, 16));
    kill_repeatedly(&mut coordinator, &participant).await;
    let ids = starts.await.unwrap();
    let settled = workload::wait_settled(&urls, &ids, Duration::from_secs(180)).await;
    workload::check(&participant, &ids, &settled);
    let compensated = settled.values().filter(|s| *s == "compensated").count();
    assert_eq!(compensated, SAGAS / 4, "every fourth saga fails and compensates");
    eprintln!(
        "{SAGAS} sagas, {KILLS} SIGKILLs: {compensated} compensated, {} requests repeated after crashes",
        workload::repeated_requests(&participant)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_coordinator_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geosaga.db");
    crash_run(db.to_str().unwrap(), dir.path()).await;
}

use testkit::pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_coordinator_survives_sigkill() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    crash_run(db.url(), dir.path()).await;
}

/// `n` coordinators share one PostgreSQL; one of them is killed for good halfway. The
/// others adopt its sagas once its lease runs out; every saga finishes and no step ever
/// runs under two owners at once (the participant watches for overlapping requests).
async fn shared_run(n: usize) {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (participant, base) = participant::start().await;
    let mut coordinators = Vec::new();
    for i in 0..n {
        let node = format!("node-{i}");
        let log = dir.path().join(format!("{node}.log"));
        coordinators.push(
            CoordinatorProcess::start(
                db.url(),
                &["--allow-host", "127.0.0.1", "--lease-ms", "1500", "--node-id", &node],
                log,
            )
            .await,
        );
    }
    let urls: Vec<String> = coordinators.iter().map(|c| c.url.clone()).collect();
    workload::register(&urls, &participant::definition(&base)).await;
    let starts = tokio::spawn(workload::start_sagas(urls.clone(), SAGAS, 4, 16));
    // Let every coordinator own running sagas, then kill the first one for good.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let victim = coordinators.remove(0);
    drop(victim); // SIGKILL
    let ids = starts.await.unwrap();
    let survivors: Vec<String> = coordinators.iter().map(|c| c.url.clone()).collect();
    let settled = workload::wait_settled(&survivors, &ids, Duration::from_secs(180)).await;
    workload::check(&participant, &ids, &settled);
    let adoptions: usize = coordinators
        .iter()
        .map(|c| c.log_text().matches("adopted saga").count())
        .sum();
    assert!(adoptions > 0, "the survivors adopted the dead coordinator's sagas");
    eprintln!(
        "{n} coordinators, one killed: {} sagas settled, {adoptions} adopted",
        settled.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_postgres_one_killed() {
    shared_run(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_coordinators_on_postgres_one_killed() {
    shared_run(3).await;
}

/// PostgreSQL crashes and comes back while sagas run: the coordinator retries its writes,
/// reports the outage on /readyz, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load() {
    let server = std::sync::Arc::new(tokio::task::spawn_blocking(pg::PgServer::dedicated).await.unwrap());
    let db = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (participant, base) = participant::start().await;
    let coordinator = CoordinatorProcess::start(
        db.url(),
        &[
            "--allow-host",
            "127.0.0.1",
            "--lease-ms",
            "5000",
            "--node-id",
            "pg-restart",
        ],
        dir.path().join("coordinator.log"),
    )
    .await;
    let urls = vec![coordinator.url.clone()];
    workload::register(&urls, &participant::definition(&base)).await;
    let starts = tokio::spawn(workload::start_sagas(urls.clone(), SAGAS, 4, 16));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let down = server.clone();
    tokio::task::spawn_blocking(move || down.stop()).await.unwrap();
    // While the database is down, the coordinator says so.
    let client = reqwest::Client::new();
    let mut saw_unready = false;
    for _ in 0..50 {
        let status = client
            .get(format!("{}/readyz", coordinator.url))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(503)) {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let up = server.clone();
    tokio::task::spawn_blocking(move || up.start()).await.unwrap();

    let ids = starts.await.unwrap();
    let settled = workload::wait_settled(&urls, &ids, Duration::from_secs(180)).await;
    workload::check(&participant, &ids, &settled);
    assert!(saw_unready, "/readyz reported the outage");
    assert!(
        coordinator.log_text().contains("retrying"),
        "the coordinator logged its retries"
    );
}
