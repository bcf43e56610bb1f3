//! Shaping resources for the wire: rendering a stored document with `id`, `meta` and its computed
//! attributes, attribute projection (`attributes` / `excludedAttributes`), ETags, and list
//! parameters. No I/O.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::filter::{parse_filter, AttrPath, Filter};
use super::schema::{Kind, Returned, MAX_RESULTS, SEARCH_URN};

/// The bookkeeping a rendered resource needs besides its document.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub id: &'a str,
    pub version: i64,
    pub created: &'a str,
    pub last_modified: &'a str,
}

/// The weak ETag of a version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Whether an `If-Match` / `If-None-Match` header value names `version` (or is `*`).
pub fn etag_matches(header: &str, version: i64) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == version.to_string())
}

/// Renders a stored document as the resource a client sees: `schemas`, `id`, the document,
/// then the computed multi-valued attribute (`groups` or `members`) when given, then `meta`.
pub fn render(kind: Kind, base: &str, doc: &Value, meta: Meta<'_>, computed: Option<Vec<Value>>) -> Value {
    let mut out = Map::new();
    let empty = Map::new();
    let doc = doc.as_object().unwrap_or(&empty);
    if let Some(s) = doc.get("schemas") {
        out.insert("schemas".into(), s.clone());
    }
    out.insert("id".into(), Value::String(meta.id.to_string()));
    for (k, v) in doc {
        if k != "schemas" {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(c) = computed {
        let key = match kind {
            Kind::User => "groups",
            Kind::Group => "members",
        };
        if !c.is_empty() || kind == Kind::Group {
            out.insert(key.into(), Value::Array(c));
        }
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name(),
            "created": meta.created,
            "lastModified": meta.last_modified,
            "location": format!("{base}/{}/{}", kind.endpoint(), meta.id),
            "version": etag(meta.version),
        }),
    );
    Value::Object(out)
}

/// A `groups` element of a User.
pub fn group_ref(base: &str, id: &str, display: &str) -> Value {
    json!({"value": id, "$ref": format!("{base}/Groups/{id}"), "display": display, "type": "direct"})
}

/// A `members` element of a Group.
pub fn member_ref(base: &str, id: &str, member_type: &str, display: Option<&str>) -> Value {
    let endpoint = if member_type == "Group" { "Groups" } else { "Users" };
    let mut v = json!({"value": id, "$ref": format!("{base}/{endpoint}/{id}"), "type": member_type});
    if let Some(d) = display {
        v["display"] = json!(d);
    }
    v
}

/// Parses an attribute name as used in `attributes`, `excludedAttributes` and `sortBy`.
///
/// # Errors
/// `invalidValue` for a malformed name.
pub fn parse_attr_name(s: &str) -> Result<AttrPath, ScimError> {
    let s = s.trim();
    let bad = || ScimError::invalid_value(format!("{s:?} is not an attribute name"));
    let (urn, rest) = match s.rfind(':') {
        Some(i) => (Some(s[..i].to_string()), &s[i + 1..]),
        None => (None, s),
    };
    let mut parts = rest.splitn(2, '.');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let sub = parts.next().map(str::to_string);
    let ok = |n: &str| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if !ok(name) || sub.as_deref().is_some_and(|x| !ok(x)) {
        return Err(bad());
    }
    Ok(AttrPath { urn, name: name.to_string(), sub })
}

/// `attributes` / `excludedAttributes` of a request.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Vec<AttrPath>,
    exclude: Vec<AttrPath>,
}

fn is_schema_urn(p: &AttrPath) -> Option<String> {
    // "urn:…:enterprise:2.0:User" parses as urn "urn:…:2.0", name "User".
    let urn = p.urn.as_ref()?;
    let whole = format!("{urn}:{}", p.name);
    let known = [super::schema::USER_URN, super::schema::GROUP_URN, super::schema::ENTERPRISE_URN];
    (p.sub.is_none() && known.iter().any(|k| k.eq_ignore_ascii_case(&whole))).then_some(whole)
}

fn get_ci<'a>(m: &'a Map<String, Value>, k: &str) -> Option<(&'a String, &'a Value)> {
    m.iter().find(|(key, _)| key.eq_ignore_ascii_case(k))
}

impl Projection {
    /// Parses comma-separated lists.
    ///
    /// # Errors
    /// `invalidValue` for malformed attribute names.
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Result<Projection, ScimError> {
        let list = |s: Option<&str>| -> Result<Vec<AttrPath>, ScimError> {
            s.map(|s| s.split(',').filter(|x| !x.trim().is_empty()).map(parse_attr_name).collect())
                .unwrap_or(Ok(Vec::new()))
        };
        Ok(Projection { include: list(attributes)?, exclude: list(excluded)? })
    }

    /// True when the request names neither list.
    pub fn is_default(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether the result will contain a top-level attribute (to skip computing it when not).
    pub fn wants(&self, kind: Kind, name: &str) -> bool {
        let hit = |p: &AttrPath| {
            p.name.eq_ignore_ascii_case(name)
                && p.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kind.core_urn()))
        };
        if !self.include.is_empty() {
            return self.include.iter().any(hit);
        }
        !self.exclude.iter().any(|p| hit(p) && p.sub.is_none())
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, kind: Kind, resource: Value) -> Value {
        let Value::Object(mut obj) = resource else { return resource };
        if !self.include.is_empty() {
            let mut out = Map::new();
            for key in ["schemas", "id"] {
                if let Some(v) = obj.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            for p in &self.include {
                if let Some(urn) = is_schema_urn(p) {
                    if let Some((k, v)) = get_ci(&obj, &urn) {
                        out.insert(k.clone(), v.clone());
                    }
                    continue;
                }
                let (container, target): (Option<&Map<String, Value>>, Option<String>) = match &p.urn {
                    Some(u) if !u.eq_ignore_ascii_case(kind.core_urn()) => match get_ci(&obj, u) {
                        Some((k, Value::Object(ext))) => (Some(ext), Some(k.clone())),
                        _ => (None, None),
                    },
                    _ => (Some(&obj), None),
                };
                let Some(container) = container else { continue };
                let Some((k, v)) = get_ci(container, &p.name) else { continue };
                let picked = match &p.sub {
                    None => Some(v.clone()),
                    Some(sub) => project_sub(v, sub),
                };
                let Some(picked) = picked else { continue };
                let dest = match &target {
                    Some(t) => {
                        let e = out.entry(t.clone()).or_insert_with(|| Value::Object(Map::new()));
                        e.as_object_mut().expect("extension object")
                    }
                    None => &mut out,
                };
                merge_into(dest, k, picked);
            }
            return Value::Object(out);
        }
        for p in &self.exclude {
            if let Some(urn) = is_schema_urn(p) {
                if let Some((k, _)) = get_ci(&obj, &urn) {
                    let k = k.clone();
                    obj.shift_remove(&k);
                }
                continue;
            }
            let container = match &p.urn {
                Some(u) if !u.eq_ignore_ascii_case(kind.core_urn()) => {
                    let key = get_ci(&obj, u).map(|(k, _)| k.clone());
                    match key.and_then(|k| obj.get_mut(&k)) {
                        Some(Value::Object(ext)) => ext,
                        _ => continue,
                    }
                }
                _ => &mut obj,
            };
            let always = p.urn.is_none() && ["id", "schemas"].iter().any(|a| a.eq_ignore_ascii_case(&p.name))
                || kind.attr(p).is_some_and(|a| a.returned == Returned::Always && p.sub.is_none());
            if always {
                continue;
            }
            let Some(key) = get_ci(container, &p.name).map(|(k, _)| k.clone()) else { continue };
            match &p.sub {
                None => {
                    container.shift_remove(&key);
                }
                Some(sub) => match container.get_mut(&key) {
                    Some(Value::Object(o)) => remove_ci(o, sub),
                    Some(Value::Array(items)) => {
                        for it in items.iter_mut() {
                            if let Value::Object(o) = it {
                                remove_ci(o, sub);
                            }
                        }
                    }
                    _ => {}
                },
            }
        }
        Value::Object(obj)
    }
}

fn remove_ci(o: &mut Map<String, Value>, k: &str) {
    if let Some(key) = get_ci(o, k).map(|(k, _)| k.clone()) {
        o.shift_remove(&key);
    }
}

fn project_sub(v: &Value, sub: &str) -> Option<Value> {
    match v {
        Value::Object(o) => get_ci(o, sub).map(|(k, v)| json!({ k.clone(): v.clone() })),
        Value::Array(items) => {
            let picked: Vec<Value> = items
                .iter()
                .filter_map(|it| {
                    it.as_object().and_then(|o| get_ci(o, sub)).map(|(k, v)| json!({ k.clone(): v.clone() }))
                })
                .collect();
            (!picked.is_empty()).then_some(Value::Array(picked))
        }
        _ => None,
    }
}

fn merge_into(dest: &mut Map<String, Value>, key: &str, v: Value) {
    match (dest.get_mut(key), v) {
        (Some(Value::Object(a)), Value::Object(b)) => a.extend(b),
        (Some(Value::Array(a)), Value::Array(b)) => {
            // Same elements projected on different sub-attributes: merge pairwise.
            for (x, y) in a.iter_mut().zip(b) {
                if let (Value::Object(x), Value::Object(y)) = (x, y) {
                    x.extend(y);
                }
            }
        }
        (_, v) => {
            dest.insert(key.to_string(), v);
        }
    }
}

/// The parameters of a list or search request.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub filter: Option<Filter>,
    /// 1-based.
    pub start_index: i64,
    pub count: i64,
    pub sort_by: Option<AttrPath>,
    pub descending: bool,
    pub projection: Projection,
}

/// The page size used when a request gives no `count`.
pub const DEFAULT_COUNT: i64 = 100;

fn int_param(name: &str, v: &Value) -> Result<i64, ScimError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer"))),
        Value::String(s) => {
            s.trim().parse().map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
        }
        _ => Err(ScimError::invalid_value(format!("{name} must be an integer"))),
    }
}

impl ListParams {
    fn build(get: impl Fn(&str) -> Option<Value>) -> Result<ListParams, ScimError> {
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .map(|v| Some(v.join(",")))
                    .ok_or_else(|| ScimError::invalid_value(format!("{name} must be a list of strings"))),
                Some(_) => Err(ScimError::invalid_value(format!("{name} must be a string"))),
            }
        };
        let filter = match text("filter")? {
            Some(f) if !f.trim().is_empty() => Some(parse_filter(&f)?),
            Some(_) => return Err(ScimError::invalid_filter("the filter is empty")),
            None => None,
        };
        let start_index = match get("startIndex") {
            None | Some(Value::Null) => 1,
            Some(v) => int_param("startIndex", &v)?.max(1),
        };
        let count = match get("count") {
            None | Some(Value::Null) => DEFAULT_COUNT,
            Some(v) => int_param("count", &v)?.clamp(0, MAX_RESULTS),
        };
        let sort_by = text("sortBy")?.map(|s| parse_attr_name(&s)).transpose()?;
        let descending = match text("sortOrder")?.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("ascending") => false,
            Some("descending") => true,
            Some(other) => {
                return Err(ScimError::invalid_value(format!("sortOrder {other:?} must be ascending or descending")))
            }
        };
        let projection = Projection::parse(text("attributes")?.as_deref(), text("excludedAttributes")?.as_deref())?;
        Ok(ListParams { filter, start_index, count, sort_by, descending, projection })
    }

    /// From a query string's parameters (names matched case-insensitively).
    ///
    /// # Errors
    /// `invalidFilter` / `invalidValue`.
    pub fn from_query(q: &HashMap<String, String>) -> Result<ListParams, ScimError> {
        Self::build(|name| q.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| Value::String(v.clone())))
    }

    /// From a `POST /.search` body.
    ///
    /// # Errors
    /// `invalidSyntax` when the body is not a SearchRequest object, else as `from_query`.
    pub fn from_search(body: &Value) -> Result<ListParams, ScimError> {
        let Value::Object(o) = body else {
            return Err(ScimError::invalid_syntax("a search request must be a JSON object"));
        };
        if let Some((_, s)) = get_ci(o, "schemas") {
            let ok = s.as_array().is_some_and(|a| a.iter().any(|u| u.as_str() == Some(SEARCH_URN)));
            if !ok {
                return Err(ScimError::invalid_syntax(format!("schemas must contain {SEARCH_URN}")));
            }
        }
        Self::build(|name| get_ci(o, name).map(|(_, v)| v.clone()))
    }
}

/// The projection named by a query string (for reads and writes that return a resource).
///
/// # Errors
/// `invalidValue` for malformed names.
pub fn projection_from_query(q: &HashMap<String, String>) -> Result<Projection, ScimError> {
    let get = |name: &str| q.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    Projection::parse(get("attributes"), get("excludedAttributes"))
}

/// A ListResponse.
pub fn list_response(total: i64, start_index: i64, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [super::schema::LIST_URN],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}
