//! Process memory housekeeping.

/// Hands the heap memory freed by a large piece of work (a whole-tenant run reads and plans a
/// whole tenant) back to the operating system. glibc keeps freed memory in its arenas for reuse,
/// so without this an idle server would go on holding the peak of its last full run.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only walks glibc's own heap and takes no pointers from us; it is
    // thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}
