//! A Rust client of a region's transaction API: [`Client::begin`] opens a transaction at
//! the region (its gateway) and returns a [`Txn`] to read, write and commit it;
//! [`Client::one_shot`] and [`Client::snapshot`] are the one-request forms. The requests
//! are built by [`regions_client`], from the protocol's types.
//!
//! ```no_run
//! # async fn f() -> regions::Result<()> {
//! let client = regions::client::Client::new("http://127.0.0.1:7401");
//! let txn = client.begin().await?;
//! let from = txn.get("us/alice").await?.map_or(0, |v| v.value.as_i64().unwrap_or(0));
//! txn.put("us/alice", &serde_json::json!(from - 10)).await?;
//! txn.put("eu/bob", &serde_json::json!(10)).await?;
//! let committed = txn.commit().await?; // Err(Error::TxnConflict { .. }): nothing applied
//! # Ok(()) }
//! ```

use regions_core::protocol::{
    BeginRequest, BeginResponse, CommitResponse, OneShotRequest, SnapshotRequest, SnapshotResponse, TxnPutRequest,
    TxnValue,
};
use serde::de::DeserializeOwned;

use problem::{PROBLEM_BASE, Problem};

use crate::{Error, Result};

/// A request [`regions_client`] built, or the base address it could not build it on.
fn built(
    request: std::result::Result<reqwest::RequestBuilder, regions_client::BadAddress>,
) -> Result<reqwest::RequestBuilder> {
    request.map_err(|e| Error::Config(e.to_string()))
}

/// A client of one region.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// An open transaction (at the region that began it).
#[derive(Debug, Clone)]
pub struct Txn {
    client: Client,
    /// Its id.
    pub id: String,
    /// Its snapshot (`WALL_MS.LOGICAL`).
    pub read_ts: String,
}

impl Client {
    /// A client of the region at `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        Client::with_http(base, reqwest::Client::new())
    }

    /// A client sending through `http` (TLS settings, timeouts).
    pub fn with_http(base: &str, http: reqwest::Client) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    /// The same client sending `token` as `Authorization: Bearer` (a region with tokens:
    /// `read` for reads and snapshots, `write` for transactions that write).
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Begins a serializable transaction.
    pub async fn begin(&self) -> Result<Txn> {
        let request = built(regions_client::begin(&self.http, &self.base, &BeginRequest::default()))?;
        let begun: BeginResponse = self.answer(request).await?.expect("a begin answers");
        Ok(Txn {
            client: self.clone(),
            id: begun.id,
            read_ts: begun.read_ts,
        })
    }

    /// Reads, checks and writes in one request (`POST /v1/txn`).
    pub async fn one_shot(&self, req: &OneShotRequest) -> Result<CommitResponse> {
        let answer = self
            .answer(built(regions_client::one_shot(&self.http, &self.base, req))?)
            .await?;
        Ok(answer.expect("a commit answers"))
    }

    /// Reads several keys at one timestamp (`POST /v1/snapshot`).
    pub async fn snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotResponse> {
        let answer = self
            .answer(built(regions_client::snapshot(&self.http, &self.base, req))?)
            .await?;
        Ok(answer.expect("a snapshot answers"))
    }

    /// Sends `request`: its JSON answer (`None`: 204, or 404 `key-not-found`), or the
    /// problem as an error.
    async fn answer<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<Option<T>> {
        let unreachable = |reason: String| Error::HomeUnreachable {
            region: self.base.clone(),
            reason,
        };
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        if status.as_u16() == 204 {
            return Ok(None);
        }
        let body = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| unreachable(e.to_string()));
        }
        let problem: Problem = serde_json::from_slice(&body).map_err(|e| unreachable(format!("{status}: {e}")))?;
        let slug = problem.r#type.trim_start_matches(PROBLEM_BASE);
        Err(match slug {
            "key-not-found" => return Ok(None),
            "txn-conflict" => Error::TxnConflict {
                txn: String::new(),
                key: problem.key.unwrap_or_default(),
                with: problem.conflicting_txn,
                detail: problem.detail,
            },
            "txn-not-found" => Error::TxnNotFound(problem.detail),
            "txn-gone" => Error::TxnGone {
                txn: String::new(),
                why: problem.detail,
            },
            "invalid-parameter" | "invalid-body" | "malformed-json" | "version-mismatch" | "unauthenticated"
            | "forbidden" | "too-large" => Error::BadRequest(format!("{slug}: {}", problem.detail)),
            _ => unreachable(format!("{status} {slug}: {}", problem.detail)),
        })
    }
}

impl Txn {
    /// Reads `key` at the snapshot (with this transaction's own writes); `None`: absent.
    pub async fn get(&self, key: &str) -> Result<Option<TxnValue>> {
        let c = &self.client;
        c.answer(built(regions_client::txn_get(&c.http, &c.base, &self.id, key))?)
            .await
    }

    /// Writes `value` at the commit.
    pub async fn put(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        let c = &self.client;
        let body = TxnPutRequest { value: value.clone() };
        c.answer::<serde_json::Value>(built(regions_client::txn_put(&c.http, &c.base, &self.id, key, &body))?)
            .await
            .map(|_| ())
    }

    /// Deletes `key` at the commit.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let c = &self.client;
        c.answer::<serde_json::Value>(built(regions_client::txn_delete(&c.http, &c.base, &self.id, key))?)
            .await
            .map(|_| ())
    }

    /// Commits: every write or none ([`Error::TxnConflict`]).
    pub async fn commit(self) -> Result<CommitResponse> {
        let c = &self.client;
        let answer = c
            .answer(built(regions_client::commit(&c.http, &c.base, &self.id))?)
            .await?;
        Ok(answer.expect("a commit answers"))
    }

    /// Aborts.
    pub async fn abort(self) -> Result<()> {
        let c = &self.client;
        c.answer::<serde_json::Value>(built(regions_client::abort(&c.http, &c.base, &self.id))?)
            .await
            .map(|_| ())
    }
}
