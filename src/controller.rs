//! The reconciliation controller: level-triggered, per tenant. It reads the desired state (SCIM
//! users, groups, memberships, group→role bindings) and Moonborn's actual users and roles,
//! computes a plan with the pure `plan::plan`, and applies it with compare-and-set writes. The
//! same code path serves every trigger: a push, the cron drift-repair run, a binding change, an
//! operator, the daily purge.

pub mod model;
pub mod outbox;
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

use self::model::{desired_user_from_str, ActualUser, DesiredUser, ManagedBy, Status};
use self::plan::{fingerprint, holders_for, order_by_email, plan_raw, Change, Conflict, Scope, Summary};
pub use self::queue::Queue;
use crate::store::{Applied, Store, StoreError, Tenant};

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
/// The window over which the safety valve adds up the controller's own deactivations and
/// deletions.
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
    /// An incremental plan stopped short of the journal's head (`INCREMENTAL_CAP`): another run
    /// follows at once.
    #[serde(skip)]
    pub truncated: bool,
    /// Set when the safety valve holds (or would hold) the destructive changes.
    pub held: Option<Hold>,
    /// The plan was made under an operator's release of the hold (it applies whole).
    #[serde(skip)]
    pub released: bool,
}

/// Why destructive changes are held.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub reason: String,
    pub fingerprint: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: String,
    pub applied: u64,
    pub skipped_held: u64,
    pub stale: u64,
    pub plan: ComputedPlan,
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
        }
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
            let result = async {
                let tenant = self.store.tenant_by_id(tenant_id).await?;
                let scope = if item.full { Scope2::Full } else { Scope2::Incremental };
                self.reconcile(&tenant, item.trigger, scope, None).await
            }
            .await;
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
                    self.wake(tenant_id, Trigger::Push, false);
                }
            }
            match result {
                Ok(o) => {
                    // A run with stale changes keeps its backoff growing (it re-queued itself).
                    if o.stale == 0 {
                        self.queue.succeeded(tenant_id);
                    }
                    if o.plan.summary != Summary::default() {
                        tracing::info!(tenant_id, run_id = %o.run_id, status = %o.status, applied = o.applied,
                            summary = %o.plan.summary.line(), "reconcile finished");
                    }
                }
                Err(ControllerError::Busy) => {
                    // Another replica holds the tenant; it was woken too. Retry (within a lease
                    // renewal period) in case it dies.
                    let delay = self.queue.failed(tenant_id, item, LEASE_RENEW);
                    tracing::debug!(
                        tenant_id,
                        retry_in_ms = delay.as_millis() as u64,
                        "tenant busy on another replica"
                    );
                }
                Err(e) => {
                    let delay = self.queue.failed(tenant_id, item, Duration::from_secs(300));
                    tracing::warn!(tenant_id, error = %e, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
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
        self.plan_inner(tenant, scope, false, None).await
    }

    /// The whole-tenant plan that `bindings` would cause in place of the tenant's own: a binding
    /// change previewed (nothing is stored).
    ///
    /// # Errors
    /// Database errors.
    pub async fn plan_with_bindings(
        &self,
        tenant: &Tenant,
        bindings: &model::Bindings,
    ) -> Result<ComputedPlan, ControllerError> {
        self.plan_inner(tenant, Scope2::Full, false, Some(bindings)).await
    }

    /// `plan`; with `renew`, the tenant's lease is renewed while a long plan is read; with
    /// `bindings`, those instead of the tenant's.
    async fn plan_inner(
        &self,
        tenant: &Tenant,
        scope: Scope2,
        renew: bool,
        bindings: Option<&model::Bindings>,
    ) -> Result<ComputedPlan, ControllerError> {
        let full = matches!(scope, Scope2::Full);
        let mut renewed = std::time::Instant::now();
        let keep_lease = |renewed: &mut std::time::Instant| {
            let due = renew && renewed.elapsed() >= LEASE_RENEW;
            if due {
                *renewed = std::time::Instant::now();
            }
            due
        };
        let state = self.store.controller_state(tenant.id).await?;
        let bindings = bindings.unwrap_or(&state.bindings);
        let mut head = self.store.journal_head(tenant.id).await?;
        let mut truncated = false;
        let now = Utc::now();
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
                let mut after = state.applied_journal_seq;
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
                    if ids.len() >= INCREMENTAL_CAP && after < head {
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
        // The valve counts what the controller deactivated or deleted on its own in the last
        // window too, so a mass deprovisioning pushed one user at a time (many small runs) trips
        // it like one big run. A plan with nothing destructive cannot trip it: no counting (a
        // COUNT over a large tenant would cost every small push run).
        let (scim_users, recent) = if summary.destructive() > 0 {
            let since = plan::fmt_time(now - SAFETY_WINDOW);
            (
                self.store.scim_user_count(tenant.id).await?.max(0) as u64,
                self.store.recent_destructive(tenant.id, &since).await?.max(0) as u64,
            )
        } else {
            (0, 0)
        };
        let destructive = summary.destructive() + recent;
        let held = if state.hold_released && full {
            None
        } else if state.held_fingerprint.is_some() && summary.destructive() > 0 {
            Some(Hold {
                reason: state.held_reason.clone().unwrap_or_else(|| "held by the safety valve".into()),
                fingerprint: fp.clone(),
            })
        } else if state.safety.trips(destructive, scim_users + recent) {
            Some(Hold {
                reason: format!(
                    "this run would deactivate or delete {} of {} SCIM users ({} more in the last {} minutes; \
                     threshold {}% and at least {})",
                    summary.destructive(),
                    scim_users + recent,
                    recent,
                    SAFETY_WINDOW.num_minutes(),
                    state.safety.percent,
                    state.safety.min_users
                ),
                fingerprint: fp.clone(),
            })
        } else {
            None
        };
        Ok(ComputedPlan {
            tenant: tenant.slug.clone(),
            fingerprint: fp,
            summary,
            changes,
            conflicts,
            journal_head: head,
            truncated,
            held,
            released: state.hold_released && full,
        })
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
                Some(_) => emails.push(d.user_name.to_lowercase()),
                None => {
                    emails.push(d.user_name.to_lowercase());
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

    /// Reconciles a tenant now: plans, applies (minus what the safety valve holds), records the
    /// run. With `approve`, the plan must still have that fingerprint, and it is applied whole.
    ///
    /// # Errors
    /// `StalePlan` when an approved fingerprint no longer matches; `Busy` when another process
    /// holds the tenant's lease; database errors.
    pub async fn reconcile(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        scope: Scope2,
        approve: Option<&str>,
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
        let result = self.reconcile_locked(tenant, trigger, scope, approve, fence, &mut meter).await;
        if let Err(e) = &result {
            meter.ended(e);
        }
        if !self.keep_leases.load(std::sync::atomic::Ordering::SeqCst) {
            self.forget_lease(tenant.id);
            if let Err(e) = self.store.release_lease(tenant.id, &self.holder).await {
                tracing::warn!(tenant_id = tenant.id, error = %e, "cannot release the reconcile lease");
            }
        } else if result.is_err() {
            self.forget_lease(tenant.id);
        }
        result
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
                tracing::warn!(tenant_id = t, error = %e, "cannot release the reconcile lease");
            }
        }
    }

    async fn reconcile_locked(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        scope: Scope2,
        approve: Option<&str>,
        mut fence: i64,
        meter: &mut RunMeter,
    ) -> Result<RunOutcome, ControllerError> {
        let full = matches!(scope, Scope2::Full);
        let p = self.plan_inner(tenant, scope, true, None).await?;
        if let Some(fp) = approve {
            if fp != p.fingerprint {
                return Err(ControllerError::StalePlan { shown: fp.to_string(), current: p.fingerprint });
            }
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        let span =
            tracing::info_span!("reconcile", tenant = %tenant.slug, run_id = %run_id, trigger = trigger.as_str());
        let _e = span.enter();
        if p.changes.is_empty() && approve.is_none() {
            // Nothing to do: no run row, just the progress mark.
            self.store.set_progress(tenant.id, p.journal_head, full.then(crate::store::now).as_deref()).await?;
            // Only a whole-tenant run can tell that nothing destructive is left to hold.
            if full && self.store.controller_state(tenant.id).await?.held_fingerprint.is_some() {
                self.store.set_hold(tenant.id, None, "controller").await?;
            }
            meter.ran("noop", 0);
            return Ok(RunOutcome { run_id, status: "noop".into(), applied: 0, skipped_held: 0, stale: 0, plan: p });
        }
        self.store.start_run(tenant.id, &run_id, trigger.as_str()).await?;
        let hold = if approve.is_some() { None } else { p.held.clone() };
        // Changes an operator approved or released are the operator's (and not counted by the
        // safety valve's window).
        // Decided with the plan, from the same read of the state.
        let released = p.released;
        let actor = if approve.is_some() || released { "operator" } else { "controller" };
        let (mut applied, mut skipped, mut stale) = (0u64, 0u64, 0u64);
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
                let held = hold.is_some() && c.kind.is_destructive();
                skipped += u64::from(held);
                !held
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
            match self.store.apply_batch(tenant.id, &run_id, actor, batch, &crate::store::now(), Some(f)).await {
                Ok(results) => {
                    for r in results {
                        match r {
                            Applied::Done => applied += 1,
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
        let status = match (&failure, &hold) {
            (Some(_), _) => "failed",
            (None, Some(_)) => "held",
            (None, None) => "applied",
        };
        let summary = json!({
            "planned": p.summary,
            "applied": applied,
            "held": skipped,
            "stale": stale,
            "line": p.summary.line(),
        });
        // Stale changes are re-planned by the next run; only a clean run marks the journal done.
        let progress = (failure.is_none() && stale == 0).then(|| crate::store::Progress {
            tenant_id: tenant.id,
            journal_seq: p.journal_head,
            full_run_at: full.then(crate::store::now),
        });
        self.store
            .finish_run(&run_id, status, Some(&summary), Some(&p.fingerprint), failure.as_deref(), progress.as_ref())
            .await?;
        // Counted once its row says how it ended (a failed run applied what it did before failing).
        meter.ran(status, applied);
        if let Some(f) = failure {
            return Err(ControllerError::Store(StoreError::Invalid(f)));
        }
        match &hold {
            Some(h) => {
                self.store.set_hold(tenant.id, Some((&h.fingerprint, &h.reason)), "controller").await?;
                // An operator approves the whole-tenant plan: have one computed and held.
                if !full {
                    self.wake(tenant.id, Trigger::Cron, true);
                }
            }
            None => {
                if full && self.store.controller_state(tenant.id).await?.held_fingerprint.is_some() {
                    self.store.set_hold(tenant.id, None, actor).await?;
                }
            }
        }
        // A release lets one whole-tenant run through.
        if released {
            self.store.clear_release(tenant.id).await?;
        }
        if stale > 0 {
            // Re-planned soon, with backoff: a change that stays stale must not spin.
            let item = queue::Item { trigger: Trigger::Push, full: false };
            self.queue.failed(tenant.id, item, Duration::from_secs(30));
        }
        Ok(RunOutcome { run_id, status: status.into(), applied, skipped_held: skipped, stale, plan: p })
    }
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
    bindings: &model::Bindings,
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
