//! Code shared by the integration-test crates (`tests/api`, `tests/admin`, `tests/outbox.rs`,
//! `tests/crash.rs`, `tests/replicas.rs`).

// Each test crate compiles this module on its own and uses a different subset of it (e.g. the
// replica test never asks for SQLite), so items unused by one crate are not dead code.
#![allow(dead_code)]

pub mod fresh_db;
pub mod served;

/// Declares a test module that runs `case` on SQLite, and on PostgreSQL when
/// `MOONBORN_TEST_POSTGRES_URL` is set, each on a fresh database: the calling file's `Db`
/// fixture, made by `Db::open(Backend) -> Option<Db>`.
#[macro_export]
macro_rules! db_test {
    ($(#[$m:meta])* async fn $name:ident($db:ident) $body:block) => {
        $(#[$m])*
        mod $name {
            use super::*;
            async fn case(mut $db: Db) {
                let _ = &mut $db;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                case(Db::open(Backend::Sqlite).await.expect("sqlite")).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = Db::open(Backend::Postgres).await {
                    case(db).await
                }
            }
        }
    };
}
