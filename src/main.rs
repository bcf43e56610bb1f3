//! The `moonborn-scim` binary.

/// mimalloc instead of glibc's malloc for the Rust heap: every request allocates and frees
/// dozens of small buffers (headers, JSON values, rows) across the runtime's threads, which
/// glibc's malloc serves at a high CPU cost.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    moonborn_scim::mem::configure_allocator();
    moonborn_scim::cli::main()
}
