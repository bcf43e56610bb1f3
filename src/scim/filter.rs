//! The SCIM filter and attribute-path grammar (RFC 7644 §3.4.2.2, §3.5.2): parsing and evaluation
//! against JSON resources. No I/O.
//!
//! * [`parse_filter`] parses a `filter=` expression into a [`Filter`] tree.
//! * [`parse_patch_path`] parses a PATCH operation `path` into a [`PatchPath`].
//! * [`parse_attr_path`] parses a bare attribute path (e.g. `sortBy`).
//! * [`matches()`] evaluates a filter against a resource; [`matches_value`] evaluates a value-path
//!   filter (such as [`PatchPath::value_filter`]) against one element of a multi-valued attribute.
//! * `Display` on [`Filter`], [`AttrPath`] and [`PatchPath`] renders canonical syntax that parses
//!   back to the same value.
//!
//! Parsing never panics and never recurses without bound: nesting (parentheses, `not`, brackets)
//! is capped at [`MAX_FILTER_DEPTH`] and the number of comparisons at [`MAX_FILTER_TERMS`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use super::error::ScimError;

/// An attribute path: optional schema URN, attribute name, optional sub-attribute.
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value` →
/// `urn: Some("urn:…:enterprise:2.0:User")`, `name: "manager"`, `sub: Some("value")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `attrPath pr`
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attrPath[valFilter]`: `path` names the multi-valued attribute (sub is None); paths inside
    /// `filter` are relative to one element (their `name` is the sub-attribute, e.g. `type`).
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
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

/// Maximum nesting of parentheses, `not (…)` and value-path brackets in one filter.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Maximum number of comparisons (`attrPath op value` / `attrPath pr`) in one filter. Keeps the
/// (left-leaning) `and`/`or` trees shallow enough for recursive evaluation, cloning and dropping.
pub const MAX_FILTER_TERMS: usize = 1000;

const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const CORE_GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

// ---------------------------------------------------------------------------------------------
// Small public helpers on the interface types
// ---------------------------------------------------------------------------------------------

impl AttrPath {
    /// A plain attribute path `name` (no URN, no sub-attribute).
    pub fn new(name: impl Into<String>) -> Self {
        AttrPath { urn: None, name: name.into(), sub: None }
    }

    /// This path with sub-attribute `sub` (`name.sub`).
    pub fn with_sub(mut self, sub: impl Into<String>) -> Self {
        self.sub = Some(sub.into());
        self
    }

    /// This path qualified by schema URN `urn` (`urn:name`).
    pub fn with_urn(mut self, urn: impl Into<String>) -> Self {
        self.urn = Some(urn.into());
        self
    }
}

impl CompareOp {
    /// The operator keyword in canonical (lower-case) form, e.g. `"eq"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// Parses an operator keyword, case-insensitively (`"EQ"` → `Eq`); `pr` is not a `CompareOp`.
    pub fn from_keyword(word: &str) -> Option<CompareOp> {
        const OPS: [CompareOp; 9] = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ];
        OPS.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `urn:name` (or `name`).
fn write_urn_name(f: &mut fmt::Formatter<'_>, path: &AttrPath) -> fmt::Result {
    if let Some(urn) = &path.urn {
        write!(f, "{urn}:")?;
    }
    f.write_str(&path.name)
}

impl fmt::Display for AttrPath {
    /// `urn:name.sub`, the syntax [`parse_attr_path`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_urn_name(f, self)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Filter {
    /// Canonical filter syntax: lower-case keywords, JSON literals, single spaces, and only the
    /// parentheses needed to reproduce the tree (`and`/`or` chains are left-associative), so
    /// `parse_filter(&f.to_string()) == Ok(f)` for every filter the parser produces. Entra's
    /// `emails[type eq "work"].value eq "x"` renders as `emails[type eq "work" and value eq "x"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) => {
                write_operand(f, a, matches!(**a, Filter::Or(..)))?;
                f.write_str(" and ")?;
                write_operand(f, b, matches!(**b, Filter::Or(..) | Filter::And(..)))
            }
            Filter::Or(a, b) => {
                write_operand(f, a, false)?;
                f.write_str(" or ")?;
                write_operand(f, b, matches!(**b, Filter::Or(..)))
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Filter, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

impl fmt::Display for PatchPath {
    /// `attrPath`, or `urn:name[valFilter].sub`, the syntax [`parse_patch_path`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value_filter {
            None => write!(f, "{}", self.attr),
            Some(filter) => {
                write_urn_name(f, &self.attr)?;
                write!(f, "[{filter}]")?;
                if let Some(sub) = &self.attr.sub {
                    write!(f, ".{sub}")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public parsing entry points
// ---------------------------------------------------------------------------------------------

/// Parses a SCIM filter expression (RFC 7644 §3.4.2.2).
///
/// Supports `eq ne co sw ew gt ge lt le pr`, `and` (binding tighter than `or`), `or`,
/// `not (…)`, parentheses, value paths `emails[type eq "work" and value co "@acme"]`, dotted
/// sub-attributes, and schema-URN-qualified paths (`urn:…:enterprise:2.0:User:manager.value`; the
/// URN is split off at the last `:` and kept as written). Keywords and the literals
/// `true`/`false`/`null` are case-insensitive; strings are JSON strings (all JSON escapes);
/// numbers are JSON numbers. Whitespace between tokens is free-form.
///
/// Beyond the RFC grammar, the form Microsoft Entra ID sends, `emails[type eq "work"].value eq "x"`,
/// is accepted and represented as `emails[type eq "work" and value eq "x"]` (likewise with `pr`).
///
/// Paths inside brackets must be plain sub-attribute names (no URN, no dots, no nested brackets).
/// `gt ge lt le` need a string or number, `co sw ew` a string.
///
/// # Errors
/// Any malformed input yields a 400 `invalidFilter` [`ScimError`]: empty input, unbalanced
/// parentheses or brackets, unknown operators, missing or unquoted values, `pr` with a value,
/// bad string escapes, trailing tokens, nesting beyond [`MAX_FILTER_DEPTH`], more than
/// [`MAX_FILTER_TERMS`] comparisons.
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    parse_filter_inner(input).map_err(|m| ScimError::invalid_filter(format!("Invalid filter: {m}")))
}

/// Parses a PATCH operation `path` (RFC 7644 §3.5.2): `attrPath` or `valuePath [subAttr]`.
///
/// Examples: `active`, `name.givenName`, `members[value eq "2819c223"]`,
/// `emails[type eq "work"].value` (→ `attr` = `emails.value`, `value_filter` = `type eq "work"`),
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
/// The value filter uses the filter grammar with paths relative to one element.
///
/// # Errors
/// A 400 `invalidPath` [`ScimError`] for anything malformed — including a malformed filter
/// inside the brackets, a bare schema URN without an attribute name, `a.b[…]`, `a.b.c`, and
/// trailing garbage.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, ScimError> {
    parse_patch_path_inner(input).map_err(|m| ScimError::invalid_path(format!("Invalid path: {m}")))
}

/// Parses a bare attribute path (`userName`, `name.familyName`, `urn:…:User:manager.value`), as
/// used by `sortBy`, `attributes` and `excludedAttributes`. Surrounding whitespace is ignored.
///
/// # Errors
/// A 400 `invalidPath` [`ScimError`] when the input is not a valid attribute path.
pub fn parse_attr_path(input: &str) -> Result<AttrPath, ScimError> {
    let trimmed = input.trim();
    let res = if trimmed.is_empty() {
        Err("empty attribute path".to_string())
    } else if trimmed.contains(|c: char| c.is_whitespace() || "()[]\"".contains(c)) {
        Err(format!("`{trimmed}` is not an attribute path"))
    } else {
        attr_path_from_word(trimmed)
    };
    res.map_err(|m| ScimError::invalid_path(format!("Invalid path: {m}")))
}

fn parse_filter_inner(input: &str) -> Result<Filter, String> {
    let toks = tokenize(input)?;
    if toks.is_empty() {
        return Err("empty filter".into());
    }
    let mut p = Parser::new(&toks);
    let filter = p.parse_or(false)?;
    match p.peek() {
        None => Ok(filter),
        Some(t) => Err(match t.tok {
            Tok::RParen => format!("unbalanced `)` at position {}", t.pos),
            Tok::RBrack => format!("unbalanced `]` at position {}", t.pos),
            _ => format!("unexpected {} at position {}", t.describe(), t.pos),
        }),
    }
}

fn parse_patch_path_inner(input: &str) -> Result<PatchPath, String> {
    let toks = tokenize(input)?;
    let mut p = Parser::new(&toks);
    let mut attr = match p.next() {
        None => return Err("empty path".into()),
        Some(Token { tok: Tok::Word(w), pos }) => {
            attr_path_from_word(w).map_err(|m| format!("{m} at position {pos}"))?
        }
        Some(t) => return Err(format!("expected an attribute path, found {}", t.describe())),
    };
    let mut value_filter = None;
    if let Some(Token { tok: Tok::LBrack, pos }) = p.peek() {
        let open = *pos;
        if attr.sub.is_some() {
            return Err(format!("a value filter must follow an attribute name, not `{attr}`"));
        }
        p.i += 1;
        value_filter = Some(p.bracket_body(open)?);
        if let Some(Token { tok: Tok::Word(w), pos }) = p.peek() {
            if let Some(sub) = w.strip_prefix('.') {
                check_name(sub).map_err(|m| format!("{m} at position {pos}"))?;
                attr.sub = Some(sub.to_string());
                p.i += 1;
            }
        }
    }
    match p.peek() {
        None => Ok(PatchPath { attr, value_filter }),
        Some(t) => Err(format!("unexpected {} at position {}", t.describe(), t.pos)),
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBrack,
    RBrack,
    /// A decoded JSON string literal.
    Str(String),
    /// A maximal run of characters other than whitespace, `()[]` and `"`: an attribute path, a
    /// keyword, a literal, or (after `]`) `.subAttr`.
    Word(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offset in the input, for error messages.
    pos: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.tok {
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBrack => "`[`".into(),
            Tok::RBrack => "`]`".into(),
            Tok::Str(s) => format!("string {}", Value::String(s.clone())),
            Tok::Word(w) => format!("`{w}`"),
        }
    }
}

fn is_delim(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"')
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let bytes = input.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(c) = input.get(i..).and_then(|rest| rest.chars().next()) {
        let pos = i;
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBrack),
            ']' => Some(Tok::RBrack),
            _ => None,
        };
        if let Some(tok) = single {
            toks.push(Token { tok, pos });
            i += 1;
        } else if c.is_whitespace() {
            i += c.len_utf8();
        } else if c == '"' {
            // Find the closing quote (`"` and `\` are ASCII, so byte scanning is UTF-8 safe).
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("unterminated string starting at position {pos}")),
                    Some(b'"') => break,
                    Some(b'\\') => i += 2,
                    Some(_) => i += 1,
                }
            }
            i += 1;
            let literal = input.get(pos..i).ok_or_else(|| format!("bad string at position {pos}"))?;
            let s: String =
                serde_json::from_str(literal).map_err(|e| format!("invalid string literal at position {pos}: {e}"))?;
            toks.push(Token { tok: Tok::Str(s), pos });
        } else {
            let rest = &input[i..];
            let len = rest.find(is_delim).unwrap_or(rest.len());
            toks.push(Token { tok: Tok::Word(rest[..len].to_string()), pos });
            i += len;
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------------------------------------
// Attribute paths
// ---------------------------------------------------------------------------------------------

/// `ATTRNAME = ALPHA *(nameChar)`, `nameChar = "-" / "_" / DIGIT / ALPHA`, or `$ref`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.eq_ignore_ascii_case("$ref")
        || (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if ok {
        Ok(())
    } else if name.is_empty() {
        Err("missing attribute name".into())
    } else {
        Err(format!("invalid attribute name `{name}`"))
    }
}

/// A schema URN: `urn:` NID `:` NSS, segments non-empty and made of printable ASCII.
fn check_urn(urn: &str) -> Result<(), String> {
    let segments: Vec<&str> = urn.split(':').collect();
    let ok = segments.len() >= 3
        && segments[0].eq_ignore_ascii_case("urn")
        && segments.iter().all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid schema URN `{urn}`"))
    }
}

/// True when `urn` is an IETF SCIM URN whose last segment is a version (`…:core:2.0`): then the
/// word was a bare schema URN (`…:core:2.0:User`) rather than `schemaUrn:attribute`.
fn ends_with_scim_version(urn: &str) -> bool {
    let prefix = "urn:ietf:params:scim:";
    let is_scim = urn.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let last = urn.rsplit(':').next().unwrap_or("");
    is_scim && last.starts_with(|c: char| c.is_ascii_digit()) && last.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parses one word as `[URN ":"] ATTRNAME ["." subAttr]`.
fn attr_path_from_word(word: &str) -> Result<AttrPath, String> {
    let (urn, rest) = match word.rfind(':') {
        Some(idx) => (Some(&word[..idx]), &word[idx + 1..]),
        None => (None, word),
    };
    if let Some(urn) = urn {
        check_urn(urn)?;
        if ends_with_scim_version(urn) {
            return Err(format!("`{word}` is a schema URN, not an attribute path"));
        }
        if rest.is_empty() {
            return Err(format!("missing attribute name after schema URN `{urn}`"));
        }
    }
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    check_name(name)?;
    if let Some(sub) = sub {
        check_name(sub).map_err(|m| format!("{m} in `{word}`"))?;
    }
    Ok(AttrPath { urn: urn.map(str::to_string), name: name.to_string(), sub: sub.map(str::to_string) })
}

// ---------------------------------------------------------------------------------------------
// Parser (recursive descent over tokens; recursion only through parentheses/`not`/brackets)
// ---------------------------------------------------------------------------------------------

struct Parser<'t> {
    toks: &'t [Token],
    i: usize,
    depth: usize,
    terms: usize,
}

impl<'t> Parser<'t> {
    fn new(toks: &'t [Token]) -> Self {
        Parser { toks, i: 0, depth: 0, terms: 0 }
    }

    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.i)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'t Token> {
        self.toks.get(self.i + ahead)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.i);
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            Err(format!("nested more than {MAX_FILTER_DEPTH} levels deep"))
        } else {
            Ok(())
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(t) => format!("{} at position {}", t.describe(), t.pos),
        }
    }

    /// `orExpr := andExpr ("or" andExpr)*` — left-associative. `inner`: inside `[…]`.
    fn parse_or(&mut self, inner: bool) -> Result<Filter, String> {
        let mut left = self.parse_and(inner)?;
        while self.peek_keyword("or") {
            self.i += 1;
            let right = self.parse_and(inner)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `andExpr := unary ("and" unary)*` — left-associative.
    fn parse_and(&mut self, inner: bool) -> Result<Filter, String> {
        let mut left = self.parse_unary(inner)?;
        while self.peek_keyword("and") {
            self.i += 1;
            let right = self.parse_unary(inner)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `unary := "(" orExpr ")" | "not" "(" orExpr ")" | attrExpr`.
    fn parse_unary(&mut self, inner: bool) -> Result<Filter, String> {
        let Some(tok) = self.peek() else {
            return Err("expected an attribute path, `(` or `not (`, found end of input".into());
        };
        match &tok.tok {
            Tok::LParen => {
                self.i += 1;
                self.parenthesized(inner, tok.pos)
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("not") => {
                match self.peek_at(1).map(|t| &t.tok) {
                    Some(Tok::LParen) => {
                        self.i += 2;
                        let f = self.parenthesized(inner, tok.pos)?;
                        Ok(Filter::Not(Box::new(f)))
                    }
                    // `not` used as an attribute name: `not pr`, `not eq 1`, `not[…]`.
                    Some(Tok::Word(op)) if op.eq_ignore_ascii_case("pr") || CompareOp::from_keyword(op).is_some() => {
                        self.parse_attr_expr(inner)
                    }
                    Some(Tok::LBrack) => self.parse_attr_expr(inner),
                    _ => Err(format!("`not` must be followed by a parenthesized filter at position {}", tok.pos)),
                }
            }
            Tok::Word(_) => self.parse_attr_expr(inner),
            _ => Err(format!("expected an attribute path, `(` or `not (`, found {}", self.found())),
        }
    }

    /// After an opening `(` at `open`: `orExpr ")"`.
    fn parenthesized(&mut self, inner: bool, open: usize) -> Result<Filter, String> {
        self.enter()?;
        let f = self.parse_or(inner)?;
        match self.next() {
            Some(Token { tok: Tok::RParen, .. }) => {
                self.depth -= 1;
                Ok(f)
            }
            None => Err(format!("unbalanced `(` at position {open}")),
            Some(t) => {
                Err(format!("expected `)` (opened at position {open}), found {} at position {}", t.describe(), t.pos))
            }
        }
    }

    /// After an opening `[` at `open`: `valFilter "]"`.
    fn bracket_body(&mut self, open: usize) -> Result<Filter, String> {
        self.enter()?;
        if let Some(Token { tok: Tok::RBrack, .. }) = self.peek() {
            return Err(format!("empty value filter at position {open}"));
        }
        let f = self.parse_or(true)?;
        match self.next() {
            Some(Token { tok: Tok::RBrack, .. }) => {
                self.depth -= 1;
                Ok(f)
            }
            None => Err(format!("unbalanced `[` at position {open}")),
            Some(t) => {
                Err(format!("expected `]` (opened at position {open}), found {} at position {}", t.describe(), t.pos))
            }
        }
    }

    /// `attrExpr := attrPath "pr" | attrPath compareOp compValue | attrPath "[" valFilter "]"`
    /// (plus Entra's `attrPath "[" valFilter "]" "." subAttr (compareOp compValue | "pr")`).
    fn parse_attr_expr(&mut self, inner: bool) -> Result<Filter, String> {
        let Some(Token { tok: Tok::Word(word), pos }) = self.next() else {
            return Err(format!("expected an attribute path, found {}", self.found()));
        };
        let path = attr_path_from_word(word).map_err(|m| format!("{m} at position {pos}"))?;
        if inner && (path.urn.is_some() || path.sub.is_some()) {
            return Err(format!(
                "`{word}` at position {pos}: paths inside a value filter must be plain sub-attribute names"
            ));
        }
        let Some(Token { tok: Tok::LBrack, pos: open }) = self.peek() else {
            return self.parse_op_tail(path);
        };
        if inner {
            return Err(format!("nested value filter at position {open}"));
        }
        if path.sub.is_some() {
            return Err(format!("a value filter must follow an attribute name, not `{word}` (position {open})"));
        }
        self.i += 1;
        let filter = self.bracket_body(*open)?;
        self.terms += 1;
        // Entra ID: `emails[type eq "work"].value eq "x"` ≡ `emails[type eq "work" and value eq "x"]`.
        if let Some(Token { tok: Tok::Word(w), pos }) = self.peek() {
            if let Some(sub) = w.strip_prefix('.') {
                check_name(sub).map_err(|m| format!("{m} at position {pos}"))?;
                self.i += 1;
                let tail = self.parse_op_tail(AttrPath::new(sub))?;
                let filter = Filter::And(Box::new(filter), Box::new(tail));
                return Ok(Filter::ValuePath { path, filter: Box::new(filter) });
            }
        }
        Ok(Filter::ValuePath { path, filter: Box::new(filter) })
    }

    /// `"pr" | compareOp compValue` after `path`.
    fn parse_op_tail(&mut self, path: AttrPath) -> Result<Filter, String> {
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(format!("more than {MAX_FILTER_TERMS} comparisons"));
        }
        let op = match self.next() {
            Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case("pr") => {
                return Ok(Filter::Present(path));
            }
            Some(Token { tok: Tok::Word(w), pos }) => CompareOp::from_keyword(w)
                .ok_or_else(|| format!("unknown operator `{w}` after `{path}` at position {pos}"))?,
            Some(t) => {
                return Err(format!(
                    "expected an operator after `{path}`, found {} at position {}",
                    t.describe(),
                    t.pos
                ))
            }
            None => return Err(format!("expected an operator after `{path}`, found end of input")),
        };
        let value = match self.next() {
            Some(Token { tok: Tok::Str(s), .. }) => Value::String(s.clone()),
            Some(Token { tok: Tok::Word(w), pos }) => literal(w)
                .ok_or_else(|| format!("invalid value `{w}` at position {pos} (strings must be double-quoted)"))?,
            Some(t) => return Err(format!("missing value after `{path} {op}`, found {}", t.describe())),
            None => return Err(format!("missing value after `{path} {op}`")),
        };
        let ok = match op {
            CompareOp::Eq | CompareOp::Ne => true,
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => value.is_string(),
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => value.is_string() || value.is_number(),
        };
        if !ok {
            return Err(format!("`{op}` cannot compare with {value}"));
        }
        Ok(Filter::Compare { path, op, value })
    }
}

/// `true` / `false` / `null` (case-insensitive) or a JSON number.
fn literal(word: &str) -> Option<Value> {
    if word.eq_ignore_ascii_case("true") {
        Some(Value::Bool(true))
    } else if word.eq_ignore_ascii_case("false") {
        Some(Value::Bool(false))
    } else if word.eq_ignore_ascii_case("null") {
        Some(Value::Null)
    } else if word.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        serde_json::from_str::<Value>(word).ok().filter(Value::is_number)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// Evaluates `filter` against a SCIM resource (a JSON object).
///
/// Semantics (RFC 7644 §3.4.2.2, plus the choices noted):
/// * Attribute names and URN keys match JSON keys case-insensitively. A URN-qualified path looks
///   inside `resource[urn]`, except the core User/Group schema URN, which names top-level
///   attributes (unless the resource's `schemas` array exists and does not list that URN).
/// * Multi-valued attributes (arrays) match when any element matches, for `emails.value eq …`
///   and for `emails eq …` (which compares each complex element's `value` sub-attribute).
/// * `pr`: some value is present — not null, not `""`, not `[]`, not `{}`.
/// * `eq null` ⇔ not present; `ne null` ⇔ present (RFC 7643 §2.5: unassigned ≡ null ≡ empty).
/// * `ne v` ⇔ `not (eq v)`: true when no value equals `v`, including when the attribute is absent.
/// * Strings compare case-insensitively unless `info.case_exact(path)` (the path of the compared
///   attribute; inside a value path `emails[type eq …]` it is `emails.type`). `co`/`sw`/`ew` apply
///   to strings only. `gt ge lt le` order strings lexicographically, except that two RFC 3339
///   dateTimes compare as instants (so `…:34Z` < `…:34.123Z`, offsets honoured; equality too).
/// * Numbers compare numerically (`1` eq `1.0`). Booleans support `eq`/`ne` only, and also equal
///   the strings `"true"`/`"false"` in any case (Entra sends `"True"`).
/// * Any other type combination is simply false (so `ne` is true); evaluation never panics.
/// * Value paths: true when some element (or the single object, if not an array) satisfies the
///   inner filter evaluated on that element; a non-object element `x` is seen as `{"value": x}`.
pub fn matches(filter: &Filter, resource: &Value, info: &dyn AttrInfo) -> bool {
    eval(filter, resource, None, info)
}

/// Evaluates a value-path filter — one whose paths are relative to an element, such as
/// [`PatchPath::value_filter`] or the inner filter of [`Filter::ValuePath`] — against `element`,
/// one value of the multi-valued attribute `attr` (whose `urn`/`name` are used to build the full
/// paths handed to [`AttrInfo::case_exact`]; `attr.sub` is ignored). A non-object element `x` is
/// evaluated as `{"value": x}`. Same semantics as [`matches()`].
pub fn matches_value(filter: &Filter, element: &Value, attr: &AttrPath, info: &dyn AttrInfo) -> bool {
    let scope = AttrPath { urn: attr.urn.clone(), name: attr.name.clone(), sub: None };
    eval_element(filter, element, &scope, info)
}

fn eval_element(filter: &Filter, element: &Value, scope: &AttrPath, info: &dyn AttrInfo) -> bool {
    if element.is_object() {
        eval(filter, element, Some(scope), info)
    } else {
        let mut wrapped = Map::new();
        wrapped.insert("value".into(), element.clone());
        eval(filter, &Value::Object(wrapped), Some(scope), info)
    }
}

/// `scope`: `None` at resource level; inside a value path, the multi-valued attribute whose
/// element `res` is (paths are then relative to `res`).
fn eval(filter: &Filter, res: &Value, scope: Option<&AttrPath>, info: &dyn AttrInfo) -> bool {
    match filter {
        Filter::Compare { path, op, value } => eval_compare(res, path, *op, value, scope, info),
        Filter::Present(path) => lookup(res, path, scope).into_iter().any(is_present),
        Filter::And(a, b) => eval(a, res, scope, info) && eval(b, res, scope, info),
        Filter::Or(a, b) => eval(a, res, scope, info) || eval(b, res, scope, info),
        Filter::Not(a) => !eval(a, res, scope, info),
        Filter::ValuePath { path, filter } => {
            let inner_scope = match scope {
                None => AttrPath { urn: path.urn.clone(), name: path.name.clone(), sub: None },
                Some(s) => s.clone(),
            };
            lookup(res, path, scope).into_iter().any(|el| eval_element(filter, el, &inner_scope, info))
        }
    }
}

/// The path handed to `case_exact`: at resource level the path itself, inside a value path
/// `outer.name` with `sub = path.name`.
fn full_path(path: &AttrPath, scope: Option<&AttrPath>) -> AttrPath {
    match scope {
        None => path.clone(),
        Some(s) => AttrPath { urn: s.urn.clone(), name: s.name.clone(), sub: Some(path.name.clone()) },
    }
}

fn eval_compare(
    res: &Value,
    path: &AttrPath,
    op: CompareOp,
    value: &Value,
    scope: Option<&AttrPath>,
    info: &dyn AttrInfo,
) -> bool {
    let values = lookup(res, path, scope);
    if value.is_null() {
        let present = values.iter().any(|v| is_present(v));
        return match op {
            CompareOp::Eq => !present,
            CompareOp::Ne => present,
            _ => false,
        };
    }
    let any = |op: CompareOp| {
        values.iter().any(|v| {
            if v.is_object() && path.sub.is_none() {
                // `emails eq "x"`: compare the complex element's `value` sub-attribute.
                let Some(inner) = get_ci(v, "value") else { return false };
                let mut p = full_path(path, scope);
                if p.sub.is_none() {
                    p.sub = Some("value".into());
                }
                compare_one(inner, op, value, &|| info.case_exact(&p))
            } else {
                compare_one(v, op, value, &|| info.case_exact(&full_path(path, scope)))
            }
        })
    };
    match op {
        CompareOp::Ne => !any(CompareOp::Eq),
        _ => any(op),
    }
}

/// The values `path` selects, arrays flattened into their elements.
fn lookup<'a>(res: &'a Value, path: &AttrPath, scope: Option<&AttrPath>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let container = if scope.is_some() { Some(res) } else { container_for(res, path.urn.as_deref()) };
    let Some(attr) = container.and_then(|c| get_ci(c, &path.name)) else {
        return out;
    };
    match &path.sub {
        None => push_flat(&mut out, attr),
        Some(sub) => {
            let mut parents = Vec::new();
            push_flat(&mut parents, attr);
            for parent in parents {
                if let Some(v) = get_ci(parent, sub) {
                    push_flat(&mut out, v);
                }
            }
        }
    }
    out
}

fn push_flat<'a>(out: &mut Vec<&'a Value>, v: &'a Value) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        other => out.push(other),
    }
}

/// Where the attributes of schema `urn` live in `res`.
fn container_for<'a>(res: &'a Value, urn: Option<&str>) -> Option<&'a Value> {
    let Some(urn) = urn else { return Some(res) };
    let is_core = urn.eq_ignore_ascii_case(CORE_USER_URN) || urn.eq_ignore_ascii_case(CORE_GROUP_URN);
    if is_core {
        let declared = match res.get("schemas") {
            Some(Value::Array(schemas)) => {
                schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)))
            }
            _ => true,
        };
        if declared {
            return Some(res);
        }
    }
    get_ci(res, urn)
}

/// `v[key]` with a case-insensitive key match (exact match preferred).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Compares one attribute value `a` with the filter literal `b`.
fn compare_one(a: &Value, op: CompareOp, b: &Value, case_exact: &dyn Fn() -> bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => compare_str(x, y, op, case_exact()),
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y).is_some_and(|o| ord_satisfies(op, o)),
        (Value::Bool(x), Value::Bool(y)) => bool_op(*x, *y, op),
        (Value::Bool(x), Value::String(y)) => parse_bool(y).is_some_and(|y| bool_op(*x, y, op)),
        (Value::String(x), Value::Bool(y)) => parse_bool(x).is_some_and(|x| bool_op(x, *y, op)),
        _ => false,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn bool_op(x: bool, y: bool, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => x == y,
        CompareOp::Ne => x != y,
        _ => false,
    }
}

fn ord_satisfies(op: CompareOp, o: Ordering) -> bool {
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn num_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

fn fold(s: &str, case_exact: bool) -> Cow<'_, str> {
    if case_exact {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn compare_str(x: &str, y: &str, op: CompareOp, case_exact: bool) -> bool {
    match op {
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
            let (x, y) = (fold(x, case_exact), fold(y, case_exact));
            match op {
                CompareOp::Co => x.contains(&*y),
                CompareOp::Sw => x.starts_with(&*y),
                _ => x.ends_with(&*y),
            }
        }
        _ => {
            let ord = match (parse_datetime(x), parse_datetime(y)) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => fold(x, case_exact).cmp(&fold(y, case_exact)),
            };
            ord_satisfies(op, ord)
        }
    }
}

/// Parses an RFC 3339 / xsd:dateTime `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (no zone = UTC)
/// into (seconds since the Unix epoch, nanoseconds), for ordering.
fn parse_datetime(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            if !sep(i + 3, b":") {
                return None;
            }
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        Some(_) => return None,
    };
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::super::error::ScimType;
    use super::*;

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    /// `id`, `externalId`, `meta.version` and `emails.type` are caseExact; records every query.
    #[derive(Default)]
    struct TestInfo {
        asked: RefCell<Vec<AttrPath>>,
    }

    impl AttrInfo for TestInfo {
        fn case_exact(&self, path: &AttrPath) -> bool {
            self.asked.borrow_mut().push(path.clone());
            let name = path.name.to_ascii_lowercase();
            let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
            matches!(
                (name.as_str(), sub.as_deref()),
                ("id", None) | ("externalid", None) | ("meta", Some("version")) | ("emails", Some("type"))
            )
        }
    }

    fn user() -> Value {
        json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            ],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "BJensen",
            "userName": "bjensen@Example.com",
            "name": { "familyName": "Jensen", "givenName": "Barbara", "middleName": null },
            "displayName": "Babs Jensen",
            "nickName": "",
            "title": "Tour Guide",
            "active": true,
            "loginCount": 42,
            "score": 3.5,
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@jensen.org", "type": "home" }
            ],
            "phoneNumbers": [],
            "ims": [{}],
            "x509Certificates": null,
            "roles": ["Admin", "dev"],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
                "version": "W/\"a330bc54f0671c9\""
            },
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "costCenter": "4130",
                "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith" }
            }
        })
    }

    fn group() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [
                { "value": "2819c223-7f76-453a-919d-413861904646", "$ref": "https://x/Users/2819c223", "display": "Babs" },
                { "value": "902c246b-6245-4190-8e05-00816be7344a", "display": "Mandy" }
            ]
        })
    }

    fn p(s: &str) -> Filter {
        parse_filter(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn m(s: &str) -> bool {
        matches(&p(s), &user(), &TestInfo::default())
    }

    fn mg(s: &str) -> bool {
        matches(&p(s), &group(), &TestInfo::default())
    }

    fn path(name: &str) -> AttrPath {
        AttrPath::new(name)
    }

    fn cmp(path: AttrPath, op: CompareOp, value: Value) -> Filter {
        Filter::Compare { path, op, value }
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }

    fn vp(name: &str, f: Filter) -> Filter {
        Filter::ValuePath { path: path(name), filter: Box::new(f) }
    }

    fn round_trip(f: &Filter) {
        let text = f.to_string();
        let back = parse_filter(&text).unwrap_or_else(|e| panic!("{text:?} does not re-parse: {e}"));
        assert_eq!(&back, f, "round trip through {text:?}");
    }

    // ---- parsing: structure ---------------------------------------------------------------

    #[test]
    fn parses_every_operator() {
        for (kw, op) in [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ] {
            let expected = cmp(path("title"), op, json!("x"));
            assert_eq!(p(&format!("title {kw} \"x\"")), expected);
            assert_eq!(p(&format!("title {} \"x\"", kw.to_uppercase())), expected);
            assert_eq!(CompareOp::from_keyword(kw), Some(op));
            assert_eq!(op.to_string(), kw);
        }
        assert_eq!(p("title pr"), Filter::Present(path("title")));
        assert_eq!(p("title PR"), Filter::Present(path("title")));
        assert_eq!(CompareOp::from_keyword("pr"), None);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let a = cmp(path("a"), CompareOp::Eq, json!(1));
        let b = cmp(path("b"), CompareOp::Eq, json!(2));
        let c = cmp(path("c"), CompareOp::Eq, json!(3));
        assert_eq!(p("a eq 1 or b eq 2 and c eq 3"), or(a.clone(), and(b.clone(), c.clone())));
        assert_eq!(p("a eq 1 and b eq 2 or c eq 3"), or(and(a.clone(), b.clone()), c.clone()));
        assert_eq!(p("(a eq 1 or b eq 2) and c eq 3"), and(or(a.clone(), b.clone()), c.clone()));
        assert_eq!(p("a eq 1 AND b eq 2 OR c eq 3"), or(and(a.clone(), b.clone()), c.clone()));
        // left-associative chains
        assert_eq!(p("a eq 1 and b eq 2 and c eq 3"), and(and(a.clone(), b.clone()), c.clone()));
        assert_eq!(p("a eq 1 or b eq 2 or c eq 3"), or(or(a.clone(), b.clone()), c.clone()));
        assert_eq!(p("a eq 1 and (b eq 2 and c eq 3)"), and(a, and(b, c)));
    }

    #[test]
    fn not_and_parentheses() {
        let a = cmp(path("a"), CompareOp::Eq, json!(1));
        let b = Filter::Present(path("b"));
        assert_eq!(p("not (a eq 1)"), not(a.clone()));
        assert_eq!(p("NOT(a eq 1)"), not(a.clone()));
        assert_eq!(p("not (a eq 1) and b pr"), and(not(a.clone()), b.clone()));
        assert_eq!(p("not (a eq 1 or b pr)"), not(or(a.clone(), b.clone())));
        assert_eq!(p("not (not (a eq 1))"), not(not(a.clone())));
        assert_eq!(p("((a eq 1))"), a.clone());
        assert_eq!(p("(((a eq 1)) and ((b pr)))"), and(a, b));
        // `not` as an ordinary attribute name
        assert_eq!(p("not pr"), Filter::Present(path("not")));
        assert_eq!(p("and eq \"x\""), cmp(path("and"), CompareOp::Eq, json!("x")));
    }

    #[test]
    fn whitespace_tolerance() {
        let expected = and(cmp(path("userName"), CompareOp::Eq, json!("a")), Filter::Present(path("title")));
        for s in [
            "userName eq \"a\" and title pr",
            "  userName   eq\t\"a\"\n and \t title  pr  ",
            "(userName eq \"a\")and(title pr)",
            "userName eq\"a\"and title pr",
        ] {
            assert_eq!(p(s), expected, "{s:?}");
        }
    }

    #[test]
    fn attribute_paths_and_urns() {
        assert_eq!(p("name.familyName pr"), Filter::Present(path("name").with_sub("familyName")));
        assert_eq!(
            p("meta.lastModified gt \"2011-05-13T04:42:34Z\""),
            cmp(path("meta").with_sub("lastModified"), CompareOp::Gt, json!("2011-05-13T04:42:34Z"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\""),
            cmp(path("userName").with_urn("urn:ietf:params:scim:schemas:core:2.0:User"), CompareOp::Sw, json!("J"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"701984\""),
            cmp(path("employeeNumber").with_urn(ENT), CompareOp::Eq, json!("701984"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value pr"),
            Filter::Present(path("manager").with_urn(ENT).with_sub("value"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName pr"),
            Filter::Present(path("name").with_urn("urn:ietf:params:scim:schemas:core:2.0:User").with_sub("givenName"))
        );
        // URN case kept as given
        assert_eq!(
            p("URN:IETF:params:scim:schemas:core:2.0:user:userName pr"),
            Filter::Present(path("userName").with_urn("URN:IETF:params:scim:schemas:core:2.0:user"))
        );
        // custom extension URN
        assert_eq!(
            p("urn:acme:scim:Ext:costCode eq \"x\""),
            cmp(path("costCode").with_urn("urn:acme:scim:Ext"), CompareOp::Eq, json!("x"))
        );
        assert_eq!(p("members.$ref pr"), Filter::Present(path("members").with_sub("$ref")));
        assert_eq!(p("x-y_z9 pr"), Filter::Present(path("x-y_z9")));
    }

    #[test]
    fn value_paths() {
        let work = cmp(path("type"), CompareOp::Eq, json!("work"));
        assert_eq!(p("emails[type eq \"work\"]"), vp("emails", work.clone()));
        assert_eq!(
            p("emails[type eq \"work\" and value co \"@acme\"]"),
            vp("emails", and(work.clone(), cmp(path("value"), CompareOp::Co, json!("@acme"))))
        );
        assert_eq!(
            p("emails[not (type eq \"work\") or (primary eq true)]"),
            vp("emails", or(not(work.clone()), cmp(path("primary"), CompareOp::Eq, json!(true))))
        );
        assert_eq!(
            p("userType eq \"Employee\" and emails[type eq \"work\"]"),
            and(cmp(path("userType"), CompareOp::Eq, json!("Employee")), vp("emails", work.clone()))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq \"work\"]"),
            Filter::ValuePath {
                path: path("emails").with_urn("urn:ietf:params:scim:schemas:core:2.0:User"),
                filter: Box::new(work.clone()),
            }
        );
        assert_eq!(
            p("members[value eq \"2819c223\"]"),
            vp("members", cmp(path("value"), CompareOp::Eq, json!("2819c223")))
        );
    }

    #[test]
    fn entra_value_path_with_sub_attribute() {
        let expected = vp(
            "emails",
            and(cmp(path("type"), CompareOp::Eq, json!("work")), cmp(path("value"), CompareOp::Eq, json!("a@b.c"))),
        );
        assert_eq!(p("emails[type eq \"work\"].value eq \"a@b.c\""), expected);
        assert_eq!(
            p("emails[type eq \"work\"].value eq \"a@b.c\"").to_string(),
            "emails[type eq \"work\" and value eq \"a@b.c\"]"
        );
        assert_eq!(
            p("emails[type eq \"work\"].value pr"),
            vp("emails", and(cmp(path("type"), CompareOp::Eq, json!("work")), Filter::Present(path("value"))))
        );
        assert!(m("emails[type eq \"work\"].value eq \"BJENSEN@example.com\""));
        assert!(!m("emails[type eq \"home\"].value eq \"bjensen@example.com\""));
        assert!(m("emails[type eq \"work\"].value eq \"bjensen@example.com\" and active eq true"));
    }

    #[test]
    fn literal_values() {
        let v = |s: &str| match p(&format!("a eq {s}")) {
            Filter::Compare { value, .. } => value,
            other => panic!("{other:?}"),
        };
        assert_eq!(v("true"), json!(true));
        assert_eq!(v("TRUE"), json!(true));
        assert_eq!(v("False"), json!(false));
        assert_eq!(v("NULL"), Value::Null);
        assert_eq!(v("42"), json!(42));
        assert_eq!(v("-7"), json!(-7));
        assert_eq!(v("3.25"), json!(3.25));
        assert_eq!(v("-0.5"), json!(-0.5));
        assert_eq!(v("1e3"), json!(1000.0));
        assert_eq!(v("18446744073709551615"), json!(u64::MAX));
        assert_eq!(v(r#""""#), json!(""));
        assert_eq!(v(r#""say \"hi\"""#), json!("say \"hi\""));
        assert_eq!(v(r#""back\\slash""#), json!("back\\slash"));
        assert_eq!(v(r#""a\/b""#), json!("a/b"));
        assert_eq!(v(r#""line\nfeed\ttab\r\b\f""#), json!("line\nfeed\ttab\r\u{8}\u{c}"));
        assert_eq!(v(r#""\u00e9\u00C9""#), json!("éÉ"));
        assert_eq!(v(r#""\ud83d\ude00""#), json!("😀"));
        assert_eq!(v("\"ünïcödé ☃\""), json!("ünïcödé ☃"));
        assert_eq!(v(r#""paren ( ) [ ] and or""#), json!("paren ( ) [ ] and or"));
    }

    // ---- parsing: errors --------------------------------------------------------------------

    #[test]
    fn malformed_filters_are_invalid_filter() {
        let bad = [
            "",
            "   ",
            "\t\n",
            "userName",
            "userName eq",
            "userName eq ",
            "userName \"x\"",
            "userName equals \"x\"",
            "userName == \"x\"",
            "userName eq bjensen",
            "userName eq 'x'",
            "userName eq \"x",
            "userName eq \"x\\\"",
            "userName eq \"bad \\x escape\"",
            "userName eq \"\\u12\"",
            "userName eq \"\\ud800\"",
            "userName eq \"raw\u{1}control\"",
            "userName eq \"x\" and",
            "userName eq \"x\" or",
            "and userName eq \"x\"",
            "or",
            "userName eq \"x\" userName eq \"y\"",
            "userName eq \"x\" \"y\"",
            "userName eq \"x\" )",
            "(userName eq \"x\"",
            "((userName eq \"x\")",
            "userName eq \"x\"))",
            "()",
            "(",
            ")",
            "not userName eq \"x\"",
            "not (userName eq \"x\"",
            "not ()",
            "not",
            "title pr \"x\"",
            "title pr true",
            "title pr pr",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails type eq \"work\"]",
            "emails[]",
            "emails[type eq \"work\"] pr",
            "emails[type eq \"work\"].value",
            "emails[type eq \"work\"].value eq",
            "emails[type eq \"work\"].value.x eq \"a\"",
            "emails[type eq \"work\"].1x eq \"a\"",
            "emails[type[value eq \"x\"]]",
            "emails[type eq \"work\" and x[value eq \"y\"]]",
            "emails[name.sub eq \"x\"]",
            "emails[urn:a:b:c:type eq \"x\"]",
            "emails.value[type eq \"work\"]",
            "emails[type eq \"work\")",
            "(emails[type eq \"work\")]",
            "name.familyName.x eq \"a\"",
            "1name eq \"a\"",
            "-name eq \"a\"",
            ".name eq \"a\"",
            "name. eq \"a\"",
            "na@me eq \"a\"",
            "nämé eq \"a\"",
            "$refx eq \"a\"",
            "urn:ietf:params:scim:schemas:core:2.0:User pr",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User eq \"x\"",
            "urn:ietf:params:scim:schemas:core:2.0:User: pr",
            "urn::x:name pr",
            ":userName pr",
            "foo:userName pr",
            "userName eq 01",
            "userName eq 1.",
            "userName eq .5",
            "userName eq +1",
            "userName eq 1e999",
            "userName eq 12abc",
            "userName eq tru",
            "userName eq nil",
            "userName eq and",
            "userName eq (\"x\")",
            "userName eq [\"x\"]",
            "userName gt true",
            "userName lt null",
            "userName co 1",
            "userName sw null",
            "userName ew false",
            "\"userName\" eq \"x\"",
            "userName eq \"x\" and or title pr",
            "userName eq \"x\" && title pr",
            "userName eq \"x\" || title pr",
            "!(userName eq \"x\")",
            "userName eq \"x\"]",
            "[value eq \"x\"]",
        ];
        assert!(bad.len() >= 30);
        for s in bad {
            match parse_filter(s) {
                Ok(f) => panic!("{s:?} should be rejected, parsed as {f:?}"),
                Err(e) => {
                    assert_eq!(e.status, 400, "{s:?}");
                    assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{s:?}");
                    assert!(!e.detail.is_empty());
                }
            }
        }
    }

    #[test]
    fn error_messages_are_helpful() {
        let detail = |s: &str| parse_filter(s).unwrap_err().detail;
        assert!(detail("userName equals \"x\"").contains("unknown operator `equals`"));
        assert!(detail("userName eq").contains("missing value"));
        assert!(detail("(a pr").contains("unbalanced `(`"));
        assert!(detail("a pr)").contains("unbalanced `)`"));
        assert!(detail("a eq \"x").contains("unterminated string"));
        assert!(detail("").contains("empty filter"));
        assert!(detail("not a pr").contains("`not` must be followed by a parenthesized filter"));
        assert!(detail("emails[a[b pr]]").contains("nested value filter"));
    }

    #[test]
    fn nesting_and_size_limits() {
        let ok = format!("{}a pr{}", "(".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH));
        assert_eq!(p(&ok), Filter::Present(path("a")));
        let too_deep = format!("{}a pr{}", "(".repeat(MAX_FILTER_DEPTH + 1), ")".repeat(MAX_FILTER_DEPTH + 1));
        assert_eq!(parse_filter(&too_deep).unwrap_err().scim_type, Some(ScimType::InvalidFilter));
        let nots = format!("{}a pr{}", "not (".repeat(100), ")".repeat(100));
        assert!(parse_filter(&nots).is_err());
        for huge in ["(".repeat(1_000_000), "not (".repeat(200_000), "[".repeat(100_000), "a[".repeat(100_000)] {
            assert!(parse_filter(&huge).is_err());
            assert!(parse_patch_path(&huge).is_err());
        }

        let chain = |n: usize, kw: &str| vec!["a pr"; n].join(&format!(" {kw} "));
        let f = p(&chain(MAX_FILTER_TERMS, "and"));
        assert!(matches(&f, &json!({"a": 1}), &TestInfo::default()));
        round_trip(&f);
        let f = p(&chain(MAX_FILTER_TERMS, "or"));
        assert!(!matches(&f, &json!({}), &TestInfo::default()));
        round_trip(&f);
        assert!(parse_filter(&chain(MAX_FILTER_TERMS + 1, "or")).is_err());
        assert!(parse_filter(&chain(200_000, "and")).is_err());
        // long string values are fine
        let long = format!("a eq \"{}\"", "x".repeat(1_000_000));
        assert!(parse_filter(&long).is_ok());
    }

    // ---- patch paths ----------------------------------------------------------------------

    #[test]
    fn patch_paths() {
        let pp = |s: &str| parse_patch_path(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(pp("active"), PatchPath { attr: path("active"), value_filter: None });
        assert_eq!(pp("name.givenName"), PatchPath { attr: path("name").with_sub("givenName"), value_filter: None });
        assert_eq!(pp("members"), PatchPath { attr: path("members"), value_filter: None });
        assert_eq!(
            pp("emails[type eq \"work\"].value"),
            PatchPath {
                attr: path("emails").with_sub("value"),
                value_filter: Some(cmp(path("type"), CompareOp::Eq, json!("work"))),
            }
        );
        assert_eq!(
            pp("members[value eq \"2819c223\"]"),
            PatchPath {
                attr: path("members"),
                value_filter: Some(cmp(path("value"), CompareOp::Eq, json!("2819c223"))),
            }
        );
        assert_eq!(
            pp("addresses[type eq \"work\" and primary eq true].streetAddress"),
            PatchPath {
                attr: path("addresses").with_sub("streetAddress"),
                value_filter: Some(and(
                    cmp(path("type"), CompareOp::Eq, json!("work")),
                    cmp(path("primary"), CompareOp::Eq, json!(true))
                )),
            }
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"),
            PatchPath { attr: path("manager").with_urn(ENT), value_filter: None }
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            PatchPath { attr: path("manager").with_urn(ENT).with_sub("value"), value_filter: None }
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName"),
            PatchPath {
                attr: path("name").with_urn("urn:ietf:params:scim:schemas:core:2.0:User").with_sub("givenName"),
                value_filter: None
            }
        );
        assert_eq!(
            pp("urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq \"work\"].value"),
            PatchPath {
                attr: path("emails").with_urn("urn:ietf:params:scim:schemas:core:2.0:User").with_sub("value"),
                value_filter: Some(cmp(path("type"), CompareOp::Eq, json!("work"))),
            }
        );
        assert_eq!(pp("  members  ").attr, path("members"));
        assert_eq!(pp("members[value eq \"a\"].$ref").attr, path("members").with_sub("$ref"));

        for s in [
            "active",
            "name.givenName",
            "emails[type eq \"work\"].value",
            "members[value eq \"2819c223\" or display co \"x\"]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq \"work\"].value",
        ] {
            let parsed = pp(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(pp(&parsed.to_string()), parsed);
        }
    }

    #[test]
    fn malformed_patch_paths_are_invalid_path() {
        let bad = [
            "",
            "  ",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:core:2.0:Group",
            "urn:ietf:params:scim:schemas:core:2.0:User:",
            "name.givenName.x",
            "name.",
            ".name",
            "1abc",
            "name givenName",
            "emails[",
            "emails[]",
            "emails]",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails[type eq \"work\"].",
            "emails[type eq \"work\"].value.x",
            "emails[type eq \"work\"].value extra",
            "emails[type eq \"work\"]value",
            "emails[type eq]",
            "emails[type equals \"work\"]",
            "emails[type eq \"work\"][value eq \"x\"]",
            "emails[a[b eq 1]]",
            "emails.value[type eq \"work\"]",
            "emails[type eq \"work\"].value eq \"x\"",
            "(emails)",
            "\"emails\"",
            "active eq true",
            "members[value eq \"x\" and]",
            "emails[type eq \"wo\\qrk\"]",
        ];
        for s in bad {
            match parse_patch_path(s) {
                Ok(pp) => panic!("{s:?} should be rejected, parsed as {pp:?}"),
                Err(e) => {
                    assert_eq!(e.status, 400, "{s:?}");
                    assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn bare_attr_paths() {
        assert_eq!(parse_attr_path("userName").unwrap(), path("userName"));
        assert_eq!(parse_attr_path(" meta.lastModified ").unwrap(), path("meta").with_sub("lastModified"));
        assert_eq!(
            parse_attr_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").unwrap(),
            path("manager").with_urn(ENT).with_sub("value")
        );
        for s in ["", "a b", "a[b eq 1]", "a.b.c", "urn:ietf:params:scim:schemas:core:2.0:User", "\"a\""] {
            assert_eq!(parse_attr_path(s).unwrap_err().scim_type, Some(ScimType::InvalidPath), "{s:?}");
        }
        let ap = path("manager").with_urn(ENT).with_sub("value");
        assert_eq!(parse_attr_path(&ap.to_string()).unwrap(), ap);
    }

    // ---- evaluation ----------------------------------------------------------------------

    #[test]
    fn eval_string_operators() {
        assert!(m("userName eq \"bjensen@example.com\""));
        assert!(m("USERNAME EQ \"BJENSEN@EXAMPLE.COM\""));
        assert!(!m("userName eq \"bjensen\""));
        assert!(m("userName ne \"bjensen\""));
        assert!(!m("userName ne \"BJensen@example.com\""));
        assert!(m("userName co \"JENSEN\""));
        assert!(!m("userName co \"smith\""));
        assert!(m("userName sw \"BJ\""));
        assert!(!m("userName sw \"jensen\""));
        assert!(m("userName ew \".COM\""));
        assert!(!m("userName ew \".org\""));
        assert!(m("userName co \"\""));
        assert!(m("title gt \"Tour\""));
        assert!(m("title ge \"tour guide\""));
        assert!(m("title le \"TOUR GUIDE\""));
        assert!(m("title lt \"Z\""));
        assert!(!m("title lt \"A\""));
        assert!(!m("title gt \"zzz\""));
        assert!(m("name.familyName eq \"jensen\""));
        assert!(m("name.givenName sw \"bar\""));
    }

    #[test]
    fn eval_case_exact_attributes() {
        // externalId and id are caseExact in TestInfo
        assert!(m("externalId eq \"BJensen\""));
        assert!(!m("externalId eq \"bjensen\""));
        assert!(m("externalId ne \"bjensen\""));
        assert!(!m("externalId co \"jensen\""));
        assert!(m("externalId co \"Jensen\""));
        assert!(m("id eq \"2819c223-7f76-453a-919d-413861904646\""));
        assert!(!m("id eq \"2819C223-7F76-453A-919D-413861904646\""));
        assert!(m("EXTERNALID eq \"BJensen\""));
        // case-exact ordering: 'B' (0x42) < 'a' (0x61)
        assert!(m("externalId lt \"a\""));
        assert!(!m("userName lt \"B\""));
        // caseExact sub-attribute inside a value path: full path is emails.type
        assert!(m("emails[type eq \"work\"]"));
        assert!(!m("emails[type eq \"WORK\"]"));
        assert!(m("emails[value eq \"BJENSEN@EXAMPLE.COM\"]"));
        assert!(!m("emails.type eq \"Work\""));
        assert!(m("meta.version eq \"W/\\\"a330bc54f0671c9\\\"\""));
        assert!(!m("meta.version eq \"w/\\\"A330BC54F0671C9\\\"\""));
    }

    #[test]
    fn case_exact_receives_full_paths() {
        let info = TestInfo::default();
        let u = user();
        matches(&p("emails[type eq \"work\" and value co \"x\"]"), &u, &info);
        matches(&p("emails eq \"x\""), &u, &info);
        matches(&p("name.familyName eq \"x\""), &u, &info);
        matches(&p(&format!("{ENT}:manager.value eq \"x\"")), &u, &info);
        let asked = info.asked.borrow();
        assert!(asked.contains(&path("emails").with_sub("type")));
        assert!(asked.contains(&path("emails").with_sub("value")));
        assert!(asked.contains(&path("name").with_sub("familyName")));
        assert!(asked.contains(&path("manager").with_urn(ENT).with_sub("value")));
        assert!(asked.iter().all(|p| p.name != "type" && p.name != "value"), "{asked:?}");
    }

    #[test]
    fn eval_numbers_booleans_null() {
        assert!(m("loginCount eq 42"));
        assert!(m("loginCount eq 42.0"));
        assert!(m("loginCount gt 41"));
        assert!(m("loginCount ge 42"));
        assert!(!m("loginCount gt 42"));
        assert!(m("loginCount lt 42.5"));
        assert!(m("loginCount le 42"));
        assert!(m("loginCount ne 7"));
        assert!(m("score gt 3"));
        assert!(m("score lt 4"));
        assert!(m("score eq 3.5"));
        assert!(m("score gt -1"));
        assert!(!m("loginCount eq \"42\""), "number vs string is a type mismatch");
        assert!(!m("loginCount co \"4\""));
        assert!(!m("title gt 5"));

        assert!(m("active eq true"));
        assert!(m("active eq TRUE"));
        assert!(!m("active eq false"));
        assert!(m("active ne false"));
        assert!(!m("active ne true"));
        assert!(m("active eq \"True\""), "Entra sends booleans as strings");
        assert!(m("active eq \"true\""));
        assert!(!m("active eq \"False\""));
        assert!(m("active ne \"false\""));
        assert!(!m("active eq \"yes\""));
        assert!(!m("active eq 1"));
        let stringly = json!({"active": "True"});
        assert!(matches(&p("active eq true"), &stringly, &TestInfo::default()));
        // ordering on booleans is a type mismatch, never true (constructed filter: parser rejects it)
        let gt_bool = cmp(path("active"), CompareOp::Gt, json!(false));
        assert!(!matches(&gt_bool, &user(), &TestInfo::default()));

        assert!(m("nickName eq null"), "empty string is unassigned");
        assert!(m("name.middleName eq null"));
        assert!(m("x509Certificates eq null"));
        assert!(m("nonexistent eq null"));
        assert!(m("phoneNumbers eq null"));
        assert!(!m("title eq null"));
        assert!(m("title ne null"));
        assert!(!m("nonexistent ne null"));
        assert!(m("emails ne null"));
    }

    #[test]
    fn eval_present() {
        assert!(m("title pr"));
        assert!(m("active pr"));
        assert!(m("loginCount pr"));
        assert!(m("emails pr"));
        assert!(m("emails.value pr"));
        assert!(m("emails.primary pr"));
        assert!(m("name pr"));
        assert!(m("meta.lastModified pr"));
        assert!(!m("nickName pr"), "empty string");
        assert!(!m("phoneNumbers pr"), "empty array");
        assert!(!m("ims pr"), "array of one empty object");
        assert!(!m("x509Certificates pr"), "null");
        assert!(!m("name.middleName pr"), "null sub-attribute");
        assert!(!m("nonexistent pr"));
        assert!(!m("emails.display pr"));
        assert!(!matches(&p("extra pr"), &json!({"extra": {}}), &TestInfo::default()));
        assert!(matches(&p("extra pr"), &json!({"extra": false}), &TestInfo::default()));
        assert!(matches(&p("extra pr"), &json!({"extra": 0}), &TestInfo::default()));
    }

    #[test]
    fn eval_multi_valued() {
        assert!(m("emails.value eq \"babs@jensen.org\""));
        assert!(m("emails.value eq \"BJENSEN@example.com\""));
        assert!(m("emails eq \"babs@jensen.org\""), "complex elements compare their value");
        assert!(m("emails co \"jensen.org\""));
        assert!(!m("emails eq \"nobody@example.com\""));
        assert!(m("emails.type eq \"home\""));
        // ne on a multi-valued attribute: true only when no element equals
        assert!(!m("emails.type ne \"work\""));
        assert!(m("emails.type ne \"other\""));
        assert!(!m("emails ne \"babs@jensen.org\""));
        assert!(m("emails ne \"nobody@example.com\""));
        assert!(m("nonexistent ne \"x\""), "absent attribute: nothing equals");
        // multi-valued simple attribute
        assert!(m("roles eq \"admin\""));
        assert!(m("roles eq \"DEV\""));
        assert!(!m("roles eq \"ops\""));
        assert!(m("roles[value eq \"admin\"]"), "primitive elements are seen as {{value: x}}");
        // groups
        assert!(mg("members.value eq \"2819c223-7f76-453a-919d-413861904646\""));
        assert!(mg("members[value eq \"902c246b-6245-4190-8e05-00816be7344a\"]"));
        assert!(mg("members[$ref pr]"));
        assert!(mg("members.$ref co \"/Users/\""));
        assert!(!mg("members[value eq \"nope\"]"));
        assert!(mg("displayName eq \"tour guides\""));
    }

    #[test]
    fn eval_value_paths() {
        assert!(m("emails[type eq \"work\" and value co \"@example.com\"]"));
        assert!(!m("emails[type eq \"home\" and value co \"@example.com\"]"), "same element must match");
        assert!(m("emails[type eq \"home\" or primary eq true]"));
        assert!(m("emails[not (type eq \"work\")]"));
        assert!(m("emails[primary pr]"));
        assert!(!m("emails[display pr]"));
        assert!(m("emails[primary eq true] and userName sw \"bj\""));
        assert!(!m("phoneNumbers[type eq \"work\"]"));
        assert!(!m("nonexistent[type eq \"work\"]"));
        assert!(!m("not (emails[type eq \"work\"])"));
        // a single complex value behaves like a one-element array
        assert!(m("name[familyName eq \"jensen\"]"));
        assert!(m(&format!("{ENT}:manager[displayName sw \"john\"]")));
        // matches_value for PATCH value filters
        let pp = parse_patch_path("emails[type eq \"work\"].value").unwrap();
        let u = user();
        let hits: Vec<&Value> = u["emails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| matches_value(pp.value_filter.as_ref().unwrap(), e, &pp.attr, &TestInfo::default()))
            .collect();
        assert_eq!(hits, vec![&u["emails"][0]]);
        // the outer path (not `type`) reaches case_exact: emails.type is caseExact in TestInfo
        let upper = p("type eq \"WORK\"");
        assert!(!matches_value(&upper, &u["emails"][0], &path("emails"), &TestInfo::default()));
        assert!(matches_value(&upper, &u["emails"][0], &path("addresses"), &TestInfo::default()));
        assert!(matches_value(&p("value eq \"ADMIN\""), &json!("admin"), &path("roles"), &TestInfo::default()));
    }

    #[test]
    fn eval_urn_paths() {
        assert!(m(&format!("{ENT}:employeeNumber eq \"701984\"")));
        assert!(m(&format!("{ENT}:manager.value eq \"26118915-6090-4610-87e4-49d8ca9f808d\"")));
        assert!(m(&format!("{ENT}:manager.displayName co \"smith\"")));
        assert!(m(&format!("{ENT}:manager pr")));
        assert!(!m(&format!("{ENT}:department pr")));
        assert!(m("URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:EMPLOYEENUMBER eq \"701984\""));
        assert!(!m("employeeNumber pr"), "unqualified names are core attributes");
        assert!(!m("urn:acme:other:Ext:employeeNumber pr"));
        // core schema URN = top-level attributes
        assert!(m("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"bjensen@example.com\""));
        assert!(m("urn:ietf:params:scim:schemas:core:2.0:user:name.familyName eq \"Jensen\""));
        assert!(m("urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq \"work\"]"));
        assert!(mg("urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq \"Tour Guides\""));
        // ...but not the other resource type's core schema
        assert!(!mg("urn:ietf:params:scim:schemas:core:2.0:User:displayName eq \"Tour Guides\""));
        assert!(!m("urn:ietf:params:scim:schemas:core:2.0:Group:displayName pr"));
        // a resource without `schemas` treats either core URN as top level
        let bare = json!({"userName": "x"});
        assert!(matches(
            &p("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"x\""),
            &bare,
            &TestInfo::default()
        ));
    }

    #[test]
    fn eval_logic() {
        assert!(m("userName sw \"bj\" and active eq true"));
        assert!(!m("userName sw \"bj\" and active eq false"));
        assert!(m("userName sw \"zz\" or active eq true"));
        assert!(!m("userName sw \"zz\" or active eq false"));
        assert!(m("not (userName sw \"zz\")"));
        assert!(!m("not (userName sw \"bj\")"));
        // precedence: true or (false and false) = true; (true or false) and false = false
        assert!(m("title pr or nickName pr and phoneNumbers pr"));
        assert!(!m("(title pr or nickName pr) and phoneNumbers pr"));
        assert!(!m("a eq 1 or b eq 2 and c eq 3"));
        let r = json!({"a": 1, "b": 0, "c": 0});
        assert!(matches(&p("a eq 1 or b eq 2 and c eq 3"), &r, &TestInfo::default()));
        assert!(!matches(&p("(a eq 1 or b eq 2) and c eq 3"), &r, &TestInfo::default()));
    }

    #[test]
    fn eval_datetimes() {
        assert!(m("meta.lastModified gt \"2011-05-13T04:42:33Z\""));
        assert!(m("meta.lastModified ge \"2011-05-13T04:42:34Z\""));
        assert!(!m("meta.lastModified gt \"2011-05-13T04:42:34Z\""));
        assert!(m("meta.lastModified lt \"2011-05-13T04:42:34.123Z\""), "Z sorts after '.' as text");
        assert!(m("meta.lastModified eq \"2011-05-13T04:42:34.000Z\""));
        assert!(m("meta.lastModified eq \"2011-05-13T06:42:34+02:00\""));
        assert!(m("meta.lastModified gt \"2011-05-13T05:00:00+01:00\""));
        assert!(m("meta.lastModified lt \"2011-05-13T00:00:00-05:00\""));
        assert!(m("meta.lastModified gt \"2011-05-13\""), "date-only falls back to text order");
        assert!(m("meta.created lt \"2011-01-01T00:00:00Z\""));
        assert!(m("meta.created ge \"2010-01-23T04:56:22Z\" and meta.created le \"2010-01-23T04:56:22Z\""));
        assert!(m("meta.lastModified gt \"1999-12-31T23:59:59.999999999Z\""));

        let dt = |s: &str| parse_datetime(s);
        assert_eq!(dt("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(dt("1970-01-01T00:00:01.5Z"), Some((1, 500_000_000)));
        assert_eq!(dt("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
        assert_eq!(dt("2011-05-13T04:42:34Z"), Some((1_305_261_754, 0)));
        assert_eq!(dt("2011-05-13T06:42:34+02:00"), dt("2011-05-13T04:42:34Z"));
        assert_eq!(dt("2011-05-13t04:42:34z"), dt("2011-05-13T04:42:34Z"));
        assert_eq!(dt("2011-05-13T04:42:34"), dt("2011-05-13T04:42:34Z"));
        assert_eq!(dt("0001-01-01T00:00:00Z"), Some((-62_135_596_800, 0)));
        for bad in [
            "",
            "2011-05-13",
            "2011-13-13T04:42:34Z",
            "2011-05-13T24:42:34Z",
            "2011-05-13T04:42:34.Z",
            "2011-05-13T04:42:34+0200",
            "2011-05-13T04:42:34Zjunk",
            "2011-05-13X04:42:34Z",
            "2011-05-13T04:42:3é",
            "２011-05-13T04:42:34Z",
        ] {
            assert_eq!(dt(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn type_mismatches_never_match_or_panic() {
        let weird = json!({
            "a": [[1, 2], {"value": [3]}, null, "x"],
            "o": {"value": {"deep": true}},
            "n": 1e300,
            "big": u64::MAX,
            "neg": i64::MIN,
        });
        let info = TestInfo::default();
        for s in [
            "a eq 1",
            "a.value eq 3",
            "a[value eq 3]",
            "a co \"x\"",
            "a eq \"x\"",
            "o eq \"x\"",
            "o.value eq true",
            "n gt 1",
            "big gt 1",
            "big gt -1",
            "neg lt 0",
            "big eq 18446744073709551615",
        ] {
            let _ = matches(&p(s), &weird, &info);
        }
        assert!(matches(&p("a eq \"X\""), &weird, &info));
        assert!(matches(&p("big gt -1"), &weird, &info));
        assert!(matches(&p("neg lt 0"), &weird, &info));
        assert!(matches(&p("big eq 18446744073709551615"), &weird, &info));
        assert!(matches(&p("n gt 1"), &weird, &info));
        for res in [json!(null), json!(1), json!("s"), json!([1, 2]), json!({})] {
            assert!(!matches(&p("a eq 1"), &res, &info));
            assert!(matches(&p("a eq null"), &res, &info));
            assert!(matches(&p("a ne 1"), &res, &info));
            assert!(!matches(&p("a[b pr]"), &res, &info));
        }
        // constructed filters the parser would reject still evaluate safely
        let odd = [
            cmp(path("title"), CompareOp::Co, json!(5)),
            cmp(path("title"), CompareOp::Eq, json!(["Tour Guide"])),
            cmp(path("name"), CompareOp::Eq, json!({"familyName": "Jensen"})),
            cmp(path("active"), CompareOp::Lt, Value::Null),
            Filter::ValuePath { path: path("emails"), filter: Box::new(vp("x", Filter::Present(path("y")))) },
        ];
        for f in &odd {
            let _ = matches(f, &user(), &info);
            let _ = f.to_string();
        }
    }

    // ---- display ---------------------------------------------------------------------------

    #[test]
    fn display_round_trips() {
        for s in [
            "userName eq \"bjensen\"",
            "title pr",
            "a eq 1 or b eq 2 and c eq 3",
            "(a eq 1 or b eq 2) and c eq 3",
            "a eq 1 and (b eq 2 and c eq 3)",
            "a eq 1 or (b eq 2 or c eq 3)",
            "not (a eq 1 and b pr) or not (c pr)",
            "emails[type eq \"work\" and value co \"@acme\"]",
            "emails[type eq \"work\"].value eq \"a@b.c\"",
            "emails[(type eq \"work\" or type eq \"home\") and not (primary eq false)]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"x\"",
            "meta.lastModified gt \"2011-05-13T04:42:34Z\"",
            "a eq \"esc \\\" \\\\ \\/ \\n \\t \\u0001 \\u00e9 😀\"",
            "a eq -1.5 and b eq 1e-7 and c eq 18446744073709551615 and d eq -0",
            "a eq TRUE and b ne False or c eq NULL",
            "members.$ref pr",
            "((((a pr))))",
        ] {
            round_trip(&p(s));
        }
        assert_eq!(p("a eq 1 OR (b EQ 2 AND c eq 3)").to_string(), "a eq 1 or b eq 2 and c eq 3");
        assert_eq!(p("(a eq 1 or b eq 2) and c eq 3").to_string(), "(a eq 1 or b eq 2) and c eq 3");
        assert_eq!(p("NOT (a pr)").to_string(), "not (a pr)");
        assert_eq!(p("a  eq   \"x\\/y\"").to_string(), "a eq \"x/y\"");
        assert_eq!(path("manager").with_urn(ENT).with_sub("value").to_string(), format!("{ENT}:manager.value"));
        // constructed right-nested trees keep their shape
        let a = Filter::Present(path("a"));
        for f in [
            and(a.clone(), and(a.clone(), a.clone())),
            or(a.clone(), or(a.clone(), a.clone())),
            and(or(a.clone(), a.clone()), or(a.clone(), a.clone())),
            or(and(a.clone(), a.clone()), and(a.clone(), a.clone())),
            not(not(a.clone())),
        ] {
            round_trip(&f);
        }
    }

    // ---- robustness -----------------------------------------------------------------------

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const FRAGMENTS: &[&str] = &[
        "userName",
        "emails",
        "name",
        ".",
        ".value",
        "familyName",
        "type",
        "value",
        "$ref",
        " ",
        "  ",
        "\t",
        "eq",
        "ne",
        "co",
        "sw",
        "ew",
        "gt",
        "ge",
        "lt",
        "le",
        "pr",
        "and",
        "or",
        "not",
        "AND",
        "Or",
        "NoT",
        "(",
        ")",
        "[",
        "]",
        "\"",
        "\"work\"",
        "\"a\\\"b\"",
        "\\",
        "\\u00e9",
        "\\ud800",
        "1",
        "-2.5",
        "1e9",
        "true",
        "False",
        "null",
        ":",
        "urn:",
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "é",
        "😀",
        "\u{0}",
        "\n",
        "'",
        "emails[type eq \"work\"]",
        "meta.lastModified",
        "\"2011-05-13T04:42:34Z\"",
        "-",
        "_",
        "@",
        "=",
    ];

    /// Grammar-directed generation: every output must parse.
    fn gen(rng: &mut Rng, depth: usize, inner: bool) -> String {
        let attrs: &[&str] = if inner {
            &["type", "value", "primary", "display"]
        } else {
            &[
                "userName",
                "name.familyName",
                "emails.value",
                "active",
                "loginCount",
                "meta.lastModified",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                "roles",
                "emails",
            ]
        };
        let values =
            ["\"work\"", "\"BJensen@example.com\"", "42", "-1.25", "true", "FALSE", "null", "\"2011-05-13T04:42:34Z\""];
        match if depth == 0 { 0 } else { rng.below(7) } {
            0 | 1 => {
                let a = attrs[rng.below(attrs.len())];
                let v = values[rng.below(values.len())];
                match rng.below(3) {
                    0 => format!("{a} pr"),
                    _ if v.starts_with('"') => {
                        let ops = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"];
                        format!("{a} {} {v}", ops[rng.below(ops.len())])
                    }
                    _ if v.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                        let ops = ["eq", "ne", "gt", "ge", "lt", "le"];
                        format!("{a} {} {v}", ops[rng.below(ops.len())])
                    }
                    _ => format!("{a} {} {v}", ["eq", "NE"][rng.below(2)]),
                }
            }
            2 => format!("{} and {}", gen(rng, depth - 1, inner), gen(rng, depth - 1, inner)),
            3 => format!("{} or {}", gen(rng, depth - 1, inner), gen(rng, depth - 1, inner)),
            4 => format!("not ({})", gen(rng, depth - 1, inner)),
            5 => format!("({})", gen(rng, depth - 1, inner)),
            _ if inner => gen(rng, depth - 1, inner),
            _ => match rng.below(2) {
                0 => format!("emails[{}]", gen(rng, depth - 1, true)),
                _ => format!("emails[{}].value eq \"x\"", gen(rng, depth - 1, true)),
            },
        }
    }

    fn random_input(rng: &mut Rng) -> String {
        if rng.below(2) == 0 {
            let valid = gen(rng, 3, false);
            return mutate(rng, valid);
        }
        let mut s = String::new();
        let n = rng.below(24);
        for _ in 0..n {
            if rng.below(8) == 0 {
                // arbitrary code point (char::from_u32 skips surrogates)
                if let Some(c) = char::from_u32((rng.next() % 0x11_0000) as u32) {
                    s.push(c);
                }
            } else {
                let frag = FRAGMENTS[rng.below(FRAGMENTS.len())];
                s.push_str(frag);
                if rng.below(2) == 0 {
                    s.push(' ');
                }
            }
        }
        s
    }

    /// A valid filter with a few random byte-level edits (on char boundaries).
    fn mutate(rng: &mut Rng, s: String) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        for _ in 0..=rng.below(3) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => {
                    let frag = FRAGMENTS[rng.below(FRAGMENTS.len())];
                    for (k, c) in frag.chars().enumerate() {
                        chars.insert(at + k, c);
                    }
                }
                _ if at + 1 < chars.len() => chars.swap(at, at + 1),
                _ => {}
            }
        }
        chars.into_iter().collect()
    }

    #[test]
    fn random_inputs_never_panic_and_round_trip() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let info = TestInfo::default();
        let resources = [user(), group(), json!({}), json!(null)];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let s = random_input(&mut rng);
            match parse_filter(&s) {
                Ok(f) => {
                    parsed += 1;
                    round_trip(&f);
                    for r in &resources {
                        let _ = matches(&f, r, &info);
                    }
                }
                Err(e) => assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{s:?}"),
            }
            match parse_patch_path(&s) {
                Ok(pp) => {
                    assert_eq!(parse_patch_path(&pp.to_string()).as_ref(), Ok(&pp), "{s:?}");
                    if let Some(f) = &pp.value_filter {
                        let _ = matches_value(f, &user()["emails"][0], &pp.attr, &info);
                    }
                }
                Err(e) => assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{s:?}"),
            }
            let _ = parse_attr_path(&s);
        }
        assert!(parsed > 1000, "generator should produce some valid filters ({parsed})");
    }

    #[test]
    fn random_valid_filters_round_trip_and_evaluate() {
        let mut rng = Rng(42);
        let info = TestInfo::default();
        let u = user();
        for _ in 0..3_000 {
            let s = gen(&mut rng, 5, false);
            let f = parse_filter(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            round_trip(&f);
            // evaluation agrees after a round trip, and `not` negates
            let r = matches(&f, &u, &info);
            assert_eq!(matches(&p(&f.to_string()), &u, &info), r);
            assert_eq!(matches(&not(f.clone()), &u, &info), !r);
        }
    }
}
