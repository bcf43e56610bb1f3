//! The plan rendered for people: a header per user, a unified diff of the Moonborn record
//! before → after (the `similar` crate) with unchanged fields collapsed, and a summary line; as
//! text (coloured on a terminal), as stable JSON, and as an HTML page.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::ComputedPlan;
use crate::domain::{Change, ChangeKind, Record, Status};

/// The record as the lines a diff compares, one field a line, in a fixed order.
pub fn record_lines(r: Option<&Record>) -> String {
    let Some(r) = r else { return String::new() };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let roles =
        if r.roles.is_empty() { "-".to_string() } else { r.roles.iter().cloned().collect::<Vec<_>>().join(", ") };
    [
        format!("email: {}", if r.email.is_empty() { "-" } else { &r.email }),
        format!("display_name: {}", opt(&r.display_name)),
        format!("contact_email: {}", opt(&r.contact_email)),
        format!("status: {}", r.status.as_str()),
        format!("roles: {roles}"),
        format!("managed_by: {}", r.managed_by.as_str()),
        format!("scim_id: {}", opt(&r.scim_id)),
        format!("external_id: {}", opt(&r.external_id)),
        format!("purge_after: {}", opt(&r.purge_after)),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect()
}

/// The header line of a change.
pub fn header(c: &Change) -> String {
    let email = if c.after.email.is_empty() {
        c.before.as_ref().map(|b| b.email.clone()).unwrap_or_default()
    } else {
        c.after.email.clone()
    };
    let what = match c.kind {
        // `apply` queues the welcome email of an active user only (`user.provisioned`).
        ChangeKind::Create if c.after.status == Status::Active => "will be created (welcome email queued)".to_string(),
        ChangeKind::Create => "will be created disabled (no welcome email)".to_string(),
        ChangeKind::Update => "will be updated".to_string(),
        ChangeKind::Deactivate => "will be deactivated (signed out, sessions revoked)".to_string(),
        ChangeKind::Reactivate => "will be reactivated".to_string(),
        ChangeKind::Delete => {
            format!("will be deleted (soft; purge after {})", c.after.purge_after.as_deref().unwrap_or("-"))
        }
        ChangeKind::Restore => "will be restored".to_string(),
        ChangeKind::Adopt => "will be adopted (manual invite → SCIM-managed)".to_string(),
        ChangeKind::Purge => "will be purged (personal data removed)".to_string(),
    };
    let cause = if c.drift { " — drift repair (reverts a hand edit made in Moonborn)" } else { "" };
    format!("user {email} {what}{cause}")
}

/// Why a change happens: `drift` when it reverts a hand edit made in Moonborn, else `idp` (the
/// desired state: what the IdP sent, through the bindings; a purge after the IdP's deletion).
pub fn cause(c: &Change) -> &'static str {
    if c.drift {
        "drift"
    } else {
        "idp"
    }
}

/// What a conflict means, in one line.
pub fn conflict_line(c: &super::plan::Conflict) -> String {
    format!(
        "user {} (SCIM id {}) cannot get the sign-in email {}: user {} holds it",
        c.user_id,
        c.scim_id.as_deref().unwrap_or("-"),
        c.email,
        c.held_by
    )
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLine {
    Removed(String),
    Added(String),
    /// `n` unchanged fields, collapsed.
    Unchanged(usize),
}

/// The diff of a change, unchanged runs collapsed.
pub fn diff_lines(c: &Change) -> Vec<DiffLine> {
    let before = record_lines(c.before.as_ref());
    let after = record_lines(Some(&c.after));
    let diff = TextDiff::from_lines(&before, &after);
    let mut out: Vec<DiffLine> = Vec::new();
    for ch in diff.iter_all_changes() {
        let text = ch.value().trim_end_matches('\n').to_string();
        match ch.tag() {
            ChangeTag::Delete => out.push(DiffLine::Removed(text)),
            ChangeTag::Insert => out.push(DiffLine::Added(text)),
            ChangeTag::Equal => match out.last_mut() {
                Some(DiffLine::Unchanged(n)) => *n += 1,
                _ => out.push(DiffLine::Unchanged(1)),
            },
        }
    }
    out
}

/// The unified diff text of a change (what the JSON carries as `diff`).
pub fn diff_text(c: &Change) -> String {
    let mut s = String::from("--- before\n+++ after\n");
    for l in diff_lines(c) {
        match l {
            DiffLine::Removed(t) => s.push_str(&format!("-{t}\n")),
            DiffLine::Added(t) => s.push_str(&format!("+{t}\n")),
            DiffLine::Unchanged(n) => s.push_str(&format!(" … {n} unchanged field{}\n", if n == 1 { "" } else { "s" })),
        }
    }
    s
}

/// What waits for a burst of destructive pushes to settle, in one sentence (none when nothing
/// waits).
pub fn waiting_line(p: &ComputedPlan) -> Option<String> {
    (p.waiting > 0).then(|| {
        format!(
            "{} deactivations and deletions wait for the tenant's burst of destructive pushes to settle; \
             they are judged together by {}.",
            p.waiting,
            p.judged_by.as_deref().unwrap_or("the next run")
        )
    })
}

/// The text report; `color` adds ANSI colours (for a terminal).
pub fn text(p: &ComputedPlan, color: bool) -> String {
    let (red, green, bold, dim, reset) =
        if color { ("\x1b[31m", "\x1b[32m", "\x1b[1m", "\x1b[2m", "\x1b[0m") } else { ("", "", "", "", "") };
    let mut s = format!("Tenant {} — plan {}\n", p.tenant, p.fingerprint);
    if let Some(h) = &p.held {
        s.push_str(&format!(
            "{bold}HELD{reset}: {}. Deactivations and deletions wait for an operator: approve this plan \
             (moonborn-scim approve --tenant {} {}) or release the hold.\n",
            h.reason, p.tenant, h.fingerprint
        ));
    }
    if let Some(w) = waiting_line(p) {
        s.push_str(&format!("{bold}WAITING{reset}: {w}\n"));
    }
    s.push('\n');
    for c in &p.changes {
        s.push_str(&format!("{bold}{}{reset}\n", header(c)));
        s.push_str(&format!("{dim}--- before\n+++ after{reset}\n"));
        for l in diff_lines(c) {
            match l {
                DiffLine::Removed(t) => s.push_str(&format!("{red}-{t}{reset}\n")),
                DiffLine::Added(t) => s.push_str(&format!("{green}+{t}{reset}\n")),
                DiffLine::Unchanged(n) => {
                    s.push_str(&format!("{dim} … {n} unchanged field{}{reset}\n", if n == 1 { "" } else { "s" }))
                }
            }
        }
        s.push('\n');
    }
    if p.changes.is_empty() {
        s.push_str("No changes: Moonborn matches the desired state.\n\n");
    }
    for c in &p.conflicts {
        s.push_str(&format!("{bold}CONFLICT{reset}: {}\n", conflict_line(c)));
    }
    if !p.conflicts.is_empty() {
        s.push('\n');
    }
    s.push_str(&p.summary.line());
    s.push('\n');
    s
}

/// The JSON report (schema documented in the README; fields only ever added).
pub fn json(p: &ComputedPlan) -> Value {
    serde_json::to_value(JsonReport(p)).unwrap_or(Value::Null)
}

/// The JSON report as it is written: serializing this gives the same document as `json`, one
/// change at a time, without building the `serde_json::Value` tree (several small allocations
/// per field) beside the text.
#[derive(Clone, Copy)]
pub struct JsonReport<'a>(pub &'a ComputedPlan);

/// A sequence serialized from a fresh iterator (each element built as it is written).
struct Lazy<F>(F);

impl<F, I> serde::Serialize for Lazy<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

#[derive(serde::Serialize)]
struct ConflictEntry<'a> {
    user_id: &'a str,
    scim_id: &'a Option<String>,
    email: &'a str,
    held_by: &'a str,
    message: String,
}

#[derive(serde::Serialize)]
struct ChangeEntry<'a> {
    kind: ChangeKind,
    cause: &'static str,
    user_id: &'a str,
    header: String,
    before: &'a Option<Record>,
    before_version: &'a Option<i64>,
    after: &'a Record,
    diff: String,
}

/// The report's `waiting`: destructive changes waiting for a burst of pushes to settle.
#[derive(serde::Serialize)]
struct Waiting<'a> {
    destructive: u64,
    judged_by: Option<&'a str>,
}

impl serde::Serialize for JsonReport<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let p = self.0;
        let mut m = s.serialize_map(Some(9))?;
        m.serialize_entry("schema", "moonborn-scim/plan/v1")?;
        m.serialize_entry("tenant", &p.tenant)?;
        m.serialize_entry("fingerprint", &p.fingerprint)?;
        m.serialize_entry("summary", &p.summary)?;
        m.serialize_entry("summary_line", &p.summary.line())?;
        m.serialize_entry("held", &p.held)?;
        let waiting = (p.waiting > 0).then_some(Waiting { destructive: p.waiting, judged_by: p.judged_by.as_deref() });
        m.serialize_entry("waiting", &waiting)?;
        m.serialize_entry(
            "conflicts",
            &Lazy(|| {
                p.conflicts.iter().map(|c| ConflictEntry {
                    user_id: &c.user_id,
                    scim_id: &c.scim_id,
                    email: &c.email,
                    held_by: &c.held_by,
                    message: conflict_line(c),
                })
            }),
        )?;
        m.serialize_entry(
            "changes",
            &Lazy(|| {
                p.changes.iter().map(|c| ChangeEntry {
                    kind: c.kind,
                    cause: cause(c),
                    user_id: &c.user_id,
                    header: header(c),
                    before: &c.before,
                    before_version: &c.before_version,
                    after: &c.after,
                    diff: diff_text(c),
                })
            }),
        )?;
        m.end()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The HTML report: one self-contained page.
pub fn html(p: &ComputedPlan) -> String {
    let mut body = String::new();
    if let Some(h) = &p.held {
        body.push_str(&format!(
            "<p class=\"held\"><strong>Held:</strong> {}. Approve plan <code>{}</code> \
             (<code>moonborn-scim approve --tenant {} {}</code>) or release the hold.</p>",
            esc(&h.reason),
            esc(&h.fingerprint),
            esc(&p.tenant),
            esc(&h.fingerprint)
        ));
    }
    if let Some(w) = waiting_line(p) {
        body.push_str(&format!("<p class=\"held\"><strong>Waiting:</strong> {}</p>", esc(&w)));
    }
    for c in &p.changes {
        body.push_str(&format!(
            "<section><h2 class=\"{} {}\">{}</h2><pre>",
            c.kind.as_str(),
            cause(c),
            esc(&header(c))
        ));
        for l in diff_lines(c) {
            match l {
                DiffLine::Removed(t) => body.push_str(&format!("<del>-{}</del>\n", esc(&t))),
                DiffLine::Added(t) => body.push_str(&format!("<ins>+{}</ins>\n", esc(&t))),
                DiffLine::Unchanged(n) => body.push_str(&format!(
                    "<span class=\"same\"> … {n} unchanged field{}</span>\n",
                    if n == 1 { "" } else { "s" }
                )),
            }
        }
        body.push_str("</pre></section>");
    }
    if p.changes.is_empty() {
        body.push_str("<p>No changes: Moonborn matches the desired state.</p>");
    }
    for c in &p.conflicts {
        body.push_str(&format!("<p class=\"held\"><strong>Conflict:</strong> {}</p>", esc(&conflict_line(c))));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Plan for {t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         pre{{background:#f6f8fa;padding:.75rem;border-radius:6px}}del{{color:#b31d28;text-decoration:none}}\
         ins{{color:#22863a;text-decoration:none}}.same{{color:#6a737d}}h2{{font-size:1rem}}\
         .held{{background:#fff5b1;padding:.5rem}}.summary{{font-weight:bold}}</style></head><body>\
         <h1>Plan for {t}</h1><p>Fingerprint <code>{f}</code></p><p class=\"summary\">{s}</p>{body}\
         <p class=\"summary\">{s}</p></body></html>",
        t = esc(&p.tenant),
        f = esc(&p.fingerprint),
        s = esc(&p.summary.line()),
    )
}
