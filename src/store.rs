//! Storage (sqlx): SQLite embedded by default, PostgreSQL for scale. One schema, migrations per
//! backend, portable SQL (`$n` placeholders work on both). See docs/architecture.md for where the
//! store sits and docs/databases.md for the storage mechanics.
//!
//! | file | holds |
//! |---|---|
//! | `store.rs` | `Store`, errors, opening, write transactions, `retrying` / `read_again` |
//! | `users.rs`, `groups.rs` | the SCIM desired state: users, groups, members |
//! | `desired.rs` | the controller's reads of the desired state; the intent journal |
//! | `actual.rs` | Moonborn's actual users and roles: reads, and `apply_change` / `apply_batch` |
//! | `control.rs` | controller state: bindings, safety valve and hold, progress, leases, runs |
//! | `outbox.rs` | the outbox queue |
//! | `tenants.rs`, `admin.rs` | tenants and SCIM tokens; the admin console's users and sessions |
//! | `query.rs`, `marks.rs`, `exec.rs` | list queries, page marks, backend-neutral statements |
//! | `sqlite/` | group-commit writer (`batch`), WAL fsync (`walsync`), thread-local reads (`reader`) |
//! | `postgres/` | group commit of the hot SCIM pushes (`batch`) |
//!
//! Invariants: every desired-state write appends to the intent journal and bumps the tenant's
//! generation in its own transaction, the tenant row locked last (`record_intent`); actual users
//! change only through `apply_*`, a compare-and-set fenced by the tenant's lease, with their
//! outbox and audit rows in the same transaction; a write reports success only once durable.

/// Builds a row type from an `AnyRow`: each named field from the column of the same name, then
/// the fields computed from other columns (`columns!(r, T { a, b } + { c: expr })`).
macro_rules! columns {
    ($r:expr, $t:ident { $($f:ident),* $(,)? } $(+ { $($g:ident : $e:expr),* $(,)? })?) => {
        $t { $($f: $r.try_get(stringify!($f))?,)* $($($g: $e,)*)? }
    };
}

mod actual;
mod admin;
mod control;
mod desired;
mod exec;
mod groups;
mod keys;
mod marks;
mod operators;
mod outbox;
mod postgres;
mod query;
mod sqlite;
mod tenants;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use sqlite::{batch, reader, walsync};

pub use actual::{Applied, Fence};
pub use admin::{AdminUser, ApiKey, AuditEntry, Extras, HandError, NewUser, Session, UserEdit, Workspace};
pub use control::{Burst, BurstUpdate, ControllerState, HoldRecord, Progress, RunRow, TenantStatus};
pub use desired::JournalEntry;
use desired::{record_intent, record_intent_sqlite, OwnedIntent};
pub use groups::{Member, MemberChange, MemberRef};
pub use operators::{ConsoleSession, OperatorInfo, SESSION_TTL};
pub use outbox::OutboxEvent;
pub use query::{ListQuery, SortKey};
pub use tenants::{Tenant, Tier, TokenInfo, AUTH_CACHE_TTL};

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Storage errors; the HTTP layer turns the expected ones into SCIM errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0} is already taken")]
    Conflict(&'static str),
    #[error("the resource changed since version {0}")]
    VersionMismatch(i64),
    #[error("{0}")]
    Invalid(String),
    /// The write was rolled back whole, for a reason that passes (another write in its batch
    /// failed, a concurrent delete kept moving its groups): nothing of it is stored, and
    /// running it again may succeed. `retrying` does, a few times.
    #[error("the write was not applied: {0}")]
    NotApplied(String),
    /// The machine ran out of something the database needs (`Shortage`): the write failed
    /// fast, and may succeed once the operator frees it. `maybe_stored`: it failed after its
    /// commit (the fsync that would confirm it could not run), so whether it is stored is not
    /// known; else nothing of it is stored. Not run again by `retrying`: a full disk stays full
    /// for longer than a retry waits.
    #[error("out of {what}")]
    Exhausted { what: Shortage, maybe_stored: bool },
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// A resource whose exhaustion fails a write without making its durability unknown (unlike an
/// fsync that failed after the data was written, which stops the process: `walsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// The database's file system is full (`ENOSPC`, `EDQUOT`, `SQLITE_FULL`).
    Disk,
    /// The process or the system is out of file descriptors (`EMFILE`, `ENFILE`).
    OpenFiles,
    /// Out of memory (`ENOMEM`, `SQLITE_NOMEM`).
    Memory,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shortage::Disk => "disk space",
            Shortage::OpenFiles => "open files",
            Shortage::Memory => "memory",
        })
    }
}

impl Shortage {
    /// The shortage an OS error reports, if it is one.
    pub fn of_io(e: &std::io::Error) -> Option<Shortage> {
        match e.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => Some(Shortage::Disk),
            libc::EMFILE | libc::ENFILE => Some(Shortage::OpenFiles),
            libc::ENOMEM => Some(Shortage::Memory),
            _ => None,
        }
    }

    /// The shortage a SQLite result code (primary or extended) reports, if it is one.
    pub fn of_sqlite_code(code: i32) -> Option<Shortage> {
        match code & 0xff {
            13 => Some(Shortage::Disk),  // SQLITE_FULL
            7 => Some(Shortage::Memory), // SQLITE_NOMEM
            _ => None,
        }
    }

    /// The shortage a rusqlite error reports, if it is one.
    pub fn of_rusqlite(e: &rusqlite::Error) -> Option<Shortage> {
        match e {
            rusqlite::Error::SqliteFailure(f, _) => Shortage::of_sqlite_code(f.extended_code),
            _ => None,
        }
    }
}

impl StoreError {
    /// A stored document that is not JSON: a corrupt row (a database error, answered as 500).
    pub fn corrupt_doc(e: serde_json::Error) -> StoreError {
        StoreError::Db(sqlx::Error::Decode(Box::new(e)))
    }

    fn is_unique(e: &sqlx::Error) -> bool {
        e.as_database_error().is_some_and(|d| d.is_unique_violation())
    }

    /// Whether the database connection was lost under the statement (PostgreSQL terminated the
    /// backend, the network dropped it). Whether a write's `COMMIT` took effect is then not known.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, StoreError::Db(e) if StoreError::lost(e))
    }

    fn lost(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Io(_) => true,
            // admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now, and the
            // connection exceptions (class 08).
            e => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| matches!(c.as_ref(), "57P01" | "57P02" | "57P03") || c.starts_with("08")),
        }
    }

    /// The shortage behind this error, if one is: `Exhausted`, or a database error that reports
    /// one (SQLite's `SQLITE_FULL` through sqlx, an OS error).
    pub fn shortage(&self) -> Option<Shortage> {
        match self {
            StoreError::Exhausted { what, .. } => Some(*what),
            StoreError::Db(sqlx::Error::Io(e)) => Shortage::of_io(e),
            StoreError::Db(e) => {
                let d = e.as_database_error()?;
                let code = d.code()?;
                match code.as_ref() {
                    // PostgreSQL's disk_full, out_of_memory.
                    "53100" => Some(Shortage::Disk),
                    "53200" => Some(Shortage::Memory),
                    c if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                        c.parse::<i32>().ok().and_then(Shortage::of_sqlite_code)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether the write failed whole for a reason that passes, so that running it again may
    /// succeed: `NotApplied`, a PostgreSQL deadlock (`40P01`: the server aborted this
    /// transaction to break a cycle of lock waits) or serialization failure (`40001`), or
    /// SQLite's `SQLITE_BUSY` (5) and `SQLITE_BUSY_SNAPSHOT` (517): a transaction that read
    /// first could not start writing because another connection — another process on the same
    /// file, say — held the write lock or wrote since. In WAL mode those come only from a
    /// transaction's first write, so it had written nothing. Either way the transaction is
    /// rolled back; nothing of it is stored.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotApplied(_) => true,
            StoreError::Db(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| matches!(c.as_ref(), "40P01" | "40001" | "5" | "517")),
            _ => false,
        }
    }
}

/// Runs the read `f` once more when it lost its database connection (PostgreSQL terminated the
/// backend, the network dropped it): the pool hands the second try another connection. A read
/// that loses its connection twice is `NotApplied` (503: the client may try again); any other
/// error is returned as it is. Only for reads, and for writes that may safely run twice.
///
/// # Errors
/// `f`'s error.
pub async fn read_again<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match f().await {
        Err(e) if e.is_connection_lost() => {
            tracing::warn!(error = %e, "a read lost its database connection; reading again");
            match f().await {
                Err(StoreError::Db(e)) if StoreError::lost(&e) => {
                    Err(StoreError::NotApplied(format!("the read lost its connection twice: {e}")))
                }
                r => r,
            }
        }
        r => r,
    }
}

/// How many times a desired-state write that failed transiently is run again.
const RETRIES: u32 = 3;
/// A write is run again only while this little time has passed since its first try: a failure
/// that took long to come (a database that does not answer, a lock held for seconds) is not
/// worth waiting for again; the client is answered and may retry.
const RETRY_WITHIN: Duration = Duration::from_secs(5);

/// Runs the write `f` (a whole transaction, or a job of a batch) and runs it again, after a
/// short pause, while it fails transiently (`StoreError::is_transient`), at most `RETRIES`
/// times and within `RETRY_WITHIN` of the first try; the last error is returned as it is. A
/// deadlock's victim is the one transaction the database rolled back, so running it again
/// once the others have gone on is what the deadlock asks for; a job of a batch that another
/// job broke was rolled back with it.
async fn retrying<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let (mut tries, started) = (0, std::time::Instant::now());
    loop {
        match f().await {
            Err(e) if e.is_transient() && tries < RETRIES && started.elapsed() < RETRY_WITHIN => {
                tries += 1;
                tracing::debug!(error = %e, tries, "a write failed transiently; running it again");
                // 5–10 ms, then 10–20, 20–40: long enough for the other side of a deadlock to
                // finish, jittered so two victims do not meet again.
                let base = 5u64 << (tries - 1);
                tokio::time::sleep(Duration::from_millis(base + rand::random::<u64>() % (base + 1))).await;
            }
            r => return r,
        }
    }
}

/// The columns of a stored resource (`scim_users`, `scim_groups`), as `StoredResource` maps them.
pub const RESOURCE_COLS: &str = "seq, id, doc, version, created_at, updated_at";

/// A stored SCIM resource (desired state): its document and bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub seq: i64,
    pub id: String,
    /// The document as normalised by `scim::schema::normalize` (no id, meta, groups, members),
    /// as stored: JSON text, parsed only by the paths that change or filter it
    /// (`doc_value`); reads render it from the text.
    pub doc: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// A user's groups (group id, displayName; by group creation) when they were read with the
    /// row; `None`: not read (renderers read them when they need them).
    pub groups: Option<Vec<(String, String)>>,
}

impl StoredResource {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(columns!(row, StoredResource { seq, id, doc, version, created_at, updated_at } + { groups: None }))
    }

    /// The document, parsed.
    ///
    /// # Errors
    /// The stored text is not JSON (a corrupt row: a database error).
    pub fn doc_value(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.doc).map_err(StoreError::corrupt_doc)
    }

    /// The bookkeeping `render` needs besides the document.
    pub fn meta(&self) -> crate::scim::resource::Meta<'_> {
        crate::scim::resource::Meta {
            id: &self.id,
            version: self.version,
            created: &self.created_at,
            last_modified: &self.updated_at,
        }
    }
}

/// Who asked for a write: recorded in the intent journal.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    pub tenant_id: i64,
    pub request_id: &'a str,
    pub now: &'a str,
}

/// The store: a connection pool plus, on SQLite, the in-process writer lock that keeps writers
/// from contending for the database lock.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    write_lock: Option<Arc<Mutex<()>>>,
    /// Recently authenticated tokens (by hash), so a request does not read the token row each
    /// time; entries live `tenants::AUTH_CACHE_TTL`, and a revoke in this process drops them.
    auth_cache: Arc<std::sync::Mutex<std::collections::HashMap<String, (Tenant, std::time::Instant)>>>,
    /// SQLite's group commit (see `walsync`); `None` on PostgreSQL, which commits durably itself.
    wal_sync: Option<walsync::WalSync>,
    /// Point reads on the calling thread (SQLite file databases; see `reader`).
    reader: Option<Arc<reader::Reader>>,
    /// Group commit of the hot SCIM writes (SQLite file databases; see `batch`).
    batch: Option<batch::BatchWriter>,
    /// Group commit of the hot SCIM pushes (PostgreSQL; see `pgbatch`).
    pg_batch: Option<postgres::batch::PgBatch>,
    /// Where recent list pages ended, and listings' totals, by generation (see `marks`).
    page_marks: Arc<marks::PageMarks>,
    /// Keeps the WAL checkpointer thread running (SQLite file databases).
    _checkpointer: Option<Arc<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

/// Runs a reader query on a blocking thread (range reads take milliseconds: not on a runtime
/// worker).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("read task: {e}"))))?
}

/// A list of keys as one SQLite parameter, for `IN (SELECT value FROM json_each($n))`: one
/// statement text whatever the list's length, prepared once per connection (an `IN ($2, $3, …)`
/// list is a new statement for every length, parsed and planned again).
pub(crate) fn json_list<S: AsRef<str>>(keys: &[S]) -> exec::Val {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    exec::Val::Text(Some(serde_json::Value::from(keys).to_string()))
}

/// A key-list query's text with its `{keys}` filled in for the SQLite readers: one parameter,
/// `$2`, holding the keys as a JSON array (`json_list`).
pub(crate) fn keys_as_json(sql: &str) -> String {
    sql.replace("{keys}", "(SELECT value FROM json_each($2))")
}

/// A key-list query's text with its `{keys}` filled in for sqlx: `n` placeholders from `$2`.
pub(crate) fn keys_listed(sql: &str, n: usize) -> String {
    sql.replace("{keys}", &format!("({})", placeholders(2, n)))
}

/// `$from, $from+1, …`: `n` placeholders.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (0..n).map(|i| format!("${}", from + i)).collect::<Vec<_>>().join(", ")
}

fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// A database URL as it may be printed: a password in it (`user:PASSWORD@host`, or a
/// `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = out[auth_start..].find(['/', '?', '#']).map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..auth_end].rfind('@') {
            let userinfo = &out[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// A PostgreSQL URL that also trusts the CA certificates in `ca_file` (sqlx's `sslrootcert`,
/// i.e. `PgConnectOptions::ssl_root_cert`: added to the public roots, for the pool and the
/// LISTEN connection alike); `sslmode` stays as the URL says. Other URLs are returned as given.
///
/// # Errors
/// The URL names a root certificate of its own already.
pub fn with_root_cert(url: &str, ca_file: &std::path::Path) -> anyhow::Result<String> {
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return Ok(url.to_string());
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    anyhow::ensure!(
        !form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("sslrootcert")),
        "the database URL sets sslrootcert and --ca-file is given too; set one"
    );
    let path: String = form_urlencoded::byte_serialize(ca_file.to_string_lossy().as_bytes()).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}sslrootcert={path}"))
}

/// How long opening a database waits for its server before it says why it cannot connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An error message with the URL's password (if any) taken out, in case a driver quoted it.
fn redact_error(msg: &str, url: &str) -> String {
    let password = url.split_once("://").and_then(|(_, rest)| {
        let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
        auth.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, p)| p.to_string())
    });
    match password.filter(|p| !p.is_empty()) {
        Some(p) => msg.replace(&p, "***"),
        None => msg.to_string(),
    }
}

/// The file of a `sqlite://` URL (`None` in memory or for other databases).
pub use walsync::sqlite_file;

impl Store {
    /// Connects to `url` (`sqlite://FILE` or `postgres://…`), creating a SQLite file if needed,
    /// and runs the migrations. A PostgreSQL server that cannot be reached fails within
    /// `CONNECT_TIMEOUT`, saying why (refused, unknown host, authentication), never with the
    /// password.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        Store::open_with(url, true).await
    }

    /// Like `open`, for commands that must not create a database: a SQLite file that does not
    /// exist, or a PostgreSQL database without this service's tables, is an error that says how
    /// to make one (a typo in a path must not start an empty service or print an empty list).
    ///
    /// # Errors
    /// As `open`, and when there is no database yet.
    pub async fn open_existing(url: &str) -> anyhow::Result<Store> {
        Store::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let hint = "run `moonborn-scim migrate` (or `serve`) once to create it, or pass --database-url";
        if !create && url.starts_with("sqlite:") {
            if let Some(file) = walsync::sqlite_file(url) {
                anyhow::ensure!(file.exists(), "no database at {}; {hint}", file.display());
            }
        }
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL {:?}: use sqlite://FILE or postgres://…", redact_url(url));
        };
        let opts = sqlx::any::AnyConnectOptions::from_str(&match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_string(),
        })
        .map_err(|e| {
            anyhow::anyhow!("invalid database URL {}: {}", redact_url(url), redact_error(&e.to_string(), url))
        })?;
        if backend == Backend::Postgres {
            // One connection first, to fail fast with the server's own reason (the pool below
            // would retry a refused connection until its acquire timeout).
            let first =
                tokio::time::timeout(CONNECT_TIMEOUT, <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts))
                    .await;
            match first {
                Ok(Ok(c)) => {
                    let _ = sqlx::Connection::close(c).await;
                }
                Ok(Err(e)) => anyhow::bail!(
                    "cannot connect to PostgreSQL at {}: {}",
                    redact_url(url),
                    redact_error(&e.to_string(), url)
                ),
                Err(_) => anyhow::bail!(
                    "cannot connect to PostgreSQL at {}: no answer within {} s",
                    redact_url(url),
                    CONNECT_TIMEOUT.as_secs()
                ),
            }
        }
        // sqlx tests every connection it hands out by default (a round trip to PostgreSQL — half
        // the server's CPU under GET load went to `send` — and a thread hand-off on SQLite),
        // which doubles the cost of a point query. A connection is tested here only when it sat
        // idle for a second or more: one broken by a database restart under load fails its
        // query (an error answer, not applied) and is closed; a quiet pool is still tested.
        let pool_opts = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= Duration::from_secs(1) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        // SQLite on a file: group commit (commits flushed by one fsync for many writers). In
        // memory, or if the file is unknown: every commit syncs itself.
        let wal_file = match backend {
            Backend::Sqlite => walsync::sqlite_file(url),
            Backend::Postgres => None,
        };
        let pragmas = if wal_file.is_some() {
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; \
             PRAGMA wal_autocheckpoint=0;"
        } else {
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;"
        };
        let group_commit = wal_file.is_some();
        let pool = match backend {
            Backend::Sqlite => {
                pool_opts
                    .max_connections(8)
                    // A write transaction whose COMMIT or statement ran out of disk is rolled
                    // back by SQLite itself; the ROLLBACK sqlx then sends fails, and sqlx still
                    // counts the connection as inside a transaction. Reused, it ran the next
                    // transaction as a savepoint: one that failed was undone with `ROLLBACK TO`,
                    // which leaves SQLite's transaction open, and the idle connection kept the
                    // database's write lock — every later write waited out its busy timeout,
                    // until a restart. Such a connection is closed instead (closing rolls back).
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            if !sqlx::Connection::is_in_transaction(conn) {
                                return Ok(true);
                            }
                            // A transaction dropped without its commit: its ROLLBACK is queued
                            // on the connection ahead of this round trip.
                            sqlx::Connection::ping(conn).await?;
                            let stuck = sqlx::Connection::is_in_transaction(conn);
                            if stuck {
                                tracing::warn!("closing a SQLite connection left inside a failed transaction");
                            }
                            Ok(!stuck)
                        })
                    })
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(pragmas).await?;
                            if group_commit {
                                conn.execute(walsync::JOURNAL_SIZE_LIMIT).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
            Backend::Postgres => pool_opts.max_connections(16).connect_with(opts).await?,
        };
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        if create {
            migrator.run(&pool).await?;
        } else {
            // A command other than `serve`/`migrate` neither creates nor upgrades a database: an
            // upgrade under a running older server (or a backup taken "before" one) must be a
            // deliberate `migrate`.
            let tables: i64 = sqlx::query_scalar(match backend {
                Backend::Sqlite => {
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
                }
                Backend::Postgres => {
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND \
                     table_name = '_sqlx_migrations'"
                }
            })
            .fetch_one(&pool)
            .await?;
            anyhow::ensure!(tables > 0, "no moonborn-scim database at {}; {hint}", redact_url(url));
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await?;
            let wanted = migrator.iter().map(|m| m.version).max().unwrap_or(0);
            let applied = applied.unwrap_or(0);
            anyhow::ensure!(
                applied >= wanted,
                "the database {} is at schema version {applied}; this binary needs {wanted}: run `moonborn-scim \
                 migrate` first (serve does it too)",
                redact_url(url)
            );
        }
        let write_lock = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        let wal_sync = wal_file.clone().map(walsync::WalSync::start);
        let checkpointer = match (&wal_file, &write_lock) {
            (Some(f), Some(l)) => Some(walsync::start_checkpointer(f.clone(), l.clone())?),
            _ => None,
        };
        let batch = match (&wal_file, &write_lock, &wal_sync) {
            (Some(f), Some(l), Some(w)) => Some(batch::BatchWriter::start(f, l.clone(), w.clone())?),
            _ => None,
        };
        let pg_batch = (backend == Backend::Postgres).then(|| postgres::batch::PgBatch::start(pool.clone()));
        Ok(Store {
            pool,
            backend,
            write_lock,
            auth_cache: Arc::default(),
            reader: wal_file.map(|f| Arc::new(reader::Reader::new(f))),
            batch,
            pg_batch,
            wal_sync,
            page_marks: Arc::default(),
            _checkpointer: checkpointer,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for checks and tooling.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Gives back the memory a whole-tenant run used: SQLite page caches of the idle
    /// connections, then the heap glibc kept (see `mem`).
    pub async fn release_memory(&self) {
        if let Some(r) = &self.reader {
            r.shrink();
        }
        if let Some(b) = &self.batch {
            let _ = b.write(|c| c.execute_batch("PRAGMA shrink_memory").map_err(|e| batch::sqlite_err(e, None))).await;
        }
        if self.backend == Backend::Sqlite {
            // Each idle pooled connection in turn (held until all are visited).
            let mut held = Vec::new();
            while let Some(mut c) = self.pool.try_acquire() {
                let _ = c.execute("PRAGMA shrink_memory").await;
                held.push(c);
            }
        }
        // Trimming a large heap takes the allocator's locks for a while: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(crate::mem::release_free_memory).await;
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs statements in one write transaction (on SQLite, as one job of the batch writer,
    /// committed with the writes around it); the rows each changed.
    async fn write_stmts(&self, stmts: Vec<exec::Stmt>) -> Result<Vec<u64>, StoreError> {
        if let Some(b) = &self.batch {
            return b
                .write(move |c| stmts.iter().map(|s| exec::exec_sqlite(c, s).map_err(StoreError::from)).collect())
                .await;
        }
        let mut w = self.begin_write().await?;
        let mut out = Vec::with_capacity(stmts.len());
        for s in &stmts {
            out.push(exec::exec_sqlx(&mut w.tx, s).await?);
        }
        w.commit().await?;
        Ok(out)
    }

    /// Every row of a read, decoded by `T`'s one decoder: on the SQLite reader when there is one
    /// (on a blocking thread), else on the pool. One SQL text for both.
    async fn read_all<T: exec::FromCols + Send + 'static>(
        &self,
        sql: impl Into<std::borrow::Cow<'static, str>>,
        args: Vec<exec::Val>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = sql.into();
        if let Some(r) = self.reader.clone() {
            return blocking(move || r.query_all(&sql, &args, |row| T::from_cols(row))).await;
        }
        let rows = exec::bind_sqlx(sqlx::query(&sql), &args).fetch_all(&self.pool).await?;
        rows.iter().map(T::from_cols).collect()
    }

    /// Begins a write transaction (on SQLite, after taking the in-process writer lock).
    async fn begin_write(&self) -> Result<WriteTx<'_>, StoreError> {
        // The connection first (a deferred BEGIN takes no database lock), then the writer lock:
        // a writer waiting for a pool connection must not hold the lock meanwhile (the batch
        // writer and every other writer would wait behind it).
        // A connection lost at `BEGIN` wrote nothing: the write may run again (`retrying`).
        let tx = self.pool.begin().await.map_err(|e| match StoreError::Db(e) {
            StoreError::Db(e) if StoreError::lost(&e) => {
                StoreError::NotApplied(format!("BEGIN lost its connection: {e}"))
            }
            e => e,
        })?;
        let guard = match &self.write_lock {
            Some(l) => Some(l.clone().lock_owned().await),
            None => None,
        };
        Ok(WriteTx { tx: OpenTx(Some(tx)), guard, backend: self.backend, wal_sync: self.wal_sync.as_ref() })
    }
}

/// The PostgreSQL channel a push is announced on, so every replica's controller wakes up.
pub const PUSH_CHANNEL: &str = "moonborn_scim_push";

/// A write transaction with the writer lock it holds (if any).
///
/// The lock is let go only once the transaction has ended. A `WriteTx` dropped uncommitted (an
/// error, a version mismatch, a cancelled request) is rolled back first: sqlx would only queue
/// that rollback, and a writer let in before it ran would find SQLite's write lock still held
/// by this connection — its first write after a read fails at once with "database is locked"
/// (SQLite does not wait for a lock a reading transaction needs to start writing).
struct WriteTx<'a> {
    tx: OpenTx,
    guard: Option<OwnedMutexGuard<()>>,
    backend: Backend,
    wal_sync: Option<&'a walsync::WalSync>,
}

/// The transaction of a `WriteTx` until it commits or is rolled back; statements run on it as
/// on the transaction itself (`&mut *w.tx`).
struct OpenTx(Option<Transaction<'static, Any>>);

impl std::ops::Deref for OpenTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        self.0.as_ref().expect("a WriteTx's transaction is open until it is consumed")
    }
}

impl std::ops::DerefMut for OpenTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        self.0.as_mut().expect("a WriteTx's transaction is open until it is consumed")
    }
}

impl WriteTx<'_> {
    /// Commits, lets the next writer in, and returns once the commit is on disk.
    async fn commit(mut self) -> Result<(), StoreError> {
        let tx = self.tx.0.take().expect("a WriteTx commits once");
        let committed = tx.commit().await;
        // A failed COMMIT leaves only a rollback queued on the connection; a writer let in
        // before it runs and refused by SQLite is run again (`is_transient`).
        drop(self.guard.take());
        committed?;
        if let Some(s) = self.wal_sync {
            // Committed but not confirmed durable: a shortage says so (503), else a 500.
            s.sync().await.map_err(|e| match Shortage::of_io(&e) {
                Some(what) => StoreError::Exhausted { what, maybe_stored: true },
                None => StoreError::Db(sqlx::Error::Io(e)),
            })?;
        }
        Ok(())
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        let (Some(tx), Some(guard)) = (self.tx.0.take(), self.guard.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = tx.rollback().await {
                        tracing::warn!(error = %e, "rolling back an unfinished write failed");
                    }
                    drop(guard);
                });
            }
            Err(_) => drop((tx, guard)),
        }
    }
}

/// Why a write guarded by a version wrote nothing, given the resource as read after it:
/// `VersionMismatch` with the version now stored, or the read's error (`NotFound`).
fn unwritten(current: Result<StoredResource, StoreError>) -> StoreError {
    match current {
        Ok(cur) => StoreError::VersionMismatch(cur.version),
        Err(e) => e,
    }
}

/// Bumps the version (and `updated_at`) of every group `member_id` (a user or a group) is a
/// member of: a delete of the member is about to change those groups' member lists, so an
/// ETag read before it must no longer match. On PostgreSQL the caller holds these groups'
/// locks already (`delete_resource`).
async fn touch_groups_of_member(
    conn: &mut sqlx::AnyConnection,
    intent: &Intent<'_>,
    member_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE scim_groups SET version = version + 1, updated_at = $3 WHERE tenant_id = $1 AND id IN \
         (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2)",
    )
    .bind(intent.tenant_id)
    .bind(member_id)
    .bind(intent.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the user (`scim_users`) or group (`scim_groups`) `id` of a tenant if its version is
/// `expected` (any version when `None`), inside `w`; the rows deleted (0: missing or changed).
/// On PostgreSQL the groups whose member rows the delete goes on to change are locked first
/// (`delete_with_groups_locked`).
///
/// # Errors
/// Database errors.
async fn delete_resource(
    w: &mut WriteTx<'_>,
    table: &'static str,
    tenant_id: i64,
    id: &str,
    expected: Option<i64>,
) -> Result<u64, StoreError> {
    let delete =
        exec::Stmt::new(format!("DELETE FROM {table} WHERE tenant_id = $1 AND id = $2 AND ($3 < 0 OR version = $3)"))
            .arg(tenant_id)
            .arg(id)
            .arg(expected.unwrap_or(-1));
    if w.backend == Backend::Postgres {
        return delete_with_groups_locked(&mut w.tx, tenant_id, id, table == "scim_groups", &delete).await;
    }
    Ok(exec::exec_sqlx(&mut w.tx, &delete).await?)
}

/// PostgreSQL: runs `delete` — a statement deleting the user or group `id`, whose rows changed
/// it returns — after locking, in id order, the groups whose member rows the delete goes on to
/// change: those `id` is a member of, and with `and_self` the group `id` itself. That is the
/// order the batch writer takes them in (`postgres::batch::lock_groups`: groups first, then a share lock
/// on each member it checks), so the two cannot deadlock. While the delete waits for a batch
/// that share-locked `id` to check it, that batch may commit a membership of `id` in a group
/// not locked here; so the groups are read again once `id` is deleted (nobody can add it
/// anywhere after that), and if one is new, the locks and the delete are rolled back to a
/// savepoint and taken again, at most five times (then the delete fails, not applied, and the
/// client retries).
///
/// # Errors
/// Database errors.
async fn delete_with_groups_locked(
    conn: &mut sqlx::AnyConnection,
    tenant_id: i64,
    id: &str,
    and_self: bool,
    delete: &exec::Stmt,
) -> Result<u64, StoreError> {
    use sqlx::{Executor as _, Row as _};
    // `id IN (… UNION ALL …)` rather than `id IN (…) OR id = $2`: under an OR, PostgreSQL scans
    // every group of every tenant instead of using the indexes.
    const LOCK: &str = "SELECT id FROM scim_groups WHERE tenant_id = $1 AND id IN \
        (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2 \
         UNION ALL SELECT $2 WHERE $3 = 1) \
        ORDER BY id FOR NO KEY UPDATE";
    const GROUPS_OF: &str = "SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2";
    const TRIES: usize = 5;
    // One savepoint: a rollback to it keeps it, for the next try.
    conn.execute("SAVEPOINT delete_locking_groups").await?;
    for _ in 0..TRIES {
        let locked: std::collections::HashSet<String> = sqlx::query(LOCK)
            .bind(tenant_id)
            .bind(id)
            .bind(i64::from(and_self))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        let n = exec::exec_sqlx(conn, delete).await?;
        let settled = n == 0 || {
            let now: Vec<String> = sqlx::query(GROUPS_OF)
                .bind(tenant_id)
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("group_id"))
                .collect::<Result<_, _>>()?;
            now.iter().all(|g| locked.contains(g))
        };
        if settled {
            conn.execute("RELEASE SAVEPOINT delete_locking_groups").await?;
            return Ok(n);
        }
        conn.execute("ROLLBACK TO SAVEPOINT delete_locking_groups").await?;
    }
    // Going on would lock the new groups out of order (a deadlock with a batch); the caller's
    // transaction is rolled back, and the store runs the delete again (`retrying`).
    Err(StoreError::NotApplied(format!("the groups of {id} kept changing while it was being deleted ({TRIES} tries)")))
}

#[cfg(test)]
mod root_cert_tests {
    use std::path::Path;

    use super::with_root_cert;

    #[test]
    fn the_ca_file_becomes_sslrootcert_and_sslmode_is_kept() {
        let ca = Path::new("/etc/ssl/db ca.pem");
        assert_eq!(
            with_root_cert("postgres://u@db:5432/x?sslmode=verify-full", ca).unwrap(),
            "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Fdb+ca.pem"
        );
        assert_eq!(
            with_root_cert("postgres://u@db/x", ca).unwrap(),
            "postgres://u@db/x?sslrootcert=%2Fetc%2Fssl%2Fdb+ca.pem"
        );
        assert_eq!(with_root_cert("sqlite://a.db", ca).unwrap(), "sqlite://a.db");
        assert!(with_root_cert("postgres://u@db/x?sslrootcert=/a.pem", ca).is_err());
    }
}

#[cfg(test)]
mod transient_tests {
    use sqlx::any::AnyPoolOptions;
    use sqlx::Executor as _;

    use super::StoreError;

    /// What SQLite answers a transaction that read and then writes while another connection
    /// (here: of the same pool; in production: another process on the file) holds the write
    /// lock, or wrote since the read: both are run again by `retrying`.
    #[tokio::test]
    async fn sqlite_refusing_a_first_write_is_transient() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
        let pool = AnyPoolOptions::new().max_connections(2).connect(&url).await.expect("connect");
        pool.execute("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER)").await.expect("schema");
        let (mut a, mut b) = (pool.acquire().await.expect("a"), pool.acquire().await.expect("b"));
        b.execute("PRAGMA busy_timeout=0").await.expect("pragma");

        // Another connection holds the write lock: SQLITE_BUSY (5).
        a.execute("BEGIN IMMEDIATE").await.expect("a begins");
        b.execute("BEGIN").await.expect("b begins");
        b.execute("SELECT * FROM t").await.expect("b reads");
        let busy = StoreError::Db(b.execute("INSERT INTO t VALUES (1)").await.expect_err("b cannot write"));
        assert!(busy.is_transient(), "{busy:?}");
        b.execute("ROLLBACK").await.expect("b rolls back");

        // Another connection wrote after this one's read: SQLITE_BUSY_SNAPSHOT (517).
        b.execute("BEGIN").await.expect("b begins");
        b.execute("SELECT * FROM t").await.expect("b reads");
        a.execute("INSERT INTO t VALUES (2); COMMIT").await.expect("a writes");
        let stale = StoreError::Db(b.execute("INSERT INTO t VALUES (3)").await.expect_err("b's snapshot is stale"));
        assert!(stale.is_transient(), "{stale:?}");
        b.execute("ROLLBACK").await.expect("b rolls back");

        // A constraint is not.
        a.execute("CREATE UNIQUE INDEX t_k ON t (k)").await.expect("index");
        let dup = StoreError::Db(a.execute("INSERT INTO t VALUES (2)").await.expect_err("duplicate"));
        assert!(!dup.is_transient(), "{dup:?}");
    }
}
