//! A coordinator paused past its lease (SIGSTOP) while its sagas run on PostgreSQL, another
//! adopting them, then SIGCONT: the paused one writes nothing (its tasks find they were
//! fenced, or hold their attempts until a renewal and then find it), no step runs under two
//! owners at once, nothing is applied twice, and every saga settles. Real processes, a real
//! PostgreSQL and a real participant over HTTP; about 15 s.

mod support;

use std::time::Duration;

use sqlx::Row;
use support::participant;
use support::process::CoordinatorProcess;
use support::workload;

#[path = "../coordinator/tests/support/pg.rs"]
mod pg;

const SAGAS: usize = 200;
const LEASE_MS: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_paused_past_its_lease_writes_nothing() {
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (participant, base) = participant::start().await;
    let lease = LEASE_MS.to_string();
    let mut started = Vec::new();
    for node in ["paused", "adopter"] {
        let args = ["--allow-host", "127.0.0.1", "--lease-ms", &lease, "--node-id", node];
        started.push(CoordinatorProcess::start(db.url(), &args, dir.path().join(format!("{node}.log"))).await);
    }
    let adopter = started.pop().unwrap();
    let paused = started.pop().unwrap();
    workload::register(std::slice::from_ref(&paused.url), &participant::definition(&base)).await;

    // Sagas start on both; the paused one stops while it runs its share.
    let urls = vec![paused.url.clone(), adopter.url.clone()];
    let starts = tokio::spawn(workload::start_sagas(urls, SAGAS, 4, 16));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let paused_at = now_ms();
    paused.signal("STOP");

    // The adopter takes every unsettled saga of the paused one once its lease ran out.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let owned_by_paused = || async {
        sqlx::query("SELECT count(*) AS n FROM sagas WHERE owner = 'paused' AND status IN ('running', 'compensating')")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>("n")
    };
    let mut waited = Duration::ZERO;
    while owned_by_paused().await > 0 {
        assert!(
            waited < Duration::from_secs(60),
            "the adopter never took the paused one's sagas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    let adopted = adopter.log_text().matches("adopted saga").count();
    assert!(adopted > 0, "the adopter adopted sagas: {}", adopter.log_text());
    // Past the lease for a while more: the adopter runs what it adopted.
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    let resumed_at = now_ms();
    paused.signal("CONT");

    let ids = starts.await.unwrap();
    let both = vec![paused.url.clone(), adopter.url.clone()];
    let settled = workload::wait_settled(&both, &ids, Duration::from_secs(120)).await;
    workload::check(&participant, &ids, &settled);

    // The paused one wrote nothing to the sagas it had before it stopped: none of them
    // changed under its name after it resumed (starts that reached it while it was stopped
    // are new sagas, its own to run).
    let touched: i64 = sqlx::query(
        "SELECT count(*) AS n FROM sagas WHERE owner = 'paused' AND updated_at_ms >= $1 AND created_at_ms < $2",
    )
    .bind(resumed_at)
    .bind(paused_at)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get("n");
    assert_eq!(touched, 0, "a saga of the paused coordinator changed after it resumed");
    let log = paused.log_text();
    let gave_up = log.matches("another coordinator owns the saga now").count();
    assert!(
        gave_up > 0 || log.contains("holding attempts"),
        "the paused coordinator's tasks found they were fenced: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "{SAGAS} sagas, one coordinator paused past its lease: {adopted} adopted, {gave_up} tasks of the paused one \
         fenced, {} requests repeated",
        workload::repeated_requests(&participant)
    );
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}
