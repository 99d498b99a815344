//! Listings (filters and pages), group commit, and retention.

use super::*;

/// Every page of a listing, in pages of `limit`, concatenated.
pub(crate) async fn list(s: &dyn Store, status: Option<SagaStatus>, def: Option<&str>, limit: u32) -> Vec<SagaRecord> {
    let definition = def.map(str::to_owned);
    let mut filter = ListFilter {
        status,
        definition,
        ..newest(limit)
    };
    let mut out = Vec::new();
    loop {
        let page = s.list_sagas(&filter).await.expect("list_sagas");
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { return out };
        filter.before = Some((last.created_at_ms, last.id));
        out.extend(page);
    }
}

pub(crate) async fn list_sagas_filters_and_paginates(f: Fixture) {
    let s = &*f.store;
    for i in 0..25_i64 {
        let definition = if i % 2 == 0 { "even" } else { "odd" };
        let at = NOW + i / 3; // ties in groups of 3
        let new = saga("node-a").with(|n| (n.definition, n.now_ms) = (definition.into(), at));
        let r = create(s, new).await;
        if i % 5 == 0 {
            settle(s, &r, Completed).await;
        }
    }
    let all = s.list_sagas(&newest(100)).await.unwrap();
    assert_eq!(all.len(), 25);
    let keys: Vec<_> = all.iter().map(|r| (r.created_at_ms, r.id)).collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(list(s, None, None, 10).await, all, "no duplicates, no gaps");
    assert_eq!(s.list_sagas(&newest(10)).await.unwrap(), all[..10]);
    let completed = list(s, Some(Completed), None, 2).await;
    assert_eq!(completed.len(), 5);
    assert!(completed.iter().all(|r| r.status == Completed));
    let mut even = all.clone();
    even.retain(|r| r.definition == "even");
    assert_eq!(even.len(), 13);
    assert_eq!(list(s, None, Some("even"), 4).await, even);
    assert_eq!(list(s, Some(Completed), Some("even"), 10).await.len(), 3);
    assert!(list(s, Some(Stuck), None, 10).await.is_empty());
}

pub(crate) async fn list_sagas_finds_an_idempotency_key(f: Fixture) {
    let s = &*f.store;
    let keyed = create(s, saga("node-a").with(|n| n.idempotency_key = Some("order-7".into()))).await;
    create(s, saga("node-a").with(|n| n.idempotency_key = Some("order-8".into()))).await;
    create(s, saga("node-a")).await;
    let find = |key: &str, status: Option<SagaStatus>| ListFilter {
        idempotency_key: Some(key.into()),
        status,
        ..newest(10)
    };
    let found = s.list_sagas(&find("order-7", None)).await.unwrap();
    assert_eq!(ids(&found), HashSet::from([keyed.id]));
    assert!(s.list_sagas(&find("order-9", None)).await.unwrap().is_empty());
    assert!(
        s.list_sagas(&find("order-7", Some(Stuck))).await.unwrap().is_empty(),
        "filters combine"
    );
}

pub(crate) async fn group_commit_batches(f: Fixture) {
    const N: usize = 200;
    let store = |s: &Arc<dyn Store>| s.clone();
    let creates = (0..N).map(|_| {
        let s = store(&f.store);
        tokio::spawn(async move { create(&*s, saga("node-a")).await })
    });
    let mut records = Vec::new();
    for created in join_all(creates).await {
        records.push(created.expect("create task"));
    }
    let before = f.store.stats();
    let appends = records.iter().map(|r| {
        let (s, append) = (store(&f.store), append(r, 0, vec![started("a")]));
        tokio::spawn(async move { s.append(append).await })
    });
    for appended in join_all(appends).await {
        appended.unwrap().expect("append");
    }
    let after = f.store.stats();
    assert_eq!(after.appends - before.appends, N as u64);
    assert_eq!(after.events - before.events, N as u64);
    if f.backend != Backend::Memory {
        let commits = after.commits - before.commits;
        assert!(commits < N as u64, "no batching: {commits} commits");
        assert!(after.max_batch > 1);
    }
    for r in &records {
        assert_eq!(log(&*f.store, r.id).await, [started("a")]);
    }
    // Batched together: retries of a committed append that carry one event more (only that
    // one is stored), new appends, and appends from a stale generation (fenced, nothing
    // stored).
    let next = [started("a"), succeeded("a")];
    let mixed = records.iter().enumerate().map(|(i, r)| {
        let append = match i % 3 {
            0 => append(r, 0, next.to_vec()),
            1 => append(r, 1, vec![succeeded("a")]),
            _ => append(r, 1, vec![succeeded("a")]).with(|a| a.fence.generation += 1),
        };
        let s = store(&f.store);
        tokio::spawn(async move { s.append(append).await })
    });
    let before = f.store.stats();
    let mixed = join_all(mixed).await;
    if f.backend != Backend::Memory {
        let commits = f.store.stats().commits - before.commits;
        assert!(commits < N as u64, "no batching: {commits} commits");
    }
    for (i, (r, appended)) in records.iter().zip(mixed).enumerate() {
        let appended = appended.expect("append task");
        if i % 3 == 2 {
            assert!(matches!(appended, Err(Error::Fenced(id)) if id == r.id), "{appended:?}");
            assert_eq!(log(&*f.store, r.id).await, [started("a")]);
            assert_eq!(row(&*f.store, r.id).await.event_count, 1);
        } else {
            appended.expect("append");
            assert_eq!(log(&*f.store, r.id).await, next);
            assert_eq!(row(&*f.store, r.id).await.event_count, 2);
        }
    }
}

/// A saga of each status, with a step in its log, last changed at `NOW + 1`; the keyed one
/// completed. Returns them in creation order: completed, compensated, stuck, compensating,
/// running, keyed.
pub(crate) async fn one_of_each(s: &dyn Store) -> Vec<SagaRecord> {
    let mut rows = Vec::new();
    for status in [Completed, Compensated, Stuck, Compensating, Running, Completed] {
        let new = if rows.len() == 5 {
            keyed("kept", json!(1))
        } else {
            saga("node-a")
        };
        let r = create(s, new).await;
        put(s, append(&r, 0, vec![started("a")]).with(|a| a.status = status)).await;
        rows.push(row(s, r.id).await);
    }
    rows
}

pub(crate) async fn retention_takes_finished_sagas_past_their_age(f: Fixture) {
    let s = &*f.store;
    let all = one_of_each(s).await;
    let expired = |finished_before_ms, keys_created_before_ms, limit| async move {
        let expiry = Expiry {
            finished_before_ms,
            keys_created_before_ms,
        };
        let found = s.expired(&expiry, limit).await.expect("expired");
        found.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(
        expired(NOW + 2, NOW, 10).await,
        [all[0].id, all[1].id],
        "finished, and no key"
    );
    assert_eq!(expired(NOW + 2, NOW, 1).await, [all[0].id], "the oldest first");
    assert!(
        expired(NOW + 1, NOW + 1, 10).await.is_empty(),
        "changed at NOW + 1: not before it"
    );
    let with_key = expired(NOW + 2, NOW + 1, 10).await;
    assert_eq!(with_key, [all[0].id, all[1].id, all[5].id], "the key's window is over");
    let found = s.expired(
        &Expiry {
            finished_before_ms: NOW + 2,
            keys_created_before_ms: NOW,
        },
        10,
    );
    assert_eq!(found.await.unwrap()[0], all[0], "whole rows, for the archive");
}

pub(crate) async fn retention_deletes_what_expiry_still_covers(f: Fixture) {
    let s = &*f.store;
    let all = one_of_each(s).await;
    let ids: Vec<Uuid> = all.iter().map(|r| r.id).collect();
    let expiry = Expiry {
        finished_before_ms: NOW + 2,
        keys_created_before_ms: NOW,
    };
    let deleted = s.delete_expired(&ids, &expiry).await.expect("delete");
    assert_eq!(ids_of(&deleted), ids_of(&ids[..2]), "the finished ones without a key");
    for id in &ids[..2] {
        assert_eq!(s.get_saga(*id).await.unwrap(), None);
        assert!(log(s, *id).await.is_empty(), "the log goes with its saga");
    }
    for r in &all[2..] {
        assert_eq!(row(s, r.id).await, *r, "untouched");
        assert_eq!(log(s, r.id).await, [started("a")]);
    }
    assert!(
        s.delete_expired(&ids, &expiry).await.unwrap().is_empty(),
        "nothing twice"
    );
    // Within its window the key still answers with its saga; past it, the key is free.
    let again = s.create_saga(keyed("kept", json!(1))).await.unwrap();
    assert!(matches!(again, Created::Existing(r) if r.id == all[5].id));
    let past = Expiry {
        keys_created_before_ms: NOW + 1,
        ..expiry
    };
    assert_eq!(s.delete_expired(&ids, &past).await.unwrap(), [all[5].id]);
    assert!(matches!(
        s.create_saga(keyed("kept", json!(1))).await.unwrap(),
        Created::New(_)
    ));
}
