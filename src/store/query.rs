//! Filters translated to SQL. Indexed attributes (userName, externalId, id, emails.value, Group
//! displayName, members.value, groups.value) become bound, indexed conditions; whatever cannot be
//! translated exactly is evaluated in memory over the candidates the SQL part narrows down.

use crate::scim::filter::{AttrPath, CompareOp, Filter};
use crate::scim::schema::Kind;

/// A bound SQL argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    Int(i64),
}

/// Column a list is ordered by (`seq` is creation order and the tiebreaker that keeps pages stable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Seq,
    Column(&'static str),
}

/// A list query: an optional SQL condition (placeholders `$2…`, `$1` is the tenant), the part of
/// the filter SQL does not express (the caller evaluates it in memory over the rows SQL selects),
/// and the order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub cond: Option<String>,
    pub args: Vec<Arg>,
    pub residual: Option<Filter>,
    pub sort: SortKey,
    pub descending: bool,
    /// The whole filter is one `eq` on a key column (userName, id, externalId, group
    /// displayName): an index lookup of a handful of rows, cheap enough for the point-read path.
    pub point: bool,
}

impl ListQuery {
    /// Builds the query for `filter` on a resource kind (no filter: everything, exactly).
    pub fn new(kind: Kind, filter: Option<&Filter>) -> ListQuery {
        let mut b = Builder { kind, args: Vec::new(), key: false };
        let (cond, residual) = match filter {
            None => (None, None),
            Some(f) => match b.translate(f) {
                Some((sql, residual)) => (Some(sql), residual),
                None => (None, Some(f.clone())),
            },
        };
        let point = b.key && cond.is_some() && residual.is_none() && matches!(filter, Some(Filter::Compare { .. }));
        let args = if cond.is_some() { b.args } else { Vec::new() };
        ListQuery { cond, args, residual, sort: SortKey::Seq, descending: false, point }
    }

    /// Only the rows created after `seq` (creation order is `seq` order): a cursor's next page.
    pub fn after_seq(&mut self, seq: i64) {
        let n = self.args.len() + 2;
        self.cond = Some(match self.cond.take() {
            Some(c) => format!("({c}) AND seq > ${n}"),
            None => format!("seq > ${n}"),
        });
        self.args.push(Arg::Int(seq));
        self.point = false;
    }

    /// True when SQL expresses the whole filter.
    pub fn is_exact(&self) -> bool {
        self.residual.is_none()
    }

    /// The sort column for a `sortBy` path, when it is a column; `None` means sort in memory.
    pub fn sort_column(kind: Kind, path: &AttrPath) -> Option<SortKey> {
        let name = path.name.to_ascii_lowercase();
        let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
        if path.urn.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case(kind.core_urn())) {
            return None;
        }
        Some(match (kind, name.as_str(), sub.as_deref()) {
            (_, "id", None) => SortKey::Column("id"),
            (_, "externalid", None) => SortKey::Column("external_id"),
            (_, "meta", Some("created")) => SortKey::Seq,
            (_, "meta", Some("lastmodified")) => SortKey::Column("updated_at"),
            (Kind::User, "username", None) => SortKey::Column("user_name_lc"),
            (Kind::User, "displayname", None) => SortKey::Column("display_name"),
            (Kind::Group, "displayname", None) => SortKey::Column("display_name_lc"),
            _ => return None,
        })
    }

    /// The SQL `WHERE` clause (tenant plus condition).
    pub fn where_sql(&self) -> String {
        match &self.cond {
            Some(c) => format!("tenant_id = $1 AND ({c})"),
            None => "tenant_id = $1".to_string(),
        }
    }

    /// The SQL `ORDER BY` clause.
    pub fn order_sql(&self) -> String {
        let dir = if self.descending { "DESC" } else { "ASC" };
        match self.sort {
            SortKey::Seq => format!("seq {dir}"),
            SortKey::Column(c) => format!("{c} {dir}, seq {dir}"),
        }
    }
}

struct Builder {
    kind: Kind,
    args: Vec<Arg>,
    /// Set when a comparison on a key column was translated.
    key: bool,
}

fn is_core(kind: Kind, p: &AttrPath) -> bool {
    p.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kind.core_urn()))
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Builder {
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len() + 1)
    }

    /// Translates a filter: `Some((sql, residual))` where `residual` is what SQL does not express
    /// (`None`: the SQL is the whole filter). `None` when nothing can be expressed.
    fn translate(&mut self, f: &Filter) -> Option<(String, Option<Filter>)> {
        match f {
            // A chain of `and`s or `or`s (the parser's left-deep tree: 1,000 comparisons are a
            // tree 1,000 deep, past SQLite's expression depth limit) becomes a balanced one.
            Filter::And(..) => {
                let mut sqls = Vec::new();
                let mut residual = None;
                for part in chain(f, false) {
                    match self.translate(part) {
                        Some((sql, r)) => {
                            sqls.push(sql);
                            residual = and(residual, r);
                        }
                        None => residual = and(residual, Some(part.clone())),
                    }
                }
                (!sqls.is_empty()).then(|| (balanced(&sqls, "AND"), residual))
            }
            Filter::Or(..) => {
                let mark = self.args.len();
                let mut sqls = Vec::new();
                let mut exact = true;
                for part in chain(f, true) {
                    let Some((sql, r)) = self.translate(part) else {
                        // An untranslatable side of an `or` cannot narrow anything.
                        self.args.truncate(mark);
                        return None;
                    };
                    exact &= r.is_none();
                    sqls.push(sql);
                }
                Some((balanced(&sqls, "OR"), (!exact).then(|| f.clone())))
            }
            Filter::Compare { path, op: CompareOp::Eq, value } => {
                let s = value.as_str()?;
                self.compare_eq(path, s).map(|sql| (sql, None))
            }
            Filter::Present(path) if is_core(self.kind, path) && path.sub.is_none() && eq(&path.name, "externalId") => {
                Some(("external_id IS NOT NULL AND external_id <> ''".into(), None))
            }
            Filter::ValuePath { path, filter } if is_core(self.kind, path) && path.sub.is_none() => {
                // Narrow by the indexed `value eq` inside the brackets; the rest is evaluated after.
                let (v, whole) = value_eq_in(filter)?;
                let inner = AttrPath { urn: None, name: path.name.clone(), sub: Some("value".into()) };
                let sql = self.compare_eq(&inner, &v)?;
                Some((sql, (!whole).then(|| f.clone())))
            }
            _ => None,
        }
    }

    fn compare_eq(&mut self, path: &AttrPath, v: &str) -> Option<String> {
        if !is_core(self.kind, path) {
            // Extension attributes (enterprise) are not indexed.
            return None;
        }
        let name = path.name.as_str();
        let sub = path.sub.as_deref();
        let value_sub = sub.is_none() || sub.is_some_and(|s| eq(s, "value"));
        match self.kind {
            Kind::User if eq(name, "userName") && sub.is_none() => {
                let p = self.arg(Arg::Str(crate::scim::validate::identity_key(v)));
                self.key = true;
                Some(format!("user_name_lc = {p}"))
            }
            Kind::User if eq(name, "emails") && value_sub => {
                let p = self.arg(Arg::Str(crate::scim::validate::identity_key(v)));
                Some(format!("id IN (SELECT user_id FROM scim_user_emails WHERE tenant_id = $1 AND value_lc = {p})"))
            }
            Kind::User if eq(name, "groups") && value_sub => {
                let p = self.arg(Arg::Str(v.to_string()));
                Some(format!(
                    "id IN (SELECT member_id FROM scim_group_members WHERE tenant_id = $1 AND group_id = {p})"
                ))
            }
            Kind::Group if eq(name, "displayName") && sub.is_none() => {
                let p = self.arg(Arg::Str(v.to_lowercase()));
                self.key = true;
                Some(format!("display_name_lc = {p}"))
            }
            Kind::Group if eq(name, "members") && value_sub => {
                let p = self.arg(Arg::Str(v.to_string()));
                Some(format!(
                    "id IN (SELECT group_id FROM scim_group_members WHERE tenant_id = $1 AND member_id = {p})"
                ))
            }
            _ if eq(name, "externalId") && sub.is_none() => {
                let p = self.arg(Arg::Str(v.to_string()));
                self.key = true;
                Some(format!("external_id = {p}"))
            }
            _ if eq(name, "id") && sub.is_none() => {
                let p = self.arg(Arg::Str(v.to_string()));
                self.key = true;
                Some(format!("id = {p}"))
            }
            _ => None,
        }
    }
}

/// The operands of a chain of `or`s (`or`) or of `and`s, in order, however the chain nests.
fn chain(f: &Filter, or: bool) -> Vec<&Filter> {
    let mut out = Vec::new();
    let mut stack = vec![f];
    while let Some(g) = stack.pop() {
        match g {
            Filter::Or(a, b) if or => stack.extend([&**b, &**a]),
            Filter::And(a, b) if !or => stack.extend([&**b, &**a]),
            _ => out.push(g),
        }
    }
    out
}

/// SQL conditions joined by `op` as a balanced tree: 1,000 of them nest 10 deep.
fn balanced(parts: &[String], op: &str) -> String {
    match parts {
        [one] => one.clone(),
        _ => {
            let (l, r) = parts.split_at(parts.len() / 2);
            format!("({}) {op} ({})", balanced(l, op), balanced(r, op))
        }
    }
}

fn and(a: Option<Filter>, b: Option<Filter>) -> Option<Filter> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Filter::And(Box::new(a), Box::new(b))),
        (a, b) => a.or(b),
    }
}

/// The `value eq "…"` literal inside a value-path filter (alone, or one side of an `and`), and
/// whether that comparison is the whole inner filter.
fn value_eq_in(f: &Filter) -> Option<(String, bool)> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value }
            if path.urn.is_none() && path.sub.is_none() && eq(&path.name, "value") =>
        {
            Some((value.as_str()?.to_string(), true))
        }
        Filter::And(a, b) => value_eq_in(a).or_else(|| value_eq_in(b)).map(|(v, _)| (v, false)),
        _ => None,
    }
}

/// A bound argument.
#[derive(Debug, Clone)]
pub enum Val {
    Int(i64),
    Text(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(Some(v.to_string()))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(Some(v))
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Val {
        Val::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Val {
        Val::Text(v)
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Val {
        Val::Text(v.clone())
    }
}
