//! Giving freed heap memory back to the kernel. glibc keeps what the program frees for reuse, so
//! a burst (the start-up BTF parses, a large textfile) would stay resident until exit.

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`; musl's allocator returns
/// it by itself, and has no such call).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
