//! A TCP proxy for one directed link between two processes on loopback: bytes in both
//! directions are delayed by a settable latency (one way), a cut drops every connection,
//! open or new, and a hold keeps one direction's bytes back until it is lifted. Tests put
//! one on every link between regions, so that latency and partitions come from the network
//! path, never from sleeps in the code under test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy for one directed link: bytes in both directions are delayed by `latency`
/// (one way), `cut` drops every connection, open or new, and a hold keeps the bytes of one
/// direction (requests, or answers) until it is lifted, even after their sender gave up.
pub struct Proxy {
    /// Where the proxy listens.
    pub port: u16,
    latency_ms: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
    cut_now: Arc<AtomicBool>,
    hold_requests: watch::Sender<bool>,
    hold_answers: watch::Sender<bool>,
}

/// Copies `from` to `to`, each chunk delivered `latency` after it was read and not while
/// `hold` is on, until either side closes or the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Arc<AtomicU64>,
    mut cut: watch::Receiver<bool>,
    mut hold: watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if hold.wait_for(|held| !*held).await.is_err() {
                break;
            }
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + Duration::from_millis(latency.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let (cut, _) = watch::channel(false);
        let (hold_requests, _) = watch::channel(false);
        let (hold_answers, _) = watch::channel(false);
        let cut_now = Arc::new(AtomicBool::new(false));
        let (lat, cut_rx, cut_flag) = (latency_ms.clone(), cut.subscribe(), cut_now.clone());
        let (up_rx, down_rx) = (hold_requests.subscribe(), hold_answers.subscribe());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if cut_flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (lat, cut_rx, up_rx, down_rx) = (lat.clone(), cut_rx.clone(), up_rx.clone(), down_rx.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::join!(
                        pump(cr, uw, lat.clone(), cut_rx.clone(), up_rx),
                        pump(ur, cw, lat, cut_rx, down_rx)
                    );
                });
            }
        });
        Proxy {
            port,
            latency_ms,
            cut,
            cut_now,
            hold_requests,
            hold_answers,
        }
    }

    /// Holds (`true`) or releases (`false`) the requests: bytes from the client.
    pub fn hold_requests(&self, hold: bool) {
        self.hold_requests.send_replace(hold);
    }

    /// Holds (`true`) or releases (`false`) the answers: bytes to the client.
    pub fn hold_answers(&self, hold: bool) {
        self.hold_answers.send_replace(hold);
    }

    /// Sets the one-way latency.
    pub fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Cuts (`true`) or reconnects (`false`) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut_now.store(cut, Ordering::SeqCst);
        self.cut.send_replace(cut);
    }
}
