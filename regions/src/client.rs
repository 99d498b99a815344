//! A Rust client of a region's transaction API: [`Client::begin`] opens a transaction at
//! the region (its gateway) and returns a [`Txn`] to read, write and commit it;
//! [`Client::one_shot`] and [`Client::snapshot`] are the one-request forms.
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
        let request = self.http.post(self.url("/v1/txns")).json(&BeginRequest::default());
        let begun: BeginResponse = self.answer(request).await?.expect("a begin answers");
        Ok(Txn {
            client: self.clone(),
            id: begun.id,
            read_ts: begun.read_ts,
        })
    }

    /// Reads, checks and writes in one request (`POST /v1/txn`).
    pub async fn one_shot(&self, req: &OneShotRequest) -> Result<CommitResponse> {
        let answer = self.answer(self.http.post(self.url("/v1/txn")).json(req)).await?;
        Ok(answer.expect("a commit answers"))
    }

    /// Reads several keys at one timestamp (`POST /v1/snapshot`).
    pub async fn snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotResponse> {
        let answer = self.answer(self.http.post(self.url("/v1/snapshot")).json(req)).await?;
        Ok(answer.expect("a snapshot answers"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn key_url(&self, id: &str, key: &str) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| Error::Config(format!("{:?}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|()| Error::Config(format!("{:?} cannot have a path", self.base)))?
            .pop_if_empty()
            .extend(["v1", "txns", id, "kv"])
            .extend(key.split('/'));
        Ok(url)
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
        let url = self.client.key_url(&self.id, key)?;
        self.client.answer(self.client.http.get(url)).await
    }

    /// Writes `value` at the commit.
    pub async fn put(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        let url = self.client.key_url(&self.id, key)?;
        let body = TxnPutRequest { value: value.clone() };
        self.client
            .answer::<serde_json::Value>(self.client.http.put(url).json(&body))
            .await
            .map(|_| ())
    }

    /// Deletes `key` at the commit.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let url = self.client.key_url(&self.id, key)?;
        self.client
            .answer::<serde_json::Value>(self.client.http.delete(url))
            .await
            .map(|_| ())
    }

    /// Commits: every write or none ([`Error::TxnConflict`]).
    pub async fn commit(self) -> Result<CommitResponse> {
        let url = self.client.url(&format!("/v1/txns/{}/commit", self.id));
        let answer = self.client.answer(self.client.http.post(url)).await?;
        Ok(answer.expect("a commit answers"))
    }

    /// Aborts.
    pub async fn abort(self) -> Result<()> {
        let url = self.client.url(&format!("/v1/txns/{}/abort", self.id));
        self.client
            .answer::<serde_json::Value>(self.client.http.post(url))
            .await
            .map(|_| ())
    }
}
