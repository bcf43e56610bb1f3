// `sqlx::migrate!` embeds `migrations/` at compile time; without this, adding a migration file
// leaves an incremental build with the old set (what `sqlx migrate build-script` generates).
//
// The tests' PostgreSQL cases are compiled as ignored unless `MOONBORN_TEST_POSTGRES_URL` is set
// when they are built: the `pg_tests` cfg (see `backend_test!` in tests/common/mod.rs), so that a
// run without PostgreSQL reports them as ignored rather than passed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=MOONBORN_TEST_POSTGRES_URL");
    println!("cargo:rustc-check-cfg=cfg(pg_tests)");
    if std::env::var_os("MOONBORN_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=pg_tests");
    }
}
