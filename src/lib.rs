//! # geosaga
//!
//! Sagas served in a few lines: [`Server::builder`] runs a coordinator with the same REST
//! API, web console (`/ui`), Prometheus metrics, traces and flags as `geosaga serve`,
//! around sagas written in Rust ([`RustSaga`]) or JSON. `docs/rust-sagas.md` walks through
//! it; `examples/bank` is a whole service.
//!
//! ## Layout
//! - [`server`]: [`Server`] and its [`ServerBuilder`]: store, coordinator, API, telemetry.
//! - [`check`]: `geosaga check`, a saga run against its real participants through a
//!   recording proxy, case by case.
//! - [`serve`]: the options of `geosaga serve` (flags, `GEOSAGA_*` variables, a TOML
//!   file), turned into a builder.
//! - [`dev`]: `geosaga dev`, a coordinator with examples, a demo participant and three
//!   regions on loopback (or the regions of a cluster of yours).
//! - `region_access`: how `geosaga serve` and `geosaga dev` reach TLS regions
//!   (`--region-ca`, ...).
//! - [`output`]: printing of the one-shot commands, which end quietly (exit 141) when
//!   their reader closes stdout (`geosaga saga list | head`).
//! - `demo`, `dev_regions`: the demo participant and the three regions of `geosaga dev`.
//!
//! The `geosaga` binary (`src/main.rs`) adds the client commands and `region`.

pub mod check;
mod demo;
pub mod dev;
mod dev_regions;
pub mod output;
mod region_access;
pub mod serve;
pub mod server;

pub use coordinator::runner::region::RegionAccess;
pub use coordinator::runner::rust::Action;
pub use coordinator::{Coordinator, HostPolicy, RustSaga, StartSaga, StepContext};
pub use http_server::Limits as ConnectionLimits;
pub use sagas::StepError;
pub use server::{Server, ServerBuilder};
