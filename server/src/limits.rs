//! What one server lets its clients hold, and the defaults.

use std::time::Duration;

/// Bounds on a server's connections (see the crate's documentation for what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (or a TLS handshake), from the connection's
    /// opening or the previous answer.
    pub header_timeout: Duration,
    /// Longest time a connection may move no byte either way. Longer than any request may
    /// legitimately wait for its answer (the coordinator's `wait_ms` goes to 60 s).
    pub idle_timeout: Duration,
}

impl Limits {
    /// 1,024 connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// 30 seconds: above the idle time of common HTTP clients' connection pools, so that a
    /// pooled connection is seldom closed under a client about to reuse it.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
    /// 120 seconds: twice the longest `wait_ms`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: Limits::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Limits::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Limits::DEFAULT_IDLE_TIMEOUT,
        }
    }
}
