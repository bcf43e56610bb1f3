//! The controller's reads of the SCIM desired state: key ranges of users with their groups,
//! users by id, the journal head and recent destructive intents; and the intent journal every
//! desired-state write appends to (`record_intent`), with the tenant's generation it bumps.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::exec::{Cols, FromCols, Val};
use super::{
    blocking, json_list, keys_as_json, keys_listed, placeholders, Backend, Intent, Store, StoreError, WriteTx,
    PUSH_CHANNEL,
};

impl Store {
    /// The highest intent-journal position of a tenant.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journal_head(&self, tenant_id: i64) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0) AS s FROM intent_journal WHERE tenant_id = $1";
        if let Some(r) = &self.reader {
            return r
                .with(|c| super::sqlite::reader::Reader::prepare(c, SQL)?.query_row([tenant_id], |row| row.get(0)));
        }
        let row = sqlx::query(SQL).bind(tenant_id).fetch_one(&self.pool).await?;
        Ok(row.try_get("s")?)
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
        self.read_all(SQL, vec![Val::Int(tenant_id), Val::from(after_id), Val::Int(limit)]).await
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
        let pairs: Vec<(String, String)> =
            self.read_all(SQL, vec![Val::Int(tenant_id), Val::from(after_id), Val::from(last_id)]).await?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (member, name) in pairs {
            out.entry(member).or_default().push(name);
        }
        Ok(out)
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

/// Bumps a tenant's desired-state generation (its row lock orders the tenant's journal).
pub(super) const BUMP_GENERATION_SQL: &str = "UPDATE tenants SET generation = generation + 1 WHERE id = $1";
/// Appends a row to the intent journal.
/// The journal op (on the group) of a member a group write dropped because it does not exist.
pub(super) const DROPPED_MEMBER: &str = "dropped_member";
pub(super) const JOURNAL_SQL: &str =
    "INSERT INTO intent_journal (tenant_id, resource_type, resource_id, op, at, request_id) \
                           VALUES ($1, $2, $3, $4, $5, $6)";

/// Who asked for a write, owned (for a job of the SQLite batch writer).
#[derive(Debug, Clone)]
pub(super) struct OwnedIntent {
    pub(super) tenant_id: i64,
    pub(super) request_id: String,
    pub(super) now: String,
}

impl From<&Intent<'_>> for OwnedIntent {
    fn from(i: &Intent<'_>) -> OwnedIntent {
        OwnedIntent { tenant_id: i.tenant_id, request_id: i.request_id.to_string(), now: i.now.to_string() }
    }
}

/// `record_intent` inside a job of the SQLite batch writer (no NOTIFY: SQLite has one process).
pub(super) fn record_intent_sqlite(
    c: &rusqlite::Connection,
    intent: &OwnedIntent,
    resource_type: &str,
    resource_id: &str,
    op: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(BUMP_GENERATION_SQL)?.execute([intent.tenant_id])?;
    c.prepare_cached(JOURNAL_SQL)?.execute(rusqlite::params![
        intent.tenant_id,
        resource_type,
        resource_id,
        op,
        intent.now,
        intent.request_id
    ])?;
    Ok(())
}

/// Appends a row to the intent journal and bumps the tenant's desired-state generation, inside
/// the transaction that records the desired state itself. On PostgreSQL it also announces the
/// push on `PUSH_CHANNEL` (delivered at commit), so the controller wakes on every replica.
pub(super) async fn record_intent(
    w: &mut WriteTx<'_>,
    intent: &Intent<'_>,
    resource_type: &str,
    resource_id: &str,
    op: &str,
) -> Result<(), StoreError> {
    if w.backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(PUSH_CHANNEL)
            .bind(intent.tenant_id.to_string())
            .execute(&mut *w.tx)
            .await?;
    }
    let tx = &mut w.tx;
    // The tenant row first: its lock is held to commit, so journal positions of one tenant are
    // handed out in commit order (a sequence alone is not, on PostgreSQL), and a reader that
    // sees position n has seen every position before it. Callers call this after every other
    // statement of theirs (journaling members after it: `postgres::batch::Journal`), so the tenant's
    // lock is the last lock a write takes — held through the journal rows and the commit only,
    // and never held while waiting for another lock (no deadlock through it).
    sqlx::query(BUMP_GENERATION_SQL).bind(intent.tenant_id).execute(&mut **tx).await?;
    sqlx::query(JOURNAL_SQL)
        .bind(intent.tenant_id)
        .bind(resource_type)
        .bind(resource_id)
        .bind(op)
        .bind(intent.now)
        .bind(intent.request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One row of the intent journal.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct JournalEntry {
    pub seq: i64,
    pub resource_type: String,
    pub resource_id: String,
    pub op: String,
    pub at: String,
    pub request_id: String,
}

impl FromCols for JournalEntry {
    fn from_cols<R: Cols + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok(JournalEntry {
            seq: r.col(0, "seq")?,
            resource_type: r.col(1, "resource_type")?,
            resource_id: r.col(2, "resource_id")?,
            op: r.col(3, "op")?,
            at: r.col(4, "at")?,
            request_id: r.col(5, "request_id")?,
        })
    }
}

impl Store {
    /// The intent journal of a tenant after `after_seq`, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journal(&self, tenant_id: i64, after_seq: i64, limit: i64) -> Result<Vec<JournalEntry>, StoreError> {
        const SQL: &str = "SELECT seq, resource_type, resource_id, op, at, request_id FROM intent_journal \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        self.read_all(SQL, vec![Val::Int(tenant_id), Val::Int(after_seq), Val::Int(limit)]).await
    }
}
