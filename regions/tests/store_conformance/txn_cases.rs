//! The store cases of transactions: intents, records and the copies of peers' states.

use regions::hlc::Timestamp;
use regions::node::LATEST;
use regions::protocol::{EntryState, TxnCopy};
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

/// A copy of a home's state of `txn` read at `at` (wall ms, logical 0).
fn copy(txn: &str, at: u64, intents: Vec<TxnIntent>, record: Option<TxnStatus>) -> TxnCopy {
    TxnCopy {
        txn: txn.into(),
        at: ts(at),
        intents,
        record,
    }
}

/// The copies kept of `home`'s states, by transaction (the trait promises no order).
async fn copies_of(store: &dyn regions::store::Store, home: &str) -> Vec<TxnCopy> {
    let mut copies = store.txn_copies_of(home).await.unwrap();
    copies.sort_by(|a, b| a.txn.cmp(&b.txn));
    copies
}

/// Copies of peers' transaction states read back as they were kept (intents with values,
/// deletions, read intents, a record of every status), whatever the home; a copy replaces
/// the one kept for its (home, transaction) only if its `at` is greater (the logical part
/// counts), and an empty copy (the home resolved it) drops only an older one; they survive
/// reopening.
pub async fn copies_of_transactions_keep_the_newest_per_home(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let write = |v: Option<&str>| IntentKind::Write {
        value: v.map(str::to_owned),
    };
    let mut staged = intent("t1", "a", write(Some(r#"{"n": 1, "s": "é\u0000\""}"#)));
    staged.homes = vec!["eu-west".into(), "us-east".into()];
    let t1 = copy(
        "t1",
        10,
        vec![
            staged,
            intent("t1", "b", write(None)),
            intent("t1", "c", IntentKind::Read),
        ],
        Some(TxnStatus::Staging { proposed: ts(4) }),
    );
    let records = [
        ("t2", TxnStatus::Pending { min_commit_ts: ts(3) }),
        ("t3", TxnStatus::Committed { commit_ts: ts(9) }),
        ("t4", TxnStatus::Aborted),
    ];
    store.txn_copy_keep("eu-west", &t1, 1_000).await.unwrap();
    for (txn, status) in records {
        store
            .txn_copy_keep("eu-west", &copy(txn, 10, Vec::new(), Some(status)), 1_000)
            .await
            .unwrap();
    }
    let t5 = copy("t5", 10, vec![intent("t5", "d", write(Some("5")))], None);
    store.txn_copy_keep("eu-west", &t5, 1_000).await.unwrap();
    // The same transaction as another home holds it: a separate copy.
    let t1_us = copy("t1", 3, vec![intent("t1", "z", write(Some("z")))], None);
    store.txn_copy_keep("us-east", &t1_us, 1_000).await.unwrap();

    let mut eu = vec![t1.clone()];
    eu.extend(records.map(|(txn, status)| copy(txn, 10, Vec::new(), Some(status))));
    eu.push(t5.clone());
    assert_eq!(copies_of(&*store, "eu-west").await, eu, "read back as kept");
    assert_eq!(copies_of(&*store, "us-east").await, vec![t1_us.clone()]);
    assert!(copies_of(&*store, "ap-south").await.is_empty());

    // t1 at eu-west: an older or equal `at` changes nothing, a newer one replaces it.
    let older = copy("t1", 9, Vec::new(), Some(TxnStatus::Aborted));
    store.txn_copy_keep("eu-west", &older, 2_000).await.unwrap();
    let equal = copy("t1", 10, Vec::new(), Some(TxnStatus::Aborted));
    store.txn_copy_keep("eu-west", &equal, 2_000).await.unwrap();
    assert_eq!(
        copies_of(&*store, "eu-west").await[0],
        t1,
        "an older or equal copy is ignored"
    );
    let mut newer = copy("t1", 10, Vec::new(), Some(TxnStatus::Committed { commit_ts: ts(11) }));
    newer.at.logical = 1;
    store.txn_copy_keep("eu-west", &newer, 2_000).await.unwrap();
    assert_eq!(
        copies_of(&*store, "eu-west").await[0],
        newer,
        "a greater logical part is newer"
    );
    assert_eq!(
        copies_of(&*store, "us-east").await,
        vec![t1_us.clone()],
        "another home's copy of it is untouched"
    );

    // Empty copies: one not newer than t2's keeps it, a newer one drops t3's (and then a
    // later empty one of it changes nothing); another home's is untouched.
    store
        .txn_copy_keep("eu-west", &copy("t2", 10, Vec::new(), None), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("t2", 5, Vec::new(), None), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("t3", 11, Vec::new(), None), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("t3", 12, Vec::new(), None), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("t9", 12, Vec::new(), None), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("ap-south", &copy("t1", 99, Vec::new(), None), 3_000)
        .await
        .unwrap();
    let txns = |copies: &[TxnCopy]| copies.iter().map(|c| c.txn.clone()).collect::<Vec<_>>();
    assert_eq!(
        txns(&copies_of(&*store, "eu-west").await),
        ["t1", "t2", "t4", "t5"],
        "only the older copy is dropped"
    );
    assert!(
        copies_of(&*store, "ap-south").await.is_empty(),
        "an empty copy keeps nothing"
    );
    store.close().await;

    let store = db.open().await;
    let kept = copies_of(&*store, "eu-west").await;
    assert_eq!(
        kept,
        vec![
            newer,
            copy("t2", 10, Vec::new(), Some(TxnStatus::Pending { min_commit_ts: ts(3) })),
            copy("t4", 10, Vec::new(), Some(TxnStatus::Aborted)),
            t5,
        ],
        "the copies survive reopening"
    );
    assert_eq!(copies_of(&*store, "us-east").await, vec![t1_us]);
    assert!(store.txn_intents().await.unwrap().is_empty(), "a copy lays no intent");
    assert_eq!(store.txn_record("t4").await.unwrap(), None, "nor writes a record");
}

/// Copies are pruned by when they were kept here (a replacement counts, an ignored older
/// copy does not), whatever their home; the horizon itself is kept; pruning says how many
/// it dropped.
pub async fn copies_of_transactions_are_pruned_by_when_they_were_kept(b: Backend) {
    let db = Db::new(b).await;
    let store = db.open().await;
    let aborted = Some(TxnStatus::Aborted);
    store
        .txn_copy_keep("eu-west", &copy("old-1", 1, Vec::new(), aborted), 1_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("us-east", &copy("old-2", 1, Vec::new(), aborted), 1_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("edge", 1, Vec::new(), aborted), 2_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("renewed", 1, Vec::new(), aborted), 1_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("renewed", 2, Vec::new(), aborted), 3_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("stale", 5, Vec::new(), aborted), 1_000)
        .await
        .unwrap();
    store
        .txn_copy_keep("eu-west", &copy("stale", 4, Vec::new(), aborted), 3_000)
        .await
        .unwrap();
    assert_eq!(
        store.txn_prune_copies(1_000).await.unwrap(),
        0,
        "the horizon itself is kept"
    );
    assert_eq!(store.txn_prune_copies(2_000).await.unwrap(), 3);
    assert_eq!(store.txn_prune_copies(2_000).await.unwrap(), 0);
    store.close().await;

    let store = db.open().await;
    let txns = |copies: Vec<TxnCopy>| copies.into_iter().map(|c| (c.txn, c.at)).collect::<Vec<_>>();
    assert_eq!(
        txns(copies_of(&*store, "eu-west").await),
        [("edge".to_owned(), ts(1)), ("renewed".to_owned(), ts(2))],
        "a copy replaced since the horizon stays; one whose newer arrival was ignored does not"
    );
    assert!(copies_of(&*store, "us-east").await.is_empty());
    assert_eq!(store.txn_prune_copies(i64::MAX).await.unwrap(), 2);
    assert!(copies_of(&*store, "eu-west").await.is_empty());
}
