//! Moonborn users as operators see them, and the Moonborn-side hand actions that create the drift
//! a real app would: a manual invite, a sign-in, a role edit, a profile or status edit. They write
//! the actual state directly (never the SCIM desired state); drift repair reverts what SCIM owns.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::AdminError;
use super::extract::{double_option, Body, Operator, TenantCtx, P, Q};
use crate::domain::{Status, ROLES};
use crate::http::AppState;
use crate::scim::validate::check_identity;
use crate::store::{AdminUser, NewUser, Tenant, UserEdit};

/// Longest display name or other free-text field accepted, in characters.
const MAX_TEXT: usize = 320;

/// `GET /tenants/{slug}/users` query.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    /// Only the user with this sign-in email (case-insensitive).
    email: Option<String>,
    /// Only users after this position (the previous page's `next`).
    after: Option<String>,
    limit: Option<i64>,
}

/// The path of a user: `/tenants/{slug}/users/{id}`.
type UserPath = P<(String, String)>;

/// Checks role names against `ROLES`.
///
/// # Errors
/// A 400 naming the unknown role.
pub fn roles(list: Vec<String>) -> Result<BTreeSet<String>, AdminError> {
    for r in &list {
        if !ROLES.contains(&r.as_str()) {
            return Err(AdminError::bad_request(format!("unknown role {r:?}; roles are {}", ROLES.join(", "))));
        }
    }
    Ok(list.into_iter().collect())
}

/// A sign-in or contact email: the SCIM API's identity rules (`scim::validate::check_identity`:
/// no surrounding whitespace, control, bidirectional or zero-width characters, at most 320
/// characters), and the shape of an address (`local@domain`, no whitespace).
fn email(field: &str, v: &str) -> Result<String, AdminError> {
    check_identity(v).map_err(|e| AdminError::bad_request(format!("{field} {e}")))?;
    let shaped =
        !v.chars().any(char::is_whitespace) && v.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
    if shaped {
        Ok(v.to_string())
    } else {
        Err(AdminError::bad_request(format!("{field} must be an email address, not {v:?}")))
    }
}

fn text(field: &str, v: &str) -> Result<String, AdminError> {
    let v = v.trim();
    if v.is_empty() || v.chars().nth(MAX_TEXT).is_some() || v.chars().any(char::is_control) {
        return Err(AdminError::bad_request(format!("{field} must be 1-{MAX_TEXT} characters of text")));
    }
    Ok(v.to_string())
}

/// The user, or a 404 naming it.
///
/// # Errors
/// 404 when the tenant has no such user.
pub async fn load(s: &AppState, t: &Tenant, id: &str) -> Result<AdminUser, AdminError> {
    s.store.admin_user(t.id, id).await.map_err(|e| AdminError::store(e, || no_user(t, id)))
}

/// The message of a 404 for a user.
pub fn no_user(t: &Tenant, id: &str) -> String {
    format!("tenant {:?} has no user {id:?}", t.slug)
}

/// Maps a hand action's refusal, naming the user when it does not exist.
pub fn hand(t: &Tenant, id: &str) -> impl FnOnce(crate::store::HandError) -> AdminError {
    let msg = no_user(t, id);
    move |e| match e {
        crate::store::HandError::NotFound => AdminError::not_found(msg),
        other => other.into(),
    }
}

/// A position in the users listing: the `email_lc` and id of the last user of a page,
/// base64url-encoded (opaque to clients).
fn encode_cursor(email_lc: &str, id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{email_lc}\0{id}"))
}

fn decode_cursor(c: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    let (email_lc, id) = String::from_utf8(raw).ok()?.split_once('\0').map(|(e, i)| (e.to_string(), i.to_string()))?;
    (!id.is_empty()).then_some((email_lc, id))
}

/// `GET /tenants/{slug}/users[?email=&after=&limit=]` → `{"users":[…],"next":ID|null}`, a page
/// (1000 unless `limit`) ordered by email, case-insensitively (purged users too: their email is
/// erased, and they sort as `purged:<id>`); `next`, when the page is full, is the `after` of the
/// next page (an opaque cursor).
pub async fn list(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    Q(q): Q<UsersQuery>,
) -> Result<Json<Value>, AdminError> {
    let limit = super::extract::limit(q.limit, 1000)?;
    let after = match q.after.as_deref() {
        None => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| AdminError::bad_request("after: not a cursor this listing answered"))?)
        }
    };
    let users = s
        .store
        .admin_list_users(t.id, q.email.as_deref(), after.as_ref().map(|(e, i)| (e.as_str(), i.as_str())), limit, false)
        .await?;
    // A full page may have more after it: where it ended (the user may change before the next
    // request; the position does not).
    let next = if users.len() as i64 == limit { users.last().map(|u| encode_cursor(&u.email_lc, &u.id)) } else { None };
    Ok(Json(json!({ "users": users, "next": next })))
}

/// `GET /tenants/{slug}/users/{id}` → the user.
pub async fn get(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    P((_, id)): UserPath,
) -> Result<Json<AdminUser>, AdminError> {
    Ok(Json(load(&s, &t, &id).await?))
}

/// `POST /tenants/{slug}/users` body: a manual invite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    email: String,
    display_name: Option<String>,
    contact_email: Option<String>,
    roles: Option<Vec<String>>,
}

/// `POST /tenants/{slug}/users` → 201 with the new manual user (status active). Without `roles`,
/// the user gets the tenant's default role. 409 when a user that is not purged holds the email.
pub async fn invite(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    Body(b): Body<Invite>,
) -> Result<impl IntoResponse, AdminError> {
    let roles = match b.roles {
        Some(r) => roles(r)?,
        None => s.store.controller_state(t.id).await?.bindings.default_role.into_iter().collect(),
    };
    let u = NewUser {
        email: email("email", &b.email)?,
        display_name: b.display_name.as_deref().map(|v| text("display_name", v)).transpose()?,
        contact_email: b.contact_email.as_deref().map(|v| email("contact_email", v)).transpose()?,
        roles,
    };
    let id = s.store.invite_user(t.id, &u, &op.hand_actor()).await?;
    Ok((StatusCode::CREATED, Json(load(&s, &t, &id).await?)))
}

/// `POST /tenants/{slug}/users/{id}/sessions` → 201 `{"id","user_id","created_at"}`: a sign-in.
/// 409 when the user is not active.
pub async fn sign_in(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): UserPath,
) -> Result<impl IntoResponse, AdminError> {
    let ses = s.store.sign_in(t.id, &id, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok((StatusCode::CREATED, Json(json!({"id": ses.id, "user_id": ses.user_id, "created_at": ses.created_at}))))
}

/// `GET /tenants/{slug}/users/{id}/sessions` → `{"sessions":[{id,user_id,created_at,revoked_at}]}`.
pub async fn sessions(
    TenantCtx(t): TenantCtx,
    State(s): State<AppState>,
    P((_, id)): UserPath,
) -> Result<Json<Value>, AdminError> {
    let list = s.store.list_sessions(t.id, &id).await.map_err(|e| AdminError::store(e, || no_user(&t, &id)))?;
    Ok(Json(json!({ "sessions": list })))
}

/// `PUT /tenants/{slug}/users/{id}/roles` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRoles {
    roles: Vec<String>,
}

/// `PUT /tenants/{slug}/users/{id}/roles` `{"roles":[…]}` → 200 with the user.
pub async fn put_roles(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): UserPath,
    Body(b): Body<PutRoles>,
) -> Result<Json<AdminUser>, AdminError> {
    let r = roles(b.roles)?;
    s.store.set_user_roles(t.id, &id, &r, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok(Json(load(&s, &t, &id).await?))
}

/// `PATCH /tenants/{slug}/users/{id}` body; absent fields stay, `null` clears a profile field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    #[serde(default, deserialize_with = "double_option")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    contact_email: Option<Option<String>>,
    status: Option<String>,
}

/// `PATCH /tenants/{slug}/users/{id}` `{"display_name"?, "contact_email"?, "status"?: "active" |
/// "disabled"}` → 200 with the user. Disabling signs the user out.
pub async fn patch(
    TenantCtx(t): TenantCtx,
    op: Operator,
    State(s): State<AppState>,
    P((_, id)): UserPath,
    Body(b): Body<Patch>,
) -> Result<Json<AdminUser>, AdminError> {
    let status = match b.status.as_deref() {
        None => None,
        Some(v) => match Status::parse(v) {
            Some(st @ (Status::Active | Status::Disabled)) => Some(st),
            _ => return Err(AdminError::bad_request(format!("status must be \"active\" or \"disabled\", not {v:?}"))),
        },
    };
    let edit = UserEdit {
        display_name: b.display_name.map(|o| o.map(|v| text("display_name", &v)).transpose()).transpose()?,
        contact_email: b.contact_email.map(|o| o.map(|v| email("contact_email", &v)).transpose()).transpose()?,
        status,
    };
    if edit.is_empty() {
        return Err(AdminError::bad_request("nothing to change: give display_name, contact_email or status"));
    }
    s.store.edit_user(t.id, &id, &edit, &op.hand_actor()).await.map_err(hand(&t, &id))?;
    Ok(Json(load(&s, &t, &id).await?))
}
