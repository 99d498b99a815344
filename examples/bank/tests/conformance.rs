//! The transfer saga through `coordinator::conformance`, in memory: it completes, every
//! action run twice changes nothing more, and a failure, a lost answer or a lost request at
//! each step unwinds it; after every case no money was made or lost, and a compensated
//! transfer left both balances where they were.

use std::sync::Arc;

use coordinator::HandlerRegistry;
use coordinator::conformance::{self, Case};
use geosaga_example_bank::{Bank, OPENING_BALANCE, transfer};
use sagas::SagaStatus;

#[tokio::test]
async fn the_transfer_saga_passes_every_conformance_case() {
    let dir = tempfile::tempdir().unwrap();
    let bank = Arc::new(Bank::open(dir.path().join("bank.db").to_str().unwrap()).unwrap());
    let registry = HandlerRegistry::new();
    let definition = transfer(bank.clone()).build(&registry).unwrap();
    let input = serde_json::json!({"from": "alice", "to": "bob", "amount": 10});
    let completed = std::sync::Mutex::new(0);
    conformance::check(&definition, registry, input, |case, view| {
        let (alice, bob) = (bank.balance("alice").unwrap(), bank.balance("bob").unwrap());
        if alice + bob != 2 * OPENING_BALANCE {
            return Err(format!("{case:?}: money made or lost: alice {alice}, bob {bob}"));
        }
        let mut done = completed.lock().unwrap();
        match view.state.status() {
            SagaStatus::Completed => *done += 1,
            SagaStatus::Compensated => {}
            other => return Err(format!("{case:?} ended {}", other.as_str())),
        }
        if alice != OPENING_BALANCE - 10 * *done {
            return Err(format!("{case:?}: alice has {alice} after {done} completed transfers"));
        }
        if matches!(case, Case::Plain) && *done != 1 {
            return Err("the plain run did not complete".into());
        }
        Ok(())
    })
    .await
    .unwrap();
}
