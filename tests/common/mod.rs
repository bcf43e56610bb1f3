//! Code shared by the integration tests: the `it` binary (`tests/it/`) and the binaries that
//! spawn processes or need a process of their own (`tests/*.rs`).
//!
//! - [`fresh_db`]: a fresh SQLite or PostgreSQL database per test;
//! - [`app`]: [`app::TestApp`], the real router served in-process, and its builder;
//! - [`served`]: the real binary started as a child process;
//! - [`browser`]: a headless Chromium over WebDriver, for the console tests;
//! - [`backend_test!`](crate::backend_test): one test, run on SQLite and on PostgreSQL.

// Each test binary compiles this module on its own and uses a different subset of it (e.g. the
// replica test never asks for SQLite), so items unused by one binary are not dead code.
#![allow(dead_code)]

pub mod app;
pub mod browser;
pub mod fresh_db;
pub mod served;

/// Declares a test module `$name` with two tests, `sqlite` and `postgres`, each running `$body`
/// with `$arg` bound to `$fixture(backend).await` on a fresh database of that backend:
///
/// ```ignore
/// backend_test!(
///     async fn creates_a_user(app = TestApp::scim_api) {
///         app.create_user("ada@example.com").await;
///     }
/// );
/// ```
///
/// The `postgres` case is `#[ignore]`d when the tests were built without
/// `MOONBORN_TEST_POSTGRES_URL` (no `pg_tests` cfg from `build.rs`), so it is reported as
/// ignored, never as passed; built with it, the case runs and fails when PostgreSQL cannot be
/// reached. Attributes (doc comments, `#[ignore]`) apply to both cases.
#[macro_export]
macro_rules! backend_test {
    ($(#[$m:meta])* async fn $name:ident($arg:ident = $fixture:path) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case(backend: $crate::common::fresh_db::Backend) {
                #[allow(unused_mut)]
                let mut $arg = $fixture(backend).await;
                $body
            }
            $(#[$m])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                case($crate::common::fresh_db::Backend::Sqlite).await
            }
            $(#[$m])*
            #[cfg_attr(not(pg_tests), ignore = "MOONBORN_TEST_POSTGRES_URL is not set")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                case($crate::common::fresh_db::Backend::Postgres).await
            }
        }
    };
}
