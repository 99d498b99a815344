//! JSON over HTTP for the black-box tests: one request's status and body, and a poll until
//! an answer holds. A request that gets no answer at all reads as status 0 with the error
//! as its body, so that a poll can wait through a restart and an assertion can print why.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The status and JSON body (`null` when the body is not JSON) of a sent request.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    match request.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(e) => (0, json!(e.to_string())),
    }
}

/// A request whose answer's JSON body a test wants.
pub trait JsonAnswer {
    /// Sends the request and returns its answer's JSON body; fails the test when no answer
    /// comes or its body is not JSON.
    fn json_answer(self) -> impl Future<Output = Value> + Send;
}

impl JsonAnswer for reqwest::RequestBuilder {
    async fn json_answer(self) -> Value {
        let answer = self.send().await.expect("the request is answered");
        answer.json().await.expect("the answer is JSON")
    }
}

/// `GET {url}{path}`.
pub async fn get(url: &str, path: &str) -> (u16, Value) {
    answer(reqwest::Client::new().get(format!("{url}{path}"))).await
}

/// `PUT {url}/v1/kv/{key}` with `body`: a region write.
pub async fn put(url: &str, key: &str, body: Value) -> (u16, Value) {
    answer(reqwest::Client::new().put(format!("{url}/v1/kv/{key}")).json(&body)).await
}

/// `POST {url}{path}` with `body`.
pub async fn post(url: &str, path: &str, body: Value) -> (u16, Value) {
    answer(reqwest::Client::new().post(format!("{url}{path}")).json(&body)).await
}

/// Polls `GET {url}{path}` until `done` holds for its answer, which it returns; after
/// `within`, fails with the last answer and `context()` (the processes' logs, say).
pub async fn eventually(
    url: &str,
    path: &str,
    within: Duration,
    context: impl Fn() -> String,
    done: impl Fn(u16, &Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = get(url, path).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            start.elapsed() < within,
            "{url}{path} still answers {status} {body}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
