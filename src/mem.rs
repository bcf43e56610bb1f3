//! Process memory housekeeping.

/// Hands the heap memory freed by a large piece of work (a whole-tenant run reads and plans a
/// whole tenant) back to the operating system. SQLite allocates from glibc's malloc, which keeps
/// freed memory in its arenas for reuse, so without this an idle server would go on holding the
/// peak of its last full run. The Rust heap of the server binary is mimalloc's, which returns
/// the pages it frees at once (`configure_allocator`) but holds partly used ones;
/// `mi_collect` frees what it can reach from this thread.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only walks glibc's own heap and takes no pointers from us; it is
    // thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` takes no pointers and only frees mimalloc's own unused memory; it is
    // safe to call from any thread, whichever allocator is the global one.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// `mi_option_purge_delay` in `mi_option_t` (include/mimalloc.h of mimalloc 3, which the
/// `mimalloc` crate builds by default, and of mimalloc 2 alike); libmimalloc-sys names only some
/// of the options. The one after it is named: a renumbering fails the build.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes);

/// Settings of the server's allocator (mimalloc); call it first thing in `main`, before any
/// other thread starts: freed memory goes back to the system at once instead of after a delay
/// (mimalloc purges only when it is called, so a delayed purge left an idle server holding what
/// its last burst freed). mimalloc is built with `no_thp` (Cargo.toml): it otherwise asks for
/// transparent huge pages on its 1 GiB arena, and every 2 MiB page it touched counts in full.
pub fn configure_allocator() {
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` only stores an option value (a plain store): called first thing in
    // `main`, before the process has any other thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}
