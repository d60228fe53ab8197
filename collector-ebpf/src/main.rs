//! Kernel programs of the collector. Each subsystem module counts events into BPF maps; nothing
//! per-event leaves the kernel. Every hook exists in three flavours (BTF tracepoint, raw
//! tracepoint, classic tracepoint) sharing one body; the daemon attaches the best one the running
//! kernel accepts.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use aya_ebpf::maps::PerCpuArray;

/// One body as two programs, a BTF and a raw tracepoint (both receive the raw tracepoint
/// arguments), for the subsystem modules below. A body that reads kernel objects names a type
/// after the context (`|ctx, Memory|`) and reads through it: direct loads in the BTF program,
/// `bpf_probe_read_kernel` in the raw one.
macro_rules! btf_and_raw {
    ($tracepoint:literal, $btf:ident, $raw:ident, |$ctx:ident, $memory:ident| $body:expr) => {
        #[::aya_ebpf::macros::btf_tracepoint(function = $tracepoint)]
        pub fn $btf($ctx: ::aya_ebpf::programs::BtfTracePointContext) -> i32 {
            type $memory = $crate::layout::Trusted;
            $body;
            0
        }

        #[::aya_ebpf::macros::raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw($ctx: ::aya_ebpf::programs::RawTracePointContext) -> i32 {
            type $memory = $crate::layout::Probed;
            $body;
            0
        }
    };
    ($tracepoint:literal, $btf:ident, $raw:ident, |$ctx:ident| $body:expr) => {
        btf_and_raw!($tracepoint, $btf, $raw, |$ctx, _Memory| $body);
    };
}

mod atomic;
mod block;
mod cgroup;
mod empty;
mod irq;
mod layout;
mod net;
mod sched;

/// Updates this CPU's copy of slot 0 of `map`, if the lookup succeeds. Per-CPU and run with
/// preemption off, so plain read-modify-writes are safe.
#[inline(always)]
fn with_slot<T>(map: &PerCpuArray<T>, f: impl FnOnce(&mut T)) {
    if let Some(value) = map.get_ptr_mut(0) {
        // SAFETY: a value pointer from a successful lookup of this CPU's slot: valid while the
        // program runs, and no other reference exists (per-CPU, preemption off).
        f(unsafe { &mut *value });
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this, so it is never executed.
    loop {}
}

/// GPL: `bpf_probe_read_kernel` and the tracing program types require a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
