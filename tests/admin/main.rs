//! Integration tests of the admin API (`/v1/admin`): the real router over real HTTP with the
//! controller running, on SQLite and (when `MOONBORN_TEST_POSTGRES_URL` is set) PostgreSQL.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod auth;
mod bindings;
mod extras;
mod history;
mod lifecycle;
mod plans;
mod safety;
mod tenants;
mod users;
