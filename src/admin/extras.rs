//! What the controller never touches — API keys, personal preferences, manual workspace
//! memberships — written by hand so that tests can prove that drift repair leaves them alone.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{Body, Operator, TenantCtx, P};
use super::users::{hand, no_user};
use crate::http::AppState;
use crate::store::Extras;

/// Longest name, key or workspace accepted.
const MAX_NAME: usize = 200;

fn name(field: &str, v: &str) -> Result<String, AdminError> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(AdminError::bad_request(format!("{field} must be 1-{MAX_NAME} characters of text")));
    }
    Ok(v.to_string())
}

/// `POST /tenants/{slug}/users/{id}/api-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
}

/// `POST /tenants/{slug}/users/{id}/api-keys` `{"name"}` → 201 `{"id","user_id","name","created_at"}`.
pub async fn create_api_key(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): P<(String, String)>,
    Body(b): Body<NewKey>,
) -> Result<impl IntoResponse, AdminError> {
    let n = name("name", &b.name)?;
    let k = s.store.create_api_key(t.id, &id, &n, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok((StatusCode::CREATED, Json(k)))
}

/// `PUT /tenants/{slug}/users/{id}/preferences/{key}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPreference {
    value: Value,
}

/// `PUT /tenants/{slug}/users/{id}/preferences/{key}` `{"value": <any JSON>}` → 200 `{"key","value"}`.
pub async fn put_preference(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id, key)): P<(String, String, String)>,
    Body(b): Body<PutPreference>,
) -> Result<Json<Value>, AdminError> {
    let key = name("the preference key", &key)?;
    s.store.set_preference(t.id, &id, &key, &b.value, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok(Json(json!({"key": key, "value": b.value})))
}

/// `POST /tenants/{slug}/users/{id}/workspaces` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMembership {
    workspace: String,
}

/// `POST /tenants/{slug}/users/{id}/workspaces` `{"workspace"}` → 201
/// `{"user_id","workspace","created_at"}`; 409 when already a member.
pub async fn add_workspace(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): P<(String, String)>,
    Body(b): Body<NewMembership>,
) -> Result<impl IntoResponse, AdminError> {
    let w = name("workspace", &b.workspace)?;
    let m = s.store.add_workspace(t.id, &id, &w, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// `GET /tenants/{slug}/users/{id}/extras` → `{"api_keys":[…],"preferences":{…},"workspaces":[…]}`.
pub async fn get(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    P((_, id)): P<(String, String)>,
) -> Result<Json<Extras>, AdminError> {
    Ok(Json(s.store.user_extras(t.id, &id).await.map_err(|e| AdminError::store(e, || no_user(&t, &id)))?))
}
