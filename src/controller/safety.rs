//! The safety valve in a run: the gate on a plan's destructive changes, the hold an operator
//! approves or releases, and the timers that judge a settled burst or recheck a hold.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use super::{Controller, ControllerError, RunScope, Trigger, SAFETY_WINDOW};
use crate::domain::{Destructive, Judgement, Summary};
use crate::store::{Burst, BurstUpdate, ControllerState, HoldRecord, Tenant};

/// Why destructive changes are held.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub reason: String,
    pub fingerprint: String,
    /// The numbers behind the reason (none for an incremental run's look at a standing hold).
    pub judgement: Option<Judgement>,
}

/// What the safety valve lets a run do with its destructive changes.
pub(super) enum Gate {
    Open,
    /// They wait for the burst of destructive pushes to settle.
    Wait,
    Hold(Hold),
}

/// The tenant's burst once a run's update is written.
pub(super) fn burst_after(before: Option<&Burst>, update: &BurstUpdate) -> Option<Burst> {
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
pub(super) fn judge_at(b: &Burst, s: &crate::domain::Safety) -> chrono::DateTime<Utc> {
    let at =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| Utc::now());
    let settle = at(&b.last_at) + chrono::Duration::milliseconds(s.settle_ms as i64);
    let max = at(&b.first_at) + chrono::Duration::milliseconds(s.max_wait_ms as i64);
    settle.min(max)
}

impl Controller {
    /// The safety valve's decision on a plan's destructive changes (deactivations, deletions):
    /// - none, or the valve is off: applied;
    /// - the tenant is held: held (the hold lasts until nothing held is left, or a person
    ///   approves or releases it);
    /// - a push's, or any run's while a burst of destructive pushes is open: they wait for the
    ///   burst to settle;
    /// - otherwise (a settled burst, a whole-tenant run): judged with the destructive changes
    ///   applied in the last `SAFETY_WINDOW`, over the tenant's SCIM users before them.
    pub(super) async fn gate(
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

    /// Records (or refreshes) the tenant's hold over a plan; logs a hold that begins or moves
    /// to a new plan at WARN, with the command that approves it. Answers whether it began.
    /// `before`: the fingerprint the tenant was held at when the run read its state.
    pub(super) async fn hold(
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
    pub(super) fn arm_judge(&self, tenant_id: i64, at: chrono::DateTime<Utc>) {
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
    pub(super) fn recheck_hold(&self, tenant_id: i64, quiet: Duration) {
        let now = std::time::Instant::now();
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
