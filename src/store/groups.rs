//! SCIM Groups as desired state: one row per group and one row per membership, so that adding or
//! removing one member costs the same whatever the group's size.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::postgres::batch::{Journal, Order};
use super::query::ListQuery;
use super::sqlite::batch::sqlite_err;
use super::sqlite::reader;
use super::RESOURCE_COLS as COLS;
use super::{record_intent, record_intent_sqlite, Intent, OwnedIntent, Store, StoreError, StoredResource};

const USER_EXISTS_SQL: &str = "SELECT 1 AS x FROM scim_users WHERE tenant_id = $1 AND id = $2";
const GROUP_EXISTS_SQL: &str = "SELECT 1 AS x FROM scim_groups WHERE tenant_id = $1 AND id = $2";
const USER_EXISTS_PG_SQL: &str = "SELECT 1 AS x FROM scim_users WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
const GROUP_EXISTS_PG_SQL: &str = "SELECT 1 AS x FROM scim_groups WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
const JOURNAL_MEMBER_SQL: &str =
    "INSERT INTO intent_journal (tenant_id, resource_type, resource_id, op, at, request_id) \
     VALUES ($1, 'User', $2, 'membership', $3, $4)";
const REMOVE_MEMBER_SQL: &str =
    "DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND member_id = $3";
const ADD_MEMBER_SQL: &str = "INSERT INTO scim_group_members (tenant_id, group_id, member_id, member_type, display) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, group_id, member_id) DO NOTHING";
const TOUCH_GROUP_SQL: &str = "UPDATE scim_groups SET version = version + 1, updated_at = $1 \
     WHERE tenant_id = $2 AND id = $3 AND ($4 < 0 OR version = $4) RETURNING seq, id, doc, version, created_at, updated_at, display_name";

/// A rename of the group that the controller has not applied yet (`intent_journal_renames`).
const PENDING_RENAME_SQL: &str = "SELECT 1 AS x FROM intent_journal WHERE tenant_id = $1 AND resource_id = $2 \
     AND op = 'rename' AND resource_type = 'Group' \
     AND seq > COALESCE((SELECT applied_journal_seq FROM controller_state WHERE tenant_id = $1), 0)";
const BINDINGS_SET_SQL: &str = "SELECT bindings_set FROM controller_state WHERE tenant_id = $1";
const BOUND_NAMES_SQL: &str = "SELECT group_name FROM group_bindings WHERE tenant_id = $1";

/// Whether a member change of group `group_id`, named `name`, can change any user's roles, so
/// that each member it adds or removes must be journaled for the controller to re-plan. Roles
/// come only from the groups whose names the tenant's bindings name (`Bindings::roles_for`), so
/// a member change of any other group changes no user's roles — the common case: IdPs push many groups, few bound —
/// and journaling (then re-planning) each member would be work for nothing. Still journaled:
/// - the group's name is bound (read here, with the tenant's bindings as the controller reads
///   them: the bundled ones until an operator sets them);
/// - a rename of the group waits for the controller: it re-plans the group's members as they
///   are when it gets to the rename, so a member removed meanwhile must be journaled itself (a
///   member removed from a bound group that was renamed to an unbound name keeps no role).
///
/// Later changes are covered elsewhere: a rename journals the group and the controller
/// re-plans its members then; a binding change runs the whole tenant. Decided inside the
/// member change's write transaction on SQLite's single writer, so no rename, binding change or
/// controller commit lands between this check and the change (on PostgreSQL, where writers run
/// side by side, every member change is journaled).
fn members_matter(c: &rusqlite::Connection, tenant_id: i64, group_id: &str, name: &str) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension as _;
    if c.prepare_cached(PENDING_RENAME_SQL)?.exists(rusqlite::params![tenant_id, group_id])? {
        return Ok(true);
    }
    let set: Option<i64> =
        c.prepare_cached(BINDINGS_SET_SQL)?.query_row(rusqlite::params![tenant_id], |r| r.get(0)).optional()?;
    if set.unwrap_or(0) == 0 {
        return Ok(crate::domain::Bindings::default_ref().binds(name));
    }
    let mut st = c.prepare_cached(BOUND_NAMES_SQL)?;
    let mut rows = st.query(rusqlite::params![tenant_id])?;
    while let Some(row) = rows.next()? {
        let bound: String = row.get(0)?;
        if crate::domain::binding_names(&bound, name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A member as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub value: String,
    /// "User" or "Group" when the request says; looked up otherwise.
    pub member_type: Option<String>,
    /// `display` as the client sent it (stored as sent, returned only when sent).
    pub display: Option<String>,
}

/// A stored member, as returned in `members`.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub value: String,
    pub member_type: String,
    pub display: Option<String>,
}

/// A change to a group's members.
#[derive(Debug, Clone)]
pub enum MemberChange {
    Add(Vec<MemberRef>),
    Remove(Vec<String>),
    RemoveAll,
    ReplaceAll(Vec<MemberRef>),
}

fn unique_group(e: sqlx::Error) -> StoreError {
    if StoreError::is_unique(&e) {
        StoreError::Conflict("displayName")
    } else {
        e.into()
    }
}

fn group_cols(doc: &Value) -> (String, Option<String>) {
    let name = doc.get("displayName").and_then(Value::as_str).unwrap_or_default().to_string();
    let ext = doc.get("externalId").and_then(Value::as_str).map(str::to_string);
    (name, ext)
}

/// Resolves a member's type within the tenant; `None` when no such user or group exists there.
async fn member_type(
    conn: &mut AnyConnection,
    tenant_id: i64,
    group_id: &str,
    m: &MemberRef,
) -> Result<Option<String>, StoreError> {
    if m.value == group_id {
        return Err(StoreError::Invalid("a group cannot be a member of itself".into()));
    }
    let want = m.member_type.as_deref().map(str::to_ascii_lowercase);
    // On PostgreSQL the member's row is share-locked to the commit: a delete of it waits for
    // this write (and then removes the membership with it) or this check waits for the delete
    // (and finds no member). SQLite's writes run one at a time.
    let (user_sql, group_sql) = if conn.backend_name() == "PostgreSQL" {
        (USER_EXISTS_PG_SQL, GROUP_EXISTS_PG_SQL)
    } else {
        (USER_EXISTS_SQL, GROUP_EXISTS_SQL)
    };
    if want.as_deref() != Some("group") {
        let found = sqlx::query(user_sql).bind(tenant_id).bind(&m.value).fetch_optional(&mut *conn).await?;
        if found.is_some() {
            return Ok(Some("User".into()));
        }
    }
    if want.as_deref() != Some("user") {
        let found = sqlx::query(group_sql).bind(tenant_id).bind(&m.value).fetch_optional(&mut *conn).await?;
        if found.is_some() {
            return Ok(Some("Group".into()));
        }
    }
    Ok(None)
}

/// A member that does not exist (a user deleted since the IdP queued its batch) is dropped, not
/// refused: the rest of the write applies, and the log and the journal name it.
fn log_dropped(tenant_id: i64, group_id: &str, member_id: &str, request_id: &str) {
    tracing::info!(tenant_id, group_id, member_id, request_id, "dropped a group member that does not exist");
}

/// Applies member changes to a group; each user added or removed is journaled through
/// `journal` (the controller re-evaluates its roles).
async fn apply_changes(
    conn: &mut AnyConnection,
    intent: &Intent<'_>,
    group_id: &str,
    changes: &[MemberChange],
    journal: &mut Journal,
) -> Result<(), StoreError> {
    let journal_member =
        |journal: &mut Journal, user_id: &str| journal.member(intent.tenant_id, user_id, intent.now, intent.request_id);
    let tenant_id = intent.tenant_id;
    for c in changes {
        let (clear, add, remove): (bool, &[MemberRef], &[String]) = match c {
            MemberChange::Add(a) => (false, a, &[]),
            MemberChange::Remove(r) => (false, &[], r),
            MemberChange::RemoveAll => (true, &[], &[]),
            MemberChange::ReplaceAll(a) => (true, a, &[]),
        };
        if clear {
            // The members a clear removes are journaled, so the controller re-evaluates them.
            let gone = sqlx::query(
                "SELECT member_id FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND member_type = 'User'",
            )
            .bind(tenant_id)
            .bind(group_id)
            .fetch_all(&mut *conn)
            .await?;
            for r in gone {
                let id: String = r.try_get("member_id")?;
                journal_member(journal, &id);
            }
            sqlx::query("DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2")
                .bind(tenant_id)
                .bind(group_id)
                .execute(&mut *conn)
                .await?;
        }
        for id in remove {
            let n = sqlx::query(REMOVE_MEMBER_SQL)
                .bind(tenant_id)
                .bind(group_id)
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if n > 0 {
                journal_member(journal, id);
            }
        }
        for m in add {
            let Some(ty) = member_type(conn, tenant_id, group_id, m).await? else {
                log_dropped(tenant_id, group_id, &m.value, intent.request_id);
                journal.dropped(tenant_id, group_id, &m.value, intent.now, intent.request_id);
                continue;
            };
            let ty = ty.as_str();
            sqlx::query(ADD_MEMBER_SQL)
                .bind(tenant_id)
                .bind(group_id)
                .bind(&m.value)
                .bind(ty)
                .bind(&m.display)
                .execute(&mut *conn)
                .await?;
            if ty == "User" {
                journal_member(journal, &m.value);
            }
        }
    }
    Ok(())
}

/// Why a member update on the batch writer failed.
enum MemberError {
    Store(StoreError),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MemberError {
    fn from(e: rusqlite::Error) -> MemberError {
        MemberError::Sqlite(e)
    }
}

/// `update_group` for member adds and removes only, inside a job of the SQLite batch writer
/// (same statements as `apply_changes`); `None` when the group is missing or its version is not
/// `expected` (≥ 0).
fn members_sqlite(
    c: &rusqlite::Connection,
    intent: &OwnedIntent,
    group_id: &str,
    expected: i64,
    changes: &[MemberChange],
    op: &str,
) -> Result<Option<StoredResource>, MemberError> {
    let t = intent.tenant_id;
    let (stored, name): (_, String) = {
        let mut st = c.prepare_cached(TOUCH_GROUP_SQL)?;
        let mut rows = st.query(rusqlite::params![intent.now, t, group_id, expected])?;
        match rows.next()? {
            Some(row) => (reader::resource(row)?, row.get(6)?),
            None => return Ok(None),
        }
    };
    record_intent_sqlite(c, intent, "Group", group_id, op)?;
    let matter = members_matter(c, t, group_id, &name)?;
    // Each statement is taken from the connection's cache once per PATCH, not once per member:
    // a PATCH of the initial sync adds 100 members, and the lookup (rewriting and hashing the
    // SQL) was a tenth of the writer's time per member.
    static STMTS: LazyLock<[String; 4]> = LazyLock::new(|| {
        [USER_EXISTS_SQL, GROUP_EXISTS_SQL, REMOVE_MEMBER_SQL, ADD_MEMBER_SQL].map(reader::Reader::rewrite)
    });
    let [user_exists_sql, group_exists_sql, remove_sql, add_sql] = &*STMTS;
    let mut journal_st = if matter { Some(c.prepare_cached(JOURNAL_MEMBER_SQL)?) } else { None };
    let mut journal = |user_id: &str| -> rusqlite::Result<()> {
        if let Some(st) = journal_st.as_mut() {
            st.execute(rusqlite::params![t, user_id, intent.now, intent.request_id])?;
        }
        Ok(())
    };
    for change in changes {
        match change {
            MemberChange::Remove(ids) => {
                let mut remove = c.prepare_cached(remove_sql)?;
                for id in ids {
                    if remove.execute(rusqlite::params![t, group_id, id])? > 0 {
                        journal(id)?;
                    }
                }
            }
            MemberChange::Add(refs) => {
                let mut user_exists = c.prepare_cached(user_exists_sql)?;
                let mut add = c.prepare_cached(add_sql)?;
                for m in refs {
                    if m.value == group_id {
                        return Err(MemberError::Store(StoreError::Invalid(
                            "a group cannot be a member of itself".into(),
                        )));
                    }
                    let want = m.member_type.as_deref().map(str::to_ascii_lowercase);
                    let ty = if want.as_deref() != Some("group") && user_exists.exists(rusqlite::params![t, m.value])? {
                        "User"
                    } else if want.as_deref() != Some("user")
                        && c.prepare_cached(group_exists_sql)?.exists(rusqlite::params![t, m.value])?
                    {
                        "Group"
                    } else {
                        log_dropped(t, group_id, &m.value, &intent.request_id);
                        c.prepare_cached(super::desired::JOURNAL_SQL)?.execute(rusqlite::params![
                            t,
                            "Group",
                            group_id,
                            format!("{} {}", super::desired::DROPPED_MEMBER, m.value),
                            intent.now,
                            intent.request_id
                        ])?;
                        continue;
                    };
                    add.execute(rusqlite::params![t, group_id, m.value, ty, m.display])?;
                    if ty == "User" {
                        journal(&m.value)?;
                    }
                }
            }
            // Not sent here (see the caller); rejected rather than ignored.
            MemberChange::RemoveAll | MemberChange::ReplaceAll(_) => {
                return Err(MemberError::Store(StoreError::Invalid("unsupported member change".into())));
            }
        }
    }
    Ok(Some(stored))
}

impl Store {
    /// Records a new group with its members.
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `Conflict("displayName")`. Members that do not exist are dropped (journaled).
    pub async fn insert_group(
        &self,
        intent: &Intent<'_>,
        id: &str,
        doc: &Value,
        members: &[MemberRef],
    ) -> Result<StoredResource, StoreError> {
        super::retrying(|| async move {
            let (name, ext) = group_cols(doc);
            let mut w = self.begin_write().await?;
            let row = sqlx::query(&format!(
                "INSERT INTO scim_groups (tenant_id, id, display_name, display_name_lc, external_id, doc, version, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING {COLS}"
            ))
            .bind(intent.tenant_id)
            .bind(id)
            .bind(&name)
            .bind(name.to_lowercase())
            .bind(&ext)
            .bind(doc.to_string())
            .bind(intent.now)
            .fetch_one(&mut *w.tx)
            .await
            .map_err(unique_group)?;
            let stored = StoredResource::from_row(&row)?;
            let mut journal = Journal::default();
            apply_changes(&mut w.tx, intent, id, &[MemberChange::Add(members.to_vec())], &mut journal).await?;
            // The intent last: it takes the tenant's journal lock (held to the commit), then the
            // members are journaled under it.
            record_intent(&mut w, intent, "Group", id, "create").await?;
            journal.write_each(&mut w.tx).await?;
            w.commit().await?;
            Ok(stored)
        })
        .await
    }

    /// One group (without members).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get_group(&self, tenant_id: i64, id: &str) -> Result<StoredResource, StoreError> {
        if let Some(r) = &self.reader {
            return r.get_resource("scim_groups", tenant_id, id)?.ok_or(StoreError::NotFound);
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM scim_groups WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(StoredResource::from_row(&row)?)
    }

    /// `r`, or why a member update found no group to change: the version it has now
    /// (`VersionMismatch`), or `NotFound`.
    async fn group_or_mismatch(
        &self,
        tenant_id: i64,
        id: &str,
        r: Option<StoredResource>,
    ) -> Result<StoredResource, StoreError> {
        match r {
            Some(r) => Ok(r),
            None => Err(super::unwritten(self.get_group(tenant_id, id).await)),
        }
    }

    /// Updates a group: its document (when `doc` is given; then `expected_version` is required and
    /// checked) and its members, in one transaction. Member-only changes never conflict with each
    /// other: they are row inserts and deletes, not a rewrite of a member list.
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`, `Conflict("displayName")`. Members that do not exist are
    /// dropped (journaled).
    pub async fn update_group(
        &self,
        intent: &Intent<'_>,
        id: &str,
        doc: Option<&Value>,
        expected_version: Option<i64>,
        changes: &[MemberChange],
        op: &str,
    ) -> Result<StoredResource, StoreError> {
        super::retrying(|| async move {
            let members_only =
                doc.is_none() && changes.iter().all(|c| matches!(c, MemberChange::Add(_) | MemberChange::Remove(_)));
            if let (Some(b), true) = (&self.batch, members_only) {
                // SQLite, member adds and removes (the IdPs' membership PATCHes): one job of the
                // batch writer.
                let (intent_o, gid, op_o) = (OwnedIntent::from(intent), id.to_string(), op.to_string());
                let changes = changes.to_vec();
                let expected = expected_version.unwrap_or(-1);
                let r = b
                    .write(move |c| {
                        members_sqlite(c, &intent_o, &gid, expected, &changes, &op_o).map_err(|e| match e {
                            MemberError::Store(e) => e,
                            MemberError::Sqlite(e) => sqlite_err(e, None),
                        })
                    })
                    .await?;
                return self.group_or_mismatch(intent.tenant_id, id, r).await;
            }
            if let (Some(b), true) = (&self.pg_batch, members_only) {
                // PostgreSQL, member adds and removes: one job of the batch writer.
                let (intent_o, gid, op_o) = (OwnedIntent::from(intent), id.to_string(), op.to_string());
                let changes = changes.to_vec();
                let expected = expected_version.unwrap_or(-1);
                let r = b
                    .write(Order::Group(intent_o.tenant_id, gid.clone()), move |conn, journal| {
                        Box::pin(async move {
                            let Some(row) = sqlx::query(TOUCH_GROUP_SQL)
                                .bind(&intent_o.now)
                                .bind(intent_o.tenant_id)
                                .bind(&gid)
                                .bind(expected)
                                .fetch_optional(&mut *conn)
                                .await?
                            else {
                                return Ok(None);
                            };
                            let stored = StoredResource::from_row(&row)?;
                            journal.intent(&intent_o, "Group", &gid, &op_o);
                            let intent = Intent {
                                tenant_id: intent_o.tenant_id,
                                request_id: &intent_o.request_id,
                                now: &intent_o.now,
                            };
                            apply_changes(conn, &intent, &gid, &changes, journal).await?;
                            Ok(Some(stored))
                        })
                    })
                    .await?;
                return self.group_or_mismatch(intent.tenant_id, id, r).await;
            }
            let mut w = self.begin_write().await?;
            let mut op = op;
            let row = match doc {
                Some(doc) => {
                    let (name, ext) = group_cols(doc);
                    // A new displayName can change every member's roles: journal it as a rename —
                    // any change that binding names could tell apart (they compare ignoring ASCII
                    // case only: "Équipe" and "équipe" are different names to them).
                    let old = sqlx::query("SELECT display_name FROM scim_groups WHERE tenant_id = $1 AND id = $2")
                        .bind(intent.tenant_id)
                        .bind(id)
                        .fetch_optional(&mut *w.tx)
                        .await?;
                    if let Some(old) = old {
                        let old: String = old.try_get("display_name")?;
                        if !crate::domain::binding_names(&old, &name) {
                            op = "rename";
                        }
                    }
                    sqlx::query(&format!(
                        "UPDATE scim_groups SET display_name = $1, display_name_lc = $2, external_id = $3, doc = $4, \
                         version = version + 1, updated_at = $5 WHERE tenant_id = $6 AND id = $7 AND version = $8 \
                         RETURNING {COLS}"
                    ))
                    .bind(&name)
                    .bind(name.to_lowercase())
                    .bind(&ext)
                    .bind(doc.to_string())
                    .bind(intent.now)
                    .bind(intent.tenant_id)
                    .bind(id)
                    .bind(expected_version.unwrap_or(-1))
                    .fetch_optional(&mut *w.tx)
                    .await
                    .map_err(unique_group)?
                }
                None => {
                    sqlx::query(TOUCH_GROUP_SQL)
                        .bind(intent.now)
                        .bind(intent.tenant_id)
                        .bind(id)
                        .bind(expected_version.unwrap_or(-1))
                        .fetch_optional(&mut *w.tx)
                        .await?
                }
            };
            let Some(row) = row else {
                drop(w);
                return Err(super::unwritten(self.get_group(intent.tenant_id, id).await));
            };
            let stored = StoredResource::from_row(&row)?;
            let mut journal = Journal::default();
            apply_changes(&mut w.tx, intent, id, changes, &mut journal).await?;
            record_intent(&mut w, intent, "Group", id, op).await?;
            journal.write_each(&mut w.tx).await?;
            w.commit().await?;
            Ok(stored)
        })
        .await
    }

    /// Deletes a group and its memberships (and its membership in other groups).
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`.
    pub async fn delete_group(
        &self,
        intent: &Intent<'_>,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        super::retrying(|| async move {
            let mut w = self.begin_write().await?;
            let n = super::delete_resource(&mut w, "scim_groups", intent.tenant_id, id, expected_version).await?;
            if n == 0 {
                drop(w);
                return Err(super::unwritten(self.get_group(intent.tenant_id, id).await));
            }
            let mut journal = Journal::default();
            apply_changes(&mut w.tx, intent, id, &[MemberChange::RemoveAll], &mut journal).await?;
            super::touch_groups_of_member(&mut w.tx, intent, id).await?;
            sqlx::query("DELETE FROM scim_group_members WHERE tenant_id = $1 AND (group_id = $2 OR member_id = $2)")
                .bind(intent.tenant_id)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            record_intent(&mut w, intent, "Group", id, "delete").await?;
            journal.write_each(&mut w.tx).await?;
            w.commit().await
        })
        .await
    }

    /// Members of each of `group_ids`, ordered by member id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn members_of(
        &self,
        tenant_id: i64,
        group_ids: &[&str],
    ) -> Result<HashMap<String, Vec<Member>>, StoreError> {
        let mut out: HashMap<String, Vec<Member>> = HashMap::new();
        for chunk in group_ids.chunks(500) {
            let ph: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT m.group_id, m.member_id, m.member_type, m.display FROM scim_group_members m WHERE m.tenant_id = $1 AND m.group_id IN ({}) ORDER BY m.group_id, m.member_id",
                ph.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.entry(r.try_get("group_id")?).or_default().push(Member {
                    value: r.try_get("member_id")?,
                    member_type: r.try_get("member_type")?,
                    display: r.try_get("display")?,
                });
            }
        }
        Ok(out)
    }

    /// Counts groups matching a query (exact queries only).
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_groups(&self, tenant_id: i64, q: &ListQuery) -> Result<i64, StoreError> {
        self.count_in("scim_groups", tenant_id, q).await
    }

    /// One page of groups matching a query (exact queries only).
    ///
    /// # Errors
    /// Database errors.
    pub async fn page_groups(
        &self,
        tenant_id: i64,
        q: &ListQuery,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        self.page_in("scim_groups", tenant_id, q, offset, limit).await
    }

    /// Streams groups matching a query's SQL part, in order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn scan_groups(
        &self,
        tenant_id: i64,
        q: &ListQuery,
        f: &mut (dyn FnMut(StoredResource) + Send),
    ) -> Result<(), StoreError> {
        self.scan_in("scim_groups", tenant_id, q, f).await
    }
}
