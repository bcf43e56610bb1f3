//! The reconciliation controller: level-triggered, per tenant, shaped like kube-runtime's. Trigger
//! sources (a push, cron drift repair, the daily purge, an operator, start-up) feed one queue
//! (`queue`); the runner (`runner`) takes a tenant off it and reconciles it (`reconcile`): under
//! the tenant's lease (`lease`) it gathers a plan of desired against actual state (`gather`,
//! planned by the pure `plan`), lets the safety valve decide what is applied, held or waits
//! (`safety`), and applies the rest with compare-and-set writes. Every run answers a `RunOutcome`
//! carrying its `Requeue`; the runner's one error policy decides a failed run's backoff.
//! `report` renders a plan for people.

mod gather;
mod lease;
pub mod plan;
mod queue;
mod reconcile;
pub mod report;
mod runner;
mod safety;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;

pub use self::gather::ComputedPlan;
pub use self::queue::Queue;
pub use self::reconcile::{Approval, Offboarded, Requeue, RunOutcome, RunStatus};
pub use self::safety::Hold;
use crate::domain::DesiredUser;
use crate::store::{Store, StoreError};

/// How many users a batch of the full run reads at a time (memory stays flat in tenant size).
const BATCH: i64 = 1000;
/// The most users one incremental run plans (more journaled: the next run takes the rest).
const INCREMENTAL_CAP: usize = 20_000;
/// How many rows (a user per role) a read of the users linked to a key range returns at most: a
/// range holds about `BATCH` of them, more only when SCIM users were deleted in bulk.
const LINKED_PAGE: i64 = 4 * BATCH;
/// How long a reconcile lease lasts before another process may take over the tenant; a run
/// renews it every `LEASE_RENEW` so a crashed replica's tenants move within this time.
const LEASE_SECS: i64 = 15;
const LEASE_RENEW: Duration = Duration::from_secs(5);
/// The longest wait before a failed run is tried again (100 ms doubling up to it). A failure
/// that lasts (a full disk, a database that is down) costs one failed run per tenant per
/// interval, and applying resumes within it once the fault has passed.
const RETRY_CAP: Duration = Duration::from_secs(15);
/// The window over which the safety valve adds up the controller's own deactivations and
/// deletions (not those a person approved or released).
const SAFETY_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
/// How long an incremental run waits for more pushes of the same burst.
const PUSH_GATHER: Duration = Duration::from_millis(5);
/// How many changes `apply` writes under one commit.
const APPLY_BATCH: usize = 256;

/// Why a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Push,
    Cron,
    Operator,
    Bindings,
    Purge,
    Startup,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Cron => "cron",
            Trigger::Operator => "operator",
            Trigger::Bindings => "bindings",
            Trigger::Purge => "purge",
            Trigger::Startup => "startup",
        }
    }
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plan changed since it was shown (fingerprint {shown}, now {current}); review the new plan")]
    StalePlan { shown: String, current: String },
    #[error("another process is reconciling this tenant")]
    Busy,
    #[error("the plan {fingerprint} was already applied by run {run_id} at {at}; nothing more to approve")]
    AlreadyApplied { fingerprint: String, run_id: String, at: String },
    #[error("{0}")]
    LostLease(&'static str),
    #[error("invalid stored desired state: {0}")]
    Desired(String),
}

/// What a plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunScope {
    #[default]
    Full,
    Incremental,
    /// The users a settled burst of destructive pushes named, judged whole.
    Burst,
    Snapshot,
}

impl RunScope {
    fn as_str(self) -> &'static str {
        match self {
            RunScope::Full => "full",
            RunScope::Incremental => "incremental",
            RunScope::Burst => "burst",
            RunScope::Snapshot => "snapshot",
        }
    }
}

/// What a run reconciles.
#[derive(Debug, Clone)]
pub enum Target {
    /// The whole tenant, streamed in key order.
    Full,
    /// The users the intent journal names since the last run.
    Incremental,
    /// An offline snapshot instead of the stored desired state (`plan --desired FILE`).
    Snapshot(Vec<DesiredUser>),
}

/// The controller: a work queue of tenants plus the logic of one run.
#[derive(Clone)]
pub struct Controller {
    store: Store,
    queue: Arc<Queue>,
    locks: Arc<Mutex<HashMap<i64, Arc<Mutex<()>>>>>,
    /// Leases this process holds: tenant → (fencing token, when last acquired or renewed). A
    /// lease is kept between runs (renewed when used), so a busy tenant's runs do not pay for
    /// taking and giving it back each time; it expires `LEASE_SECS` after its last use.
    leases: Arc<std::sync::Mutex<HashMap<i64, (i64, std::time::Instant)>>>,
    /// Set by `spawn`: a running controller keeps its leases between runs; a one-off one (a
    /// command, a test) gives each back after its run.
    keep_leases: Arc<std::sync::atomic::AtomicBool>,
    holder: String,
    /// Tenants with a whole-tenant run scheduled to look at their hold (`recheck_hold`), and
    /// when their last push came.
    rechecks: Arc<std::sync::Mutex<HashMap<i64, std::time::Instant>>>,
    /// The judgement armed for each tenant's open burst (`arm_judge`).
    judges: Arc<std::sync::Mutex<HashMap<i64, chrono::DateTime<chrono::Utc>>>>,
    /// Where the admin API is reached (`http://HOST:PORT`), for the approve command a held run
    /// logs.
    origin: Arc<std::sync::OnceLock<String>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("holder", &self.holder).finish_non_exhaustive()
    }
}

/// Parses a cron schedule; five fields (minute first) get a leading seconds field.
///
/// # Errors
/// When the expression is not a schedule.
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 { format!("0 {expr}") } else { expr.to_string() };
    cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron schedule {expr:?}: {e}"))
}

impl Controller {
    /// A controller over a store (nothing runs until `spawn`).
    pub fn new(store: Store) -> Controller {
        Controller {
            store,
            queue: Arc::new(Queue::default()),
            locks: Arc::default(),
            leases: Arc::default(),
            keep_leases: Arc::default(),
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            rechecks: Arc::default(),
            judges: Arc::default(),
            origin: Arc::default(),
        }
    }

    /// Sets where the admin API is reached (`http://HOST:PORT`), for the commands logs print.
    pub fn set_origin(&self, origin: String) {
        let _ = self.origin.set(origin);
    }

    /// Asks for a reconcile of a tenant; repeated wake-ups collapse. `full` asks for the whole
    /// tenant rather than the journal's delta.
    pub fn wake(&self, tenant_id: i64, trigger: Trigger, full: bool) {
        self.queue.add(tenant_id, trigger, full);
    }
}
