//! PostgreSQL machinery: the group commit of the hot SCIM pushes (`batch`).

pub(crate) mod batch;
