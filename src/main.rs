//! The `moonborn-scim` binary.

fn main() -> std::process::ExitCode {
    moonborn_scim::cli::main()
}
