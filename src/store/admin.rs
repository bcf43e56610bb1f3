//! What the admin API reads and writes beyond the controller's own functions: the operator's view
//! of Moonborn users (with roles and live sessions), the audit trail, tenant-scoped token
//! revocation, and the Moonborn-side hand actions that create the drift a real app would (manual
//! invites, sign-ins, role and profile edits, API keys, preferences, workspace memberships).
//!
//! Every hand action is one transaction with an audit row (actor `admin`). Actions that change a
//! user bump `users.version`, so a controller run that planned on the old state finds its
//! compare-and-set stale and re-plans; those that change what SCIM owns (profile, status, roles)
//! set `users.hand_edited`, so the plan that reverts them says it is drift repair. Every action
//! starts with an `UPDATE` of the user's row: that takes the row lock on PostgreSQL (on SQLite the
//! writer lock serialises anyway), so a hand action and a controller change of the same user never
//! interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::actual::audit_stmt;
use super::exec::exec_sqlx;
use super::Backend;
use super::{Store, StoreError};
use crate::domain::now;
use crate::domain::{ManagedBy, Status};

const COLS: &str =
    "id, email, email_lc, display_name, contact_email, status, managed_by, scim_id, external_id, purge_after, \
                    version, hand_edited, created_at, updated_at";

/// A Moonborn user as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AdminUser {
    pub id: String,
    /// The sign-in email (empty once purged).
    pub email: String,
    /// What the listing orders by: the email lower-cased (`purged:<id>` once purged).
    #[serde(skip)]
    pub email_lc: String,
    pub display_name: Option<String>,
    pub contact_email: Option<String>,
    pub status: Status,
    /// Sorted.
    pub roles: Vec<String>,
    pub managed_by: ManagedBy,
    pub scim_id: Option<String>,
    pub external_id: Option<String>,
    /// Sessions not revoked.
    pub active_sessions: i64,
    pub purge_after: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Why a hand action was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandError {
    /// No such user in the tenant.
    #[error("no such user")]
    NotFound,
    /// The action conflicts with the user's state (taken email, purged user, …).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<super::exec::ExecError> for HandError {
    fn from(e: super::exec::ExecError) -> HandError {
        HandError::Store(e.into())
    }
}

impl From<sqlx::Error> for HandError {
    fn from(e: sqlx::Error) -> Self {
        HandError::Store(StoreError::Db(e))
    }
}

/// A manual invite.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: Option<String>,
    pub contact_email: Option<String>,
    pub roles: BTreeSet<String>,
}

/// A hand edit of a user: `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub display_name: Option<Option<String>>,
    pub contact_email: Option<Option<String>>,
    /// Only `Active` or `Disabled`.
    pub status: Option<Status>,
}

impl UserEdit {
    /// Whether the edit names no field.
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.contact_email.is_none() && self.status.is_none()
    }
}

/// A sign-in session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// An API key (never touched by the controller).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: String,
}

/// A manual workspace membership (never touched by the controller).
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub user_id: String,
    pub workspace: String,
    pub created_at: String,
}

/// What the controller must never touch, for one user.
#[derive(Debug, Clone, Serialize)]
pub struct Extras {
    pub api_keys: Vec<ApiKey>,
    /// Key → value (any JSON).
    pub preferences: BTreeMap<String, Value>,
    pub workspaces: Vec<Workspace>,
}

/// One row of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub run_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub user_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub at: String,
}

/// Which users to list.
enum Which<'a> {
    /// A page in email order (case-insensitive, then id): users after the one with id `after`
    /// (none: from the start), at most `limit`; with `email_lc`, only those holding it.
    Page {
        email_lc: Option<&'a str>,
        after: Option<(&'a str, &'a str)>,
        limit: i64,
        /// Only users not purged (who have an email to find them by).
        live: bool,
    },
    Id(&'a str),
}

fn user_from_row(r: &AnyRow) -> Result<AdminUser, StoreError> {
    // The shared columns are read and checked as the controller reads them.
    let u = super::actual::user_from(r)?;
    Ok(AdminUser {
        id: u.id,
        email: u.email,
        email_lc: r.try_get("email_lc")?,
        display_name: u.display_name,
        contact_email: u.contact_email,
        status: u.status,
        managed_by: u.managed_by,
        scim_id: u.scim_id,
        external_id: u.external_id,
        roles: Vec::new(),
        active_sessions: 0,
        purge_after: u.purge_after,
        version: u.version,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn json_text(s: Option<String>) -> Option<Value> {
    s.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

/// Locks a user's row for a hand action and checks it may take one. With `bump`, the user's
/// version moves (a change the controller must notice); without, the row is only locked.
/// `need_active` refuses users that are not active (a sign-in). Answers the user's status.
async fn lock_user(
    tx: &mut sqlx::AnyConnection,
    tenant_id: i64,
    user_id: &str,
    bump: bool,
    need_active: bool,
    now: &str,
) -> Result<Status, HandError> {
    let cond = if need_active { "status = 'active'" } else { "status <> 'purged'" };
    let n = if bump {
        let sql = format!(
            "UPDATE users SET version = version + 1, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND {cond}"
        );
        sqlx::query(&sql).bind(tenant_id).bind(user_id).bind(now).execute(&mut *tx).await?
    } else {
        let sql = format!("UPDATE users SET updated_at = updated_at WHERE tenant_id = $1 AND id = $2 AND {cond}");
        sqlx::query(&sql).bind(tenant_id).bind(user_id).execute(&mut *tx).await?
    }
    .rows_affected();
    let row = sqlx::query("SELECT status FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Err(HandError::NotFound) };
    let status: String = row.try_get("status")?;
    let status = Status::parse(&status).ok_or_else(|| StoreError::Invalid(format!("bad status {status}")))?;
    if n == 0 {
        return Err(HandError::Conflict(match status {
            Status::Purged => format!("user {user_id} was purged"),
            s => format!("user {user_id} is {}; only active users can sign in", s.as_str()),
        }));
    }
    Ok(status)
}

/// Records that a hand edit changed what SCIM owns of a user (the controller's next write of it
/// clears the mark). Not for an edit that changed nothing: the IdP's next change is not drift.
async fn mark_hand_edited(tx: &mut sqlx::AnyConnection, tenant_id: i64, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET hand_edited = 1 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn roles_in_tx(
    tx: &mut sqlx::AnyConnection,
    tenant_id: i64,
    user_id: &str,
) -> Result<BTreeSet<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT role FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(|r| r.try_get("role")).collect()
}

async fn insert_roles(
    tx: &mut sqlx::AnyConnection,
    tenant_id: i64,
    user_id: &str,
    roles: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    for role in roles {
        sqlx::query(
            "INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, user_id, role) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl Store {
    async fn admin_users(&self, tenant_id: i64, which: Which<'_>) -> Result<Vec<AdminUser>, StoreError> {
        // Byte order on both backends (SQLite compares text as bytes; PostgreSQL would use the
        // database's collation): the order of `email_lc`, then id, is the same everywhere.
        let c = if self.backend == Backend::Postgres { " COLLATE \"C\"" } else { "" };
        let mut args: Vec<&str> = Vec::new();
        let sql = match &which {
            Which::Page { email_lc, after, live, .. } => {
                let mut cond = String::new();
                if *live {
                    // (What the partial index `users_email` covers.)
                    cond.push_str(" AND status <> 'purged'");
                }
                if let Some(e) = email_lc {
                    args.push(e);
                    cond.push_str(&format!(" AND email_lc = ${}", args.len() + 1));
                }
                if let Some((ae, aid)) = after {
                    args.extend([*ae, *ae, *aid]);
                    let n = args.len() + 1;
                    // The first term alone is a range an index on email_lc can seek to.
                    cond.push_str(&format!(
                        " AND email_lc{c} >= ${a} AND (email_lc{c} > ${a} OR (email_lc{c} = ${} AND id{c} > ${n}))",
                        n - 1,
                        a = n - 2
                    ));
                }
                format!(
                    "SELECT {COLS} FROM users WHERE tenant_id = $1{cond} ORDER BY email_lc{c}, id{c} LIMIT ${}",
                    args.len() + 2
                )
            }
            Which::Id(id) => {
                args.push(id);
                format!("SELECT {COLS} FROM users WHERE tenant_id = $1 AND id = $2")
            }
        };
        let mut q = sqlx::query(&sql).bind(tenant_id);
        for a in &args {
            q = q.bind(*a);
        }
        if let Which::Page { limit, .. } = which {
            q = q.bind(limit);
        }
        let mut users = q.fetch_all(&self.pool).await?.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        if users.is_empty() {
            return Ok(users);
        }
        // Roles and live sessions of the users listed: one query each.
        let ids = (0..users.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let rsql = format!("SELECT user_id, role FROM user_roles WHERE tenant_id = $1 AND user_id IN ({ids})");
        let ssql = format!(
            "SELECT user_id, COUNT(*) AS n FROM sessions WHERE tenant_id = $1 AND user_id IN ({ids}) \
             AND revoked_at IS NULL GROUP BY user_id"
        );
        let mut roles: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut q = sqlx::query(&rsql).bind(tenant_id);
        for u in &users {
            q = q.bind(u.id.as_str());
        }
        for r in q.fetch_all(&self.pool).await? {
            roles.entry(r.try_get("user_id")?).or_default().insert(r.try_get("role")?);
        }
        let mut sessions: HashMap<String, i64> = HashMap::new();
        let mut q = sqlx::query(&ssql).bind(tenant_id);
        for u in &users {
            q = q.bind(u.id.as_str());
        }
        for r in q.fetch_all(&self.pool).await? {
            sessions.insert(r.try_get("user_id")?, r.try_get("n")?);
        }
        for u in &mut users {
            u.roles = roles.remove(&u.id).map(|r| r.into_iter().collect()).unwrap_or_default();
            u.active_sessions = sessions.get(&u.id).copied().unwrap_or(0);
        }
        Ok(users)
    }

    /// A page of a tenant's Moonborn users, ordered by email compared case-insensitively, then
    /// id; purged users too unless `live` (a purged user's email is erased: it sorts as
    /// `purged:<id>`; without them — the console's Users page — a page is read along the index
    /// of sign-in emails, however large the tenant). With `email`, only users holding that
    /// sign-in email (compared case-insensitively); with `after` (`email_lc`, id), those after
    /// that position; at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn admin_list_users(
        &self,
        tenant_id: i64,
        email: Option<&str>,
        after: Option<(&str, &str)>,
        limit: i64,
        live: bool,
    ) -> Result<Vec<AdminUser>, StoreError> {
        let email_lc = email.map(crate::scim::validate::identity_key);
        let which = Which::Page { email_lc: email_lc.as_deref(), after, limit: limit.max(1), live };
        self.admin_users(tenant_id, which).await
    }

    /// One Moonborn user.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such user.
    pub async fn admin_user(&self, tenant_id: i64, user_id: &str) -> Result<AdminUser, StoreError> {
        self.admin_users(tenant_id, Which::Id(user_id)).await?.pop().ok_or(StoreError::NotFound)
    }

    /// Revokes a tenant's SCIM token. Answers false when the tenant has no token with that id;
    /// revoking a revoked token is a no-op that answers true.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_tenant_token(&self, tenant_id: i64, token_id: &str, actor: &str) -> Result<bool, StoreError> {
        let now = now();
        let mut w = self.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE scim_tokens SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(&now)
        .bind(token_id)
        .bind(tenant_id)
        .execute(&mut *w.tx)
        .await?
        .rows_affected()
            == 1;
        if revoked {
            let after = serde_json::json!({"id": token_id});
            exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "token_revoke", None, None, Some(&after), &now))
                .await?;
        }
        let found = sqlx::query("SELECT 1 AS one FROM scim_tokens WHERE id = $1 AND tenant_id = $2")
            .bind(token_id)
            .bind(tenant_id)
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        w.commit().await?;
        self.auth_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(found)
    }

    /// A tenant's audit trail, oldest first: entries after `after_seq`, at most `limit`,
    /// optionally only those about one user.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_audit(
        &self,
        tenant_id: i64,
        after_seq: i64,
        limit: i64,
        user_id: Option<&str>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let cond = if user_id.is_some() { " AND user_id = $4" } else { "" };
        let sql = format!(
            "SELECT seq, run_id, actor, action, user_id, before, after, at FROM audit_log \
             WHERE tenant_id = $1 AND seq > $2{cond} ORDER BY seq LIMIT $3"
        );
        let mut q = sqlx::query(&sql).bind(tenant_id).bind(after_seq).bind(limit);
        if let Some(u) = user_id {
            q = q.bind(u);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(columns!(r, AuditEntry { seq, run_id, actor, action, user_id, at } + {
                    before: json_text(r.try_get("before")?),
                    after: json_text(r.try_get("after")?),
                }))
            })
            .collect()
    }

    /// A manual invite: a new active user managed by hand. Answers its id.
    ///
    /// # Errors
    /// `Conflict` when a user that is not purged holds the email (case-insensitively).
    pub async fn invite_user(&self, tenant_id: i64, u: &NewUser, actor: &str) -> Result<String, HandError> {
        let id = format!("usr_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
        let now = now();
        let mut w = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO users (tenant_id, id, email, email_lc, display_name, contact_email, status, managed_by, \
             scim_id, external_id, purge_after, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'active', 'manual', NULL, NULL, NULL, 1, $7, $7)",
        )
        .bind(tenant_id)
        .bind(&id)
        .bind(&u.email)
        .bind(crate::scim::validate::identity_key(&u.email))
        .bind(&u.display_name)
        .bind(&u.contact_email)
        .bind(&now)
        .execute(&mut *w.tx)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if StoreError::is_unique(&e) => {
                return Err(HandError::Conflict(format!("a user with email {} already exists", u.email)))
            }
            Err(e) => return Err(e.into()),
        }
        insert_roles(&mut w.tx, tenant_id, &id, &u.roles).await?;
        let after = json!({
            "email": u.email,
            "display_name": u.display_name,
            "contact_email": u.contact_email,
            "status": "active",
            "managed_by": "manual",
            "roles": u.roles,
        });
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "invite", Some(&id), None, Some(&after), &now))
            .await?;
        w.commit().await?;
        Ok(id)
    }

    /// A sign-in: a new session of an active user.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user is not active.
    pub async fn sign_in(&self, tenant_id: i64, user_id: &str, actor: &str) -> Result<Session, HandError> {
        let now = now();
        let s = Session {
            id: format!("ses_{}", uuid::Uuid::new_v4().simple()),
            user_id: user_id.to_string(),
            created_at: now.clone(),
            revoked_at: None,
        };
        let mut w = self.begin_write().await?;
        lock_user(&mut w.tx, tenant_id, user_id, true, true, &now).await?;
        sqlx::query("INSERT INTO sessions (id, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&s.id)
            .bind(tenant_id)
            .bind(user_id)
            .bind(&now)
            .execute(&mut *w.tx)
            .await?;
        let after = json!({"session_id": s.id});
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "sign_in", Some(user_id), None, Some(&after), &now))
            .await?;
        w.commit().await?;
        Ok(s)
    }

    /// A user's sessions, newest first.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such user.
    pub async fn list_sessions(&self, tenant_id: i64, user_id: &str) -> Result<Vec<Session>, StoreError> {
        self.admin_user(tenant_id, user_id).await?;
        let rows = sqlx::query(
            "SELECT id, user_id, created_at, revoked_at FROM sessions WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY created_at DESC, id",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Session {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Replaces a user's roles by hand.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user was purged.
    pub async fn set_user_roles(
        &self,
        tenant_id: i64,
        user_id: &str,
        roles: &BTreeSet<String>,
        actor: &str,
    ) -> Result<(), HandError> {
        let now = now();
        let mut w = self.begin_write().await?;
        lock_user(&mut w.tx, tenant_id, user_id, true, false, &now).await?;
        let before = roles_in_tx(&mut w.tx, tenant_id, user_id).await?;
        sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *w.tx)
            .await?;
        insert_roles(&mut w.tx, tenant_id, user_id, roles).await?;
        if before != *roles {
            mark_hand_edited(&mut w.tx, tenant_id, user_id).await?;
        }
        let (b, a) = (json!({"roles": before}), json!({"roles": roles}));
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "set_roles", Some(user_id), Some(&b), Some(&a), &now))
            .await?;
        w.commit().await?;
        Ok(())
    }

    /// Edits a user's profile or status by hand. Disabling signs the user out (every session
    /// revoked), as the app would.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user was purged, or a status change of a deleted user.
    pub async fn edit_user(&self, tenant_id: i64, user_id: &str, e: &UserEdit, actor: &str) -> Result<(), HandError> {
        if e.is_empty() {
            return Ok(());
        }
        let now = now();
        let mut w = self.begin_write().await?;
        let status = lock_user(&mut w.tx, tenant_id, user_id, true, false, &now).await?;
        if let Some(to) = e.status {
            if status == Status::Deleted {
                return Err(HandError::Conflict(format!(
                    "user {user_id} is deleted (in its grace period); its status cannot be changed by hand"
                )));
            }
            if !matches!(to, Status::Active | Status::Disabled) {
                return Err(HandError::Conflict(format!("status {} cannot be set by hand", to.as_str())));
            }
        }
        let row = sqlx::query("SELECT display_name, contact_email FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_one(&mut *w.tx)
            .await?;
        let old_name: Option<String> = row.try_get("display_name")?;
        let old_contact: Option<String> = row.try_get("contact_email")?;
        let name = e.display_name.clone().unwrap_or_else(|| old_name.clone());
        let contact = e.contact_email.clone().unwrap_or_else(|| old_contact.clone());
        let new_status = e.status.unwrap_or(status);
        sqlx::query(
            "UPDATE users SET display_name = $1, contact_email = $2, status = $3 WHERE tenant_id = $4 AND id = $5",
        )
        .bind(&name)
        .bind(&contact)
        .bind(new_status.as_str())
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *w.tx)
        .await?;
        if (&name, &contact, new_status) != (&old_name, &old_contact, status) {
            mark_hand_edited(&mut w.tx, tenant_id, user_id).await?;
        }
        if status == Status::Active && new_status == Status::Disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
            )
            .bind(&now)
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *w.tx)
            .await?;
        }
        let before = json!({"display_name": old_name, "contact_email": old_contact, "status": status});
        let after = json!({"display_name": name, "contact_email": contact, "status": new_status});
        exec_sqlx(
            &mut w.tx,
            &audit_stmt(tenant_id, None, actor, "edit", Some(user_id), Some(&before), Some(&after), &now),
        )
        .await?;
        w.commit().await?;
        Ok(())
    }

    /// Creates an API key for a user (the controller never touches it).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user was purged.
    pub async fn create_api_key(
        &self,
        tenant_id: i64,
        user_id: &str,
        name: &str,
        actor: &str,
    ) -> Result<ApiKey, HandError> {
        let now = now();
        let k = ApiKey {
            id: format!("key_{}", uuid::Uuid::new_v4().simple()),
            user_id: user_id.to_string(),
            name: name.to_string(),
            created_at: now.clone(),
        };
        let mut w = self.begin_write().await?;
        lock_user(&mut w.tx, tenant_id, user_id, false, false, &now).await?;
        sqlx::query("INSERT INTO api_keys (id, tenant_id, user_id, name, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&k.id)
            .bind(tenant_id)
            .bind(user_id)
            .bind(name)
            .bind(&now)
            .execute(&mut *w.tx)
            .await?;
        let after = json!({"api_key_id": k.id, "name": name});
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "api_key", Some(user_id), None, Some(&after), &now))
            .await?;
        w.commit().await?;
        Ok(k)
    }

    /// Sets one of a user's personal preferences (the controller never touches them).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user was purged.
    pub async fn set_preference(
        &self,
        tenant_id: i64,
        user_id: &str,
        key: &str,
        value: &Value,
        actor: &str,
    ) -> Result<(), HandError> {
        let now = now();
        let mut w = self.begin_write().await?;
        lock_user(&mut w.tx, tenant_id, user_id, false, false, &now).await?;
        let before = sqlx::query("SELECT value FROM preferences WHERE tenant_id = $1 AND user_id = $2 AND key = $3")
            .bind(tenant_id)
            .bind(user_id)
            .bind(key)
            .fetch_optional(&mut *w.tx)
            .await?
            .map(|r| r.try_get::<String, _>("value"))
            .transpose()?;
        sqlx::query(
            "INSERT INTO preferences (tenant_id, user_id, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(key)
        .bind(value.to_string())
        .execute(&mut *w.tx)
        .await?;
        let b = before.map(|v| json!({"key": key, "value": json_text(Some(v))}));
        let a = json!({"key": key, "value": value});
        exec_sqlx(
            &mut w.tx,
            &audit_stmt(tenant_id, None, actor, "preference", Some(user_id), b.as_ref(), Some(&a), &now),
        )
        .await?;
        w.commit().await?;
        Ok(())
    }

    /// Adds a user to a workspace by hand (the controller never touches it).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` when the user was purged or already a member.
    pub async fn add_workspace(
        &self,
        tenant_id: i64,
        user_id: &str,
        workspace: &str,
        actor: &str,
    ) -> Result<Workspace, HandError> {
        let now = now();
        let mut w = self.begin_write().await?;
        lock_user(&mut w.tx, tenant_id, user_id, false, false, &now).await?;
        let n = sqlx::query(
            "INSERT INTO workspace_memberships (tenant_id, user_id, workspace, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id, workspace) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(workspace)
        .bind(&now)
        .execute(&mut *w.tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(HandError::Conflict(format!("user {user_id} is already a member of workspace {workspace:?}")));
        }
        let after = json!({"workspace": workspace});
        exec_sqlx(&mut w.tx, &audit_stmt(tenant_id, None, actor, "workspace", Some(user_id), None, Some(&after), &now))
            .await?;
        w.commit().await?;
        Ok(Workspace { user_id: user_id.to_string(), workspace: workspace.to_string(), created_at: now })
    }

    /// A user's API keys, preferences and manual workspace memberships.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such user.
    pub async fn user_extras(&self, tenant_id: i64, user_id: &str) -> Result<Extras, StoreError> {
        self.admin_user(tenant_id, user_id).await?;
        let keys = sqlx::query(
            "SELECT id, user_id, name, created_at FROM api_keys WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let prefs = sqlx::query("SELECT key, value FROM preferences WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        let spaces = sqlx::query(
            "SELECT user_id, workspace, created_at FROM workspace_memberships WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY workspace",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Extras {
            api_keys: keys
                .iter()
                .map(|r| {
                    Ok(ApiKey {
                        id: r.try_get("id")?,
                        user_id: r.try_get("user_id")?,
                        name: r.try_get("name")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
            preferences: prefs
                .iter()
                .map(|r| Ok((r.try_get("key")?, json_text(Some(r.try_get("value")?)).unwrap_or(Value::Null))))
                .collect::<Result<_, sqlx::Error>>()?,
            workspaces: spaces
                .iter()
                .map(|r| {
                    Ok(Workspace {
                        user_id: r.try_get("user_id")?,
                        workspace: r.try_get("workspace")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
        })
    }
}
