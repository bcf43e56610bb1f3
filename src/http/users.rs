//! `/Users` handlers: parse, record the desired state, answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Ctx;
use super::body::{Conditions, QueryMap, ResourceId, ScimJson};
use super::resource::{intent, respond_one, write_with_retry, Step};
use super::{ApiError, AppState};
use crate::domain::now;
use crate::scim::patch::{apply_patch, parse_patch};
use crate::scim::resource::projection_from_query;
use crate::scim::schema::{normalize, normalize_change, Kind, ResourceSchema};
use crate::store::StoredResource;

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
    let doc = normalize(Kind::User, body)?;
    let now = now();
    let it = intent(&tenant, &rid, &now);
    let (r, _) = write_with_retry(&state, &tenant, Kind::User, &id, &cond, |cur, _| {
        let (doc, it, id, state) = (&doc, &it, &id, &state);
        async move {
            // A PUT that omits `active` keeps the current value rather than changing the
            // account's status (Okta's read-modify-write may drop it).
            let kept = match (doc.get("active"), cur.doc_value()?.get("active")) {
                (None, Some(a)) => {
                    let mut d = doc.clone();
                    d["active"] = a.clone();
                    Some(d)
                }
                _ => None,
            };
            let doc = kept.as_ref().unwrap_or(doc);
            Ok(Step::Wrote(state.store.update_user(it, id, doc, cur.version, "replace").await))
        }
    })
    .await?;
    respond_one(&state, &tenant, &base, Kind::User, &r, &proj, StatusCode::OK).await
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
    let it = intent(&tenant, &rid, &now);
    let (r, _) = write_with_retry(&state, &tenant, Kind::User, &id, &cond, |cur, _| {
        let (ops, schema, it, id, state) = (&ops, &schema, &it, &id, &state);
        async move {
            let before = cur.doc_value()?;
            let mut doc = before.clone();
            apply_patch(&mut doc, ops, schema, schema)?;
            let doc = normalize_change(Kind::User, doc, &before)?;
            if doc == before {
                return Ok(Step::Unchanged(cur));
            }
            Ok(Step::Wrote(state.store.update_user(it, id, &doc, cur.version, "patch").await))
        }
    })
    .await?;
    respond_one(&state, &tenant, &base, Kind::User, &r, &proj, StatusCode::OK).await
}
