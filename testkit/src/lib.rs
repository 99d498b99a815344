//! # geosaga's test machinery
//!
//! What more than one test crate needs, kept out of the product: no crate of geosaga
//! depends on this one except as a dev-dependency, and it is never published.
//!
//! ## Layout
//! - [`pg`]: a fresh PostgreSQL database per test, on a throwaway server started from the
//!   installed binaries (or on `GEOSAGA_TEST_POSTGRES_URL`).
//! - [`process`]: `geosaga` child processes (a coordinator, a region) to SIGKILL and restart.
//! - [`participant`]: an HTTP participant service that applies each effect once per
//!   idempotency key and remembers what it saw.
//! - [`http`]: JSON over HTTP, and polling until an answer holds.
//! - [`proxy`]: a TCP proxy with a settable latency and a cut, for one link.
//! - [`history`]: a linearizability checker for recorded histories of one key.

pub mod history;
pub mod http;
pub mod participant;
pub mod pg;
pub mod process;
pub mod proxy;

/// A free TCP port on 127.0.0.1 (bound, then released: another process may take it before
/// the caller binds it, so bind port 0 where the caller can).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("finding a free port");
    listener.local_addr().expect("the listener's address").port()
}
