//! Integration tests: the real router over real HTTP, on SQLite and (when configured) PostgreSQL.

mod helpers;
mod smoke;
