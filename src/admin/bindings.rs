//! A tenant's controller settings: group → role bindings (a change wakes a full run, which
//! re-evaluates every member), the safety-valve threshold, and releasing a hold.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::AdminError;
use super::extract::{double_option, Body, TenantCtx};
use crate::controller::model::{Binding, Bindings};
use crate::controller::plan::SafetyChange;
use crate::controller::Trigger;
use crate::http::AppState;
use crate::store::Tenant;

/// `PUT /tenants/{slug}/group-bindings` body. An absent `default_role` keeps the current one;
/// `null` sets none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBindings {
    bindings: Vec<Binding>,
    #[serde(default, deserialize_with = "double_option")]
    default_role: Option<Option<String>>,
}

/// `GET /tenants/{slug}/group-bindings` → `{"bindings":[{"group","role"}],"default_role"}`.
pub async fn get(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Bindings>, AdminError> {
    Ok(Json(s.store.controller_state(t.id).await?.bindings))
}

/// `PUT /tenants/{slug}/group-bindings` → 200 with the stored bindings; 400 when invalid. Wakes
/// the controller for a full run.
pub async fn put(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Body(b): Body<PutBindings>,
) -> Result<Json<Bindings>, AdminError> {
    let default_role = match b.default_role {
        Some(d) => d,
        None => s.store.controller_state(t.id).await?.bindings.default_role,
    };
    let new = Bindings { bindings: b.bindings, default_role };
    new.validate().map_err(AdminError::bad_request)?;
    s.store.set_bindings(t.id, &new, "operator").await?;
    s.controller.wake(t.id, Trigger::Bindings, true);
    Ok(Json(s.store.controller_state(t.id).await?.bindings))
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
    State(s): State<AppState>,
    Body(b): Body<SafetyChange>,
) -> Result<Json<Value>, AdminError> {
    let current = s.store.controller_state(t.id).await?.safety;
    let new = b.apply(current).map_err(AdminError::bad_request)?;
    s.store.set_safety(t.id, new, "operator").await?;
    if new != current {
        s.controller.wake(t.id, Trigger::Operator, true);
    }
    Ok(Json(safety_view(&s, &t).await?))
}
