//! Moonborn's actual state: users and their roles, read by the controller, and written only by
//! `apply_change` / `apply_batch`: a compare-and-set on the user's version, fenced by the
//! tenant's lease, with the change's outbox rows and audit row in the same transaction.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use sqlx::Row;

use super::exec::{exec_sqlite, exec_sqlx, Cols, ExecError, FromCols, Stmt, Val};
use super::outbox::outbox_stmt;
use super::{blocking, json_list, keys_as_json, keys_listed, placeholders, Store, StoreError};
use crate::domain::{ActualUser, ManagedBy, Status};
use crate::domain::{Change, ChangeKind};

const USER_COLS: &str = "id, email, display_name, contact_email, status, managed_by, scim_id, external_id, \
                         purge_after, version, hand_edited";

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

/// A `users` row (without roles): the `USER_COLS` columns first, in that order (the SQLite
/// reader reads them by position, sqlx by name).
pub(super) fn user_from<R: Cols + ?Sized>(r: &R) -> Result<ActualUser, R::Error> {
    let status: String = r.col(4, "status")?;
    let managed: String = r.col(5, "managed_by")?;
    Ok(ActualUser {
        id: r.col(0, "id")?,
        email: r.col(1, "email")?,
        display_name: r.col(2, "display_name")?,
        contact_email: r.col(3, "contact_email")?,
        status: Status::parse(&status).ok_or_else(|| R::invalid(format!("bad status {status}")))?,
        managed_by: ManagedBy::parse(&managed).ok_or_else(|| R::invalid(format!("bad managed_by {managed}")))?,
        scim_id: r.col(6, "scim_id")?,
        external_id: r.col(7, "external_id")?,
        roles: BTreeSet::new(),
        purge_after: r.col(8, "purge_after")?,
        version: r.col(9, "version")?,
        hand_edited: r.col::<i64>(10, "hand_edited")? != 0,
    })
}

/// The column after `USER_COLS` in `linked_in_range`'s rows (the role).
const ROLE_COL: usize = 11;

/// A row of `linked_in_range`: a user and one of its roles (`None`: it has none).
struct WithRole(ActualUser, Option<String>);

impl FromCols for WithRole {
    fn from_cols<R: Cols + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok(WithRole(user_from(r)?, r.col(ROLE_COL, "role")?))
    }
}

/// Fencing: touches the lease row only while `holder` still holds it with that token.
const FENCE_SQL: &str =
    "UPDATE controller_leases SET fence = fence WHERE tenant_id = $1 AND holder = $2 AND fence = $3";

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
    tx: &mut sqlx::AnyConnection,
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

impl Store {
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
            let out = blocking(move || r.query_all(&sql, &args, |row| user_from(row))).await?;
            return self.with_roles(tenant_id, out).await;
        }
        for chunk in values.chunks(500) {
            let sql = keys_listed(&sql, chunk.len());
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(user_from(&r)?);
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
        let mut args = vec![Val::Int(tenant_id)];
        args.extend([after, last].into_iter().flatten().map(Val::from));
        args.push(Val::Int(limit));
        let rows: Vec<WithRole> = self.read_all(sql, args).await?;
        let n_rows = rows.len();
        let mut out: Vec<ActualUser> = Vec::new();
        for WithRole(user, role) in rows {
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
        let users = rows.iter().map(user_from).collect::<Result<Vec<_>, _>>()?;
        self.with_roles(tenant_id, users).await
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
        let users = rows.iter().map(user_from).collect::<Result<Vec<_>, _>>()?;
        self.with_roles(tenant_id, users).await
    }
}

#[cfg(test)]
mod tests {
    /// `user_from` reads `USER_COLS` by position, and `linked_in_range` the role after them.
    #[test]
    fn user_columns_are_where_user_from_reads_them() {
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
