//! The limits from outside, over real TCP connections: the connection cap, the header
//! timeout (slow headers) and the idle timeout (a stalled body).

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http_server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves a small app within `limits` on a free port; the server stops when the test ends.
async fn start(limits: Limits) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http_server::serve(listener, app, limits, None, std::future::pending()));
    addr
}

/// Sends a GET on `stream` and reads the answer's first bytes.
async fn get_on(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads until the server closes the connection (or fails it); `true` if it did within
/// `patience` (a bound for a broken server, not a measurement).
async fn closed_by_server(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = vec![0u8; 512];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(patience, read_all).await.is_ok()
}

#[tokio::test]
async fn past_the_cap_a_connection_waits_until_another_closes() {
    let addr = start(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_on(&mut second).await.starts_with("HTTP/1.1 200"));

    // The third connects (the kernel's backlog takes it) but is not served...
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = tokio::spawn(async move { get_on(&mut third).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!answer.is_finished(), "a third connection was served past a cap of two");
    // ... until one of the two closes.
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
}

#[tokio::test]
async fn headers_that_do_not_arrive_in_time_close_the_connection() {
    let addr = start(Limits {
        header_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // Slow headers: the request line, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(closed_by_server(&mut slow, Duration::from_secs(30)).await);

    // A keep-alive connection idle past the header timeout is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut idle, Duration::from_secs(30)).await);
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_by_the_idle_timeout() {
    let addr = start(Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab")
        .await
        .unwrap();
    assert!(closed_by_server(&mut stalled, Duration::from_secs(30)).await);

    // A client that keeps sending is served however long it takes in all.
    let mut steady = TcpStream::connect(addr).await.unwrap();
    steady
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n")
        .await
        .unwrap();
    for byte in [b"a", b"b", b"c", b"d"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        steady.write_all(byte).await.unwrap();
    }
    let mut buf = vec![0u8; 512];
    let n = steady.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("abcd"),
        "{answer}"
    );
}
