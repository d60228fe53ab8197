//! Access to the kernel layout global the daemon fills in at load time.
use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use collector_common::KernelLayout;

/// Written by the daemon (`EbpfLoader::override_global`) before the programs are verified;
/// read-only afterwards, so the verifier sees its fields as constants.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_LAYOUT: KernelLayout = KernelLayout::UNKNOWN;

/// One field of `KERNEL_LAYOUT`. Volatile so the compiler does not fold in the compiled-in
/// placeholder; one load per field, as a volatile read of the whole struct loads every field.
macro_rules! layout {
    ($field:ident) => {
        $crate::layout::read_field(&raw const $crate::layout::KERNEL_LAYOUT.$field)
    };
}
pub(crate) use layout;

/// The load behind `layout!`.
#[inline(always)]
pub fn read_field(field: *const u32) -> u32 {
    // SAFETY: `field` points into `KERNEL_LAYOUT`, a global of the object.
    unsafe { core::ptr::read_volatile(field) }
}

/// Reads a `T` at `offset` bytes into a kernel object (a `task_struct`, say).
#[inline(always)]
pub fn read_kernel_field<T>(object: u64, offset: u32) -> Option<T> {
    let address = object.checked_add(offset as u64)? as *const T;
    // SAFETY: the helper checks the address and fails (Err) on a bad one.
    unsafe { bpf_probe_read_kernel(address) }.ok()
}

/// Reads a `T` at `offset` bytes into a kernel object the verifier trusts (a BTF tracepoint
/// argument) with a plain load: the verifier checks it against the kernel's BTF and the JIT makes
/// it fault-safe, so it costs one instruction instead of a `bpf_probe_read_kernel` call.
///
/// # Safety
///
/// `object` must be a trusted BTF pointer and `offset` a constant the verifier knows (a
/// `KERNEL_LAYOUT` field: read-only, so the verifier sees its value).
#[inline(always)]
pub unsafe fn read_trusted_field<T>(object: u64, offset: u32) -> T {
    let address = (object as *const u8).wrapping_add(offset as usize) as *const T;
    // SAFETY: the caller's contract: a trusted BTF pointer at a KERNEL_LAYOUT offset.
    unsafe { address.read() }
}

/// Reads a classic tracepoint field at the offset found in its tracefs `format` file.
#[inline(always)]
pub fn read_tracepoint_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    // SAFETY: reads through bpf_probe_read at an offset from the event's tracefs format; a bad one
    // fails (Err).
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// How a program reads fields of kernel objects, so one body serves both program flavours: BTF
/// programs load directly through the typed pointers the verifier tracks ([`Trusted`]), raw
/// ones copy with `bpf_probe_read_kernel` ([`Probed`]).
pub trait KernelMemory {
    /// The `T` at `offset` bytes into `object`; `offset` must be a `KERNEL_LAYOUT` field.
    fn read<T: Copy>(object: u64, offset: u32) -> Option<T>;
}

/// Direct loads through BTF pointers: a tracepoint argument and pointers loaded from it. The
/// JIT turns a fault (a NULL pointer on the way) into a zero, so nothing is checked here.
pub struct Trusted;

impl KernelMemory for Trusted {
    #[inline(always)]
    fn read<T: Copy>(object: u64, offset: u32) -> Option<T> {
        // SAFETY: BTF programs only pass their arguments and pointers read from them, at
        // offsets from KERNEL_LAYOUT (see `read_trusted_field`).
        Some(unsafe { read_trusted_field(object, offset) })
    }
}

/// `bpf_probe_read_kernel`, for raw tracepoints whose arguments are plain integers.
pub struct Probed;

impl KernelMemory for Probed {
    #[inline(always)]
    fn read<T: Copy>(object: u64, offset: u32) -> Option<T> {
        read_kernel_field(object, offset)
    }
}
