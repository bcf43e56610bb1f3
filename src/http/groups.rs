//! `/Groups` handlers. Members live in their own table: a PATCH turns member operations into
//! row inserts and deletes, so its cost follows the change, not the group's size.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Ctx;
use super::body::{Conditions, QueryMap, ResourceId, ScimJson};
use super::resource::{intent, respond_one, write_with_retry, Step};
use super::{ApiError, AppState};
use crate::domain::now;
use crate::scim::filter::matches;
use crate::scim::patch::{apply_patch, parse_patch, MemberOp};
use crate::scim::resource::{projection_from_query, Ref};
use crate::scim::schema::{normalize, normalize_change, Kind, ResourceSchema};
use crate::scim::ScimError;
use crate::store::{MemberChange, MemberRef, Tenant};

fn member_refs(values: &[Value]) -> Result<Vec<MemberRef>, ScimError> {
    values
        .iter()
        .map(|m| {
            let value = m
                .get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ScimError::invalid_value("each member needs a string value"))?;
            Ok(MemberRef {
                value: value.to_string(),
                member_type: m.get("type").and_then(Value::as_str).map(str::to_string),
                display: m.get("display").and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}

/// A Group body's members as sent: each an object with a string `value` (or a bare string id).
/// Checked before normalising, which would keep a number as its text: a member that is not a
/// string id is a malformed request (400), unlike an id that does not exist (dropped).
fn check_members(body: &Value) -> Result<(), ScimError> {
    let members = body.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")));
    let items = match members {
        None | Some((_, Value::Null)) => return Ok(()),
        Some((_, Value::Array(items))) => items,
        Some(_) => return Err(ScimError::invalid_value("members must be an array")),
    };
    let string_id = |m: &Value| match m {
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("value"))
            .is_some_and(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty())),
        _ => false,
    };
    match items.iter().all(string_id) {
        true => Ok(()),
        false => Err(ScimError::invalid_value("each member needs a string value")),
    }
}

/// Splits a normalised group document from its members.
fn split_members(mut doc: Value) -> Result<(Value, Vec<MemberRef>), ScimError> {
    let members = doc.as_object_mut().and_then(|o| o.shift_remove("members"));
    let refs = match members {
        Some(Value::Array(items)) => member_refs(&items)?,
        _ => Vec::new(),
    };
    Ok((doc, refs))
}

pub async fn create_group(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    q: QueryMap,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    check_members(&body)?;
    let (doc, members) = split_members(normalize(Kind::Group, body)?)?;
    let id = crate::domain::new_resource_id();
    let now = now();
    let r = state.store.insert_group(&intent(&tenant, &rid, &now), &id, &doc, &members).await?;
    state.pushed(tenant.id);
    respond_one(&state, &tenant, &base, Kind::Group, &r, &proj, StatusCode::CREATED).await
}

pub async fn put_group(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    ResourceId(id): ResourceId,
    q: QueryMap,
    cond: Conditions,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    check_members(&body)?;
    let (doc, members) = split_members(normalize(Kind::Group, body)?)?;
    let now = now();
    let changes = [MemberChange::ReplaceAll(members)];
    let it = intent(&tenant, &rid, &now);
    let (r, _) = write_with_retry(&state, &tenant, Kind::Group, &id, &cond, |cur, _| {
        let (doc, changes, it, id, state) = (&doc, &changes, &it, &id, &state);
        async move {
            let r = state.store.update_group(it, id, Some(doc), Some(cur.version), changes, "replace").await;
            Ok(Step::Wrote(r))
        }
    })
    .await?;
    respond_one(&state, &tenant, &base, Kind::Group, &r, &proj, StatusCode::OK).await
}

/// Turns the PATCH engine's member operations into member-table changes; a filter that is not
/// a plain `value eq` list is evaluated against the current members.
async fn member_changes(
    state: &AppState,
    tenant: &Tenant,
    base: &str,
    id: &str,
    ops: Vec<MemberOp>,
) -> Result<Vec<MemberChange>, ApiError> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(match op {
            MemberOp::Add(v) => MemberChange::Add(member_refs(&v)?),
            MemberOp::Remove(ids) => MemberChange::Remove(ids),
            MemberOp::RemoveAll => MemberChange::RemoveAll,
            MemberOp::ReplaceAll(v) => MemberChange::ReplaceAll(member_refs(&v)?),
            MemberOp::RemoveWhere(filter) => {
                let schema = ResourceSchema(Kind::Group);
                let members = state.store.members_of(tenant.id, &[id]).await?.remove(id).unwrap_or_default();
                let ids = members
                    .into_iter()
                    .filter(|m| {
                        let el = Ref::member(&m.value, &m.member_type, m.display.as_deref()).to_value(base);
                        matches(&filter, &json!({ "members": [el] }), &schema)
                    })
                    .map(|m| m.value)
                    .collect();
                MemberChange::Remove(ids)
            }
        });
    }
    Ok(out)
}

pub async fn patch_group(
    State(state): State<AppState>,
    Ctx { tenant, base, request_id: rid }: Ctx,
    ResourceId(id): ResourceId,
    q: QueryMap,
    cond: Conditions,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let proj = projection_from_query(&q.0)?;
    let ops = parse_patch(&body)?;
    let schema = ResourceSchema(Kind::Group);
    let now = now();
    let it = intent(&tenant, &rid, &now);
    let (r, _) = write_with_retry(&state, &tenant, Kind::Group, &id, &cond, |cur, expected| {
        let (ops, schema, it, id, state, tenant, base) = (&ops, &schema, &it, &id, &state, &tenant, &base);
        async move {
            let before = cur.doc_value()?;
            let mut doc = before.clone();
            let member_ops = apply_patch(&mut doc, ops, schema, schema)?;
            let doc = normalize_change(Kind::Group, doc, &before)?;
            let changes = member_changes(state, tenant, base, id, member_ops).await?;
            let doc_changed = doc != before;
            // Only a change to the group's own attributes needs the version it read; member
            // changes are row writes that commute with each other.
            let expect = if doc_changed { Some(cur.version) } else { expected };
            let r = state.store.update_group(it, id, doc_changed.then_some(&doc), expect, &changes, "patch").await;
            Ok(Step::Wrote(r))
        }
    })
    .await?;
    if proj.is_default() {
        let mut res = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&crate::scim::resource::etag(r.version)) {
            res.headers_mut().insert(axum::http::header::ETAG, v);
        }
        return Ok(res);
    }
    respond_one(&state, &tenant, &base, Kind::Group, &r, &proj, StatusCode::OK).await
}
