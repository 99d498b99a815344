//! Three regions on SQLite under faults: the workload and checks of
//! `support/regions_faults.rs` (linearizable strong histories, fresh-enough bounded reads,
//! no acknowledged strong write lost, async writes everywhere) through a SIGKILL and a
//! partition.

mod support;

use support::regions::Cluster;
use support::regions_faults::{LATENCY_MS, SETTINGS, linearizable_through_kills_and_partitions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histories_stay_linearizable_through_kills_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, LATENCY_MS).await;
    linearizable_through_kills_and_partitions(&mut cluster).await;
}
