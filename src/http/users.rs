//! `/Users` handlers: parse, record the desired state, answer.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Ctx;
use super::body::{Conditions, QueryMap, ResourceId, ScimJson};
use super::error::scim_json;
use super::list::{list_kind, render_many};
use super::{ApiError, AppState};
use crate::domain::now;
use crate::scim::patch::{apply_patch, parse_patch};
use crate::scim::resource::{etag, etag_matches, projection_from_query, ListParams, Projection};
use crate::scim::schema::{normalize, normalize_change, Kind, ResourceSchema};
use crate::scim::ScimError;
use crate::store::{Intent, StoreError, StoredResource, Tenant};

/// How often a write retries after losing a race with another writer of the same resource.
pub(super) const WRITE_RETRIES: usize = 8;

/// Answers with one resource: status, ETag, Location (on create) and the projected body.
pub(super) async fn respond_one(
    state: &AppState,
    tenant: &Tenant,
    base: &str,
    kind: Kind,
    r: &StoredResource,
    proj: &Projection,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let body = render_many(&state.store, tenant.id, base, kind, std::slice::from_ref(r), proj).await?.pop();
    Ok(respond_rendered(base, kind, r, body.unwrap_or_default(), status))
}

/// Answers with one rendered resource: status, ETag, Location (on create) and the body.
fn respond_rendered(base: &str, kind: Kind, r: &StoredResource, body: Vec<u8>, status: StatusCode) -> Response {
    let mut res = scim_json(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
        res.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&format!("{base}/{}/{}", kind.endpoint(), r.id)) {
            res.headers_mut().insert(header::LOCATION, v);
        }
    }
    res
}

/// `GET /Users/{id}` and `GET /Groups/{id}`.
pub(super) async fn get_one(
    state: &AppState,
    tenant: &Tenant,
    base: &str,
    kind: Kind,
    id: &str,
    q: &QueryMap,
    cond: &Conditions,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    super::error::read_again(|| get_one_once(state, tenant, base, kind, id, &proj, cond)).await
}

async fn get_one_once(
    state: &AppState,
    tenant: &Tenant,
    base: &str,
    kind: Kind,
    id: &str,
    proj: &Projection,
    cond: &Conditions,
) -> Result<Response, ApiError> {
    // A user's groups come with its row when they are wanted (one read).
    let r = match kind {
        Kind::User if proj.wants(kind, "groups") => state.store.get_user_and_groups(tenant.id, id).await?,
        Kind::User => state.store.get_user(tenant.id, id).await?,
        Kind::Group => state.store.get_group(tenant.id, id).await?,
    };
    if cond.if_none_match.as_deref().is_some_and(|h| etag_matches(h, r.version)) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
            res.headers_mut().insert(header::ETAG, v);
        }
        return Ok(res);
    }
    respond_one(state, tenant, base, kind, &r, proj, StatusCode::OK).await
}

pub(super) fn intent<'a>(tenant: &Tenant, request_id: &'a str, now: &'a str) -> Intent<'a> {
    Intent { tenant_id: tenant.id, request_id, now }
}

pub async fn list_users(
    State(state): State<AppState>,
    Ctx { tenant, base, .. }: Ctx,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let p = ListParams::from_query(&q.0)?;
    list_kind(&state.store, &tenant, &base, Kind::User, p).await
}

pub async fn search_users(
    State(state): State<AppState>,
    Ctx { tenant, base, .. }: Ctx,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let p = ListParams::from_search(&body)?;
    list_kind(&state.store, &tenant, &base, Kind::User, p).await
}

pub async fn get_user(
    State(state): State<AppState>,
    Ctx { tenant, base, .. }: Ctx,
    ResourceId(id): ResourceId,
    q: QueryMap,
    cond: Conditions,
) -> Result<Response, ApiError> {
    get_one(&state, &tenant, &base, Kind::User, &id, &q, &cond).await
}

pub async fn create_user(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    q: QueryMap,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    let doc = normalize(Kind::User, body)?;
    let id = crate::domain::new_resource_id();
    let now = now();
    let r = state.store.insert_user(&intent(&tenant, &rid, &now), &id, &doc).await?;
    // Not held while the answer is rendered (a body may be 16 MiB).
    drop(doc);
    state.pushed(tenant.id);
    // A user just created belongs to no group: nothing more to read.
    let r = StoredResource { groups: Some(Vec::new()), ..r };
    respond_one(&state, &tenant, &base, Kind::User, &r, &proj, StatusCode::CREATED).await
}

pub async fn put_user(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    ResourceId(id): ResourceId,
    q: QueryMap,
    cond: Conditions,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    let mut doc = normalize(Kind::User, body)?;
    let now = now();
    for _ in 0..WRITE_RETRIES {
        let cur = state.store.get_user(tenant.id, &id).await?;
        let expected = cond.check(cur.version)?;
        // A PUT that omits `active` keeps the current value rather than changing the account's
        // status (Okta's read-modify-write may drop it).
        if doc.get("active").is_none() {
            if let Some(a) = cur.doc_value()?.get("active") {
                doc["active"] = a.clone();
            }
        }
        match state.store.update_user(&intent(&tenant, &rid, &now), &id, &doc, cur.version, "replace").await {
            Ok(r) => {
                state.pushed(tenant.id);
                return respond_one(&state, &tenant, &base, Kind::User, &r, &proj, StatusCode::OK).await;
            }
            Err(StoreError::VersionMismatch(_)) if expected.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ScimError::new(409, "the resource is being changed concurrently; retry").into())
}

pub async fn patch_user(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    ResourceId(id): ResourceId,
    q: QueryMap,
    cond: Conditions,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    let ops = parse_patch(&body)?;
    let schema = ResourceSchema(Kind::User);
    let now = now();
    for _ in 0..WRITE_RETRIES {
        let cur = state.store.get_user(tenant.id, &id).await?;
        let expected = cond.check(cur.version)?;
        let before = cur.doc_value()?;
        let mut doc = before.clone();
        apply_patch(&mut doc, &ops, &schema, &schema)?;
        let doc = normalize_change(Kind::User, doc, &before)?;
        if doc == before {
            return respond_one(&state, &tenant, &base, Kind::User, &cur, &proj, StatusCode::OK).await;
        }
        match state.store.update_user(&intent(&tenant, &rid, &now), &id, &doc, cur.version, "patch").await {
            Ok(r) => {
                state.pushed(tenant.id);
                return respond_one(&state, &tenant, &base, Kind::User, &r, &proj, StatusCode::OK).await;
            }
            Err(StoreError::VersionMismatch(_)) if expected.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ScimError::new(409, "the resource is being changed concurrently; retry").into())
}

pub async fn delete_user(
    State(state): State<AppState>,
    Ctx { tenant, request_id: rid, .. }: Ctx,
    ResourceId(id): ResourceId,
    cond: Conditions,
) -> Result<Response, ApiError> {
    let expected = match &cond.if_match {
        Some(_) => cond.check(state.store.get_user(tenant.id, &id).await?.version)?,
        None => None,
    };
    let now = now();
    state.store.delete_user(&intent(&tenant, &rid, &now), &id, expected).await?;
    state.pushed(tenant.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
