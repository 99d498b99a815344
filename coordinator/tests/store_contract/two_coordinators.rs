//! Two coordinators on one database: disjoint claims, racing idempotency keys and
//! definitions.

use super::*;

pub(crate) fn ids_of(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

pub(crate) async fn two_coordinators_claim_disjoint_sagas(f: Fixture) {
    let peer = f.peer().await;
    for _ in 0..40 {
        create(&*f.store, expired(NOW - 1)).await;
    }
    let b = claim(&*f.store, "node-b", false, 40);
    let (b, c) = tokio::join!(b, claim(&*peer, "node-c", false, 40));
    assert_eq!(b.len() + c.len(), 40);
    assert!(ids(&b).is_disjoint(&ids(&c)), "adopted once");
    assert!(b.iter().chain(&c).all(|r| r.generation == 2));
}

pub(crate) async fn two_coordinators_race_on_idempotency_keys(f: Fixture) {
    let peer = f.peer().await;
    let start = |s: &Arc<dyn Store>, key: String, input: Value| {
        let s = s.clone();
        async move { s.create_saga(keyed(&key, input)).await }
    };
    let races = (0..20).map(|i| {
        let (key, input) = (format!("key-{i}"), json!(i));
        let mine = start(&f.store, key.clone(), input.clone());
        futures::future::join(mine, start(&peer, key, input))
    });
    for (a, b) in join_all(races).await {
        match (a.expect("no SQL error"), b.expect("no SQL error")) {
            (Created::New(n), Created::Existing(e)) | (Created::Existing(e), Created::New(n)) => {
                assert_eq!(n.id, e.id)
            }
            other => panic!("exactly one start creates: {other:?}"),
        }
    }
    let a = start(&f.store, "clash".into(), json!(1));
    let (a, b) = tokio::join!(a, start(&peer, "clash".into(), json!(2)));
    let outcomes = [a, b].map(|r| match r {
        Ok(Created::New(_)) => "new",
        Err(Error::IdempotencyConflict { .. }) => "conflict",
        other => panic!("unexpected: {other:?}"),
    });
    let mut outcomes = outcomes.to_vec();
    outcomes.sort();
    assert_eq!(outcomes, ["conflict", "new"]);
}

pub(crate) async fn two_coordinators_register_definitions(f: Fixture) {
    let stores = [f.store.clone(), f.peer().await];
    let puts = (0..16).map(|i| {
        let s = stores[i % 2].clone();
        let hash = format!("h{}", i.min(8)); // 8..16: the same content
        async move { s.put_definition("trip", &hash, &json!(hash), NOW).await }
    });
    let (mut created, mut same) = (Vec::new(), HashSet::new());
    for (i, put) in join_all(puts).await.into_iter().enumerate() {
        let put = put.expect("no SQL error");
        if put.created {
            created.push(put.record.version);
        }
        if i >= 8 {
            same.insert(put.record.version);
        }
    }
    created.sort();
    assert_eq!(created, (1..=9).collect::<Vec<_>>(), "one version per content");
    assert_eq!(same.len(), 1);
}
