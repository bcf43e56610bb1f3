//! What happened: a tenant's controller runs, its audit trail, and its outbox (welcome emails and
//! sign-out events, queued until the webhook delivers them).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{limit, TenantCtx, Q};
use crate::http::AppState;

/// `GET /tenants/{slug}/runs` query.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    limit: Option<i64>,
}

/// `GET /tenants/{slug}/runs[?limit=]` → `{"runs":[{id,trigger,started_at,finished_at,status,
/// summary,fingerprint,error}]}`, newest first (100 unless `limit`).
pub async fn runs(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<RunsQuery>,
) -> Result<Json<Value>, AdminError> {
    Ok(Json(json!({ "runs": s.store.list_runs(t.id, limit(q.limit, 100)?).await? })))
}

/// `GET /tenants/{slug}/audit` query.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only entries after this `seq` (for paging).
    after: Option<i64>,
    limit: Option<i64>,
    /// Only entries about this user.
    user_id: Option<String>,
}

/// `GET /tenants/{slug}/audit[?after=&limit=&user_id=]` → `{"entries":[{seq, run_id, actor,
/// action, user_id, before, after, at}]}`, oldest first (1000 unless `limit`).
pub async fn audit(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<AuditQuery>,
) -> Result<Json<Value>, AdminError> {
    let entries = s.store.list_audit(t.id, q.after.unwrap_or(0), limit(q.limit, 1000)?, q.user_id.as_deref()).await?;
    Ok(Json(json!({ "entries": entries })))
}

/// `GET /tenants/{slug}/outbox` query.
#[derive(Debug, Deserialize)]
pub struct OutboxQuery {
    /// Only events after this `seq` (for paging).
    after: Option<i64>,
    limit: Option<i64>,
    /// Only events of this type (e.g. `user.provisioned`).
    r#type: Option<String>,
    /// Only events about this user.
    user_id: Option<String>,
}

/// `GET /tenants/{slug}/outbox[?after=&limit=&type=&user_id=]` → `{"events":[{"seq","id","type",
/// "user_id","status","attempts","created_at",…}]}`, oldest first (1000 unless `limit`; the last
/// `seq` is the next page's `after`).
pub async fn outbox(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<OutboxQuery>,
) -> Result<Json<Value>, AdminError> {
    let events = s
        .store
        .outbox_page(t.id, q.after.unwrap_or(0), limit(q.limit, 1000)?, q.r#type.as_deref(), q.user_id.as_deref())
        .await?;
    Ok(Json(json!({ "events": events })))
}
