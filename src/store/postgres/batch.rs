//! Group commit of the hot SCIM pushes on PostgreSQL: several requests per transaction.
//!
//! Every push appends to its tenant's intent journal and bumps the tenant's row in the same
//! transaction, and the row lock is held until the commit is flushed, so that a tenant's journal
//! positions are handed out in commit order (see `record_intent`). One push per transaction
//! therefore commits a tenant's pushes one WAL flush at a time, and a membership PATCH holds the
//! tenant's lock through all of its member statements. Here the hot pushes — `POST /Users` and member adds
//! and removes, what an IdP's sync is made of — are jobs for one writer task per process with
//! a connection of the pool: it takes every job waiting (up to `MAX_BATCH`), runs each in a
//! savepoint of one transaction (a failing job — a taken userName — is
//! rolled back to its savepoint and answered with its error; the others commit), collects what
//! each would journal, and only then locks the tenants the batch pushed to (in id order, so
//! two replicas' batches cannot deadlock on them), bumps each once, appends the journal rows
//! in job order with one statement and commits. A tenant's lock is held for that last step
//! only, and one flush makes a whole batch durable. Callers are answered after the commit, so
//! "durable before the 2xx" holds; if the batch cannot commit, every job in it gets an error.
//! Journal order stays commit order: the rows of a batch get their positions while it holds
//! the tenants' locks, which it keeps to its commit, as a single push did.
//!
//! A batch holds many row locks at once, so every PostgreSQL write takes its locks in one
//! order (docs/databases.md): the groups whose member rows it changes, in id order (a batch:
//! all of them before its first job, `lock_groups`); then the members it checks, share-locked;
//! a batch's member changes before its creates (`Order`); the tenants' rows last.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use sqlx::{AnyConnection, AnyPool, Executor as _};
use tokio::sync::{mpsc, oneshot};

use crate::store::sqlite::batch::Failed;
use crate::store::{OwnedIntent, StoreError, PUSH_CHANNEL};

/// The most jobs in one transaction. Each job's savepoint that writes takes a subtransaction
/// id, and PostgreSQL keeps up to 64 of them per backend in shared memory
/// (`PGPROC_MAX_CACHED_SUBXIDS`); past that, every snapshot taken in the cluster while the
/// batch runs has to look them up in `pg_subtrans`.
pub const MAX_BATCH: usize = 64;

/// One row the batch appends to the intent journal.
#[derive(Debug, Clone)]
struct JournalRow {
    tenant_id: i64,
    resource_type: &'static str,
    resource_id: String,
    op: String,
    at: String,
    request_id: String,
    /// A push (bumps the tenant's generation), rather than a member journaled with one.
    push: bool,
}

/// What the jobs of a batch journal, appended at the batch's end (or, outside a batch, by
/// `write_each` right away).
#[derive(Debug, Default)]
pub struct Journal {
    rows: Vec<JournalRow>,
}

impl Journal {
    /// A push: `op` on `resource_type` `resource_id`.
    pub fn intent(&mut self, intent: &OwnedIntent, resource_type: &'static str, resource_id: &str, op: &str) {
        self.rows.push(JournalRow {
            tenant_id: intent.tenant_id,
            resource_type,
            resource_id: resource_id.to_string(),
            op: op.to_string(),
            at: intent.now.clone(),
            request_id: intent.request_id.clone(),
            push: true,
        });
    }

    /// A user whose group membership changed (the controller re-evaluates its roles).
    pub fn member(&mut self, tenant_id: i64, user_id: &str, now: &str, request_id: &str) {
        self.rows.push(JournalRow {
            tenant_id,
            resource_type: "User",
            resource_id: user_id.to_string(),
            op: "membership".to_string(),
            at: now.to_string(),
            request_id: request_id.to_string(),
            push: false,
        });
    }

    /// A member a write dropped because it does not exist (`dropped_member <id>` on the group).
    pub fn dropped(&mut self, tenant_id: i64, group_id: &str, member_id: &str, now: &str, request_id: &str) {
        self.rows.push(JournalRow {
            tenant_id,
            resource_type: "Group",
            resource_id: group_id.to_string(),
            op: format!("{} {member_id}", crate::store::desired::DROPPED_MEMBER),
            at: now.to_string(),
            request_id: request_id.to_string(),
            push: false,
        });
    }

    /// Appends the rows one statement each, in order, inside the caller's transaction (which
    /// already holds its tenant's lock: `record_intent`). Portable: the sqlx write path of both
    /// backends.
    ///
    /// # Errors
    /// Database errors.
    pub async fn write_each(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        for r in self.rows {
            sqlx::query(crate::store::desired::JOURNAL_SQL)
                .bind(r.tenant_id)
                .bind(r.resource_type)
                .bind(r.resource_id)
                .bind(r.op)
                .bind(r.at)
                .bind(r.request_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

type Deliver = Box<dyn FnOnce(Option<Failed>) + Send>;
type RunJob = Box<dyn for<'a> FnOnce(&'a mut AnyConnection, &'a mut Journal) -> BoxFuture<'a, (bool, Deliver)> + Send>;

/// What a job locks first. A batch locks the groups of its member changes before any job runs
/// (`lock_groups`), then runs its jobs in this order (member changes by group id, then creates
/// by `userName`), so any two batches — of two replicas — take the locks they share in
/// the same order and cannot deadlock on them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Order {
    /// A member change, by tenant and group id (its `scim_groups` row is locked first). Before
    /// the creates: a member check share-locks the member's row, and a rename of that user
    /// holds its row while it waits for a new `userName` a create of the batch would have
    /// taken.
    Group(i64, String),
    /// A user create, by tenant and lower-cased `userName` (its unique key).
    Create(i64, String),
}

struct Job {
    order: Order,
    run: RunJob,
}

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct PgBatch {
    jobs: mpsc::UnboundedSender<Job>,
}

impl PgBatch {
    /// Starts the writer task on the current runtime; it takes a connection from `pool` for
    /// each batch.
    pub fn start(pool: AnyPool) -> PgBatch {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (delivers, failed) = run_batch(pool.clone(), jobs).await;
                for d in delivers {
                    d(failed.clone());
                }
            }
        });
        PgBatch { jobs: tx }
    }

    /// Runs `f` as one job of the next batch, in a savepoint of its own, and returns its result
    /// once the batch is committed. `f` journals through the `Journal` it is given (not with
    /// statements of its own); when it fails, everything it wrote and journaled is undone.
    ///
    /// # Errors
    /// `f`'s error; a database error when the batch could not be committed.
    pub async fn write<T, F>(&self, order: Order, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut AnyConnection, &'a mut Journal) -> BoxFuture<'a, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let mut unrun = crate::store::sqlite::batch::Unrun::new(tx);
        let run: RunJob = Box::new(move |conn, journal| {
            let tx = unrun.take();
            Box::pin(async move {
                if tx.is_closed() {
                    // The caller went away (its request was cancelled) before the job ran:
                    // write nothing, as a dropped transaction would not have committed either.
                    let deliver: Deliver = Box::new(|_| {});
                    return (false, deliver);
                }
                let r = f(conn, journal).await;
                let ok = r.is_ok();
                let deliver: Deliver = Box::new(move |failed: Option<Failed>| {
                    // A batch that did not commit answers every job so, its own error included:
                    // a job's 409 may have come from an earlier job's write that was rolled back.
                    // (A job's own failure is rolled back to its savepoint and never breaks the
                    // batch.)
                    let r = match failed {
                        Some(f) => f.answer(),
                        None => r,
                    };
                    let _ = tx.send(r);
                });
                (ok, deliver)
            })
        });
        self.jobs.send(Job { order, run }).map_err(|_| StoreError::Db(sqlx::Error::PoolClosed))?;
        rx.await
            .map_err(|_| StoreError::Db(sqlx::Error::Protocol("the batch writer stopped before answering".into())))?
    }
}

// The batch's steps return boxed futures: the writer task's future must be `Send`, and rustc
// cannot prove that of sqlx's executor futures borrowed across an `async fn` boundary.

/// Runs a transaction-control statement (or several, in one round trip).
fn control<'a>(conn: &'a mut AnyConnection, sql: &'static str) -> BoxFuture<'a, Result<(), Arc<str>>> {
    // A bare string runs as a simple query, which may hold several statements.
    Box::pin(async move { conn.execute(sql).await.map(|_| ()).map_err(|e| Arc::from(e.to_string())) })
}

/// One transaction over `jobs`: the deliveries, and why the batch failed (if it did). A job
/// that is not run (the batch failed before it) is dropped, which answers its caller
/// `NotApplied` (`batch::Unrun`).
fn run_batch(pool: AnyPool, mut jobs: Vec<Job>) -> BoxFuture<'static, (Vec<Deliver>, Option<Failed>)> {
    Box::pin(async move {
        // Requests that share a batch were in flight together, so none waited for another's
        // answer: their order is free, and lock order is what matters (`Order`).
        jobs.sort_by(|a, b| a.order.cmp(&b.order));
        let mut delivers = Vec::with_capacity(jobs.len());
        let mut tx = match pool.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, jobs = jobs.len(), "PostgreSQL batch writer: BEGIN failed");
                return (delivers, Some(Failed::RolledBack(Arc::from(e.to_string()))));
            }
        };
        let mut journal = Journal::default();
        let mut failed: Option<Arc<str>> = lock_groups(&mut tx, &jobs).await.err().map(|e| Arc::from(e.to_string()));
        let n = jobs.len();
        for (i, j) in jobs.into_iter().enumerate() {
            if failed.is_some() {
                continue;
            }
            if i == 0 {
                if let Err(e) = control(&mut tx, "SAVEPOINT job").await {
                    failed = Some(e);
                    continue;
                }
            }
            let mark = journal.rows.len();
            // A panicking job is rolled back like a failed one (its caller gets an error) and does
            // not take the writer task down with it.
            let (ok, d) = match AssertUnwindSafe((j.run)(&mut tx, &mut journal)).catch_unwind().await {
                Ok((ok, d)) => (ok, Some(d)),
                Err(_) => (false, None),
            };
            delivers.extend(d);
            let last = i + 1 == n;
            // One round trip between two jobs: end this one's savepoint, open the next one's (a
            // savepoint rolled back to stays open, empty, for the next job).
            let end = match (ok, last) {
                (true, false) => control(&mut tx, "RELEASE SAVEPOINT job; SAVEPOINT job").await,
                (true, true) => control(&mut tx, "RELEASE SAVEPOINT job").await,
                (false, _) => {
                    journal.rows.truncate(mark);
                    control(&mut tx, "ROLLBACK TO SAVEPOINT job").await
                }
            };
            if let Err(e) = end {
                failed = Some(e);
            }
        }
        if failed.is_none() {
            if let Err(e) = finish(&mut tx, journal).await {
                failed = Some(Arc::from(e.to_string()));
            }
        }
        match failed {
            None => match tx.commit().await {
                Ok(()) => (delivers, None),
                Err(e) => {
                    tracing::error!(error = %e, "PostgreSQL batch writer: COMMIT failed");
                    // PostgreSQL's own error answer means it rolled the transaction back; any
                    // other failure (the connection lost) leaves the outcome unknown.
                    let why = Arc::from(e.to_string());
                    let f =
                        if e.as_database_error().is_some() { Failed::RolledBack(why) } else { Failed::Unknown(why) };
                    (delivers, Some(f))
                }
            },
            Some(e) => {
                tracing::error!(error = %e, "PostgreSQL batch writer: the batch is rolled back");
                let _ = tx.rollback().await;
                (delivers, Some(Failed::RolledBack(e)))
            }
        }
    })
}

/// Locks, first, the groups whose members the batch changes: by tenant, then in id order (the
/// database's), as a user delete locks the groups it leaves (`Store::delete_user`). Every
/// other lock a job takes comes after — its member checks take a `KEY SHARE` lock on each
/// member's row (`member_type`), so a member cannot be deleted under it — so two writes never
/// take the same two locks in opposite orders.
fn lock_groups<'a>(conn: &'a mut AnyConnection, jobs: &[Job]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for j in jobs {
        if let Order::Group(tenant, id) = &j.order {
            groups.entry(*tenant).or_default().push(id.clone());
        }
    }
    Box::pin(async move {
        for (tenant, ids) in groups {
            sqlx::query(
                "SELECT 1 AS x FROM scim_groups WHERE tenant_id = $1 \
                 AND id IN (SELECT value FROM json_array_elements_text(CAST($2 AS json))) ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(tenant)
            .bind(serde_json::Value::from(ids).to_string())
            .fetch_all(&mut *conn)
            .await?;
        }
        Ok(())
    })
}

/// The batch's end: announces the tenants pushed to, locks their rows in id order and bumps
/// their generations, then appends every journal row in job order, in one statement.
fn finish(conn: &mut AnyConnection, journal: Journal) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        if journal.rows.is_empty() {
            return Ok(());
        }
        let mut tenants: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &journal.rows {
            *tenants.entry(r.tenant_id).or_default() += i64::from(r.push);
        }
        // Delivered at commit, so it may come before the locks (not inside them).
        let ids: Vec<String> = tenants.keys().map(i64::to_string).collect();
        sqlx::query("SELECT pg_notify($1, t) FROM json_array_elements_text(CAST($2 AS json)) AS t")
            .bind(PUSH_CHANNEL)
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .execute(&mut *conn)
            .await?;
        for (tenant, pushes) in &tenants {
            sqlx::query("UPDATE tenants SET generation = generation + $2 WHERE id = $1")
                .bind(*tenant)
                .bind(*pushes)
                .execute(&mut *conn)
                .await?;
        }
        let rows: Vec<serde_json::Value> = journal
            .rows
            .iter()
            .map(|r| serde_json::json!([r.tenant_id, r.resource_type, r.resource_id, r.op, r.at, r.request_id]))
            .collect();
        sqlx::query(
            "INSERT INTO intent_journal (tenant_id, resource_type, resource_id, op, at, request_id) \
         SELECT CAST(e->>0 AS bigint), e->>1, e->>2, e->>3, e->>4, e->>5 \
         FROM json_array_elements(CAST($1 AS json)) WITH ORDINALITY AS j(e, n) ORDER BY n",
        )
        .bind(serde_json::Value::from(rows).to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}
