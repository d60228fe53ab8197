//! CPU time in interrupt context: hard IRQ handlers and softirq vectors, per CPU.
//!
//! Entry stores a timestamp in this CPU's slot, exit adds the elapsed time. Hard IRQ handlers do
//! not nest, and a CPU runs one softirq vector at a time, so one entry slot of each suffices.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use collector_common::{CpuIrqTime, NR_SOFTIRQS};

use crate::{
    layout::{layout, read_tracepoint_field},
    with_slot,
};

/// Hard IRQ time and entry timestamps, one copy per CPU (index 0).
#[map]
static IRQ_TIME: PerCpuArray<CpuIrqTime> = PerCpuArray::with_max_entries(1, 0);

/// Softirq nanoseconds per CPU, indexed by vector.
#[map]
static SOFTIRQ_TIME: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_SOFTIRQS as u32, 0);

/// This CPU's `IRQ_TIME` and the current time.
#[inline(always)]
fn with_irq_time(update: impl FnOnce(&mut CpuIrqTime, u64)) {
    with_slot(&IRQ_TIME, |time| {
        // SAFETY: a BPF helper that takes no arguments.
        update(time, unsafe { bpf_ktime_get_ns() })
    });
}

#[inline(always)]
fn hardirq_entry() {
    with_irq_time(|t, now| t.hardirq_entered_ns = now);
}

#[inline(always)]
fn hardirq_exit() {
    with_irq_time(|t, now| {
        if t.hardirq_entered_ns != 0 && now >= t.hardirq_entered_ns {
            t.hardirq_ns += now - t.hardirq_entered_ns;
        }
        t.hardirq_entered_ns = 0;
    });
}

#[inline(always)]
fn softirq_entry() {
    with_irq_time(|t, now| t.softirq_entered_ns = now);
}

#[inline(always)]
fn softirq_exit(vector: u32) {
    with_irq_time(|t, now| {
        if t.softirq_entered_ns != 0
            && now >= t.softirq_entered_ns
            && let Some(total) = SOFTIRQ_TIME.get_ptr_mut(vector)
        {
            // SAFETY: a per-CPU value pointer from a successful lookup, valid while the program
            // runs.
            unsafe { *total += now - t.softirq_entered_ns };
        }
        t.softirq_entered_ns = 0;
    });
}

// irq_handler_entry(int irq, struct irqaction *action)
// irq_handler_exit(int irq, struct irqaction *action, int ret)
// softirq_entry(unsigned int vec_nr), softirq_exit(unsigned int vec_nr)

btf_and_raw!(
    "irq_handler_entry",
    irq_handler_entry_btf,
    irq_handler_entry_raw,
    |_ctx| { hardirq_entry() }
);

#[tracepoint(category = "irq", name = "irq_handler_entry")]
pub fn irq_handler_entry_tp(_ctx: TracePointContext) -> u32 {
    hardirq_entry();
    0
}

btf_and_raw!(
    "irq_handler_exit",
    irq_handler_exit_btf,
    irq_handler_exit_raw,
    |_ctx| { hardirq_exit() }
);

#[tracepoint(category = "irq", name = "irq_handler_exit")]
pub fn irq_handler_exit_tp(_ctx: TracePointContext) -> u32 {
    hardirq_exit();
    0
}

btf_and_raw!(
    "softirq_entry",
    softirq_entry_btf,
    softirq_entry_raw,
    |_ctx| { softirq_entry() }
);

#[tracepoint(category = "irq", name = "softirq_entry")]
pub fn softirq_entry_tp(_ctx: TracePointContext) -> u32 {
    softirq_entry();
    0
}

btf_and_raw!("softirq_exit", softirq_exit_btf, softirq_exit_raw, |ctx| {
    softirq_exit(ctx.arg::<u64>(0) as u32)
});

#[tracepoint(category = "irq", name = "softirq_exit")]
pub fn softirq_exit_tp(ctx: TracePointContext) -> u32 {
    // softirq_exit shares softirq_entry's event class, hence its `vec` field offset.
    if let Some(vector) = read_tracepoint_field::<u32>(&ctx, layout!(tp_softirq_vec)) {
        softirq_exit(vector);
    }
    0
}
