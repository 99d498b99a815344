//! Convergence of three `geosaga region` processes under faults: a region SIGKILLed past
//! its peers' log retention is repaired by anti-entropy (and never serves a read its closed
//! timestamp cannot vouch for); concurrent writes of keys written anywhere converge by
//! last-writer-wins and are counted; counters incremented everywhere during a partition
//! lose nothing; a key range is re-homed online; a rule's replica set keeps its keys off
//! the other regions.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::regions::Cluster;
use testkit::http::JsonAnswer;
use testkit::http::{self, get, post, put};

const SETTINGS: &str =
    "quorum = \"quorum\"\nstrong_timeout_ms = 800\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n";

/// Polls `path` at `url` until `done` holds for its answer (at most `secs` s).
async fn eventually(cluster: &Cluster, url: &str, path: &str, secs: u64, done: impl Fn(u16, &Value) -> bool) -> Value {
    http::eventually(url, path, Duration::from_secs(secs), || cluster.logs(), done).await
}

/// A read served by `url`'s own copy, whatever its staleness.
fn local(key: &str) -> String {
    format!("/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=600000")
}

/// Waits until every region's own copy of `key` has `version`.
async fn everywhere(cluster: &Cluster, key: &str, version: &Value) -> Vec<Value> {
    let mut seen = Vec::new();
    for region in &cluster.regions {
        let name = region.name.clone();
        seen.push(
            eventually(cluster, &region.url, &local(key), 20, |s, b| {
                s == 200 && b["served_by"] == name.as_str() && b["version"] == *version
            })
            .await,
        );
    }
    seen
}

fn peer_status<'a>(regions: &'a Value, name: &str) -> &'a Value {
    regions.as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_killed_past_the_log_retention_converges_through_anti_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{SETTINGS}log_retention_entries = 5\nanti_entropy_interval_ms = 1500\n");
    let mut cluster = Cluster::start(dir.path(), &settings, 5).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    let (status, before) = put(&us, "us/before", json!({"value": 0, "consistency": "async"})).await;
    assert_eq!(status, 200, "{before}");
    everywhere(&cluster, "us/before", &before["version"]).await;

    cluster.regions[1].kill(); // eu-west, SIGKILL
    let mut written = Vec::new();
    for i in 0..20 {
        for (url, prefix) in [(&us, "us"), (&ap, "ap")] {
            let key = format!("{prefix}/missed{i}");
            let (status, w) = put(url, &key, json!({"value": i, "consistency": "async"})).await;
            assert_eq!(status, 200, "{w}");
            written.push((key, w["version"].clone(), i));
        }
    }
    // Two versions of one key: the replica must get the first one too (reads as of it).
    let (_, first) = put(&us, "us/twice", json!({"value": "first", "consistency": "async"})).await;
    let (_, second) = put(&us, "us/twice", json!({"value": "second", "consistency": "async"})).await;
    written.push(("us/twice".into(), second["version"].clone(), -1));
    let (status, _) = post(&ap, "/v1/counters/c/missed", json!({"increment": 3})).await;
    assert_eq!(status, 200);
    for region in [0, 2] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.regions[region]
            .log_text()
            .contains("replication log past its retention")
        {
            assert!(
                Instant::now() < deadline,
                "no truncation past eu-west\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Down long enough that the closed timestamp eu-west held is older than the bound below.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    cluster.regions[1].restart().await;

    // Until anti-entropy repaired the gap, eu-west must not vouch for its copy: a bounded
    // read either sees the write or is served by the home.
    let start = Instant::now();
    let mut checked = 0;
    loop {
        let (_, regions) = get(&eu, "/v1/regions").await;
        let repaired = ["us-east", "ap-south"].iter().all(|p| {
            let s = peer_status(&regions, p);
            s["anti_entropy_gap"] == false && s["anti_entropy_repaired"].as_u64().unwrap_or(0) > 0
        });
        for (key, version, _) in written.iter().step_by(7) {
            let (status, r) = get(
                &eu,
                &format!("/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=1000"),
            )
            .await;
            if status == 503 {
                continue; // too stale and the home not reached: refused, not wrong
            }
            assert_eq!(status, 200, "{key}: {r}");
            assert!(
                r["version"] == *version || r["served_by"] != "eu-west",
                "eu-west served {key} from a copy missing the write {version}: {r}"
            );
            checked += 1;
        }
        if repaired {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "anti-entropy did not repair eu-west: {regions}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(checked > 0);
    let (_, regions) = get(&eu, "/v1/regions").await;
    let repaired: u64 = ["us-east", "ap-south"]
        .iter()
        .map(|p| peer_status(&regions, p)["anti_entropy_repaired"].as_u64().unwrap())
        .sum();
    // 43 items were written while eu-west was down; the log kept 5 of each home's.
    assert!(repaired > 20, "{regions}");
    eprintln!(
        "eu-west: {repaired} items repaired by anti-entropy, gaps closed {} ms after its restart, {checked} bounded reads checked meanwhile",
        start.elapsed().as_millis()
    );
    assert!(cluster.regions[1].log_text().contains("anti-entropy repaired"));

    // Every region now holds the same versions, the first write of us/twice included.
    for (key, version, value) in &written {
        for r in everywhere(&cluster, key, version).await {
            if *value >= 0 {
                assert_eq!(r["value"], json!(value), "{r}");
            }
        }
    }
    let (status, old) = get(
        &eu,
        &format!("{}&as_of={}", local("us/twice"), first["version"].as_str().unwrap()),
    )
    .await;
    assert_eq!((status, old["value"].as_str()), (200, Some("first")), "{old}");
    for region in &cluster.regions {
        let name = region.name.clone();
        eventually(&cluster, &region.url, "/v1/counters/c/missed", 20, |s, b| {
            s == 200 && b["value"] == 3 && b["served_by"] == name.as_str()
        })
        .await;
    }
    // The log drains again: every cursor moved past the gap instead of wedging.
    eventually(&cluster, &us, "/v1/regions", 20, |_, b| {
        b.as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["unacked_entries"].as_i64().unwrap_or(0) == 0))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_anywhere_converge_by_last_writer_wins_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "[[rules]]\nprefix = \"m/\"\nregion = \"us-east\"\nwrites = \"anywhere\"\n";
    let cluster = Cluster::start_with_rules(dir.path(), SETTINGS, rules, 5).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());

    let (status, refused) = put(&eu, "m/k0", json!({"value": 1})).await;
    assert_eq!(
        status, 400,
        "strong writes of keys written anywhere are refused: {refused}"
    );
    assert!(
        refused["detail"].as_str().unwrap().contains("/consistency"),
        "{refused}"
    );

    const KEYS: usize = 4;
    for i in 0..KEYS {
        let key = format!("m/k{i}");
        let (status, base) = put(&ap, &key, json!({"value": "base", "consistency": "async"})).await;
        assert_eq!((status, base["served_by"].as_str()), (200, Some("ap-south")), "{base}");
        everywhere(&cluster, &key, &base["version"]).await;
    }
    // A key written twice at one side only: sequential, not a conflict. A retry of the first
    // write (same op id, same region) is answered with its result and writes nothing.
    let first = json!({"value": 1, "consistency": "async", "op_id": "solo-1"});
    let (_, solo) = put(&eu, "m/solo", first.clone()).await;
    let (status, retried) = put(&eu, "m/solo", first).await;
    assert_eq!(
        (status, retried["replayed"].as_bool(), &retried["version"]),
        (200, Some(true), &solo["version"]),
        "{retried}"
    );
    everywhere(&cluster, "m/solo", &solo["version"]).await;

    cluster.set_cut(0, true); // us-east alone on one side
    let mut winners = Vec::new();
    for i in 0..KEYS {
        let key = format!("m/k{i}");
        let (s1, a) = put(&us, &key, json!({"value": format!("us-{i}"), "consistency": "async"})).await;
        let (s2, b) = put(&eu, &key, json!({"value": format!("eu-{i}"), "consistency": "async"})).await;
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        let va: regions::Timestamp = a["version"].as_str().unwrap().parse().unwrap();
        let vb: regions::Timestamp = b["version"].as_str().unwrap().parse().unwrap();
        // Last writer wins on (timestamp, region): "us-east" > "eu-west" breaks a tie.
        winners.push(if (vb, "eu-west") > (va, "us-east") {
            (b["version"].clone(), format!("eu-{i}"))
        } else {
            (a["version"].clone(), format!("us-{i}"))
        });
    }
    let (_, solo2) = put(&eu, "m/solo", json!({"value": 2, "consistency": "async"})).await;
    // Cut off, the nominal home cannot vouch for the other replicas' writes: a tight bound
    // is refused (nowhere fresher to go), allow_stale answers and says so.
    let tight = "/v1/kv/m/k0?consistency=bounded_staleness&max_staleness_ms=100";
    let refused = eventually(&cluster, &us, tight, 20, |s, _| s == 503).await;
    assert_eq!(refused["type"], "https://geosaga.dev/problems/too-stale", "{refused}");
    let (status, stale) = get(&us, &format!("{tight}&allow_stale=true")).await;
    assert_eq!((status, stale["stale"].as_bool()), (200, Some(true)), "{stale}");
    cluster.set_cut(0, false);

    for (i, (version, value)) in winners.iter().enumerate() {
        let key = format!("m/k{i}");
        for r in everywhere(&cluster, &key, version).await {
            assert_eq!(
                r["value"].as_str(),
                Some(value.as_str()),
                "every region ends with the winner: {r}"
            );
        }
    }
    everywhere(&cluster, "m/solo", &solo2["version"]).await;
    for region in &cluster.regions {
        let answer = eventually(&cluster, &region.url, "/v1/conflicts", 20, |s, b| {
            s == 200 && b["prefixes"][0]["overwritten"] == KEYS
        })
        .await;
        assert_eq!(answer["prefixes"][0]["prefix"], "m/", "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_incremented_everywhere_during_a_partition_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let urls: Vec<String> = cluster.regions.iter().map(|r| r.url.clone()).collect();
    let (status, first) = post(&urls[0], "/v1/counters/c/total", json!({"increment": 10})).await;
    assert_eq!((status, first["value"].as_i64()), (200, Some(10)), "{first}");
    let (status, bad) = post(&urls[0], "/v1/counters/c/total", json!({"increment": "ten"})).await;
    assert_eq!(status, 422, "{bad}");
    // A retried increment with the same op id counts once.
    let once = json!({"increment": 100, "op_id": "step-1"});
    let (_, applied) = post(&urls[2], "/v1/counters/c/once", once.clone()).await;
    let (status, replayed) = post(&urls[2], "/v1/counters/c/once", once).await;
    assert_eq!(
        (
            status,
            applied["value"].as_i64(),
            replayed["value"].as_i64(),
            replayed["replayed"].as_bool()
        ),
        (200, Some(100), Some(100), Some(true)),
        "{replayed}"
    );

    cluster.set_cut(0, true);
    cluster.set_cut(1, true); // every link cut: three islands
    let mut expected = 10;
    for round in 0..5 {
        for (i, url) in urls.iter().enumerate() {
            let delta = [3, 7, -4][i] + round;
            let (status, r) = post(url, "/v1/counters/c/total", json!({"increment": delta})).await;
            assert_eq!(status, 200, "{r}");
            expected += delta;
        }
    }
    let (_, island) = get(&urls[1], "/v1/counters/c/total").await;
    assert_ne!(
        island["value"], expected,
        "an island sees its own increments only: {island}"
    );
    cluster.set_cut(0, false);
    cluster.set_cut(1, false);

    for region in &cluster.regions {
        let name = region.name.clone();
        let r = eventually(&cluster, &region.url, "/v1/counters/c/total", 20, |s, b| {
            s == 200 && b["value"] == expected && b["components"].as_object().is_some_and(|c| c.len() == 3)
        })
        .await;
        assert_eq!(r["served_by"], name.as_str());
        // ap-south added -4, -3, -2, -1, 0; us-east 10, then 3 to 7.
        assert_eq!(r["components"]["ap-south"], json!({"p": 0, "n": 10}), "{r}");
        assert_eq!(r["components"]["us-east"], json!({"p": 35, "n": 0}), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_range_is_re_homed_online() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), SETTINGS, 5).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());
    const KEYS: usize = 5;
    for i in 0..KEYS {
        let (status, w) = put(&us, &format!("us/r{i}"), json!({"value": i})).await;
        assert_eq!(status, 200, "{w}");
    }
    let (status, w) = put(&ap, "us/r0", json!({"value": "last before", "consistency": "async"})).await;
    assert_eq!((status, w["home_region"].as_str()), (200, Some("us-east")), "{w}");

    let (status, bad) = post(&ap, "/v1/admin/rehome", json!({"prefix": "nope/", "to": "eu-west"})).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("/prefix"), "{bad}");
    let (status, bad) = post(&ap, "/v1/admin/rehome", json!({"prefix": "us/", "to": "mars"})).await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().starts_with("/to: unknown region"),
        "{bad}"
    );

    let (status, moved) = post(&ap, "/v1/admin/rehome", json!({"prefix": "us/", "to": "eu-west"})).await;
    assert_eq!(status, 200, "{moved}\n{}", cluster.logs());
    assert_eq!(
        (
            moved["from"].as_str(),
            moved["moved_keys"].as_u64(),
            moved["missed"].as_array().map(Vec::len)
        ),
        (Some("us-east"), Some(KEYS as u64), Some(0)),
        "{moved}"
    );
    for url in [&us, &eu, &ap] {
        let (_, placed) = get(url, "/v1/placement/us/r1").await;
        assert_eq!(placed["home_region"], "eu-west", "{placed}");
    }
    // The new home had caught up: the last write at the old home is there, read strongly.
    let (status, r) = get(&us, "/v1/kv/us/r0").await;
    assert_eq!(
        (status, r["value"].as_str(), r["served_by"].as_str()),
        (200, Some("last before"), Some("eu-west")),
        "{r}"
    );
    // Writes now go to the new home, from every region.
    let (status, w) = put(&us, "us/r1", json!({"value": "after"})).await;
    assert_eq!((status, w["home_region"].as_str()), (200, Some("eu-west")), "{w}");
    let (_, r) = get(&ap, "/v1/kv/us/r1").await;
    assert_eq!(r["value"], "after", "{r}");
    // The change survives a restart of the old home.
    cluster.regions[0].restart().await;
    let (_, placed) = get(&us, "/v1/placement/us/r2").await;
    assert_eq!(placed["home_region"], "eu-west", "{placed}");
    // Running it again is idempotent: nothing left to move.
    let (status, again) = post(&eu, "/v1/admin/rehome", json!({"prefix": "us/", "to": "eu-west"})).await;
    assert_eq!((status, again["moved_keys"].as_u64()), (200, Some(0)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_replica_set_keeps_its_keys_off_other_regions() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "[[rules]]\nprefix = \"p/\"\nregion = \"eu-west\"\nreplicas = [\"eu-west\", \"us-east\"]\n";
    let cluster = Cluster::start_with_rules(dir.path(), SETTINGS, rules, 5).await;
    let [us, eu, ap] = [0, 1, 2].map(|i| cluster.regions[i].url.clone());

    let (status, w) = put(&ap, "p/secret", json!({"value": "eu and us only"})).await;
    assert_eq!((status, w["home_region"].as_str()), (200, Some("eu-west")), "{w}");
    let (status, control) = put(&ap, "eu/public", json!({"value": "everywhere"})).await;
    assert_eq!(status, 200, "{control}");
    everywhere(&cluster, "eu/public", &control["version"]).await;
    eventually(&cluster, &us, &local("p/secret"), 20, |s, b| {
        s == 200 && b["served_by"] == "us-east" && b["version"] == w["version"]
    })
    .await;
    // ap-south holds no replica: its reads go to the home.
    let (status, r) = get(&ap, &local("p/secret")).await;
    assert_eq!((status, r["served_by"].as_str()), (200, Some("eu-west")), "{r}");

    // With the home cut off, ap-south cannot answer from a copy it does not have.
    cluster.set_cut(1, true);
    let (status, r) = get(
        &ap,
        "/v1/kv/p/secret?consistency=bounded_staleness&max_staleness_ms=1&allow_stale=true",
    )
    .await;
    assert_eq!(
        (status, r["type"].as_str()),
        (503, Some("https://geosaga.dev/problems/home-unreachable")),
        "{r}"
    );
    let (status, r) = get(
        &ap,
        "/v1/kv/eu/public?consistency=bounded_staleness&max_staleness_ms=1&allow_stale=true",
    )
    .await;
    assert_eq!((status, r["served_by"].as_str()), (200, Some("ap-south")), "{r}");
    cluster.set_cut(1, false);
    // The quorum is over the rule's replicas: with only the eu-west <-> us-east link cut, a
    // strong write of p/ fails although ap-south answers; one of eu/ succeeds through it.
    for (a, b) in [(0, 1), (1, 0)] {
        cluster.links[a][b].as_ref().unwrap().set_cut(true);
    }
    let (status, w2) = put(&eu, "p/secret", json!({"value": "still"})).await;
    assert_eq!(
        (status, w2["type"].as_str()),
        (503, Some("https://geosaga.dev/problems/quorum-not-reached")),
        "{w2}"
    );
    let (status, w2) = put(&eu, "eu/public", json!({"value": "quorum through ap-south"})).await;
    assert_eq!(status, 200, "{w2}");
    for (a, b) in [(0, 1), (1, 0)] {
        cluster.links[a][b].as_ref().unwrap().set_cut(false);
    }
    let (status, w3) = put(&eu, "p/secret", json!({"value": "again"})).await;
    assert_eq!(status, 200, "{w3}");
    eventually(&cluster, &us, &local("p/secret"), 20, |s, b| {
        s == 200 && b["version"] == w3["version"]
    })
    .await;

    // On disk: ap-south's database has no version of p/secret, us-east's has them.
    let versions = |name: &str| {
        let path = dir.path().join(format!("{name}.db"));
        async move {
            let store = regions::store::SqliteStore::open(&path).await.unwrap();
            regions::store::Store::versions(&store, "p/secret").await.unwrap().len()
        }
    };
    assert_eq!(versions("ap-south").await, 0);
    assert_eq!(versions("us-east").await, 2);
    assert!(versions("ap-south").await == 0 && versions("eu-west").await == 2);
}

/// After a round of the test below: `true` once anti-entropy repaired eu-west's gap with
/// us-east (more repaired than `repaired_before`, and the gap closed), `false` once the log
/// alone delivered the round's ten keys to eu-west (its own copy serves every one of them
/// and anti-entropy repaired nothing).
async fn repaired_or_delivered(
    client: &reqwest::Client,
    eu: &str,
    round: usize,
    repaired_before: u64,
    cluster: &Cluster,
) -> bool {
    let start = Instant::now();
    loop {
        let regions: Value = client.get(format!("{eu}/v1/regions")).json_answer().await;
        let us_east = peer_status(&regions, "us-east");
        let repaired = us_east["anti_entropy_repaired"].as_u64().unwrap_or(0);
        if us_east["anti_entropy_gap"] == false {
            if repaired > repaired_before {
                return true;
            }
            let mut delivered = true;
            for i in 0..10 {
                let key = format!("us/tls{round}-{i}");
                let r: Value = client.get(format!("{eu}{}", local(&key))).json_answer().await;
                delivered &= r["served_by"] == "eu-west" && r["value"] == json!(i);
            }
            if delivered {
                return false;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{regions}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_runs_over_mutual_tls_and_asks_only_as_the_certificate_holder() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_geosaga"))
        .args([
            "region",
            "certs",
            "--out",
            certs.to_str().unwrap(),
            "--regions",
            "us-east,eu-west,ap-south",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let settings = format!("{SETTINGS}log_retention_entries = 2\nanti_entropy_interval_ms = 500\n");
    let cluster = Cluster::start_tls(dir.path(), &settings, 5, &certs).await;
    let client = support::regions::tls_client(&certs, None);
    let [us, eu] = [0, 1].map(|i| cluster.regions[i].url.clone());

    // A round: eu-west cut off (test (a) kills one; restarting needs plain HTTP) while
    // us-east writes past its log's retention, then reconnected. Usually eu-west then has a
    // gap that only anti-entropy (over mutual TLS) can close. But a batch us-east read from
    // its log just before the truncation may still reach eu-west once the cut is lifted (its
    // connection was accepted late), and then the log delivered everything: no gap, nothing
    // to repair. That round proves nothing about anti-entropy, so another one runs.
    let mut repaired_round = None;
    for round in 0..5 {
        let truncations = cluster.regions[0]
            .log_text()
            .matches("replication log past its retention")
            .count();
        let regions: Value = client.get(format!("{eu}/v1/regions")).json_answer().await;
        let repaired_before = peer_status(&regions, "us-east")["anti_entropy_repaired"]
            .as_u64()
            .unwrap_or(0);
        cluster.set_cut(1, true);
        let mut last = Value::Null;
        for i in 0..10 {
            let r = client
                .put(format!("{us}/v1/kv/us/tls{round}-{i}"))
                .json(&json!({"value": i, "consistency": "async"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            last = r.json().await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.regions[0]
            .log_text()
            .matches("replication log past its retention")
            .count()
            <= truncations
        {
            assert!(
                Instant::now() < deadline,
                "no truncation past eu-west\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.set_cut(1, false);
        if repaired_or_delivered(&client, &eu, round, repaired_before, &cluster).await {
            repaired_round = Some((round, last));
            break;
        }
        eprintln!("round {round}: the log delivered every entry to eu-west; another round");
    }
    let (round, last) = repaired_round.expect("in 5 rounds, eu-west never had a gap for anti-entropy to repair");
    // eu-west's own copy now answers (its closed timestamp for us-east is trusted again).
    let start = Instant::now();
    loop {
        let r: Value = client
            .get(format!("{eu}{}", local(&format!("us/tls{round}-9"))))
            .json_answer()
            .await;
        if r["served_by"] == "eu-west" {
            assert_eq!((&r["value"], &r["version"]), (&json!(9), &last["version"]), "{r}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{r}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // eu-west's certificate cannot ask for ap-south's share of us-east's writes.
    let as_eu = support::regions::tls_client(&certs, Some("eu-west"));
    let forged =
        json!({"from": "ap-south", "since": {"wall_ms": 0, "logical": 0}, "upto": {"wall_ms": 0, "logical": 0}});
    let r = as_eu
        .post(format!("{us}/internal/v1/anti-entropy"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let honest =
        json!({"from": "eu-west", "since": {"wall_ms": 0, "logical": 0}, "upto": {"wall_ms": 0, "logical": 0}});
    let r = as_eu
        .post(format!("{us}/internal/v1/anti-entropy"))
        .json(&honest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
