//! `geosaga-netem` through its HTTP API, with real TCP connections to an echo server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Netem, api};

/// An echo server; returns its address.
async fn echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The API on a free port; returns its base URL.
async fn api() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, api::router(Netem::default())).await });
    url
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends `msg` and waits for its echo; `None` if the connection closed or nothing came
/// back within `wait`.
async fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.write_all(msg).await.ok()?;
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(wait, s.read_exact(&mut got)).await {
        Ok(Ok(_)) => Some(got),
        _ => None,
    }
}

async fn proxy(base: &str, upstream: &str) -> String {
    let (status, p) = call(
        reqwest::Method::POST,
        format!("{base}/proxies"),
        Some(json!({"name": "link", "listen": "127.0.0.1:0", "upstream": upstream})),
    )
    .await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["enabled"], true);
    p["listen"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forwards_delays_and_cuts_like_toxiproxy() {
    let (base, upstream) = (api().await, echo().await);
    let listen = proxy(&base, &upstream).await;
    let mut conn = TcpStream::connect(&listen).await.unwrap();
    assert_eq!(
        round_trip(&mut conn, b"hello", Duration::from_secs(5)).await.as_deref(),
        Some(&b"hello"[..])
    );

    // 150 ms each way: a round trip through the live connection takes at least 300 ms.
    for stream in ["upstream", "downstream"] {
        let (status, t) = call(
            reqwest::Method::POST,
            format!("{base}/proxies/link/toxics"),
            Some(json!({"type": "latency", "stream": stream, "attributes": {"latency": 150}})),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        assert_eq!(t["name"], format!("latency_{stream}"));
        assert_eq!(t["attributes"], json!({"latency": 150, "jitter": 0}));
    }
    let started = Instant::now();
    assert!(round_trip(&mut conn, b"slow", Duration::from_secs(5)).await.is_some());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let (_, all) = call(reqwest::Method::GET, format!("{base}/proxies"), None).await;
    assert_eq!(all["link"]["toxics"].as_array().unwrap().len(), 2, "{all}");
    let (status, _) = call(
        reqwest::Method::DELETE,
        format!("{base}/proxies/link/toxics/latency_upstream"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, t) = call(
        reqwest::Method::POST,
        format!("{base}/proxies/link/toxics/latency_downstream"),
        Some(json!({"attributes": {"latency": 0}})),
    )
    .await;
    assert_eq!((status, &t["attributes"]["latency"]), (200, &json!(0)), "{t}");

    // Disabled: the live connection is closed and new ones are refused.
    let (status, p) = call(
        reqwest::Method::POST,
        format!("{base}/proxies/link"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!((status, &p["enabled"]), (200, &json!(false)), "{p}");
    assert_eq!(round_trip(&mut conn, b"cut", Duration::from_secs(5)).await, None);
    assert!(
        TcpStream::connect(&listen).await.is_err(),
        "a cut proxy refuses connections"
    );

    // Enabled again, on the same address.
    let (status, p) = call(
        reqwest::Method::POST,
        format!("{base}/proxies/link"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!((status, p["listen"].as_str()), (200, Some(listen.as_str())), "{p}");
    let mut conn = TcpStream::connect(&listen).await.unwrap();
    assert!(round_trip(&mut conn, b"back", Duration::from_secs(5)).await.is_some());

    // Reset: every toxic gone.
    let (status, _) = call(reqwest::Method::POST, format!("{base}/reset"), None).await;
    assert_eq!(status, 204);
    let (_, toxics) = call(reqwest::Method::GET, format!("{base}/proxies/link/toxics"), None).await;
    assert_eq!(toxics, json!([]));
}

#[tokio::test]
async fn a_timeout_toxic_stops_data_then_closes_the_connection() {
    let (base, upstream) = (api().await, echo().await);
    let listen = proxy(&base, &upstream).await;
    let mut conn = TcpStream::connect(&listen).await.unwrap();
    let (status, t) = call(
        reqwest::Method::POST,
        format!("{base}/proxies/link/toxics"),
        Some(json!({"name": "blackhole", "type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}})),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(round_trip(&mut conn, b"lost", Duration::from_millis(300)).await, None);
    // Removed: data flows again on the same connection (what was sent meanwhile is lost).
    call(
        reqwest::Method::DELETE,
        format!("{base}/proxies/link/toxics/blackhole"),
        None,
    )
    .await;
    assert_eq!(
        round_trip(&mut conn, b"again", Duration::from_secs(5)).await.as_deref(),
        Some(&b"again"[..])
    );
    // With a timeout, the connection is closed.
    call(
        reqwest::Method::POST,
        format!("{base}/proxies/link/toxics"),
        Some(json!({"type": "timeout", "attributes": {"timeout": 100}})),
    )
    .await;
    conn.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the timeout: {read:?}"
    );
}

#[tokio::test]
async fn bad_requests_get_toxiproxy_errors() {
    let (base, upstream) = (api().await, echo().await);
    proxy(&base, &upstream).await;
    let cases = [
        (
            reqwest::Method::POST,
            "/proxies",
            json!({"name": "link", "listen": "127.0.0.1:0", "upstream": upstream}),
            409,
            "already exists",
        ),
        (reqwest::Method::POST, "/proxies", json!({"name": "x"}), 400, "upstream"),
        (
            reqwest::Method::GET,
            "/proxies/nope",
            Value::Null,
            404,
            "nope not found",
        ),
        (
            reqwest::Method::POST,
            "/proxies/link/toxics",
            json!({"type": "slicer"}),
            400,
            "latency, timeout",
        ),
        (
            reqwest::Method::POST,
            "/proxies/link/toxics",
            json!({"type": "latency", "attributes": {"latency": -5}}),
            400,
            "attributes.latency",
        ),
        (
            reqwest::Method::POST,
            "/proxies/link/toxics",
            json!({"type": "latency", "stream": "sideways"}),
            400,
            "stream",
        ),
        (
            reqwest::Method::POST,
            "/proxies/link",
            json!({"upstream": "elsewhere:1"}),
            400,
            "only `enabled`",
        ),
        (
            reqwest::Method::DELETE,
            "/proxies/link/toxics/none",
            Value::Null,
            404,
            "none not found",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let body = (!body.is_null()).then_some(body);
        let (got, answer) = call(method.clone(), format!("{base}{path}"), body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["status"], status, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{path}: {answer}");
    }
}
