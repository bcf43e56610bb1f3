//! Tenants and their SCIM tokens: create and list tenants; issue (shown once), list (never the
//! secrets) and revoke a tenant's tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{Body, MaybeBody, Operator, TenantCtx, P};
use crate::http::AppState;
use crate::store::{Tenant, Tier};

/// `POST /tenants` body.
#[derive(Debug, Deserialize)]
pub struct NewTenant {
    slug: String,
    tier: String,
}

/// `POST /tenants` → 201 with the tenant; 409 when the slug exists; 400 on a bad slug or tier.
pub async fn create(
    op: Operator,
    State(s): State<AppState>,
    Body(b): Body<NewTenant>,
) -> Result<impl IntoResponse, AdminError> {
    op.require_global("creating a tenant")?;
    let tier = Tier::parse(&b.tier).ok_or_else(|| {
        AdminError::bad_request(format!("unknown tier {:?}; tiers are free, pro, enterprise", b.tier))
    })?;
    let t = s.store.create_tenant(&b.slug, tier).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => AdminError::conflict(format!("tenant {:?} already exists", b.slug)),
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// `PATCH /tenants/{slug}` body: what to change (today the tier).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantChange {
    tier: String,
}

/// `PATCH /tenants/{slug}` `{"tier": "pro"}` → the tenant as it is now; 400 on an unknown tier.
pub async fn patch(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    Body(b): Body<TenantChange>,
) -> Result<Json<Value>, AdminError> {
    op.require_global("changing a tenant's tier")?;
    let tier = Tier::parse(&b.tier).ok_or_else(|| {
        AdminError::bad_request(format!("unknown tier {:?}; tiers are free, pro, enterprise", b.tier))
    })?;
    let t = s.store.set_tier(&t.slug, tier, &op.actor()).await?;
    Ok(Json(with_status(&s, t).await?))
}

/// `DELETE /tenants/{slug}?confirm={slug}` → 200 with what was done: the tenant is offboarded
/// (`Controller::offboard`). Without `confirm` naming the tenant: 400, nothing done.
pub async fn delete(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    op.require_global("deleting a tenant")?;
    if q.get("confirm") != Some(&t.slug) {
        return Err(AdminError::bad_request(format!(
            "deleting a tenant revokes its tokens and soft-deletes every user: confirm with ?confirm={}",
            t.slug
        )));
    }
    // Run to the end even if the operator's client goes away: a task of its own.
    let (controller, tenant, actor) = (s.controller.clone(), t.clone(), op.actor());
    let o = tokio::spawn(async move { controller.offboard(&tenant, &actor).await })
        .await
        .map_err(|e| AdminError::from(crate::store::StoreError::Invalid(format!("offboarding stopped: {e}"))))??;
    Ok(Json(json!({"tenant": t.slug, "deleted": true, "offboarded": o})))
}

/// A tenant with its state at a glance (`status`: see `TenantStatus`).
async fn with_status(s: &AppState, t: Tenant) -> Result<Value, AdminError> {
    let status = s.store.tenant_status(t.id).await?;
    let mut v = serde_json::to_value(&t).map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
    v["status"] = serde_json::to_value(&status).map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
    Ok(v)
}

/// `GET /tenants` → `{"tenants": [...]}`, by creation, each with its `status` (in_sync,
/// drifted, waiting, held with counts, failing; the last run's time and outcome).
pub async fn list(op: Operator, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    let mut out = Vec::new();
    for t in s.store.list_tenants().await?.into_iter().filter(|t| op.sees(t)) {
        out.push(with_status(&s, t).await?);
    }
    Ok(Json(json!({ "tenants": out })))
}

/// `GET /tenants/{slug}` → the tenant, with its `status`.
pub async fn get(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(with_status(&s, t).await?))
}

/// `POST /tenants/{slug}/scim-tokens` body (optional): what to call the token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: Option<String>,
}

/// `POST /tenants/{slug}/scim-tokens` (optional `{"name": "Okta"}`) → 201
/// `{"id","name","token","prefix","created_at"}`: the only time the secret is shown.
pub async fn create_token(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    MaybeBody(b): MaybeBody<NewToken>,
) -> Result<impl IntoResponse, AdminError> {
    let name = b.unwrap_or_default().name;
    let (info, token) = s.store.issue_token(&t.slug, name.as_deref(), &op.actor()).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": info.id, "name": info.name, "token": token, "prefix": info.prefix, "created_at": info.created_at}),
        ),
    ))
}

/// `GET /tenants/{slug}/scim-tokens` → `{"tokens":[{id,prefix,created_at,last_used_at,revoked_at}]}`.
pub async fn list_tokens(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(json!({ "tokens": s.store.list_tokens(&t.slug).await? })))
}

/// `DELETE /tenants/{slug}/scim-tokens/{id}` → 204; 404 when the tenant has no such token.
pub async fn revoke_token(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): P<(String, String)>,
) -> Result<StatusCode, AdminError> {
    if s.store.revoke_tenant_token(t.id, &id, &op.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::not_found(format!("tenant {:?} has no SCIM token {id:?}", t.slug)))
    }
}
