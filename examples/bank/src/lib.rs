//! The bank example: a money transfer written as a Rust saga over a SQLite database of its
//! own. `main.rs` serves it with `geosaga::Server`; the tests run it through the CLI
//! (`tests/cli.rs`) and through `coordinator::conformance` (`tests/conformance.rs`).

mod bank;

use std::sync::Arc;

use geosaga::RustSaga;

pub use bank::{Bank, Entry, OPENING_BALANCE, Transfer};

/// The transfer saga: debit `from` (refunded on unwind), then credit `to` (taken back).
pub fn transfer(bank: Arc<Bank>) -> RustSaga<Bank> {
    RustSaga::new("transfer", bank)
        .input::<Transfer>()
        .step("debit", bank::debit)
        .compensate(bank::refund)
        .step("credit", bank::credit)
        .compensate(bank::uncredit)
}
