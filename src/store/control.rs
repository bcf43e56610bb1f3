//! The controller's state per tenant: bindings, safety valve and hold, run progress, the lease
//! that fences a tenant's writers, and the run history.

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::actual::audit_stmt;
use super::exec::{exec_sqlx, Stmt};
use super::outbox::outbox_stmt;
use super::{Store, StoreError};
use crate::domain::Safety;
use crate::domain::{Binding, Bindings};

/// The controller's per-tenant settings and state.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerState {
    pub bindings: Bindings,
    pub safety: Safety,
    /// The fingerprint of the plan held by the safety valve, waiting for an operator.
    pub held_fingerprint: Option<String>,
    pub held_reason: Option<String>,
    /// When the hold began (it stays while the hold is refreshed).
    pub held_at: Option<String>,
    /// The destructive changes the hold keeps back.
    pub held_count: u64,
    /// Destructive changes of pushes waiting for the burst to settle.
    pub burst: Option<Burst>,
    /// The intent-journal position the controller has reconciled up to.
    pub applied_journal_seq: i64,
    pub last_full_run_at: Option<String>,
}

impl ControllerState {
    /// The safety valve's settings, hold and waiting burst as operators read them (`GET
    /// …/safety`, `moonborn-scim safety`).
    pub fn safety_json(&self, slug: &str) -> Value {
        let held = self.held_fingerprint.as_ref().map(|f| {
            json!({
                "fingerprint": f, "reason": self.held_reason, "at": self.held_at, "destructive": self.held_count,
                "approve": format!("moonborn-scim approve --tenant {slug} {f}"),
            })
        });
        let waiting = self.burst.as_ref().map(|b| json!({"since": b.first_at, "last_push_at": b.last_at}));
        json!({
            "enabled": self.safety.enabled,
            "percent": self.safety.percent,
            "min_users": self.safety.min_users,
            "settle_secs": self.safety.settle_ms as f64 / 1000.0,
            "max_wait_secs": self.safety.max_wait_ms as f64 / 1000.0,
            "held": held,
            "waiting": waiting,
        })
    }
}

/// A burst of destructive pushes waiting to be judged whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Burst {
    /// The first run that deferred a destructive change of the burst.
    pub first_at: String,
    /// The last push run that did.
    pub last_at: String,
    /// The burst's pushes lie after this journal position.
    pub from_seq: i64,
}

/// What a run does to the tenant's waiting burst, with its progress.
#[derive(Debug, Clone, Default)]
pub enum BurstUpdate {
    #[default]
    Keep,
    /// Destructive changes were deferred: open the burst (its pushes lie after `from_seq`) or
    /// extend it; `push` says a push caused them (a push extends the settle time, a whole-tenant
    /// run does not).
    Defer { from_seq: i64, push: bool, at: String },
    /// The burst was judged (applied or held).
    Close,
}

/// How far a tenant's intent journal is reconciled.
#[derive(Debug, Clone)]
pub struct Progress {
    pub tenant_id: i64,
    pub journal_seq: i64,
    /// Set when the run covered the whole tenant.
    pub full_run_at: Option<String>,
    pub burst: BurstUpdate,
}

/// The statements that record how far a tenant's journal is reconciled.
fn progress_stmts(p: &Progress) -> Vec<Stmt> {
    let mut v = vec![
        Stmt::new(
            "INSERT INTO controller_state (tenant_id, default_role) VALUES ($1, 'viewer') \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .arg(p.tenant_id),
        Stmt::new(
            "UPDATE controller_state SET applied_journal_seq = CASE WHEN applied_journal_seq > $1 \
             THEN applied_journal_seq ELSE $1 END, last_full_run_at = COALESCE($2, last_full_run_at) \
             WHERE tenant_id = $3",
        )
        .arg(p.journal_seq)
        .arg(&p.full_run_at)
        .arg(p.tenant_id),
    ];
    match &p.burst {
        BurstUpdate::Keep => {}
        BurstUpdate::Defer { from_seq, push, at } => v.push(
            Stmt::new(
                "UPDATE controller_state SET \
                 burst_from_seq = CASE WHEN burst_first_at IS NULL THEN $1 ELSE burst_from_seq END, \
                 burst_first_at = COALESCE(burst_first_at, $2), \
                 burst_last_at = CASE WHEN $3 = 1 OR burst_last_at IS NULL THEN $2 ELSE burst_last_at END \
                 WHERE tenant_id = $4",
            )
            .arg(*from_seq)
            .arg(at.as_str())
            .arg(i64::from(*push))
            .arg(p.tenant_id),
        ),
        BurstUpdate::Close => v.push(
            Stmt::new("UPDATE controller_state SET burst_first_at = NULL, burst_last_at = NULL WHERE tenant_id = $1")
                .arg(p.tenant_id),
        ),
    }
    v
}

/// A hold as stored: the plan it stands above, why, and its counts.
#[derive(Debug, Clone)]
pub struct HoldRecord {
    pub fingerprint: String,
    pub reason: String,
    pub destructive: crate::domain::Destructive,
    pub scim_users: u64,
}

/// A run of the controller, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub summary: Option<Value>,
    pub fingerprint: Option<String>,
    pub error: Option<String>,
}

/// A tenant's state at a glance: `held` (the safety valve holds destructive changes for an
/// operator), `failing` (its last run failed), `waiting` (destructive pushes settle before they
/// are judged), `drifted` (pushes not reconciled yet, or the last run left stale changes to
/// re-plan), else `in_sync`.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub state: &'static str,
    /// `{destructive, fingerprint, reason, since}` while held.
    pub held: Option<Value>,
    /// When the waiting burst of destructive pushes began.
    pub waiting_since: Option<String>,
    pub pushes_pending: bool,
    pub last_full_run_at: Option<String>,
    /// The last recorded run (runs with nothing to do leave no record).
    pub last_run: Option<RunRow>,
}

impl Store {
    /// The controller state of a tenant (defaults when never set).
    ///
    /// # Errors
    /// Database errors.
    pub async fn controller_state(&self, tenant_id: i64) -> Result<ControllerState, StoreError> {
        let row = sqlx::query(
            "SELECT default_role, bindings_set, safety_percent, safety_min_users, safety_enabled, safety_settle_ms, \
             safety_max_wait_ms, held_fingerprint, held_reason, held_at, held_count, burst_first_at, burst_last_at, \
             burst_from_seq, applied_journal_seq, last_full_run_at FROM controller_state WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(ControllerState {
                bindings: Bindings::default(),
                safety: Safety::default(),
                held_fingerprint: None,
                held_reason: None,
                held_at: None,
                held_count: 0,
                burst: None,
                applied_journal_seq: 0,
                last_full_run_at: None,
            });
        };
        let bindings_set: i64 = row.try_get("bindings_set")?;
        let bindings = if bindings_set == 0 {
            Bindings::default()
        } else {
            let rows = sqlx::query(
                "SELECT group_name, role FROM group_bindings WHERE tenant_id = $1 ORDER BY group_name_lc, role",
            )
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
            Bindings {
                bindings: rows
                    .iter()
                    .map(|r| Ok(Binding { group: r.try_get("group_name")?, role: r.try_get("role")? }))
                    .collect::<Result<_, sqlx::Error>>()?,
                default_role: row.try_get("default_role")?,
            }
        };
        let int = |c: &str| -> Result<i64, sqlx::Error> { row.try_get::<i64, _>(c) };
        let first: Option<String> = row.try_get("burst_first_at")?;
        let last: Option<String> = row.try_get("burst_last_at")?;
        let burst = match first {
            Some(first_at) => Some(Burst {
                last_at: last.unwrap_or_else(|| first_at.clone()),
                first_at,
                from_seq: int("burst_from_seq")?,
            }),
            None => None,
        };
        Ok(ControllerState {
            bindings,
            safety: Safety {
                percent: int("safety_percent")?.clamp(0, 100) as u32,
                min_users: int("safety_min_users")?.max(0) as u64,
                enabled: int("safety_enabled")? != 0,
                settle_ms: int("safety_settle_ms")?.max(0) as u64,
                max_wait_ms: int("safety_max_wait_ms")?.max(0) as u64,
            },
            held_fingerprint: row.try_get("held_fingerprint")?,
            held_reason: row.try_get("held_reason")?,
            held_at: row.try_get("held_at")?,
            held_count: int("held_count")?.max(0) as u64,
            burst,
            applied_journal_seq: int("applied_journal_seq")?,
            last_full_run_at: row.try_get("last_full_run_at")?,
        })
    }

    async fn ensure_controller_row(&self, tx: &mut sqlx::AnyConnection, tenant_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO controller_state (tenant_id, default_role) VALUES ($1, 'viewer') \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Replaces a tenant's group bindings and default role.
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_bindings(&self, tenant_id: i64, b: &Bindings, actor: &str) -> Result<(), StoreError> {
        let before = self.controller_state(tenant_id).await?.bindings;
        let mut w = self.begin_write().await?;
        self.ensure_controller_row(&mut w.tx, tenant_id).await?;
        sqlx::query("DELETE FROM group_bindings WHERE tenant_id = $1").bind(tenant_id).execute(&mut *w.tx).await?;
        for bd in &b.bindings {
            sqlx::query(
                "INSERT INTO group_bindings (tenant_id, group_name, group_name_lc, role) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, group_name_lc, role) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&bd.group)
            .bind(bd.group.to_lowercase())
            .bind(&bd.role)
            .execute(&mut *w.tx)
            .await?;
        }
        sqlx::query("UPDATE controller_state SET default_role = $1, bindings_set = 1 WHERE tenant_id = $2")
            .bind(&b.default_role)
            .bind(tenant_id)
            .execute(&mut *w.tx)
            .await?;
        let now = crate::domain::now();
        exec_sqlx(
            &mut w.tx,
            &audit_stmt(tenant_id, None, actor, "bindings", None, Some(&json!(before)), Some(&json!(b)), &now),
        )
        .await?;
        w.commit().await
    }

    /// Sets the safety-valve settings of a tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_safety(&self, tenant_id: i64, s: Safety, actor: &str) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        self.ensure_controller_row(&mut w.tx, tenant_id).await?;
        sqlx::query(
            "UPDATE controller_state SET safety_percent = $1, safety_min_users = $2, safety_enabled = $3, \
             safety_settle_ms = $4, safety_max_wait_ms = $5 WHERE tenant_id = $6",
        )
        .bind(i64::from(s.percent))
        .bind(s.min_users as i64)
        .bind(i64::from(s.enabled))
        .bind(s.settle_ms as i64)
        .bind(s.max_wait_ms as i64)
        .bind(tenant_id)
        .execute(&mut *w.tx)
        .await?;
        let now = crate::domain::now();
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "safety", None, None, Some(&json!(s)), &now)).await?;
        w.commit().await
    }

    /// Holds a tenant's destructive changes (`Some`), or ends its hold (`None`, saying `how`:
    /// approved, released, reverted, disabled). A hold that begins or ends is audited and queues
    /// a `tenant.held` or `tenant.released` event (once per hold: keyed by when it began) in the
    /// same transaction; refreshing a hold (the plan it stands above moved) changes only its
    /// fingerprint, reason and counts. Answers whether the hold began or ended with this call.
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_hold(
        &self,
        tenant: &super::Tenant,
        hold: Option<&HoldRecord>,
        actor: &str,
        how: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::domain::now();
        let mut w = self.begin_write().await?;
        self.ensure_controller_row(&mut w.tx, tenant.id).await?;
        let lock = if self.backend() == super::Backend::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT held_fingerprint, held_at, held_count FROM controller_state WHERE tenant_id = $1{lock}"
        ))
        .bind(tenant.id)
        .fetch_one(&mut *w.tx)
        .await?;
        let was: Option<String> = row.try_get("held_fingerprint")?;
        let began: Option<String> = row.try_get("held_at")?;
        let was_count: i64 = row.try_get("held_count")?;
        let changed = match hold {
            Some(h) => {
                let at = began.clone().filter(|_| was.is_some()).unwrap_or_else(|| now.clone());
                sqlx::query(
                    "UPDATE controller_state SET held_fingerprint = $1, held_reason = $2, held_at = $3, \
                     held_count = $4 WHERE tenant_id = $5",
                )
                .bind(&h.fingerprint)
                .bind(&h.reason)
                .bind(&at)
                .bind(h.destructive.total() as i64)
                .bind(tenant.id)
                .execute(&mut *w.tx)
                .await?;
                if was.is_none() {
                    let payload = json!({
                        "tenant": tenant.slug, "fingerprint": h.fingerprint, "reason": h.reason,
                        "deactivate": h.destructive.deactivate, "delete": h.destructive.delete,
                        "scim_users": h.scim_users, "held_at": at,
                    });
                    let key = format!("tenant.held:{}:{at}", tenant.id);
                    exec_sqlx(&mut w.tx, &outbox_stmt(tenant.id, "tenant.held", "", &key, &payload, &now)).await?;
                    exec_sqlx(&mut w.tx, &audit_stmt(tenant.id, None, actor, "hold", None, None, Some(&payload), &now))
                        .await?;
                }
                was.is_none()
            }
            None => {
                let Some(fp) = was else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE controller_state SET held_fingerprint = NULL, held_reason = NULL, held_at = NULL, \
                     held_count = 0 WHERE tenant_id = $1",
                )
                .bind(tenant.id)
                .execute(&mut *w.tx)
                .await?;
                let at = began.unwrap_or_default();
                let payload = json!({
                    "tenant": tenant.slug, "fingerprint": fp, "held_at": at, "held": was_count,
                    "how": how, "by": actor,
                });
                let key = format!("tenant.released:{}:{at}", tenant.id);
                exec_sqlx(&mut w.tx, &outbox_stmt(tenant.id, "tenant.released", "", &key, &payload, &now)).await?;
                exec_sqlx(&mut w.tx, &audit_stmt(tenant.id, None, actor, "release", None, None, Some(&payload), &now))
                    .await?;
                true
            }
        };
        w.commit().await?;
        Ok(changed)
    }

    /// Audits an operator's release of a tenant that held nothing.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit_empty_release(&self, tenant_id: i64, actor: &str) -> Result<(), StoreError> {
        self.audit_action(tenant_id, None, actor, "release", &json!({"how": "released", "held": 0})).await
    }

    /// Audits an action that changed nothing else stored (an approval: its changes are audited
    /// one by one; a release of nothing), `after` saying what it was.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit_action(
        &self,
        tenant_id: i64,
        run_id: Option<&str>,
        actor: &str,
        action: &str,
        after: &Value,
    ) -> Result<(), StoreError> {
        let now = crate::domain::now();
        self.write_stmts(vec![audit_stmt(tenant_id, run_id, actor, action, None, None, Some(after), &now)]).await?;
        Ok(())
    }

    /// Records how far the intent journal has been reconciled (and when the last full run was).
    ///
    /// # Errors
    /// Database errors.
    pub async fn set_progress(&self, p: &Progress) -> Result<(), StoreError> {
        self.write_stmts(progress_stmts(p)).await?;
        Ok(())
    }
    /// Takes (or renews) the lease on reconciling a tenant; `Some(fence)` when held by `holder`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn acquire_lease(&self, tenant_id: i64, holder: &str, ttl_secs: i64) -> Result<Option<i64>, StoreError> {
        let now = chrono::Utc::now();
        let expires = crate::domain::fmt_time(now + chrono::Duration::seconds(ttl_secs));
        let now = crate::domain::fmt_time(now);
        let mut w = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO controller_leases (tenant_id, holder, fence, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, \
             fence = CASE WHEN controller_leases.holder = excluded.holder THEN controller_leases.fence \
             ELSE controller_leases.fence + 1 END \
             WHERE controller_leases.holder = excluded.holder OR controller_leases.expires_at < $4 \
             RETURNING fence",
        )
        .bind(tenant_id)
        .bind(holder)
        .bind(&expires)
        .bind(&now)
        .fetch_optional(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(match row {
            Some(r) => Some(r.try_get("fence")?),
            None => None,
        })
    }

    /// Gives a lease back.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release_lease(&self, tenant_id: i64, holder: &str) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query("DELETE FROM controller_leases WHERE tenant_id = $1 AND holder = $2")
            .bind(tenant_id)
            .bind(holder)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    /// Records the start of a run.
    ///
    /// # Errors
    /// Database errors.
    pub async fn start_run(&self, tenant_id: i64, run_id: &str, trigger: &str) -> Result<(), StoreError> {
        let s = Stmt::new(
            "INSERT INTO runs (id, tenant_id, trigger, started_at, status) VALUES ($1, $2, $3, $4, 'running')",
        )
        .arg(run_id)
        .arg(tenant_id)
        .arg(trigger)
        .arg(crate::domain::now());
        self.write_stmts(vec![s]).await?;
        Ok(())
    }

    /// Records the end of a run, and with it (same transaction) how far the journal is
    /// reconciled.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_run(
        &self,
        run_id: &str,
        status: &str,
        summary: Option<&Value>,
        fingerprint: Option<&str>,
        error: Option<&str>,
        progress: Option<&Progress>,
    ) -> Result<(), StoreError> {
        let mut stmts = vec![Stmt::new(
            "UPDATE runs SET finished_at = $1, status = $2, summary = $3, fingerprint = $4, error = $5 WHERE id = $6",
        )
        .arg(crate::domain::now())
        .arg(status)
        .arg(summary.map(Value::to_string))
        .arg(fingerprint)
        .arg(error)
        .arg(run_id)];
        if let Some(p) = progress {
            stmts.extend(progress_stmts(p));
        }
        self.write_stmts(stmts).await?;
        Ok(())
    }

    /// The run that applied a plan with this fingerprint, if one did: (run id, when it finished).
    ///
    /// # Errors
    /// Database errors.
    pub async fn applied_run_with_fingerprint(
        &self,
        tenant_id: i64,
        fingerprint: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, finished_at FROM runs WHERE tenant_id = $1 AND fingerprint = $2 AND status = 'applied' \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get::<Option<String>, _>("finished_at")?.unwrap_or_default())))
            .transpose()
    }

    /// A tenant's state at a glance (see `TenantStatus`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn tenant_status(&self, tenant_id: i64) -> Result<TenantStatus, StoreError> {
        let c = self.controller_state(tenant_id).await?;
        let head = self.journal_head(tenant_id).await?;
        let last_run = self.list_runs(tenant_id, 1).await?.into_iter().next();
        let stale = last_run
            .as_ref()
            .and_then(|r| r.summary.as_ref())
            .and_then(|s| s.get("stale"))
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0);
        let pushes_pending = c.applied_journal_seq < head;
        let state = if c.held_fingerprint.is_some() {
            "held"
        } else if last_run.as_ref().is_some_and(|r| r.status == "failed") {
            "failing"
        } else if c.burst.is_some() {
            "waiting"
        } else if pushes_pending || stale {
            "drifted"
        } else {
            "in_sync"
        };
        Ok(TenantStatus {
            state,
            held: c.held_fingerprint.as_ref().map(
                |f| json!({"destructive": c.held_count, "fingerprint": f, "reason": c.held_reason, "since": c.held_at}),
            ),
            waiting_since: c.burst.map(|b| b.first_at),
            pushes_pending,
            last_full_run_at: c.last_full_run_at,
            last_run,
        })
    }

    /// A tenant's runs, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_runs(&self, tenant_id: i64, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, trigger, started_at, finished_at, status, summary, fingerprint, error FROM runs \
             WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let summary: Option<String> = r.try_get("summary")?;
                Ok(columns!(r, RunRow { id, trigger, started_at, finished_at, status, fingerprint, error } + {
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                }))
            })
            .collect()
    }
}
