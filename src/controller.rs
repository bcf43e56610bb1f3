//! The reconciliation controller: level-triggered, per tenant. It reads the desired state (SCIM
//! users, groups, memberships, group→role bindings) and Moonborn's actual users and roles,
//! computes a plan with the pure `plan::plan`, and applies it with compare-and-set writes. The
//! same code path serves every trigger: a push, the cron drift-repair run, a binding change, an
//! operator, the daily purge.

pub mod plan;
mod queue;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Instrument as _;

use self::plan::{holders_for, order_by_email, plan_raw, Conflict, Scope};
pub use self::queue::Queue;
use crate::domain::{
    desired_user_from_str, fingerprint, ActualUser, Change, DesiredUser, Destructive, Judgement, ManagedBy, Status,
    Summary,
};
use crate::store::{Applied, Burst, BurstUpdate, ControllerState, HoldRecord, Store, StoreError, Tenant};

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
/// interval; a longer cap kept applying stopped for up to ~100 s after the fault had passed.
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
}

/// What `Controller::offboard` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offboarded {
    /// SCIM users and groups deleted from the desired state.
    pub scim_users: usize,
    pub scim_groups: usize,
    /// Users created by hand, disabled.
    pub disabled: usize,
    /// Moonborn users soft-deleted while offboarding (by its run or one the pushes woke).
    pub deleted: u64,
}

/// What a person allowed a run to apply beyond what the safety valve lets through.
#[derive(Debug, Clone, Copy)]
pub enum Approval<'a> {
    /// Nothing: the valve decides.
    None,
    /// The whole-tenant plan with this fingerprint, exactly as shown.
    Fingerprint(&'a str),
    /// Whatever the valve holds, once (an operator's release).
    Release,
}

impl Approval<'_> {
    fn given(self) -> bool {
        !matches!(self, Approval::None)
    }
}

/// A computed plan with what a report needs.
#[derive(Debug, Clone, Serialize)]
pub struct ComputedPlan {
    pub tenant: String,
    pub fingerprint: String,
    pub summary: Summary,
    pub changes: Vec<Change>,
    /// Email changes the plan cannot make (the email is held by a user that keeps it).
    pub conflicts: Vec<Conflict>,
    /// The journal position the plan covers.
    #[serde(skip)]
    pub journal_head: i64,
    /// The journal position it starts after (an incremental plan's).
    #[serde(skip)]
    pub journal_from: i64,
    /// An incremental plan stopped short of the journal's head (`INCREMENTAL_CAP`): another run
    /// follows at once.
    #[serde(skip)]
    pub truncated: bool,
    /// Set when the safety valve holds (or would hold) the destructive changes.
    pub held: Option<Hold>,
    /// Destructive changes that wait for the tenant's burst of destructive pushes to settle
    /// (then they are judged together); 0 when none wait.
    pub waiting: u64,
    /// When the waiting burst is judged at the latest (RFC 3339), when one waits.
    pub judged_by: Option<String>,
    /// What the plan covers.
    #[serde(skip)]
    pub kind: RunScope,
}

/// Why destructive changes are held.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub reason: String,
    pub fingerprint: String,
    /// The numbers behind the reason (none for an incremental run's look at a standing hold).
    pub judgement: Option<Judgement>,
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

/// What the safety valve lets a run do with its destructive changes.
enum Gate {
    Open,
    /// They wait for the burst of destructive pushes to settle.
    Wait,
    Hold(Hold),
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: String,
    pub applied: u64,
    /// Of those, deactivations and deletions.
    pub applied_destructive: u64,
    pub skipped_held: u64,
    pub stale: u64,
    pub plan: ComputedPlan,
}

impl RunOutcome {
    /// The destructive changes the run kept back: (held for an operator, waiting for a burst
    /// to settle).
    pub fn held_and_waiting(&self) -> (u64, u64) {
        if self.plan.waiting > 0 {
            (0, self.skipped_held)
        } else {
            (self.skipped_held, 0)
        }
    }

    /// What a release did, in one line.
    pub fn release_line(&self, slug: &str) -> String {
        format!(
            "released the hold of tenant {slug}: run {} applied {} changes ({} deactivations and deletions)",
            self.run_id, self.applied, self.applied_destructive
        )
    }
}

/// What a run reconciles.
#[derive(Debug, Clone)]
pub enum Scope2 {
    /// The whole tenant, streamed in key order.
    Full,
    /// The users the intent journal names since the last run.
    Incremental,
    /// An offline snapshot instead of the stored desired state (`plan --desired FILE`).
    Snapshot(Vec<DesiredUser>),
}

/// Counts one `reconcile` in the process's metrics: once, with how it ended.
struct RunMeter {
    trigger: Trigger,
    scope: &'static str,
    /// When the run took its lease (the duration excludes waiting for the tenant); `None` when
    /// it never did.
    started: Option<std::time::Instant>,
    recorded: bool,
}

impl RunMeter {
    fn new(trigger: Trigger, scope: &Scope2) -> RunMeter {
        let scope = match scope {
            Scope2::Full => "full",
            Scope2::Incremental => "incremental",
            Scope2::Snapshot(_) => "snapshot",
        };
        RunMeter { trigger, scope, started: None, recorded: false }
    }

    /// A run that ended with `status` (applied, held, failed, noop) after applying `applied`.
    fn ran(&mut self, status: &'static str, applied: u64) {
        let m = &*crate::metrics::METRICS;
        m.controller_runs
            .get_or_create(&crate::metrics::RunLabels { trigger: self.trigger.as_str(), scope: self.scope, status })
            .inc();
        if let Some(t) = self.started {
            m.controller_duration
                .get_or_create(&crate::metrics::ScopeLabel { scope: self.scope })
                .observe(t.elapsed().as_secs_f64());
        }
        m.controller_changes_applied.inc_by(applied);
        self.recorded = true;
    }

    /// A `reconcile` that ended with an error before a run outcome was counted.
    fn ended(&mut self, e: &ControllerError) {
        if !self.recorded {
            self.ran(
                match e {
                    ControllerError::Busy => "busy",
                    ControllerError::StalePlan { .. } => "stale_plan",
                    ControllerError::AlreadyApplied { .. } => "already_applied",
                    _ => "error",
                },
                0,
            );
        }
    }
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
    judges: Arc<std::sync::Mutex<HashMap<i64, chrono::DateTime<Utc>>>>,
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

    /// Starts the workers, the drift-repair schedule and the daily purge; wakes every tenant once.
    pub fn spawn(&self, workers: usize, drift: cron::Schedule, purge: cron::Schedule) {
        self.keep_leases.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..workers.max(1) {
            let c = self.clone();
            tokio::spawn(async move { c.work().await });
        }
        for (schedule, trigger) in [(drift, Trigger::Cron), (purge, Trigger::Purge)] {
            let c = self.clone();
            tokio::spawn(async move { c.tick(schedule, trigger).await });
        }
        let c = self.clone();
        tokio::spawn(async move {
            if let Ok(ts) = c.store.list_tenants().await {
                for t in ts {
                    c.wake(t.id, Trigger::Startup, true);
                }
            }
        });
    }

    /// Wakes the controller for pushes recorded by any replica (PostgreSQL `LISTEN` on
    /// `PUSH_CHANNEL`). After a reconnect every tenant is woken, in case a notification was
    /// missed while the connection was down.
    pub fn listen_for_pushes(&self, database_url: String) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                match sqlx::postgres::PgListener::connect(&database_url).await {
                    Ok(mut l) => {
                        if let Err(e) = l.listen(crate::store::PUSH_CHANNEL).await {
                            tracing::warn!(error = %e, "cannot LISTEN for pushes");
                        } else {
                            if !first {
                                if let Ok(ts) = c.store.list_tenants().await {
                                    for t in ts {
                                        c.wake(t.id, Trigger::Push, false);
                                    }
                                }
                            }
                            first = false;
                            loop {
                                match l.recv().await {
                                    Ok(n) => match n.payload().parse::<i64>() {
                                        Ok(tenant_id) => c.wake(tenant_id, Trigger::Push, false),
                                        Err(_) => tracing::warn!(payload = n.payload(), "unexpected push notification"),
                                    },
                                    Err(e) => {
                                        tracing::warn!(error = %e, "push notifications interrupted; reconnecting");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot connect to LISTEN for pushes"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn tick(&self, schedule: cron::Schedule, trigger: Trigger) {
        loop {
            let Some(next) = schedule.upcoming(Utc).next() else { return };
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            match self.store.list_tenants().await {
                Ok(ts) => {
                    for t in ts {
                        self.wake(t.id, trigger, true);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list tenants for a scheduled run"),
            }
        }
    }

    async fn work(&self) {
        // The last run of this worker was a capped part of a backlog.
        let mut after_backlog = false;
        loop {
            let (tenant_id, item) = self.queue.get().await;
            if !item.full {
                // Let a burst of pushes gather so one run (one commit) applies them all; the wait
                // is small against the push → applied target (p99 ≤ 50 ms).
                tokio::time::sleep(PUSH_GATHER).await;
                self.queue.absorb(tenant_id);
            }
            let tenant = self.store.tenant_by_id(tenant_id).await;
            let slug = tenant.as_ref().map_or_else(|_| format!("#{tenant_id}"), |t| t.slug.clone());
            let result = match tenant {
                Ok(tenant) => {
                    let scope = if item.full { Scope2::Full } else { Scope2::Incremental };
                    self.reconcile(&tenant, item.trigger, scope, Approval::None).await
                }
                Err(e) => Err(e.into()),
            };
            // A run that planned many users leaves memory to give back (and, capped, more
            // journal to read: it is queued again at once).
            // Not between the capped runs of one backlog (each would shrink the caches the next
            // one fills again): once, after its last run.
            let truncated = result.as_ref().is_ok_and(|o| o.plan.truncated);
            let big = item.full
                || (!truncated && (after_backlog || result.as_ref().is_ok_and(|o| o.plan.changes.len() >= 5_000)));
            after_backlog = truncated || (after_backlog && result.is_err());
            if let Ok(o) = &result {
                if o.plan.truncated && o.stale == 0 {
                    self.wake(tenant_id, item.trigger, false);
                }
            }
            match result {
                Ok(o) => {
                    // A run with stale changes keeps its backoff growing (it re-queued itself).
                    if o.stale == 0 {
                        self.queue.succeeded(tenant_id);
                    }
                    if o.plan.summary != Summary::default() {
                        tracing::info!(tenant = %slug, run_id = %o.run_id, trigger = item.trigger.as_str(),
                            status = %o.status, applied = o.applied, summary = %o.plan.summary.line(),
                            "reconcile finished");
                    }
                }
                Err(ControllerError::Busy) => {
                    // Another replica holds the tenant; it was woken too. Retry (within a lease
                    // renewal period) in case it dies.
                    let delay = self.queue.failed(tenant_id, item, LEASE_RENEW);
                    tracing::debug!(
                        tenant = %slug,
                        retry_in_ms = delay.as_millis() as u64,
                        "tenant busy on another replica"
                    );
                }
                Err(e) => {
                    let delay = self.queue.failed(tenant_id, item, RETRY_CAP);
                    tracing::warn!(tenant = %slug, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                }
            }
            self.queue.done(tenant_id);
            if big {
                self.store.release_memory().await;
            }
        }
    }

    async fn tenant_lock(&self, tenant_id: i64) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(tenant_id).or_default().clone()
    }

    /// Computes the plan for a tenant without applying anything.
    ///
    /// # Errors
    /// Database errors.
    pub async fn plan(&self, tenant: &Tenant, scope: Scope2) -> Result<ComputedPlan, ControllerError> {
        Ok(self.plan_inner(tenant, scope, false, false, None).await?.0)
    }

    /// The whole-tenant plan that `bindings` would cause in place of the tenant's own: a binding
    /// change previewed (nothing is stored).
    ///
    /// # Errors
    /// Database errors.
    pub async fn plan_with_bindings(
        &self,
        tenant: &Tenant,
        bindings: &crate::domain::Bindings,
    ) -> Result<ComputedPlan, ControllerError> {
        Ok(self.plan_inner(tenant, Scope2::Full, false, false, Some(bindings)).await?.0)
    }

    /// `plan`, with the controller state it read; with `renew`, the tenant's lease is renewed
    /// while a long plan is read; with `hold_now`, the plan is treated as held (a settled burst
    /// tripped the valve); with `bindings`, those instead of the tenant's.
    async fn plan_inner(
        &self,
        tenant: &Tenant,
        scope: Scope2,
        renew: bool,
        hold_now: bool,
        bindings: Option<&crate::domain::Bindings>,
    ) -> Result<(ComputedPlan, ControllerState), ControllerError> {
        let mut renewed = std::time::Instant::now();
        let keep_lease = |renewed: &mut std::time::Instant| {
            let due = renew && renewed.elapsed() >= LEASE_RENEW;
            if due {
                *renewed = std::time::Instant::now();
            }
            due
        };
        let mut state = self.store.controller_state(tenant.id).await?;
        let held_before = state.held_fingerprint.is_some();
        if hold_now && state.held_fingerprint.is_none() {
            // A settled burst tripped the valve: this plan is the one held.
            state.held_fingerprint = Some(String::new());
        }
        let state = state;
        let bindings = bindings.unwrap_or(&state.bindings);
        let mut head = self.store.journal_head(tenant.id).await?;
        let mut truncated = false;
        let now = Utc::now();
        // An incremental run finds the tenant's burst of destructive pushes settled: it judges
        // the whole burst (every user its pushes named, and those since).
        let kind = match &scope {
            Scope2::Full => RunScope::Full,
            Scope2::Snapshot(_) => RunScope::Snapshot,
            Scope2::Incremental => match &state.burst {
                Some(b) if !state.safety.enabled || judge_at(b, &state.safety) <= now => RunScope::Burst,
                _ => RunScope::Incremental,
            },
        };
        let journal_from = match (&state.burst, kind) {
            (Some(b), RunScope::Burst) => b.from_seq.min(state.applied_journal_seq),
            _ => state.applied_journal_seq,
        };
        let mut changes: Vec<Change> = Vec::new();
        let mut holders: HashMap<String, String> = HashMap::new();
        let mut touched: HashSet<String> = HashSet::new();
        let mut push = |(cs, hs): (Vec<Change>, HashMap<String, String>), changes: &mut Vec<Change>| {
            holders.extend(hs);
            for c in cs {
                if touched.insert(c.user_id.clone()) {
                    changes.push(c);
                }
            }
        };
        match scope {
            Scope2::Full => {
                // A merge of ordered range reads: each batch of desired users (SCIM-id order)
                // with the users linked to SCIM ids in the same key range, read while the
                // previous batch is planned. Linked users whose SCIM id is not in the batch have
                // lost their SCIM resource: the orphans, deleted or purged after every batch's
                // changes, in user-id order (as one pass over them would).
                let mut orphans: Vec<Change> = Vec::new();
                let no_live = HashSet::new();
                let mut ranges = read_ranges(self.store.clone(), tenant.id);
                let mut reached_end = false;
                while let Some(r) = ranges.recv().await {
                    let mut r = r?;
                    reached_end = r.more.is_none();
                    let groups = &mut r.groups;
                    let desired = desired_users(
                        r.desired.iter().map(|(id, doc)| (id, doc, groups.remove(id).unwrap_or_default())),
                        bindings,
                    )?;
                    let in_batch: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
                    let mut linked: Vec<ActualUser> = Vec::new();
                    let (mut page, mut cursor) = (std::mem::take(&mut r.linked), r.linked_more.take());
                    loop {
                        let (mine, gone): (Vec<ActualUser>, Vec<ActualUser>) =
                            page.into_iter().partition(|a| a.scim_id.as_deref().is_some_and(|s| in_batch.contains(s)));
                        linked.extend(mine);
                        let gone: Vec<ActualUser> = gone
                            .into_iter()
                            .filter(|a| a.managed_by == ManagedBy::Scim && a.status != Status::Purged)
                            .collect();
                        orphans.extend(plan_raw(&[], &gone, &no_live, now, Scope::Full));
                        // More linked users in this range than a page: SCIM resources deleted
                        // in bulk (paged, so memory stays flat however many).
                        let Some(c) = cursor.take() else { break };
                        (page, cursor) =
                            self.store.linked_in_range(tenant.id, Some(&c), r.more.as_deref(), LINKED_PAGE).await?;
                        if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                            return Err(ControllerError::Busy);
                        }
                    }
                    drop(in_batch);
                    if !desired.is_empty() {
                        let cs =
                            self.plan_candidates(tenant.id, &desired, linked, Scope::Candidates, now, true).await?;
                        push(cs, &mut changes);
                    }
                    if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                        return Err(ControllerError::Busy);
                    }
                }
                if !reached_end {
                    // A reader task ended without its last range (it panicked, or the runtime is
                    // stopping): this is not a whole-tenant plan.
                    return Err(StoreError::Invalid("the full run's range reads stopped early".into()).into());
                }
                let unlinked = self.store.unlinked_scim_users(tenant.id).await?;
                orphans.extend(plan_raw(&[], &unlinked, &no_live, now, Scope::Full));
                orphans.sort_by(|a, b| a.user_id.cmp(&b.user_id));
                push((orphans, HashMap::new()), &mut changes);
            }
            Scope2::Incremental => {
                let mut ids: Vec<String> = Vec::new();
                let mut seen = HashSet::new();
                let mut after = journal_from;
                while after < head {
                    let rows = self.store.journal(tenant.id, after, 5000).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.seq;
                    for r in rows {
                        // Member changes are journaled per member; only a group's rename
                        // re-evaluates all its members (cost follows the change).
                        let named = match (r.resource_type.as_str(), r.op.as_str()) {
                            ("Group", "rename") => self.store.group_member_ids(tenant.id, &r.resource_id).await?,
                            ("Group", _) => continue,
                            _ => vec![r.resource_id],
                        };
                        ids.extend(named.into_iter().filter(|i| seen.insert(i.clone())));
                    }
                    // A long journal (an initial sync) is reconciled in runs of bounded size,
                    // so a run's memory does not grow with the backlog.
                    // (Not a burst's judgement: a burst is judged whole.)
                    if ids.len() >= INCREMENTAL_CAP && after < head && kind != RunScope::Burst {
                        head = after;
                        truncated = true;
                        break;
                    }
                }
                for chunk in ids.chunks(BATCH as usize) {
                    let rows = self.store.desired_by_ids(tenant.id, chunk).await?;
                    let desired = desired_users(rows, bindings)?;
                    let cs = self.plan_batch(tenant.id, &desired, chunk, Scope::Full, now, true).await?;
                    push(cs, &mut changes);
                    // (A burst's judgement is not capped: a long one renews the lease as it goes.)
                    if keep_lease(&mut renewed) && self.lease(tenant.id, true).await?.is_none() {
                        return Err(ControllerError::Busy);
                    }
                }
            }
            Scope2::Snapshot(desired) => {
                for chunk in desired.chunks(BATCH as usize) {
                    // The snapshot is the whole desired state: stored SCIM ids are not live.
                    let cs = self.plan_batch(tenant.id, chunk, &[], Scope::Candidates, now, false).await?;
                    push(cs, &mut changes);
                }
                // Everything SCIM-managed that the snapshot does not name is deleted.
                let named: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
                let mut after = String::new();
                loop {
                    let users = self.store.scim_users_after(tenant.id, &after, BATCH).await?;
                    let Some(last) = users.last() else { break };
                    after = last.id.clone();
                    let gone: Vec<_> =
                        users.into_iter().filter(|u| u.scim_id.as_deref().is_none_or(|s| !named.contains(s))).collect();
                    let cs = plan_raw(&[], &gone, &HashSet::new(), now, Scope::Full);
                    push((cs, HashMap::new()), &mut changes);
                }
            }
        }
        let (changes, conflicts) = order_by_email(changes, &holders);
        let summary = Summary::of(&changes);
        let fp = fingerprint(&tenant.slug, &changes, head);
        let gate = self.gate(tenant, &state, kind, &summary, &fp, now).await?;
        let (held, waiting) = match gate {
            Gate::Open => (None, 0),
            Gate::Wait => (None, summary.destructive()),
            Gate::Hold(h) => (Some(h), 0),
        };
        let judged_by = match (&state.burst, waiting) {
            (Some(b), _) => Some(crate::domain::fmt_time(judge_at(b, &state.safety))),
            (None, n) if n > 0 => {
                let first = Burst {
                    first_at: crate::domain::fmt_time(now),
                    last_at: crate::domain::fmt_time(now),
                    from_seq: 0,
                };
                Some(crate::domain::fmt_time(judge_at(&first, &state.safety)))
            }
            _ => None,
        };
        let plan = ComputedPlan {
            tenant: tenant.slug.clone(),
            fingerprint: fp,
            summary,
            changes,
            conflicts,
            journal_head: head,
            journal_from,
            truncated,
            held,
            waiting,
            judged_by: judged_by.filter(|_| waiting > 0),
            kind,
        };
        let mut state = state;
        if !held_before {
            // (Only this plan treated the tenant as held.)
            state.held_fingerprint = None;
        }
        Ok((plan, state))
    }

    /// The safety valve's decision on a plan's destructive changes (deactivations, deletions):
    /// - none, or the valve is off: applied;
    /// - the tenant is held: held (the hold lasts until nothing held is left, or a person
    ///   approves or releases it);
    /// - a push's, or any run's while a burst of destructive pushes is open: they wait for the
    ///   burst to settle;
    /// - otherwise (a settled burst, a whole-tenant run): judged with the destructive changes
    ///   applied in the last `SAFETY_WINDOW`, over the tenant's SCIM users before them.
    async fn gate(
        &self,
        tenant: &Tenant,
        state: &ControllerState,
        kind: RunScope,
        summary: &Summary,
        fp: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<Gate, ControllerError> {
        let waiting = Destructive::of(summary);
        if waiting.total() == 0 || !state.safety.enabled {
            return Ok(Gate::Open);
        }
        let held = state.held_fingerprint.is_some();
        if held && kind == RunScope::Incremental {
            // A push's part of a standing hold: the whole-tenant runs keep the reason current.
            let reason = state.held_reason.clone().unwrap_or_else(|| "held by the safety valve".into());
            return Ok(Gate::Hold(Hold { reason, fingerprint: fp.to_string(), judgement: None }));
        }
        if !held && (kind == RunScope::Incremental || (kind == RunScope::Full && state.burst.is_some())) {
            return Ok(Gate::Wait);
        }
        let since = crate::domain::fmt_time(now - SAFETY_WINDOW);
        let (deactivated, deleted) = self.store.recent_destructive(tenant.id, &since).await?;
        let recent = Destructive { deactivate: deactivated.max(0) as u64, delete: deleted.max(0) as u64 };
        let users = self.store.scim_user_count(tenant.id).await?.max(0) as u64;
        let j = state.safety.judge(waiting, recent, users);
        if !held && !j.trips {
            return Ok(Gate::Open);
        }
        let mut reason = j.reason(SAFETY_WINDOW.num_minutes());
        if !j.trips {
            // Held before, and not all of it reverted: the hold stays until nothing is left.
            reason.push_str(" (under the threshold now; held until approved, released or reverted in full)");
        }
        Ok(Gate::Hold(Hold { reason, fingerprint: fp.to_string(), judgement: Some(j) }))
    }

    /// Plans a batch of desired users against the actual users that could match them.
    /// `named` are SCIM ids (named by the journal) whose linked users are candidates too.
    /// `stored_is_live`: whether SCIM ids in the stored desired state count as live (not when
    /// planning against an offline snapshot).
    async fn plan_batch(
        &self,
        tenant_id: i64,
        desired: &[DesiredUser],
        named: &[String],
        scope: Scope,
        now: chrono::DateTime<Utc>,
        stored_is_live: bool,
    ) -> Result<(Vec<Change>, HashMap<String, String>), ControllerError> {
        let mut scim_ids: Vec<String> = desired.iter().map(|d| d.scim_id.clone()).collect();
        scim_ids.extend(named.iter().cloned());
        let candidates = self.store.actual_candidates(tenant_id, &scim_ids, &[], &[]).await?;
        self.plan_candidates(tenant_id, desired, candidates, scope, now, stored_is_live).await
    }

    /// `plan_batch` with the users linked to the batch's SCIM ids (and any named) already read.
    async fn plan_candidates(
        &self,
        tenant_id: i64,
        desired: &[DesiredUser],
        mut candidates: Vec<ActualUser>,
        scope: Scope,
        now: chrono::DateTime<Utc>,
        stored_is_live: bool,
    ) -> Result<(Vec<Change>, HashMap<String, String>), ControllerError> {
        // Users linked by SCIM id first; look up by email or externalId only the desired users
        // that are not linked yet or whose email changes (none, in the steady state).
        let linked: HashMap<&str, &str> =
            candidates.iter().filter_map(|a| a.scim_id.as_deref().map(|s| (s, a.email.as_str()))).collect();
        let (mut emails, mut exts) = (Vec::new(), Vec::new());
        for d in desired {
            match linked.get(d.scim_id.as_str()) {
                Some(email) if email.eq_ignore_ascii_case(&d.user_name) => {}
                Some(_) => emails.push(crate::scim::validate::identity_key(&d.user_name)),
                None => {
                    emails.push(crate::scim::validate::identity_key(&d.user_name));
                    exts.extend(d.external_id.clone());
                }
            }
        }
        drop(linked);
        if !emails.is_empty() || !exts.is_empty() {
            let more = self.store.actual_candidates(tenant_id, &[], &emails, &exts).await?;
            let known: HashSet<String> = candidates.iter().map(|a| a.id.clone()).collect();
            candidates.extend(more.into_iter().filter(|a| !known.contains(&a.id)));
        }
        let in_batch: HashSet<&str> = desired.iter().map(|d| d.scim_id.as_str()).collect();
        let others: Vec<String> =
            candidates.iter().filter_map(|a| a.scim_id.clone()).filter(|s| !in_batch.contains(s.as_str())).collect();
        let live: HashSet<String> = if stored_is_live {
            self.store.existing_scim_ids(tenant_id, &others).await?.into_iter().collect()
        } else {
            HashSet::new()
        };
        let changes = plan_raw(desired, &candidates, &live, now, scope);
        let holders = holders_for(&changes, &candidates);
        Ok((changes, holders))
    }

    /// Reconciles a tenant now: plans, applies (minus what the safety valve holds or keeps
    /// waiting), records the run. With an approval, destructive changes are applied too: an
    /// approved fingerprint must still be the whole-tenant plan's.
    ///
    /// # Errors
    /// `StalePlan` when an approved fingerprint no longer matches (`AlreadyApplied` when a run
    /// applied it); `Busy` when another process holds the tenant's lease; database errors.
    pub async fn reconcile(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        scope: Scope2,
        approval: Approval<'_>,
    ) -> Result<RunOutcome, ControllerError> {
        let mut meter = RunMeter::new(trigger, &scope);
        let lock = self.tenant_lock(tenant.id).await;
        let _guard = lock.lock().await;
        let fence = match self.lease(tenant.id, false).await {
            Ok(Some(fence)) => fence,
            Ok(None) => {
                meter.ended(&ControllerError::Busy);
                return Err(ControllerError::Busy);
            }
            Err(e) => {
                meter.ended(&e);
                return Err(e);
            }
        };
        meter.started = Some(std::time::Instant::now());
        let span = tracing::info_span!(
            "reconcile",
            tenant = %tenant.slug,
            trigger = trigger.as_str(),
            run_id = tracing::field::Empty
        );
        let result = self.reconcile_locked(tenant, trigger, scope, approval, fence, &mut meter).instrument(span).await;
        if let Err(e) = &result {
            meter.ended(e);
        }
        if !self.keep_leases.load(std::sync::atomic::Ordering::SeqCst) {
            self.forget_lease(tenant.id);
            if let Err(e) = self.store.release_lease(tenant.id, &self.holder).await {
                tracing::warn!(tenant = %tenant.slug, error = %e, "cannot release the reconcile lease");
            }
        } else if result.is_err() {
            self.forget_lease(tenant.id);
        }
        result
    }

    /// Offboards a tenant (`tenant delete`, `DELETE /v1/admin/tenants/{slug}`): marks it deleted
    /// and revokes its tokens (SCIM answers 401 from then on), deletes its SCIM users and groups
    /// from the desired state as an IdP's DELETEs would (journaled, one at a time), disables the
    /// users created by hand in Moonborn (their sessions end), then runs the whole tenant: every
    /// SCIM-provisioned user is soft-deleted, and purged by the purge schedule after the grace
    /// period. The operator's confirmation stands for the safety valve's approval: what it holds
    /// is released. Running it again after an interruption finishes the work.
    ///
    /// # Errors
    /// As `reconcile`; `Busy` when another process runs the tenant (run it again).
    pub async fn offboard(&self, tenant: &Tenant, actor: &str) -> Result<Offboarded, ControllerError> {
        self.store.mark_tenant_deleted(tenant.id, actor).await?;
        let live_before = self.store.scim_user_count(tenant.id).await?;
        let request_id = format!("offboard-{}", uuid::Uuid::new_v4());
        let (mut users, mut groups, mut disabled) = (0, 0, 0);
        // Pushes that authenticated before the tokens were revoked (a token is trusted for
        // `AUTH_CACHE_TTL` on other processes) may still land: pass again, after that time,
        // until a pass finds nothing.
        for pass in 0..10 {
            if pass > 0 {
                tokio::time::sleep(crate::store::AUTH_CACHE_TTL + std::time::Duration::from_millis(500)).await;
            }
            let (u, g, manual) = self.store.offboarding_work(tenant.id).await?;
            if pass > 0 && u.is_empty() && g.is_empty() && manual.is_empty() {
                break;
            }
            let now = crate::domain::fmt_time(Utc::now());
            let intent = crate::store::Intent { tenant_id: tenant.id, request_id: &request_id, now: &now };
            for id in &g {
                match self.store.delete_group(&intent, id, None).await {
                    Ok(()) | Err(StoreError::NotFound) => groups += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            for id in &u {
                match self.store.delete_user(&intent, id, None).await {
                    Ok(()) | Err(StoreError::NotFound) => users += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            let edit = crate::store::UserEdit { status: Some(Status::Disabled), ..Default::default() };
            for id in &manual {
                match self.store.edit_user(tenant.id, id, &edit).await {
                    Ok(()) => disabled += 1,
                    Err(crate::store::HandError::Store(e)) => return Err(e.into()),
                    // Gone or changed meanwhile: nothing to disable.
                    Err(_) => {}
                }
            }
        }
        let o = self.reconcile(tenant, Trigger::Operator, Scope2::Full, Approval::None).await?;
        if o.skipped_held > 0 {
            self.release(tenant).await?;
        }
        // Counted in the tables, not from this run alone: the pushes above also wake other runs
        // (a PostgreSQL notification, another replica) that delete some of the users first.
        let live_after = self.store.scim_user_count(tenant.id).await?;
        let deleted = u64::try_from(live_before - live_after).unwrap_or(0);
        Ok(Offboarded { scim_users: users, scim_groups: groups, disabled, deleted })
    }

    /// An operator's release: what the safety valve holds is applied, once, by a whole-tenant
    /// run (answered). `None` when the tenant holds nothing: no run, the release audited.
    ///
    /// # Errors
    /// As `reconcile`.
    pub async fn release(&self, tenant: &Tenant) -> Result<Option<RunOutcome>, ControllerError> {
        let o = self.reconcile(tenant, Trigger::Operator, Scope2::Full, Approval::Release).await?;
        if o.status == "nothing_held" {
            self.store.audit_empty_release(tenant.id, "operator").await?;
            return Ok(None);
        }
        Ok(Some(o))
    }

    /// The fencing token of this process's lease on a tenant: the cached one while it is fresh
    /// (and `renew` is false), else taken or renewed in the database. `None`: another process
    /// holds it.
    async fn lease(&self, tenant_id: i64, renew: bool) -> Result<Option<i64>, ControllerError> {
        if !renew {
            let cache = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((fence, at)) = cache.get(&tenant_id) {
                if at.elapsed() < LEASE_RENEW {
                    return Ok(Some(*fence));
                }
            }
        }
        let got = self.store.acquire_lease(tenant_id, &self.holder, LEASE_SECS).await?;
        let mut cache = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match got {
            Some(f) => {
                cache.insert(tenant_id, (f, std::time::Instant::now()));
            }
            None => {
                cache.remove(&tenant_id);
            }
        }
        Ok(got)
    }

    fn forget_lease(&self, tenant_id: i64) {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(&tenant_id);
    }

    /// Gives back every lease this process holds (a command that reconciled and exits, or a
    /// server shutting down), so other processes need not wait for them to expire.
    pub async fn release_leases(&self) {
        let held: Vec<i64> = self.leases.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(t, _)| t).collect();
        for t in held {
            if let Err(e) = self.store.release_lease(t, &self.holder).await {
                let slug = self.store.tenant_by_id(t).await.map_or_else(|_| format!("#{t}"), |x| x.slug);
                tracing::warn!(tenant = %slug, error = %e, "cannot release the reconcile lease");
            }
        }
    }

    async fn reconcile_locked(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        scope: Scope2,
        approval: Approval<'_>,
        mut fence: i64,
        meter: &mut RunMeter,
    ) -> Result<RunOutcome, ControllerError> {
        let approved = approval.given();
        let scope = if approved { Scope2::Full } else { scope };
        let (mut p, state) = self.plan_inner(tenant, scope, true, false, None).await?;
        if let Approval::Fingerprint(fp) = approval {
            if fp != p.fingerprint {
                if let Some((run_id, at)) = self.store.applied_run_with_fingerprint(tenant.id, fp).await? {
                    return Err(ControllerError::AlreadyApplied { fingerprint: fp.to_string(), run_id, at });
                }
                return Err(ControllerError::StalePlan { shown: fp.to_string(), current: p.fingerprint });
            }
        }
        if matches!(approval, Approval::Release) && state.held_fingerprint.is_none() {
            // Decided under the lease: a hold that ended meanwhile (the IdP reverted) must not
            // let a new mass change through unjudged.
            meter.ran("noop", 0);
            let run_id = String::new();
            return Ok(RunOutcome {
                run_id,
                status: "nothing_held".into(),
                applied: 0,
                applied_destructive: 0,
                skipped_held: 0,
                stale: 0,
                plan: p,
            });
        }
        if approved {
            // What a person approved or released is applied whole: nothing of it is held back.
            p.held = None;
            p.waiting = 0;
            p.judged_by = None;
        }
        let was_held = state.held_fingerprint.is_some();
        // A settled burst over the threshold: the hold begins, and it stands above the
        // whole-tenant plan (what an operator reviews and approves), computed now.
        if !approved && p.kind == RunScope::Burst && p.held.is_some() {
            let progress = crate::store::Progress {
                tenant_id: tenant.id,
                journal_seq: state.applied_journal_seq,
                full_run_at: None,
                burst: BurstUpdate::Close,
            };
            self.store.set_progress(&progress).await?;
            p = self.plan_inner(tenant, Scope2::Full, true, true, None).await?.0;
            meter.scope = "burst";
        }
        let full = p.kind == RunScope::Full;
        if meter.scope != "burst" {
            meter.scope = p.kind.as_str();
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("run_id", run_id.as_str());
        let burst = match p.kind {
            _ if approved || !state.safety.enabled => BurstUpdate::Close,
            RunScope::Burst => BurstUpdate::Close,
            _ if p.waiting > 0 => BurstUpdate::Defer {
                from_seq: p.journal_from,
                push: p.kind == RunScope::Incremental,
                at: crate::domain::fmt_time(Utc::now()),
            },
            _ => BurstUpdate::Keep,
        };
        // A whole-tenant run of a held tenant that holds nothing more ends the hold.
        let ends_hold = was_held && (approved || (full && p.held.is_none()));
        if was_held && !approved && p.kind == RunScope::Incremental {
            // Only a whole-tenant run can tell whether anything held is left (a push may have
            // reverted the last of it, and then this run has nothing to do): one follows once
            // the pushes settle.
            self.recheck_hold(tenant.id, &state);
        }
        if p.changes.is_empty() && !approved && !ends_hold {
            // Nothing to do: no run row, just the progress mark.
            let progress = crate::store::Progress {
                tenant_id: tenant.id,
                journal_seq: p.journal_head,
                full_run_at: full.then(crate::domain::now),
                burst,
            };
            let open = burst_after(state.burst.as_ref(), &progress.burst);
            self.store.set_progress(&progress).await?;
            if let Some(b) = open {
                self.arm_judge(tenant.id, judge_at(&b, &state.safety));
            }
            meter.ran("noop", 0);
            return Ok(RunOutcome {
                run_id,
                status: "noop".into(),
                applied: 0,
                applied_destructive: 0,
                skipped_held: 0,
                stale: 0,
                plan: p,
            });
        }
        self.store.start_run(tenant.id, &run_id, trigger.as_str()).await?;
        // Changes a person approved or released are the person's (and not counted by the
        // safety valve's window).
        let actor = if approved { "operator" } else { "controller" };
        let keep_back = !approved && (p.held.is_some() || p.waiting > 0);
        let (mut applied, mut applied_destructive, mut skipped, mut stale) = (0u64, 0u64, 0u64, 0u64);
        let mut failure = None;
        // Renew before writing when planning took long, then every LEASE_RENEW.
        let mut renewed = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant.id)
            .map_or(std::time::Instant::now() - LEASE_RENEW, |(_, at)| *at);
        let todo: Vec<&Change> = p
            .changes
            .iter()
            .filter(|c| {
                let kept = keep_back && c.kind.is_destructive();
                skipped += u64::from(kept);
                !kept
            })
            .collect();
        // Changes are written in batches, each under one commit, in plan order.
        for batch in todo.chunks(APPLY_BATCH) {
            if renewed.elapsed() >= LEASE_RENEW {
                match self.lease(tenant.id, true).await? {
                    Some(f) => fence = f,
                    None => {
                        failure = Some("lost the reconcile lease".to_string());
                        break;
                    }
                }
                renewed = std::time::Instant::now();
            }
            let f = crate::store::Fence { holder: &self.holder, token: fence };
            match self.store.apply_batch(tenant.id, &run_id, actor, batch, &crate::domain::now(), Some(f)).await {
                Ok(results) => {
                    for (r, c) in results.into_iter().zip(batch) {
                        match r {
                            Applied::Done => {
                                applied += 1;
                                applied_destructive += u64::from(c.kind.is_destructive());
                            }
                            Applied::Stale => stale += 1,
                            Applied::LostLease => {
                                failure = Some("another process took the reconcile lease".to_string())
                            }
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let status = match (&failure, &p.held, p.waiting) {
            (Some(_), _, _) => "failed",
            (None, Some(_), _) if !approved => "held",
            (None, _, n) if n > 0 && !approved => "waiting",
            (None, _, _) => "applied",
        };
        let hold_note = if ends_hold {
            Some(match approval {
                Approval::Fingerprint(_) => "hold ended: an operator approved the plan",
                Approval::Release => "hold ended: an operator released the held changes",
                Approval::None if !state.safety.enabled => "hold ended: the safety valve was switched off",
                Approval::None => "hold ended: nothing held is left (the IdP reverted the held changes)",
            })
        } else {
            None
        };
        let summary = json!({
            "planned": p.summary,
            "applied": applied,
            "held": if p.held.is_some() && !approved { skipped } else { 0 },
            "waiting": if p.waiting > 0 && !approved { skipped } else { 0 },
            "stale": stale,
            "line": p.summary.line(),
            "hold": p.held.as_ref().filter(|_| !approved).map(|h| h.reason.as_str()).or(hold_note),
        });
        // Stale changes are re-planned by the next run; only a clean run marks the journal done.
        let burst_after = burst_after(state.burst.as_ref(), &burst);
        let progress = match (&failure, stale) {
            (None, 0) => Some(crate::store::Progress {
                tenant_id: tenant.id,
                journal_seq: p.journal_head,
                full_run_at: full.then(crate::domain::now),
                burst,
            }),
            // The journal stays where it was (stale changes are re-planned), but what was
            // deferred is recorded: its burst must still be judged.
            (None, _) => Some(crate::store::Progress {
                tenant_id: tenant.id,
                journal_seq: state.applied_journal_seq,
                full_run_at: None,
                burst,
            }),
            (Some(_), _) => None,
        };
        self.store
            .finish_run(&run_id, status, Some(&summary), Some(&p.fingerprint), failure.as_deref(), progress.as_ref())
            .await?;
        // Counted once its row says how it ended (a failed run applied what it did before failing).
        meter.ran(status, applied);
        if let Some(f) = failure {
            return Err(ControllerError::Store(StoreError::Invalid(f)));
        }
        if let (Some(h), false) = (&p.held, approved) {
            if p.kind != RunScope::Incremental {
                self.hold(tenant, h, &p.summary, state.held_fingerprint.as_deref()).await?;
            }
        }
        if ends_hold {
            let (actor, how) = match approval {
                Approval::Fingerprint(_) => ("operator", "approved"),
                Approval::Release => ("operator", "released"),
                Approval::None if !state.safety.enabled => ("controller", "disabled"),
                Approval::None => ("controller", "reverted"),
            };
            if self.store.set_hold(tenant, None, actor, how).await? {
                tracing::info!(tenant = %tenant.slug, run_id = %run_id, how, "{}", hold_note.unwrap_or_default());
            }
            crate::metrics::METRICS.held(&tenant.slug, None);
        }
        let open = if progress.is_some() { burst_after } else { state.burst.clone() };
        if let Some(b) = open {
            let at = judge_at(&b, &state.safety);
            if p.waiting > 0 {
                tracing::info!(
                    tenant = %tenant.slug, run_id = %run_id, waiting = p.waiting, judged_by = %crate::domain::fmt_time(at),
                    "destructive changes wait for the burst of pushes to settle"
                );
            }
            self.arm_judge(tenant.id, at);
        }
        if stale > 0 {
            // Re-planned soon, with backoff: a change that stays stale must not spin.
            let item = queue::Item { trigger: Trigger::Push, full: false };
            self.queue.failed(tenant.id, item, Duration::from_secs(30));
        }
        Ok(RunOutcome {
            run_id,
            status: status.into(),
            applied,
            applied_destructive,
            skipped_held: skipped,
            stale,
            plan: p,
        })
    }

    /// Records (or refreshes) the tenant's hold over a plan; logs a hold that begins or moves
    /// to a new plan at WARN, with the command that approves it. Answers whether it began.
    /// `before`: the fingerprint the tenant was held at when the run read its state.
    async fn hold(
        &self,
        tenant: &Tenant,
        h: &Hold,
        summary: &Summary,
        before: Option<&str>,
    ) -> Result<bool, ControllerError> {
        let d = Destructive::of(summary);
        let rec = HoldRecord {
            fingerprint: h.fingerprint.clone(),
            reason: h.reason.clone(),
            destructive: d,
            scim_users: h.judgement.map_or(0, |j| j.scim_users),
        };
        let began = self.store.set_hold(tenant, Some(&rec), "controller", "held").await?;
        crate::metrics::METRICS.held(&tenant.slug, Some(d.total()));
        if before != Some(h.fingerprint.as_str()) {
            let origin = self.origin.get().map_or("http://HOST", String::as_str);
            tracing::warn!(
                tenant = %tenant.slug,
                deactivate = d.deactivate,
                delete = d.delete,
                fingerprint = %h.fingerprint,
                reason = %h.reason,
                approve = %format!("moonborn-scim approve --tenant {} {}", tenant.slug, h.fingerprint),
                approve_http = %format!(
                    "curl -X POST -H \"Authorization: Bearer $MOONBORN_ADMIN_TOKEN\" {origin}/v1/admin/tenants/{}/plan/{}/approve",
                    tenant.slug, h.fingerprint
                ),
                "{}",
                if began { "safety valve holds destructive changes for approval" } else { "held plan changed" }
            );
        }
        Ok(began)
    }

    /// Wakes a tenant (an incremental run) at `at`: a burst's judgement. Every run that leaves
    /// a burst open arms one (so a restart, another replica's run or a changed setting re-arms
    /// it); one timer a tenant, the earliest.
    fn arm_judge(&self, tenant_id: i64, at: chrono::DateTime<Utc>) {
        {
            let mut armed = self.judges.lock().unwrap_or_else(|e| e.into_inner());
            match armed.get(&tenant_id) {
                Some(t) if *t <= at => return,
                _ => {
                    armed.insert(tenant_id, at);
                }
            }
        }
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        let c = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let mut armed = c.judges.lock().unwrap_or_else(|e| e.into_inner());
                if armed.get(&tenant_id) == Some(&at) {
                    armed.remove(&tenant_id);
                }
            }
            c.queue.add(tenant_id, Trigger::Push, false);
        });
    }

    /// Schedules one whole-tenant run of a held tenant once its pushes have been quiet for the
    /// settle time (at least a second), so a hold whose changes the IdP reverted ends; one waits
    /// per tenant, and every push moves it later.
    fn recheck_hold(&self, tenant_id: i64, state: &ControllerState) {
        let now = std::time::Instant::now();
        let quiet = Duration::from_millis(state.safety.settle_ms).max(Duration::from_secs(1));
        if self.rechecks.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant_id, now).is_some() {
            return;
        }
        let c = self.clone();
        tokio::spawn(async move {
            loop {
                let last = c.rechecks.lock().unwrap_or_else(|e| e.into_inner()).get(&tenant_id).copied();
                let Some(last) = last else { return };
                let due = last + quiet;
                if std::time::Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                c.rechecks.lock().unwrap_or_else(|e| e.into_inner()).remove(&tenant_id);
                c.wake(tenant_id, Trigger::Push, true);
                return;
            }
        });
    }
}

/// The tenant's burst once a run's update is written.
fn burst_after(before: Option<&Burst>, update: &BurstUpdate) -> Option<Burst> {
    match update {
        BurstUpdate::Keep => before.cloned(),
        BurstUpdate::Close => None,
        BurstUpdate::Defer { from_seq, push, at } => Some(match before {
            Some(b) => Burst { last_at: if *push { at.clone() } else { b.last_at.clone() }, ..b.clone() },
            None => Burst { first_at: at.clone(), last_at: at.clone(), from_seq: *from_seq },
        }),
    }
}

/// When a burst of destructive pushes is judged: `settle` after its last destructive push, and
/// at most `max_wait` after its first.
fn judge_at(b: &Burst, s: &crate::domain::Safety) -> chrono::DateTime<Utc> {
    let at =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| Utc::now());
    let settle = at(&b.last_at) + chrono::Duration::milliseconds(s.settle_ms as i64);
    let max = at(&b.first_at) + chrono::Duration::milliseconds(s.max_wait_ms as i64);
    settle.min(max)
}

/// One key range of a full run: a batch of desired users (SCIM id, stored document), their
/// groups' displayNames, and the users linked to a SCIM id in the same range.
struct RangeRead {
    desired: Vec<(String, String)>,
    groups: HashMap<String, Vec<String>>,
    /// The first page of them, and where the rest of the range starts when there is more.
    linked: Vec<ActualUser>,
    linked_more: Option<String>,
    /// Where the next range starts; `None` when this one reached the end of the key space.
    more: Option<String>,
}

/// The desired users of stored rows: (SCIM id, document as stored, names of its groups).
fn desired_users<I: AsRef<str>, D: AsRef<str>>(
    rows: impl IntoIterator<Item = (I, D, Vec<String>)>,
    bindings: &crate::domain::Bindings,
) -> Result<Vec<DesiredUser>, StoreError> {
    rows.into_iter()
        .map(|(id, doc, groups)| desired_user_from_str(id.as_ref(), doc.as_ref(), &groups, bindings))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Reads a whole tenant's key ranges in order, as a two-stage pipeline so both cores work: one
/// task reads the batches of desired users (each batch's last SCIM id is where the next starts),
/// another reads each batch's groups and linked users. Channels of two keep memory bounded to a
/// few batches; dropping the receiver stops both tasks. A short batch is the last: its range of
/// linked users is open-ended, so the users linked to SCIM ids after the last desired one are
/// read too.
fn read_ranges(store: Store, tenant_id: i64) -> tokio::sync::mpsc::Receiver<Result<RangeRead, StoreError>> {
    type Desired = (Option<String>, Vec<(String, String)>, Option<String>);
    let (dtx, mut drx) = tokio::sync::mpsc::channel::<Result<Desired, StoreError>>(2);
    let (rtx, rrx) = tokio::sync::mpsc::channel(2);
    let s = store.clone();
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let read = s.desired_docs_after(tenant_id, after.as_deref().unwrap_or(""), BATCH).await;
            let (item, next) = match read {
                Ok(desired) => {
                    let more = (desired.len() as i64 >= BATCH).then(|| desired.last().map(|d| d.0.clone())).flatten();
                    (Ok((after.take(), desired, more.clone())), more)
                }
                Err(e) => (Err(e), None),
            };
            if dtx.send(item).await.is_err() || next.is_none() {
                return;
            }
            after = next;
        }
    });
    tokio::spawn(async move {
        while let Some(item) = drx.recv().await {
            let read = match item {
                Ok((after, desired, more)) => read_rest(&store, tenant_id, after, desired, more).await,
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if rtx.send(read).await.is_err() || failed {
                return;
            }
        }
    });
    rrx
}

/// The rest of a key range: the groups of its desired users and its linked users, at once.
async fn read_rest(
    store: &Store,
    tenant_id: i64,
    after: Option<String>,
    desired: Vec<(String, String)>,
    more: Option<String>,
) -> Result<RangeRead, StoreError> {
    let from = after.as_deref().unwrap_or("");
    let groups = async {
        match desired.last() {
            Some((last, _)) => store.groups_in_range(tenant_id, from, last).await,
            None => Ok(HashMap::new()),
        }
    };
    let linked = store.linked_in_range(tenant_id, after.as_deref(), more.as_deref(), LINKED_PAGE);
    let (groups, (linked, linked_more)) = tokio::try_join!(groups, linked)?;
    Ok(RangeRead { desired, groups, linked, linked_more, more })
}
