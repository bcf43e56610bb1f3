//! One resource of either kind (User, Group): read it, answer with it, and write it with the
//! read-modify-write retry every PUT and PATCH shares.

use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::extract::State;

use super::auth::Ctx;
use super::body::{Conditions, QueryMap, ResourceId, ScimJson};
use super::error::scim_json;
use super::list::list_kind;
use super::list::render_many;
use super::{ApiError, AppState};
use crate::scim::resource::{etag, etag_matches, projection_from_query, ListParams, Projection};
use crate::scim::schema::Kind;
use crate::scim::ScimError;
use crate::store::{Intent, StoreError, StoredResource, Tenant};

/// How often a write retries after losing a race with another writer of the same resource.
const WRITE_RETRIES: usize = 8;

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

/// The intent a request's writes are journaled with.
pub(super) fn intent<'a>(tenant: &Tenant, request_id: &'a str, now: &'a str) -> Intent<'a> {
    Intent { tenant_id: tenant.id, request_id, now }
}

/// `GET /Users` and `GET /Groups`.
pub async fn list(state: State<AppState>, ctx: Ctx, q: QueryMap, kind: Kind) -> Result<Response, ApiError> {
    let p = ListParams::from_query(&q.0)?;
    list_kind(&state, &ctx.tenant, &ctx.base, kind, p).await
}

/// `POST /Users/.search` and `POST /Groups/.search`.
pub async fn search(state: State<AppState>, ctx: Ctx, body: ScimJson, kind: Kind) -> Result<Response, ApiError> {
    let p = ListParams::from_search(&body.0)?;
    list_kind(&state, &ctx.tenant, &ctx.base, kind, p).await
}

/// `GET /Users/{id}` and `GET /Groups/{id}`.
pub async fn get(
    state: State<AppState>,
    ctx: Ctx,
    id: ResourceId,
    q: QueryMap,
    cond: Conditions,
    kind: Kind,
) -> Result<Response, ApiError> {
    get_one(&state, &ctx.tenant, &ctx.base, kind, &id.0, &q, &cond).await
}

/// `DELETE /Users/{id}` and `DELETE /Groups/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    ResourceId(id): ResourceId,
    cond: Conditions,
    kind: Kind,
) -> Result<Response, ApiError> {
    let tenant = &ctx.tenant;
    let expected = match &cond.if_match {
        Some(_) => {
            let cur = match kind {
                Kind::User => state.store.get_user(tenant.id, &id).await?,
                Kind::Group => state.store.get_group(tenant.id, &id).await?,
            };
            cond.check(cur.version)?
        }
        None => None,
    };
    let now = crate::domain::now();
    let it = intent(tenant, &ctx.request_id, &now);
    match kind {
        Kind::User => state.store.delete_user(&it, &id, expected).await?,
        Kind::Group => state.store.delete_group(&it, &id, expected).await?,
    }
    state.pushed(tenant.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One attempt of a read-modify-write, given the resource as read.
pub(super) enum Step {
    /// The store's answer to the write (made at the version read, unless the request's own
    /// If-Match version).
    Wrote(Result<StoredResource, StoreError>),
    /// Nothing to change: the resource as read is the answer.
    Unchanged(StoredResource),
}

/// A PUT or PATCH: reads the resource, checks the request's preconditions, lets `attempt` write
/// it at the version read, and tries again (`WRITE_RETRIES` times) when another writer got there
/// first, unless the client named a version (If-Match: then 412). A write wakes the controller.
/// Answers the resource written or left unchanged, and whether it was written.
pub(super) async fn write_with_retry<F, Fut>(
    state: &AppState,
    tenant: &Tenant,
    kind: Kind,
    id: &str,
    cond: &Conditions,
    mut attempt: F,
) -> Result<(StoredResource, bool), ApiError>
where
    F: FnMut(StoredResource, Option<i64>) -> Fut,
    Fut: Future<Output = Result<Step, ApiError>>,
{
    for _ in 0..WRITE_RETRIES {
        let cur = match kind {
            Kind::User => state.store.get_user(tenant.id, id).await?,
            Kind::Group => state.store.get_group(tenant.id, id).await?,
        };
        let expected = cond.check(cur.version)?;
        match attempt(cur, expected).await? {
            Step::Unchanged(cur) => return Ok((cur, false)),
            Step::Wrote(Ok(r)) => {
                state.pushed(tenant.id);
                return Ok((r, true));
            }
            Step::Wrote(Err(StoreError::VersionMismatch(_))) if expected.is_none() => continue,
            Step::Wrote(Err(e)) => return Err(e.into()),
        }
    }
    Err(ScimError::new(409, "the resource is being changed concurrently; retry").into())
}
