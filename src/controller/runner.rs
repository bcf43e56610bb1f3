//! The runner: the worker loop that takes tenants off the queue and reconciles them, the
//! trigger sources that feed the queue (cron schedules, start-up, PostgreSQL push
//! notifications), and the one error policy that decides a failed run's backoff.

use std::time::Duration;

use chrono::Utc;

use super::reconcile::Requeue;
use super::{Approval, Controller, ControllerError, Target, Trigger, LEASE_RENEW, PUSH_GATHER, RETRY_CAP};

/// The longest backoff of a tenant whose changes were planned on a stale read.
const STALE_RETRY_CAP: Duration = Duration::from_secs(30);
use crate::domain::Summary;

impl Controller {
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

    pub(super) async fn tick(&self, schedule: cron::Schedule, trigger: Trigger) {
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

    pub(super) async fn work(&self) {
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
                    let scope = if item.full { Target::Full } else { Target::Incremental };
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
                Err(e) => {
                    let delay = self.queue.failed(tenant_id, item, backoff_cap(&e));
                    let retry_in_ms = delay.as_millis() as u64;
                    if matches!(e, ControllerError::Busy) {
                        tracing::debug!(tenant = %slug, retry_in_ms, "tenant busy on another replica");
                    } else {
                        tracing::warn!(tenant = %slug, error = %e, retry_in_ms, "reconcile failed");
                    }
                }
            }
            self.queue.done(tenant_id);
            if big {
                self.store.release_memory().await;
            }
        }
    }
}

/// The error policy: the longest a failed run's tenant waits before it is tried again (the wait
/// starts at 100 ms and doubles up to this).
fn backoff_cap(e: &ControllerError) -> Duration {
    match e {
        // Another replica holds (or took) the tenant; it was woken too. Retry within a lease
        // renewal period in case it dies.
        ControllerError::Busy | ControllerError::LostLease(_) => LEASE_RENEW,
        // A lasting failure (a full disk, a database that is down) costs one failed run per
        // tenant per interval.
        _ => RETRY_CAP,
    }
}

impl Controller {
    /// Carries out what a finished run asked of the queue: the one place a run puts its tenant
    /// back (whoever started it: a worker, an operator, a command).
    pub(super) fn requeue(&self, tenant_id: i64, trigger: Trigger, r: &Requeue) {
        if r.now {
            self.wake(tenant_id, trigger, false);
        }
        if r.stale {
            let item = super::queue::Item { trigger: Trigger::Push, full: false };
            self.queue.failed(tenant_id, item, STALE_RETRY_CAP);
        }
        if let Some(at) = r.judge_at {
            self.arm_judge(tenant_id, at);
        }
        if let Some(quiet) = r.recheck_when_quiet {
            self.recheck_hold(tenant_id, quiet);
        }
    }
}
