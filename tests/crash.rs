//! Crash tests with real processes: coordinators killed with SIGKILL at random moments
//! (and once while a compensation is in flight), restarted, and every saga checked against
//! what a real participant service saw.

mod support;

use std::time::Duration;

use support::participant;
use support::process::CoordinatorProcess;
use support::workload;

const SAGAS: usize = 300;
const KILLS: usize = 20;

/// Kills `coordinator` `KILLS` times at random moments while sagas start and run; the first
/// kill waits for a compensation to be in flight. Returns after the last restart.
async fn kill_repeatedly(coordinator: &mut CoordinatorProcess, participant: &participant::Participant) {
    for k in 0..KILLS {
        if k == 0 {
            let undo = participant.undo_in_flight.notified();
            tokio::time::timeout(Duration::from_secs(60), undo).await.expect("a compensation ran");
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
        &["--allow-host", "127.0.0.1", "--lease-ms", "2000", "--node-id", "crash-test"],
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
