//! Resource schemas (RFC 7643 User, enterprise extension, Group): attribute definitions, the
//! discovery documents built from them, and normalisation of request bodies into stored documents.

use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::filter::{AttrInfo, AttrPath};
use super::patch::PatchSchema;

pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const SEARCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const PATCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// An attribute's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Bool,
    Complex,
    Reference,
    DateTime,
    Binary,
}

/// Mutability (RFC 7643 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadWrite,
    ReadOnly,
    Immutable,
    WriteOnly,
}

/// When an attribute is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Default,
    Never,
}

/// One attribute definition.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub unique_server: bool,
    pub canonical: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub: &'static [Attr],
    pub description: &'static str,
}

const fn a(name: &'static str, ty: Ty, description: &'static str) -> Attr {
    Attr {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique_server: false,
        canonical: &[],
        reference_types: &[],
        sub: &[],
        description,
    }
}

const fn multi(mut at: Attr, sub: &'static [Attr]) -> Attr {
    at.multi = true;
    at.sub = sub;
    at
}
const fn complex(mut at: Attr, sub: &'static [Attr]) -> Attr {
    at.sub = sub;
    at
}
const fn ro(mut at: Attr) -> Attr {
    at.mutability = Mutability::ReadOnly;
    at
}
const fn exact(mut at: Attr) -> Attr {
    at.case_exact = true;
    at
}
const fn canon(mut at: Attr, c: &'static [&'static str]) -> Attr {
    at.canonical = c;
    at
}
const fn refs(mut at: Attr, r: &'static [&'static str]) -> Attr {
    at.reference_types = r;
    at
}

const MV_TYPE: &str = "A label indicating the attribute's function.";
const MV_PRIMARY: &str = "A Boolean value indicating the 'primary' or preferred attribute value.";

const NAME_SUB: &[Attr] = &[
    a("formatted", Ty::Str, "The full name, formatted for display."),
    a("familyName", Ty::Str, "The family name."),
    a("givenName", Ty::Str, "The given name."),
    a("middleName", Ty::Str, "The middle name(s)."),
    a("honorificPrefix", Ty::Str, "The honorific prefix(es)."),
    a("honorificSuffix", Ty::Str, "The honorific suffix(es)."),
];
const EMAIL_SUB: &[Attr] = &[
    a("value", Ty::Str, "Email address."),
    a("display", Ty::Str, "A human-readable name."),
    canon(a("type", Ty::Str, MV_TYPE), &["work", "home", "other"]),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const PHONE_SUB: &[Attr] = &[
    a("value", Ty::Str, "Phone number."),
    a("display", Ty::Str, "A human-readable name."),
    canon(a("type", Ty::Str, MV_TYPE), &["work", "home", "mobile", "fax", "pager", "other"]),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const IMS_SUB: &[Attr] = &[
    a("value", Ty::Str, "Instant messaging address."),
    a("display", Ty::Str, "A human-readable name."),
    canon(a("type", Ty::Str, MV_TYPE), &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const PHOTO_SUB: &[Attr] = &[
    refs(a("value", Ty::Reference, "URL of a photo."), &["external"]),
    a("display", Ty::Str, "A human-readable name."),
    canon(a("type", Ty::Str, MV_TYPE), &["photo", "thumbnail"]),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const ADDRESS_SUB: &[Attr] = &[
    a("formatted", Ty::Str, "The full mailing address."),
    a("streetAddress", Ty::Str, "The full street address component."),
    a("locality", Ty::Str, "The city or locality component."),
    a("region", Ty::Str, "The state or region component."),
    a("postalCode", Ty::Str, "The zip code or postal code component."),
    a("country", Ty::Str, "The country name component."),
    canon(a("type", Ty::Str, MV_TYPE), &["work", "home", "other"]),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const USER_GROUPS_SUB: &[Attr] = &[
    ro(a("value", Ty::Str, "The identifier of the User's group.")),
    ro(refs(a("$ref", Ty::Reference, "The URI of the corresponding Group resource."), &["User", "Group"])),
    ro(a("display", Ty::Str, "A human-readable name.")),
    ro(canon(a("type", Ty::Str, MV_TYPE), &["direct", "indirect"])),
];
const GENERIC_MV_SUB: &[Attr] = &[
    a("value", Ty::Str, "The value."),
    a("display", Ty::Str, "A human-readable name."),
    a("type", Ty::Str, MV_TYPE),
    a("primary", Ty::Bool, MV_PRIMARY),
];
const CERT_SUB: &[Attr] = &[
    a("value", Ty::Binary, "The value of an X.509 certificate."),
    a("display", Ty::Str, "A human-readable name."),
    a("type", Ty::Str, MV_TYPE),
    a("primary", Ty::Bool, MV_PRIMARY),
];

const fn required(mut at: Attr) -> Attr {
    at.required = true;
    at
}
const fn write_only(mut at: Attr) -> Attr {
    at.mutability = Mutability::WriteOnly;
    at.returned = Returned::Never;
    at
}
const fn unique(mut at: Attr) -> Attr {
    at.unique_server = true;
    at
}

/// RFC 7643 §4.1 User attributes (id, externalId and meta are common attributes, handled apart).
pub const USER_ATTRS: &[Attr] = &[
    required(unique(a("userName", Ty::Str, "Unique identifier for the User, typically used to sign in."))),
    complex(a("name", Ty::Complex, "The components of the user's real name."), NAME_SUB),
    a("displayName", Ty::Str, "The name of the User, suitable for display."),
    a("nickName", Ty::Str, "The casual way to address the user."),
    refs(
        a(
            "profileUrl",
            Ty::Reference,
            "A fully qualified URL pointing to a page representing the User's online profile.",
        ),
        &["external"],
    ),
    a("title", Ty::Str, "The user's title."),
    a("userType", Ty::Str, "The relationship between the organization and the user."),
    a("preferredLanguage", Ty::Str, "The User's preferred written or spoken language."),
    a("locale", Ty::Str, "The User's default location."),
    a("timezone", Ty::Str, "The User's time zone in the 'Olson' format."),
    a("active", Ty::Bool, "The User's administrative status."),
    write_only(a("password", Ty::Str, "The User's cleartext password; accepted, never stored or returned.")),
    multi(a("emails", Ty::Complex, "Email addresses for the user."), EMAIL_SUB),
    multi(a("phoneNumbers", Ty::Complex, "Phone numbers for the User."), PHONE_SUB),
    multi(a("ims", Ty::Complex, "Instant messaging addresses for the User."), IMS_SUB),
    multi(a("photos", Ty::Complex, "URLs of photos of the User."), PHOTO_SUB),
    multi(a("addresses", Ty::Complex, "A physical mailing address for this User."), ADDRESS_SUB),
    ro(multi(a("groups", Ty::Complex, "A list of groups to which the user belongs."), USER_GROUPS_SUB)),
    multi(a("entitlements", Ty::Complex, "A list of entitlements for the User."), GENERIC_MV_SUB),
    multi(a("roles", Ty::Complex, "A list of roles for the User."), GENERIC_MV_SUB),
    multi(a("x509Certificates", Ty::Complex, "A list of certificates issued to the User."), CERT_SUB),
];

const MANAGER_SUB: &[Attr] = &[
    a("value", Ty::Str, "The id of the SCIM resource representing the User's manager."),
    refs(a("$ref", Ty::Reference, "The URI of the SCIM resource representing the User's manager."), &["User"]),
    ro(a("displayName", Ty::Str, "The displayName of the User's manager.")),
];

/// RFC 7643 §4.3 enterprise User extension.
pub const ENTERPRISE_ATTRS: &[Attr] = &[
    a("employeeNumber", Ty::Str, "Numeric or alphanumeric identifier assigned to a person."),
    a("costCenter", Ty::Str, "Identifies the name of a cost center."),
    a("organization", Ty::Str, "Identifies the name of an organization."),
    a("division", Ty::Str, "Identifies the name of a division."),
    a("department", Ty::Str, "Identifies the name of a department."),
    complex(a("manager", Ty::Complex, "The User's manager."), MANAGER_SUB),
];

const fn immutable(mut at: Attr) -> Attr {
    at.mutability = Mutability::Immutable;
    at
}

const MEMBER_SUB: &[Attr] = &[
    exact(immutable(a("value", Ty::Str, "Identifier of the member of this Group."))),
    immutable(refs(a("$ref", Ty::Reference, "The URI of the member resource."), &["User", "Group"])),
    ro(a("display", Ty::Str, "A human-readable name for the member.")),
    immutable(canon(a("type", Ty::Str, "The type of member."), &["User", "Group"])),
];

/// RFC 7643 §4.2 Group attributes.
pub const GROUP_ATTRS: &[Attr] = &[
    required(unique(a("displayName", Ty::Str, "A human-readable name for the Group."))),
    multi(a("members", Ty::Complex, "A list of members of the Group."), MEMBER_SUB),
];

/// Which resource a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn core_urn(self) -> &'static str {
        match self {
            Kind::User => USER_URN,
            Kind::Group => GROUP_URN,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    fn core_attrs(self) -> &'static [Attr] {
        match self {
            Kind::User => USER_ATTRS,
            Kind::Group => GROUP_ATTRS,
        }
    }
    fn extension(self, urn: &str) -> Option<(&'static str, &'static [Attr])> {
        match self {
            Kind::User if urn.eq_ignore_ascii_case(ENTERPRISE_URN) => Some((ENTERPRISE_URN, ENTERPRISE_ATTRS)),
            _ => None,
        }
    }

    /// The definition of a (possibly URN-qualified) top-level attribute, including the common
    /// attributes `id`, `externalId` and `meta`.
    pub fn attr(self, path: &AttrPath) -> Option<&'static Attr> {
        let attrs = match &path.urn {
            Some(urn) if !urn.eq_ignore_ascii_case(self.core_urn()) => self.extension(urn)?.1,
            _ => {
                if let Some(c) = COMMON_ATTRS.iter().find(|a| a.name.eq_ignore_ascii_case(&path.name)) {
                    return Some(c);
                }
                self.core_attrs()
            }
        };
        attrs.iter().find(|a| a.name.eq_ignore_ascii_case(&path.name))
    }

    /// The definition of the attribute a path names, down to its sub-attribute.
    pub fn leaf(self, path: &AttrPath) -> Option<&'static Attr> {
        let top = self.attr(path)?;
        match &path.sub {
            None => Some(top),
            Some(s) => top.sub.iter().find(|a| a.name.eq_ignore_ascii_case(s)),
        }
    }
}

const META_SUB: &[Attr] = &[
    ro(exact(a("resourceType", Ty::Str, "The name of the resource type of the resource."))),
    ro(a("created", Ty::DateTime, "The DateTime that the resource was added to the service provider.")),
    ro(a("lastModified", Ty::DateTime, "The most recent DateTime that the details of this resource were updated.")),
    ro(exact(refs(a("location", Ty::Reference, "The URI of the resource being returned."), &["uri"]))),
    ro(exact(a("version", Ty::Str, "The version of the resource being returned."))),
];

const fn always(mut at: Attr) -> Attr {
    at.returned = Returned::Always;
    at
}

/// Attributes common to every resource (RFC 7643 §3.1).
pub const COMMON_ATTRS: &[Attr] = &[
    always(ro(exact(a("id", Ty::Str, "A unique identifier for a SCIM resource as defined by the service provider.")))),
    exact(a(
        "externalId",
        Ty::Str,
        "A String that is an identifier for the resource as defined by the provisioning client.",
    )),
    ro(complex(a("meta", Ty::Complex, "A complex attribute containing resource metadata."), META_SUB)),
];

/// Schema knowledge for one resource kind, used by filters, PATCH and projection.
#[derive(Debug, Clone, Copy)]
pub struct ResourceSchema(pub Kind);

impl AttrInfo for ResourceSchema {
    fn case_exact(&self, path: &AttrPath) -> bool {
        self.0.leaf(path).map(|a| a.case_exact).unwrap_or(false)
    }
}

impl PatchSchema for ResourceSchema {
    fn is_multi_valued(&self, path: &AttrPath) -> bool {
        self.0.attr(path).map(|a| a.multi).unwrap_or(false)
    }
    fn is_read_only(&self, path: &AttrPath) -> bool {
        if path.name.eq_ignore_ascii_case("schemas") && path.urn.is_none() {
            return false;
        }
        self.0.leaf(path).map(|a| a.mutability == Mutability::ReadOnly).unwrap_or(false)
    }
    fn canonical_name(&self, path: &AttrPath) -> Option<String> {
        self.0.attr(path).map(|a| a.name.to_string())
    }
    fn core_urn(&self) -> &str {
        self.0.core_urn()
    }
    fn is_group(&self) -> bool {
        self.0 == Kind::Group
    }
}

fn ty_name(t: Ty) -> &'static str {
    match t {
        Ty::Str => "string",
        Ty::Bool => "boolean",
        Ty::Complex => "complex",
        Ty::Reference => "reference",
        Ty::DateTime => "dateTime",
        Ty::Binary => "binary",
    }
}

fn attr_json(at: &Attr) -> Value {
    let mut v = json!({
        "name": at.name,
        "type": ty_name(at.ty),
        "multiValued": at.multi,
        "description": at.description,
        "required": at.required,
        "mutability": match at.mutability {
            Mutability::ReadWrite => "readWrite",
            Mutability::ReadOnly => "readOnly",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        },
        "returned": match at.returned {
            Returned::Always => "always",
            Returned::Default => "default",
            Returned::Never => "never",
        },
    });
    let o = v.as_object_mut().expect("object literal");
    if matches!(at.ty, Ty::Str | Ty::Reference | Ty::Binary) {
        o.insert("caseExact".into(), json!(at.case_exact || at.ty == Ty::Binary));
        o.insert("uniqueness".into(), json!(if at.unique_server { "server" } else { "none" }));
    }
    if !at.canonical.is_empty() {
        o.insert("canonicalValues".into(), json!(at.canonical));
    }
    if at.ty == Ty::Reference {
        o.insert("referenceTypes".into(), json!(at.reference_types));
    }
    if !at.sub.is_empty() {
        o.insert("subAttributes".into(), Value::Array(at.sub.iter().map(attr_json).collect()));
    }
    v
}

fn schema_doc(id: &str, name: &str, description: &str, attrs: &[Attr], base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// The `/Schemas` documents.
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_doc(USER_URN, "User", "User Account", USER_ATTRS, base),
        schema_doc(ENTERPRISE_URN, "EnterpriseUser", "Enterprise User", ENTERPRISE_ATTRS, base),
        schema_doc(GROUP_URN, "Group", "Group", GROUP_ATTRS, base),
    ]
}

/// The `/ResourceTypes` documents.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": USER_URN,
            "schemaExtensions": [{"schema": ENTERPRISE_URN, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_URN,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// The page size used when a request gives no `count`, advertised as
/// `pagination.defaultPageSize`.
pub const DEFAULT_COUNT: i64 = 100;
/// The largest page a list returns, advertised as `filter.maxResults`.
pub const MAX_RESULTS: i64 = 1000;
/// How long a list cursor stays valid (seconds), advertised as `pagination.cursorTimeout`.
pub const CURSOR_TIMEOUT_SECS: i64 = 3600;
/// The most operations of one bulk request, advertised as `bulk.maxOperations`.
pub const MAX_BULK_OPERATIONS: usize = 1000;
/// The largest request body accepted, advertised as `bulk.maxPayloadSize`.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The `/ServiceProviderConfig` document: exactly what this server supports.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://moonborn.co/docs/scim",
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": MAX_BULK_OPERATIONS, "maxPayloadSize": MAX_PAYLOAD},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": DEFAULT_COUNT,
            "maxPageSize": MAX_RESULTS,
            "cursorTimeout": CURSOR_TIMEOUT_SECS,
        },
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a SCIM bearer token issued in Settings → SSO → SCIM.",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn normalize_value(at: &Attr, v: Value, ctx: &str) -> Result<Option<Value>, ScimError> {
    if v.is_null() {
        return Ok(None);
    }
    match at.ty {
        Ty::Bool => bool_of(&v)
            .map(|b| Some(Value::Bool(b)))
            .ok_or_else(|| ScimError::invalid_value(format!("{ctx} must be a boolean"))),
        Ty::Complex => {
            // A bare value for a complex attribute means its `value` sub-attribute: Entra ID sends
            // the enterprise manager as a plain id string.
            let v = match v {
                Value::String(_) if at.sub.iter().any(|s| s.name == "value") => json!({ "value": v }),
                other => other,
            };
            let Value::Object(obj) = v else {
                return Err(ScimError::invalid_value(format!("{ctx} must be an object")));
            };
            let out = normalize_object(at.sub, obj, ctx, false)?;
            Ok(if out.is_empty() { None } else { Some(Value::Object(out)) })
        }
        _ => match v {
            Value::String(_) => Ok(Some(v)),
            // Numbers and booleans sent for string attributes are kept as their text.
            Value::Number(n) => Ok(Some(Value::String(n.to_string()))),
            Value::Bool(b) => Ok(Some(Value::String(b.to_string()))),
            _ => Err(ScimError::invalid_value(format!("{ctx} must be a string"))),
        },
    }
}

fn normalize_attr(at: &Attr, v: Value, ctx: &str) -> Result<Option<Value>, ScimError> {
    if !at.multi {
        if let Value::Array(_) = v {
            return Err(ScimError::invalid_value(format!("{ctx} is single-valued")));
        }
        return normalize_value(at, v, ctx);
    }
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    let mut seen = super::distinct::Seen::default();
    for item in items {
        let item = if at.ty == Ty::Complex && !item.is_object() && !item.is_null() {
            // A bare value for a multi-valued complex attribute means its `value` sub-attribute.
            json!({ "value": item })
        } else {
            item
        };
        if let Some(n) = normalize_value(at, item, ctx)? {
            seen.push(&mut out, n);
        }
    }
    // RFC 7643 §2.4: at most one element may be primary; keep the first.
    let mut seen_primary = false;
    for el in out.iter_mut() {
        if let Some(o) = el.as_object_mut() {
            if o.get("primary") == Some(&Value::Bool(true)) {
                if seen_primary {
                    o.insert("primary".into(), Value::Bool(false));
                }
                seen_primary = true;
            }
        }
    }
    Ok(if out.is_empty() { None } else { Some(Value::Array(out)) })
}

/// Normalises the attributes of one object against `attrs`: canonical key spelling, types checked,
/// nulls dropped, read-only and unknown keys ignored (tolerant reader), write-only keys dropped.
fn normalize_object(
    attrs: &'static [Attr],
    obj: Map<String, Value>,
    ctx: &str,
    top: bool,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, v) in obj {
        let Some(at) = attrs.iter().find(|a| a.name.eq_ignore_ascii_case(&k)) else {
            continue;
        };
        if at.mutability == Mutability::WriteOnly || (top && at.mutability == Mutability::ReadOnly) {
            continue;
        }
        let path = if ctx.is_empty() { at.name.to_string() } else { format!("{ctx}.{}", at.name) };
        if let Some(n) = normalize_attr(at, v, &path)? {
            out.insert(at.name.to_string(), n);
        }
    }
    Ok(out)
}

/// Turns a request body (POST or PUT, or a document after PATCH) into the stored document of a
/// resource: `schemas`, `externalId`, the core attributes and known extensions, canonically spelt.
/// `id`, `meta`, `groups` and `password` are not part of the stored document; a Group's `members`
/// come back validated, and the caller moves them to the members table.
///
/// # Errors
/// `invalidSyntax` when the body is not an object or `schemas` is malformed, `invalidValue` when an
/// attribute has the wrong type or a required attribute is missing.
pub fn normalize(kind: Kind, body: Value) -> Result<Value, ScimError> {
    let doc = normalize_unchecked(kind, body)?;
    check_limits(kind, &doc, None)?;
    Ok(doc)
}

/// [`normalize`] for a document a PATCH made of `before` (the stored document): the limits of
/// [`super::validate`] apply to what the PATCH changed, so that a value stored before a limit
/// existed does not block an unrelated change (a deactivation).
///
/// # Errors
/// As [`normalize`].
pub fn normalize_change(kind: Kind, doc: Value, before: &Value) -> Result<Value, ScimError> {
    let doc = normalize_unchecked(kind, doc)?;
    check_limits(kind, &doc, Some(before))?;
    Ok(doc)
}

/// The limits on what a stored document may hold (see [`super::validate`]): sign-in identities
/// (`userName`, `emails.value`), the other indexed strings (`externalId`, a Group's
/// `displayName`) and the number of values of a User's multi-valued attributes. With `before`,
/// only values that differ from it are checked, and a multi-valued attribute only when it grew.
fn check_limits(kind: Kind, doc: &Value, before: Option<&Value>) -> Result<(), ScimError> {
    use super::validate::{check_identity, indexed_fits, MAX_INDEXED_CHARS, MAX_MULTI_VALUES};
    let changed = |k: &str| before.is_none_or(|b| b.get(k) != doc.get(k));
    let indexed = |k: &str| -> Result<(), ScimError> {
        match doc.get(k).and_then(Value::as_str) {
            Some(v) if changed(k) && !indexed_fits(v) => {
                Err(ScimError::invalid_value(format!("{k} is longer than {MAX_INDEXED_CHARS} characters")))
            }
            _ => Ok(()),
        }
    };
    indexed("externalId")?;
    if kind == Kind::Group {
        return indexed("displayName");
    }
    if let Some(v) = doc.get("userName").and_then(Value::as_str) {
        if changed("userName") {
            check_identity(v).map_err(|e| ScimError::invalid_value(format!("userName {e}")))?;
        }
    }
    let values = |d: Option<&Value>, k: &str| d.and_then(|d| d.get(k)).and_then(Value::as_array).map_or(0, Vec::len);
    for at in USER_ATTRS.iter().filter(|a| a.multi) {
        let n = values(Some(doc), at.name);
        if n > MAX_MULTI_VALUES && (before.is_none() || n > values(before, at.name)) {
            return Err(ScimError::too_many(format!(
                "{} holds {n} values; a user may have at most {MAX_MULTI_VALUES}",
                at.name
            )));
        }
    }
    if let Some(emails) = doc.get("emails").and_then(Value::as_array) {
        let email_values = |d: &Value| -> std::collections::HashSet<String> {
            d.get("emails")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|e| e.get("value")?.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let old = before.map(email_values).unwrap_or_default();
        for v in emails.iter().filter_map(|e| e.get("value")?.as_str()) {
            if !old.contains(v) {
                check_identity(v).map_err(|e| ScimError::invalid_value(format!("emails.value {e}")))?;
            }
        }
    }
    Ok(())
}

fn normalize_unchecked(kind: Kind, body: Value) -> Result<Value, ScimError> {
    let Value::Object(obj) = body else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    if let Some(s) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("schemas")).map(|(_, v)| v) {
        let ok = s.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(ScimError::invalid_syntax("schemas must be an array of schema URNs"));
        }
    }
    let mut out = Map::new();
    let mut ext_out: Option<Map<String, Value>> = None;
    let mut core_in = Map::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("externalId") {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    out.insert("externalId".into(), Value::String(s));
                }
                _ => return Err(ScimError::invalid_value("externalId must be a string")),
            }
        } else if k.contains(':') {
            if let Some((_, attrs)) = kind.extension(&k) {
                match v {
                    Value::Null => {}
                    Value::Object(o) => {
                        let n = normalize_object(attrs, o, "", true)?;
                        ext_out.get_or_insert_with(Map::new).extend(n);
                    }
                    _ => return Err(ScimError::invalid_value(format!("{k} must be an object"))),
                }
            } else if let Some(rest) =
                k.strip_prefix(kind.core_urn()).and_then(|r| r.strip_prefix(':')).filter(|r| !r.is_empty())
            {
                // A core attribute written with its schema URN.
                core_in.insert(rest.to_string(), v);
            }
            // Attributes of extensions we do not know are ignored.
        } else if !k.eq_ignore_ascii_case("schemas") {
            core_in.insert(k, v);
        }
    }
    let core = normalize_object(kind.core_attrs(), core_in, "", true)?;
    let mut schemas = vec![Value::String(kind.core_urn().to_string())];
    let mut doc = Map::new();
    doc.insert("schemas".into(), Value::Null);
    doc.extend(out);
    doc.extend(core);
    if let Some(ext) = ext_out.filter(|e| !e.is_empty()) {
        schemas.push(Value::String(ENTERPRISE_URN.to_string()));
        doc.insert(ENTERPRISE_URN.to_string(), Value::Object(ext));
    }
    doc.insert("schemas".into(), Value::Array(schemas));
    let required = match kind {
        Kind::User => "userName",
        Kind::Group => "displayName",
    };
    match doc.get(required) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Err(ScimError::invalid_value(format!("{required} is required"))),
    }
    Ok(Value::Object(doc))
}
