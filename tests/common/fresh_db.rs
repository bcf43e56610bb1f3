//! A fresh database per test: a SQLite file in a temporary directory, or a PostgreSQL database of
//! its own created on the server named by `MOONBORN_TEST_POSTGRES_URL`. Dropping a [`FreshDb`]
//! removes it (the directory, or the database `WITH (FORCE)`).

use moonborn_scim::store::Tenant;
use moonborn_scim::{Store, Tier};
use sqlx::Connection as _;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, db: String },
}

/// A database of a test's own; gone when this is dropped.
pub struct FreshDb {
    /// The database URL to open (`sqlite://…` or `postgres://…/moonborn_<prefix>_<uuid>`).
    pub url: String,
    pub backend: Backend,
    guard: Option<Guard>,
    /// Stores opened with [`FreshDb::open_store`]: closed before the PostgreSQL database is dropped.
    stores: Vec<Store>,
}

/// The PostgreSQL server URL: `MOONBORN_TEST_POSTGRES_URL` at run time, else its value when the
/// tests were built. Panics when neither is set: a PostgreSQL case that cannot run fails. The
/// cases that need PostgreSQL are ignored when the tests were built without the variable (the
/// `pg_tests` cfg set by `build.rs`), so this only fires when a built-with binary runs without it.
pub fn postgres_url() -> String {
    std::env::var("MOONBORN_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| option_env!("MOONBORN_TEST_POSTGRES_URL").filter(|u| !u.is_empty()).map(str::to_string))
        .expect("MOONBORN_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)")
}

/// `url` with its database name replaced by `db` (any query string kept).
fn with_db(url: &str, db: &str) -> String {
    let (head, tail) = match url.split_once('?') {
        Some((h, t)) => (h, format!("?{t}")),
        None => (url, String::new()),
    };
    let cut = head.rfind('/').filter(|&i| i > "postgres://".len()).unwrap_or(head.len());
    format!("{}/{db}{tail}", &head[..cut])
}

impl FreshDb {
    /// Creates a fresh database: the SQLite file `<prefix>.db` in a temporary directory, or the
    /// PostgreSQL database `moonborn_<prefix>_<uuid>`. Panics when PostgreSQL is asked for but
    /// `MOONBORN_TEST_POSTGRES_URL` is not set or the server cannot be reached.
    pub async fn new(backend: Backend, prefix: &str) -> FreshDb {
        let (url, guard) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join(format!("{prefix}.db")).display());
                (url, Guard::Sqlite(dir))
            }
            Backend::Postgres => {
                let admin_url = postgres_url();
                let db = format!("moonborn_{prefix}_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("connect to PostgreSQL (MOONBORN_TEST_POSTGRES_URL): {e}"));
                sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut c).await.expect("create database");
                c.close().await.ok();
                (with_db(&admin_url, &db), Guard::Postgres { admin_url, db })
            }
        };
        FreshDb { url, backend, guard: Some(guard), stores: Vec::new() }
    }

    /// A fresh database, a store open on it and the Enterprise tenant `acme`.
    pub async fn with_tenant(backend: Backend, prefix: &str) -> (FreshDb, Store, Tenant) {
        let mut db = FreshDb::new(backend, prefix).await;
        let store = db.open_store().await;
        let tenant = store.create_tenant("acme", Tier::Enterprise).await.expect("tenant");
        (db, store, tenant)
    }

    /// Opens a store on this database; it is closed before the database is dropped.
    pub async fn open_store(&mut self) -> Store {
        let store = Store::open(&self.url).await.expect("open store");
        self.stores.push(store.clone());
        store
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        if let Some(Guard::Postgres { admin_url, db }) = self.guard.take() {
            let stores = std::mem::take(&mut self.stores);
            // Drop the database from a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    for store in stores {
                        store.close().await;
                    }
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut c).await;
                    }
                });
            })
            .join();
        }
    }
}
