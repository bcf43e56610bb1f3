//! Tenants and their SCIM bearer tokens (random 256-bit secrets, stored only as SHA-256 hashes).

use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;
use subtle::ConstantTimeEq;

use super::{Store, StoreError};
use crate::domain::now;

/// A tenant's plan; only Enterprise tenants may use SCIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "free" => Some(Tier::Free),
            "pro" => Some(Tier::Pro),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: i64,
    pub slug: String,
    pub tier: Tier,
    pub generation: i64,
    pub created_at: String,
    /// When the tenant was deleted (offboarded); it keeps its audit and its users' grace period.
    pub deleted_at: Option<String>,
}

impl Tenant {
    fn from_row(r: &AnyRow) -> Result<Tenant, StoreError> {
        let tier: String = r.try_get("tier")?;
        Ok(columns!(r, Tenant { id, slug, generation, created_at, deleted_at } + {
            tier: Tier::parse(&tier).ok_or_else(|| StoreError::Invalid(format!("unknown tier {tier}")))?,
        }))
    }
}

/// A SCIM token as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    /// What the operator called it (which IdP connection), if anything.
    pub name: Option<String>,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

const TOKEN_PREFIX: &str = "mbscim_";

/// How long an authenticated token is trusted without reading its row again: a token revoked
/// from another process stops working within this time (at once when revoked in this one).
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether the row's `secret_hash` is `hash` (compared in constant time: the row was found by
/// it, but an index lookup is not a comparison to rely on).
pub(super) fn secret_matches(row: &AnyRow, hash: &str) -> Result<bool, StoreError> {
    let stored: String = row.try_get("secret_hash")?;
    Ok(bool::from(stored.as_bytes().ct_eq(hash.as_bytes())))
}

impl Store {
    /// Records that the credential `id` of `table` (`scim_tokens`, `operators`) was used, at
    /// most once a minute (`last` is its `last_used_at` as read): written before the request
    /// goes on, so a listing right after it shows the use.
    ///
    /// # Errors
    /// Database errors.
    pub(super) async fn record_use(&self, table: &'static str, id: &str, last: Option<&str>) -> Result<(), StoreError> {
        let recent = last
            .and_then(|l| chrono::DateTime::parse_from_rfc3339(l).ok())
            .is_some_and(|l| chrono::Utc::now().signed_duration_since(l) <= chrono::Duration::seconds(60));
        if recent {
            return Ok(());
        }
        let mut w = self.begin_write().await?;
        sqlx::query(&format!("UPDATE {table} SET last_used_at = $1 WHERE id = $2"))
            .bind(now())
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }
}

/// Validates a tenant slug: 1–63 characters of lowercase letters, digits and '-'.
fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
}

const TENANT_COLS: &str = "id, slug, tier, generation, created_at, deleted_at";

impl Store {
    /// Creates a tenant.
    ///
    /// # Errors
    /// `Conflict` when the slug exists, `Invalid` for a malformed slug.
    pub async fn create_tenant(&self, slug: &str, tier: Tier) -> Result<Tenant, StoreError> {
        if !valid_slug(slug) {
            return Err(StoreError::Invalid(format!(
                "tenant slug {slug:?} must be 1-63 lowercase letters, digits or '-'"
            )));
        }
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO tenants (slug, tier, generation, created_at) VALUES ($1, $2, 0, $3) RETURNING {TENANT_COLS}"
        ))
        .bind(slug)
        .bind(tier.as_str())
        .bind(now())
        .fetch_one(&mut *w.tx)
        .await
        .map_err(|e| if StoreError::is_unique(&e) { StoreError::Conflict("tenant slug") } else { e.into() })?;
        let t = Tenant::from_row(&row)?;
        w.commit().await?;
        Ok(t)
    }

    /// All tenants, by creation.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(Tenant::from_row).collect()
    }

    /// A tenant by slug.
    ///
    /// # Errors
    /// `NotFound` when there is none.
    pub async fn tenant(&self, slug: &str) -> Result<Tenant, StoreError> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE slug = $1"))
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Tenant::from_row(&row)
    }

    /// A tenant by id.
    ///
    /// # Errors
    /// `NotFound` when there is none.
    pub async fn tenant_by_id(&self, id: i64) -> Result<Tenant, StoreError> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Tenant::from_row(&row)
    }

    /// Issues a new unnamed SCIM token for a tenant, by the system (the first token `serve`
    /// prints); returns its listing and the secret (shown once).
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn create_token(&self, tenant_slug: &str) -> Result<(TokenInfo, String), StoreError> {
        self.issue_token(tenant_slug, None, "system").await
    }

    /// Issues a new SCIM token for a tenant, named (up to 100 characters) or not, audited as
    /// `token_issue` by `actor`; returns its listing and the secret (shown once).
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant, `Invalid` for a deleted one or a name too long.
    pub async fn issue_token(
        &self,
        tenant_slug: &str,
        name: Option<&str>,
        actor: &str,
    ) -> Result<(TokenInfo, String), StoreError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control)) {
            return Err(StoreError::Invalid(
                "a token name is at most 100 characters, without control characters".into(),
            ));
        }
        let tenant = self.tenant(tenant_slug).await?;
        if tenant.deleted_at.is_some() {
            return Err(StoreError::Invalid(format!("tenant {tenant_slug} is deleted")));
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        let info = TokenInfo {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.map(str::to_string),
            prefix: secret[..TOKEN_PREFIX.len() + 6].to_string(),
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO scim_tokens (id, tenant_id, prefix, secret_hash, created_at, name) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&info.id)
        .bind(tenant.id)
        .bind(&info.prefix)
        .bind(hash_secret(&secret))
        .bind(&info.created_at)
        .bind(&info.name)
        .execute(&mut *w.tx)
        .await?;
        let after = serde_json::json!({"id": info.id, "name": info.name, "prefix": info.prefix});
        super::exec::exec_sqlx(
            &mut w.tx,
            &super::actual::audit_stmt(
                tenant.id,
                None,
                actor,
                "token_issue",
                None,
                None,
                Some(&after),
                &info.created_at,
            ),
        )
        .await?;
        w.commit().await?;
        Ok((info, secret))
    }

    /// A tenant's tokens, newest first, without secrets.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn list_tokens(&self, tenant_slug: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let tenant = self.tenant(tenant_slug).await?;
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, last_used_at, revoked_at FROM scim_tokens \
             WHERE tenant_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(tenant.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(columns!(r, TokenInfo { id, name, prefix, created_at, last_used_at, revoked_at })))
            .collect()
    }

    /// Revokes a token by id. Returns false when no such unrevoked token exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let n = sqlx::query("UPDATE scim_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(token_id)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        w.commit().await?;
        self.auth_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(n == 1)
    }

    /// The tenant a bearer secret belongs to, if it is a live token. Compares the stored hash in
    /// constant time and records `last_used_at` (at most once a minute per token).
    ///
    /// # Errors
    /// Database errors.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Tenant>, StoreError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 256 {
            return Ok(None);
        }
        let hash = hash_secret(secret);
        {
            let cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((tenant, at)) = cache.get(&hash) {
                if at.elapsed() < AUTH_CACHE_TTL {
                    return Ok(Some(tenant.clone()));
                }
            }
        }
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.secret_hash, t.last_used_at, n.id, n.slug, n.tier, n.generation, n.created_at, \
             n.deleted_at \
             FROM scim_tokens t JOIN tenants n ON n.id = t.tenant_id \
             WHERE t.secret_hash = $1 AND t.revoked_at IS NULL AND n.deleted_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if !secret_matches(&row, &hash)? {
            return Ok(None);
        }
        let tenant = Tenant::from_row(&row)?;
        let last: Option<String> = row.try_get("last_used_at")?;
        let token_id: String = row.try_get("token_id")?;
        self.record_use("scim_tokens", &token_id, last.as_deref()).await?;
        let mut cache = self.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(hash, (tenant.clone(), std::time::Instant::now()));
        Ok(Some(tenant))
    }

    /// Moves a tenant to another tier (audited as `tier`); SCIM requests of a tenant no longer on
    /// Enterprise are refused (403) from its next request (within `AUTH_CACHE_TTL` on other
    /// processes). Returns the tenant as it is now.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn set_tier(&self, slug: &str, tier: Tier, actor: &str) -> Result<Tenant, StoreError> {
        let before = self.tenant(slug).await?;
        if before.deleted_at.is_some() {
            return Err(StoreError::Invalid(format!("tenant {slug} is deleted")));
        }
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!("UPDATE tenants SET tier = $1 WHERE id = $2 RETURNING {TENANT_COLS}"))
            .bind(tier.as_str())
            .bind(before.id)
            .fetch_optional(&mut *w.tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let t = Tenant::from_row(&row)?;
        let (b, a) = (serde_json::json!({"tier": before.tier}), serde_json::json!({"tier": t.tier}));
        super::exec::exec_sqlx(
            &mut w.tx,
            &super::actual::audit_stmt(t.id, None, actor, "tier", None, Some(&b), Some(&a), &now()),
        )
        .await?;
        w.commit().await?;
        self.auth_cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (c, _)| c.id != t.id);
        Ok(t)
    }

    /// Starts offboarding a tenant: marks it deleted and revokes every token of it, in one
    /// transaction (audited as `tenant_delete`). Its SCIM resources are then deleted and its
    /// users soft-deleted by `controller::Controller::offboard`. Returns whether this call
    /// marked it (false: it was deleted already).
    ///
    /// # Errors
    /// Database errors.
    pub async fn mark_tenant_deleted(&self, tenant_id: i64, actor: &str) -> Result<bool, StoreError> {
        let now = now();
        let mut w = self.begin_write().await?;
        let n = sqlx::query("UPDATE tenants SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(&now)
            .bind(tenant_id)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        let revoked = sqlx::query("UPDATE scim_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
            .bind(&now)
            .bind(tenant_id)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n > 0 {
            let after = serde_json::json!({"deleted_at": now, "tokens_revoked": revoked});
            super::exec::exec_sqlx(
                &mut w.tx,
                &super::actual::audit_stmt(tenant_id, None, actor, "tenant_delete", None, None, Some(&after), &now),
            )
            .await?;
        }
        w.commit().await?;
        self.auth_cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (c, _)| c.id != tenant_id);
        Ok(n > 0)
    }

    /// The ids of a tenant's SCIM users and groups (desired state), and of its Moonborn users
    /// created by hand that are still active: what offboarding removes.
    ///
    /// # Errors
    /// Database errors.
    pub async fn offboarding_work(
        &self,
        tenant_id: i64,
    ) -> Result<(Vec<String>, Vec<String>, Vec<String>), StoreError> {
        let ids = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                let rows = sqlx::query(sql).bind(tenant_id).fetch_all(&pool).await?;
                rows.iter()
                    .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
                    .collect::<Result<Vec<_>, _>>()
            }
        };
        Ok((
            ids("SELECT id FROM scim_users WHERE tenant_id = $1 ORDER BY id").await?,
            ids("SELECT id FROM scim_groups WHERE tenant_id = $1 ORDER BY id").await?,
            ids(
                "SELECT id FROM users WHERE tenant_id = $1 AND managed_by = 'manual' AND status = 'active' ORDER BY id",
            )
            .await?,
        ))
    }

    /// Counts tenants (the first `serve` on an empty database creates one).
    ///
    /// # Errors
    /// Database errors.
    pub async fn tenant_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM tenants").fetch_one(&self.pool).await?.try_get("n")?)
    }
}
