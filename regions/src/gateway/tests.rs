//! The protocol in one process: a single region (every key homed there) on the in-memory
//! store, with a clock driven by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regions_core::hlc::{Clock, Timestamp};
use regions_core::protocol::{Prepare, Prepared, TxnPutRequest, WriteCommand};
use regions_core::txn::{AtHome, EXPIRY_MS, IntentKind, RecordEvent, TxnStatus};
use serde_json::json;

use super::{begin, commit, read, recover, write};
use crate::node::{LATEST, Region};
use crate::store::MemoryStore;
use crate::{Config, Error};

async fn region() -> (Arc<Region>, Arc<AtomicU64>) {
    let config = Config::parse("[[regions]]\nname = \"a\"\naddress = \"http://127.0.0.1:1\"\n").unwrap();
    let time = Arc::new(AtomicU64::new(1_000_000));
    let t = time.clone();
    let clock = Clock::new(move || t.load(Ordering::SeqCst), 250);
    let region = Region::with_store(config, "a", clock, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    (Arc::new(region), time)
}

fn put(region: &Region, id: &str, key: &str, value: serde_json::Value) {
    write(region, id, key, Some(&TxnPutRequest { value })).unwrap();
}

/// The latest value of `key` in the store.
async fn value(region: &Region, key: &str) -> Option<String> {
    region.store.read(key, LATEST).await.unwrap().and_then(|v| v.value)
}

#[tokio::test]
async fn the_first_committer_wins_and_the_loser_applies_nothing() {
    let (region, _) = region().await;
    let t1 = begin(&region, None).id;
    let t2 = begin(&region, None).id;
    for t in [&t1, &t2] {
        assert_eq!(read(&region, t, "balance").await.unwrap(), None);
        put(&region, t, "balance", json!(t));
        put(&region, t, &format!("log/{t}"), json!(1));
    }
    commit(&region, &t1).await.unwrap();
    match commit(&region, &t2).await.unwrap_err() {
        Error::TxnConflict { key, .. } => assert_eq!(key, "balance"),
        other => panic!("{other}"),
    }
    assert_eq!(value(&region, "balance").await, Some(format!("\"{t1}\"")));
    assert_eq!(value(&region, &format!("log/{t2}")).await, None, "nothing of the loser");
    assert!(matches!(commit(&region, &t2).await, Err(Error::TxnGone { .. })));
    assert!(matches!(read(&region, "nope", "k").await, Err(Error::TxnNotFound(_))));
}

#[tokio::test]
async fn write_skew_is_refused() {
    let (region, _) = region().await;
    let setup = begin(&region, None).id;
    put(&region, &setup, "alice", json!(true));
    put(&region, &setup, "bob", json!(true));
    commit(&region, &setup).await.unwrap();
    let (a, b) = (begin(&region, None).id, begin(&region, None).id);
    for (me, other, t) in [("alice", "bob", &a), ("bob", "alice", &b)] {
        assert_eq!(read(&region, t, me).await.unwrap().unwrap().value, json!(true));
        assert_eq!(read(&region, t, other).await.unwrap().unwrap().value, json!(true));
        put(&region, t, me, json!(false));
    }
    commit(&region, &a).await.unwrap();
    assert!(matches!(commit(&region, &b).await, Err(Error::TxnConflict { .. })));
    assert_eq!(value(&region, "bob").await.as_deref(), Some("true"));
}

fn prepare(txn: &str, read_ts: Timestamp, key: &str) -> Prepare {
    Prepare {
        from: "a".into(),
        txn: txn.into(),
        read_ts,
        record_home: "a".into(),
        intents: vec![(
            key.into(),
            IntentKind::Write {
                value: Some("7".into()),
            },
        )],
        homes: Vec::new(),
        stage: false,
        keeps_copy: false,
    }
}

/// [`prepare`] of a parallel commit whose only home is this region: it stages the record.
fn staged(txn: &str, read_ts: Timestamp, key: &str) -> Prepare {
    Prepare {
        homes: vec!["a".into()],
        stage: true,
        ..prepare(txn, read_ts, key)
    }
}

async fn prepared(region: &Region, p: &Prepare) -> Timestamp {
    match region.txn_prepare(p).await.unwrap() {
        Prepared::Prepared { proposed, .. } => proposed,
        Prepared::Conflict(c) => panic!("refused: {c}"),
    }
}

/// A staged transaction whose every home prepared is committed before its record says so:
/// a reader below its proposal passes it at once, and a reader above it finds it committed
/// by asking the homes, and sees it.
#[tokio::test]
async fn a_staged_transaction_every_home_prepared_is_committed() {
    let (region, _) = region().await;
    let before = region.clock.now();
    let proposed = prepared(&region, &staged("w", before, "k")).await;
    assert_eq!(
        region.store.txn_record("w").await.unwrap(),
        Some(TxnStatus::Staging { proposed })
    );
    assert_eq!(region.txn_read_at("k", before).await.unwrap(), None, "below it");
    assert_eq!(
        region.store.txn_record("w").await.unwrap(),
        Some(TxnStatus::Staging { proposed }),
        "a reader below it does not decide it"
    );
    let after = region.clock.now();
    let seen = region.txn_read_at("k", after).await.unwrap().unwrap();
    assert_eq!((seen.ts, seen.value.as_deref()), (proposed, Some("7")));
    assert_eq!(
        region.store.txn_record("w").await.unwrap(),
        Some(TxnStatus::Committed { commit_ts: proposed })
    );
    assert!(region.store.txn_intents().await.unwrap().is_empty());
}

/// A staging record refuses pushes and aborts, so a single write that meets its intent
/// decides it by asking the homes: here every one prepared, so the write lands above it.
#[tokio::test]
async fn a_single_write_finds_a_staged_transaction_committed() {
    let (region, _) = region().await;
    let proposed = prepared(&region, &staged("w", region.clock.now(), "k")).await;
    let answer = region.txn_record_event("w", RecordEvent::Abort).await.unwrap();
    assert!(
        answer.refused && answer.status == TxnStatus::Staging { proposed },
        "{answer:?}"
    );
    let cmd: WriteCommand = serde_json::from_value(json!({"value": "1", "consistency": "async"})).unwrap();
    region.write_at_home("k", &cmd).await.unwrap();
    assert_eq!(
        region.store.txn_record("w").await.unwrap(),
        Some(TxnStatus::Committed { commit_ts: proposed })
    );
    assert_eq!(value(&region, "k").await.as_deref(), Some("1"), "the write is above it");
    let old = region.store.read("k", proposed).await.unwrap().unwrap();
    assert_eq!(old.value.as_deref(), Some("7"));
}

/// A recovery's question: a home that prepared says so; one that did not, asked to
/// prevent it, refuses that prepare from then on (and says so again when asked).
#[tokio::test]
async fn a_prevented_prepare_is_refused_for_good() {
    let (region, _) = region().await;
    let proposed = prepared(&region, &prepare("p", region.clock.now(), "k")).await;
    assert_eq!(
        region.txn_status_here("p", "b", true).await.unwrap(),
        AtHome::Prepared { proposed }
    );
    assert_eq!(region.txn_status_here("q", "b", false).await.unwrap(), AtHome::Absent);
    assert_eq!(region.txn_status_here("q", "b", true).await.unwrap(), AtHome::Prevented);
    assert!(matches!(
        region
            .txn_prepare(&prepare("q", region.clock.now(), "j"))
            .await
            .unwrap(),
        Prepared::Conflict(_)
    ));
    assert!(region.store.txn_intents_of("q").await.unwrap().is_empty());
    assert_eq!(
        region.txn_status_here("q", "b", false).await.unwrap(),
        AtHome::Prevented
    );
    // At the record's home a decided record is the answer.
    region
        .txn_record_event("c", RecordEvent::Commit { proposed })
        .await
        .unwrap();
    assert_eq!(
        region.txn_status_here("c", "a", true).await.unwrap(),
        AtHome::Decided {
            status: TxnStatus::Committed { commit_ts: proposed }
        }
    );
}

/// The recovery loop finds an expired staged transaction committed when its every home
/// prepared, and resolves it into versions.
#[tokio::test]
async fn an_expired_staged_transaction_is_committed_by_the_recovery_loop() {
    let (region, time) = region().await;
    let proposed = prepared(&region, &staged("w", region.clock.now(), "k")).await;
    time.fetch_add(EXPIRY_MS, Ordering::SeqCst);
    assert_eq!(recover::round(&region).await.unwrap(), 1);
    assert_eq!(
        region.store.txn_record("w").await.unwrap(),
        Some(TxnStatus::Committed { commit_ts: proposed })
    );
    assert_eq!(value(&region, "k").await.as_deref(), Some("7"));
}

#[tokio::test]
async fn a_reader_pushes_a_pending_writer_above_its_snapshot() {
    let (region, _) = region().await;
    let Prepared::Prepared { proposed, .. } = region
        .txn_prepare(&prepare("w", region.clock.now(), "k"))
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    let reader_ts = region.clock.now();
    assert!(reader_ts > proposed);
    assert_eq!(region.txn_read_at("k", reader_ts).await.unwrap(), None);
    let decided = region
        .txn_record_event("w", RecordEvent::Commit { proposed })
        .await
        .unwrap()
        .status;
    let TxnStatus::Committed { commit_ts } = decided else {
        panic!("{decided:?}")
    };
    assert!(commit_ts > reader_ts, "the push holds: {commit_ts} > {reader_ts}");
    region.txn_resolve("w", Some(commit_ts)).await.unwrap();
    assert_eq!(
        region.txn_read_at("k", reader_ts).await.unwrap(),
        None,
        "the snapshot is repeatable"
    );
    assert_eq!(region.txn_read_at("k", commit_ts).await.unwrap().unwrap().ts, commit_ts);
}

#[tokio::test]
async fn a_single_write_aborts_a_prepared_transaction() {
    let (region, _) = region().await;
    region
        .txn_prepare(&prepare("w", region.clock.now(), "k"))
        .await
        .unwrap();
    let cmd: WriteCommand = serde_json::from_value(json!({"value": "1", "consistency": "async"})).unwrap();
    region.write_at_home("k", &cmd).await.unwrap();
    let answer = region
        .txn_record_event("w", RecordEvent::Commit { proposed: LATEST })
        .await
        .unwrap();
    assert!(answer.refused && answer.status == TxnStatus::Aborted, "{answer:?}");
    assert_eq!(value(&region, "k").await.as_deref(), Some("1"));
    assert!(region.store.txn_intents().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_prepare_is_aborted_by_the_recovery_loop() {
    let (region, time) = region().await;
    region
        .txn_prepare(&prepare("w", region.clock.now(), "k"))
        .await
        .unwrap();
    assert_eq!(recover::round(&region).await.unwrap(), 0, "not expired yet");
    time.fetch_add(EXPIRY_MS, Ordering::SeqCst);
    assert_eq!(recover::round(&region).await.unwrap(), 1);
    assert!(region.store.txn_intents().await.unwrap().is_empty());
    assert_eq!(region.store.txn_record("w").await.unwrap(), Some(TxnStatus::Aborted));
    assert_eq!(value(&region, "k").await, None);
}

fn transfer(op_id: &str, amount: i64, undoes: Option<&str>) -> regions_core::protocol::OneShotRequest {
    serde_json::from_value(json!({
        "op_id": op_id,
        "undoes": undoes,
        "writes": [
            {"key": "alice", "add": {"path": "/balance", "delta": -amount, "min": 0}},
            {"key": "bob", "add": {"path": "/balance", "delta": amount}}
        ]
    }))
    .unwrap()
}

/// An op id commits once: a repeat answers with the first commit; a compensation cancels
/// an op id that never committed (which then never commits), and undoes one that did once.
#[tokio::test]
async fn an_op_id_commits_once_and_its_undo_cancels_or_undoes_once() {
    use super::one_shot;
    let (region, _) = region().await;
    let seed = serde_json::from_value(json!({"writes": [{"key": "alice", "value": {"balance": 100}}]})).unwrap();
    one_shot(&region, &seed).await.unwrap();
    let first = one_shot(&region, &transfer("op-1", 10, None)).await.unwrap();
    let again = one_shot(&region, &transfer("op-1", 10, None)).await.unwrap();
    assert!(!first.replayed && again.replayed, "{again:?}");
    assert_eq!(
        (again.id.as_str(), again.commit_ts.as_str()),
        (first.id.as_str(), first.commit_ts.as_str())
    );
    assert_eq!(value(&region, "alice").await.as_deref(), Some(r#"{"balance":90}"#));
    assert_eq!(value(&region, "bob").await.as_deref(), Some(r#"{"balance":10}"#));

    // The undo of op-1, twice: applied once.
    for _ in 0..2 {
        let undo = one_shot(&region, &transfer("undo-1", -10, Some("op-1"))).await.unwrap();
        assert_eq!(undo.undone, Some(true), "{undo:?}");
    }
    assert_eq!(value(&region, "bob").await.as_deref(), Some(r#"{"balance":0}"#));

    // The undo of op-2 before op-2: nothing written, and op-2 is refused from then on.
    let undo = one_shot(&region, &transfer("undo-2", -10, Some("op-2"))).await.unwrap();
    assert_eq!(undo.undone, Some(false), "{undo:?}");
    let late = one_shot(&region, &transfer("op-2", 10, None)).await;
    assert!(matches!(late, Err(Error::OpCancelled { .. })), "{late:?}");
    assert_eq!(value(&region, "bob").await.as_deref(), Some(r#"{"balance":0}"#));
}

/// A try that was claimed but lost (its gateway gave up before the record) is aborted by
/// the next claim, which runs under a new try: that earlier try can never commit.
#[tokio::test]
async fn a_new_try_fences_the_one_before() {
    let (region, _) = region().await;
    let first = region.txn_op_claim("op").await.unwrap();
    let second = region.txn_op_claim("op").await.unwrap();
    let regions_core::protocol::OpState::Run { txn: first } = first else {
        panic!("{first:?}")
    };
    assert!(matches!(second, regions_core::protocol::OpState::Run { ref txn } if *txn != first));
    let late = region
        .txn_record_event(
            &first,
            RecordEvent::Commit {
                proposed: Timestamp::default(),
            },
        )
        .await
        .unwrap();
    assert!(late.refused && late.status == TxnStatus::Aborted, "{late:?}");
}

/// A home's copies carry the intents it resolved until the resolve's log reached every peer
/// (a region restored from its peers' copies would otherwise find neither the intents nor
/// their versions), and then only what is left: the decided record.
#[tokio::test]
async fn copies_carry_the_resolved_intents_until_the_log_reached_every_peer() {
    let (region, _) = region().await;
    let before = region.clock.now();
    let proposed = prepared(&region, &staged("c", before, "k")).await;
    let (intents, record) = region.txn_state("c").await.unwrap();
    assert_eq!(intents.len(), 1);
    assert_eq!(record, Some(TxnStatus::Staging { proposed }));
    region
        .txn_record_event("c", RecordEvent::Commit { proposed })
        .await
        .unwrap();
    region.txn_resolve("c", Some(proposed)).await.unwrap();
    assert!(region.store.txn_intents_of("c").await.unwrap().is_empty());
    let (intents, record) = region.txn_state("c").await.unwrap();
    let keys: Vec<&str> = intents.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["k"], "resolved, but its log may not have reached the peers");
    assert_eq!(record, Some(TxnStatus::Committed { commit_ts: proposed }));
    let shipped = region.store.last_seq().await.unwrap();
    assert_eq!(
        region.txn_copies_shipped(shipped - 1),
        Vec::<String>::new(),
        "not that far yet"
    );
    assert_eq!(region.txn_copies_shipped(shipped), ["c"]);
    let (intents, record) = region.txn_state("c").await.unwrap();
    assert!(intents.is_empty());
    assert_eq!(record, Some(TxnStatus::Committed { commit_ts: proposed }));
}
