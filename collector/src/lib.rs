//! eBPF-based kernel metrics collector: node_exporter's metrics from /proc and /sys, plus
//! scheduler, CPU, block I/O and network metrics counted in the kernel by eBPF programs, served
//! in the Prometheus text format.
pub mod cgroups;
pub mod cli;
pub mod collectors;
pub mod ebpf;
pub mod exporter;
pub mod exposition;
pub mod flags;
pub mod logging;
pub mod metrics;
mod pool;
pub mod scrape;
pub mod server;
pub mod textparse;

mod daemon;

pub use daemon::main;
