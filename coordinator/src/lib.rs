//! # The geosaga coordinator
//!
//! Runs sagas defined with the [`sagas`] core: executes their steps, records every
//! transition in a store, and makes sure no saga is lost when processes die.
//!
//! ## Layout
//! - [`executor`]: [`Coordinator`], the handle to a running coordinator; one task per
//!   running saga, the lease loop that renews ownership and adopts orphaned sagas.
//! - [`runner`]: how one attempt runs: HTTP steps ([`runner::http`]), Rust handlers
//!   ([`runner::rust`]), region steps ([`runner::region`], through the regions' typed
//!   client), time limits and injected faults ([`runner::faults`]).
//! - [`api`]: the REST API (axum) with its problem details and OpenAPI document.
//! - [`store`]: the store port ([`Store`]) and its implementations: in memory, SQLite
//!   (the embedded default) and PostgreSQL, with group commit.
//! - [`retention`]: deletes finished sagas past an age in the background, archiving them
//!   first ([`archive`]: JSON lines that rebuild the API's views).
//! - [`rust_saga`]: [`RustSaga`], the builder for sagas written in Rust.
//! - [`conformance`]: checks every saga should pass (idempotent actions, clean unwinds).
//! - [`console`]: the web console at `/ui`: server-rendered pages of sagas, definitions
//!   and regions, mounted beside the REST API and behind the same tokens.
//! - [`redact`]: credentials in URLs kept out of stored errors and API answers.
//! - [`trace`]: one trace per saga, stored with it so that it survives restarts;
//!   [`metrics`]: the Prometheus metrics behind `GET /metrics`; [`clock`]: Unix
//!   milliseconds.
//!
//! Library code only emits `tracing` spans and events, and OpenTelemetry spans through the
//! API crate (a no-op until a binary installs a provider); subscribers and exporters are
//! set up by the binary.

// Status enums (`SagaStatus`, `StepStatus`) are matched here: every match names each of
// its variants, so that a new one forces a review of every decision (ARCHITECTURE.md).
#![deny(clippy::wildcard_enum_match_arm)]

pub mod api;
pub mod archive;
pub mod clock;
pub mod conformance;
pub mod console;
mod error;
pub mod executor;
pub mod metrics;
pub mod redact;
pub mod retention;
pub mod runner;
pub mod rust_saga;
pub mod store;
pub mod trace;

pub use error::{Error, Result};
pub use executor::{Coordinator, Options, SagaView, StartSaga};
pub use metrics::Metrics;
pub use runner::Runners;
pub use runner::faults::{Fault, Faults};
pub use runner::http::{HostPolicy, HttpRunner};
pub use runner::rust::{Action, HandlerRegistry, StepContext};
pub use rust_saga::RustSaga;
pub use store::Store;
pub use trace::{SagaTrace, TraceHeaders};
