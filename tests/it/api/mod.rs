//! The SCIM API: the real router over real HTTP ([`TestApp::scim_api`](crate::common::app::TestApp::scim_api):
//! no admin API, no controller), on SQLite and PostgreSQL.

mod support;

mod bulk;
mod concurrency;
mod cursors;
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
