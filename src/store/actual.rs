//! Moonborn's actual state (users, roles, sessions) and the controller's bookkeeping: bindings,
//! safety valve and hold, runs, audit trail, outbox. `apply_change` is the one writer of users
//! and roles: a compare-and-set on the user's version, with its outbox rows and audit row in the
//! same transaction.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::exec::{exec_sqlite, exec_sqlx, ExecError, Stmt, Val};
use super::{blocking, json_list, keys_as_json, keys_listed, placeholders, Store, StoreError};
use crate::domain::{ActualUser, Binding, Bindings, ManagedBy, Status};
use crate::domain::{Change, ChangeKind, Safety};

const USER_COLS: &str = "id, email, display_name, contact_email, status, managed_by, scim_id, external_id, \
                         purge_after, version, hand_edited";

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

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The user moved since the plan was made; the next run re-plans it.
    Stale,
    /// Another process took the tenant's lease: this run must stop writing.
    LostLease,
}

/// The lease a write is fenced by: the holder and the fencing token it acquired.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub holder: &'a str,
    pub token: i64,
}

/// A `users` row (without roles).
pub(super) fn user_from_row(r: &AnyRow) -> Result<ActualUser, StoreError> {
    let status: String = r.try_get("status")?;
    let managed: String = r.try_get("managed_by")?;
    Ok(ActualUser {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        contact_email: r.try_get("contact_email")?,
        status: Status::parse(&status).ok_or_else(|| StoreError::Invalid(format!("bad status {status}")))?,
        managed_by: ManagedBy::parse(&managed)
            .ok_or_else(|| StoreError::Invalid(format!("bad managed_by {managed}")))?,
        scim_id: r.try_get("scim_id")?,
        external_id: r.try_get("external_id")?,
        roles: BTreeSet::new(),
        purge_after: r.try_get("purge_after")?,
        version: r.try_get("version")?,
        hand_edited: r.try_get::<i64, _>("hand_edited")? != 0,
    })
}

/// A `users` row (without roles) read by the SQLite reader: the `USER_COLS` columns first, in
/// that order. Read by position: by name, every `get` scanned the statement's column names
/// (8% of a full run's plan).
fn user_from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActualUser> {
    let bad = |what: &str, v: String| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(StoreError::Invalid(format!("bad {what} {v}"))),
        )
    };
    let status: String = r.get(4)?;
    let managed: String = r.get(5)?;
    Ok(ActualUser {
        id: r.get(0)?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        contact_email: r.get(3)?,
        status: Status::parse(&status).ok_or_else(|| bad("status", status.clone()))?,
        managed_by: ManagedBy::parse(&managed).ok_or_else(|| bad("managed_by", managed.clone()))?,
        scim_id: r.get(6)?,
        external_id: r.get(7)?,
        roles: BTreeSet::new(),
        purge_after: r.get(8)?,
        version: r.get(9)?,
        hand_edited: r.get::<_, i64>(10)? != 0,
    })
}

/// The column after `USER_COLS` in `linked_in_range`'s rows (the role).
const ROLE_COL: usize = 11;

/// Fencing: touches the lease row only while `holder` still holds it with that token.
const FENCE_SQL: &str =
    "UPDATE controller_leases SET fence = fence WHERE tenant_id = $1 AND holder = $2 AND fence = $3";

/// The outbox row of an event (at most one per idempotency key).
fn outbox_stmt(tenant_id: i64, event_type: &str, user_id: &str, key: &str, payload: &Value, now: &str) -> Stmt {
    Stmt::new(
        "INSERT INTO outbox (id, tenant_id, event_type, user_id, idempotency_key, payload, status, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .arg(uuid::Uuid::now_v7().to_string())
    .arg(tenant_id)
    .arg(event_type)
    .arg(user_id)
    .arg(key)
    .arg(payload.to_string())
    .arg(now)
}

/// An audit row (run it with `exec_sqlx`, or as part of an apply batch).
#[expect(clippy::too_many_arguments, reason = "one parameter per audit column")]
pub(super) fn audit_stmt(
    tenant_id: i64,
    run_id: Option<&str>,
    actor: &str,
    action: &str,
    user_id: Option<&str>,
    before: Option<&Value>,
    after: Option<&Value>,
    now: &str,
) -> Stmt {
    Stmt::new(
        "INSERT INTO audit_log (tenant_id, run_id, actor, action, user_id, before, after, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .arg(tenant_id)
    .arg(run_id)
    .arg(actor)
    .arg(action)
    .arg(user_id)
    .arg(before.map(Value::to_string))
    .arg(after.map(Value::to_string))
    .arg(now)
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

    async fn ensure_controller_row(
        &self,
        tx: &mut Transaction<'static, Any>,
        tenant_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO controller_state (tenant_id, default_role) VALUES ($1, 'viewer') \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .execute(&mut **tx)
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
        let now = crate::domain::now();
        let after = json!({"how": "released", "held": 0});
        self.write_stmts(vec![audit_stmt(tenant_id, None, actor, "release", None, None, Some(&after), &now)]).await?;
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

    /// The highest intent-journal position of a tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journal_head(&self, tenant_id: i64) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0) AS s FROM intent_journal WHERE tenant_id = $1";
        if let Some(r) = &self.reader {
            return r.with(|c| super::reader::Reader::prepare(c, SQL)?.query_row([tenant_id], |row| row.get(0)));
        }
        let row = sqlx::query(SQL).bind(tenant_id).fetch_one(&self.pool).await?;
        Ok(row.try_get("s")?)
    }

    async fn with_roles(&self, tenant_id: i64, mut users: Vec<ActualUser>) -> Result<Vec<ActualUser>, StoreError> {
        if users.is_empty() {
            return Ok(users);
        }
        let mut idx: HashMap<String, usize> = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            idx.insert(u.id.clone(), i);
        }
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        const SQL: &str = "SELECT user_id, role FROM user_roles WHERE tenant_id = $1 AND user_id IN {keys}";
        if let Some(r) = self.reader.clone() {
            let args = vec![Val::Int(tenant_id), json_list(&ids)];
            let rows: Vec<(String, String)> =
                blocking(move || r.query_all(&keys_as_json(SQL), &args, |row| Ok((row.get(0)?, row.get(1)?)))).await?;
            for (uid, role) in rows {
                if let Some(&i) = idx.get(&uid) {
                    users[i].roles.insert(role);
                }
            }
            return Ok(users);
        }
        for chunk in ids.chunks(500) {
            let sql = keys_listed(SQL, chunk.len());
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                let uid: String = r.try_get("user_id")?;
                if let Some(&i) = idx.get(&uid) {
                    users[i].roles.insert(r.try_get("role")?);
                }
            }
        }
        Ok(users)
    }

    async fn actual_where(
        &self,
        tenant_id: i64,
        col: &str,
        values: &[String],
        extra: &str,
    ) -> Result<Vec<ActualUser>, StoreError> {
        let mut out = Vec::new();
        if values.is_empty() {
            return Ok(out);
        }
        let sql = format!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND {col} IN {{keys}} {extra}");
        if let Some(r) = self.reader.clone() {
            let (sql, args) = (keys_as_json(&sql), vec![Val::Int(tenant_id), json_list(values)]);
            let out = blocking(move || r.query_all(&sql, &args, user_from_sqlite)).await?;
            return self.with_roles(tenant_id, out).await;
        }
        for chunk in values.chunks(500) {
            let sql = keys_listed(&sql, chunk.len());
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(user_from_row(&r)?);
            }
        }
        self.with_roles(tenant_id, out).await
    }

    /// The actual users that could match these desired users: linked to one of the SCIM ids, or
    /// holding one of the emails, or soft-deleted with one of the external ids.
    ///
    /// # Errors
    /// Database errors.
    pub async fn actual_candidates(
        &self,
        tenant_id: i64,
        scim_ids: &[String],
        emails_lc: &[String],
        external_ids: &[String],
    ) -> Result<Vec<ActualUser>, StoreError> {
        let mut all = self.actual_where(tenant_id, "scim_id", scim_ids, "").await?;
        all.extend(self.actual_where(tenant_id, "email_lc", emails_lc, "AND status <> 'purged'").await?);
        all.extend(self.actual_where(tenant_id, "external_id", external_ids, "AND status = 'deleted'").await?);
        let mut seen = std::collections::HashSet::new();
        all.retain(|u| seen.insert(u.id.clone()));
        Ok(all)
    }

    /// A batch of desired users in SCIM-id order after `after_id`: (SCIM id, document as
    /// stored). The full run's read of the desired state, one key range at a time.
    ///
    /// # Errors
    /// Database errors.
    pub async fn desired_docs_after(
        &self,
        tenant_id: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        const SQL: &str = "SELECT id, doc FROM scim_users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3";
        if let Some(r) = self.reader.clone() {
            let args = vec![Val::Int(tenant_id), Val::from(after_id), Val::Int(limit)];
            return blocking(move || r.query_all(SQL, &args, |row| Ok((row.get(0)?, row.get(1)?)))).await;
        }
        let rows = sqlx::query(SQL).bind(tenant_id).bind(after_id).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("doc")?))).collect()
    }

    /// The group displayNames of the SCIM users with ids in `(after_id, last_id]`, by user id:
    /// one range read of `scim_group_members_member` joined to the groups.
    ///
    /// # Errors
    /// Database errors.
    pub async fn groups_in_range(
        &self,
        tenant_id: i64,
        after_id: &str,
        last_id: &str,
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        const SQL: &str = "SELECT m.member_id, g.display_name FROM scim_group_members m JOIN scim_groups g \
             ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
             WHERE m.tenant_id = $1 AND m.member_id > $2 AND m.member_id <= $3";
        let pairs: Vec<(String, String)> = if let Some(r) = self.reader.clone() {
            let args = vec![Val::Int(tenant_id), Val::from(after_id), Val::from(last_id)];
            blocking(move || r.query_all(SQL, &args, |row| Ok((row.get(0)?, row.get(1)?)))).await?
        } else {
            let rows = sqlx::query(SQL).bind(tenant_id).bind(after_id).bind(last_id).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("member_id")?, r.try_get("display_name")?)))
                .collect::<Result<_, sqlx::Error>>()?
        };
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (member, name) in pairs {
            out.entry(member).or_default().push(name);
        }
        Ok(out)
    }

    /// A page of the users (any status, with their roles) linked to a SCIM id in `(after, last]`,
    /// in SCIM-id order; a missing bound leaves that side open. One range read of
    /// `users_scim_id` with the roles joined in, at most `limit` rows: when the page is full,
    /// also the SCIM id to read the rest of the range after.
    ///
    /// # Errors
    /// Database errors.
    pub async fn linked_in_range(
        &self,
        tenant_id: i64,
        after: Option<&str>,
        last: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<ActualUser>, Option<String>), StoreError> {
        let cols = USER_COLS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
        let mut sql = format!(
            "SELECT {cols}, r.role AS role FROM users u LEFT JOIN user_roles r \
             ON r.tenant_id = u.tenant_id AND r.user_id = u.id WHERE u.tenant_id = $1 AND u.scim_id IS NOT NULL"
        );
        let mut n = 1;
        for (bound, op) in [(after, ">"), (last, "<=")] {
            if bound.is_some() {
                n += 1;
                sql.push_str(&format!(" AND u.scim_id {op} ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY u.scim_id LIMIT ${}", n + 1));
        // (user, role) rows, the user repeated once per role.
        let rows: Vec<(ActualUser, Option<String>)> = if let Some(r) = self.reader.clone() {
            let mut args = vec![Val::Int(tenant_id)];
            args.extend([after, last].into_iter().flatten().map(Val::from));
            args.push(Val::Int(limit));
            blocking(move || r.query_all(&sql, &args, |row| Ok((user_from_sqlite(row)?, row.get(ROLE_COL)?)))).await?
        } else {
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for v in [after, last].into_iter().flatten() {
                q = q.bind(v);
            }
            let rows = q.bind(limit).fetch_all(&self.pool).await?;
            rows.iter().map(|r| Ok((user_from_row(r)?, r.try_get("role")?))).collect::<Result<_, StoreError>>()?
        };
        let n_rows = rows.len();
        let mut out: Vec<ActualUser> = Vec::new();
        for (user, role) in rows {
            if out.last().is_none_or(|u| u.id != user.id) {
                out.push(user);
            }
            if let (Some(role), Some(u)) = (role, out.last_mut()) {
                u.roles.insert(role);
            }
        }
        if (n_rows as i64) < limit {
            return Ok((out, None));
        }
        // A full page: its last user may miss roles past the limit, so it starts the next page;
        // unless it is alone (a limit below a user's roles), then its roles are read apart.
        if out.len() > 1 {
            out.pop();
        } else {
            for u in &mut out {
                u.roles.clear();
            }
            out = self.with_roles(tenant_id, out).await?;
        }
        let next = out.last().and_then(|u| u.scim_id.clone());
        Ok((out, next))
    }

    /// SCIM-managed users (not purged) linked to no SCIM id: orphans the key-range merge of the
    /// full run cannot see (none are made by the controller; a small partial index finds them).
    ///
    /// # Errors
    /// Database errors.
    pub async fn unlinked_scim_users(&self, tenant_id: i64) -> Result<Vec<ActualUser>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND scim_id IS NULL AND managed_by = 'scim' \
             AND status <> 'purged' ORDER BY id"
        );
        let rows = sqlx::query(&sql).bind(tenant_id).fetch_all(&self.pool).await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        self.with_roles(tenant_id, users).await
    }

    /// Desired users by SCIM id (those that still exist).
    ///
    /// # Errors
    /// Database errors.
    pub async fn desired_by_ids(
        &self,
        tenant_id: i64,
        ids: &[String],
    ) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
        let mut out = Vec::new();
        const SQL: &str = "SELECT id, doc FROM scim_users WHERE tenant_id = $1 AND id IN {keys} ORDER BY id";
        if let Some(r) = self.reader.clone().filter(|_| !ids.is_empty()) {
            let args = vec![Val::Int(tenant_id), json_list(ids)];
            let rows: Vec<(String, String)> =
                blocking(move || r.query_all(&keys_as_json(SQL), &args, |row| Ok((row.get(0)?, row.get(1)?)))).await?;
            out.extend(rows.into_iter().map(|(id, doc)| (id, doc, Vec::new())));
            self.add_groups(tenant_id, &mut out).await?;
            return Ok(out);
        }
        for chunk in ids.chunks(500) {
            let sql = keys_listed(SQL, chunk.len());
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            let rows = q.fetch_all(&self.pool).await?;
            out.extend(self.desired_rows(tenant_id, rows).await?);
        }
        Ok(out)
    }

    async fn desired_rows(
        &self,
        tenant_id: i64,
        rows: Vec<AnyRow>,
    ) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((r.try_get("id")?, r.try_get("doc")?, Vec::new()));
        }
        self.add_groups(tenant_id, &mut out).await?;
        Ok(out)
    }

    /// Fills in the group displayNames of desired users read without them.
    async fn add_groups(&self, tenant_id: i64, out: &mut [(String, String, Vec<String>)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = out.iter().map(|(id, _, _)| id.as_str()).collect();
        let mut groups = self.groups_of_users(tenant_id, &ids).await?;
        for (id, _, gs) in out.iter_mut() {
            if let Some(g) = groups.remove(id.as_str()) {
                *gs = g.into_iter().map(|(_, name)| name).collect();
            }
        }
        Ok(())
    }

    /// Current members (user ids) of a group.
    ///
    /// # Errors
    /// Database errors.
    pub async fn group_member_ids(&self, tenant_id: i64, group_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT member_id FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND member_type = 'User'",
        )
        .bind(tenant_id)
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("member_id").map_err(StoreError::from)).collect()
    }

    /// How many users the controller deactivated (and did not delete) and deleted on its own
    /// since `since` (operator approved or released changes are the operator's).
    ///
    /// # Errors
    /// Database errors.
    pub async fn recent_destructive(&self, tenant_id: i64, since: &str) -> Result<(i64, i64), StoreError> {
        // By user: one deactivated and then deleted (or deactivated twice) counts once, as a
        // deletion if it was deleted.
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT user_id) AS n, COUNT(DISTINCT CASE WHEN action = 'delete' THEN user_id END) AS d \
             FROM audit_log WHERE tenant_id = $1 AND at > $2 AND actor = 'controller' \
             AND action IN ('deactivate', 'delete')",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        let (n, d): (i64, i64) = (row.try_get("n")?, row.try_get("d")?);
        Ok((n - d, d))
    }

    /// Number of SCIM-managed, not deleted users of a tenant (the safety valve's denominator).
    ///
    /// # Errors
    /// Database errors.
    pub async fn scim_user_count(&self, tenant_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1 AND managed_by = 'scim' AND status IN ('active', 'disabled')",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Applies one planned change (see `apply_batch`).
    ///
    /// # Errors
    /// Database errors. A change planned on a stale read is not an error: `Applied::Stale`.
    pub async fn apply_change(
        &self,
        tenant_id: i64,
        run_id: &str,
        actor: &str,
        c: &Change,
        now: &str,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied, StoreError> {
        let r = self.apply_batch(tenant_id, run_id, actor, &[c], now, fence).await?;
        Ok(r.into_iter().next().unwrap_or(Applied::Stale))
    }

    /// Applies planned changes, each a compare-and-set on the user's version with its roles, its
    /// side effects (sessions revoked, outbox events) and an audit row, all under one commit
    /// (one fsync for the batch). A change whose user moved is `Applied::Stale` and writes
    /// nothing (its compare-and-set comes first), and every change is `Applied::LostLease` when
    /// `fence` no longer holds the tenant's lease.
    ///
    /// # Errors
    /// Database errors (nothing of the batch is then written).
    pub async fn apply_batch(
        &self,
        tenant_id: i64,
        run_id: &str,
        actor: &str,
        changes: &[&Change],
        now: &str,
        fence: Option<Fence<'_>>,
    ) -> Result<Vec<Applied>, StoreError> {
        if let Some(b) = &self.batch {
            // SQLite: one job of the batch writer, committed with the pushes around it.
            let fence = fence.map(|f| Stmt::new(FENCE_SQL).arg(tenant_id).arg(f.holder).arg(f.token));
            let work: Vec<(Stmt, Vec<Stmt>)> = changes
                .iter()
                .map(|c| (cas_stmt(tenant_id, c, now), follow_up_stmts(tenant_id, run_id, actor, c, now)))
                .collect();
            // No savepoints: a change's compare-and-set comes first, and a stale one (no row
            // matched, or a taken email) writes nothing; an error after it fails the whole
            // transaction, as it fails the whole run (see `BatchWriter::write_unguarded`).
            return b
                .write_unguarded(move |conn| {
                    if let Some(f) = &fence {
                        if exec_sqlite(conn, f)? == 0 {
                            return Ok(vec![Applied::LostLease; work.len()]);
                        }
                    }
                    work.iter().map(|(cas, follow)| apply_one_sqlite(conn, cas, follow)).collect()
                })
                .await;
        }
        let mut w = self.begin_write().await?;
        if let Some(f) = fence {
            // Fencing: a process that lost its lease (paused, partitioned) writes nothing more.
            // An UPDATE, not a SELECT: it locks the lease row to commit, so the lease cannot
            // change hands between this check and the writes below.
            let held = exec_sqlx(&mut w.tx, &Stmt::new(FENCE_SQL).arg(tenant_id).arg(f.holder).arg(f.token)).await?;
            if held == 0 {
                return Ok(vec![Applied::LostLease; changes.len()]);
            }
        }
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            sqlx::query("SAVEPOINT change").execute(&mut *w.tx).await?;
            let r = apply_one(&mut w.tx, tenant_id, run_id, actor, c, now).await;
            if !matches!(r, Ok(Applied::Done)) {
                sqlx::query("ROLLBACK TO SAVEPOINT change").execute(&mut *w.tx).await?;
            }
            sqlx::query("RELEASE SAVEPOINT change").execute(&mut *w.tx).await?;
            out.push(r?);
        }
        w.commit().await?;
        Ok(out)
    }
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

/// An outbox event.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEvent {
    /// Position in the outbox (insertion order); listings page by it.
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant_id: i64,
    pub user_id: String,
    pub idempotency_key: String,
    pub payload: Value,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

fn event_from_row(r: &AnyRow) -> Result<OutboxEvent, StoreError> {
    let payload: String = r.try_get("payload")?;
    Ok(OutboxEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        event_type: r.try_get("event_type")?,
        tenant_id: r.try_get("tenant_id")?,
        user_id: r.try_get("user_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

const EVENT_COLS: &str = "seq, id, event_type, tenant_id, user_id, idempotency_key, payload, status, attempts, \
                          next_attempt_at, last_error, created_at, delivered_at";

/// An outbox row `o` that may be claimed at `$1` (now): pending, due, not leased, and the first
/// pending event of its (tenant, user) — the `outbox_user_pending` index answers the last part.
const CLAIMABLE: &str = "o.status = 'pending' AND o.next_attempt_at <= $1 \
     AND (o.claimed_until IS NULL OR o.claimed_until <= $1) \
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.tenant_id = o.tenant_id AND p.user_id = o.user_id \
     AND p.status = 'pending' AND p.seq < o.seq)";

impl Store {
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
                Ok(RunRow {
                    id: r.try_get("id")?,
                    trigger: r.try_get("trigger")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    status: r.try_get("status")?,
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                    fingerprint: r.try_get("fingerprint")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    /// A page of a tenant's outbox, oldest first: events after position `after_seq`, at most
    /// `limit`, optionally only of one type and/or about one user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_page(
        &self,
        tenant_id: i64,
        after_seq: i64,
        limit: i64,
        event_type: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut cond = String::new();
        let mut args: Vec<&str> = Vec::new();
        for (col, v) in [("event_type", event_type), ("user_id", user_id)] {
            if let Some(v) = v {
                args.push(v);
                cond.push_str(&format!(" AND {col} = ${}", args.len() + 2));
            }
        }
        let sql = format!(
            "SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 AND seq > $2{cond} ORDER BY seq LIMIT ${}",
            args.len() + 3
        );
        let mut q = sqlx::query(&sql).bind(tenant_id).bind(after_seq);
        for a in args {
            q = q.bind(a);
        }
        q = q.bind(limit.max(1));
        q.fetch_all(&self.pool).await?.iter().map(event_from_row).collect()
    }

    /// The outbox at a metrics scrape: events not yet delivered (all tenants), and when the
    /// oldest of them (by position) was queued. One query over the partial index
    /// `outbox_undelivered`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<String>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, (SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1) \
             AS oldest FROM outbox WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get::<i64, _>("n")?, row.try_get::<Option<String>, _>("oldest")?))
    }

    /// A tenant's outbox, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_outbox(&self, tenant_id: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox WHERE tenant_id = $1 ORDER BY seq"))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Claims up to `limit` due events for delivery, oldest first: each is leased to this
    /// deliverer until `lease_secs` from now (`claimed_until`, a compare-and-set, so only one
    /// deliverer holds it; one that dies leaves it to be retried when the lease runs out).
    ///
    /// Only the first pending event of each (tenant, user) is ever claimed: a user's later
    /// event waits while an earlier one is pending (being delivered, or failing), so a user's
    /// events go out in the order they were written, across replicas. Tenant events (an empty
    /// `user_id`) are ordered the same way among themselves, per tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due_events(&self, limit: i64, lease_secs: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let now = chrono::Utc::now();
        let now_s = crate::domain::fmt_time(now);
        let lease = crate::domain::fmt_time(now + chrono::Duration::seconds(lease_secs));
        let rows = sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox o WHERE {CLAIMABLE} ORDER BY seq LIMIT $2"))
            .bind(&now_s)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let events: Vec<OutboxEvent> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        if events.is_empty() {
            return Ok(events);
        }
        let stmts = events
            .iter()
            .map(|ev| {
                Stmt::new(format!("UPDATE outbox AS o SET claimed_until = $3 WHERE o.id = $2 AND {CLAIMABLE}"))
                    .arg(now_s.as_str())
                    .arg(ev.id.as_str())
                    .arg(lease.as_str())
            })
            .collect();
        let changed = self.write_stmts(stmts).await?;
        Ok(events.into_iter().zip(changed).filter(|(_, n)| *n == 1).map(|(ev, _)| ev).collect())
    }

    /// Marks an event delivered (and ends its claim).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_delivered(&self, id: &str) -> Result<(), StoreError> {
        let stmt = Stmt::new(
            "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = $1, last_error = NULL, \
             claimed_until = NULL WHERE id = $2 AND status = 'pending'",
        )
        .arg(crate::domain::now())
        .arg(id);
        self.write_stmts(vec![stmt]).await.map(drop)
    }

    /// Records a failed delivery and when to try again (and ends its claim).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_failed(&self, id: &str, next_attempt_at: &str, error: &str) -> Result<(), StoreError> {
        let stmt = Stmt::new(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, claimed_until = NULL \
             WHERE id = $3 AND status = 'pending'",
        )
        .arg(next_attempt_at)
        .arg(error)
        .arg(id);
        self.write_stmts(vec![stmt]).await.map(drop)
    }

    /// Makes every pending event waiting out a backoff due now (the receiver answers again);
    /// how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn reset_outbox_backoff(&self) -> Result<u64, StoreError> {
        let now = crate::domain::now();
        let stmt =
            Stmt::new("UPDATE outbox SET next_attempt_at = $1 WHERE status = 'pending' AND next_attempt_at > $1")
                .arg(now.as_str());
        Ok(self.write_stmts(vec![stmt]).await?.into_iter().sum())
    }

    /// Which of `scim_ids` exist in a tenant's desired state.
    ///
    /// # Errors
    /// Database errors.
    pub async fn existing_scim_ids(&self, tenant_id: i64, scim_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for chunk in scim_ids.chunks(500) {
            let sql =
                format!("SELECT id FROM scim_users WHERE tenant_id = $1 AND id IN ({})", placeholders(2, chunk.len()));
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(r.try_get("id")?);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// A batch of SCIM-managed, not purged users in id order after `after_id`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn scim_users_after(
        &self,
        tenant_id: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<ActualUser>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id > $2 AND managed_by = 'scim' \
             AND status <> 'purged' ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(tenant_id).bind(after_id).bind(limit).fetch_all(&self.pool).await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        self.with_roles(tenant_id, users).await
    }
}

/// The compare-and-set that applies a change to the user's row: an insert for a new user, else
/// an update guarded by the version the plan read (which clears `hand_edited`: the last write is
/// the controller's). It wrote nothing (0 rows, or a UNIQUE violation) when the user moved
/// since: the change is stale.
fn cas_stmt(tenant_id: i64, c: &Change, now: &str) -> Stmt {
    let a = &c.after;
    match c.before_version {
        None => Stmt::new(
            "INSERT INTO users (tenant_id, id, email, email_lc, display_name, contact_email, status, managed_by, \
             scim_id, external_id, purge_after, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12)",
        )
        .arg(tenant_id)
        .arg(&c.user_id)
        .arg(&a.email)
        .arg(crate::scim::validate::identity_key(&a.email))
        .arg(&a.display_name)
        .arg(&a.contact_email)
        .arg(a.status.as_str())
        .arg(a.managed_by.as_str())
        .arg(&a.scim_id)
        .arg(&a.external_id)
        .arg(&a.purge_after)
        .arg(now),
        Some(v) => {
            let email_lc = if a.status == Status::Purged {
                format!("purged:{}", c.user_id)
            } else {
                crate::scim::validate::identity_key(&a.email)
            };
            Stmt::new(
                "UPDATE users SET email = $1, email_lc = $2, display_name = $3, contact_email = $4, status = $5, \
                 managed_by = $6, scim_id = $7, external_id = $8, purge_after = $9, version = version + 1, \
                 hand_edited = 0, updated_at = $10 WHERE tenant_id = $11 AND id = $12 AND version = $13",
            )
            .arg(&a.email)
            .arg(email_lc)
            .arg(&a.display_name)
            .arg(&a.contact_email)
            .arg(a.status.as_str())
            .arg(a.managed_by.as_str())
            .arg(&a.scim_id)
            .arg(&a.external_id)
            .arg(&a.purge_after)
            .arg(now)
            .arg(tenant_id)
            .arg(&c.user_id)
            .arg(v)
        }
    }
}

/// What follows a successful compare-and-set, in the same transaction: the roles set to exactly
/// `after.roles`, sessions revoked, a purge's data deleted, outbox events, the audit row.
fn follow_up_stmts(tenant_id: i64, run_id: &str, actor: &str, c: &Change, now: &str) -> Vec<Stmt> {
    let a = &c.after;
    let mut out = Vec::new();
    // The roles are set to exactly `after.roles`. Unless the plan read them equal to that: every
    // writer of a user's roles bumps its version, and the plan read the roles no earlier than
    // the version the compare-and-set above matched, so they are still what it read (most
    // changes of a drift repair touch the profile alone; this saves their role statements).
    if c.before.as_ref().is_none_or(|b| b.roles != a.roles) {
        let sql = if a.roles.is_empty() {
            "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2".to_string()
        } else {
            format!(
                "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2 AND role NOT IN ({})",
                placeholders(3, a.roles.len())
            )
        };
        let mut del = Stmt::new(sql).arg(tenant_id).arg(&c.user_id);
        for r in &a.roles {
            del = del.arg(r);
        }
        out.push(del);
        for role in &a.roles {
            out.push(
                Stmt::new(
                    "INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, user_id, role) DO NOTHING",
                )
                .arg(tenant_id)
                .arg(&c.user_id)
                .arg(role),
            );
        }
    }
    if matches!(a.status, Status::Disabled | Status::Deleted | Status::Purged) {
        out.push(
            Stmt::new(
                "UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
            )
            .arg(now)
            .arg(tenant_id)
            .arg(&c.user_id),
        );
    }
    if c.kind == ChangeKind::Purge {
        for table in ["sessions", "preferences", "api_keys", "workspace_memberships", "user_roles"] {
            out.push(
                Stmt::new(format!("DELETE FROM {table} WHERE tenant_id = $1 AND user_id = $2"))
                    .arg(tenant_id)
                    .arg(&c.user_id),
            );
        }
    }
    let version = c.before_version.map_or(1, |v| v + 1);
    let payload = json!({
        "tenant_id": tenant_id,
        "user_id": c.user_id,
        "email": a.email,
        "display_name": a.display_name,
        "contact_email": a.contact_email,
        "status": a.status,
        "roles": a.roles,
        "run_id": run_id,
    });
    let uid = &c.user_id;
    // The welcome email: at most once per user, ever (a unique key, not a check).
    if a.status == Status::Active && matches!(c.kind, ChangeKind::Create | ChangeKind::Reactivate | ChangeKind::Restore)
    {
        let mut p = payload.clone();
        p["type"] = json!("user.provisioned");
        out.push(outbox_stmt(
            tenant_id,
            "user.provisioned",
            uid,
            &format!("user.provisioned:{tenant_id}:{uid}"),
            &p,
            now,
        ));
    }
    let event = match c.kind {
        ChangeKind::Deactivate => Some("user.deactivated"),
        ChangeKind::Delete => Some("user.deleted"),
        ChangeKind::Restore => Some("user.restored"),
        ChangeKind::Purge => Some("user.purged"),
        _ => None,
    };
    if let Some(ev) = event {
        let mut p = payload.clone();
        p["type"] = json!(ev);
        out.push(outbox_stmt(tenant_id, ev, uid, &format!("{ev}:{tenant_id}:{uid}:{version}"), &p, now));
    }
    let before = c.before.as_ref().map(|b| json!(b));
    out.push(audit_stmt(
        tenant_id,
        Some(run_id),
        actor,
        c.kind.as_str(),
        Some(uid),
        before.as_ref(),
        Some(&json!(a)),
        now,
    ));
    out
}

/// Whether a compare-and-set wrote its row.
fn written(r: Result<u64, ExecError>) -> Result<bool, StoreError> {
    match r {
        Ok(n) => Ok(n == 1),
        Err(ExecError::Unique) => Ok(false),
        Err(ExecError::Db(e)) => Err(e),
    }
}

/// One change inside a batch transaction (sqlx).
async fn apply_one(
    tx: &mut Transaction<'static, Any>,
    tenant_id: i64,
    run_id: &str,
    actor: &str,
    c: &Change,
    now: &str,
) -> Result<Applied, StoreError> {
    if !written(exec_sqlx(tx, &cas_stmt(tenant_id, c, now)).await)? {
        return Ok(Applied::Stale);
    }
    for s in follow_up_stmts(tenant_id, run_id, actor, c, now) {
        exec_sqlx(tx, &s).await?;
    }
    Ok(Applied::Done)
}

/// One change inside a batch of the SQLite batch writer.
fn apply_one_sqlite(conn: &rusqlite::Connection, cas: &Stmt, follow: &[Stmt]) -> Result<Applied, StoreError> {
    if !written(exec_sqlite(conn, cas))? {
        return Ok(Applied::Stale);
    }
    for s in follow {
        exec_sqlite(conn, s)?;
    }
    Ok(Applied::Done)
}

#[cfg(test)]
mod tests {
    /// `user_from_sqlite` reads `USER_COLS` by position, and `linked_in_range` the role after them.
    #[test]
    fn user_columns_are_where_user_from_sqlite_reads_them() {
        let cols: Vec<&str> = super::USER_COLS.split(", ").collect();
        assert_eq!(
            cols,
            [
                "id",
                "email",
                "display_name",
                "contact_email",
                "status",
                "managed_by",
                "scim_id",
                "external_id",
                "purge_after",
                "version",
                "hand_edited"
            ]
        );
        assert_eq!(super::ROLE_COL, cols.len());
    }
}
