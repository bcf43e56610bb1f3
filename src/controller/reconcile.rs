//! One run: under the tenant's lock and lease, gather the plan, let the safety valve decide,
//! apply in compare-and-set batches, record the run; and the operator's runs built on it
//! (approve, release, offboard).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Instrument as _;

use super::gather::ComputedPlan;
use super::safety::{burst_after, judge_at};
use super::{Controller, ControllerError, RunScope, Target, Trigger, APPLY_BATCH, LEASE_RENEW};
use crate::domain::{Change, Status};
use crate::store::{Applied, BurstUpdate, StoreError, Tenant};

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
    /// The whole-tenant plan with this fingerprint, exactly as shown, approved by the actor
    /// named second (as the audit trail names it: `operator:NAME`, `cli:USER`).
    Fingerprint(&'a str, &'a str),
    /// Whatever the valve holds, once: an operator's release (the actor named).
    Release(&'a str),
}

impl Approval<'_> {
    fn given(self) -> bool {
        !matches!(self, Approval::None)
    }

    /// Who approved or released; `None` when nobody did.
    fn by(&self) -> Option<&str> {
        match self {
            Approval::None => None,
            Approval::Fingerprint(_, by) | Approval::Release(by) => Some(by),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything planned was applied.
    Applied,
    /// Destructive changes are held for an operator; the rest was applied.
    Held,
    /// Destructive changes wait for the tenant's burst of pushes to settle; the rest was applied.
    Waiting,
    /// A write failed part-way; what was applied before stays applied.
    Failed,
    /// Nothing to do: no run row, only the progress mark.
    Noop,
    /// A release found nothing held: no run (the release is audited).
    NothingHeld,
    /// Only planned (an operator's preview): nothing applied, no run row.
    DryRun,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Applied => "applied",
            RunStatus::Held => "held",
            RunStatus::Waiting => "waiting",
            RunStatus::Failed => "failed",
            RunStatus::Noop => "noop",
            RunStatus::NothingHeld => "nothing_held",
            RunStatus::DryRun => "dry_run",
        }
    }

    /// Whether the run has a row in the run history (and its id can be looked up).
    pub fn recorded(self) -> bool {
        !matches!(self, RunStatus::Noop | RunStatus::DryRun)
    }
}

/// A status equals its name as recorded and answered (`"applied"`, `"held"`, …).
impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished run asks of the queue for its tenant (kube-runtime's `Action`): the runner
/// carries it out (`Controller::requeue`), whoever started the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requeue {
    /// The run was a capped part of a long journal: run again at once.
    pub now: bool,
    /// Changes were planned on a stale read: run again after a backoff (a change that stays
    /// stale must not spin).
    pub stale: bool,
    /// A burst of destructive pushes is open: judge it at this time.
    pub judge_at: Option<chrono::DateTime<Utc>>,
    /// A push reached a held tenant: a whole-tenant run once its pushes have been quiet this
    /// long (only such a run can tell whether anything held is left).
    pub recheck_when_quiet: Option<Duration>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub applied: u64,
    /// Of those, deactivations and deletions.
    pub applied_destructive: u64,
    pub skipped_held: u64,
    pub stale: u64,
    pub plan: ComputedPlan,
    /// What the queue does with the tenant next.
    #[serde(skip)]
    pub requeue: Requeue,
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

/// Counts one `reconcile` in the process's metrics: once, with how it ended.
pub(super) struct RunMeter {
    trigger: Trigger,
    scope: &'static str,
    /// When the run took its lease (the duration excludes waiting for the tenant); `None` when
    /// it never did.
    started: Option<std::time::Instant>,
    recorded: bool,
}

impl RunMeter {
    fn new(trigger: Trigger, scope: &Target) -> RunMeter {
        let scope = match scope {
            Target::Full => "full",
            Target::Incremental => "incremental",
            Target::Snapshot(_) => "snapshot",
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

impl Controller {
    pub(super) async fn tenant_lock(&self, tenant_id: i64) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(tenant_id).or_default().clone()
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
        scope: Target,
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
        let result = self.run_locked(tenant, trigger, scope, approval, fence, &mut meter).instrument(span).await;
        match &result {
            Ok(o) => self.requeue(tenant.id, trigger, &o.requeue),
            Err(e) => meter.ended(e),
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
                match self.store.edit_user(tenant.id, id, &edit, actor).await {
                    Ok(()) => disabled += 1,
                    Err(crate::store::HandError::Store(e)) => return Err(e.into()),
                    // Gone or changed meanwhile: nothing to disable.
                    Err(_) => {}
                }
            }
        }
        let o = self.reconcile(tenant, Trigger::Operator, Target::Full, Approval::None).await?;
        if o.skipped_held > 0 {
            self.release(tenant, actor).await?;
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
    pub async fn release(&self, tenant: &Tenant, by: &str) -> Result<Option<RunOutcome>, ControllerError> {
        let o = self.reconcile(tenant, Trigger::Operator, Target::Full, Approval::Release(by)).await?;
        if o.status == RunStatus::NothingHeld {
            self.store.audit_empty_release(tenant.id, by).await?;
            return Ok(None);
        }
        Ok(Some(o))
    }

    pub(super) async fn run_locked(
        &self,
        tenant: &Tenant,
        trigger: Trigger,
        scope: Target,
        approval: Approval<'_>,
        mut fence: i64,
        meter: &mut RunMeter,
    ) -> Result<RunOutcome, ControllerError> {
        let approved = approval.given();
        let scope = if approved { Target::Full } else { scope };
        let (mut p, state) = self.compute_plan(tenant, scope, true, false, None).await?;
        if let Approval::Fingerprint(fp, _) = approval {
            if fp != p.fingerprint {
                if let Some((run_id, at)) = self.store.applied_run_with_fingerprint(tenant.id, fp).await? {
                    return Err(ControllerError::AlreadyApplied { fingerprint: fp.to_string(), run_id, at });
                }
                return Err(ControllerError::StalePlan { shown: fp.to_string(), current: p.fingerprint });
            }
        }
        if matches!(approval, Approval::Release(_)) && state.held_fingerprint.is_none() {
            // Decided under the lease: a hold that ended meanwhile (the IdP reverted) must not
            // let a new mass change through unjudged.
            meter.ran(RunStatus::Noop.as_str(), 0);
            let run_id = String::new();
            return Ok(RunOutcome {
                run_id,
                status: RunStatus::NothingHeld,
                applied: 0,
                applied_destructive: 0,
                skipped_held: 0,
                stale: 0,
                plan: p,
                requeue: Requeue::default(),
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
            p = self.compute_plan(tenant, Target::Full, true, true, None).await?.0;
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
        let mut requeue = Requeue::default();
        if was_held && !approved && p.kind == RunScope::Incremental {
            // Only a whole-tenant run can tell whether anything held is left (a push may have
            // reverted the last of it, and then this run has nothing to do): one follows once
            // the pushes settle (at least a second).
            requeue.recheck_when_quiet =
                Some(Duration::from_millis(state.safety.settle_ms).max(Duration::from_secs(1)));
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
            requeue.judge_at = open.map(|b| judge_at(&b, &state.safety));
            requeue.now = p.truncated;
            meter.ran(RunStatus::Noop.as_str(), 0);
            return Ok(RunOutcome {
                run_id,
                status: RunStatus::Noop,
                applied: 0,
                applied_destructive: 0,
                skipped_held: 0,
                stale: 0,
                plan: p,
                requeue,
            });
        }
        self.store.start_run(tenant.id, &run_id, trigger.as_str()).await?;
        // Changes a person approved or released are the person's (and not counted by the
        // safety valve's window).
        let actor = approval.by().unwrap_or("controller");
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
                        failure = Some(ControllerError::LostLease("lost the reconcile lease"));
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
                                failure = Some(ControllerError::LostLease("another process took the reconcile lease"))
                            }
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }
        let status = match (&failure, &p.held, p.waiting) {
            (Some(_), _, _) => RunStatus::Failed,
            (None, Some(_), _) if !approved => RunStatus::Held,
            (None, _, n) if n > 0 && !approved => RunStatus::Waiting,
            (None, _, _) => RunStatus::Applied,
        };
        let hold_note = if ends_hold {
            Some(match approval {
                Approval::Fingerprint(..) => "hold ended: an operator approved the plan",
                Approval::Release(_) => "hold ended: an operator released the held changes",
                Approval::None if !state.safety.enabled => "hold ended: the safety valve was switched off",
                Approval::None => "hold ended: nothing held is left (the IdP reverted the held changes)",
            })
        } else {
            None
        };
        let summary = json!({
            "scope": p.kind.as_str(),
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
        let failed = failure.as_ref().map(ToString::to_string);
        self.store
            .finish_run(
                &run_id,
                status.as_str(),
                Some(&summary),
                Some(&p.fingerprint),
                failed.as_deref(),
                progress.as_ref(),
            )
            .await?;
        // Counted once its row says how it ended (a failed run applied what it did before failing).
        meter.ran(status.as_str(), applied);
        if let Approval::Fingerprint(fp, by) = approval {
            // The approval itself, with the fingerprint the operator saw (the changes it let
            // through are audited one by one, in the operator's name).
            let after = serde_json::json!({
                "fingerprint": fp, "status": status.as_str(), "applied": applied, "destructive": applied_destructive,
            });
            self.store.audit_action(tenant.id, Some(&run_id), by, "approve", &after).await?;
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if let (Some(h), false) = (&p.held, approved) {
            if p.kind != RunScope::Incremental {
                self.hold(tenant, h, &p.summary, state.held_fingerprint.as_deref()).await?;
            }
        }
        if ends_hold {
            let (actor, how) = match approval {
                Approval::Fingerprint(_, by) => (by, "approved"),
                Approval::Release(by) => (by, "released"),
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
            requeue.judge_at = Some(at);
        }
        requeue.stale = stale > 0;
        requeue.now = p.truncated && stale == 0;
        Ok(RunOutcome { run_id, status, applied, applied_destructive, skipped_held: skipped, stale, plan: p, requeue })
    }
}
