//! Named operators — the people who act through the console and the admin API — and their
//! console sessions. Secrets are stored only as SHA-256 hashes: an operator token (`mbop_…`,
//! printed once by `moonborn-scim operator create`) and a session cookie (`mbses_…`). An operator
//! with a tenant is that tenant's admin and sees nothing else.

use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::tenants::{hash_secret, secret_matches};
use super::{Store, StoreError};
use crate::domain::{fmt_time, now};

const OPERATOR_PREFIX: &str = "mbop_";
const SESSION_PREFIX: &str = "mbses_";

/// How long a console session lasts from sign-in.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);

/// An operator as listed: never its secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OperatorInfo {
    pub id: String,
    pub name: String,
    /// The tenant this operator is scoped to; `None`: every tenant.
    pub tenant_id: Option<i64>,
    pub tenant_slug: Option<String>,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl OperatorInfo {
    fn from_row(r: &AnyRow) -> Result<OperatorInfo, StoreError> {
        Ok(columns!(r, OperatorInfo { id, name, tenant_id, tenant_slug, prefix, created_at, last_used_at, revoked_at }))
    }
}

/// A live console session: who, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub operator: OperatorInfo,
    pub csrf: String,
    pub expires_at: String,
}

const OPERATOR_COLS: &str = "o.id, o.name, o.tenant_id, t.slug AS tenant_slug, o.prefix, o.created_at, \
                             o.last_used_at, o.revoked_at";

/// A random secret: `prefix` and 32 random bytes, base64url.
fn secret(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// An operator name: 1–64 characters of letters, digits, `.`, `_`, `-`, `@`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl Store {
    /// Creates an operator (scoped to `tenant_slug` when given); returns it and its token, which
    /// is shown once.
    ///
    /// # Errors
    /// `Invalid` for a malformed name or a deleted tenant, `NotFound` for an unknown tenant,
    /// `Conflict` when the name is taken.
    pub async fn create_operator(
        &self,
        name: &str,
        tenant_slug: Option<&str>,
    ) -> Result<(OperatorInfo, String), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "operator name {name:?} must be 1-64 letters, digits, '.', '_', '-' or '@'"
            )));
        }
        let tenant = match tenant_slug {
            Some(slug) => {
                let t = self.tenant(slug).await?;
                if t.deleted_at.is_some() {
                    return Err(StoreError::Invalid(format!("tenant {slug} is deleted")));
                }
                Some(t)
            }
            None => None,
        };
        let token = secret(OPERATOR_PREFIX);
        let info = OperatorInfo {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            tenant_id: tenant.as_ref().map(|t| t.id),
            tenant_slug: tenant.map(|t| t.slug),
            prefix: token[..OPERATOR_PREFIX.len() + 6].to_string(),
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO operators (id, name, tenant_id, prefix, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(info.tenant_id)
        .bind(&info.prefix)
        .bind(hash_secret(&token))
        .bind(&info.created_at)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| if StoreError::is_unique(&e) { StoreError::Conflict("operator name") } else { e.into() })?;
        w.commit().await?;
        Ok((info, token))
    }

    /// Every operator, by name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_operators(&self) -> Result<Vec<OperatorInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OPERATOR_COLS} FROM operators o LEFT JOIN tenants t ON t.id = o.tenant_id ORDER BY o.name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(OperatorInfo::from_row).collect()
    }

    /// Whether any operator can sign in (the console is on).
    ///
    /// # Errors
    /// Database errors.
    pub async fn any_operator(&self) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM operators WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    /// Revokes an operator by name, and ends its sessions. False when there is no such live one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_operator(&self, name: &str) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE operators SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(now())
        .bind(name)
        .fetch_optional(&mut *w.tx)
        .await?;
        if let Some(id) = &id {
            sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1").bind(id).execute(&mut *w.tx).await?;
        }
        w.commit().await?;
        Ok(id.is_some())
    }

    /// The live operator a token belongs to (compared by hash, in constant time); records
    /// `last_used_at` at most once a minute.
    ///
    /// # Errors
    /// Database errors.
    pub async fn authenticate_operator(&self, token: &str) -> Result<Option<OperatorInfo>, StoreError> {
        if !token.starts_with(OPERATOR_PREFIX) || token.len() > 256 {
            return Ok(None);
        }
        let hash = hash_secret(token);
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLS}, o.secret_hash FROM operators o LEFT JOIN tenants t ON t.id = o.tenant_id \
             WHERE o.secret_hash = $1 AND o.revoked_at IS NULL AND t.deleted_at IS NULL"
        ))
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if !secret_matches(&row, &hash)? {
            return Ok(None);
        }
        let op = OperatorInfo::from_row(&row)?;
        self.record_use("operators", &op.id, op.last_used_at.as_deref()).await?;
        Ok(Some(op))
    }

    /// Opens a console session for an operator: the cookie value (shown once) and the session.
    /// Expired sessions are deleted on the way.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_session(&self, operator: &OperatorInfo) -> Result<(String, ConsoleSession), StoreError> {
        let cookie = secret(SESSION_PREFIX);
        let csrf = secret("");
        let now_t = chrono::Utc::now();
        let (created_at, expires_at) = (fmt_time(now_t), fmt_time(now_t + SESSION_TTL));
        let mut w = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1").bind(&created_at).execute(&mut *w.tx).await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, operator_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_secret(&cookie))
        .bind(&operator.id)
        .bind(&csrf)
        .bind(&created_at)
        .bind(&expires_at)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok((cookie, ConsoleSession { operator: operator.clone(), csrf, expires_at }))
    }

    /// The live session a cookie value names (not expired, its operator not revoked).
    ///
    /// # Errors
    /// Database errors.
    pub async fn console_session(&self, cookie: &str) -> Result<Option<ConsoleSession>, StoreError> {
        if !cookie.starts_with(SESSION_PREFIX) || cookie.len() > 256 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {OPERATOR_COLS}, s.csrf, s.expires_at FROM console_sessions s \
             JOIN operators o ON o.id = s.operator_id LEFT JOIN tenants t ON t.id = o.tenant_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND o.revoked_at IS NULL AND t.deleted_at IS NULL"
        ))
        .bind(hash_secret(cookie))
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ConsoleSession {
            operator: OperatorInfo::from_row(&row)?,
            csrf: row.try_get("csrf")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Ends a console session (sign-out).
    ///
    /// # Errors
    /// Database errors.
    pub async fn end_session(&self, cookie: &str) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(hash_secret(cookie))
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(())
    }
}
