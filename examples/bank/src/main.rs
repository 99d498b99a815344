//! `bank`: a service whose money transfers are sagas written in Rust, served by
//! [`geosaga::Server`] with the REST API, console, metrics and flags of `geosaga serve`.
//!
//! ```sh
//! cargo run -p geosaga-example-bank -- --listen 127.0.0.1:7379 --database ./bank-sagas.db
//! geosaga saga start transfer --input '{"from":"alice","to":"bob","amount":50}' --wait
//! ```
//!
//! The accounts live in a SQLite file of their own (`BANK_DATABASE`, default `./bank.db`);
//! see `bank.rs` for how each step keeps the participant contract.

use std::sync::Arc;

use geosaga::Server;
use geosaga_example_bank::{Bank, transfer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("BANK_DATABASE").unwrap_or_else(|_| "./bank.db".into());
    let bank = Arc::new(Bank::open(&path)?);
    Server::builder().saga(transfer(bank)).cli()?.serve().await?;
    Ok(())
}
