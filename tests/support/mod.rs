//! Helpers shared by the black-box tests: participant services, coordinator processes,
//! the crash-test workload, and a browser for the console.

#![allow(dead_code)] // each test file uses its own subset

pub mod browser;
pub mod controlled;
pub mod flawed;
pub mod http;
pub mod participant;
pub mod process;
pub mod regions;
pub mod regions_faults;
pub mod workload;
