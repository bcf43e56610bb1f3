//! Group commit of SCIM writes on SQLite: several requests per transaction.
//!
//! SQLite has one writer at a time, so a write's cost is the time it holds the database. Through
//! sqlx every statement is a round trip to the connection's worker thread, and every request
//! paid its own `BEGIN … COMMIT` (several thread hand-offs and a commit while holding the
//! writer). Here the hot SCIM
//! writes are jobs for one writer thread with its own connection: it takes every job waiting,
//! runs them in one transaction (each in a savepoint of its own, so a failing job — a taken
//! name — changes nothing and does not disturb the others; the hot jobs, whose only failing
//! statement comes first and then writes nothing, skip the savepoint), commits once, and hands the
//! results back only after the WAL fsync that covers the commit (`walsync`), so "durable before
//! the 2xx" still holds. It takes the same in-process writer lock as every other writer.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, Mutex};

use super::walsync::WalSync;
use crate::store::StoreError;

/// The most jobs committed together.
const MAX_BATCH: usize = 512;

type Deliver = Box<dyn FnOnce(Option<Failed>) + Send>;

/// Why the jobs of a batch are not answered with their own results.
#[derive(Clone, Debug)]
pub(crate) enum Failed {
    /// The batch was rolled back whole: nothing of any job is stored. Its jobs are answered
    /// `NotApplied` (the store runs them again), except the one job whose own failure broke
    /// the batch, which gets its own error.
    RolledBack(Arc<str>),
    /// Whether the batch is stored is not known (the WAL sync after a SQLite commit failed; a
    /// COMMIT failed without PostgreSQL's answer): its jobs get a database error, and are not
    /// run again.
    Unknown(Arc<str>),
    /// The batch failed because the machine ran out of something (`Shortage`): answered
    /// `Exhausted`, which fails fast rather than being run again. `maybe_stored` as in `Unknown`
    /// (the fsync that would confirm the commit could not run: a descriptor was missing), else
    /// nothing of the batch is stored.
    Short(crate::store::Shortage, bool),
}

impl Failed {
    /// What a job of the failed batch is answered.
    pub(crate) fn answer<T>(self) -> Result<T, StoreError> {
        match self {
            Failed::RolledBack(e) => Err(StoreError::NotApplied(format!("its batch did not commit: {e}"))),
            Failed::Unknown(e) => {
                Err(StoreError::Db(sqlx::Error::Protocol(format!("its batch's commit was not confirmed: {e}"))))
            }
            Failed::Short(what, maybe_stored) => Err(StoreError::Exhausted { what, maybe_stored }),
        }
    }
}
/// What a job that ran says: whether it succeeded, the shortage that failed it (if one did),
/// and how to answer its caller.
type Ran = (bool, Option<crate::store::Shortage>, Deliver);
type RunJob = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// One caller's work: run on the writer's connection, it says whether it succeeded and how to
/// answer its caller. `savepoint`: whether it runs in a savepoint of its own.
struct Job {
    run: RunJob,
    savepoint: bool,
}

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// A storage error from SQLite; `unique` names what a UNIQUE violation means for this write.
pub fn sqlite_err(e: rusqlite::Error, unique: Option<&'static str>) -> StoreError {
    if let (Some(what), rusqlite::Error::SqliteFailure(f, _)) = (unique, &e) {
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
        if f.extended_code == 2067 || f.extended_code == 1555 {
            return StoreError::Conflict(what);
        }
    }
    if let Some(what) = crate::store::Shortage::of_rusqlite(&e) {
        // SQLite rolls back a statement that ran out of disk or memory: nothing of it is stored.
        return StoreError::Exhausted { what, maybe_stored: false };
    }
    StoreError::Db(sqlx::Error::Protocol(format!("SQLite: {e}")))
}

impl BatchWriter {
    /// Opens a writer connection to `db` and starts its thread. Commits are made durable by
    /// `wal` before anyone is answered; `lock` is the store's writer lock.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn start(db: &Path, lock: Arc<Mutex<()>>, wal: WalSync) -> rusqlite::Result<BatchWriter> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // cache_size 32 MiB: creates touch random leaves of several indexes (uuid ids, names);
        // with SQLite's default 2 MiB most of them are re-read (pread) on a large tenant. The
        // cache is shrunk again after whole-tenant runs.
        // temp_store=MEMORY: every job is a savepoint, and SQLite copies the pages a savepoint
        // changes to a statement journal, by default a temporary file.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; \
             PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-32768;",
        )?;
        conn.execute_batch(super::walsync::JOURNAL_SIZE_LIMIT)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("scim-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let writes = jobs.len();
                    let guard = lock.blocking_lock();
                    let (delivers, failed, culprit) = run_batch(&conn, jobs);
                    if failed.is_none() {
                        crate::metrics::METRICS.sqlite_batch_writes.observe(writes as f64);
                    }
                    drop(guard);
                    let wal = wal.clone();
                    rt.spawn(async move {
                        let failed = match failed {
                            Some(f) => Some(f),
                            // Committed, but perhaps not durable: not known to be stored or not.
                            None => wal.sync().await.err().map(|e| match crate::store::Shortage::of_io(&e) {
                                Some(what) => Failed::Short(what, true),
                                None => Failed::Unknown(Arc::from(e.to_string())),
                            }),
                        };
                        for (i, d) in delivers.into_iter().enumerate() {
                            d(if culprit == Some(i) { None } else { failed.clone() });
                        }
                    });
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(BatchWriter { jobs: tx })
    }

    /// Runs `f` as one job of the next batch and returns its result once the batch is durable.
    /// `f` runs inside a savepoint: when it fails, everything it wrote is rolled back.
    ///
    /// # Errors
    /// `f`'s error; a database error when the batch could not be committed or synced.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f, true).await
    }

    /// `write` without a savepoint, for work that can fail only before its first change: its
    /// statements that may fail on a constraint come first, and a failing statement writes
    /// nothing (SQLite undoes a failed statement). A savepoint costs a job the copy of every
    /// page it changes into the statement journal, and its release. Should such a job fail after it changed something (a
    /// disk error, or a bug), it cannot be undone alone: the whole batch is rolled back and every
    /// job in it fails.
    ///
    /// # Errors
    /// As `write`.
    pub async fn write_unguarded<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f, false).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        savepoint: bool,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let mut unrun = Unrun::new(tx);
        let run: RunJob = Box::new(move |c: &Connection| {
            let tx = unrun.take();
            if tx.is_closed() {
                // The caller went away (its request was cancelled) before the job ran: write
                // nothing, as a dropped sqlx transaction would not have committed either.
                let deliver: Deliver = Box::new(|_| {});
                return (false, None, deliver);
            }
            let r = f(c);
            let ok = r.is_ok();
            let short = r.as_ref().err().and_then(StoreError::shortage);
            let deliver: Deliver = Box::new(move |failed: Option<Failed>| {
                // A batch that did not commit answers every job so, a job's own error included
                // (a 409 may have come from an earlier job's write that was rolled back) —
                // but for the job that broke the batch, which `run_batch` answers with None.
                let r = match failed {
                    Some(f) => f.answer(),
                    None => r,
                };
                let _ = tx.send(r);
            });
            (ok, short, deliver)
        });
        self.jobs.send(Job { run, savepoint }).map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?;
        rx.await
            .map_err(|_| StoreError::Db(sqlx::Error::Protocol("the batch writer stopped before answering".into())))?
    }
}

/// A job's answer channel until the job runs. A job dropped before it ran (its batch failed
/// before its turn, or BEGIN did) wrote nothing, and answers so with `NotApplied`, which lets
/// the caller run it again; once it runs, its deliver answers instead (and a deliver dropped
/// unanswered — the writer stopped between commit and answer — tells the caller nothing more
/// than that the writer stopped).
pub(crate) struct Unrun<T>(Option<oneshot::Sender<Result<T, StoreError>>>);

impl<T> Unrun<T> {
    /// The channel, taken out to be answered by the job's deliver.
    pub(crate) fn take(&mut self) -> oneshot::Sender<Result<T, StoreError>> {
        self.0.take().expect("a job runs once")
    }

    pub(crate) fn new(tx: oneshot::Sender<Result<T, StoreError>>) -> Unrun<T> {
        Unrun(Some(tx))
    }
}

impl<T> Drop for Unrun<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Err(StoreError::NotApplied("its batch failed before it ran".into())));
        }
    }
}

/// One transaction over `jobs`: the deliveries, why the batch failed (if it did: it is rolled
/// back then) and which delivery is of the job whose own failure broke it (if one did).
fn run_batch(conn: &Connection, jobs: Vec<Job>) -> (Vec<Deliver>, Option<Failed>, Option<usize>) {
    let mut delivers = Vec::with_capacity(jobs.len());
    if !conn.is_autocommit() {
        // A transaction left open by a failed ROLLBACK would make every BEGIN fail from now on.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "SQLite batch writer: cannot end a leftover transaction");
        }
    }
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        // Nothing runs: every caller is answered with an error.
        tracing::error!(error = %e, jobs = jobs.len(), "SQLite batch writer: BEGIN failed");
        drop(jobs);
        let failed = match crate::store::Shortage::of_rusqlite(&e) {
            Some(what) => Failed::Short(what, false),
            None => Failed::RolledBack(Arc::from(e.to_string())),
        };
        return (delivers, Some(failed), None);
    }
    let mut failed: Option<Arc<str>> = None;
    // A job that failed for want of disk or memory: then the batch's failure is that shortage.
    let mut short = None;
    let mut culprit = None;
    for j in jobs {
        if failed.is_none() && conn.is_autocommit() {
            failed = Some(Arc::from("the transaction was rolled back by SQLite"));
        }
        if failed.is_some() {
            // The transaction is gone: the remaining jobs do not run (they would write outside
            // any transaction); dropping them answers their callers `NotApplied` (`Unrun`).
            continue;
        }
        if j.savepoint {
            if let Err(e) = run(conn, "SAVEPOINT job") {
                failed = Some(Arc::from(e.to_string()));
                continue;
            }
        }
        let changes_before = conn.total_changes();
        // A panicking job is rolled back like a failed one (its caller gets an error) and does
        // not take the writer thread down with it.
        let (ok, d) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (j.run)(conn))) {
            Ok((ok, s, d)) => {
                short = short.or(s);
                (ok, Some(d))
            }
            Err(_) => (false, None),
        };
        let d_index = d.is_some().then_some(delivers.len());
        delivers.extend(d);
        if !ok && conn.is_autocommit() {
            // The job's failure made SQLite roll the whole transaction back (a full disk, an I/O
            // error): it broke the batch, and gets its own error.
            tracing::error!("SQLite batch writer: a failed job ended the transaction; the batch is rolled back");
            failed = Some(Arc::from("SQLite rolled the transaction back when another write of it failed"));
            culprit = d_index;
        } else if j.savepoint {
            let end =
                if ok { run(conn, "RELEASE job") } else { run(conn, "ROLLBACK TO job").and(run(conn, "RELEASE job")) };
            if let Err(e) = end {
                short = short.or(crate::store::Shortage::of_rusqlite(&e));
                failed = Some(Arc::from(e.to_string()));
            }
        } else if !ok && conn.total_changes() != changes_before {
            // An unguarded job failed after changing something: only the whole batch can be
            // undone.
            tracing::error!("SQLite batch writer: a job failed after its first change; rolling the batch back");
            failed = Some(Arc::from("another write of the same transaction failed halfway"));
            // Its own error answers it (when it has a delivery: a job that panicked has none).
            culprit = d_index;
        }
    }
    if failed.is_none() && conn.is_autocommit() {
        failed = Some(Arc::from("the transaction was rolled back by SQLite"));
    }
    if failed.is_none() {
        let t = std::time::Instant::now();
        let committed = run(conn, "COMMIT");
        let took = t.elapsed();
        crate::metrics::METRICS.sqlite_commit.observe(took.as_secs_f64());
        if took >= super::walsync::SLOW_DISK {
            tracing::warn!(ms = took.as_millis() as u64, "slow COMMIT of the SQLite batch writer (writing the WAL)");
        }
        if let Err(e) = committed {
            tracing::error!(error = %e, "SQLite batch writer: COMMIT failed");
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "SQLite batch writer: ROLLBACK failed");
                }
            }
            if let Some(what) = crate::store::Shortage::of_rusqlite(&e) {
                // Out of disk: the WAL append that ends with the commit frame came short, so
                // the commit frame is not in the WAL (SQLite writes the frames in order, and one
                // written partly fails its checksum on recovery); the next commit writes over
                // them. Nothing of the batch is stored.
                return (delivers, Some(Failed::Short(what, false)), None);
            }
            // SQLite promises that a failed COMMIT stored nothing; but what fails a COMMIT is a
            // disk failing under it, and trusting it then is not worth running the batch again.
            return (delivers, Some(Failed::Unknown(Arc::from(e.to_string()))), None);
        }
    }
    if failed.is_some() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "SQLite batch writer: ROLLBACK failed");
        }
    }
    let failed = failed.map(|why| match short {
        Some(what) => Failed::Short(what, false),
        None => Failed::RolledBack(why),
    });
    (delivers, failed, culprit)
}

/// Runs one transaction-control statement, prepared once per connection (parsing them for
/// every job showed in profiles).
pub fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(db: &Path) -> Vec<String> {
        let c = Connection::open(db).expect("open");
        let mut st = c.prepare("SELECT k FROM t ORDER BY k").expect("prepare");
        let out = st.query_map([], |r| r.get(0)).expect("query").collect::<Result<Vec<String>, _>>().expect("rows");
        out
    }

    /// A batch writer on a new database holding one table, `t (k TEXT PRIMARY KEY)`.
    fn writer_on_a_fresh_table() -> (tempfile::TempDir, std::path::PathBuf, BatchWriter) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("b.db");
        Connection::open(&db)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k TEXT PRIMARY KEY);"))
            .expect("schema");
        let w = BatchWriter::start(&db, Arc::new(Mutex::new(())), WalSync::start(db.clone())).expect("writer");
        (dir, db, w)
    }

    fn insert(c: &Connection, k: &str) -> Result<(), StoreError> {
        c.execute("INSERT INTO t (k) VALUES (?1)", [k]).map(|_| ()).map_err(|e| sqlite_err(e, Some("k")))
    }

    /// Jobs that fail halfway never leave their first write behind; a job whose first statement
    /// fails disturbs nobody; and jobs sharing a batch with an unguarded job that failed halfway
    /// are told they were not committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_failing_halfway_leave_nothing_and_their_neighbours_are_told() {
        let (_dir, db, w) = writer_on_a_fresh_table();
        w.write(|c| insert(c, "taken")).await.expect("seed");
        let late = || Err::<(), _>(StoreError::Invalid("late".into()));
        for round in 0..40 {
            let k = |s: &str| format!("{round:02}{s}");
            let (a, b, c) = (k("a"), k("b"), k("c"));
            let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
            let halfway = round % 2 == 0;
            // Submitted together, so they usually share a batch (not always: both are checked).
            let (ra, rb, rc, rd) = tokio::join!(
                async {
                    if halfway {
                        // Unguarded, failing after a write: the whole batch is undone.
                        w.write_unguarded(move |c| insert(c, &a2).and_then(|_| late())).await
                    } else {
                        Err(StoreError::Invalid("not sent".into()))
                    }
                },
                w.write(move |c| insert(c, &b2)),
                // Guarded, failing after a write: its savepoint is undone.
                w.write(move |conn| insert(conn, &c2).and_then(|_| late())),
                // Unguarded, its first statement failing: nothing was written, nothing to undo.
                w.write_unguarded(|c| insert(c, "taken")),
            );
            assert!(ra.is_err() && rc.is_err(), "{ra:?} {rc:?}");
            if halfway {
                // The job that broke its batch gets its own error, not one that runs it again.
                assert!(matches!(ra, Err(StoreError::Invalid(_))), "{ra:?}");
            }
            assert!(matches!(rd, Err(StoreError::Conflict("k")) | Err(StoreError::NotApplied(_))), "{rd:?}");
            // A job undone with its batch is told so in a way that lets it be run again.
            assert!(rb.as_ref().err().is_none_or(StoreError::is_transient), "{rb:?}");
            let have = rows(&db);
            assert!(!have.contains(&a), "the unguarded job's first write was committed: {have:?}");
            assert!(!have.contains(&c), "the guarded job's first write was committed: {have:?}");
            assert_eq!(rb.is_ok(), have.contains(&b), "b answered {rb:?}; stored: {}", have.contains(&b));
            if !halfway {
                assert!(rb.is_ok(), "nothing failed halfway, yet b was not committed: {rb:?}");
                assert!(matches!(rd, Err(StoreError::Conflict("k"))), "{rd:?}");
            }
        }
        assert!(rows(&db).iter().filter(|k| k.ends_with('b')).count() >= 20);
    }

    /// A job whose failure ends the whole transaction (as SQLite does on some errors; here the
    /// job ends it itself) gets its own error; the jobs of its batch are told `NotApplied`,
    /// whether they ran before it or not at all, and nothing of the batch is stored — also when
    /// that job is the batch's last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_ends_the_transaction_gets_its_own_error_and_its_batch_is_run_again() {
        let (_dir, db, w) = writer_on_a_fresh_table();
        for round in 0..20 {
            let k = |s: &str| format!("{round:02}{s}");
            let (a, b, c) = (k("a"), k("b"), k("c"));
            let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
            let breaks = move |conn: &Connection| {
                insert(conn, &b2)?;
                conn.execute_batch("ROLLBACK").map_err(|e| sqlite_err(e, None))?;
                Err::<(), _>(StoreError::Invalid("broke".into()))
            };
            // Odd rounds: the breaking job last in its batch (when the three share one).
            let (ra, rb, rc) = if round % 2 == 0 {
                tokio::join!(w.write(move |c| insert(c, &a2)), w.write(breaks), w.write(move |c| insert(c, &c2)))
            } else {
                tokio::join!(w.write(move |c| insert(c, &a2)), w.write(breaks), async { Ok(()) })
            };
            assert!(matches!(rb, Err(StoreError::Invalid(_))), "the breaking job: {rb:?}");
            let have = rows(&db);
            assert!(!have.contains(&b), "the breaking job's write was stored: {have:?}");
            for (key, r) in [(&a, &ra), (&c, &rc)] {
                let stored = have.contains(key);
                match r {
                    Ok(()) => assert!(stored || round % 2 == 1, "{key} answered Ok but is not stored"),
                    Err(e) => {
                        assert!(e.is_transient(), "{key}: {e:?}");
                        assert!(!stored, "{key} answered {e:?} but is stored");
                    }
                }
            }
        }
    }
}
