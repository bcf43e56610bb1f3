//! The admin API (`/v1/admin`): the real router over real HTTP with the controller running
//! ([`TestApp::admin_api`](crate::common::app::TestApp::admin_api)), on SQLite and PostgreSQL.

mod auth;
mod bindings;
mod extras;
mod history;
mod lifecycle;
mod operators;
mod plans;
mod safety;
mod tenants;
mod users;
