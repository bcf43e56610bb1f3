//! The SCIM protocol: resources and schemas, filters, PATCH, list shaping and errors. No I/O.

pub mod distinct;
pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod validate;

pub use error::{ScimError, ScimType};
