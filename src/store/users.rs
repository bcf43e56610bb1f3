//! SCIM Users as desired state: one row per user (document plus the indexed columns filters use)
//! and one row per email address.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::{Any, AnyConnection, Row};

use super::exec::Val;
use super::postgres::batch::Order;
use super::query::{Arg, ListQuery, SortKey};
use super::sqlite::batch::sqlite_err;
use super::sqlite::reader;
use super::RESOURCE_COLS as COLS;
use super::{record_intent, record_intent_sqlite, Intent, OwnedIntent, Store, StoreError, StoredResource};

/// A user's groups as one column on PostgreSQL (`[[id, displayName], …]` as JSON text), for the
/// statement that reads the user (`FROM scim_users u`): one round trip to the server instead
/// of two. (Not for the `userName eq` page query, which is faster reading the groups separately.)
const PG_USER_GROUPS_COL: &str = "(SELECT CAST(COALESCE(json_agg(json_build_array(g.id, g.display_name) \
    ORDER BY g.seq), '[]') AS text) FROM scim_group_members m JOIN scim_groups g \
    ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
    WHERE m.tenant_id = u.tenant_id AND m.member_id = u.id) AS user_groups";

/// A user read with `PG_USER_GROUPS_COL`.
fn pg_user_with_groups(row: &sqlx::any::AnyRow) -> Result<StoredResource, StoreError> {
    let mut res = StoredResource::from_row(row)?;
    let groups: String = row.try_get("user_groups")?;
    res.groups = Some(serde_json::from_str(&groups).map_err(StoreError::corrupt_doc)?);
    Ok(res)
}

/// Up to this many users, `groups_of_users` runs on the point-read path (one index probe each).
const POINT_USERS: usize = 50;

const INSERT_USER_SQL: &str = "INSERT INTO scim_users (tenant_id, id, user_name, user_name_lc, external_id, \
    display_name, active, doc, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9) \
    RETURNING seq, version, created_at, updated_at";
/// The user an `INSERT_USER_SQL` created, from what it returned (`seq`, `version`, `created_at`,
/// `updated_at`) and the document text it bound: a `RETURNING doc` held two more copies of a
/// document that may be 16 MiB.
fn created(
    id: String,
    doc: String,
    (seq, version, created_at, updated_at): (i64, i64, String, String),
) -> StoredResource {
    StoredResource { seq, id, doc, version, created_at, updated_at, groups: None }
}

fn created_cols(row: &sqlx::any::AnyRow) -> Result<(i64, i64, String, String), sqlx::Error> {
    Ok((row.try_get("seq")?, row.try_get("version")?, row.try_get("created_at")?, row.try_get("updated_at")?))
}

const INSERT_EMAIL_SQL: &str = "INSERT INTO scim_user_emails (tenant_id, user_id, value_lc) VALUES ($1, $2, $3)";

/// The indexed columns of a user document.
struct UserCols {
    user_name: String,
    external_id: Option<String>,
    display_name: Option<String>,
    active: i64,
    emails: Vec<String>,
}

fn cols(doc: &Value) -> UserCols {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let mut emails: Vec<String> = doc
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("value").and_then(Value::as_str))
                .map(crate::scim::validate::identity_key)
                .collect()
        })
        .unwrap_or_default();
    emails.sort();
    emails.dedup();
    UserCols {
        user_name: s("userName").unwrap_or_default(),
        external_id: s("externalId"),
        display_name: s("displayName"),
        active: i64::from(doc.get("active").and_then(Value::as_bool).unwrap_or(true)),
        emails,
    }
}

pub(super) fn bind_args<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Str(s) => q.bind(s.as_str()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q
}

async fn write_emails(
    conn: &mut AnyConnection,
    tenant_id: i64,
    user_id: &str,
    emails: &[String],
    replace: bool,
) -> Result<(), sqlx::Error> {
    if replace {
        sqlx::query("DELETE FROM scim_user_emails WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    for e in emails {
        sqlx::query(INSERT_EMAIL_SQL).bind(tenant_id).bind(user_id).bind(e).execute(&mut *conn).await?;
    }
    Ok(())
}

fn unique_user(e: sqlx::Error) -> StoreError {
    if StoreError::is_unique(&e) {
        StoreError::Conflict("userName")
    } else {
        e.into()
    }
}

impl Store {
    /// Records a new user (desired state) with its intent.
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `Conflict("userName")` when the userName (case-insensitive) is taken in the tenant.
    pub async fn insert_user(&self, intent: &Intent<'_>, id: &str, doc: &Value) -> Result<StoredResource, StoreError> {
        super::retrying(|| async move {
            let c = cols(doc);
            if let Some(b) = &self.batch {
                let (intent, id, doc) = (OwnedIntent::from(intent), id.to_string(), doc.to_string());
                // Unguarded (no savepoint): the INSERT, the only statement that may fail (a taken
                // userName), comes first and writes nothing when it fails.
                return b
                    .write_unguarded(move |conn| {
                        let cols = conn
                            .prepare_cached(INSERT_USER_SQL)
                            .and_then(|mut st| {
                                st.query_row(
                                    rusqlite::params![
                                        intent.tenant_id,
                                        id,
                                        c.user_name,
                                        crate::scim::validate::identity_key(&c.user_name),
                                        c.external_id,
                                        c.display_name,
                                        c.active,
                                        doc,
                                        intent.now
                                    ],
                                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                                )
                            })
                            .map_err(|e| sqlite_err(e, Some("userName")))?;
                        let more = || -> rusqlite::Result<()> {
                            let mut st = conn.prepare_cached(INSERT_EMAIL_SQL)?;
                            for e in &c.emails {
                                st.execute(rusqlite::params![intent.tenant_id, id, e])?;
                            }
                            record_intent_sqlite(conn, &intent, "User", &id, "create")
                        };
                        more().map_err(|e| sqlite_err(e, None))?;
                        Ok(created(id, doc, cols))
                    })
                    .await;
            }
            if let Some(b) = &self.pg_batch {
                // PostgreSQL: one job of the batch writer, committed with the pushes around it.
                let (intent, id, doc) = (OwnedIntent::from(intent), id.to_string(), doc.to_string());
                let order = Order::Create(intent.tenant_id, crate::scim::validate::identity_key(&c.user_name));
                return b
                    .write(order, move |conn, journal| {
                        Box::pin(async move {
                            let row = sqlx::query(INSERT_USER_SQL)
                                .bind(intent.tenant_id)
                                .bind(&id)
                                .bind(&c.user_name)
                                .bind(crate::scim::validate::identity_key(&c.user_name))
                                .bind(&c.external_id)
                                .bind(&c.display_name)
                                .bind(c.active)
                                .bind(&doc)
                                .bind(&intent.now)
                                .fetch_one(&mut *conn)
                                .await
                                .map_err(unique_user)?;
                            let cols = created_cols(&row)?;
                            write_emails(conn, intent.tenant_id, &id, &c.emails, false).await?;
                            journal.intent(&intent, "User", &id, "create");
                            Ok(created(id, doc, cols))
                        })
                    })
                    .await;
            }
            let text = doc.to_string();
            let mut w = self.begin_write().await?;
            let row = sqlx::query(INSERT_USER_SQL)
                .bind(intent.tenant_id)
                .bind(id)
                .bind(&c.user_name)
                .bind(crate::scim::validate::identity_key(&c.user_name))
                .bind(&c.external_id)
                .bind(&c.display_name)
                .bind(c.active)
                .bind(&text)
                .bind(intent.now)
                .fetch_one(&mut *w.tx)
                .await
                .map_err(unique_user)?;
            let cols = created_cols(&row)?;
            write_emails(&mut w.tx, intent.tenant_id, id, &c.emails, false).await?;
            record_intent(&mut w, intent, "User", id, "create").await?;
            w.commit().await?;
            Ok(created(id.to_string(), text, cols))
        })
        .await
    }

    /// One user.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get_user(&self, tenant_id: i64, id: &str) -> Result<StoredResource, StoreError> {
        if let Some(r) = &self.reader {
            return r.get_resource("scim_users", tenant_id, id)?.ok_or(StoreError::NotFound);
        }
        let row = sqlx::query(&format!("SELECT {COLS} FROM scim_users WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(StoredResource::from_row(&row)?)
    }

    /// One user with the groups it belongs to (`groups` set). On the SQLite point-read path both
    /// come from one statement (one read transaction).
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn get_user_and_groups(&self, tenant_id: i64, id: &str) -> Result<StoredResource, StoreError> {
        if let Some(r) = &self.reader {
            static SQL: LazyLock<String> = LazyLock::new(|| {
                reader::Reader::rewrite(&format!(
                    "SELECT {}, {} FROM scim_users u WHERE u.tenant_id = $1 AND u.id = $2",
                    COLS,
                    reader::USER_GROUPS_COL
                ))
            });
            return r
                .with(|c| {
                    let mut st = c.prepare_cached(&SQL)?;
                    let mut rows = st.query(rusqlite::params![tenant_id, id])?;
                    rows.next()?.map(reader::user_with_groups).transpose()
                })?
                .ok_or(StoreError::NotFound);
        }
        if self.backend == super::Backend::Postgres {
            // One statement (one round trip to the server) rather than the user, then its groups.
            static SQL: LazyLock<String> = LazyLock::new(|| {
                format!("SELECT {COLS}, {PG_USER_GROUPS_COL} FROM scim_users u WHERE u.tenant_id = $1 AND u.id = $2")
            });
            let row = sqlx::query(&SQL)
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound)?;
            return pg_user_with_groups(&row);
        }
        let mut res = self.get_user(tenant_id, id).await?;
        res.groups = Some(self.groups_of_users(tenant_id, &[id]).await?.remove(id).unwrap_or_default());
        Ok(res)
    }

    /// Replaces a user's document if its version is still `expected_version`.
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`, `Conflict("userName")`.
    pub async fn update_user(
        &self,
        intent: &Intent<'_>,
        id: &str,
        doc: &Value,
        expected_version: i64,
        op: &str,
    ) -> Result<StoredResource, StoreError> {
        super::retrying(|| async move {
            let c = cols(doc);
            let mut w = self.begin_write().await?;
            let row = sqlx::query(&format!(
                "UPDATE scim_users SET user_name = $1, user_name_lc = $2, external_id = $3, display_name = $4, active = $5, \
                 doc = $6, version = version + 1, updated_at = $7 WHERE tenant_id = $8 AND id = $9 AND version = $10 \
                 RETURNING {COLS}"
            ))
            .bind(&c.user_name)
            .bind(crate::scim::validate::identity_key(&c.user_name))
            .bind(&c.external_id)
            .bind(&c.display_name)
            .bind(c.active)
            .bind(doc.to_string())
            .bind(intent.now)
            .bind(intent.tenant_id)
            .bind(id)
            .bind(expected_version)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(unique_user)?;
            let Some(row) = row else {
                drop(w);
                return Err(super::unwritten(self.get_user(intent.tenant_id, id).await));
            };
            let stored = StoredResource::from_row(&row)?;
            write_emails(&mut w.tx, intent.tenant_id, id, &c.emails, true).await?;
            record_intent(&mut w, intent, "User", id, op).await?;
            w.commit().await?;
            Ok(stored)
        })
        .await
    }

    /// Deletes a user from the desired state (and from every group), if its version is still
    /// `expected_version` (when given).
    ///
    /// Run again, a few times, while it fails transiently (`retrying`).
    ///
    /// # Errors
    /// `NotFound`, `VersionMismatch`.
    pub async fn delete_user(
        &self,
        intent: &Intent<'_>,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<(), StoreError> {
        super::retrying(|| async move {
            let mut w = self.begin_write().await?;
            let n = super::delete_resource(&mut w, "scim_users", intent.tenant_id, id, expected_version).await?;
            if n == 0 {
                drop(w);
                return Err(super::unwritten(self.get_user(intent.tenant_id, id).await));
            }
            write_emails(&mut w.tx, intent.tenant_id, id, &[], true).await?;
            super::touch_groups_of_member(&mut w.tx, intent, id).await?;
            sqlx::query("DELETE FROM scim_group_members WHERE tenant_id = $1 AND member_id = $2")
                .bind(intent.tenant_id)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            record_intent(&mut w, intent, "User", id, "delete").await?;
            w.commit().await
        })
        .await
    }

    /// Counts the resources of a table that a query selects.
    pub(super) async fn count_in(&self, table: &str, tenant_id: i64, q: &ListQuery) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {}", q.where_sql());
        if let Some(r) = self.reader.as_ref().filter(|_| q.point) {
            return r.with(|c| {
                let mut st = reader::Reader::prepare(c, &sql)?;
                reader::bind(&mut st, tenant_id, &q.args, &[])?;
                let mut rows = st.raw_query();
                let n = match rows.next()? {
                    Some(row) => row.get(0)?,
                    None => 0,
                };
                Ok(n)
            });
        }
        // A listing's total holds until the tenant's next write (`marks`): paging through a
        // million users does not count them again for every page.
        let marked = match q.point {
            true => None,
            false => {
                Some((super::marks::listing(table, &q.where_sql(), &q.args), self.generation_of(tenant_id).await?))
            }
        };
        if let Some(n) = marked.as_ref().and_then(|(key, g)| self.page_marks.total(tenant_id, key, *g)) {
            return Ok(n);
        }
        let row = bind_args(sqlx::query(&sql).bind(tenant_id), &q.args).fetch_one(&self.pool).await?;
        let n: i64 = row.try_get("n")?;
        if let Some((key, g)) = &marked {
            self.page_marks.set_total(tenant_id, key, *g, n);
        }
        Ok(n)
    }

    /// One page of the resources of a table that a query selects.
    pub(super) async fn page_in(
        &self,
        table: &str,
        tenant_id: i64,
        q: &ListQuery,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let n = q.args.len() + 2;
        let (whr, order) = (q.where_sql(), q.order_sql());
        if let Some(r) = self.reader.as_ref().filter(|_| q.point) {
            // A user's groups come with it (one read transaction; Okta's `userName eq` lookup).
            let users = table == "scim_users";
            let sql = if users {
                format!(
                    "SELECT {COLS}, {} FROM scim_users u WHERE {whr} ORDER BY {order} LIMIT ${n} OFFSET ${}",
                    reader::USER_GROUPS_COL,
                    n + 1
                )
            } else {
                format!("SELECT {COLS} FROM {table} WHERE {whr} ORDER BY {order} LIMIT ${n} OFFSET ${}", n + 1)
            };
            return r.with(|c| {
                let mut st = reader::Reader::prepare(c, &sql)?;
                reader::bind(&mut st, tenant_id, &q.args, &[limit, offset])?;
                let mut rows = st.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(if users { reader::user_with_groups(row)? } else { reader::resource(row)? });
                }
                Ok(out)
            });
        }
        // In creation order, a page that follows one read since the tenant's last write starts
        // right after that page's last row (`marks`) instead of skipping every row before it.
        // (Not for a point query — `userName eq`, a handful of rows at most — which a tenant
        // read would only slow down on PostgreSQL.)
        let marks = if matches!(q.sort, SortKey::Seq) && !q.descending && !q.point {
            Some((super::marks::listing(table, &whr, &q.args), self.generation_of(tenant_id).await?))
        } else {
            None
        };
        let after = match &marks {
            Some((key, generation)) if offset > 0 => self.page_marks.seek(tenant_id, key, *generation, offset),
            _ => None,
        };
        let (seek, tail) = match after {
            Some(_) => (format!(" AND seq > ${n}"), format!("LIMIT ${}", n + 1)),
            None => (String::new(), format!("LIMIT ${n} OFFSET ${}", n + 1)),
        };
        let sql = format!("SELECT {COLS} FROM {table} WHERE {whr}{seek} ORDER BY {order} {tail}");
        let query = bind_args(sqlx::query(&sql).bind(tenant_id), &q.args);
        let query = match after {
            Some(seq) => query.bind(seq).bind(limit),
            None => query.bind(limit).bind(offset),
        };
        let rows = query.fetch_all(&self.pool).await?;
        let page = rows.iter().map(StoredResource::from_row).collect::<Result<Vec<_>, _>>()?;
        if let (Some((key, generation)), Some(last)) = (&marks, page.last()) {
            if page.len() as i64 == limit {
                self.page_marks.mark(tenant_id, key, *generation, offset + limit, last.seq);
            }
        }
        Ok(page)
    }

    /// The tenant's desired-state generation as stored now (bumped by every write to its
    /// users, groups or memberships).
    async fn generation_of(&self, tenant_id: i64) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT generation FROM tenants WHERE id = $1";
        if let Some(r) = &self.reader {
            return r.with(|c| {
                c.prepare_cached(SQL)?.query_row([tenant_id], |row| row.get(0)).or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(-1),
                    e => Err(e),
                })
            });
        }
        Ok(sqlx::query(SQL).bind(tenant_id).fetch_optional(&self.pool).await?.map_or(Ok(-1), |r| r.try_get(0))?)
    }

    /// Streams every resource a query selects, in order, through `f` (for filters evaluated in
    /// memory); memory stays flat in the tenant's size.
    pub(super) async fn scan_in(
        &self,
        table: &str,
        tenant_id: i64,
        q: &ListQuery,
        f: &mut (dyn FnMut(StoredResource) + Send),
    ) -> Result<(), StoreError> {
        let sql = format!("SELECT {COLS} FROM {table} WHERE {} ORDER BY {}", q.where_sql(), q.order_sql());
        let mut rows = bind_args(sqlx::query(&sql).bind(tenant_id), &q.args).fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            f(StoredResource::from_row(&r)?);
        }
        Ok(())
    }

    /// Counts users matching a query (exact queries only).
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_users(&self, tenant_id: i64, q: &ListQuery) -> Result<i64, StoreError> {
        self.count_in("scim_users", tenant_id, q).await
    }

    /// One page of users matching a query (exact queries only).
    ///
    /// # Errors
    /// Database errors.
    pub async fn page_users(
        &self,
        tenant_id: i64,
        q: &ListQuery,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        self.page_in("scim_users", tenant_id, q, offset, limit).await
    }

    /// Streams users matching a query's SQL part, in order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn scan_users(
        &self,
        tenant_id: i64,
        q: &ListQuery,
        f: &mut (dyn FnMut(StoredResource) + Send),
    ) -> Result<(), StoreError> {
        self.scan_in("scim_users", tenant_id, q, f).await
    }

    /// The groups each of `user_ids` belongs to: (group id, group displayName), by group creation.
    ///
    /// # Errors
    /// Database errors.
    pub async fn groups_of_users(
        &self,
        tenant_id: i64,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(String, String)>>, StoreError> {
        let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if let Some(r) = self.reader.as_ref().filter(|_| user_ids.len() <= POINT_USERS) {
            return r.with(|c| {
                let mut st = reader::Reader::prepare(
                    c,
                    "SELECT g.id, g.display_name FROM scim_group_members m JOIN scim_groups g \
                     ON g.tenant_id = m.tenant_id AND g.id = m.group_id \
                     WHERE m.tenant_id = $1 AND m.member_id = $2 ORDER BY g.seq",
                )?;
                for uid in user_ids {
                    let gs: Vec<(String, String)> = st
                        .query_map(rusqlite::params![tenant_id, uid], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    if !gs.is_empty() {
                        out.insert((*uid).to_string(), gs);
                    }
                }
                Ok(out)
            });
        }
        const SQL: &str = "SELECT m.member_id, g.id, g.display_name FROM scim_group_members m JOIN scim_groups g \
             ON g.tenant_id = m.tenant_id AND g.id = m.group_id WHERE m.tenant_id = $1 AND m.member_id IN {keys} \
             ORDER BY g.seq";
        if let Some(r) = self.reader.clone().filter(|_| !user_ids.is_empty()) {
            let args = vec![Val::Int(tenant_id), super::json_list(user_ids)];
            let rows: Vec<(String, String, String)> = super::blocking(move || {
                r.query_all(&super::keys_as_json(SQL), &args, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            })
            .await?;
            for (member, gid, name) in rows {
                out.entry(member).or_default().push((gid, name));
            }
            return Ok(out);
        }
        for chunk in user_ids.chunks(500) {
            let sql = super::keys_listed(SQL, chunk.len());
            let mut q = sqlx::query(&sql).bind(tenant_id);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.entry(r.try_get("member_id")?).or_default().push((r.try_get("id")?, r.try_get("display_name")?));
            }
        }
        Ok(out)
    }
}
