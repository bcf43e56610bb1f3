//! The SCIM filter and attribute-path grammar (RFC 7644 §3.4.2.2, §3.5.2): parsing and evaluation
//! against JSON resources. No I/O.

use serde_json::Value;

use super::error::ScimError;

/// An attribute path: optional schema URN, attribute name, optional sub-attribute.
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value` →
/// `urn: Some("urn:…:enterprise:2.0:User")`, `name: "manager"`, `sub: Some("value")`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attrPath op compValue`; value is a JSON string, number, bool or null.
    Compare { path: AttrPath, op: CompareOp, value: Value },
    /// `attrPath pr`
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attrPath[valFilter]`: `path` names the multi-valued attribute (sub is None); paths inside
    /// `filter` are relative to one element (their `name` is the sub-attribute, e.g. `type`).
    ValuePath { path: AttrPath, filter: Box<Filter> },
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath`, or `attrPath[valFilter]` optionally followed by
/// `.subAttr`. With a filter, `attr.sub` is the sub-attribute after the brackets.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub value_filter: Option<Filter>,
}

/// Tells the evaluator which attributes compare case-exactly (RFC 7643 `caseExact`).
pub trait AttrInfo {
    /// True when string comparisons on this attribute are case-sensitive.
    fn case_exact(&self, path: &AttrPath) -> bool;
}

// TEMPORARY STUBS (replaced by the real implementation)
pub fn parse_filter(_s: &str) -> Result<Filter, ScimError> {
    Err(ScimError::invalid_filter("todo"))
}
pub fn parse_patch_path(_s: &str) -> Result<PatchPath, ScimError> {
    Err(ScimError::invalid_path("todo"))
}
pub fn matches(_f: &Filter, _r: &Value, _i: &dyn AttrInfo) -> bool {
    false
}
