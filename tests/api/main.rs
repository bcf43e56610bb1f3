//! Integration tests: the real router over real HTTP, on SQLite and (when configured) PostgreSQL.

#[path = "../common/mod.rs"]
mod common;
mod helpers;
mod support;

mod concurrency;
mod discovery;
mod errors;
mod etags;
mod filters;
mod groups;
mod idp;
mod journal;
mod lists;
mod patch;
mod smoke;
mod tenancy;
mod users;
mod validation;
