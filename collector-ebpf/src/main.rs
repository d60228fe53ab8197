//! Kernel programs of the collector. Each subsystem module counts events into BPF maps; nothing
//! per-event leaves the kernel. Every hook exists in three flavours (BTF tracepoint, raw
//! tracepoint, classic tracepoint) sharing one body; the daemon attaches the best one the running
//! kernel accepts.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod atomic;
mod irq;
mod layout;
mod sched;

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
