//! Types shared by the kernel programs (`collector-ebpf`) and the daemon (`collector`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into BPF maps and the
//! daemon reads the same bytes back, so both must agree on layout to the byte.
#![no_std]

pub mod block;
pub mod cgroup;
pub mod histogram;
pub mod layout;
pub mod net;
pub mod sched;

pub use block::{
    BlockHistogramSlot, BlockHistograms, BlockKey, CpuBlockCounters, InflightKey, InflightRequest,
};
pub use cgroup::{CgroupCounters, CpuCharges};
pub use histogram::Log2Histogram;
pub use layout::KernelLayout;
pub use net::CpuNetCounters;
pub use sched::{CpuIrqTime, CpuSchedCounters, NR_SOFTIRQS, SOFTIRQ_NAMES, WaitingTasks};
