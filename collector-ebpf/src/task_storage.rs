//! BPF task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`, kernel 5.11+): a value hung off the
//! `task_struct` itself, found without hashing or locking, freed by the kernel when the task
//! exits. aya-ebpf 0.2.1 has no type for it, so this is the BTF map definition its
//! `btf_map_def!` would generate (`.maps` section; every field is a pointer whose pointee type
//! carries the map attribute in BTF).
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::bpf_task_storage_get,
};

/// Task storage of one `T` per task. The kernel requires `max_entries` 0 and `BPF_F_NO_PREALLOC`.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are null placeholders only read (as BTF) by the loader; the values live in
// the kernel and are reached through helpers.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The value of `task`, created zeroed on first use; `None` when the kernel could not
    /// allocate it (or the map is busy on this CPU, as when a program interrupts another).
    ///
    /// # Safety
    ///
    /// `task` must be a pointer the verifier trusts (a BTF tracepoint argument).
    #[inline(always)]
    pub unsafe fn get_or_create(&self, task: u64) -> Option<*mut T> {
        let value = unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast(),
                task as *mut _,
                ptr::null_mut(),
                BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
            )
        };
        (!value.is_null()).then_some(value.cast())
    }
}
