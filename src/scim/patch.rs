//! The SCIM PATCH engine (RFC 7644 §3.5.2): parsing a PatchOp request body and applying its
//! operations to a resource held as a JSON object. No I/O.
//!
//! Group membership is never applied to the JSON document: `members` operations are returned as
//! [`MemberOp`]s for the caller to apply to its members table. Everything else is applied to a
//! working copy of the document, which replaces the caller's document only when every operation
//! succeeded (a failed PATCH leaves the resource unchanged).
//!
//! The engine is tolerant of what real identity providers send (Okta, Microsoft Entra ID):
//! capitalised op names, pathless `add`/`replace` values with dotted and URN-qualified keys,
//! read-only attributes echoed back in pathless values (ignored), `replace` on
//! `emails[type eq "work"].value` for a user that has no work email (a new element is created),
//! the enterprise `manager` sent as a plain id string, and member removal by value list. It does
//! not coerce types: `"active": "False"` is stored as sent and the caller normalizes the document
//! after patching.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{matches_value, parse_patch_path, AttrInfo, AttrPath, CompareOp, Filter, PatchPath};

/// The schema URN a PATCH request body must list in `schemas`.
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH operation kind (`op`, case-insensitive on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

/// One parsed PATCH operation.
///
/// `value` is `None` when the request had no `value` (or an explicit `null` on `remove`). A
/// `replace` with a path may carry `Some(Value::Null)`, which clears the target (RFC 7643 §2.5:
/// null is equivalent to unassigned).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// Membership changes a Group PATCH asks for, in request order; the caller applies them to a
/// members table, never to a JSON list (groups may have 100,000 members).
#[derive(Debug, Clone, PartialEq)]
pub enum MemberOp {
    /// Member objects, normalized to the keys `value` (always, a non-empty string), `display`,
    /// `type` and `$ref` (each only when sent and non-null); duplicates within one op removed.
    Add(Vec<Value>),
    /// Member ids.
    Remove(Vec<String>),
    /// Remove the members matching this filter, for any value filter other than a list of
    /// `value eq "id"` joined by `or`. It is always the whole resource-level value path
    /// `members[…]` ([`Filter::ValuePath`] on `members`), so the caller evaluates it per member
    /// row as `matches(&f, &json!({"members": [member]}), info)`.
    RemoveWhere(Filter),
    RemoveAll,
    /// Replace the whole membership with these members (normalized as for `Add`; may be empty).
    ReplaceAll(Vec<Value>),
}

/// What the engine needs to know about the resource type being patched.
///
/// Every [`AttrPath`] passed to these methods has the core schema URN stripped: `urn` is `None`
/// for core attributes and the extension URN (as sent) for extension attributes.
pub trait PatchSchema {
    /// Whether `path.name` (with `path.urn`) is multi-valued (emails, phoneNumbers, ims, photos,
    /// addresses, entitlements, roles, x509Certificates, members, groups).
    fn is_multi_valued(&self, path: &AttrPath) -> bool;
    /// Whether `path.name` (with `path.urn`) is read-only (id, meta, groups on User; id, meta on
    /// Group). `path.sub` may be set (e.g. `meta.lastModified`); implementations may ignore it.
    fn is_read_only(&self, path: &AttrPath) -> bool;
    /// The schema spelling of `path.name` (e.g. `username` → `userName`); `None` if unknown.
    /// Used when the engine creates a new key.
    fn canonical_name(&self, path: &AttrPath) -> Option<String>;
    /// The core schema URN (`urn:ietf:params:scim:schemas:core:2.0:User` or `…:Group`).
    fn core_urn(&self) -> &str;
    /// Whether the resource is a Group (its `members` become [`MemberOp`]s).
    fn is_group(&self) -> bool;

    /// The schema spelling of the sub-attribute `path.sub` of `path.name` (e.g. `givenname` →
    /// `givenName`); `None` if unknown, in which case the name is kept as sent.
    fn canonical_sub_name(&self, _path: &AttrPath) -> Option<String> {
        None
    }
    /// Whether the single-valued attribute `path.name` is complex (has sub-attributes). Complex
    /// attributes take object values, which are merged into the existing value on add/replace.
    /// The default knows RFC 7643's single-valued complex attributes `name`, `manager`, `meta`.
    fn is_complex(&self, path: &AttrPath) -> bool {
        ["name", "manager", "meta"].iter().any(|n| path.name.eq_ignore_ascii_case(n))
    }
    /// Whether `urn` names a schema of this resource type (the core schema or an extension), as
    /// opposed to a URN-qualified attribute. Used for paths and pathless-value keys that are
    /// exactly a schema URN. The default accepts the core URN and any `urn:` whose last
    /// `:`-separated segment begins with an upper-case letter and has no `.` (`…:2.0:User`,
    /// `…:EnterpriseUser`).
    fn is_schema_urn(&self, urn: &str) -> bool {
        if urn.eq_ignore_ascii_case(self.core_urn()) {
            return true;
        }
        looks_like_schema_urn(urn)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses a PATCH request body (RFC 7644 §3.5.2).
///
/// `schemas` must list [`PATCH_OP_URN`] and `Operations` must be a non-empty array (both keys
/// case-insensitive), else `invalidSyntax`. Op names are case-insensitive; an unknown op is
/// `invalidSyntax`. A malformed `path` is `invalidPath` (an empty or null `path` counts as absent).
/// `remove` without a path is `noTarget`; `add` without a value (or with `null`), `replace`
/// without a value, and a pathless `add`/`replace` whose value is not an object are
/// `invalidValue`.
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let obj = body.as_object().ok_or_else(|| ScimError::invalid_syntax("PATCH body must be a JSON object"))?;
    let schemas_ok = match get_ci(obj, "schemas") {
        Some(Value::Array(a)) => a.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_URN))),
        Some(Value::String(s)) => s.eq_ignore_ascii_case(PATCH_OP_URN),
        _ => false,
    };
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!("PATCH body must list \"{PATCH_OP_URN}\" in \"schemas\"")));
    }
    let ops = match get_ci(obj, "Operations") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ScimError::invalid_syntax("\"Operations\" must not be empty")),
        Some(_) => return Err(ScimError::invalid_syntax("\"Operations\" must be an array")),
        None => return Err(ScimError::invalid_syntax("PATCH body has no \"Operations\"")),
    };
    ops.iter().enumerate().map(|(i, op)| parse_op(i, op)).collect()
}

fn parse_op(i: usize, op: &Value) -> Result<PatchOp, ScimError> {
    let obj =
        op.as_object().ok_or_else(|| ScimError::invalid_syntax(format!("operation {i} must be a JSON object")))?;
    let kind = match get_ci(obj, "op") {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("add") => OpKind::Add,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("remove") => OpKind::Remove,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("replace") => OpKind::Replace,
        Some(Value::String(s)) => return Err(ScimError::invalid_syntax(format!("operation {i}: unknown op \"{s}\""))),
        Some(_) => return Err(ScimError::invalid_syntax(format!("operation {i}: \"op\" must be a string"))),
        None => return Err(ScimError::invalid_syntax(format!("operation {i} has no \"op\""))),
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_path_str(s.trim())?),
        Some(_) => return Err(ScimError::invalid_path(format!("operation {i}: \"path\" must be a string"))),
    };
    let value = get_ci(obj, "value").cloned();
    let value = match (kind, value) {
        (OpKind::Remove, None | Some(Value::Null)) => None,
        (OpKind::Remove, v) => v,
        (OpKind::Add, None | Some(Value::Null)) => {
            return Err(ScimError::invalid_value(format!("operation {i}: add requires a value")))
        }
        (OpKind::Replace, None) => {
            return Err(ScimError::invalid_value(format!("operation {i}: replace requires a value")))
        }
        (_, v) => v,
    };
    match kind {
        OpKind::Remove if path.is_none() => {
            return Err(ScimError::no_target(format!("operation {i}: remove requires a path")))
        }
        OpKind::Add | OpKind::Replace if path.is_none() && !value.as_ref().is_some_and(Value::is_object) => {
            return Err(ScimError::invalid_value(format!(
                "operation {i}: an operation without a path requires an object value"
            )))
        }
        _ => {}
    }
    Ok(PatchOp { op: kind, path, value })
}

/// Parses a path, mapping every parse error to `invalidPath`.
///
/// A path that is exactly a schema URN (`urn:…:enterprise:2.0:User`) is kept as
/// `AttrPath { urn: Some(whole), name: "" }` when the path grammar rejects it or splits it in a way
/// that does not spell it back; [`apply_patch`] treats it as the whole extension (or, for the core
/// URN, the whole resource).
fn parse_path_str(s: &str) -> Result<PatchPath, ScimError> {
    let plain_urn = is_urn(s) && !s.contains(['[', ']', ' ', '"']) && !s.ends_with(':');
    let whole = || PatchPath {
        attr: AttrPath { urn: Some(s.to_string()), name: String::new(), sub: None },
        value_filter: None,
    };
    match parse_patch_path(s) {
        Ok(p) if plain_urn && looks_like_schema_urn(s) && !spells(&p, s) => Ok(whole()),
        Ok(p) => Ok(p),
        Err(_) if plain_urn => Ok(whole()),
        Err(e) => Err(ScimError::invalid_path(format!("invalid path \"{s}\": {}", e.detail))),
    }
}

/// Whether `s` reads like a schema URN rather than a URN-qualified attribute: its last
/// `:`-separated segment starts with an upper-case letter and has no `.`.
fn looks_like_schema_urn(s: &str) -> bool {
    is_urn(s)
        && s.rsplit(':')
            .next()
            .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_uppercase()) && !last.contains('.'))
}

/// Whether the parsed `p` is a plain attribute path that spells `s` back.
fn spells(p: &PatchPath, s: &str) -> bool {
    if p.value_filter.is_some() || p.attr.sub.is_some() {
        return false;
    }
    match &p.attr.urn {
        Some(u) if p.attr.name.is_empty() => u == s,
        Some(u) => format!("{u}:{}", p.attr.name) == s,
        None => p.attr.name == s,
    }
}

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

/// Applies `ops` in order to `doc`, a JSON object holding a User or Group with canonical key
/// spelling and no `members` key. Returns the membership changes (in request order) for groups.
///
/// Atomic: on error `doc` is left unchanged and no member ops are returned.
///
/// * Paths match keys case-insensitively; new keys take [`PatchSchema::canonical_name`] (sub-keys
///   [`PatchSchema::canonical_sub_name`]), else the name as sent. `urn:…:Ext:attr` works inside
///   `doc[urn]`, created on demand; the URN is added to / removed from `schemas` as the extension
///   object becomes non-empty / empty. The core URN prefix means a top-level attribute. A path
///   that is exactly an extension URN designates the whole extension object.
/// * add: single-valued → set; complex (object value) → merge sub-attributes; multi-valued →
///   append (an array or one value), skipping values equal to an existing one.
/// * replace: single-valued → set; complex → merge sub-attributes (RFC 7644 §3.5.2.3: unnamed
///   sub-attributes stay); multi-valued → replace the list (`[]` clears it); `null` clears.
/// * `attr[filter]` (add/replace): merge into (add) or replace (replace) every matching element;
///   `attr[filter].sub`: set `sub` in every matching element. No match: when the filter is
///   `sub eq literal` (or an `and` of those), a new element is built from the literals plus the
///   value (Entra's `emails[type eq "work"].value`); otherwise `noTarget`.
/// * remove: the attribute / sub-attribute / matching elements / matching elements' sub-attribute;
///   absent targets and no match are fine (idempotent); with a `value` on a multi-valued attribute
///   only the listed values go.
/// * Pathless add/replace: each key of the value object is a path (`name.givenName`,
///   `urn:…:User:employeeNumber`, `emails[type eq "work"].value`); a key that is a schema URN
///   with an object value merges into that schema's attributes. `schemas` and read-only
///   attributes are ignored there; a read-only attribute named by a `path` is `mutability`.
/// * The enterprise `manager` given as a plain string becomes `{"value": string}`.
/// * Setting `primary` true on a value clears it on the others (the last one set wins).
/// * Group `members` never touch `doc`; they become [`MemberOp`]s.
/// * Wrong shapes (a value filter on a single-valued attribute, a string for a complex
///   attribute, a list for a single-valued one) are `invalidPath` / `invalidValue`.
/// * Values are not type-checked or coerced (`"active": "False"` stays a string): normalize the
///   document afterwards.
pub fn apply_patch(
    doc: &mut Value,
    ops: &[PatchOp],
    schema: &dyn PatchSchema,
    info: &dyn AttrInfo,
) -> Result<Vec<MemberOp>, ScimError> {
    let Some(orig) = doc.as_object() else {
        return Err(ScimError::invalid_value("the resource to patch is not a JSON object"));
    };
    let mut work = orig.clone();
    let mut cx = Ctx { schema, info, members: Vec::new() };
    for op in ops {
        cx.apply_op(&mut work, op)?;
    }
    *doc = Value::Object(work);
    Ok(cx.members)
}

/// Where a path points, once the core URN is stripped.
enum Target {
    /// The whole resource (a path that is exactly the core schema URN).
    Core,
    /// A whole extension object (a path that is exactly an extension schema URN).
    Extension(String),
    /// An attribute, maybe of an extension, maybe with a sub-attribute and/or a value filter.
    Attr(Attr),
}

struct Attr {
    /// The extension URN; `None` for core attributes.
    urn: Option<String>,
    name: String,
    sub: Option<String>,
    filter: Option<Filter>,
}

impl Attr {
    fn path(&self) -> AttrPath {
        AttrPath { urn: self.urn.clone(), name: self.name.clone(), sub: None }
    }
    fn full_path(&self) -> AttrPath {
        AttrPath { urn: self.urn.clone(), name: self.name.clone(), sub: self.sub.clone() }
    }
    fn sub_path(&self, sub: &str) -> AttrPath {
        AttrPath { urn: self.urn.clone(), name: self.name.clone(), sub: Some(sub.to_string()) }
    }
    fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.urn {
            s.push_str(u);
            s.push(':');
        }
        s.push_str(&self.name);
        if self.filter.is_some() {
            s.push_str("[…]");
        }
        if let Some(sub) = &self.sub {
            s.push('.');
            s.push_str(sub);
        }
        s
    }
}

struct Ctx<'a> {
    schema: &'a dyn PatchSchema,
    info: &'a dyn AttrInfo,
    members: Vec<MemberOp>,
}

impl Ctx<'_> {
    fn apply_op(&mut self, doc: &mut Map<String, Value>, op: &PatchOp) -> Result<(), ScimError> {
        let Some(path) = &op.path else {
            // Pathless add/replace: the value is an object of attributes (parse_patch checked).
            return match &op.value {
                Some(Value::Object(o)) => self.apply_object(doc, op.op, None, o, true),
                _ => Err(ScimError::invalid_value("an operation without a path requires an object value")),
            };
        };
        match self.resolve(path)? {
            Target::Core => match (op.op, &op.value) {
                (OpKind::Remove, _) => Err(ScimError::mutability("cannot remove the whole resource")),
                (_, Some(Value::Object(o))) => self.apply_object(doc, op.op, None, o, false),
                _ => Err(ScimError::invalid_value("a value for the core schema must be an object")),
            },
            Target::Extension(urn) => match (op.op, &op.value) {
                (OpKind::Remove, _) | (OpKind::Replace, Some(Value::Null)) => {
                    remove_extension(doc, &urn);
                    Ok(())
                }
                (_, Some(Value::Object(o))) => self.apply_object(doc, op.op, Some(&urn), o, false),
                _ => Err(ScimError::invalid_value(format!("a value for extension {urn} must be an object"))),
            },
            Target::Attr(attr) => {
                if self.schema.is_read_only(&attr.full_path()) {
                    return Err(ScimError::mutability(format!("attribute {} is read-only", attr.display())));
                }
                self.apply_attr(doc, op.op, &attr, op.value.as_ref())
            }
        }
    }

    /// Interprets a parsed path against the schema.
    fn resolve(&self, path: &PatchPath) -> Result<Target, ScimError> {
        let a = &path.attr;
        if path.value_filter.is_none() && a.sub.is_none() {
            let whole = match &a.urn {
                Some(u) if a.name.is_empty() => Some(u.clone()),
                Some(u) => Some(format!("{u}:{}", a.name)),
                None if is_urn(&a.name) => Some(a.name.clone()),
                None => None,
            };
            if let Some(w) = whole {
                if w.eq_ignore_ascii_case(self.schema.core_urn()) {
                    return Ok(Target::Core);
                }
                if self.schema.is_schema_urn(&w) {
                    return Ok(Target::Extension(w));
                }
            }
        }
        if a.name.is_empty() {
            return Err(ScimError::invalid_path("path names no attribute"));
        }
        let urn = a.urn.clone().filter(|u| !u.eq_ignore_ascii_case(self.schema.core_urn()));
        Ok(Target::Attr(Attr { urn, name: a.name.clone(), sub: a.sub.clone(), filter: path.value_filter.clone() }))
    }

    /// A pathless add/replace value (or the value of a schema-URN path): each key is applied as
    /// an operation with that key as its path. `ext` is the extension URN the keys belong to.
    /// Read-only attributes and `schemas` are ignored; `null` values are ignored on add and clear
    /// the attribute on replace.
    fn apply_object(
        &mut self,
        doc: &mut Map<String, Value>,
        op: OpKind,
        ext: Option<&str>,
        obj: &Map<String, Value>,
        top: bool,
    ) -> Result<(), ScimError> {
        for (key, v) in obj {
            // `schemas` is never an attribute to patch, also inside an extension's value
            // (scim2-tester sends the extension object with its own `schemas`).
            if key.eq_ignore_ascii_case("schemas") {
                continue;
            }
            if top && self.schema.is_schema_urn(key) {
                let core = key.eq_ignore_ascii_case(self.schema.core_urn());
                match v {
                    Value::Object(inner) => {
                        self.apply_object(doc, op, if core { None } else { Some(key) }, inner, false)?
                    }
                    Value::Null if op == OpKind::Replace && !core => remove_extension(doc, key),
                    Value::Null => {}
                    _ => return Err(ScimError::invalid_value(format!("the value of \"{key}\" must be an object"))),
                }
                continue;
            }
            let mut path = parse_path_str(key)?;
            if path.attr.urn.is_none() {
                if let Some(e) = ext {
                    path.attr.urn = Some(e.to_string());
                }
            }
            let attr = match self.resolve(&path)? {
                Target::Attr(a) => a,
                _ => return Err(ScimError::invalid_path(format!("\"{key}\" cannot be used as an attribute here"))),
            };
            if self.schema.is_read_only(&attr.full_path()) {
                continue;
            }
            if v.is_null() && op == OpKind::Add {
                continue;
            }
            self.apply_attr(doc, op, &attr, Some(v))?;
        }
        Ok(())
    }

    /// Applies one operation to one attribute of the resource (core or extension).
    fn apply_attr(
        &mut self,
        doc: &mut Map<String, Value>,
        op: OpKind,
        attr: &Attr,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        if attr.urn.is_none() && self.schema.is_group() && attr.name.eq_ignore_ascii_case("members") {
            let m = member_op(op, attr, value)?;
            self.members.extend(m);
            return Ok(());
        }
        let Some(urn) = &attr.urn else {
            return self.apply_in(doc, op, attr, value);
        };
        // An extension attribute: work inside doc[urn], creating it if needed, and keep
        // `schemas` in step with whether the extension object has any content.
        let key = match find_key(doc, urn) {
            Some(k) => k,
            None if op == OpKind::Remove || value.is_none_or(Value::is_null) => return Ok(()),
            None => urn.clone(),
        };
        let ext = doc.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        if ext.is_null() {
            *ext = Value::Object(Map::new());
        }
        let Value::Object(ext) = ext else {
            return Err(ScimError::invalid_value(format!("extension {key} is not an object")));
        };
        self.apply_in(ext, op, attr, value)?;
        let empty = ext.is_empty();
        if empty {
            remove_extension(doc, &key);
        } else {
            add_schema(doc, &key);
        }
        Ok(())
    }

    /// Applies one operation to the attribute `attr.name` of the object `c`.
    fn apply_in(
        &self,
        c: &mut Map<String, Value>,
        op: OpKind,
        attr: &Attr,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        match (op, value) {
            (OpKind::Remove, v) => self.remove(c, attr, v),
            // replace with null: clear the target.
            (OpKind::Replace, Some(Value::Null)) => self.remove(c, attr, None),
            (_, Some(v)) => self.add_or_replace(c, op == OpKind::Add, attr, v),
            (_, None) => Err(ScimError::invalid_value(format!("{} requires a value", op_name(op)))),
        }
    }

    fn is_mv(&self, c: &Map<String, Value>, attr: &Attr) -> bool {
        self.schema.is_multi_valued(&attr.path()) || matches!(get_ci(c, &attr.name), Some(Value::Array(_)))
    }

    fn new_key(&self, attr: &Attr) -> String {
        self.schema.canonical_name(&attr.path()).unwrap_or_else(|| attr.name.clone())
    }

    fn new_sub_key(&self, attr: &Attr, sub: &str) -> String {
        self.schema.canonical_sub_name(&attr.sub_path(sub)).unwrap_or_else(|| sub.to_string())
    }

    /// `attr`'s array in `c`, created empty if absent or null; `invalidValue` if it holds
    /// something else.
    fn array_mut<'c>(&self, c: &'c mut Map<String, Value>, attr: &Attr) -> Result<&'c mut Vec<Value>, ScimError> {
        let key = find_key(c, &attr.name).unwrap_or_else(|| self.new_key(attr));
        let slot = c.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if slot.is_null() {
            *slot = Value::Array(Vec::new());
        }
        match slot {
            Value::Array(a) => Ok(a),
            _ => Err(ScimError::invalid_value(format!("attribute {} does not hold a list", attr.name))),
        }
    }

    /// Sets `obj[sub] = v` (keeping the existing key spelling, else the canonical one); a null
    /// `v` removes the sub-attribute.
    fn set_sub(&self, obj: &mut Map<String, Value>, attr: &Attr, sub: &str, v: &Value) {
        match find_key(obj, sub) {
            Some(k) if v.is_null() => {
                obj.shift_remove(&k);
            }
            _ if v.is_null() => {}
            Some(k) => {
                obj.insert(k, v.clone());
            }
            None => {
                obj.insert(self.new_sub_key(attr, sub), v.clone());
            }
        }
    }

    fn merge(&self, obj: &mut Map<String, Value>, attr: &Attr, v: &Map<String, Value>) {
        for (k, sv) in v {
            self.set_sub(obj, attr, k, sv);
        }
    }

    fn add_or_replace(
        &self,
        c: &mut Map<String, Value>,
        is_add: bool,
        attr: &Attr,
        v: &Value,
    ) -> Result<(), ScimError> {
        let mv = self.is_mv(c, attr);
        if let Some(filter) = &attr.filter {
            if !mv {
                return Err(ScimError::invalid_path(format!("value filter on single-valued attribute {}", attr.name)));
            }
            if attr.sub.is_none() && !v.is_object() {
                return Err(ScimError::invalid_value(format!("the value for {} must be an object", attr.display())));
            }
            let arr = self.array_mut(c, attr)?;
            let hits: Vec<usize> = (0..arr.len()).filter(|&i| self.elem_matches(attr, filter, &arr[i])).collect();
            let touched = if hits.is_empty() {
                // Tolerance for Entra: create the element the filter describes, when it can.
                let Some(lits) = eq_literals(filter) else {
                    return Err(ScimError::no_target(format!("no value of {} matches the filter", attr.name)));
                };
                let mut elem = Map::new();
                for (k, lit) in lits {
                    elem.insert(self.new_sub_key(attr, &k), lit);
                }
                match (&attr.sub, v) {
                    (Some(sub), _) => self.set_sub(&mut elem, attr, sub, v),
                    (None, Value::Object(o)) => self.merge(&mut elem, attr, o),
                    (None, _) => {}
                }
                arr.push(Value::Object(elem));
                vec![arr.len() - 1]
            } else {
                for &i in &hits {
                    match (&attr.sub, &mut arr[i], v) {
                        (Some(sub), Value::Object(e), _) => self.set_sub(e, attr, sub, v),
                        (None, Value::Object(e), Value::Object(o)) if is_add => self.merge(e, attr, o),
                        (None, slot, _) => *slot = v.clone(),
                        _ => {}
                    }
                }
                hits
            };
            normalize_primary(arr, &touched);
            return Ok(());
        }
        if let Some(sub) = &attr.sub {
            if mv {
                let arr = match get_ci_mut(c, &attr.name) {
                    Some(Value::Array(a)) if a.iter().any(Value::is_object) => a,
                    _ => return Err(ScimError::no_target(format!("attribute {} has no values", attr.name))),
                };
                let mut touched = Vec::new();
                for (i, e) in arr.iter_mut().enumerate() {
                    if let Value::Object(e) = e {
                        self.set_sub(e, attr, sub, v);
                        touched.push(i);
                    }
                }
                normalize_primary(arr, &touched);
                return Ok(());
            }
            let key = find_key(c, &attr.name).unwrap_or_else(|| self.new_key(attr));
            let slot = c.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(obj) = slot else {
                return Err(ScimError::invalid_path(format!("attribute {} has no sub-attributes", attr.name)));
            };
            self.set_sub(obj, attr, sub, v);
            if obj.is_empty() {
                c.shift_remove(&key);
            }
            return Ok(());
        }
        if mv {
            let items: Vec<Value> = match v {
                Value::Array(a) => a.iter().filter(|x| !x.is_null()).cloned().collect(),
                x => vec![x.clone()],
            };
            if let Some(bad) = items.iter().find(|x| x.is_array()) {
                return Err(ScimError::invalid_value(format!("nested list {bad} in {}", attr.name)));
            }
            if is_add {
                let arr = self.array_mut(c, attr)?;
                // A User's multi-valued attribute holds at most `MAX_MULTI_VALUES` (or what it
                // held before): refused here, as soon as it is past that, rather than after
                // 100,000 values were added and normalised.
                let cap = super::validate::MAX_MULTI_VALUES.max(arr.len());
                let mut touched = Vec::new();
                let mut seen = super::distinct::Seen::of(arr);
                for item in items {
                    if seen.push(arr, item) {
                        touched.push(arr.len() - 1);
                        if arr.len() > cap && !self.schema.is_group() {
                            return Err(ScimError::too_many(format!(
                                "{} would hold more than {cap} values; a user may have at most {}",
                                attr.name,
                                super::validate::MAX_MULTI_VALUES
                            )));
                        }
                    }
                }
                let empty = arr.is_empty();
                normalize_primary(arr, &touched);
                if empty {
                    remove_ci(c, &attr.name);
                }
            } else if items.is_empty() {
                remove_ci(c, &attr.name);
            } else {
                let mut items = items;
                let all: Vec<usize> = (0..items.len()).collect();
                normalize_primary(&mut items, &all);
                let key = find_key(c, &attr.name).unwrap_or_else(|| self.new_key(attr));
                c.insert(key, Value::Array(items));
            }
            return Ok(());
        }
        // Single-valued.
        let coerced;
        let v = match v {
            // Entra sends the enterprise manager as a bare id.
            Value::String(s) if attr.name.eq_ignore_ascii_case("manager") => {
                coerced = Value::Object(Map::from_iter([("value".to_string(), Value::String(s.clone()))]));
                &coerced
            }
            v => v,
        };
        let existing = find_key(c, &attr.name);
        let complex = self.schema.is_complex(&attr.path())
            || existing.as_ref().is_some_and(|k| c.get(k).is_some_and(Value::is_object));
        if complex {
            let Value::Object(o) = v else {
                return Err(ScimError::invalid_value(format!("the value of {} must be an object", attr.name)));
            };
            let key = existing.unwrap_or_else(|| self.new_key(attr));
            let slot = c.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(obj) = slot {
                self.merge(obj, attr, o);
                if obj.is_empty() {
                    c.shift_remove(&key);
                }
            }
            return Ok(());
        }
        if v.is_array() {
            return Err(ScimError::invalid_value(format!("attribute {} is single-valued", attr.name)));
        }
        if v.is_object() && self.schema.canonical_name(&attr.path()).is_some() {
            return Err(ScimError::invalid_value(format!("attribute {} does not take an object", attr.name)));
        }
        let key = existing.unwrap_or_else(|| self.new_key(attr));
        c.insert(key, v.clone());
        Ok(())
    }

    fn remove(&self, c: &mut Map<String, Value>, attr: &Attr, value: Option<&Value>) -> Result<(), ScimError> {
        let mv = self.is_mv(c, attr);
        if let Some(filter) = &attr.filter {
            if !mv {
                return Err(ScimError::invalid_path(format!("value filter on single-valued attribute {}", attr.name)));
            }
            let Some(key) = find_key(c, &attr.name) else {
                return Ok(());
            };
            let arr = match c.get_mut(&key) {
                Some(Value::Array(a)) => a,
                Some(Value::Null) | None => return Ok(()),
                Some(_) => {
                    return Err(ScimError::invalid_value(format!("attribute {} does not hold a list", attr.name)))
                }
            };
            match &attr.sub {
                None => arr.retain(|e| !self.elem_matches(attr, filter, e)),
                Some(sub) => {
                    for e in arr.iter_mut() {
                        if self.elem_matches(attr, filter, e) {
                            if let Value::Object(o) = e {
                                remove_ci(o, sub);
                            }
                        }
                    }
                }
            }
            if arr.is_empty() {
                c.shift_remove(&key);
            }
            return Ok(());
        }
        let Some(key) = find_key(c, &attr.name) else {
            return Ok(());
        };
        if let Some(sub) = &attr.sub {
            match c.get_mut(&key) {
                Some(Value::Array(a)) => {
                    for e in a.iter_mut() {
                        if let Value::Object(o) = e {
                            remove_ci(o, sub);
                        }
                    }
                }
                Some(Value::Object(o)) => {
                    remove_ci(o, sub);
                    if o.is_empty() {
                        c.shift_remove(&key);
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => {
                    return Err(ScimError::invalid_path(format!("attribute {} has no sub-attributes", attr.name)))
                }
            }
            return Ok(());
        }
        match (value, c.get_mut(&key)) {
            // remove with a value on a multi-valued attribute: remove the listed values only.
            (Some(v), Some(Value::Array(arr))) if !v.is_null() => {
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    x => vec![x],
                };
                arr.retain(|e| !items.iter().any(|item| self.value_matches(attr, item, e)));
                if arr.is_empty() {
                    c.shift_remove(&key);
                }
            }
            _ => {
                c.shift_remove(&key);
            }
        }
        Ok(())
    }

    /// Whether one element of the multi-valued `attr` satisfies the value filter (a non-object
    /// element `x` is seen as `{"value": x}`).
    fn elem_matches(&self, attr: &Attr, filter: &Filter, elem: &Value) -> bool {
        matches_value(filter, elem, &attr.path(), self.info)
    }

    /// Whether `item` (from a remove's value list) designates the stored element `elem`: objects
    /// match when every non-null sub-attribute of `item` equals `elem`'s; scalars by equality.
    /// Strings compare case-insensitively unless the attribute is caseExact.
    fn value_matches(&self, attr: &Attr, item: &Value, elem: &Value) -> bool {
        match (item, elem) {
            (Value::Object(i), Value::Object(e)) => {
                let fields: Vec<_> = i.iter().filter(|(_, v)| !v.is_null()).collect();
                !fields.is_empty()
                    && fields.iter().all(|(k, iv)| {
                        get_ci(e, k).is_some_and(|ev| scalar_eq(iv, ev, self.info.case_exact(&attr.sub_path(k))))
                    })
            }
            (i, e) => scalar_eq(i, e, self.info.case_exact(&attr.path())),
        }
    }
}

fn scalar_eq(a: &Value, b: &Value, case_exact: bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if !case_exact => x.to_lowercase() == y.to_lowercase(),
        _ => a == b,
    }
}

fn op_name(op: OpKind) -> &'static str {
    match op {
        OpKind::Add => "add",
        OpKind::Remove => "remove",
        OpKind::Replace => "replace",
    }
}

// ---------------------------------------------------------------------------------------------
// Group members
// ---------------------------------------------------------------------------------------------

fn member_op(op: OpKind, attr: &Attr, value: Option<&Value>) -> Result<Option<MemberOp>, ScimError> {
    if attr.sub.is_some() {
        return Err(ScimError::invalid_path("sub-attributes of members cannot be patched"));
    }
    match op {
        OpKind::Remove => {
            if let Some(f) = &attr.filter {
                let mut ids = Vec::new();
                return Ok(Some(if member_ids(f, &mut ids) {
                    dedup(&mut ids);
                    MemberOp::Remove(ids)
                } else {
                    MemberOp::RemoveWhere(Filter::ValuePath {
                        path: AttrPath { urn: None, name: "members".to_string(), sub: None },
                        filter: Box::new(f.clone()),
                    })
                }));
            }
            match value {
                None | Some(Value::Null) => Ok(Some(MemberOp::RemoveAll)),
                Some(v) => {
                    let mut ids: Vec<String> = normalize_members(v)?
                        .into_iter()
                        .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_string))
                        .collect();
                    dedup(&mut ids);
                    Ok((!ids.is_empty()).then_some(MemberOp::Remove(ids)))
                }
            }
        }
        _ if attr.filter.is_some() => {
            Err(ScimError::invalid_path(format!("{} on members does not take a value filter", op_name(op))))
        }
        OpKind::Add => {
            let v = value.ok_or_else(|| ScimError::invalid_value("add members requires a value"))?;
            let list = normalize_members(v)?;
            Ok((!list.is_empty()).then_some(MemberOp::Add(list)))
        }
        OpKind::Replace => match value {
            None => Err(ScimError::invalid_value("replace members requires a value")),
            Some(Value::Null) => Ok(Some(MemberOp::ReplaceAll(Vec::new()))),
            Some(v) => Ok(Some(MemberOp::ReplaceAll(normalize_members(v)?))),
        },
    }
}

/// Collects the ids of a filter made only of `value eq "id"` joined by `or`.
fn member_ids(f: &Filter, out: &mut Vec<String>) -> bool {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: Value::String(id) }
            if path.urn.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case("value") =>
        {
            out.push(id.clone());
            true
        }
        Filter::Or(a, b) => member_ids(a, out) && member_ids(b, out),
        _ => false,
    }
}

/// Member objects as sent (a list or one object) → `{"value", "display"?, "type"?, "$ref"?}`.
fn normalize_members(v: &Value) -> Result<Vec<Value>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        x => vec![x],
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let Value::Object(o) = item else {
            return Err(ScimError::invalid_value(format!("a member must be an object, got {item}")));
        };
        let id = match get_ci(o, "value") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(ScimError::invalid_value("a member needs a non-empty string \"value\"")),
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        let mut m = Map::new();
        m.insert("value".to_string(), Value::String(id));
        for k in ["display", "type", "$ref"] {
            match get_ci(o, k) {
                None | Some(Value::Null) => {}
                Some(x) => {
                    m.insert(k.to_string(), x.clone());
                }
            }
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

fn dedup(ids: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn is_urn(s: &str) -> bool {
    s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
}

fn find_key(m: &Map<String, Value>, name: &str) -> Option<String> {
    m.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn get_ci<'m>(m: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn get_ci_mut<'m>(m: &'m mut Map<String, Value>, name: &str) -> Option<&'m mut Value> {
    m.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn remove_ci(m: &mut Map<String, Value>, name: &str) {
    if let Some(k) = find_key(m, name) {
        m.shift_remove(&k);
    }
}

/// Lists `urn` in `doc["schemas"]` (creating the list if needed).
fn add_schema(doc: &mut Map<String, Value>, urn: &str) {
    let key = find_key(doc, "schemas").unwrap_or_else(|| "schemas".to_string());
    let slot = doc.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if let Value::Array(a) = slot {
        if !a.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn))) {
            a.push(Value::String(urn.to_string()));
        }
    }
}

/// Removes the extension object `urn` from `doc` and its URN from `doc["schemas"]`.
fn remove_extension(doc: &mut Map<String, Value>, urn: &str) {
    remove_ci(doc, urn);
    if let Some(Value::Array(a)) = get_ci_mut(doc, "schemas") {
        a.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
    }
}

/// The `(sub-attribute, literal)` pairs of a filter made only of `sub eq literal` joined by
/// `and`, e.g. `type eq "work"`; `None` for any other filter (or a sub-attribute named twice).
fn eq_literals(f: &Filter) -> Option<Vec<(String, Value)>> {
    fn walk(f: &Filter, out: &mut Vec<(String, Value)>) -> bool {
        match f {
            Filter::Compare { path, op: CompareOp::Eq, value }
                if path.urn.is_none() && path.sub.is_none() && !value.is_null() && !path.name.is_empty() =>
            {
                if out.iter().any(|(k, _)| k.eq_ignore_ascii_case(&path.name)) {
                    return false;
                }
                out.push((path.name.clone(), value.clone()));
                true
            }
            Filter::And(a, b) => walk(a, out) && walk(b, out),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(f, &mut out).then_some(out)
}

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// RFC 7643 §2.4: at most one value has `primary: true`. When the elements at `touched` were just
/// set and one of them is primary, the last such wins and every other element's primary is
/// cleared (set to `false`).
fn normalize_primary(arr: &mut [Value], touched: &[usize]) {
    let winner = touched
        .iter()
        .rev()
        .copied()
        .find(|&i| arr.get(i).and_then(Value::as_object).is_some_and(|o| is_true(get_ci(o, "primary"))));
    let Some(w) = winner else { return };
    for (i, e) in arr.iter_mut().enumerate() {
        if i == w {
            continue;
        }
        if let Value::Object(o) = e {
            if let Some(k) = find_key(o, "primary") {
                if is_true(o.get(&k)) {
                    o.insert(k, Value::Bool(false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::ScimType;
    use super::super::filter::{matches, parse_filter};
    use super::*;
    use serde_json::json;

    const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    struct TestSchema {
        group: bool,
    }

    const USER_ATTRS: &[&str] = &[
        "id",
        "externalId",
        "meta",
        "schemas",
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "password",
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
    ];
    const GROUP_ATTRS: &[&str] = &["id", "externalId", "meta", "schemas", "displayName", "members"];
    const ENT_ATTRS: &[&str] = &["employeeNumber", "costCenter", "organization", "division", "department", "manager"];
    const SUBS: &[&str] = &[
        "givenName",
        "familyName",
        "formatted",
        "middleName",
        "honorificPrefix",
        "honorificSuffix",
        "value",
        "type",
        "primary",
        "display",
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "displayName",
        "$ref",
    ];
    const MULTI: &[&str] = &[
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "entitlements",
        "roles",
        "x509Certificates",
        "members",
        "groups",
    ];

    fn find(list: &[&str], name: &str) -> Option<String> {
        list.iter().find(|n| n.eq_ignore_ascii_case(name)).map(|n| n.to_string())
    }

    impl PatchSchema for TestSchema {
        fn is_multi_valued(&self, path: &AttrPath) -> bool {
            path.urn.is_none() && find(MULTI, &path.name).is_some()
        }
        fn is_read_only(&self, path: &AttrPath) -> bool {
            path.urn.is_none()
                && (["id", "meta"].iter().any(|n| n.eq_ignore_ascii_case(&path.name))
                    || (!self.group && path.name.eq_ignore_ascii_case("groups")))
        }
        fn canonical_name(&self, path: &AttrPath) -> Option<String> {
            match &path.urn {
                None if self.group => find(GROUP_ATTRS, &path.name),
                None => find(USER_ATTRS, &path.name),
                Some(u) if u.eq_ignore_ascii_case(ENT) && !self.group => find(ENT_ATTRS, &path.name),
                Some(_) => None,
            }
        }
        fn core_urn(&self) -> &str {
            if self.group {
                GROUP
            } else {
                USER
            }
        }
        fn is_group(&self) -> bool {
            self.group
        }
        fn canonical_sub_name(&self, path: &AttrPath) -> Option<String> {
            find(SUBS, path.sub.as_deref()?)
        }
    }

    struct Info;
    impl AttrInfo for Info {
        fn case_exact(&self, path: &AttrPath) -> bool {
            path.name.eq_ignore_ascii_case("id")
        }
    }

    const U: TestSchema = TestSchema { group: false };
    const G: TestSchema = TestSchema { group: true };

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP_URN], "Operations": ops})
    }

    fn run_on(schema: &TestSchema, doc: &mut Value, ops: Value) -> Result<Vec<MemberOp>, ScimError> {
        let ops = parse_patch(&body(ops))?;
        apply_patch(doc, &ops, schema, &Info)
    }

    fn run(doc: &mut Value, ops: Value) -> Result<Vec<MemberOp>, ScimError> {
        run_on(&U, doc, ops)
    }

    /// Applies `ops` to `doc` and returns the patched document (panics on error).
    fn patched(doc: &Value, ops: Value) -> Value {
        let mut d = doc.clone();
        let m = run(&mut d, ops).expect("patch failed");
        assert!(m.is_empty());
        d
    }

    /// Runs `ops` expecting an error; checks `doc` is unchanged and returns the scimType.
    fn fails(schema: &TestSchema, doc: &Value, ops: Value) -> ScimType {
        let mut d = doc.clone();
        let e = run_on(schema, &mut d, ops).expect_err("patch should fail");
        assert_eq!(&d, doc, "document changed by a failed patch");
        assert_eq!(e.status, 400);
        e.scim_type.expect("error has a scimType")
    }

    fn group_ops(ops: Value) -> Vec<MemberOp> {
        let mut d = group();
        let before = d.clone();
        let m = run_on(&G, &mut d, ops).expect("patch failed");
        assert!(d.get("members").is_none());
        assert_eq!(d.get("id"), before.get("id"));
        m
    }

    fn user() -> Value {
        json!({
            "schemas": [USER],
            "id": "u1",
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen"},
            "displayName": "Babs Jensen",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn user_ent() -> Value {
        let mut u = user();
        u["schemas"] = json!([USER, ENT]);
        u[ENT] = json!({"employeeNumber": "701984", "manager": {"value": "m1", "displayName": "John"}});
        u
    }

    fn group() -> Value {
        json!({"schemas": [GROUP], "id": "g1", "displayName": "Tour Guides", "meta": {"resourceType": "Group"}})
    }

    // ----- parse_patch -----------------------------------------------------------------------

    #[test]
    fn parse_valid_body() {
        let ops = parse_patch(&body(json!([
            {"op": "add", "path": "title", "value": "Boss"},
            {"op": "Remove", "path": "emails[type eq \"work\"]"},
            {"op": "REPLACE", "value": {"active": false}}
        ])))
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].op, OpKind::Add);
        assert_eq!(ops[0].path.as_ref().unwrap().attr.name, "title");
        assert_eq!(ops[0].value, Some(json!("Boss")));
        assert_eq!(ops[1].op, OpKind::Remove);
        assert!(ops[1].path.as_ref().unwrap().value_filter.is_some());
        assert_eq!(ops[1].value, None);
        assert_eq!(ops[2].op, OpKind::Replace);
        assert!(ops[2].path.is_none());
    }

    #[test]
    fn parse_key_case_insensitive() {
        let b = json!({"Schemas": [PATCH_OP_URN], "operations": [{"OP": "add", "Path": "title", "Value": "x"}]});
        let ops = parse_patch(&b).unwrap();
        assert_eq!(ops[0].value, Some(json!("x")));
        assert!(ops[0].path.is_some());
    }

    #[test]
    fn parse_errors() {
        let syntax = |b: Value| {
            let e = parse_patch(&b).unwrap_err();
            assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax), "{b}");
        };
        syntax(json!([]));
        syntax(json!("x"));
        syntax(json!({"Operations": [{"op": "add", "value": {"a": 1}}]}));
        syntax(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "Operations": [{"op": "add", "value": {}}]}),
        );
        syntax(json!({"schemas": [PATCH_OP_URN]}));
        syntax(json!({"schemas": [PATCH_OP_URN], "Operations": []}));
        syntax(json!({"schemas": [PATCH_OP_URN], "Operations": {"op": "add"}}));
        syntax(body(json!(["add"])));
        syntax(body(json!([{"path": "title", "value": "x"}])));
        syntax(body(json!([{"op": "move", "path": "title", "value": "x"}])));
        syntax(body(json!([{"op": 1, "path": "title", "value": "x"}])));

        let kind = |ops: Value| parse_patch(&body(ops)).unwrap_err().scim_type.unwrap();
        assert_eq!(kind(json!([{"op": "remove"}])), ScimType::NoTarget);
        assert_eq!(kind(json!([{"op": "remove", "value": {"title": "x"}}])), ScimType::NoTarget);
        assert_eq!(kind(json!([{"op": "add", "path": "title"}])), ScimType::InvalidValue);
        assert_eq!(kind(json!([{"op": "add", "path": "title", "value": null}])), ScimType::InvalidValue);
        assert_eq!(kind(json!([{"op": "replace", "path": "title"}])), ScimType::InvalidValue);
        assert_eq!(kind(json!([{"op": "replace", "value": "x"}])), ScimType::InvalidValue);
        assert_eq!(kind(json!([{"op": "add", "value": [1]}])), ScimType::InvalidValue);
        assert_eq!(kind(json!([{"op": "add", "path": "emails[type eq", "value": "x"}])), ScimType::InvalidPath);
        assert_eq!(kind(json!([{"op": "add", "path": 3, "value": "x"}])), ScimType::InvalidPath);
    }

    #[test]
    fn parse_schemas_as_string_and_empty_path() {
        let b =
            json!({"schemas": PATCH_OP_URN, "Operations": [{"op": "replace", "path": "", "value": {"title": "x"}}]});
        let ops = parse_patch(&b).unwrap();
        assert!(ops[0].path.is_none());
        let b = json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "remove", "path": "", "value": null}]});
        assert_eq!(parse_patch(&b).unwrap_err().scim_type, Some(ScimType::NoTarget));
    }

    // ----- add -------------------------------------------------------------------------------

    #[test]
    fn add_single_valued_sets() {
        let d = patched(&user(), json!([{"op": "add", "path": "title", "value": "Tour Guide"}]));
        assert_eq!(d["title"], "Tour Guide");
        let d = patched(&d, json!([{"op": "add", "path": "title", "value": "Boss"}]));
        assert_eq!(d["title"], "Boss");
    }

    #[test]
    fn keys_match_case_insensitively_and_new_keys_are_canonical() {
        let d = patched(
            &user(),
            json!([
                {"op": "replace", "path": "USERNAME", "value": "new@example.com"},
                {"op": "add", "path": "nickname", "value": "Babs"},
                {"op": "add", "path": "customThing", "value": 1}
            ]),
        );
        assert_eq!(d["userName"], "new@example.com");
        assert!(d.get("USERNAME").is_none());
        assert_eq!(d["nickName"], "Babs");
        assert_eq!(d["customThing"], 1);
    }

    #[test]
    fn add_multi_valued_appends_and_skips_duplicates() {
        let d = patched(
            &user(),
            json!([
                {"op": "add", "path": "emails", "value": {"value": "b@x.org", "type": "other"}},
                {"op": "add", "path": "emails", "value": [
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "c@x.org", "type": "other"}
                ]}
            ]),
        );
        let emails = d["emails"].as_array().unwrap();
        assert_eq!(emails.len(), 4);
        assert_eq!(emails[2]["value"], "b@x.org");
        assert_eq!(emails[3]["value"], "c@x.org");
        let d = patched(&user(), json!([{"op": "add", "path": "ims", "value": [{"value": "babs", "type": "aim"}]}]));
        assert_eq!(d["ims"], json!([{"value": "babs", "type": "aim"}]));
    }

    #[test]
    fn add_complex_merges() {
        let d =
            patched(&user(), json!([{"op": "add", "path": "name", "value": {"middleName": "J", "givenname": "Babs"}}]));
        assert_eq!(
            d["name"],
            json!({"givenName": "Babs", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen", "middleName": "J"})
        );
        let d = patched(&user(), json!([{"op": "add", "path": "name.honorificPrefix", "value": "Ms."}]));
        assert_eq!(d["name"]["honorificPrefix"], "Ms.");
        let mut u = user();
        u.as_object_mut().unwrap().remove("name");
        let d = patched(&u, json!([{"op": "add", "path": "name.givenname", "value": "B"}]));
        assert_eq!(d["name"], json!({"givenName": "B"}));
    }

    #[test]
    fn add_wrong_shapes() {
        assert_eq!(fails(&U, &user(), json!([{"op": "add", "path": "name", "value": "Babs"}])), ScimType::InvalidValue);
        assert_eq!(
            fails(&U, &user(), json!([{"op": "add", "path": "title", "value": ["a", "b"]}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            fails(&U, &user(), json!([{"op": "add", "path": "userName", "value": {"a": 1}}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            fails(&U, &user(), json!([{"op": "add", "path": "userName[value eq \"x\"]", "value": "y"}])),
            ScimType::InvalidPath
        );
        assert_eq!(
            fails(&U, &user(), json!([{"op": "replace", "path": "displayName.sub", "value": "y"}])),
            ScimType::InvalidPath
        );
        assert_eq!(
            fails(&U, &user(), json!([{"op": "add", "path": "emails", "value": [[{"value": "x"}]]}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            fails(&U, &user(), json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": "x"}])),
            ScimType::InvalidValue
        );
    }

    #[test]
    fn add_pathless_with_dotted_and_urn_keys() {
        let d = patched(
            &user(),
            json!([{"op": "add", "value": {
                "nickName": "Babs",
                "name.givenName": "B",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42",
                "emails": [{"value": "new@x.org", "type": "other"}]
            }}]),
        );
        assert_eq!(d["nickName"], "Babs");
        assert_eq!(d["name"]["givenName"], "B");
        assert_eq!(d["name"]["familyName"], "Jensen");
        assert_eq!(d[ENT], json!({"employeeNumber": "42"}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
        assert_eq!(d["emails"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn add_pathless_extension_object_merges() {
        let d = patched(
            &user_ent(),
            json!([{"op": "add", "value": {
                ENT: {"department": "Tour Operations", "manager": {"value": "m2"}}
            }}]),
        );
        assert_eq!(d[ENT]["department"], "Tour Operations");
        assert_eq!(d[ENT]["employeeNumber"], "701984");
        assert_eq!(d[ENT]["manager"], json!({"value": "m2", "displayName": "John"}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
        // Creating the extension from scratch lists its URN once.
        let d = patched(&user(), json!([{"op": "add", "value": {ENT: {"costcenter": "4130"}}}]));
        assert_eq!(d[ENT], json!({"costCenter": "4130"}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
    }

    #[test]
    fn add_pathless_null_values_ignored() {
        let d = patched(&user(), json!([{"op": "add", "value": {"title": null, "nickName": "B"}}]));
        assert!(d.get("title").is_none());
        assert_eq!(d["nickName"], "B");
    }

    #[test]
    fn path_with_core_urn_prefix_is_top_level() {
        let d = patched(
            &user(),
            json!([
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName", "value": "x"},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName", "value": "J"}
            ]),
        );
        assert_eq!(d["userName"], "x");
        assert_eq!(d["name"]["familyName"], "J");
        assert!(d.get(USER).is_none());
        let d = patched(
            &user(),
            json!([{"op": "replace", "value": {USER: {"title": "T"}, "urn:ietf:params:scim:schemas:core:2.0:User:nickName": "N"}}]),
        );
        assert_eq!(d["title"], "T");
        assert_eq!(d["nickName"], "N");
        let d = patched(&user(), json!([{"op": "add", "path": USER, "value": {"title": "T"}}]));
        assert_eq!(d["title"], "T");
    }

    #[test]
    fn path_equal_to_extension_urn() {
        let d = patched(&user(), json!([{"op": "add", "path": ENT, "value": {"department": "D"}}]));
        assert_eq!(d[ENT], json!({"department": "D"}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
        let d = patched(&user_ent(), json!([{"op": "remove", "path": ENT}]));
        assert!(d.get(ENT).is_none());
        assert_eq!(d["schemas"], json!([USER]));
    }

    // ----- replace ---------------------------------------------------------------------------

    #[test]
    fn replace_single_and_multi_valued() {
        let d = patched(
            &user(),
            json!([
                {"op": "replace", "path": "displayName", "value": "Barb"},
                {"op": "replace", "path": "phoneNumbers", "value": [{"value": "1", "type": "mobile"}]},
                {"op": "replace", "path": "photos", "value": {"value": "https://x/p.jpg", "type": "photo"}}
            ]),
        );
        assert_eq!(d["displayName"], "Barb");
        assert_eq!(d["phoneNumbers"], json!([{"value": "1", "type": "mobile"}]));
        assert_eq!(d["photos"], json!([{"value": "https://x/p.jpg", "type": "photo"}]));
        let d = patched(&user(), json!([{"op": "replace", "path": "phoneNumbers", "value": []}]));
        assert!(d.get("phoneNumbers").is_none());
    }

    #[test]
    fn replace_complex_merges_sub_attributes() {
        let d = patched(
            &user(),
            json!([{"op": "replace", "path": "name", "value": {"givenName": "Barb", "formatted": null}}]),
        );
        assert_eq!(d["name"], json!({"givenName": "Barb", "familyName": "Jensen"}));
    }

    #[test]
    fn replace_null_clears() {
        let d = patched(
            &user_ent(),
            json!([
                {"op": "replace", "path": "displayName", "value": null},
                {"op": "replace", "value": {"name": null, "nickName": null}},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": null}
            ]),
        );
        assert!(d.get("displayName").is_none());
        assert!(d.get("name").is_none());
        assert_eq!(d[ENT], json!({"manager": {"value": "m1", "displayName": "John"}}));
    }

    #[test]
    fn replace_filter_sub_matching() {
        let d =
            patched(&user(), json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x.org"}]));
        assert_eq!(d["emails"][0], json!({"value": "w@x.org", "type": "work", "primary": true}));
        assert_eq!(d["emails"][1]["value"], "babs@jensen.org");
        // Filter literals compare case-insensitively (type is not caseExact).
        let d =
            patched(&user(), json!([{"op": "replace", "path": "emails[type eq \"WORK\"].display", "value": "Work"}]));
        assert_eq!(d["emails"][0]["display"], "Work");
    }

    #[test]
    fn replace_filter_whole_element() {
        let d = patched(
            &user(),
            json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@x.org", "type": "home"}}]),
        );
        assert_eq!(d["emails"][1], json!({"value": "h@x.org", "type": "home"}));
        let d =
            patched(&user(), json!([{"op": "add", "path": "emails[type eq \"home\"]", "value": {"display": "Home"}}]));
        assert_eq!(d["emails"][1], json!({"value": "babs@jensen.org", "type": "home", "display": "Home"}));
    }

    #[test]
    fn replace_filter_no_match_creates_from_equality_literals() {
        let mut u = user();
        u["emails"] = json!([{"value": "babs@jensen.org", "type": "home"}]);
        let d = patched(&u, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x.org"}]));
        assert_eq!(d["emails"][1], json!({"type": "work", "value": "w@x.org"}));
        let d = patched(
            &u,
            json!([{"op": "add", "path": "addresses[type eq \"work\" and primary eq true].locality", "value": "Hollywood"}]),
        );
        assert_eq!(d["addresses"], json!([{"type": "work", "primary": true, "locality": "Hollywood"}]));
        let d = patched(
            &u,
            json!([{"op": "replace", "path": "phoneNumbers[type eq \"mobile\"]", "value": {"value": "555"}}]),
        );
        assert_eq!(d["phoneNumbers"][1], json!({"type": "mobile", "value": "555"}));
    }

    #[test]
    fn replace_filter_no_match_otherwise_no_target() {
        for path in [
            "emails[type co \"wor\"].value",
            "emails[type eq \"work\" or type eq \"other\"].value",
            "emails[not (type eq \"home\")].value",
            "emails[type pr and value eq \"zzz\"].value",
        ] {
            let mut u = user();
            u["emails"] = json!([{"value": "babs@jensen.org", "type": "home"}]);
            assert_eq!(
                fails(&U, &u, json!([{"op": "replace", "path": path, "value": "x"}])),
                ScimType::NoTarget,
                "{path}"
            );
        }
    }

    #[test]
    fn replace_pathless_okta_deactivate() {
        let d = patched(&user(), json!([{"op": "replace", "value": {"active": false}}]));
        assert_eq!(d["active"], false);
    }

    #[test]
    fn replace_pathless_keys_replace() {
        let d = patched(
            &user(),
            json!([{"op": "replace", "value": {
                "emails": [{"value": "only@x.org", "type": "work", "primary": true}],
                "name": {"familyName": "J"},
                "schemas": ["bogus"],
                "meta": {"version": "x"}
            }}]),
        );
        assert_eq!(d["emails"], json!([{"value": "only@x.org", "type": "work", "primary": true}]));
        assert_eq!(d["name"]["familyName"], "J");
        assert_eq!(d["name"]["givenName"], "Barbara");
        assert_eq!(d["schemas"], json!([USER]));
        assert_eq!(d["meta"], user()["meta"]);
    }

    // ----- remove ----------------------------------------------------------------------------

    #[test]
    fn remove_attribute() {
        let d = patched(
            &user(),
            json!([
                {"op": "remove", "path": "displayName"},
                {"op": "remove", "path": "phoneNumbers"},
                {"op": "remove", "path": "name.formatted"},
                {"op": "remove", "path": "nickName"}
            ]),
        );
        assert!(d.get("displayName").is_none());
        assert!(d.get("phoneNumbers").is_none());
        assert_eq!(d["name"], json!({"givenName": "Barbara", "familyName": "Jensen"}));
    }

    #[test]
    fn remove_filter_elements_and_idempotence() {
        let d = patched(&user(), json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]));
        assert_eq!(d["emails"], json!([{"value": "babs@jensen.org", "type": "home"}]));
        let d2 = patched(&d, json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]));
        assert_eq!(d2, d);
        let d3 = patched(&d, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]));
        assert!(d3.get("emails").is_none());
        let d4 = patched(&d3, json!([{"op": "remove", "path": "ims[type eq \"aim\"]"}]));
        assert_eq!(d4, d3);
    }

    #[test]
    fn remove_filter_sub_attribute() {
        let d = patched(&user(), json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]));
        assert_eq!(d["emails"][0], json!({"value": "bjensen@example.com", "type": "work"}));
        let d = patched(&user(), json!([{"op": "remove", "path": "emails.type"}]));
        assert_eq!(
            d["emails"],
            json!([{"value": "bjensen@example.com", "primary": true}, {"value": "babs@jensen.org"}])
        );
    }

    #[test]
    fn remove_with_value_list_on_multi_valued() {
        let d = patched(&user(), json!([{"op": "remove", "path": "emails", "value": [{"value": "BABS@jensen.org"}]}]));
        assert_eq!(d["emails"].as_array().unwrap().len(), 1);
        assert_eq!(d["emails"][0]["value"], "bjensen@example.com");
        let d = patched(&user(), json!([{"op": "remove", "path": "emails", "value": {"value": "nobody@x.org"}}]));
        assert_eq!(d["emails"], user()["emails"]);
    }

    #[test]
    fn remove_readonly_is_mutability() {
        for p in ["id", "meta", "meta.version", "groups", "groups[value eq \"g\"]", "ID"] {
            assert_eq!(fails(&U, &user(), json!([{"op": "remove", "path": p}])), ScimType::Mutability, "{p}");
        }
        assert_eq!(fails(&U, &user(), json!([{"op": "replace", "path": "id", "value": "x"}])), ScimType::Mutability);
        assert_eq!(
            fails(&U, &user(), json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}])),
            ScimType::Mutability
        );
        assert_eq!(
            fails(&G, &group(), json!([{"op": "replace", "path": "meta.version", "value": "x"}])),
            ScimType::Mutability
        );
    }

    #[test]
    fn readonly_keys_in_pathless_values_are_ignored() {
        let d =
            patched(&user(), json!([{"op": "add", "value": {"id": "evil", "groups": [{"value": "g"}], "title": "T"}}]));
        assert_eq!(d["id"], "u1");
        assert!(d.get("groups").is_none());
        assert_eq!(d["title"], "T");
    }

    #[test]
    fn extension_removal_updates_schemas() {
        let d = patched(
            &user_ent(),
            json!([
                {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"}
            ]),
        );
        assert_eq!(d["schemas"], json!([USER, ENT]));
        let d = patched(
            &d,
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]),
        );
        assert!(d.get(ENT).is_none());
        assert_eq!(d["schemas"], json!([USER]));
        // Removing from an absent extension is a no-op.
        let d2 = patched(
            &d,
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]),
        );
        assert_eq!(d2, d);
        let d3 = patched(
            &user_ent(),
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName"}]),
        );
        assert_eq!(d3[ENT]["manager"], json!({"value": "m1"}));
    }

    // ----- primary ---------------------------------------------------------------------------

    #[test]
    fn primary_is_unique() {
        let d = patched(
            &user(),
            json!([{"op": "add", "path": "emails", "value": {"value": "n@x.org", "type": "other", "primary": true}}]),
        );
        assert_eq!(d["emails"][0]["primary"], false);
        assert_eq!(d["emails"][2]["primary"], true);
        let d = patched(&user(), json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]));
        assert_eq!(d["emails"][0]["primary"], false);
        assert_eq!(d["emails"][1]["primary"], true);
        let d = patched(
            &user(),
            json!([{"op": "replace", "path": "emails", "value": [
                {"value": "a@x.org", "primary": true}, {"value": "b@x.org", "primary": "True"}
            ]}]),
        );
        assert_eq!(d["emails"][0]["primary"], false);
        assert_eq!(d["emails"][1]["primary"], "True");
        // An op that sets no primary leaves existing primaries alone.
        let d = patched(&user(), json!([{"op": "add", "path": "emails", "value": {"value": "n@x.org"}}]));
        assert_eq!(d["emails"][0]["primary"], true);
    }

    // ----- atomicity, robustness -------------------------------------------------------------

    #[test]
    fn failed_patch_leaves_doc_unchanged() {
        let t = fails(
            &U,
            &user(),
            json!([
                {"op": "replace", "path": "displayName", "value": "changed"},
                {"op": "add", "path": "emails", "value": {"value": "x@x.org"}},
                {"op": "replace", "path": "id", "value": "nope"}
            ]),
        );
        assert_eq!(t, ScimType::Mutability);
        let t = fails(
            &G,
            &group(),
            json!([
                {"op": "add", "path": "members", "value": [{"value": "a"}]},
                {"op": "replace", "path": "displayName", "value": "x"},
                {"op": "add", "path": "members", "value": [{"display": "no id"}]}
            ]),
        );
        assert_eq!(t, ScimType::InvalidValue);
    }

    #[test]
    fn non_object_doc_is_an_error() {
        let mut d = json!([1]);
        let ops = parse_patch(&body(json!([{"op": "add", "path": "title", "value": "x"}]))).unwrap();
        assert!(apply_patch(&mut d, &ops, &U, &Info).is_err());
        assert_eq!(d, json!([1]));
    }

    #[test]
    fn never_panics() {
        let paths = [
            json!(null),
            json!("title"),
            json!("name"),
            json!("name.givenName"),
            json!("emails"),
            json!("emails.value"),
            json!("emails[type eq \"work\"]"),
            json!("emails[type eq \"work\"].value"),
            json!("emails[value co \"x\"].type"),
            json!("userName[value eq \"x\"]"),
            json!("members"),
            json!("members[value eq \"a\"]"),
            json!("members[value eq \"a\"].display"),
            json!("id"),
            json!(ENT),
            json!(USER),
            json!(format!("{ENT}:manager")),
            json!(format!("{ENT}:manager.value")),
            json!("active"),
            json!("weird"),
            json!("weird[type eq \"x\"]"),
            json!("urn:foo:Bar"),
            json!("urn:foo:bar"),
            json!("schemas"),
            json!("x509Certificates[value pr].display"),
        ];
        let values = [
            None,
            Some(json!(null)),
            Some(json!("s")),
            Some(json!(1)),
            Some(json!(true)),
            Some(json!("False")),
            Some(json!([])),
            Some(json!([1, "a", null])),
            Some(json!([{"value": "a"}, {"value": 1}])),
            Some(json!({})),
            Some(json!({"value": "a", "type": "work", "primary": true})),
            Some(json!({"name": {"givenName": 1}, ENT: "x", "emails": "x", "members": [{"value": "m"}]})),
            Some(json!({USER: {USER: {"title": 1}}, "urn:foo:Bar": {"x": 1}, "a.b.c": 1, "[": 2})),
            Some(json!([[{"value": "a"}]])),
        ];
        let mut weird_user = user_ent();
        weird_user["emails"] = json!(["plain", 3, null, {"value": "a", "type": "work"}]);
        weird_user["name"] = json!("not an object");
        weird_user["title"] = json!({"odd": true});
        weird_user["ims"] = json!({"value": "not a list"});
        weird_user[ENT] = json!("not an object");
        weird_user["schemas"] = json!("not a list");
        for doc in [user(), user_ent(), group(), weird_user, json!({})] {
            for schema in [&U, &G] {
                for op in ["add", "replace", "remove"] {
                    for p in &paths {
                        for v in &values {
                            let mut o = json!({"op": op, "path": p});
                            if let Some(v) = v {
                                o["value"] = v.clone();
                            }
                            let mut d = doc.clone();
                            if let Ok(ops) = parse_patch(&body(json!([o]))) {
                                let r = apply_patch(&mut d, &ops, schema, &Info);
                                if r.is_err() {
                                    assert_eq!(d, doc);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn boolean_strings_are_kept_as_sent() {
        let d = patched(
            &user(),
            json!([
                {"op": "Replace", "path": "active", "value": "False"}
            ]),
        );
        assert_eq!(d["active"], "False");
        let d = patched(&user(), json!([{"op": "Replace", "value": {"active": "True"}}]));
        assert_eq!(d["active"], "True");
    }

    // ----- Okta ------------------------------------------------------------------------------

    #[test]
    fn okta_deactivate_user() {
        let mut d = user();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]
        });
        let ops = parse_patch(&b).unwrap();
        assert!(apply_patch(&mut d, &ops, &U, &Info).unwrap().is_empty());
        assert_eq!(d["active"], false);
    }

    #[test]
    fn okta_group_rename() {
        let mut d = group();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2"}}]
        });
        let ops = parse_patch(&b).unwrap();
        assert!(apply_patch(&mut d, &ops, &G, &Info).unwrap().is_empty());
        assert_eq!(d["id"], "g1");
        assert_eq!(d["displayName"], "Test SCIMv2");
    }

    #[test]
    fn okta_member_delta() {
        let mut d = group();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "remove", "path": "members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
                {"op": "add", "path": "members", "value": [
                    {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"},
                    {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7174", "display": "test.user2@okta.local"}
                ]}
            ]
        });
        let ops = parse_patch(&b).unwrap();
        let m = apply_patch(&mut d, &ops, &G, &Info).unwrap();
        assert_eq!(d, group());
        assert_eq!(
            m,
            vec![
                MemberOp::Remove(vec!["89bb1940-b905-4575-9e7f-6f887cfb368e".into()]),
                MemberOp::Add(vec![
                    json!({"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}),
                    json!({"value": "23a35c27-23d3-4c03-b4c5-6443c09e7174", "display": "test.user2@okta.local"}),
                ])
            ]
        );
    }

    // ----- Entra -----------------------------------------------------------------------------

    #[test]
    fn entra_user_update() {
        let mut d = user_ent();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-1234"},
                {"op": "Replace", "path": "active", "value": "False"}
            ]
        });
        let ops = parse_patch(&b).unwrap();
        apply_patch(&mut d, &ops, &U, &Info).unwrap();
        assert_eq!(d["emails"][0]["value"], "updatedEmail@microsoft.com");
        assert_eq!(d["name"]["familyName"], "updatedFamilyName");
        assert_eq!(d["phoneNumbers"][1], json!({"type": "mobile", "value": "555-1234"}));
        assert_eq!(d["active"], "False");
    }

    #[test]
    fn entra_work_email_for_user_without_one() {
        let mut d = json!({"schemas": [USER], "id": "u2", "userName": "x@y"});
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x@contoso.com"}]
        });
        let ops = parse_patch(&b).unwrap();
        apply_patch(&mut d, &ops, &U, &Info).unwrap();
        assert_eq!(d["emails"], json!([{"type": "work", "value": "x@contoso.com"}]));
    }

    #[test]
    fn entra_manager_as_string_and_object() {
        let mgr = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        let d = patched(&user(), json!([{"op": "Add", "path": mgr, "value": "2819c223-7f76-453a-919d-413861904646"}]));
        assert_eq!(d[ENT], json!({"manager": {"value": "2819c223-7f76-453a-919d-413861904646"}}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
        let d = patched(&user_ent(), json!([{"op": "Replace", "path": mgr, "value": "m9"}]));
        assert_eq!(d[ENT]["manager"]["value"], "m9");
        let d = patched(&user_ent(), json!([{"op": "Replace", "path": mgr, "value": {"value": "m3"}}]));
        assert_eq!(d[ENT]["manager"]["value"], "m3");
        let d = patched(&user(), json!([{"op": "Replace", "value": {mgr: {"value": "m4"}}}]));
        assert_eq!(d[ENT]["manager"], json!({"value": "m4"}));
        let d = patched(&user(), json!([{"op": "Add", "value": {mgr: "m5"}}]));
        assert_eq!(d[ENT]["manager"], json!({"value": "m5"}));
        let d = patched(&user_ent(), json!([{"op": "Remove", "path": mgr}]));
        assert_eq!(d[ENT], json!({"employeeNumber": "701984"}));
    }

    #[test]
    fn entra_pathless_replace_dotted_and_urn_keys() {
        let mut d = user();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "value": {
                "active": "False",
                "displayName": "Updated",
                "name.givenName": "Given",
                "name.familyName": "Family",
                "emails[type eq \"work\"].value": "w@contoso.com",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "1234",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales"
            }}]
        });
        let ops = parse_patch(&b).unwrap();
        apply_patch(&mut d, &ops, &U, &Info).unwrap();
        assert_eq!(d["active"], "False");
        assert_eq!(d["displayName"], "Updated");
        assert_eq!(d["name"]["givenName"], "Given");
        assert_eq!(d["name"]["familyName"], "Family");
        assert_eq!(d["name"]["formatted"], "Ms. Barbara J Jensen");
        assert_eq!(d["emails"][0]["value"], "w@contoso.com");
        assert_eq!(d[ENT], json!({"employeeNumber": "1234", "department": "Sales"}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
    }

    #[test]
    fn entra_member_add_and_remove_by_value_list() {
        let m = group_ops(json!([
            {"op": "Add", "path": "members", "value": [{"value": "id1"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "id2"}, {"value": "id3"}]}
        ]));
        assert_eq!(
            m,
            vec![MemberOp::Add(vec![json!({"value": "id1"})]), MemberOp::Remove(vec!["id2".into(), "id3".into()])]
        );
    }

    #[test]
    fn entra_group_pathless_replace_display_name() {
        let mut d = group();
        let m = run_on(&G, &mut d, json!([{"op": "Replace", "value": {"displayName": "New", "externalId": "e1"}}]))
            .unwrap();
        assert!(m.is_empty());
        assert_eq!(d["displayName"], "New");
        assert_eq!(d["externalId"], "e1");
    }

    // ----- group members ---------------------------------------------------------------------

    #[test]
    fn members_forms() {
        assert_eq!(
            group_ops(
                json!([{"op": "add", "path": "members", "value": {"value": "a", "$ref": null, "display": "A", "extra": 1}}])
            ),
            vec![MemberOp::Add(vec![json!({"value": "a", "display": "A"})])]
        );
        assert_eq!(
            group_ops(json!([{"op": "add", "path": "members", "value": [
                {"value": "a", "$ref": "https://x/Users/a", "type": "User"}, {"Value": "b"}, {"value": "a"}
            ]}])),
            vec![MemberOp::Add(vec![
                json!({"value": "a", "type": "User", "$ref": "https://x/Users/a"}),
                json!({"value": "b"})
            ])]
        );
        assert_eq!(
            group_ops(json!([{"op": "remove", "path": "members[value eq \"a\" or value eq \"b\"]"}])),
            vec![MemberOp::Remove(vec!["a".into(), "b".into()])]
        );
        // Any other filter: the whole `members[…]` value path, evaluated per member row by the
        // caller as `matches(&f, &json!({"members": [row]}), info)`.
        let m = group_ops(json!([{"op": "remove", "path": "members[display co \"x\"]"}]));
        let [MemberOp::RemoveWhere(f)] = &m[..] else { panic!("{m:?}") };
        assert_eq!(f, &parse_filter("members[display co \"x\"]").unwrap());
        let row = |display: &str| json!({"members": [{"value": "id", "display": display}]});
        assert!(matches(f, &row("aXb"), &Info));
        assert!(!matches(f, &row("ab"), &Info));
        let m = group_ops(json!([{"op": "remove", "path": "members[value eq \"a\" and display eq \"x\"]"}]));
        let [MemberOp::RemoveWhere(Filter::ValuePath { path, filter })] = &m[..] else { panic!("{m:?}") };
        assert_eq!(path.name, "members");
        assert!(matches!(**filter, Filter::And(..)));
        assert_eq!(group_ops(json!([{"op": "remove", "path": "members"}])), vec![MemberOp::RemoveAll]);
        assert_eq!(group_ops(json!([{"op": "remove", "path": "Members", "value": null}])), vec![MemberOp::RemoveAll]);
        assert_eq!(
            group_ops(json!([{"op": "replace", "path": "members", "value": [{"value": "c"}]}])),
            vec![MemberOp::ReplaceAll(vec![json!({"value": "c"})])]
        );
        assert_eq!(
            group_ops(json!([{"op": "replace", "path": "members", "value": []}])),
            vec![MemberOp::ReplaceAll(vec![])]
        );
        assert_eq!(
            group_ops(json!([{"op": "add", "value": {"members": [{"value": "d"}]}}])),
            vec![MemberOp::Add(vec![json!({"value": "d"})])]
        );
        assert_eq!(
            group_ops(json!([{"op": "replace", "value": {"members": [{"value": "e"}], "displayName": "X"}}])),
            vec![MemberOp::ReplaceAll(vec![json!({"value": "e"})])]
        );
        assert_eq!(group_ops(json!([{"op": "add", "path": "members", "value": []}])), vec![]);
        assert_eq!(
            group_ops(
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members", "value": [{"value": "f"}]}])
            ),
            vec![MemberOp::Add(vec![json!({"value": "f"})])]
        );
    }

    #[test]
    fn members_invalid_values() {
        for v in [
            json!("id"),
            json!([1]),
            json!([{"value": 1}]),
            json!([{"display": "x"}]),
            json!([{"value": ""}]),
            json!([null]),
        ] {
            for op in ["add", "replace", "remove"] {
                let t = fails(&G, &group(), json!([{"op": op, "path": "members", "value": v}]));
                assert_eq!(t, ScimType::InvalidValue, "{op} {v}");
            }
        }
        assert_eq!(
            fails(&G, &group(), json!([{"op": "remove", "path": "members[value eq \"a\"].display"}])),
            ScimType::InvalidPath
        );
        assert_eq!(
            fails(&G, &group(), json!([{"op": "replace", "path": "members[value eq \"a\"]", "value": {"value": "b"}}])),
            ScimType::InvalidPath
        );
    }

    #[test]
    fn members_on_user_are_plain_attributes() {
        // Not a group: "members" is just an unknown attribute; never a MemberOp.
        let mut d = user();
        let m = run(&mut d, json!([{"op": "add", "path": "members", "value": "x"}])).unwrap();
        assert!(m.is_empty());
        assert_eq!(d["members"], json!(["x"]));
    }

    #[test]
    fn whole_extension_path_shapes() {
        // However the path parser splits a bare schema URN, it designates the whole extension.
        let shapes = [
            AttrPath { urn: Some(ENT.to_string()), name: String::new(), sub: None },
            AttrPath { urn: None, name: ENT.to_string(), sub: None },
            AttrPath {
                urn: Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0".to_string()),
                name: "User".to_string(),
                sub: None,
            },
        ];
        for attr in shapes {
            let path = Some(PatchPath { attr, value_filter: None });
            let add = PatchOp { op: OpKind::Add, path: path.clone(), value: Some(json!({"division": "D"})) };
            let mut d = user();
            apply_patch(&mut d, &[add], &U, &Info).unwrap();
            assert_eq!(d[ENT], json!({"division": "D"}));
            assert_eq!(d["schemas"], json!([USER, ENT]));
            let remove = PatchOp { op: OpKind::Remove, path, value: None };
            apply_patch(&mut d, &[remove], &U, &Info).unwrap();
            assert_eq!(d, user());
        }
        let p = parse_path_str(ENT).unwrap();
        assert!(spells(&p, ENT) || p.attr.name.is_empty());
        assert!(looks_like_schema_urn(ENT));
        assert!(!looks_like_schema_urn("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"));
        assert!(!looks_like_schema_urn("urn:x:User:Name.sub"));
    }

    #[test]
    fn entra_group_bodies() {
        let mut d = group();
        let b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "displayName", "value": "1879db59-updatedDisplayName"},
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]},
                {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "a0b1c2d3"}]}
            ]
        });
        let ops = parse_patch(&b).unwrap();
        let m = apply_patch(&mut d, &ops, &G, &Info).unwrap();
        assert_eq!(d["displayName"], "1879db59-updatedDisplayName");
        assert!(d.get("members").is_none());
        assert_eq!(
            m,
            vec![
                MemberOp::Add(vec![json!({"value": "f648f8d5ea4e4cd38e9c"})]),
                MemberOp::Remove(vec!["a0b1c2d3".into()]),
            ]
        );
    }

    #[test]
    fn primitive_multi_valued_elements() {
        let mut u = user();
        u["roles"] = json!(["admin", "dev"]);
        let d = patched(&u, json!([{"op": "remove", "path": "roles[value eq \"ADMIN\"]"}]));
        assert_eq!(d["roles"], json!(["dev"]));
        let d = patched(&u, json!([{"op": "add", "path": "roles", "value": ["dev", "ops"]}]));
        assert_eq!(d["roles"], json!(["admin", "dev", "ops"]));
        let d = patched(&u, json!([{"op": "remove", "path": "roles", "value": ["Dev"]}]));
        assert_eq!(d["roles"], json!(["admin"]));
    }

    #[test]
    fn value_filter_case_exactness_uses_the_full_path() {
        // emails.type is caseExact here: "WORK" must not match "work".
        struct Exact;
        impl AttrInfo for Exact {
            fn case_exact(&self, path: &AttrPath) -> bool {
                path.name == "emails" && path.sub.as_deref() == Some("type")
            }
        }
        let ops = parse_patch(&body(json!([{"op": "remove", "path": "emails[type eq \"WORK\"]"}]))).unwrap();
        let mut d = user();
        apply_patch(&mut d, &ops, &U, &Exact).unwrap();
        assert_eq!(d, user());
        apply_patch(&mut d, &ops, &U, &Info).unwrap();
        assert_eq!(d["emails"].as_array().unwrap().len(), 1);
    }

    // ----- the IdP request bodies of tests/fixtures/idp (copied verbatim) ---------------------

    fn fixture(doc: &Value, schema: &TestSchema, raw: &str) -> (Value, Vec<MemberOp>) {
        let b: Value = serde_json::from_str(raw).unwrap();
        let ops = parse_patch(&b).unwrap();
        let mut d = doc.clone();
        let m = apply_patch(&mut d, &ops, schema, &Info).unwrap();
        (d, m)
    }

    #[test]
    fn fixture_entra_manager_string_patch() {
        let (d, m) = fixture(
            &user(),
            &U,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add",
                    "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "value": "2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}]}"#,
        );
        assert!(m.is_empty());
        assert_eq!(d[ENT], json!({"manager": {"value": "2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}}));
        assert_eq!(d["schemas"], json!([USER, ENT]));
    }

    #[test]
    fn fixture_entra_patch_user_capitalised() {
        let (d, _) = fixture(
            &user(),
            &U,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Replace", "path": "displayName", "value": "Pvlo"},
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "TestBcwqnm@test.microsoft.com"},
                    {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
                    {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
                    {"op": "Replace", "path": "externalId", "value": "Eqpj"},
                    {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "Eqpj"}
                ]}"#,
        );
        assert_eq!(d["displayName"], "Pvlo");
        assert_eq!(d["emails"][0]["value"], "TestBcwqnm@test.microsoft.com");
        assert_eq!(d["emails"][1]["value"], "babs@jensen.org");
        assert_eq!(d["name"]["givenName"], "Gtfd");
        assert_eq!(d["name"]["familyName"], "Pkqf");
        assert_eq!(d["externalId"], "Eqpj");
        assert_eq!(d[ENT], json!({"employeeNumber": "Eqpj"}));
    }

    #[test]
    fn fixture_entra_patch_user_pathless_dotted() {
        let mut u = user();
        u.as_object_mut().unwrap().remove("emails");
        let (d, _) = fixture(
            &u,
            &U,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "TestMhvaes@test.microsoft.com"},
                    {"op": "replace", "value": {
                        "displayName": "Bjfe",
                        "name.givenName": "Kkom",
                        "name.familyName": "Unua",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"}}
                ]}"#,
        );
        assert_eq!(d["emails"], json!([{"type": "work", "value": "TestMhvaes@test.microsoft.com"}]));
        assert_eq!(d["displayName"], "Bjfe");
        assert_eq!(d["name"]["givenName"], "Kkom");
        assert_eq!(d["name"]["familyName"], "Unua");
        assert_eq!(d[ENT], json!({"employeeNumber": "Aklq"}));
    }

    #[test]
    fn fixture_user_disable_bodies() {
        let (d, _) = fixture(
            &user(),
            &U,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": false}}]}"#,
        );
        assert_eq!(d["active"], false);
        let (d, _) = fixture(
            &user(),
            &U,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}"#,
        );
        assert_eq!(d["active"], "False");
    }

    #[test]
    fn fixture_group_bodies() {
        let (d, m) = fixture(
            &group(),
            &G,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {
                    "id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b", "displayName": "Test SCIMv2"}}]}"#,
        );
        assert!(m.is_empty());
        assert_eq!(d["id"], "g1");
        assert_eq!(d["displayName"], "Test SCIMv2");

        let (d, m) = fixture(
            &group(),
            &G,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "remove", "path": "members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
                    {"op": "add", "path": "members", "value": [{
                        "value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}]}
                ]}"#,
        );
        assert_eq!(d, group());
        assert_eq!(
            m,
            vec![
                MemberOp::Remove(vec!["89bb1940-b905-4575-9e7f-6f887cfb368e".into()]),
                MemberOp::Add(vec![
                    json!({"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"})
                ]),
            ]
        );

        let (_, m) = fixture(
            &group(),
            &G,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "members", "value": [
                    {"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"},
                    {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user@okta.local"}]}]}"#,
        );
        assert_eq!(
            m,
            vec![MemberOp::ReplaceAll(vec![
                json!({"value": "23a35c27-23d3-4c03-b4c5-6443c09e7173", "display": "test.user@okta.local"}),
                json!({"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "test.user@okta.local"}),
            ])]
        );

        let (_, m) = fixture(
            &group(),
            &G,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]}]}"#,
        );
        assert_eq!(m, vec![MemberOp::Add(vec![json!({"value": "f648f8d5ea4e4cd38e9c"})])]);

        let (_, m) = fixture(
            &group(),
            &G,
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]}]}"#,
        );
        assert_eq!(m, vec![MemberOp::Remove(vec!["f648f8d5ea4e4cd38e9c".into()])]);
    }
}
