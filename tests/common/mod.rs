//! Code shared by the integration-test crates (`tests/api`, `tests/admin`, `tests/outbox.rs`,
//! `tests/crash.rs`, `tests/replicas.rs`).

// Each test crate compiles this module on its own and uses a different subset of it (e.g. the
// replica test never asks for SQLite), so items unused by one crate are not dead code.
#![allow(dead_code)]

pub mod fresh_db;
