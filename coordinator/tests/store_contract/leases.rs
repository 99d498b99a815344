//! Leases: claims of expired sagas, renewals, the lease clock, cancels, take-overs and
//! releases.

use super::*;

pub(crate) async fn claim_takes_expired_unsettled_sagas(f: Fixture) {
    let s = &*f.store;
    let running = create(s, expired(NOW - 100)).await;
    let alive = create(s, saga("node-a")).await;
    for status in [Completed, Stuck] {
        settle(s, &create(s, expired(NOW - 100)).await, status).await;
    }
    let compensating = settle(s, &create(s, expired(NOW - 50)).await, Compensating).await;
    let claimed = claim(s, "node-b", false, 10).await;
    assert_eq!(ids(&claimed), HashSet::from([running.id, compensating.id]));
    for r in &claimed {
        assert_eq!(lease(r), ("node-b", 2, NEXT));
        assert_eq!(&row(s, r.id).await, r);
    }
    assert!(claim(s, "node-c", false, 10).await.is_empty());
    assert_eq!(row(s, alive.id).await, alive);
    // The oldest leases go first.
    let a = create(s, expired(NOW - 30)).await;
    let b = create(s, expired(NOW - 10)).await;
    let c = create(s, expired(NOW - 20)).await;
    let first = claim(s, "node-c", false, 2).await;
    assert_eq!(ids(&first), HashSet::from([a.id, c.id]));
    let second = claim(s, "node-c", false, 2).await;
    assert_eq!(ids(&second), HashSet::from([b.id]));
}

pub(crate) async fn claim_includes_own_sagas_on_request(f: Fixture) {
    let s = &*f.store;
    let mine = create(s, saga("node-a")).await;
    settle(s, &create(s, saga("node-a")).await, Completed).await;
    assert!(claim(s, "node-a", false, 10).await.is_empty());
    assert!(claim(s, "node-b", true, 10).await.is_empty());
    let own = claim(s, "node-a", true, 10).await;
    assert_eq!(ids(&own), HashSet::from([mine.id]));
    assert_eq!(lease(&own[0]), ("node-a", 2, NEXT));
}

pub(crate) async fn renew_extends_leases_and_reports_cancels(f: Fixture) {
    let s = &*f.store;
    let a1 = create(s, saga("node-a")).await;
    let a2 = create(s, saga("node-a")).await;
    let b1 = create(s, saga("node-b")).await;
    let a3 = settle(s, &create(s, saga("node-a")).await, Completed).await;
    s.request_cancel(a2.id).await.unwrap();
    let renewed = s.renew_leases("node-a", NOW + 9000).await.unwrap();
    assert_eq!(renewed.cancels, [a2.id]);
    assert_eq!(ids_of(&renewed.owned), HashSet::from([a1.id, a2.id]));
    for id in [a1.id, a2.id] {
        assert_eq!(row(s, id).await.lease_until_ms, NOW + 9000);
    }
    for id in [a3.id, b1.id] {
        assert_eq!(row(s, id).await.lease_until_ms, NOW + LEASE);
    }
    let b = s.renew_leases("node-b", NOW + 9000).await.unwrap();
    assert_eq!((b.owned, b.cancels), (vec![b1.id], vec![]));
}

/// The clock leases are judged by: PostgreSQL's own (`clock_timestamp()`, so that every
/// coordinator of a database agrees), this host's for the embedded stores. One host runs
/// both here, so they agree within a generous margin; the PostgreSQL one moves with the
/// database's clock, not with a transaction's start.
pub(crate) async fn the_lease_clock_is_the_database_clock(f: Fixture) {
    let s = &*f.store;
    let first = s.clock_ms().await.unwrap();
    let local = coordinator::clock::now_ms();
    assert!((first - local).abs() < 60_000, "{first} vs {local}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = s.clock_ms().await.unwrap();
    assert!(second >= first + 20, "{first} then {second}");
}

pub(crate) async fn request_cancel(f: Fixture) {
    let s = &*f.store;
    let r = create(s, saga("node-a")).await;
    let asked = s.request_cancel(r.id).await.unwrap();
    assert!(asked.expect("the saga").cancel_requested);
    let ack = put(s, append(&r, 0, vec![started("a")])).await;
    assert!(ack.cancel_requested, "the owner learns of it");
    let ack = put(s, append(&r, 1, vec![]).with(|a| a.status = Compensating)).await;
    assert!(!ack.cancel_requested, "unwinding consumes it");
    assert!(!row(s, r.id).await.cancel_requested);
    let done = settle(s, &create(s, saga("node-a")).await, Completed).await;
    assert_eq!(s.request_cancel(done.id).await.unwrap(), Some(done));
    assert_eq!(s.request_cancel(Uuid::new_v4()).await.unwrap(), None);
}

pub(crate) async fn take_over_stuck(f: Fixture) {
    let s = &*f.store;
    let stuck = settle(s, &create(s, saga("node-a")).await, Stuck).await;
    let running = create(s, saga("node-a")).await;
    let taken = s.take_over_stuck(stuck.id, "node-b", NEXT).await.unwrap();
    let taken = taken.expect("a stuck saga is taken over");
    assert_eq!((lease(&taken), taken.status), (("node-b", 2, NEXT), Stuck));
    let unwind = |a: &mut Append| a.status = Compensating;
    let err = refused(s, append(&stuck, 0, vec![]).with(unwind)).await;
    assert!(matches!(err, Error::Fenced(_)), "{err:?}");
    let retry = vec![SagaEvent::RetryRequested {}];
    put(s, append(&taken, 0, retry).with(unwind)).await;
    for id in [running.id, Uuid::new_v4()] {
        let taken = s.take_over_stuck(id, "node-b", NOW).await.unwrap();
        assert_eq!(taken, None);
    }
}

pub(crate) async fn release_frees_leases(f: Fixture) {
    let s = &*f.store;
    let a1 = create(s, saga("node-a")).await;
    let b1 = create(s, saga("node-b")).await;
    let a2 = settle(s, &create(s, saga("node-a")).await, Completed).await;
    s.release("node-a").await.unwrap();
    assert_eq!(row(s, a1.id).await.lease_until_ms, 0);
    assert_eq!(row(s, a2.id).await.lease_until_ms, NOW + LEASE);
    assert_eq!(row(s, b1.id).await.lease_until_ms, NOW + LEASE);
    let adopted = claim(s, "node-b", false, 10).await;
    assert_eq!(ids(&adopted), HashSet::from([a1.id]));
}
