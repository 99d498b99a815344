//! Helpers shared by the black-box tests: a participant service, coordinator processes,
//! and the crash-test workload.

#![allow(dead_code)] // each test file uses its own subset

pub mod http;
pub mod participant;
pub mod process;
pub mod regions;
pub mod regions_faults;
pub mod workload;
