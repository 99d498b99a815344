//! Tests of the store's convergence side against real SQLite files.

use super::*;

fn ts(wall_ms: u64) -> Timestamp {
    Timestamp { wall_ms, logical: 0 }
}

fn row(key: &str, t: u64, origin: &str, prev: Option<(u64, &str)>) -> VersionRow {
    VersionRow {
        key: key.into(),
        ts: ts(t),
        value: Some(format!("\"{origin}{t}\"")),
        origin: origin.into(),
        prev: prev.map(|(t, o)| VersionId {
            ts: ts(t),
            origin: o.into(),
        }),
    }
}

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open(&dir.path().join("r.db")).await.unwrap(), dir)
}

#[tokio::test]
async fn conflicts_count_the_same_in_every_arrival_order() {
    // base(a) <- a1(a) <- a2(a); base <- b1(b) concurrent with a1 and a2; c1(c) built on a2.
    let rows = [
        row("m/k", 1, "a", None),
        row("m/k", 5, "a", Some((1, "a"))),
        row("m/k", 6, "b", Some((1, "a"))),
        row("m/k", 7, "a", Some((5, "a"))),
        row("m/k", 9, "c", Some((7, "a"))),
    ];
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
        let (s, _d) = store().await;
        for i in order {
            s.repair(std::slice::from_ref(&rows[i]), &[], &|_| Some("m/".into()))
                .await
                .unwrap();
        }
        assert_eq!(s.conflicts().await.unwrap(), vec![("m/".to_owned(), 1)], "{order:?}");
        let latest = s.read("m/k", crate::node::LATEST).await.unwrap().unwrap();
        assert_eq!(latest.ts, ts(9));
    }
}

#[tokio::test]
async fn equal_timestamps_keep_both_versions_and_the_greater_region_wins() {
    let (s, _d) = store().await;
    let both = [row("m/k", 3, "b", None), row("m/k", 3, "a", None)];
    assert_eq!(s.repair(&both, &[], &|_| Some("m/".into())).await.unwrap(), 2);
    assert_eq!(
        s.read("m/k", ts(3)).await.unwrap().unwrap().value.as_deref(),
        Some("\"b3\"")
    );
    assert_eq!(s.conflicts().await.unwrap(), vec![("m/".to_owned(), 1)]);
    assert_eq!(s.repair(&both, &[], &|_| None).await.unwrap(), 0, "idempotent");
}

#[tokio::test]
async fn a_gap_freezes_the_readable_closed_timestamp_until_it_is_closed() {
    use crate::protocol::Gap;
    use crate::store::Incoming;
    let (home, _d1) = store().await;
    let (replica, _d2) = store().await;
    home.write_committed("k", ts(10), Some("1"), "h").await.unwrap();
    let first = home.log_after(0, 10).await.unwrap();
    replica.apply("h", &first, ts(15)).await.unwrap();
    for t in [20, 30, 40] {
        home.write_committed("k", ts(t), Some("2"), "h").await.unwrap();
    }
    assert_eq!(
        home.truncate_to_retention(1).await.unwrap(),
        3,
        "the replica missed 20 and 30"
    );
    let rest = home.log_after(home.truncated_upto().await.unwrap(), 10).await.unwrap();
    let gap = Gap {
        upto_seq: home.truncated_upto().await.unwrap(),
        upto_ts: ts(45),
    };
    let incoming = Incoming {
        entries: &rest,
        closed: ts(50),
        skip_to: None,
        gap: Some(gap),
    };
    let state = replica.apply_batch("h", incoming, &|_| None).await.unwrap();
    assert_eq!(state.applied_seq, rest[0].seq, "the cursor moves past the gap");
    assert_eq!(
        (state.closed, state.readable_closed(), state.gap),
        (ts(50), ts(15), Some(gap))
    );
    // A later batch keeps the frozen timestamp; a stale gap id does not close it.
    let later = Incoming {
        entries: &[],
        closed: ts(60),
        skip_to: None,
        gap: None,
    };
    let state = replica.apply_batch("h", later, &|_| None).await.unwrap();
    assert_eq!(state.readable_closed(), ts(15));
    assert!(!replica.close_gap("h", gap.upto_seq - 1).await.unwrap());
    assert!(replica.close_gap("h", gap.upto_seq).await.unwrap());
    let state = replica.replica_states().await.unwrap()["h"];
    assert_eq!((state.readable_closed(), state.gap), (ts(60), None));
}

#[tokio::test]
async fn an_increment_with_an_op_id_seen_before_changes_nothing() {
    let (s, _d) = store().await;
    let c = s.increment("c", "r", ts(1), 5, Some("op")).await.unwrap();
    assert_eq!(c, Some(Component { p: 5, n: 0 }));
    assert_eq!(s.increment("c", "r", ts(2), 5, Some("op")).await.unwrap(), None);
    assert_eq!(
        s.increment("d", "r", ts(3), -2, Some("op")).await.unwrap(),
        Some(Component { p: 0, n: 2 })
    );
    assert_eq!(s.counter("c").await.unwrap()[0].component, Component { p: 5, n: 0 });
    let logged = s.log_after(0, 10).await.unwrap();
    assert_eq!(logged.len(), 2, "the replay logged nothing");
}

#[tokio::test]
async fn retention_truncation_stops_at_a_pending_entry() {
    let (s, _d) = store().await;
    for t in 1..=5 {
        s.write_committed("k", ts(t), Some("1"), "h").await.unwrap();
    }
    assert_eq!(s.truncate_to_retention(2).await.unwrap(), 3);
    assert_eq!(s.truncated_upto().await.unwrap(), 3);
    let pending = s.log_pending("k", ts(6), Some("2")).await.unwrap();
    s.write_committed("k", ts(7), Some("3"), "h").await.unwrap();
    assert_eq!(
        s.truncate_to_retention(0).await.unwrap(),
        2,
        "4 and 5, not the pending 6"
    );
    assert_eq!(s.truncated_upto().await.unwrap(), pending - 1);
}
