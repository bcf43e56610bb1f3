//! TEMPORARY STUB
use super::error::ScimError;
use super::filter::{AttrInfo, AttrPath, Filter, PatchPath};
use serde_json::Value;
pub enum OpKind {
    Add,
    Remove,
    Replace,
}
pub struct PatchOp {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}
pub enum MemberOp {
    Add(Vec<Value>),
    Remove(Vec<String>),
    RemoveWhere(Filter),
    RemoveAll,
    ReplaceAll(Vec<Value>),
}
pub trait PatchSchema {
    fn is_multi_valued(&self, path: &AttrPath) -> bool;
    fn is_read_only(&self, path: &AttrPath) -> bool;
    fn canonical_name(&self, path: &AttrPath) -> Option<String>;
    fn core_urn(&self) -> &str;
    fn is_group(&self) -> bool;
}
pub fn parse_patch(_b: &Value) -> Result<Vec<PatchOp>, ScimError> {
    Err(ScimError::invalid_syntax("todo"))
}
pub fn apply_patch(
    _d: &mut Value,
    _o: &[PatchOp],
    _s: &dyn PatchSchema,
    _i: &dyn AttrInfo,
) -> Result<Vec<MemberOp>, ScimError> {
    Ok(vec![])
}
