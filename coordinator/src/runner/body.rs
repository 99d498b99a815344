//! Reading a participant's or a region's answer within a cap, while it streams: a body past
//! the cap is never held whole, whatever its `Content-Length` says or does not say.

/// An answer's body, read up to a cap.
#[derive(Debug, PartialEq, Eq)]
pub enum Capped {
    /// The whole body, within the cap.
    Whole(Vec<u8>),
    /// The body went past the cap; its first `cap` bytes (the rest was not read).
    Over(Vec<u8>),
}

/// Reads `response`'s body until it ends or passes `cap` bytes, whichever comes first.
pub async fn read(mut response: reqwest::Response, cap: usize) -> Result<Capped, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        // Announced too large: the first chunk is kept for a failure's snippet.
        let first = response.chunk().await?.unwrap_or_default();
        return Ok(Capped::Over(first[..first.len().min(cap)].to_vec()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            body.extend_from_slice(&chunk[..cap - body.len()]);
            return Ok(Capped::Over(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;

    /// A server with `/small` (3 bytes), `/announced` (a 1 MiB body with its length) and
    /// `/streamed` (chunks of 64 KiB without end, no length).
    async fn server() -> String {
        let app = Router::new()
            .route("/small", get(|| async { "abc" }))
            .route("/announced", get(|| async { vec![b'x'; 1 << 20] }))
            .route(
                "/streamed",
                get(|| async {
                    let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b'y'; 64 << 10]));
                    Body::from_stream(chunks)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_whole_and_past_it_is_cut_while_streaming() {
        let base = server().await;
        let client = reqwest::Client::new();
        let fetch = |path: &str| client.get(format!("{base}{path}")).send();
        assert_eq!(
            read(fetch("/small").await.unwrap(), 3).await.unwrap(),
            Capped::Whole(b"abc".to_vec())
        );
        assert_eq!(
            read(fetch("/small").await.unwrap(), 2).await.unwrap(),
            Capped::Over(b"ab".to_vec())
        );
        match read(fetch("/announced").await.unwrap(), 1000).await.unwrap() {
            Capped::Over(kept) => assert!(kept.len() <= 1000 && kept.iter().all(|b| *b == b'x')),
            whole => panic!("{whole:?}"),
        }
        // An endless body: reading it whole would never end.
        match read(fetch("/streamed").await.unwrap(), 100_000).await.unwrap() {
            Capped::Over(kept) => assert_eq!(kept.len(), 100_000),
            whole => panic!("{whole:?}"),
        }
    }
}
