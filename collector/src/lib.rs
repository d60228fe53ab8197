//! eBPF-based kernel metrics collector: node_exporter's metrics from /proc and /sys, plus
//! scheduler, CPU, block I/O and network metrics counted in the kernel by eBPF programs, served
//! in the Prometheus text format.
//!
//! Dependencies point down: `daemon` wires `cli`, `registry`, `scrape` and `server`; the
//! registry lists the collectors of `node/` and `ebpf/`; those stand on `collector` (what a
//! collector is), `read`, `ebpf::runtime` and `cgroups`; `metrics` and `exposition` are below all.
pub mod cgroups;
pub mod cli;
pub mod collector;
pub mod ebpf;
pub mod exporter;
pub mod exposition;
pub mod flags;
pub mod goparse;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod node;
mod pool;
pub mod read;
pub mod registry;
pub mod scrape;
pub mod server;
pub mod textparse;

mod daemon;

pub use daemon::main;
