//! moonborn-scim: a SCIM 2.0 (RFC 7643/7644) provisioning service. IdPs push users and groups;
//! the push API records them as the desired state, and the controller turns that into Moonborn
//! users and roles.

pub mod admin;
pub mod app;
pub mod cli;
pub mod console;
pub mod controller;
pub mod domain;
pub mod http;
pub mod mem;
pub mod metrics;
pub mod outbox;
pub mod scim;
pub mod store;

pub use store::{Store, Tier};
