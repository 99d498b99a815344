//! The bank: accounts in SQLite, and the steps of a transfer.
//!
//! Each step is one SQLite transaction that keeps the participant contract (README,
//! "Participants"): an action is applied at most once per idempotency key (the ledger's
//! key), a compensation is keyed by its action's key and undoes what that action did, or
//! nothing if it never ran, and an action that arrives after its compensation is refused.

use std::sync::{Arc, Mutex};

use geosaga::{StepContext, StepError};
use rusqlite::{Connection, OptionalExtension, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What every account holds before anything happened to it.
pub const OPENING_BALANCE: i64 = 1000;

/// A transfer's input: the saga refuses any other shape before a step runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The account debited.
    pub from: String,
    /// The account credited (`closed` refuses credits).
    pub to: String,
    /// Whole units, more than zero.
    #[schemars(range(min = 1))]
    pub amount: i64,
}

/// What a debit or a credit answers: the step's output.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The account.
    pub account: String,
    /// Its balance after the entry.
    pub balance: i64,
}

/// The accounts, in one SQLite file.
pub struct Bank {
    db: Mutex<Connection>,
}

impl Bank {
    /// An account's balance.
    pub fn balance(&self, account: &str) -> Result<i64, StepError> {
        balance(&self.db.lock().expect("bank lock"), account)
    }

    /// Opens (or creates) the bank's database at `path`.
    pub fn open(path: &str) -> rusqlite::Result<Bank> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
             -- One row per action key: what it did (delta 0: compensated before it ran).
             CREATE TABLE IF NOT EXISTS ledger (
                 key TEXT PRIMARY KEY, account TEXT NOT NULL, delta INTEGER NOT NULL,
                 balance INTEGER NOT NULL, compensated INTEGER NOT NULL DEFAULT 0);",
        )?;
        Ok(Bank { db: Mutex::new(db) })
    }

    /// Applies `delta` to `account` once per `key`; `refuse` may refuse it given the balance.
    fn apply(
        &self,
        key: &str,
        account: &str,
        delta: i64,
        refuse: impl Fn(i64) -> Option<String>,
    ) -> Result<Entry, StepError> {
        let mut db = self.db.lock().expect("bank lock");
        let tx = db.transaction().map_err(transient)?;
        let done: Option<(i64, bool)> = tx
            .query_row("SELECT balance, compensated FROM ledger WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(transient)?;
        match done {
            Some((_, true)) => return Err(StepError::permanent("compensated before it arrived; not applied")),
            Some((balance, false)) => {
                return Ok(Entry {
                    account: account.to_owned(),
                    balance,
                });
            }
            None => {}
        }
        let balance = balance(&tx, account)?;
        if let Some(reason) = refuse(balance) {
            return Err(StepError::permanent(reason));
        }
        let balance = balance + delta;
        tx.execute(
            "INSERT INTO accounts (name, balance) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET balance = excluded.balance",
            params![account, balance],
        )
        .map_err(transient)?;
        tx.execute(
            "INSERT INTO ledger (key, account, delta, balance) VALUES (?1, ?2, ?3, ?4)",
            params![key, account, delta, balance],
        )
        .map_err(transient)?;
        tx.commit().map_err(transient)?;
        Ok(Entry {
            account: account.to_owned(),
            balance,
        })
    }

    /// Undoes what the action keyed `key` did, once; bars it if it never ran.
    fn undo(&self, key: &str, account: &str) -> Result<(), StepError> {
        let mut db = self.db.lock().expect("bank lock");
        let tx = db.transaction().map_err(transient)?;
        let done: Option<(i64, bool)> = tx
            .query_row("SELECT delta, compensated FROM ledger WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(transient)?;
        match done {
            Some((_, true)) => return Ok(()),
            Some((delta, false)) => {
                tx.execute(
                    "UPDATE accounts SET balance = balance - ?2 WHERE name = ?1",
                    params![account, delta],
                )
                .map_err(transient)?;
                tx.execute("UPDATE ledger SET compensated = 1 WHERE key = ?1", [key])
                    .map_err(transient)?;
            }
            None => {
                tx.execute(
                    "INSERT INTO ledger (key, account, delta, balance, compensated) VALUES (?1, ?2, 0, 0, 1)",
                    params![key, account],
                )
                .map_err(transient)?;
            }
        }
        tx.commit().map_err(transient)
    }
}

fn balance(db: &Connection, account: &str) -> Result<i64, StepError> {
    db.query_row("SELECT balance FROM accounts WHERE name = ?1", [account], |r| r.get(0))
        .optional()
        .map(|b| b.unwrap_or(OPENING_BALANCE))
        .map_err(transient)
}

/// A database failure: the coordinator retries the step under the same key.
fn transient(e: rusqlite::Error) -> StepError {
    StepError::transient(format!("bank database: {e}"))
}

/// Takes `amount` from `from`, unless that would leave it below zero.
pub async fn debit(bank: Arc<Bank>, cx: StepContext) -> Result<Entry, StepError> {
    let t: Transfer = cx.input()?;
    let key = cx.idempotency_key.clone();
    blocking(move || {
        bank.apply(&key, &t.from, -t.amount, |balance| {
            (balance < t.amount).then(|| format!("insufficient funds: {balance} < {}", t.amount))
        })
    })
    .await
}

/// Gives the debit back.
pub async fn refund(bank: Arc<Bank>, cx: StepContext) -> Result<(), StepError> {
    let t: Transfer = cx.input()?;
    let key = cx.action_key();
    blocking(move || bank.undo(&key, &t.from)).await
}

/// Adds `amount` to `to`; the account `closed` refuses.
pub async fn credit(bank: Arc<Bank>, cx: StepContext) -> Result<Entry, StepError> {
    let t: Transfer = cx.input()?;
    let key = cx.idempotency_key.clone();
    blocking(move || {
        bank.apply(&key, &t.to, t.amount, |_| {
            (t.to == "closed").then(|| "account closed".to_owned())
        })
    })
    .await
}

/// Takes the credit back.
pub async fn uncredit(bank: Arc<Bank>, cx: StepContext) -> Result<(), StepError> {
    let t: Transfer = cx.input()?;
    let key = cx.action_key();
    blocking(move || bank.undo(&key, &t.to)).await
}

/// SQLite blocks: run it off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StepError::transient(format!("bank task: {e}")))?
}
