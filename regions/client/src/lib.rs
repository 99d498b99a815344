//! # geosaga regions client
//!
//! Requests to a region's key-value API, typed with the regions' own wire types
//! ([`regions_core::protocol`]): the coordinator's region steps, the CLI and a region
//! forwarding a request to a key's home build them here, so that a field renamed on the
//! region's side fails to compile on the caller's. It builds requests and leaves sending
//! them to the caller, whose policies differ (the coordinator tries the next region when one
//! cannot be reached, reads answers within a cap and classifies them; a region relays the
//! home's answer as is).
//!
//! ## Layout
//! - [`key_url`]: a key's URL under a region's base address, each segment of the key
//!   escaped.
//! - [`get`], [`put`], [`patch`], [`delete`]: the requests of `/v1/kv/{key}`, from
//!   [`ReadQuery`], [`PutRequest`], [`PatchRequest`] (an [`Add`] or an [`Undo`]) and
//!   [`DeleteQuery`].
//! - Transactions: [`begin`] (`POST /v1/txns`, a [`BeginRequest`]), then [`txn_get`],
//!   [`txn_put`] (a [`TxnPutRequest`]), [`txn_delete`], [`commit`] and [`abort`] under
//!   `/v1/txns/{id}`; [`one_shot`] (`POST /v1/txn`, a [`OneShotRequest`] of
//!   [`Condition`]s and [`OneShotWrite`]s) and [`snapshot`] (`POST /v1/snapshot`, a
//!   [`SnapshotRequest`]).

pub use regions_core::add::Add;
pub use regions_core::closed::ReadConsistency;
pub use regions_core::protocol::{
    BeginRequest, Condition, DeleteQuery, OneShotRequest, OneShotWrite, PatchRequest, PutRequest, ReadQuery,
    SnapshotRequest, TxnPutRequest, Undo, WriteConsistency,
};
use reqwest::{Client, RequestBuilder, Url};

/// The public key-value route, under a region's base address.
pub const KV: [&str; 2] = ["v1", "kv"];
/// The routes of open transactions, under a region's base address.
pub const TXNS: [&str; 2] = ["v1", "txns"];

/// A region's base address that cannot take a key's path.
#[derive(Debug, thiserror::Error)]
#[error("region address {base:?}: {why}")]
pub struct BadAddress {
    /// The address.
    pub base: String,
    /// What is wrong with it.
    pub why: String,
}

/// `BASE/ROUTE.../KEY`, each `/`-separated segment of the key escaped.
pub fn key_url(base: &str, route: &[&str], key: &str) -> Result<Url, BadAddress> {
    route_url(base, route.iter().copied().chain(key.split('/')))
}

/// `BASE/SEGMENT...`, each segment escaped.
fn route_url<'a>(base: &str, segments: impl IntoIterator<Item = &'a str>) -> Result<Url, BadAddress> {
    let bad = |why: String| BadAddress {
        base: base.to_owned(),
        why,
    };
    let mut url = Url::parse(base).map_err(|e| bad(e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| bad("it cannot have a path".to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `GET /v1/kv/{key}`: a read.
pub fn get(client: &Client, base: &str, key: &str, query: &ReadQuery) -> Result<RequestBuilder, BadAddress> {
    Ok(client.get(key_url(base, &KV, key)?).query(query))
}

/// `PUT /v1/kv/{key}`: a write of a value.
pub fn put(client: &Client, base: &str, key: &str, body: &PutRequest) -> Result<RequestBuilder, BadAddress> {
    Ok(client.put(key_url(base, &KV, key)?).json(body))
}

/// `PATCH /v1/kv/{key}`: an addition the key's home applies, or the undo of a write by its
/// op id.
pub fn patch(client: &Client, base: &str, key: &str, body: &PatchRequest) -> Result<RequestBuilder, BadAddress> {
    Ok(client.patch(key_url(base, &KV, key)?).json(body))
}

/// `DELETE /v1/kv/{key}`: a deletion.
pub fn delete(client: &Client, base: &str, key: &str, query: &DeleteQuery) -> Result<RequestBuilder, BadAddress> {
    Ok(client.delete(key_url(base, &KV, key)?).query(query))
}

/// `POST /v1/txns`: begins a transaction at the region (its gateway, where the rest of it
/// goes).
pub fn begin(client: &Client, base: &str, body: &BeginRequest) -> Result<RequestBuilder, BadAddress> {
    Ok(client.post(route_url(base, TXNS)?).json(body))
}

/// `GET /v1/txns/{id}/kv/{key}`: a read in transaction `id`.
pub fn txn_get(client: &Client, base: &str, id: &str, key: &str) -> Result<RequestBuilder, BadAddress> {
    Ok(client.get(key_url(base, &[TXNS[0], TXNS[1], id, "kv"], key)?))
}

/// `PUT /v1/txns/{id}/kv/{key}`: a write in transaction `id`, applied at its commit.
pub fn txn_put(
    client: &Client,
    base: &str,
    id: &str,
    key: &str,
    body: &TxnPutRequest,
) -> Result<RequestBuilder, BadAddress> {
    Ok(client
        .put(key_url(base, &[TXNS[0], TXNS[1], id, "kv"], key)?)
        .json(body))
}

/// `DELETE /v1/txns/{id}/kv/{key}`: a deletion in transaction `id`, applied at its commit.
pub fn txn_delete(client: &Client, base: &str, id: &str, key: &str) -> Result<RequestBuilder, BadAddress> {
    Ok(client.delete(key_url(base, &[TXNS[0], TXNS[1], id, "kv"], key)?))
}

/// `POST /v1/txns/{id}/commit`.
pub fn commit(client: &Client, base: &str, id: &str) -> Result<RequestBuilder, BadAddress> {
    Ok(client.post(route_url(base, TXNS.into_iter().chain([id, "commit"]))?))
}

/// `POST /v1/txns/{id}/abort`.
pub fn abort(client: &Client, base: &str, id: &str) -> Result<RequestBuilder, BadAddress> {
    Ok(client.post(route_url(base, TXNS.into_iter().chain([id, "abort"]))?))
}

/// `POST /v1/txn`: reads, conditions and writes committed in one request (with `op_id`,
/// at most once; with `undoes`, a compensation).
pub fn one_shot(client: &Client, base: &str, body: &OneShotRequest) -> Result<RequestBuilder, BadAddress> {
    Ok(client.post(route_url(base, ["v1", "txn"])?).json(body))
}

/// `POST /v1/snapshot`: several keys read at one timestamp.
pub fn snapshot(client: &Client, base: &str, body: &SnapshotRequest) -> Result<RequestBuilder, BadAddress> {
    Ok(client.post(route_url(base, ["v1", "snapshot"])?).json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_segments_are_escaped_under_the_base_s_path() {
        let url = key_url("http://h:1/prefix/", &KV, "eu/a b?").unwrap();
        assert_eq!(url.as_str(), "http://h:1/prefix/v1/kv/eu/a%20b%3F");
        assert!(key_url("not a url", &KV, "k").is_err());
        assert!(key_url("mailto:x@y", &KV, "k").is_err());
    }

    #[test]
    fn requests_carry_the_regions_own_fields() {
        let client = Client::new();
        let read = ReadQuery {
            max_staleness_ms: Some(50),
            ..ReadQuery::new(ReadConsistency::BoundedStaleness)
        };
        let request = get(&client, "http://h", "k", &read).unwrap().build().unwrap();
        assert_eq!(
            request.url().query(),
            Some("consistency=bounded_staleness&max_staleness_ms=50")
        );
        let deletion = DeleteQuery {
            consistency: WriteConsistency::Async,
            if_version: None,
            op_id: Some("o".into()),
        };
        let request = delete(&client, "http://h", "k", &deletion).unwrap().build().unwrap();
        assert_eq!(request.url().query(), Some("consistency=async&op_id=o"));
        let add = PatchRequest {
            add: Some(Add {
                path: "/n".into(),
                delta: 2.into(),
                min: Some(0.0),
                max: None,
            }),
            undo: None,
            consistency: WriteConsistency::Strong,
            if_version: None,
            op_id: Some("o".into()),
        };
        let request = patch(&client, "http://h", "k", &add).unwrap().build().unwrap();
        assert_eq!(
            body_of(&request),
            serde_json::json!({"add": {"path": "/n", "delta": 2, "min": 0.0}, "consistency": "strong", "op_id": "o"})
        );
        let undo = PatchRequest {
            add: None,
            undo: Some(Undo {
                op_id: "a".into(),
                add: None,
            }),
            ..add
        };
        let request = patch(&client, "http://h", "k", &undo).unwrap().build().unwrap();
        assert_eq!(
            body_of(&request),
            serde_json::json!({"undo": {"op_id": "a"}, "consistency": "strong", "op_id": "o"})
        );
        let write = PutRequest {
            value: serde_json::json!({"balance": 1}),
            consistency: WriteConsistency::Async,
            if_version: None,
            op_id: Some("o".into()),
        };
        let request = put(&client, "http://h", "k", &write).unwrap().build().unwrap();
        assert_eq!(
            body_of(&request),
            serde_json::json!({"value": {"balance": 1}, "consistency": "async", "if_version": null, "op_id": "o"})
        );
    }

    #[test]
    fn transaction_requests_carry_the_regions_own_fields() {
        let client = Client::new();
        let begun = begin(&client, "http://h/", &BeginRequest::default())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(begun.url().as_str(), "http://h/v1/txns");
        assert_eq!(body_of(&begun), serde_json::json!({"isolation": "serializable"}));
        let read = txn_get(&client, "http://h", "t 1", "eu/a b").unwrap().build().unwrap();
        assert_eq!(read.url().as_str(), "http://h/v1/txns/t%201/kv/eu/a%20b");
        let body = TxnPutRequest {
            value: serde_json::json!(3),
        };
        let write = txn_put(&client, "http://h", "t", "k", &body).unwrap().build().unwrap();
        assert_eq!(
            (write.method().as_str(), body_of(&write)),
            ("PUT", serde_json::json!({"value": 3}))
        );
        let deletion = txn_delete(&client, "http://h", "t", "k").unwrap().build().unwrap();
        assert_eq!(deletion.method().as_str(), "DELETE");
        let committed = commit(&client, "http://h", "t/1").unwrap().build().unwrap();
        assert_eq!(committed.url().as_str(), "http://h/v1/txns/t%2F1/commit");
        let aborted = abort(&client, "http://h", "t").unwrap().build().unwrap();
        assert_eq!(aborted.url().as_str(), "http://h/v1/txns/t/abort");
        let req = OneShotRequest {
            reads: vec!["a".into()],
            conditions: vec![Condition {
                key: "a".into(),
                version: "0.0".into(),
            }],
            writes: vec![OneShotWrite {
                key: "b".into(),
                value: None,
                add: Some(Add {
                    path: "".into(),
                    delta: (-2).into(),
                    min: None,
                    max: None,
                }),
            }],
            op_id: Some("o".into()),
            undoes: None,
        };
        let request = one_shot(&client, "http://h", &req).unwrap().build().unwrap();
        assert_eq!(request.url().as_str(), "http://h/v1/txn");
        assert_eq!(
            body_of(&request),
            serde_json::json!({"reads": ["a"], "conditions": [{"key": "a", "version": "0.0"}],
                "writes": [{"key": "b", "value": null, "add": {"path": "", "delta": -2}}], "op_id": "o"})
        );
        let req = SnapshotRequest {
            keys: vec!["a".into()],
            as_of: None,
            max_staleness_ms: Some(100),
        };
        let request = snapshot(&client, "http://h", &req).unwrap().build().unwrap();
        assert_eq!(request.url().as_str(), "http://h/v1/snapshot");
        assert_eq!(
            body_of(&request),
            serde_json::json!({"keys": ["a"], "as_of": null, "max_staleness_ms": 100})
        );
    }

    fn body_of(request: &reqwest::Request) -> serde_json::Value {
        serde_json::from_slice(request.body().unwrap().as_bytes().unwrap()).unwrap()
    }
}
