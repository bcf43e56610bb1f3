//! A tenant's controller settings: group → role bindings (a change wakes a full run, which
//! re-evaluates every member; a preview answers that run's plan and stores nothing), the
//! safety-valve threshold, and releasing a hold.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{Body, TenantCtx, Q};
use super::plans;
use crate::controller::model::{Bindings, BindingsChange};
use crate::controller::plan::Safety;
use crate::controller::Trigger;
use crate::http::AppState;
use crate::store::Tenant;

/// `PUT /tenants/{slug}/group-bindings` query. Unknown parameters are refused: a misspelt
/// `dry_run` must not store the bindings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Preview: answer the plan, store nothing.
    #[serde(default)]
    dry_run: bool,
    /// The preview's report: `json`, `text` or `html` (as `GET …/plan`; overrides `Accept`).
    format: Option<String>,
}

/// `GET /tenants/{slug}/group-bindings` → `{"bindings":[{"group","role"}],"default_role"}`.
pub async fn get(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Bindings>, AdminError> {
    Ok(Json(s.store.controller_state(t.id).await?.bindings))
}

/// `PUT /tenants/{slug}/group-bindings` → 200 with the stored bindings; 400 when invalid. Wakes
/// the controller for a full run. With `?dry_run=true`: validated the same way, nothing stored or
/// woken, and the answer is the whole-tenant plan the new bindings would cause, in the format
/// `GET …/plan` would give.
pub async fn put(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<PutQuery>,
    headers: HeaderMap,
    Body(b): Body<BindingsChange>,
) -> Result<Response, AdminError> {
    let format = match (q.dry_run, q.format.as_deref()) {
        (true, f) => Some(plans::negotiate(f, &headers)?),
        (false, None) => None,
        (false, Some(_)) => return Err(AdminError::bad_request("format is for a preview only (dry_run=true)")),
    };
    let current = s.store.controller_state(t.id).await?.bindings;
    let new = b.apply_to(&current).map_err(AdminError::bad_request)?;
    if let Some(format) = format {
        let p = s.controller.plan_with_bindings(&t, &new).await?;
        return Ok(plans::answer(&s, p, format).await);
    }
    s.store.set_bindings(t.id, &new, "operator").await?;
    s.controller.wake(t.id, Trigger::Bindings, true);
    Ok(Json(s.store.controller_state(t.id).await?.bindings).into_response())
}

/// `PUT /tenants/{slug}/safety` body; an absent field keeps its current value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSafety {
    percent: Option<i64>,
    min_users: Option<i64>,
}

async fn safety_view(s: &AppState, t: &Tenant) -> Result<Value, AdminError> {
    let c = s.store.controller_state(t.id).await?;
    let held = c.held_fingerprint.as_ref().map(|f| json!({"fingerprint": f, "reason": c.held_reason, "at": c.held_at}));
    Ok(json!({"percent": c.safety.percent, "min_users": c.safety.min_users, "held": held}))
}

/// `GET /tenants/{slug}/safety` → `{"percent","min_users","held": {fingerprint,reason,at} | null}`.
pub async fn get_safety(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(safety_view(&s, &t).await?))
}

/// `PUT /tenants/{slug}/safety` `{"percent": 0..=100, "min_users": >= 0}` → 200 with the settings.
pub async fn put_safety(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Body(b): Body<PutSafety>,
) -> Result<Json<Value>, AdminError> {
    let current = s.store.controller_state(t.id).await?.safety;
    let percent = match b.percent {
        Some(p @ 0..=100) => p as u32,
        Some(p) => return Err(AdminError::bad_request(format!("percent must be between 0 and 100, not {p}"))),
        None => current.percent,
    };
    let min_users = match b.min_users {
        Some(n) if n >= 0 => n as u64,
        Some(n) => return Err(AdminError::bad_request(format!("min_users must not be negative ({n})"))),
        None => current.min_users,
    };
    s.store.set_safety(t.id, Safety { percent, min_users }).await?;
    Ok(Json(safety_view(&s, &t).await?))
}

/// `POST /tenants/{slug}/hold/release` → 200 with the safety settings (`held` now null). Wakes
/// the controller for a full run.
pub async fn release(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    s.store.release_hold(t.id, "operator").await?;
    let view = safety_view(&s, &t).await?;
    s.controller.wake(t.id, Trigger::Operator, true);
    Ok(Json(view))
}
