//! The integration tests that run in-process, in one binary: the real router over real HTTP
//! (`api`, `admin`), the store, the controller and the properties, on SQLite and on PostgreSQL
//! (built with `MOONBORN_TEST_POSTGRES_URL`; otherwise the PostgreSQL cases are ignored).
//!
//! The tests that spawn the binary, or need a process of their own, are the other files of
//! `tests/`.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod api;

mod journal;
mod migrations;
mod outbox;
mod plan_props;
mod report;
mod safety_props;
