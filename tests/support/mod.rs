//! Helpers of the root package's black-box tests: the three-region cluster, its fault
//! workload, the crash-test workload, and a browser for the console (what other crates'
//! tests need too is in `testkit`).

#![allow(dead_code)] // each test file uses its own subset

pub mod browser;
pub mod controlled;
pub mod flawed;
pub mod regions;
pub mod regions_faults;
pub mod workload;
