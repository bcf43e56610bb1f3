//! A tenant's controller settings: group → role bindings (a change wakes a full run, which
//! re-evaluates every member; a preview answers that run's plan and stores nothing), the
//! safety-valve threshold, and releasing a hold.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::AdminError;
use super::extract::{Body, Operator, TenantCtx, Q};
use super::plans;
use crate::controller::Trigger;
use crate::domain::SafetyChange;
use crate::domain::{Bindings, BindingsChange};
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
    op: Operator,
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
        let p = s.controller.preview_bindings(&t, &new).await?;
        return Ok(plans::answer(&s, p, format).await);
    }
    s.store.set_bindings(t.id, &new, &op.actor()).await?;
    s.controller.wake(t.id, Trigger::Bindings, true);
    Ok(Json(s.store.controller_state(t.id).await?.bindings).into_response())
}

/// The safety settings and the tenant's hold as `GET …/safety` shows them.
pub async fn safety_view(s: &AppState, t: &Tenant) -> Result<Value, AdminError> {
    Ok(s.store.controller_state(t.id).await?.safety_json(&t.slug))
}

/// `GET /tenants/{slug}/safety` → `{"enabled","percent","min_users","settle_secs","max_wait_secs",
/// "held": {fingerprint,reason,at,destructive,approve} | null, "waiting": {since,last_push_at} | null}`.
pub async fn get_safety(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(safety_view(&s, &t).await?))
}

/// `PUT /tenants/{slug}/safety` `{"percent": 0..=100, "min_users": >= 0, "enabled": bool,
/// "settle_secs": 0..=3600, "max_wait_secs": settle_secs..=3600}` (an absent field keeps its
/// value) → 200 with the settings. A change wakes a whole-tenant run (switched off, whatever
/// waits or is held is applied).
pub async fn put_safety(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    Body(b): Body<SafetyChange>,
) -> Result<Json<Value>, AdminError> {
    let current = s.store.controller_state(t.id).await?.safety;
    let new = b.apply(current).map_err(AdminError::bad_request)?;
    s.store.set_safety(t.id, new, &op.actor()).await?;
    if new != current {
        s.controller.wake(t.id, Trigger::Operator, true);
    }
    Ok(Json(safety_view(&s, &t).await?))
}
