//! Shaping resources for the wire: rendering a stored document with `id`, `meta` and its computed
//! attributes, attribute projection (`attributes` / `excludedAttributes`), ETags, and list
//! parameters. No I/O.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::filter::{parse_filter, AttrPath, Filter};
use super::schema::{Kind, Returned, DEFAULT_COUNT, MAX_RESULTS, SEARCH_URN};

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

/// One element of a computed multi-valued attribute: a User's `groups` or a Group's `members`.
#[derive(Debug, Clone, Copy)]
pub struct Ref<'a> {
    /// The referenced resource's id.
    pub value: &'a str,
    /// `Users` or `Groups`: where `$ref` points.
    pub endpoint: &'static str,
    /// `direct` (a User's groups) or the member's resource type (`User`, `Group`).
    pub kind: &'a str,
    pub display: Option<&'a str>,
}

impl<'a> Ref<'a> {
    /// An element of a User's `groups`.
    pub fn group(id: &'a str, display: &'a str) -> Ref<'a> {
        Ref { value: id, endpoint: "Groups", kind: "direct", display: Some(display) }
    }

    /// An element of a Group's `members`.
    pub fn member(id: &'a str, member_type: &'a str, display: Option<&'a str>) -> Ref<'a> {
        let endpoint = if member_type == "Group" { "Groups" } else { "Users" };
        Ref { value: id, endpoint, kind: member_type, display }
    }

    /// The element as JSON text (`value`, `$ref`, `type`, then `display` when known).
    fn write(&self, out: &mut Vec<u8>, base: &str) {
        out.extend_from_slice(b"{\"value\":");
        push_str(out, self.value);
        out.extend_from_slice(b",\"$ref\":");
        push_location(out, base, self.endpoint, self.value);
        out.extend_from_slice(b",\"type\":");
        push_str(out, self.kind);
        if let Some(d) = self.display {
            out.extend_from_slice(b",\"display\":");
            push_str(out, d);
        }
        out.push(b'}');
    }

    /// The element as a JSON value (to evaluate a filter on it).
    pub fn to_value(&self, base: &str) -> Value {
        let mut s = Vec::new();
        self.write(&mut s, base);
        serde_json::from_slice(&s).unwrap_or(Value::Null)
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends a resource's URL, `{base}/{endpoint}/{id}`, as a JSON string.
fn push_location(out: &mut Vec<u8>, base: &str, endpoint: &str, id: &str) {
    push_str(out, &format!("{base}/{endpoint}/{id}"));
}

/// The members of a stored document (a JSON object), in order, each value as its JSON text.
struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the text when it holds no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(12));
                while let Some(Key(k)) = m.next_key()? {
                    out.push((k, m.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Renders a stored document (its JSON text, as stored) as the resource a client sees, as JSON
/// text: `schemas`, `id`, the document's other attributes in stored order, then the computed
/// multi-valued attribute (`groups` or `members`) when given — a User's only when not empty —
/// then `meta`. Values are copied as stored, not parsed: this is the hot path of every read.
///
/// # Errors
/// The stored text is not a JSON object.
pub fn render(
    kind: Kind,
    base: &str,
    doc: &str,
    meta: Meta<'_>,
    computed: Option<&[Ref<'_>]>,
) -> Result<Vec<u8>, serde_json::Error> {
    let Members(members) = serde_json::from_str(doc)?;
    let computed_key = match kind {
        Kind::User => "groups",
        Kind::Group => "members",
    };
    let mut out = Vec::with_capacity(doc.len() + 256);
    out.push(b'{');
    if let Some((_, v)) = members.iter().find(|(k, _)| k == "schemas") {
        out.extend_from_slice(b"\"schemas\":");
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"id\":");
    push_str(&mut out, meta.id);
    // The document never holds `id`, `meta` or the computed attribute (`normalize` drops
    // them); were one there, the rendered one wins.
    for (k, v) in &members {
        if k == "schemas" || k == "id" || k == "meta" || (computed.is_some() && k == computed_key) {
            continue;
        }
        out.push(b',');
        push_str(&mut out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    if let Some(c) = computed {
        if !c.is_empty() || kind == Kind::Group {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(computed_key.as_bytes());
            out.extend_from_slice(b"\":[");
            for (i, r) in c.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                r.write(&mut out, base);
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"meta\":{\"resourceType\":");
    push_str(&mut out, kind.name());
    out.extend_from_slice(b",\"created\":");
    push_str(&mut out, meta.created);
    out.extend_from_slice(b",\"lastModified\":");
    push_str(&mut out, meta.last_modified);
    out.extend_from_slice(b",\"location\":");
    push_location(&mut out, base, kind.endpoint(), meta.id);
    out.extend_from_slice(b",\"version\":");
    push_str(&mut out, &etag(meta.version));
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// `render`, as a JSON value (to project it, or to evaluate a filter on it).
///
/// # Errors
/// The stored text is not a JSON object.
pub fn render_value(
    kind: Kind,
    base: &str,
    doc: &str,
    meta: Meta<'_>,
    computed: Option<&[Ref<'_>]>,
) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&render(kind, base, doc, meta, computed)?)
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
    /// RFC 9865 cursor paging: `Some("")` asks for the first page, `Some(c)` for the page after
    /// cursor `c`; `None`: index paging.
    pub cursor: Option<String>,
}

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
        let cursor = text("cursor")?;
        if cursor.is_some() && get("startIndex").is_some_and(|v| !v.is_null()) {
            return Err(ScimError::invalid_value("cursor and startIndex cannot be used together"));
        }
        if cursor.is_some() && sort_by.is_some() {
            return Err(ScimError::invalid_value(
                "a cursor walks in creation order: sortBy cannot be used with cursor",
            ));
        }
        Ok(ListParams { filter, start_index, count, sort_by, descending, projection, cursor })
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

/// A ListResponse around resources already rendered as JSON text.
pub fn list_response(total: i64, start_index: i64, resources: &[Vec<u8>]) -> Vec<u8> {
    list_response_with(total, &format!("\"startIndex\":{start_index}"), resources)
}

/// A ListResponse page of a cursor walk (RFC 9865): no `startIndex`; `nextCursor` while there is
/// more.
pub fn cursor_list_response(total: i64, next_cursor: Option<&str>, resources: &[Vec<u8>]) -> Vec<u8> {
    let next = next_cursor.map_or(String::new(), |c| format!("\"nextCursor\":{}", Value::String(c.to_string())));
    list_response_with(total, &next, resources)
}

fn list_response_with(total: i64, position: &str, resources: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(resources.iter().map(|r| r.len() + 1).sum::<usize>() + 160);
    out.extend_from_slice(b"{\"schemas\":[");
    push_str(&mut out, super::schema::LIST_URN);
    out.extend_from_slice(
        format!(
            "],\"totalResults\":{total},{position}{}\"itemsPerPage\":{},\"Resources\":[",
            if position.is_empty() { "" } else { "," },
            resources.len()
        )
        .as_bytes(),
    );
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = "https://idp.example/v1/auth/scim/v2";

    fn meta() -> Meta<'static> {
        Meta { id: "0190-ab", version: 7, created: "2026-01-02T03:04:05Z", last_modified: "2026-02-03T04:05:06Z" }
    }

    /// What the renderer must produce, built as a value: `schemas`, `id`, the document's other
    /// members in order, the computed attribute, `meta`.
    fn expected(kind: Kind, doc: &Value, computed: Option<Value>) -> Value {
        let mut out = Map::new();
        let doc = doc.as_object().unwrap();
        if let Some(s) = doc.get("schemas") {
            out.insert("schemas".into(), s.clone());
        }
        out.insert("id".into(), json!("0190-ab"));
        for (k, v) in doc {
            if k != "schemas" {
                out.insert(k.clone(), v.clone());
            }
        }
        if let Some(c) = computed {
            out.insert(if kind == Kind::User { "groups" } else { "members" }.into(), c);
        }
        out.insert(
            "meta".into(),
            json!({"resourceType": kind.name(), "created": "2026-01-02T03:04:05Z",
                   "lastModified": "2026-02-03T04:05:06Z",
                   "location": format!("{BASE}/{}/0190-ab", kind.endpoint()), "version": "W/\"7\""}),
        );
        Value::Object(out)
    }

    #[test]
    fn renders_the_stored_text_as_the_value_it_holds_byte_for_byte() {
        let doc = json!({
            "userName": "zoë \"quoted\" \\ back\u{1}slash",
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "name": {"givenName": "Zoë", "familyName": "O'Neil"},
            "emails": [{"value": "z@example.com", "primary": true}],
            "we\"ird\nkey": 1.5e300,
            "n": -12,
            "active": false,
            "empty": {},
            "nothing": null
        });
        let text = doc.to_string();
        let gs = [("g1".to_string(), "Eng \"core\"".to_string()), ("g2".to_string(), "Ops".to_string())];
        let refs: Vec<Ref<'_>> = gs.iter().map(|(g, n)| Ref::group(g, n)).collect();
        let got = render(Kind::User, BASE, &text, meta(), Some(&refs)).unwrap();
        let want = expected(
            Kind::User,
            &doc,
            Some(json!([
                {"value": "g1", "$ref": format!("{BASE}/Groups/g1"), "type": "direct", "display": "Eng \"core\""},
                {"value": "g2", "$ref": format!("{BASE}/Groups/g2"), "type": "direct", "display": "Ops"}
            ])),
        );
        assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
        // A user in no group renders no `groups`; a group always renders `members`.
        let got = render(Kind::User, BASE, &text, meta(), Some(&[])).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected(Kind::User, &doc, None).to_string());
        let g = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Eng"});
        let m = [Ref::member("u1", "User", Some("Ann")), Ref::member("g9", "Group", None)];
        let got = render(Kind::Group, BASE, &g.to_string(), meta(), Some(&m)).unwrap();
        let want = expected(
            Kind::Group,
            &g,
            Some(json!([
                {"value": "u1", "$ref": format!("{BASE}/Users/u1"), "type": "User", "display": "Ann"},
                {"value": "g9", "$ref": format!("{BASE}/Groups/g9"), "type": "Group"}
            ])),
        );
        assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
        let got = render(Kind::Group, BASE, &g.to_string(), meta(), Some(&[])).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected(Kind::Group, &g, Some(json!([]))).to_string());
    }

    #[test]
    fn a_stored_text_that_is_not_an_object_is_an_error_not_a_panic() {
        for bad in ["", "[1]", "{\"a\":", "{\"a\" 1}", "null", "\"x\""] {
            assert!(render(Kind::User, BASE, bad, meta(), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_list_response_holds_its_resources_in_order() {
        let got = list_response(5, 3, &[b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        let want = json!({"schemas": [crate::scim::schema::LIST_URN], "totalResults": 5, "startIndex": 3,
                          "itemsPerPage": 2, "Resources": [{"a": 1}, {"b": 2}]});
        assert_eq!(String::from_utf8(got).unwrap(), want.to_string());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever document serde_json stored, the text renderer writes exactly what
        /// serialising the rendered value would.
        #[test]
        fn renders_any_stored_document_as_its_value(
            members in prop::collection::vec(("[a-zA-Z\"\\\\é\u{7}]{1,6}", json_value()), 0..8),
            with_schemas in any::<bool>(),
        ) {
            let mut doc: Map<String, Value> =
                members.into_iter().filter(|(k, _)| !["id", "meta", "groups", "schemas"].contains(&k.as_str())).collect();
            if with_schemas {
                doc.insert("schemas".into(), json!([crate::scim::schema::USER_URN]));
            }
            let doc = Value::Object(doc);
            let got = render(Kind::User, BASE, &doc.to_string(), meta(), None).unwrap();
            prop_assert_eq!(String::from_utf8(got).unwrap(), expected(Kind::User, &doc, None).to_string());
        }
    }
}
