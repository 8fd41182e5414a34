//! hwbp-tools: the `hwbp` CLI (perf-like `stat` and `record` over
//! libhwbp) and `hwbp-selftest`, as a library so both are tested on the
//! host. See README.md in libhwbp/.

pub mod cli;
#[cfg(all(feature = "sim", not(target_os = "redox")))]
pub mod demo;
pub mod logger;
pub mod platform;
pub mod selftest;
pub mod summary;
