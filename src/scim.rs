//! The SCIM protocol: resources and schemas, filters, PATCH, list shaping and errors. No I/O.

pub mod distinct;
pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod validate;

pub use error::{ScimError, ScimType};

/// Where the SCIM API is served: the base path IdPs are given, under the service's URL.
pub const SCIM_BASE: &str = "/v1/auth/scim/v2";
