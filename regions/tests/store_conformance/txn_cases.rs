//! The store cases of transactions: intents and records.

use regions::hlc::Timestamp;
use regions::node::LATEST;
use regions::protocol::EntryState;
use regions::txn::{IntentKind, TxnIntent, TxnStatus};

use crate::{Backend, Db};

fn ts(wall_ms: u64) -> Timestamp {
    Timestamp { wall_ms, logical: 0 }
}

fn intent(txn: &str, key: &str, kind: IntentKind) -> TxnIntent {
    TxnIntent {
        txn: txn.into(),
        key: key.into(),
        kind,
        record_home: "r".into(),
        homes: Vec::new(),
        proposed: ts(5),
        prepared_ms: 7,
    }
}

/// Intents and records are durable (they survive reopening); resolving a committed
/// transaction makes its writes versions with committed log entries, in one step, and
/// resolving again changes nothing; resolving an aborted one only drops its intents.
pub async fn intents_resolve_into_versions_or_nothing(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let write = |v: Option<&str>| IntentKind::Write {
        value: v.map(str::to_owned),
    };
    store
        .txn_lay(&[
            intent("t1", "a", write(Some("1"))),
            intent("t1", "b", write(None)),
            intent("t1", "c", IntentKind::Read),
        ])
        .await
        .unwrap();
    store.txn_lay(&[intent("t2", "a", IntentKind::Read)]).await.unwrap();
    store
        .txn_set_record("t1", TxnStatus::Pending { min_commit_ts: ts(3) }, 1)
        .await
        .unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.txn_intents().await.unwrap().len(), 4);
    let on_a = store.txn_intents_on("a").await.unwrap();
    assert_eq!(on_a.len(), 2, "{on_a:?}");
    assert!(on_a.contains(&intent("t1", "a", write(Some("1")))));
    assert_eq!(store.read("a", LATEST).await.unwrap(), None, "an intent is no version");
    assert_eq!(
        store.txn_record("t1").await.unwrap(),
        Some(TxnStatus::Pending { min_commit_ts: ts(3) })
    );
    assert_eq!(store.txn_record("t9").await.unwrap(), None);

    store
        .txn_set_record("t1", TxnStatus::Committed { commit_ts: ts(9) }, 2)
        .await
        .unwrap();
    assert_eq!(store.txn_resolve("t1", Some(ts(9)), "h").await.unwrap(), 3);
    assert_eq!(store.txn_resolve("t1", Some(ts(9)), "h").await.unwrap(), 0);
    let a = store.read("a", LATEST).await.unwrap().unwrap();
    assert_eq!((a.ts, a.value.as_deref()), (ts(9), Some("1")));
    let b_version = store.read("b", LATEST).await.unwrap().unwrap();
    assert_eq!(
        (b_version.ts, b_version.value),
        (ts(9), None),
        "a deletion is a tombstone"
    );
    assert_eq!(
        store.read("c", LATEST).await.unwrap(),
        None,
        "a read intent writes nothing"
    );
    let log = store.log_after(0, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|e| (e.key.as_str(), e.ts, e.state)).collect::<Vec<_>>(),
        vec![("a", ts(9), EntryState::Committed), ("b", ts(9), EntryState::Committed)]
    );

    assert_eq!(store.txn_resolve("t2", None, "h").await.unwrap(), 1);
    assert!(store.txn_intents().await.unwrap().is_empty());
    assert_eq!(store.log_after(0, 10).await.unwrap().len(), 2);
    store.close().await;
    let store = db.open().await;
    assert_eq!(
        store.txn_record("t1").await.unwrap(),
        Some(TxnStatus::Committed { commit_ts: ts(9) })
    );
}

/// Transactions' records are pruned by when they were last written, a batch at a time: a
/// record rewritten since the horizon stays whatever its status, and so do op ids' records
/// and their tries' however old (a compensation may ask for them at any time), and staging
/// records (undecided).
pub async fn records_are_pruned_by_when_they_were_last_written(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let committed = TxnStatus::Committed { commit_ts: ts(9) };
    let pending = TxnStatus::Pending { min_commit_ts: ts(1) };
    for old in ["old-1", "old-2", "old-3"] {
        store.txn_set_record(old, TxnStatus::Aborted, 1_000).await.unwrap();
    }
    store.txn_set_record("op/x", pending, 1_000).await.unwrap();
    let staging = TxnStatus::Staging { proposed: ts(2) };
    store.txn_set_record("staging", staging, 1_000).await.unwrap();
    store.txn_set_record("try/1/x", committed, 1_000).await.unwrap();
    store.txn_set_record("rewritten", pending, 1_000).await.unwrap();
    store.txn_set_record("rewritten", committed, 3_000).await.unwrap();
    assert_eq!(
        store.txn_prune_records(1_000, 10).await.unwrap(),
        0,
        "the horizon itself is kept"
    );
    assert_eq!(store.txn_prune_records(2_000, 2).await.unwrap(), 2, "a batch at most");
    assert_eq!(store.txn_prune_records(2_000, 2).await.unwrap(), 1);
    assert_eq!(store.txn_prune_records(2_000, 2).await.unwrap(), 0);
    for old in ["old-1", "old-2", "old-3"] {
        assert_eq!(store.txn_record(old).await.unwrap(), None);
    }
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.txn_record("rewritten").await.unwrap(), Some(committed));
    assert_eq!(
        store.txn_record("op/x").await.unwrap(),
        Some(pending),
        "an op id's record is kept"
    );
    assert_eq!(
        store.txn_record("try/1/x").await.unwrap(),
        Some(committed),
        "so are its tries'"
    );
    assert_eq!(
        store.txn_record("staging").await.unwrap(),
        Some(staging),
        "a staging record is kept: only a recovery decides it"
    );
}

/// A parallel commit's intents keep the homes of their transaction, and its record may be
/// staging; both survive reopening.
pub async fn staged_transactions_keep_their_homes(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let mut staged = intent(
        "t1",
        "a",
        IntentKind::Write {
            value: Some("1".into()),
        },
    );
    staged.homes = vec!["eu-west".into(), "us-east".into()];
    store
        .txn_lay(&[staged.clone(), intent("t2", "b", IntentKind::Read)])
        .await
        .unwrap();
    let staging = TxnStatus::Staging { proposed: ts(4) };
    store.txn_set_record("t1", staging, 1).await.unwrap();
    store.close().await;

    let store = db.open().await;
    assert_eq!(store.txn_intents_on("a").await.unwrap(), vec![staged.clone()]);
    assert_eq!(store.txn_intents_of("t1").await.unwrap(), vec![staged]);
    assert!(store.txn_intents_of("t3").await.unwrap().is_empty());
    assert_eq!(store.txn_intents_on("b").await.unwrap()[0].homes, Vec::<String>::new());
    assert_eq!(store.txn_record("t1").await.unwrap(), Some(staging));
}
