//! Statements as data: SQL (portable, `$n` placeholders) with owned arguments, run either on a
//! sqlx connection (PostgreSQL, or SQLite outside the batch writer) or on the SQLite batch
//! writer's connection (`batch`). Writes that must run on both are written once, as `Stmt`s.

use std::borrow::Cow;

use sqlx::AnyConnection;

pub use super::query::Val;
use super::sqlite::batch::sqlite_err;
pub use super::sqlite::reader::bind_vals;
use super::StoreError;

/// One statement with its arguments (`$1…` in order).
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: Cow<'static, str>,
    pub args: Vec<Val>,
}

impl Stmt {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Stmt {
        Stmt { sql: sql.into(), args: Vec::new() }
    }

    /// Adds the next argument.
    #[must_use]
    pub fn arg(mut self, v: impl Into<Val>) -> Stmt {
        self.args.push(v.into());
        self
    }
}

/// How a statement failed: a UNIQUE violation (callers usually treat it as "lost the race"),
/// or anything else.
#[derive(Debug)]
pub enum ExecError {
    Unique,
    Db(StoreError),
}

impl From<ExecError> for StoreError {
    fn from(e: ExecError) -> StoreError {
        match e {
            ExecError::Unique => StoreError::Conflict("a unique key"),
            ExecError::Db(e) => e,
        }
    }
}

/// Runs a statement on a sqlx connection; the rows it changed.
///
/// # Errors
/// `Unique` on a UNIQUE violation, else the database error.
pub async fn exec_sqlx(conn: &mut AnyConnection, s: &Stmt) -> Result<u64, ExecError> {
    match bind_sqlx(sqlx::query(&s.sql), &s.args).execute(conn).await {
        Ok(r) => Ok(r.rows_affected()),
        Err(e) if StoreError::is_unique(&e) => Err(ExecError::Unique),
        Err(e) => Err(ExecError::Db(e.into())),
    }
}

/// Runs a statement on a rusqlite connection (the batch writer's); the rows it changed.
///
/// # Errors
/// `Unique` on a UNIQUE violation, else the database error.
pub fn exec_sqlite(conn: &rusqlite::Connection, s: &Stmt) -> Result<u64, ExecError> {
    let run = || -> rusqlite::Result<usize> {
        let mut st = super::sqlite::reader::Reader::prepare(conn, &s.sql)?;
        bind_vals(&mut st, &s.args)?;
        st.raw_execute()
    };
    match run() {
        Ok(n) => Ok(n as u64),
        Err(e) => match sqlite_err(e, Some("")) {
            StoreError::Conflict(_) => Err(ExecError::Unique),
            other => Err(ExecError::Db(other)),
        },
    }
}

/// A result row of either driver, so that each row type has one decoder: the SQLite reader's
/// rows are read by position (by name, every `get` scans the statement's column names), sqlx's
/// by name. Each keeps its own error type.
pub(crate) trait Cols {
    type Error;
    /// Column `at` (the reader) or `name` (sqlx).
    fn col<T>(&self, at: usize, name: &str) -> Result<T, Self::Error>
    where
        T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>;
    /// A stored value the decoder does not accept (a corrupt row).
    fn invalid(what: String) -> Self::Error;
}

impl Cols for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn col<T>(&self, at: usize, _name: &str) -> rusqlite::Result<T>
    where
        T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.get(at)
    }
    fn invalid(what: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(StoreError::Invalid(what)))
    }
}

impl Cols for sqlx::any::AnyRow {
    type Error = StoreError;
    fn col<T>(&self, at: usize, name: &str) -> Result<T, StoreError>
    where
        T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        // Unnamed (tuples): by position.
        Ok(if name.is_empty() { sqlx::Row::try_get(self, at)? } else { sqlx::Row::try_get(self, name)? })
    }
    fn invalid(what: String) -> StoreError {
        StoreError::Invalid(what)
    }
}

/// A row type read from either driver through one decoder (`Store::read_all`).
pub(crate) trait FromCols: Sized {
    fn from_cols<R: Cols + ?Sized>(r: &R) -> Result<Self, R::Error>;
}

/// A value both drivers decode.
pub(crate) trait Col:
    rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>
{
}
impl<T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>> Col for T {}

impl<A: Col, B: Col> FromCols for (A, B) {
    fn from_cols<R: Cols + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok((r.col(0, "")?, r.col(1, "")?))
    }
}

impl<A: Col, B: Col, C: Col> FromCols for (A, B, C) {
    fn from_cols<R: Cols + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok((r.col(0, "")?, r.col(1, "")?, r.col(2, "")?))
    }
}

/// A query with its arguments bound, for sqlx.
pub(crate) fn bind_sqlx<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &[Val],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Val::Int(i) => q.bind(*i),
            Val::Text(t) => q.bind(t.clone()),
        };
    }
    q
}

#[cfg(test)]
mod tests {
    use super::{bind_vals, Val};

    /// `$n` is bound to the n-th argument wherever it appears, in any order and any number of
    /// times; a parameter with no argument is NULL.
    #[test]
    fn parameters_are_bound_by_their_number() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let mut st = c.prepare("SELECT $3, $1, +$3, $2 IS NULL, $4 IS NULL").unwrap();
        bind_vals(&mut st, &[Val::Int(1), Val::Text(None), Val::from("three")]).unwrap();
        let mut rows = st.raw_query();
        let r = rows.next().unwrap().unwrap();
        let row: (String, i64, String, bool, bool) =
            (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap(), r.get(3).unwrap(), r.get(4).unwrap());
        assert_eq!(row, ("three".to_string(), 1, "three".to_string(), true, true));
    }
}
