//! The SQLite fast path for point reads. sqlx runs every SQLite connection on a worker thread of
//! its own, so each query costs two thread hand-offs (request → worker → back) — on a 2-core
//! machine most of a `GET /Users/{id}`. Point reads by key (a resource by id, a `userName eq`
//! lookup, the groups of one user) instead run right here, on the calling thread, on a small pool
//! of plain SQLite connections (rusqlite, the same bundled SQLite) with cached prepared
//! statements: a few microseconds of B-tree descent, less than the hand-off alone. Only reads
//! whose cost is bounded by an index lookup come here; scans and long lists stay on sqlx.
//!
//! The connections are opened read-write (WAL readers need the shared-memory index) but with
//! `query_only`, and each statement runs in its own read transaction, so a read sees every
//! commit acknowledged before it started, exactly as a pool read does.

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::store::query::{Arg, Val};
use crate::store::{StoreError, StoredResource, RESOURCE_COLS};

/// Idle connections kept for reuse (more are opened under a burst and closed after it).
const IDLE: usize = 8;

/// A small pool of synchronous SQLite connections for point reads.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(sqlx::Error::Protocol(format!("SQLite point read: {e}")))
}

impl Reader {
    /// A reader of the database file `path` (opened lazily).
    pub fn new(path: PathBuf) -> Reader {
        Reader { path, idle: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // A short busy timeout: these reads run on runtime workers (WAL readers are blocked
        // only by recovery or another process's exclusive lock; then the request fails fast).
        // cache_size 8 MiB: room for every interior page of the tables and indexes a point
        // read descends (about 4 MiB at a million users), so a read misses the cache only for
        // its leaves (SQLite's default, 2 MiB, made interior pages churn through pread too).
        conn.execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=1000; PRAGMA cache_size=-8192;")?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Prepares (or takes from the connection's cache) `sql`, written with the portable `= $n`
    /// comparisons, for a statement run over and over with new values (point reads, the batch
    /// writer's statements): each `= $n` becomes `= +$n`. Once `ANALYZE` has gathered
    /// STAT4 samples, SQLite re-plans a cached statement every time a parameter compared with an
    /// indexed column is re-bound (to pick a plan for the new value) — a full re-parse per read,
    /// half the cost of a point read. A unary `+` on the value side leaves the index usable but
    /// makes the value opaque to STAT4, so the statement is planned once.
    pub fn prepare<'c>(conn: &'c Connection, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
        conn.prepare_cached(&Self::rewrite(sql))
    }

    /// `sql` as `prepare` runs it (each `= $n` as `= +$n`): for statements built once, in a
    /// `LazyLock`, then prepared with `Connection::prepare_cached` (no rewriting per read).
    pub fn rewrite(sql: &str) -> String {
        sql.replace(" = $", " = +$")
    }

    /// Runs `f` on a pooled connection.
    pub fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let taken = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = match taken {
            Some(c) => c,
            None => self.open().map_err(err)?,
        };
        let out = f(&conn).map_err(err);
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE {
            idle.push(conn);
        }
        out
    }

    /// Frees the page caches of the idle connections (after a whole-tenant run has filled them).
    pub fn shrink(&self) {
        let idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in idle.iter() {
            let _ = c.execute_batch("PRAGMA shrink_memory");
        }
    }

    /// Every row of a query (`$1…` bound from `args` by name), mapped by `f`. For the range
    /// reads of a whole-tenant run: call it on a blocking thread, not a runtime worker.
    pub fn query_all<T>(
        &self,
        sql: &str,
        args: &[Val],
        mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.with(|c| {
            let mut st = Self::prepare(c, sql)?;
            bind_vals(&mut st, args)?;
            let mut rows = st.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(f(row)?);
            }
            Ok(out)
        })
    }

    /// One resource of `table` (`scim_users` or `scim_groups`) by id.
    pub fn get_resource(&self, table: &str, tenant_id: i64, id: &str) -> Result<Option<StoredResource>, StoreError> {
        const TABLES: [&str; 2] = ["scim_users", "scim_groups"];
        static SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
            TABLES
                .map(|t| Reader::rewrite(&format!("SELECT {RESOURCE_COLS} FROM {t} WHERE tenant_id = $1 AND id = $2")))
        });
        let Some(i) = TABLES.iter().position(|t| *t == table) else {
            return Err(StoreError::Invalid(format!("no resource table {table}")));
        };
        let sql = SQL[i].as_str();
        self.with(|c| {
            let mut st = c.prepare_cached(sql)?;
            let mut rows = st.query(rusqlite::params![tenant_id, id])?;
            rows.next()?.map(resource).transpose()
        })
    }
}

/// Binds `$1` (the tenant) and `$2…` (`args`, then `extra`), as the portable SQL spells them.
pub fn bind(stmt: &mut rusqlite::Statement<'_>, tenant_id: i64, args: &[Arg], extra: &[i64]) -> rusqlite::Result<()> {
    let mut vals = vec![Val::Int(tenant_id)];
    vals.extend(args.iter().map(|a| match a {
        Arg::Str(s) => Val::from(s),
        Arg::Int(i) => Val::Int(*i),
    }));
    vals.extend(extra.iter().map(|&v| Val::Int(v)));
    bind_vals(stmt, &vals)
}

/// The extra column that reads a user's groups with its row (`json_group_array` of
/// `[group id, displayName]`, by group creation), for a `FROM scim_users u` query.
pub const USER_GROUPS_COL: &str = "(SELECT json_group_array(json_array(gid, name)) FROM (SELECT g.id AS gid, \
     g.display_name AS name FROM scim_group_members m JOIN scim_groups g \
     ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
     WHERE m.tenant_id = u.tenant_id AND m.member_id = u.id ORDER BY g.seq))";

/// A user from a row of `seq, id, doc, version, created_at, updated_at, USER_GROUPS_COL`.
pub fn user_with_groups(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResource> {
    let mut r = resource(row)?;
    let groups: String = row.get(6)?;
    r.groups = Some(
        serde_json::from_str(&groups)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e)))?,
    );
    Ok(r)
}

/// A stored resource from a row of `seq, id, doc, version, created_at, updated_at`.
pub fn resource(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource {
        seq: row.get(0)?,
        id: row.get(1)?,
        doc: row.get(2)?,
        version: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        groups: None,
    })
}

/// Binds `args` to `$1…` of a rusqlite statement. SQLite numbers `$n` parameters by first
/// appearance, not by n, so each of the statement's parameters is bound to the argument its name
/// says (a parameter with no argument stays NULL; an argument no parameter names is unused).
///
/// # Errors
/// Binding errors.
pub fn bind_vals(st: &mut rusqlite::Statement<'_>, args: &[Val]) -> rusqlite::Result<()> {
    for at in 1..=st.parameter_count() {
        let n = st.parameter_name(at).and_then(|p| p.strip_prefix('$')).and_then(|d| d.parse::<usize>().ok());
        let Some(a) = n.and_then(|n| n.checked_sub(1)).and_then(|i| args.get(i)) else { continue };
        match a {
            Val::Int(v) => st.raw_bind_parameter(at, v)?,
            Val::Text(v) => st.raw_bind_parameter(at, v)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The bundled SQLite is built with `.cargo/config.toml`'s flags: one page cache per
    /// connection (no process-wide page-cache mutex) and no memory statistics.
    #[test]
    fn sqlite_is_built_without_shared_page_cache_or_memory_statistics() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let mut st = c.prepare("PRAGMA compile_options").unwrap();
        let opts: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(!opts.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{opts:?}");
        assert!(opts.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{opts:?}");
    }
}
