//! Atomic add for counters shared by all CPUs.
//!
//! `core::sync::atomic` offers no read-modify-write operations on the BPF target, so this emits
//! the BPF `lock` add (`BPF_ATOMIC | BPF_ADD`, without fetch: accepted since kernel 4.x).

#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points to a u64 in a map value, aligned and alive while the program
    // runs; the instruction touches those 8 bytes only.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {value}",
            counter = in(reg) counter,
            value = in(reg) value,
        );
    }
}

/// Host builds (`cargo check`, clippy) only; the programs run on the BPF target.
#[cfg(not(target_arch = "bpf"))]
pub fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points to a u64 in a map value, aligned and alive while the program runs.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(counter) }
        .fetch_add(value, core::sync::atomic::Ordering::Relaxed);
}
