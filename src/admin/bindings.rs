//! A tenant's controller settings: group → role bindings (a change wakes a full run, which
//! re-evaluates every member), the safety-valve threshold, and releasing a hold.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{double_option, Body, TenantCtx};
use crate::controller::model::{Binding, Bindings};
use crate::controller::plan::Safety;
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

/// `PUT /tenants/{slug}/safety` body; an absent field keeps its current value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSafety {
    percent: Option<i64>,
    min_users: Option<i64>,
    enabled: Option<bool>,
    settle_secs: Option<f64>,
    max_wait_secs: Option<f64>,
}

/// The longest settle or max wait a tenant may set: an hour.
const MAX_WAIT_SECS: f64 = 3600.0;

/// The safety settings and the tenant's hold as `GET …/safety` shows them.
pub async fn safety_view(s: &AppState, t: &Tenant) -> Result<Value, AdminError> {
    let c = s.store.controller_state(t.id).await?;
    let held = c.held_fingerprint.as_ref().map(|f| {
        json!({
            "fingerprint": f, "reason": c.held_reason, "at": c.held_at, "destructive": c.held_count,
            "approve": format!("moonborn-scim approve --tenant {} {f}", t.slug),
        })
    });
    let waiting = c.burst.as_ref().map(|b| json!({"since": b.first_at, "last_push_at": b.last_at}));
    Ok(json!({
        "enabled": c.safety.enabled,
        "percent": c.safety.percent,
        "min_users": c.safety.min_users,
        "settle_secs": c.safety.settle_ms as f64 / 1000.0,
        "max_wait_secs": c.safety.max_wait_ms as f64 / 1000.0,
        "held": held,
        "waiting": waiting,
    }))
}

/// `GET /tenants/{slug}/safety` → `{"enabled","percent","min_users","settle_secs","max_wait_secs",
/// "held": {fingerprint,reason,at,destructive,approve} | null, "waiting": {since,last_push_at} | null}`.
pub async fn get_safety(TenantCtx(t): TenantCtx, State(s): State<AppState>) -> Result<Json<Value>, AdminError> {
    Ok(Json(safety_view(&s, &t).await?))
}

fn secs(name: &str, v: Option<f64>, current_ms: u64) -> Result<u64, AdminError> {
    match v {
        Some(x) if x.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&x) => Ok((x * 1000.0).round() as u64),
        Some(x) => {
            Err(AdminError::bad_request(format!("{name} must be between 0 and {MAX_WAIT_SECS} seconds, not {x}")))
        }
        None => Ok(current_ms),
    }
}

/// `PUT /tenants/{slug}/safety` `{"percent": 0..=100, "min_users": >= 0, "enabled": bool,
/// "settle_secs": 0..=3600, "max_wait_secs": settle_secs..=3600}` → 200 with the settings. A change
/// wakes a whole-tenant run (switched off, whatever waits or is held is applied).
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
    let settle_ms = secs("settle_secs", b.settle_secs, current.settle_ms)?;
    let max_wait_ms = secs("max_wait_secs", b.max_wait_secs, current.max_wait_ms)?;
    if max_wait_ms < settle_ms {
        return Err(AdminError::bad_request(format!(
            "max_wait_secs ({}) must not be shorter than settle_secs ({})",
            max_wait_ms as f64 / 1000.0,
            settle_ms as f64 / 1000.0
        )));
    }
    let new = Safety { percent, min_users, enabled: b.enabled.unwrap_or(current.enabled), settle_ms, max_wait_ms };
    s.store.set_safety(t.id, new, "operator").await?;
    if new != current {
        s.controller.wake(t.id, Trigger::Operator, true);
    }
    Ok(Json(safety_view(&s, &t).await?))
}
