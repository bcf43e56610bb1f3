//! SQLite machinery: the group-commit writer of the hot SCIM writes (`batch`), the WAL fsync
//! and checkpointer (`walsync`), and point reads on the calling thread (`reader`). Used on
//! SQLite file databases only; the SQL they run is the store's portable SQL.

pub(crate) mod batch;
pub(crate) mod reader;
pub(crate) mod walsync;
