// `sqlx::migrate!` embeds `migrations/` at compile time; without this, adding a migration file
// leaves an incremental build with the old set (what `sqlx migrate build-script` generates).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
