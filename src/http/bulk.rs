//! `POST /Bulk` (RFC 7644 §3.7): POST, PUT, PATCH and DELETE of Users and Groups in one request.
//! Each operation runs through the same handler as its single request (validated, journaled,
//! reconciled, answered the same way). `bulkId:` references (in a path or anywhere in `data`)
//! are resolved to the ids the referenced POSTs created, in whatever order the operations come:
//! operations run in waves, each wave the operations whose references are all resolved. Without
//! `failOnErrors` a wave's operations run concurrently, so their writes share the store's group
//! commits; with it, one at a time in request order, stopping once that many have failed (the
//! rest are not processed and not in the answer). References that can never resolve (an unknown
//! or failed bulkId, a cycle) fail their operations with 409.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::auth::Ctx;
use super::body::{Conditions, QueryMap, ResourceId, ScimJson};
use super::error::scim_response;
use super::{groups, resource, users, ApiError, AppState};
use crate::scim::schema::Kind;
use crate::scim::ScimError;

use crate::scim::schema::MAX_BULK_OPERATIONS as MAX_OPERATIONS;
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
const REF: &str = "bulkId:";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One operation as the client sent it, checked.
struct Op {
    method: Method,
    bulk_id: Option<String>,
    version: Option<String>,
    path: String,
    data: Option<Value>,
    /// The bulkIds it references.
    refs: HashSet<String>,
}

/// What one operation answered.
struct Outcome {
    status: u16,
    location: Option<String>,
    version: Option<String>,
    /// The SCIM error of a failed operation.
    error: Option<Value>,
    /// The id a POST created (what `bulkId:` references resolve to).
    created: Option<String>,
}

impl Outcome {
    fn failed(e: ScimError) -> Outcome {
        Outcome { status: e.status, location: None, version: None, error: Some(e.to_body()), created: None }
    }

    fn ok(&self) -> bool {
        self.status < 400
    }
}

pub async fn bulk(State(state): State<AppState>, ctx: Ctx, ScimJson(body): ScimJson) -> Result<Response, ApiError> {
    let (ops, fail_on_errors) = parse(&body)?;
    let mut results: Vec<Option<Outcome>> = (0..ops.len()).map(|_| None).collect();
    let mut ids: HashMap<String, String> = HashMap::new();
    // Only a POST creates what a bulkId names.
    let defined: HashSet<&str> =
        ops.iter().filter(|o| o.method == Method::Post).filter_map(|o| o.bulk_id.as_deref()).collect();
    let mut errors = 0usize;
    'waves: loop {
        let pending: Vec<usize> = (0..ops.len()).filter(|&i| results[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        // References that cannot resolve: not defined in the request, or defined by a POST that
        // failed.
        let mut progressed = false;
        let mut ready = Vec::new();
        for &i in &pending {
            if let Some(b) = ops[i].bulk_id.as_ref().filter(|b| ops[i].refs.contains(*b)) {
                results[i] = Some(Outcome::failed(ScimError::new(
                    409,
                    format!("the operation references its own bulkId {b:?}"),
                )));
                errors += 1;
                progressed = true;
                continue;
            }
            let unresolvable = ops[i].refs.iter().find(|r| {
                !defined.contains(r.as_str())
                    || ops.iter().zip(&results).any(|(o, res)| {
                        o.bulk_id.as_deref() == Some(r.as_str()) && res.as_ref().is_some_and(|x| !x.ok())
                    })
            });
            if let Some(r) = unresolvable {
                results[i] = Some(Outcome::failed(ScimError::new(
                    409,
                    format!("bulkId {r:?} does not resolve: no operation of this request created it"),
                )));
                errors += 1;
                progressed = true;
            } else if ops[i].refs.iter().all(|r| ids.contains_key(r)) {
                ready.push(i);
            }
        }
        if let Some(limit) = fail_on_errors {
            if errors >= limit {
                break;
            }
        }
        if ready.is_empty() {
            if progressed {
                continue;
            }
            // What is left references itself in a cycle.
            for i in pending {
                if results[i].is_none() {
                    results[i] = Some(Outcome::failed(ScimError::new(
                        409,
                        "circular bulkId references: the operations reference each other's resources, which \
                         cannot be created first",
                    )));
                }
            }
            break;
        }
        match fail_on_errors {
            None => {
                // In request order, as runs of creates of distinct names that share commits (at
                // most CONCURRENCY at a time); anything else, or a create of a name the run
                // already holds, waits for what comes before it.
                let mut run_of: Vec<usize> = Vec::new();
                let mut names: HashSet<String> = HashSet::new();
                for &i in &ready {
                    match (ops[i].method == Method::Post).then(|| create_key(&ops[i])).flatten() {
                        Some(k) if !names.contains(&k) => {
                            names.insert(k);
                            run_of.push(i);
                        }
                        Some(k) => {
                            run_concurrently(&state, &ctx, &ops, &run_of, &mut ids, &mut results).await;
                            (run_of, names) = (vec![i], HashSet::from([k]));
                        }
                        None => {
                            run_concurrently(&state, &ctx, &ops, &run_of, &mut ids, &mut results).await;
                            run_of.clear();
                            names.clear();
                            run_concurrently(&state, &ctx, &ops, &[i], &mut ids, &mut results).await;
                        }
                    }
                }
                run_concurrently(&state, &ctx, &ops, &run_of, &mut ids, &mut results).await;
            }
            Some(limit) => {
                for i in ready {
                    let o = run(&state, &ctx, &ops[i], &ids).await;
                    record(&ops[i], &o, &mut ids);
                    errors += usize::from(!o.ok());
                    results[i] = Some(o);
                    if errors >= limit {
                        break 'waves;
                    }
                }
            }
        }
    }
    let answered: Vec<Value> = ops.iter().zip(results).filter_map(|(op, r)| r.map(|r| answer(op, r))).collect();
    Ok(scim_response(StatusCode::OK, &json!({"schemas": [BULK_RESPONSE], "Operations": answered})))
}

/// How many operations of one bulk request run at once.
const CONCURRENCY: usize = 64;

/// Runs `which` operations concurrently (`CONCURRENCY` at a time) and records their outcomes.
async fn run_concurrently(
    state: &AppState,
    ctx: &Ctx,
    ops: &[Op],
    which: &[usize],
    ids: &mut HashMap<String, String>,
    results: &mut [Option<Outcome>],
) {
    use futures_util::StreamExt as _;
    if which.is_empty() {
        return;
    }
    let snapshot = ids.clone();
    let mut runs = Vec::with_capacity(which.len());
    for &i in which {
        runs.push(run(state, ctx, &ops[i], &snapshot));
    }
    let outcomes: Vec<Outcome> = futures_util::stream::iter(runs).buffered(CONCURRENCY).collect().await;
    for (&i, o) in which.iter().zip(outcomes) {
        record(&ops[i], &o, ids);
        results[i] = Some(o);
    }
}

/// What a create claims: its kind and unique name (`userName` / `displayName`, lower-cased).
fn create_key(op: &Op) -> Option<String> {
    let data = op.data.as_ref()?.as_object()?;
    let kind = split_path(&op.path)?.0;
    let name = data
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("userName") || k.eq_ignore_ascii_case("displayName"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("");
    Some(format!("{kind}\n{}", name.to_lowercase()))
}

fn record(op: &Op, o: &Outcome, ids: &mut HashMap<String, String>) {
    if let (Some(b), Some(id)) = (&op.bulk_id, &o.created) {
        ids.insert(b.clone(), id.clone());
    }
}

fn answer(op: &Op, r: Outcome) -> Value {
    let mut m = Map::new();
    m.insert("method".into(), op.method.as_str().into());
    if let Some(b) = &op.bulk_id {
        m.insert("bulkId".into(), b.clone().into());
    }
    if let Some(v) = r.version {
        m.insert("version".into(), v.into());
    }
    if let Some(l) = r.location {
        m.insert("location".into(), l.into());
    }
    m.insert("status".into(), r.status.to_string().into());
    if let Some(e) = r.error {
        m.insert("response".into(), e);
    }
    Value::Object(m)
}

/// Checks the request: its schema, `failOnErrors`, and every operation's shape (an operation
/// that is malformed fails the whole request with 400, as a malformed single request would).
fn parse(body: &Value) -> Result<(Vec<Op>, Option<usize>), ScimError> {
    let schemas = body.get("schemas").and_then(Value::as_array);
    if !schemas.is_some_and(|s| s.iter().any(|x| x.as_str() == Some(BULK_REQUEST))) {
        return Err(ScimError::invalid_syntax(format!("a bulk request has the schema {BULK_REQUEST}")));
    }
    let fail_on_errors = match body.get("failOnErrors") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(ScimError::invalid_value("failOnErrors must be an integer of at least 1")),
        },
    };
    let ops = body
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a bulk request needs an Operations array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::new(
            413,
            format!("the bulk request holds {} operations; at most {MAX_OPERATIONS} (bulk.maxOperations)", ops.len()),
        ));
    }
    let mut seen = HashSet::new();
    let ops = ops
        .iter()
        .enumerate()
        .map(|(n, op)| {
            let op =
                parse_op(op).map_err(|e| ScimError { detail: format!("operation {}: {}", n + 1, e.detail), ..e })?;
            if let Some(b) = &op.bulk_id {
                if !seen.insert(b.clone()) {
                    return Err(ScimError::invalid_value(format!("operation {}: bulkId {b:?} is used twice", n + 1)));
                }
            }
            Ok(op)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ops, fail_on_errors))
}

fn parse_op(op: &Value) -> Result<Op, ScimError> {
    let s = |k: &str| op.get(k).and_then(Value::as_str).map(str::to_string);
    let method = match s("method").map(|m| m.to_ascii_uppercase()).as_deref() {
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        _ => return Err(ScimError::invalid_value("method must be POST, PUT, PATCH or DELETE")),
    };
    let path = s("path").ok_or_else(|| ScimError::invalid_value("path is required"))?;
    let bulk_id = s("bulkId");
    if method == Method::Post && bulk_id.as_deref().is_none_or(str::is_empty) {
        return Err(ScimError::invalid_value("a POST operation needs a bulkId"));
    }
    let data = op.get("data").filter(|d| !d.is_null()).cloned();
    if method != Method::Delete && !data.as_ref().is_some_and(Value::is_object) {
        return Err(ScimError::invalid_value(format!("a {} operation needs a data object", method.as_str())));
    }
    let mut refs = HashSet::new();
    for seg in path.split('/') {
        collect_refs(&Value::String(seg.to_string()), &mut refs);
    }
    if let Some(d) = &data {
        collect_refs(d, &mut refs);
    }
    let (kind, id) = split_path(&path).ok_or_else(|| {
        ScimError::invalid_path(format!("path {path:?} is not /Users, /Groups, /Users/{{id}} or /Groups/{{id}}"))
    })?;
    let _ = kind;
    if (method == Method::Post) != id.is_none() {
        return Err(ScimError::invalid_path(format!(
            "a {} operation's path is {}",
            method.as_str(),
            if method == Method::Post { "/Users or /Groups" } else { "/Users/{id} or /Groups/{id}" }
        )));
    }
    Ok(Op { method, bulk_id, version: s("version"), path, data, refs })
}

/// `(Users|Groups, id)` of an operation's path (names in any case, as the door routes them).
fn split_path(path: &str) -> Option<(&'static str, Option<&str>)> {
    let mut parts = path.trim_matches('/').splitn(2, '/');
    let kind = match parts.next()? {
        k if k.eq_ignore_ascii_case("Users") => "Users",
        k if k.eq_ignore_ascii_case("Groups") => "Groups",
        _ => return None,
    };
    match parts.next() {
        None => Some((kind, None)),
        Some(id) if !id.is_empty() && !id.contains('/') => Some((kind, Some(id))),
        Some(_) => None,
    }
}

/// Every `bulkId:X` string value in `v` (X).
fn collect_refs(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::String(s) => {
            if let Some(id) = s.strip_prefix(REF).filter(|id| !id.is_empty()) {
                out.insert(id.to_string());
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// `v` with every `bulkId:X` replaced by the id X's POST created.
fn resolve(v: &Value, ids: &HashMap<String, String>) -> Value {
    match v {
        // A value that is a whole `bulkId:X` (a member's `value`, the manager's id).
        Value::String(s) => match s.strip_prefix(REF).and_then(|b| ids.get(b)) {
            Some(id) => Value::String(id.clone()),
            None => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, ids)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), resolve(x, ids))).collect()),
        other => other.clone(),
    }
}

/// Runs one operation through its single request's handler.
async fn run(state: &AppState, ctx: &Ctx, op: &Op, ids: &HashMap<String, String>) -> Outcome {
    let path = op
        .path
        .split('/')
        .map(|seg| seg.strip_prefix(REF).and_then(|r| ids.get(r)).map_or(seg, String::as_str))
        .collect::<Vec<_>>()
        .join("/");
    let Some((kind, id)) = split_path(&path) else {
        return Outcome::failed(ScimError::invalid_path(format!("path {path:?} is not a resource")));
    };
    let data = op.data.as_ref().map(|d| if op.refs.is_empty() { d.clone() } else { resolve(d, ids) });
    let (st, c) = (State(state.clone()), ctx.clone());
    let q = QueryMap(HashMap::new());
    let cond = Conditions { if_match: op.version.clone(), if_none_match: None };
    let id = id.map(|i| ResourceId(i.to_string()));
    let body = data.map(ScimJson);
    let res = match (op.method, kind, id, body) {
        (Method::Post, "Users", None, Some(b)) => users::create_user(st, c, q, b).await,
        (Method::Post, "Groups", None, Some(b)) => groups::create_group(st, c, q, b).await,
        (Method::Put, "Users", Some(id), Some(b)) => users::put_user(st, c, id, q, cond, b).await,
        (Method::Put, "Groups", Some(id), Some(b)) => groups::put_group(st, c, id, q, cond, b).await,
        (Method::Patch, "Users", Some(id), Some(b)) => users::patch_user(st, c, id, q, cond, b).await,
        (Method::Patch, "Groups", Some(id), Some(b)) => groups::patch_group(st, c, id, q, cond, b).await,
        (Method::Delete, "Users", Some(id), _) => resource::delete(st, c, id, cond, Kind::User).await,
        (Method::Delete, "Groups", Some(id), _) => resource::delete(st, c, id, cond, Kind::Group).await,
        _ => {
            return Outcome::failed(ScimError::invalid_path(format!(
                "{} {path} is not an operation",
                op.method.as_str()
            )))
        }
    };
    let res = match res {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    };
    let status = res.status().as_u16();
    let (version, location) = {
        let header = |h: header::HeaderName| res.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        (header(header::ETAG), header(header::LOCATION))
    };
    if status >= 400 {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap_or_default();
        let error = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"status": status.to_string()}));
        return Outcome { status, location: None, version: None, error: Some(error), created: None };
    }
    let location = location.or_else(|| {
        (op.method != Method::Delete).then(|| format!("{}/{kind}/{}", ctx.base, path.rsplit('/').next().unwrap_or("")))
    });
    let created = match op.method {
        Method::Post => location.as_deref().and_then(|l| l.rsplit('/').next()).map(str::to_string),
        _ => None,
    };
    Outcome { status, location, version, error: None, created }
}
