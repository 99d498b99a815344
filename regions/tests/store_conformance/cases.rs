//! The cases of the store conformance suite; each takes the backend to run on.

use regions::counter::Component;
use regions::hlc::Timestamp;
use regions::node::LATEST;
use regions::node::op_ids::prepare;
use regions::op_ids::{Previous, check};
use regions::protocol::VersionRow;
use regions::protocol::{EntryState, Gap, VersionId};
use regions::replica::{Incoming, ReplicaState};

pub use crate::txn_cases::*;
use crate::{Backend, Db, store};

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

pub async fn pending_writes_are_invisible_until_committed_and_aborted_on_restart(b: Backend) {
    let (store, _db) = store(b).await;
    let a = store.log_pending("k", ts(10), Some("1")).await.unwrap();
    assert_eq!(store.read("k", ts(99)).await.unwrap(), None);
    store.commit_pending(a, "k", ts(10), Some("1"), "h").await.unwrap();
    assert_eq!(
        store.read("k", ts(99)).await.unwrap().unwrap().value.as_deref(),
        Some("1")
    );
    let b = store.log_pending("k", ts(20), Some("2")).await.unwrap();
    assert_eq!(store.abort_all_pending().await.unwrap(), 1);
    let log = store.log_after(0, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|e| (e.seq, e.state)).collect::<Vec<_>>(),
        vec![(a, EntryState::Committed), (b, EntryState::Aborted)]
    );
    assert_eq!(store.read("k", ts(99)).await.unwrap().unwrap().ts, ts(10));
}

pub async fn sequence_numbers_survive_truncation_and_apply_is_idempotent(b: Backend) {
    let (home, _d1) = store(b).await;
    let (replica, _d2) = store(b).await;
    assert_eq!(home.last_seq().await.unwrap(), 0);
    let s1 = home.write_committed("a", ts(1), Some("1"), "h").await.unwrap();
    let s2 = home.write_committed("a", ts(2), None, "h").await.unwrap();
    let batch = home.log_after(0, 10).await.unwrap();
    replica.put_intent("h", &batch[0]).await.unwrap();
    replica.put_intent("h", &batch[0]).await.unwrap();
    assert_eq!(
        replica.intent_count("h").await.unwrap(),
        1,
        "an intent stored twice is one"
    );
    let state = replica.apply("h", &batch, ts(5)).await.unwrap();
    assert_eq!(
        state,
        ReplicaState {
            applied_seq: s2,
            closed: ts(5),
            gap: None,
            frozen: None,
        }
    );
    assert_eq!(replica.intent_count("h").await.unwrap(), 0);
    let again = replica.apply("h", &batch, ts(3)).await.unwrap();
    assert_eq!(
        again, state,
        "replayed entries are skipped and the closed timestamp never goes back"
    );
    assert_eq!(replica.read("a", ts(9)).await.unwrap().unwrap().value, None);
    home.set_cursor("r", s2).await.unwrap();
    home.set_cursor("r", s1).await.unwrap();
    assert_eq!(home.cursors().await.unwrap()["r"], s2, "a cursor never goes back");
    assert_eq!(home.truncate_log(s2).await.unwrap(), 2);
    assert_eq!(home.log_len().await.unwrap(), 0);
    assert_eq!(
        home.truncated_upto().await.unwrap(),
        s2,
        "an empty log: all of it truncated"
    );
    let s3 = home.write_committed("b", ts(3), Some("3"), "h").await.unwrap();
    assert!(s3 > s2 && s1 < s2);
    assert_eq!(home.last_seq().await.unwrap(), s3);
    assert_eq!(home.earliest_after(s2).await.unwrap(), Some(ts(3)));
    assert_eq!(home.earliest_after(s3).await.unwrap(), None);
}

pub async fn gc_drops_only_what_no_later_read_sees(b: Backend) {
    let (store, _db) = store(b).await;
    for (t, v) in [(1, Some("1")), (2, Some("2")), (3, None), (4, Some("4"))] {
        store.write_committed("k", ts(t), v, "h").await.unwrap();
    }
    store.write_committed("j", ts(1), Some("x"), "h").await.unwrap();
    assert_eq!(
        store.gc(ts(3)).await.unwrap(),
        3,
        "1 and 2 under the tombstone at 3, and the tombstone"
    );
    assert_eq!(store.versions("k").await.unwrap().len(), 1);
    assert_eq!(
        store.read("j", ts(9)).await.unwrap().unwrap().value.as_deref(),
        Some("x")
    );
}

pub async fn conflicts_count_the_same_in_every_arrival_order(b: Backend) {
    // base(a) <- a1(a) <- a2(a); base <- b1(b) concurrent with a1 and a2; c1(c) built on a2.
    let rows = [
        row("m/k", 1, "a", None),
        row("m/k", 5, "a", Some((1, "a"))),
        row("m/k", 6, "b", Some((1, "a"))),
        row("m/k", 7, "a", Some((5, "a"))),
        row("m/k", 9, "c", Some((7, "a"))),
    ];
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
        let (s, _d) = store(b).await;
        for i in order {
            s.repair(std::slice::from_ref(&rows[i]), &[], &|_| Some("m/".into()))
                .await
                .unwrap();
        }
        assert_eq!(s.conflicts().await.unwrap(), vec![("m/".to_owned(), 1)], "{order:?}");
        let latest = s.read("m/k", LATEST).await.unwrap().unwrap();
        assert_eq!(latest.ts, ts(9));
    }
}

pub async fn equal_timestamps_keep_both_versions_and_the_greater_region_wins(b: Backend) {
    let (s, _d) = store(b).await;
    let both = [row("m/k", 3, "b", None), row("m/k", 3, "a", None)];
    assert_eq!(s.repair(&both, &[], &|_| Some("m/".into())).await.unwrap(), 2);
    assert_eq!(
        s.read("m/k", ts(3)).await.unwrap().unwrap().value.as_deref(),
        Some("\"b3\"")
    );
    assert_eq!(s.conflicts().await.unwrap(), vec![("m/".to_owned(), 1)]);
    assert_eq!(s.repair(&both, &[], &|_| None).await.unwrap(), 0, "idempotent");
    // An async write of a key written anywhere names the winner as the version it replaces.
    let seq = s.write_anywhere("m/k", ts(4), Some("\"c4\""), "c", "m/").await.unwrap();
    let logged = s.log_after(seq - 1, 1).await.unwrap();
    assert_eq!(
        logged[0].prev,
        Some(VersionId {
            ts: ts(3),
            origin: "b".into()
        })
    );
    let mine = s
        .versions_of("c", &["m/k".to_owned(), "m/other".to_owned()])
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].ts, mine[0].prev.clone()), (ts(4), logged[0].prev.clone()));
}

pub async fn a_gap_freezes_the_readable_closed_timestamp_until_it_is_closed(b: Backend) {
    let (home, _d1) = store(b).await;
    let (replica, _d2) = store(b).await;
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
        skip_to: Some(rest[0].seq + 5),
        gap: None,
    };
    let state = replica.apply_batch("h", later, &|_| None).await.unwrap();
    assert_eq!((state.readable_closed(), state.applied_seq), (ts(15), rest[0].seq + 5));
    assert!(!replica.close_gap("h", gap.upto_seq - 1).await.unwrap());
    assert!(replica.close_gap("h", gap.upto_seq).await.unwrap());
    let state = replica.replica_states().await.unwrap()["h"];
    assert_eq!((state.readable_closed(), state.gap), (ts(60), None));
}

pub async fn an_increment_with_an_op_id_seen_before_changes_nothing(b: Backend) {
    let (s, _d) = store(b).await;
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
    // A replica merges components by maximum, and an older one changes nothing.
    let (replica, _d2) = store(b).await;
    replica.apply("r", &logged, ts(5)).await.unwrap();
    let stale = regions::protocol::CounterRow {
        key: "c".into(),
        region: "r".into(),
        component: Component { p: 1, n: 0 },
    };
    assert_eq!(replica.repair(&[], &[stale], &|_| None).await.unwrap(), 0);
    assert_eq!(replica.counters_of("r").await.unwrap().len(), 2);
    assert_eq!(replica.counter("c").await.unwrap()[0].component.value(), 5);
}

pub async fn retention_truncation_stops_at_a_pending_entry(b: Backend) {
    let (s, _d) = store(b).await;
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
    assert_eq!(s.truncate_log(pending).await.unwrap(), 0, "nor by cursor");
}

/// A prepared op becomes applied only with its version, in the same transaction; an op
/// whose write never happened stays unapplied and can be prepared again.
pub async fn ops_are_applied_with_their_version_only(b: Backend) {
    let (store, _db) = store(b).await;
    store.write_committed("k", ts(5), Some("{\"n\":1}"), "h").await.unwrap();
    let before = store.read("k", ts(9)).await.unwrap();
    prepare(&*store, "k", "saga:a:action", ts(10), before.as_ref(), 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.op_applied("k", "saga:a:action").await.unwrap(),
        None,
        "not written yet"
    );
    // The write was cut off; a retry prepares again with its own timestamp.
    prepare(&*store, "k", "saga:a:action", ts(11), before.as_ref(), 1_001)
        .await
        .unwrap();
    let seq = store.log_pending("k", ts(11), Some("{\"n\":2}")).await.unwrap();
    assert_eq!(store.op_applied("k", "saga:a:action").await.unwrap(), None, "pending");
    store
        .commit_pending(seq, "k", ts(11), Some("{\"n\":2}"), "h")
        .await
        .unwrap();
    let done = store.op_applied("k", "saga:a:action").await.unwrap().unwrap();
    assert_eq!(done.version, "11.0");
    assert_eq!(
        done.previous,
        Some(Previous {
            version: "5.0".into(),
            value: serde_json::json!({"n": 1})
        })
    );
    // Another key's op is not confused with it, and a version at the old timestamp
    // arriving later (as on a replica) applies nothing it does not name.
    assert_eq!(store.op_applied("j", "saga:a:action").await.unwrap(), None);
    store.write_committed("k", ts(10), Some("3"), "h").await.unwrap();
    assert_eq!(
        store.op_applied("k", "saga:a:action").await.unwrap().unwrap().version,
        "11.0"
    );
    // Old op ids are pruned.
    assert_eq!(store.op_prune(1_001).await.unwrap(), 0);
    assert_eq!(store.op_prune(1_002).await.unwrap(), 1);
    assert_eq!(store.op_applied("k", "saga:a:action").await.unwrap(), None);
    assert!(check("").is_err() && check(&"x".repeat(513)).is_err() && check("a:b:action").is_ok());
}

/// What a call returned is there after the store is opened again (a restarted process);
/// the pending write a crash left is aborted at start-up, the sequence goes on.
pub async fn everything_survives_reopening_and_a_restart_aborts_what_was_pending(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let s1 = store.write_committed("k", ts(1), Some("1"), "h").await.unwrap();
    let s2 = store.log_pending("k", ts(2), Some("2")).await.unwrap();
    store.set_cursor("peer", s1).await.unwrap();
    store.set_placement_override("eu/", "us-east").await.unwrap();
    store.increment("c", "h", ts(3), 7, None).await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.abort_all_pending().await.unwrap(), 1);
    assert_eq!(store.read("k", LATEST).await.unwrap().unwrap().ts, ts(1));
    assert_eq!(store.cursors().await.unwrap()["peer"], s1);
    assert_eq!(
        store.placement_overrides().await.unwrap(),
        vec![("eu/".to_owned(), "us-east".to_owned())]
    );
    assert_eq!(store.counter("c").await.unwrap()[0].component.value(), 7);
    let s4 = store.write_committed("k", ts(4), Some("4"), "h").await.unwrap();
    assert_eq!((s2 > s1, s4, store.last_seq().await.unwrap()), (true, s2 + 2, s4));
}

/// Listings are in byte order (SQLite's, and the "C" collation on PostgreSQL), whatever the
/// database's default collation: regions on either backend agree on them.
pub async fn listings_are_in_byte_order(b: Backend) {
    let (s, _d) = store(b).await;
    for key in ["p/b", "p/a-z", "p/B", "p/ab", "q/x", "p/é"] {
        s.write_committed(key, ts(1), Some("1"), "h").await.unwrap();
    }
    assert_eq!(
        s.keys_with_prefix("p/").await.unwrap(),
        vec!["p/B", "p/a-z", "p/ab", "p/b", "p/é"]
    );
    let ids = s.version_ids_of("h").await.unwrap();
    let keys: Vec<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["p/B", "p/a-z", "p/ab", "p/b", "p/é", "q/x"]);
    // Equal timestamps: the greater region wins, in byte order ("Z" < "a").
    let rows = [
        row("m/k", 3, "a-x", None),
        row("m/k", 3, "Zz", None),
        row("m/k", 3, "ab", None),
    ];
    s.repair(&rows, &[], &|_| None).await.unwrap();
    assert_eq!(
        s.read("m/k", ts(3)).await.unwrap().unwrap().value.as_deref(),
        Some("\"ab3\"")
    );
}

/// A PostgreSQL database (or an in-memory store) belongs to the first region that claims it;
/// another region is refused, the same one is welcome again. (A SQLite file is not checked.)
pub async fn a_database_belongs_to_one_region(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    store.claim("us-east").await.unwrap();
    store.claim("us-east").await.unwrap();
    let other = store.claim("eu-west").await;
    match b {
        Backend::Postgres | Backend::Memory => {
            let e = other.unwrap_err().to_string();
            assert!(e.contains("region us-east's data, not eu-west's"), "{e}");
        }
        Backend::Sqlite => other.unwrap(),
    }
    store.close().await;
    let again = db.open().await;
    again.claim("us-east").await.unwrap();
    assert_eq!(
        again.claim("eu-west").await.is_err(),
        matches!(b, Backend::Postgres | Backend::Memory)
    );
}

/// A cancelled op id (an undo found its write not applied) is remembered per key, a second
/// cancellation changes nothing, and it is pruned with the op ids after its retention.
pub async fn cancelled_op_ids_are_remembered_until_pruned(b: Backend) {
    let (store, _db) = store(b).await;
    assert!(!store.op_cancelled("k", "saga:a:action").await.unwrap());
    store.op_cancel("k", "saga:a:action", 1_000).await.unwrap();
    store.op_cancel("k", "saga:a:action", 1_500).await.unwrap();
    store.op_cancel("j", "saga:b:action", 5_000).await.unwrap();
    assert!(store.op_cancelled("k", "saga:a:action").await.unwrap());
    assert!(!store.op_cancelled("j", "saga:a:action").await.unwrap(), "per key");
    assert_eq!(
        store.op_prune(2_000).await.unwrap(),
        1,
        "the first cancellation's time counts"
    );
    assert!(!store.op_cancelled("k", "saga:a:action").await.unwrap());
    assert!(store.op_cancelled("j", "saga:b:action").await.unwrap());
}

pub async fn a_restored_store_starts_a_new_log_incarnation_once(b: Backend) {
    let (store, _db) = store(b).await;
    assert_eq!(store.rebase_if_restored(1_000).await.unwrap(), None, "not marked");
    let s1 = store.write_committed("a", ts(1), Some("1"), "h").await.unwrap();
    store.write_committed("a", ts(2), Some("2"), "h").await.unwrap();
    store.mark_restored(5).await.unwrap();
    assert_eq!(store.rebase_if_restored(1_000).await.unwrap(), Some(1_000));
    assert_eq!(
        store.log_len().await.unwrap(),
        0,
        "the old incarnation's log is dropped"
    );
    assert_eq!(store.last_seq().await.unwrap(), 1_000);
    assert_eq!(
        store.truncated_upto().await.unwrap(),
        1_000,
        "a peer below it is told of a gap"
    );
    let next = store.write_committed("a", ts(3), Some("3"), "h").await.unwrap();
    assert_eq!(next, 1_001, "numbers continue past the floor");
    assert_eq!(
        store.read("a", ts(9)).await.unwrap().unwrap().value.as_deref(),
        Some("3")
    );
    assert_eq!(
        store.rebase_if_restored(5_000).await.unwrap(),
        None,
        "the mark is cleared"
    );
    // A floor below what was given moves nothing back.
    store.mark_restored(6).await.unwrap();
    assert_eq!(store.rebase_if_restored(s1).await.unwrap(), Some(1_001));
    assert!(store.write_committed("b", ts(4), None, "h").await.unwrap() > 1_001);
}
