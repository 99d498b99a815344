//! Regions whose clocks differ: eu-west's clock moved ahead of the others' (the test-only
//! `clock_offset_ms`) by 0, 0.9 and 2 times `max_clock_offset_ms`, under the workload and
//! checks of `support/regions_faults.rs`: every strong history linearizable, every
//! bounded-staleness answer as fresh as its bound promised, no acknowledged strong write
//! lost, async writes everywhere.
//!
//! Within the offset, everything works, and the hybrid logical clocks take eu-west's closed
//! timestamps (`pred` of a timestamp ahead of the receiver, logical part `u32::MAX`), which
//! made a debug build panic in `Clock::update` before (issue #18). Beyond it, eu-west's
//! messages are refused with a `clock-skew` problem while their timestamps are too far
//! ahead (a strong write's intent, retried, is taken once the receiver's clock caught up
//! with it; a batch closing at eu-west's `now` never is, so its async writes stay home):
//! the checks still hold, nothing panics, and both ends show the condition in
//! `/v1/regions`. A batch of eu-west's delayed in transit arrives within the offset and is
//! taken (under load, one is): its closed timestamp covers less real time than a replica's
//! bound assumes, so once a replica refused eu-west it reads eu-west's keys there, and an
//! answer served before that may be staler than its bound by up to the excess over the
//! maximum offset (what the check allows for eu-west's keys in that case). The three cases
//! take about 5 s each.

mod support;

use serde_json::Value;
use support::regions::Cluster;
use support::regions_faults::{BeyondOffset, LATENCY_MS, async_keys, start_workload, stop_and_check};

/// The workload's settings with a maximum clock offset larger than the links' latency, so
/// that an offset of twice it shows through the latency.
const MAX_OFFSET_MS: i64 = 50;
const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 600\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 50\n";
/// The bound of the bounded-staleness reads: a replica's answer is at least
/// `max_clock_offset_ms` stale, plus the shipping interval and the latency (more on a
/// loaded machine).
const MAX_STALENESS_MS: u64 = 1_000;

async fn regions_view(url: &str) -> Vec<Value> {
    reqwest::get(format!("{url}/v1/regions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn entry<'v>(view: &'v [Value], name: &str) -> &'v Value {
    view.iter().find(|r| r["name"] == name).unwrap()
}

/// Runs the workload with eu-west's clock `offset_ms` ahead; returns the cluster for the
/// checks of the case.
async fn skewed(dir: &std::path::Path, offset_ms: i64, converge: &[String]) -> Cluster {
    let cluster = Cluster::start_skewed(dir, SETTINGS, LATENCY_MS, [0, offset_ms, 0]).await;
    let running = start_workload(&cluster, MAX_STALENESS_MS);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let beyond = (offset_ms > MAX_OFFSET_MS).then(|| BeyondOffset {
        prefix: "eu/",
        excess_ms: u64::try_from(offset_ms - MAX_OFFSET_MS).unwrap(),
    });
    stop_and_check(&cluster, running, converge, beyond).await;
    for region in &cluster.regions {
        assert!(!region.log_text().contains("panicked"), "{}", cluster.logs());
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clocks_in_step_keep_every_guarantee() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = skewed(dir.path(), 0, &async_keys()).await;
    let view = regions_view(&cluster.regions[0].url).await;
    assert!(view.iter().all(|r| r["clock_skew"].is_null()), "{view:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clocks_apart_within_the_maximum_offset_keep_every_guarantee() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = skewed(dir.path(), MAX_OFFSET_MS * 9 / 10, &async_keys()).await;
    for region in &cluster.regions {
        let view = regions_view(&region.url).await;
        assert!(
            view.iter().all(|r| r["clock_skew"].is_null()),
            "{}: {view:#?}",
            region.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clock_beyond_the_maximum_offset_is_refused_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    // eu-west's own log cannot ship: only the other homes' async writes converge.
    let converge: Vec<String> = async_keys().into_iter().filter(|k| !k.starts_with("eu/")).collect();
    let cluster = skewed(dir.path(), 2 * MAX_OFFSET_MS, &converge).await;
    // The receivers refuse eu-west and say so.
    for at in [0, 2] {
        let view = regions_view(&cluster.regions[at].url).await;
        let eu = entry(&view, "eu-west");
        let skew = &eu["clock_skew"][0];
        assert_eq!(skew["side"], "peer_ahead", "{eu:#}");
        assert!(skew["count"].as_u64().unwrap() > 0, "{eu:#}");
        assert!(
            skew["error"]
                .as_str()
                .unwrap()
                .contains("ahead of local time (max offset 50 ms)"),
            "{eu:#}"
        );
        let other = entry(&view, if at == 0 { "ap-south" } else { "us-east" });
        assert!(other["clock_skew"].is_null(), "{other:#}");
    }
    // eu-west learns that its timestamps are refused.
    let view = regions_view(&cluster.regions[1].url).await;
    for peer in ["us-east", "ap-south"] {
        let p = entry(&view, peer);
        assert!(
            p["clock_skew"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["side"] == "ours_ahead"),
            "{p:#}"
        );
    }
    assert!(
        cluster.regions[0].log_text().contains("refusing a peer's timestamps"),
        "{}",
        cluster.logs()
    );
    // A replica that refused eu-west's timestamps does not rely on a closed timestamp of
    // eu-west's it took before (a batch delayed in transit arrives within the offset, and
    // under load one does): eu-west's keys are read at eu-west, whatever the bound.
    for at in [0, 2] {
        let url = format!(
            "{}/v1/kv/eu/a0?consistency=bounded_staleness&max_staleness_ms=600000",
            cluster.regions[at].url
        );
        let r: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(r["served_by"], "eu-west", "{r}");
    }
}
