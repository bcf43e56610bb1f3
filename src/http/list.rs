//! Lists and searches: filter → indexed SQL where it can, in-memory evaluation over the narrowed
//! candidates where it cannot; a stable order (creation, or `sortBy` then creation) so pages
//! neither overlap nor skip; attribute projection; the ListResponse.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::auth::BaseUrl;
use super::body::ScimJson;
use super::error::scim_json;
use super::{cursor, ApiError, AppState};
use crate::scim::filter::{matches, AttrPath, Filter};
use crate::scim::resource::{cursor_list_response, list_response, render, render_value, ListParams, Projection, Ref};
use crate::scim::schema::{Kind, ResourceSchema};
use crate::scim::ScimError;
use crate::store::{ListQuery, Member, Store, StoreError, StoredResource, Tenant};

/// The computed attribute (a User's `groups`, a Group's `members`) of the resources of a page,
/// by resource id, read when the projection keeps it.
pub(super) enum Computed {
    /// Users' groups (id, displayName) — of the users not read with theirs.
    Groups(HashMap<String, Vec<(String, String)>>),
    Members(HashMap<String, Vec<Member>>),
}

/// Reads the computed attribute of `rs` when `proj` keeps it (`None` when it does not).
pub(super) async fn computed_of(
    store: &Store,
    tenant_id: i64,
    kind: Kind,
    rs: &[StoredResource],
    proj: &Projection,
) -> Result<Option<Computed>, ApiError> {
    Ok(match kind {
        Kind::User if proj.wants(kind, "groups") => {
            // Users read with their groups carry them; the others' are read here.
            let ids: Vec<&str> = rs.iter().filter(|r| r.groups.is_none()).map(|r| r.id.as_str()).collect();
            let found = if ids.is_empty() { HashMap::new() } else { store.groups_of_users(tenant_id, &ids).await? };
            Some(Computed::Groups(found))
        }
        Kind::Group if proj.wants(kind, "members") => {
            let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
            let found = if ids.is_empty() { HashMap::new() } else { store.members_of(tenant_id, &ids).await? };
            Some(Computed::Members(found))
        }
        _ => None,
    })
}

/// A stored document that is not JSON: a corrupt row, answered as an internal error.
fn corrupt(e: serde_json::Error) -> ApiError {
    StoreError::corrupt_doc(e).into()
}

/// The computed attribute's elements for one resource.
fn refs_of<'a>(r: &'a StoredResource, computed: Option<&'a Computed>) -> Option<Vec<Ref<'a>>> {
    const NONE: &[(String, String)] = &[];
    match computed? {
        Computed::Groups(found) => {
            let gs = r.groups.as_deref().or_else(|| found.get(&r.id).map(Vec::as_slice)).unwrap_or(NONE);
            Some(gs.iter().map(|(gid, name)| Ref::group(gid, name)).collect())
        }
        Computed::Members(found) => Some(
            found
                .get(&r.id)
                .map(|ms| ms.iter().map(|m| Ref::member(&m.value, &m.member_type, m.display.as_deref())).collect())
                .unwrap_or_default(),
        ),
    }
}

/// Renders one resource as JSON text, with its computed attribute and projected. With the
/// default projection the text is written straight from the stored text (no parse tree).
pub(super) fn render_text(
    kind: Kind,
    base: &str,
    r: &StoredResource,
    computed: Option<&Computed>,
    proj: &Projection,
) -> Result<Vec<u8>, ApiError> {
    if proj.is_default() {
        return render(kind, base, &r.doc, r.meta(), refs_of(r, computed).as_deref()).map_err(corrupt);
    }
    serde_json::to_vec(&proj.apply(kind, render_one(kind, base, r, computed)?)).map_err(corrupt)
}

/// Renders stored resources as JSON text with their computed attribute (when the projection
/// keeps it), projected.
pub(super) async fn render_many(
    store: &Store,
    tenant_id: i64,
    base: &str,
    kind: Kind,
    rs: &[StoredResource],
    proj: &Projection,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let computed = computed_of(store, tenant_id, kind, rs, proj).await?;
    rs.iter().map(|r| render_text(kind, base, r, computed.as_ref(), proj)).collect()
}

/// Renders one stored resource as a JSON value, with the computed attribute when given (to
/// evaluate a filter or a sort key on it).
pub(super) fn render_one(
    kind: Kind,
    base: &str,
    r: &StoredResource,
    computed: Option<&Computed>,
) -> Result<Value, ApiError> {
    render_value(kind, base, &r.doc, r.meta(), refs_of(r, computed).as_deref()).map_err(corrupt)
}

fn sort_value(v: &Value, path: &AttrPath) -> Option<String> {
    let get = |o: &Value, k: &str| -> Option<Value> {
        o.as_object()?.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone())
    };
    let container = match &path.urn {
        Some(u) => get(v, u).unwrap_or_else(|| v.clone()),
        None => v.clone(),
    };
    let mut x = get(&container, &path.name)?;
    if let Value::Array(items) = &x {
        // Multi-valued: the primary element, else the first (RFC 7644 §3.4.2.3).
        x = items.iter().find(|i| i.get("primary") == Some(&Value::Bool(true))).or_else(|| items.first())?.clone();
    }
    if let Some(sub) = &path.sub {
        x = get(&x, sub)?;
    } else if x.is_object() {
        x = get(&x, "value")?;
    }
    match x {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The most resources a list holds in memory (to sort by an unindexed attribute, or to evaluate a
/// filter on `groups`/`members`); past it the request is refused with `tooMany`.
const MAX_IN_MEMORY: usize = 50_000;

fn too_many() -> ApiError {
    ScimError::too_many(format!(
        "more than {MAX_IN_MEMORY} resources would have to be held in memory: narrow the filter with an indexed \
         attribute (userName, externalId, id, emails.value, displayName, members.value) or sort by an indexed one"
    ))
    .into()
}

/// Whether a filter names a top-level attribute.
fn mentions(f: &Filter, name: &str) -> bool {
    match f {
        Filter::Compare { path, .. } | Filter::Present(path) | Filter::ValuePath { path, .. } => {
            path.name.eq_ignore_ascii_case(name)
        }
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, name) || mentions(b, name),
        Filter::Not(a) => mentions(a, name),
    }
}

/// Selects, orders and pages the resources of one kind.
async fn select(
    store: &Store,
    tenant_id: i64,
    base: &str,
    kind: Kind,
    p: &ListParams,
    after: Option<i64>,
) -> Result<(i64, Vec<StoredResource>), ApiError> {
    let mut q = ListQuery::new(kind, p.filter.as_ref());
    if let Some(seq) = after {
        q.after_seq(seq);
    }
    let mut sort_in_memory = None;
    if let Some(sb) = &p.sort_by {
        match ListQuery::sort_column(kind, sb) {
            Some(col) => {
                q.sort = col;
                q.descending = p.descending;
            }
            None => sort_in_memory = Some(sb.clone()),
        }
    }
    let offset = p.start_index - 1;
    if q.is_exact() && sort_in_memory.is_none() {
        if p.count > 0 {
            let page = match kind {
                Kind::User => store.page_users(tenant_id, &q, offset, p.count).await?,
                Kind::Group => store.page_groups(tenant_id, &q, offset, p.count).await?,
            };
            // A first page that is not full holds every match (Okta's `userName eq` lookups):
            // no COUNT needed; nor for a cursor's page (the walk counts the whole query).
            if (offset == 0 && (page.len() as i64) < p.count) || after.is_some() {
                return Ok((page.len() as i64, page));
            }
            let total = match kind {
                Kind::User => store.count_users(tenant_id, &q).await?,
                Kind::Group => store.count_groups(tenant_id, &q).await?,
            };
            return Ok((total, page));
        }
        let total = match kind {
            Kind::User => store.count_users(tenant_id, &q).await?,
            Kind::Group => store.count_groups(tenant_id, &q).await?,
        };
        return Ok((total, Vec::new()));
    }
    // Evaluate what SQL could not express in memory over the candidates SQL selects, streaming;
    // keep only the page (or, to sort in memory, every match).
    let schema = ResourceSchema(kind);
    let computed = match kind {
        Kind::User => "groups",
        Kind::Group => "members",
    };
    let residual = q.residual.clone();
    let keep_all = sort_in_memory.is_some();
    let (lo, hi) = (offset, offset.saturating_add(p.count));
    let mut total = 0i64;
    let mut kept: Vec<StoredResource> = Vec::new();
    let mut take = |r: StoredResource, total: &mut i64| {
        // Sorting in memory keeps every match, up to one past the cap (then refused).
        if (keep_all && kept.len() <= MAX_IN_MEMORY) || (!keep_all && *total >= lo && *total < hi) {
            kept.push(r);
        }
        *total += 1;
    };
    if residual.as_ref().is_some_and(|f| mentions(f, computed)) {
        // The residual needs `groups` / `members`: read the candidates, then their computed
        // attribute in batches.
        let mut candidates = Vec::new();
        let mut collect = |r: StoredResource| {
            if candidates.len() <= MAX_IN_MEMORY {
                candidates.push(r);
            }
        };
        match kind {
            Kind::User => store.scan_users(tenant_id, &q, &mut collect).await?,
            Kind::Group => store.scan_groups(tenant_id, &q, &mut collect).await?,
        }
        if candidates.len() > MAX_IN_MEMORY {
            return Err(too_many());
        }
        let everything = Projection::default();
        for chunk in candidates.chunks(500) {
            let computed = computed_of(store, tenant_id, kind, chunk, &everything).await?;
            for r in chunk {
                let full = render_one(kind, base, r, computed.as_ref())?;
                if residual.as_ref().is_none_or(|f| matches(f, &full, &schema)) {
                    take(r.clone(), &mut total);
                }
            }
        }
    } else {
        let mut failed = None;
        let mut visit = |r: StoredResource| {
            if let Some(f) = &residual {
                match render_one(kind, base, &r, None) {
                    Ok(v) if matches(f, &v, &schema) => {}
                    Ok(_) => return,
                    Err(e) => {
                        failed.get_or_insert(e);
                        return;
                    }
                }
            }
            take(r, &mut total);
        };
        match kind {
            Kind::User => store.scan_users(tenant_id, &q, &mut visit).await?,
            Kind::Group => store.scan_groups(tenant_id, &q, &mut visit).await?,
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    if kept.len() > MAX_IN_MEMORY {
        return Err(too_many());
    }
    if let Some(sb) = sort_in_memory {
        let mut keyed: Vec<(Option<String>, StoredResource)> = kept
            .into_iter()
            .map(|r| Ok((sort_value(&render_one(kind, base, &r, None)?, &sb), r)))
            .collect::<Result<_, ApiError>>()?;
        keyed.sort_by(|(a, ra), (b, rb)| {
            let o = match (a, b) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let o = if p.descending { o.reverse() } else { o };
            o.then(ra.seq.cmp(&rb.seq))
        });
        kept = keyed.into_iter().skip(offset.max(0) as usize).take(p.count.max(0) as usize).map(|(_, r)| r).collect();
    }
    Ok((total, kept))
}

/// A list of one kind as a ListResponse.
pub(super) async fn list_kind(
    state: &AppState,
    tenant: &Tenant,
    base: &str,
    kind: Kind,
    p: ListParams,
) -> Result<Response, ApiError> {
    if let Some(c) = &p.cursor {
        let (key, kinds) = (state.cursor_key().await?, [kind]);
        return super::error::read_again(|| walk(&state.store, &key, tenant, base, &kinds, &p, c)).await;
    }
    super::error::read_again(|| list_kind_once(&state.store, tenant, base, kind, &p)).await
}

/// One page of a cursor walk (RFC 9865) over `kinds` in turn, each in creation order: the
/// resources after the cursor's position, and the cursor of the next page while there is more.
/// Every resource that exists for the whole walk is returned exactly once, whatever is created,
/// changed or deleted meanwhile.
async fn walk(
    store: &Store,
    key: &[u8],
    tenant: &Tenant,
    base: &str,
    kinds: &[Kind],
    p: &ListParams,
    cursor: &str,
) -> Result<Response, ApiError> {
    let endpoint: Vec<&str> = kinds.iter().map(|k| k.endpoint()).collect();
    let scope = cursor::scope(tenant.id, &endpoint.join("+"), p.filter.as_ref());
    let now = chrono::Utc::now().timestamp();
    let mut pos = cursor::decode(key, &scope, cursor, kinds[0], now)?;
    let start = kinds.iter().position(|k| *k == pos.kind).ok_or_else(|| {
        ApiError::from(ScimError::bad(crate::scim::ScimType::InvalidCursor, "the cursor is not for this endpoint"))
    })?;
    let mut total = 0;
    for k in kinds {
        let everything = ListParams { count: 0, start_index: 1, ..p.clone() };
        total += select(store, tenant.id, base, *k, &everything, None).await?.0;
    }
    let mut resources = Vec::new();
    let mut next = None;
    let mut left = p.count;
    for (i, k) in kinds.iter().enumerate().skip(start) {
        let after = if i == start { pos.after_seq } else { 0 };
        // One more than the page: whether another page follows.
        let page = ListParams { start_index: 1, count: left + 1, ..p.clone() };
        let (_, mut rows) = select(store, tenant.id, base, *k, &page, Some(after)).await?;
        let more = rows.len() as i64 > left;
        rows.truncate(left.max(0) as usize);
        if let Some(last) = rows.last() {
            pos = cursor::Position { kind: *k, after_seq: last.seq };
        } else if i != start {
            pos = cursor::Position { kind: *k, after_seq: 0 };
        }
        left -= rows.len() as i64;
        resources.extend(render_many(store, tenant.id, base, *k, &rows, &p.projection).await?);
        if more {
            next = Some(cursor::encode(key, &scope, pos, now));
            break;
        }
        if left <= 0 {
            // The page is full at the end of this kind: more only when a later kind has any.
            if let Some(nk) = kinds.get(i + 1) {
                let probe = ListParams { start_index: 1, count: 1, ..p.clone() };
                if !select(store, tenant.id, base, *nk, &probe, Some(0)).await?.1.is_empty() {
                    next = Some(cursor::encode(key, &scope, cursor::Position { kind: *nk, after_seq: 0 }, now));
                }
            }
            break;
        }
    }
    Ok(scim_json(StatusCode::OK, cursor_list_response(total, next.as_deref(), &resources)))
}

async fn list_kind_once(
    store: &Store,
    tenant: &Tenant,
    base: &str,
    kind: Kind,
    p: &ListParams,
) -> Result<Response, ApiError> {
    let (total, page) = select(store, tenant.id, base, kind, p, None).await?;
    let resources = render_many(store, tenant.id, base, kind, &page, &p.projection).await?;
    Ok(scim_json(StatusCode::OK, list_response(total, p.start_index, &resources)))
}

/// `POST /.search`: Users then Groups, one list.
pub async fn search_all(
    Extension(tenant): Extension<Tenant>,
    Extension(BaseUrl(base)): Extension<BaseUrl>,
    axum::extract::State(state): axum::extract::State<super::AppState>,
    ScimJson(body): ScimJson,
) -> Result<Response, ApiError> {
    let p = ListParams::from_search(&body)?;
    if let Some(c) = &p.cursor {
        let key = state.cursor_key().await?;
        let kinds = [Kind::User, Kind::Group];
        return super::error::read_again(|| walk(&state.store, &key, &tenant, &base, &kinds, &p, c)).await;
    }
    // Count both kinds, then take the page across their concatenation.
    let everything = ListParams { start_index: 1, count: i64::MAX / 4, sort_by: None, ..p.clone() };
    let (nu, _) =
        select(&state.store, tenant.id, &base, Kind::User, &ListParams { count: 0, ..everything.clone() }, None)
            .await?;
    let (ng, _) =
        select(&state.store, tenant.id, &base, Kind::Group, &ListParams { count: 0, ..everything }, None).await?;
    let offset = p.start_index - 1;
    let mut resources = Vec::new();
    if offset < nu && p.count > 0 {
        let up = ListParams { start_index: p.start_index, count: p.count.min(nu - offset), ..p.clone() };
        let (_, page) = select(&state.store, tenant.id, &base, Kind::User, &up, None).await?;
        resources.extend(render_many(&state.store, tenant.id, &base, Kind::User, &page, &p.projection).await?);
    }
    let left = p.count - resources.len() as i64;
    if left > 0 {
        let goff = (offset - nu).max(0);
        if goff < ng {
            let gp = ListParams { start_index: goff + 1, count: left, ..p.clone() };
            let (_, page) = select(&state.store, tenant.id, &base, Kind::Group, &gp, None).await?;
            resources.extend(render_many(&state.store, tenant.id, &base, Kind::Group, &page, &p.projection).await?);
        }
    }
    Ok(scim_json(StatusCode::OK, list_response(nu + ng, p.start_index, &resources)))
}
