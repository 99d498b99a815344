//! Definitions, saga rows, idempotency keys and appends: what a start and a running saga
//! write.

use super::*;

pub(crate) async fn definitions_are_versioned(f: Fixture) {
    let s = &*f.store;
    let (doc1, doc2) = (json!({"steps": [1]}), json!({"steps": [2]}));
    let v1 = s.put_definition("trip", "h1", &doc1, 10).await.unwrap();
    assert!(v1.created);
    assert_eq!((v1.record.version, v1.record.created_at_ms), (1, 10));
    assert_eq!(v1.record.document, doc1);
    let again = s.put_definition("trip", "h1", &doc1, 20).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record, v1.record, "same content, same version");
    let v2 = s.put_definition("trip", "h2", &doc2, 30).await.unwrap();
    assert_eq!((v2.created, v2.record.version), (true, 2));
    let back = s.put_definition("trip", "h1", &doc1, 40).await.unwrap();
    assert_eq!((back.created, back.record.version), (false, 1));
    assert_eq!(def(s, "trip", None).await, Some(v2.record));
    assert_eq!(def(s, "trip", Some(1)).await, Some(v1.record));
    assert_eq!(def(s, "trip", Some(3)).await, None);
    assert_eq!(def(s, "nope", None).await, None);
    let alpha = s.put_definition("alpha", "a", &doc1, 50).await.unwrap();
    assert_eq!(alpha.record.version, 1, "versions count per name");
    let list = s.list_definitions().await.unwrap();
    let list: Vec<_> = list.iter().map(|d| (d.name.as_str(), d.latest_version)).collect();
    assert_eq!(list, [("alpha", 1), ("trip", 2)]);
    assert_eq!(list_updated(s).await, [50, 30]);
}

pub(crate) async fn list_updated(s: &dyn Store) -> Vec<i64> {
    let list = s.list_definitions().await.expect("list_definitions");
    list.iter().map(|d| d.updated_at_ms).collect()
}

pub(crate) async fn create_and_get(f: Fixture) {
    let s = &*f.store;
    let input = json!({"n": 12.5, "big": u64::MAX, "text": "héllo ✓ \"q\"", "a": [1, null, true]});
    let trace = Some("00-ab-01".to_owned());
    let new = saga("node-a").with(|n| (n.input, n.trace_context) = (input.clone(), trace));
    let r = create(s, new.clone()).await;
    assert_eq!((r.id, r.version, r.event_count), (new.id, 1, 0));
    assert_eq!((r.definition.as_str(), r.status), ("trip", Running));
    assert_eq!((&r.input, r.error.as_deref()), (&input, None));
    assert_eq!((r.created_at_ms, r.updated_at_ms), (NOW, NOW));
    assert_eq!(lease(&r), ("node-a", 1, NOW + LEASE));
    assert_eq!(r.trace_context.as_deref(), Some("00-ab-01"));
    assert!(!r.cancel_requested);
    assert_eq!(r.fence(), Some(fence("node-a", 1)));
    assert_eq!(row(s, r.id).await, r);
    assert!(log(s, r.id).await.is_empty());
    assert_eq!(s.get_saga(Uuid::new_v4()).await.unwrap(), None);
    s.ping().await.unwrap();
}

pub(crate) async fn idempotency_keys(f: Fixture) {
    let s = &*f.store;
    let first = create(s, keyed("k1", json!(1))).await;
    assert_eq!(first.idempotency_key.as_deref(), Some("k1"));
    let retry = keyed("k1", json!(1));
    let retry_id = retry.id;
    match s.create_saga(retry).await.unwrap() {
        Created::Existing(existing) => assert_eq!(existing, first),
        Created::New(_) => panic!("the same key and request must return the existing saga"),
    }
    assert_eq!(s.get_saga(retry_id).await.unwrap(), None);
    let err = s.create_saga(keyed("k1", json!(2))).await.unwrap_err();
    let conflict = |e: &Error| match e {
        Error::IdempotencyConflict { key, existing } => key == "k1" && *existing == first.id,
        _ => false,
    };
    assert!(conflict(&err), "{err:?}");
    let other_version = keyed("k1", json!(1)).with(|n| n.version = 2);
    let err = s.create_saga(other_version).await.unwrap_err();
    assert!(conflict(&err), "{err:?}");
    let a = create(s, saga("node-a")).await;
    let b = create(s, saga("node-a")).await;
    assert_ne!(a.id, b.id, "without a key, every start is a new saga");
    // Concurrent starts with one key (in one batch, or several): exactly one creates.
    let starts = (0..10).map(|_| s.create_saga(keyed("k2", json!(1))));
    let mut new = HashSet::new();
    let mut seen = HashSet::new();
    for created in join_all(starts).await {
        match created.expect("create") {
            Created::New(r) => new.insert(r.id),
            Created::Existing(r) => seen.insert(r.id),
        };
    }
    assert_eq!(new.len(), 1);
    assert!(seen.is_subset(&new));
}

/// Starts with one idempotency key submitted together, two different requests among them
/// (on SQLite and PostgreSQL, several in one batch): exactly one saga is stored, with its own
/// first events only; every other start gets that saga when its request is the same, else a
/// conflict naming it.
pub(crate) async fn one_key_started_together(f: Fixture) {
    const STARTS: usize = 32;
    const OTHERS: usize = 64;
    // Other starts first keep the writer busy, so that the keyed ones queue up together.
    let others: Vec<_> = (0..OTHERS)
        .map(|_| {
            let s = f.store.clone();
            tokio::spawn(async move { create(&*s, saga("node-a")).await })
        })
        .collect();
    let starts = (0..STARTS).map(|i| {
        let s = f.store.clone();
        let new = keyed("together", json!(i % 2)).with(|n| n.events = vec![started(&format!("s{i}"))]);
        tokio::spawn(async move { (new.clone(), s.create_saga(new).await) })
    });
    let outcomes: Vec<(NewSaga, Result<Created, Error>)> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start task"))
        .collect();
    for other in join_all(others).await {
        other.expect("start task");
    }
    let winners: Vec<(&NewSaga, &SagaRecord)> = outcomes
        .iter()
        .filter_map(|(new, created)| match created {
            Ok(Created::New(r)) => Some((new, r)),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one start creates");
    let (first, saga) = winners[0];
    assert_eq!((saga.id, saga.event_count), (first.id, 1));
    assert_eq!(row(&*f.store, saga.id).await, *saga);
    assert_eq!(log(&*f.store, saga.id).await, first.events);
    for (new, created) in &outcomes {
        match created {
            Ok(Created::New(_)) => {}
            Ok(Created::Existing(existing)) => {
                assert_eq!(new.input, first.input, "only the same request gets the saga");
                assert_eq!(existing, saga);
            }
            Err(Error::IdempotencyConflict { key, existing }) => {
                assert_ne!(new.input, first.input, "the same request is not a conflict");
                assert_eq!((key.as_str(), *existing), ("together", saga.id));
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
        assert_eq!(f.store.get_saga(new.id).await.unwrap().is_some(), new.id == saga.id);
    }
    assert_eq!(f.store.list_sagas(&newest(200)).await.unwrap().len(), 1 + OTHERS);
    if f.backend != Backend::Memory {
        assert!(f.store.stats().max_batch > 1, "the starts were never batched together");
    }
}

pub(crate) async fn appends_are_ordered_and_idempotent(f: Fixture) {
    let s = &*f.store;
    let r = create(s, saga("node-a")).await;
    let done = succeeded("a");
    let first = vec![started("a"), done.clone()];
    assert!(!put(s, append(&r, 0, first.clone())).await.cancel_requested);
    put(s, append(&r, 2, vec![started("b")])).await;
    let stored = s.events(r.id).await.unwrap();
    let positions: Vec<_> = stored.iter().map(|e| (e.seq, e.at_ms)).collect();
    assert_eq!(positions, [0, 1, 2].map(|seq| (seq, NOW + 1)));
    assert_eq!(log(s, r.id).await, [started("a"), done, started("b")]);
    // A retried append (same events, same seqs) is harmless.
    put(s, append(&r, 0, first).with(|a| a.now_ms = NOW + 5)).await;
    assert_eq!(s.events(r.id).await.unwrap(), stored);
    assert_eq!(row(s, r.id).await.event_count, 3);
    let failed = failed("b");
    let error = Some("b failed".to_owned());
    let unwind = |a: &mut Append| (a.status, a.error, a.now_ms) = (Compensating, error, NOW + 9);
    put(s, append(&r, 3, vec![failed.clone()]).with(unwind)).await;
    let r = row(s, r.id).await;
    assert_eq!((r.status, r.updated_at_ms, r.event_count), (Compensating, NOW + 9, 4));
    assert_eq!(r.error.as_deref(), Some("b failed"));
    assert_eq!(log(s, r.id).await[3], failed);
}

/// The logs of an adopted batch come in one read, each whole and in order; a saga without
/// events and an unknown id are absent.
pub(crate) async fn events_of_reads_several_logs_at_once(f: Fixture) {
    let s = &*f.store;
    let a = create(s, saga("node-a")).await;
    let b = create(s, saga("node-a")).await;
    let empty = create(s, saga("node-a")).await;
    put(s, append(&a, 0, vec![started("a"), succeeded("a")])).await;
    put(s, append(&a, 2, vec![started("b")])).await;
    put(s, append(&b, 0, vec![started("a")])).await;
    let logs = s.events_of(&[a.id, b.id, empty.id, Uuid::now_v7()]).await.unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[&a.id], s.events(a.id).await.unwrap());
    assert_eq!(logs[&a.id].iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        logs[&b.id].iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        [started("a")]
    );
    assert!(s.events_of(&[]).await.unwrap().is_empty());
}

/// The starts of a saga's root steps are written with its row, in the same transaction;
/// a repeated start with the same idempotency key writes nothing.
pub(crate) async fn a_saga_is_created_with_its_first_events(f: Fixture) {
    let s = &*f.store;
    let first = vec![started("a"), started("b")];
    let new = keyed("k-first", json!({})).with(|n| n.events = first.clone());
    let r = create(s, new.clone()).await;
    assert_eq!(log(s, r.id).await, first);
    let stored = s.events(r.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| (e.seq, e.at_ms)).collect::<Vec<_>>(),
        [(0, NOW), (1, NOW)]
    );
    assert_eq!(
        (row(s, r.id).await.event_count, row(s, r.id).await.status),
        (2, SagaStatus::Running)
    );
    put(s, append(&r, 2, vec![succeeded("a")])).await;
    let again = s.create_saga(new.with(|n| n.id = Uuid::now_v7())).await.unwrap();
    assert!(matches!(again, Created::Existing(ref e) if e.id == r.id), "{again:?}");
    assert_eq!(log(s, r.id).await, [started("a"), started("b"), succeeded("a")]);
}

pub(crate) async fn appends_are_fenced(f: Fixture) {
    let s = &*f.store;
    let old = create(s, expired(NOW - 1)).await;
    let claimed = claim(s, "node-b", false, 10).await;
    let leases: Vec<_> = claimed.iter().map(lease).collect();
    assert_eq!(leases, [("node-b", 2, NEXT)]);
    for stale in [fence("node-a", 1), fence("node-b", 1), fence("node-a", 2)] {
        let stale = append(&old, 0, vec![started("a")]).with(|a| a.fence = stale);
        let err = refused(s, stale).await;
        assert!(matches!(err, Error::Fenced(id) if id == old.id), "{err:?}");
    }
    put(s, append(&claimed[0], 0, vec![started("x")])).await;
    assert_eq!(log(s, old.id).await, [started("x")]);
    let unknown = append(&claimed[0], 0, vec![]).with(|a| a.saga_id = Uuid::new_v4());
    let unknown_id = unknown.saga_id;
    let err = refused(s, unknown).await;
    let not_found = matches!(err, Error::SagaNotFound(id) if id == unknown_id);
    assert!(not_found, "{err:?}");
    assert!(log(s, unknown_id).await.is_empty());
}
