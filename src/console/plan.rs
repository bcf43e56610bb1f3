//! The Plan page: the diff report for review at scale — counts by kind, the changes grouped by
//! kind in compact tables (email, name, roles, change) with a filter, privileged roles flagged —
//! and, for a held plan, Approve (bound to the fingerprint shown: a stale one is refused and the
//! new plan shown) and Release. The bindings preview (`scim.rs`) shows its plan with the same
//! tables.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{ConsoleTenant, CsrfForm, Signed, Q};
use super::layout::{self, csrf, page, tenant_url, Tab, PRIVILEGED};
use crate::controller::{Approval, ComputedPlan, ControllerError, RunOutcome, Target, Trigger};
use crate::domain::{Change, ChangeKind};
use crate::http::AppState;
use crate::store::Tenant;

/// Rows the page shows at most (after the filter); the counts always cover the whole plan.
const MAX_ROWS: usize = 1000;

/// The kinds in the order a reviewer reads them: what takes access away first.
const KINDS: [ChangeKind; 8] = [
    ChangeKind::Delete,
    ChangeKind::Purge,
    ChangeKind::Deactivate,
    ChangeKind::Update,
    ChangeKind::Create,
    ChangeKind::Reactivate,
    ChangeKind::Restore,
    ChangeKind::Adopt,
];

/// `GET …/plan` query: a filter on the kind and on the text (email, name, role).
#[derive(Debug, Default, Deserialize)]
pub struct PlanQuery {
    kind: Option<String>,
    q: Option<String>,
}

/// Roles gained and lost by a change.
fn role_delta(c: &Change) -> (Vec<String>, Vec<String>) {
    let empty = BTreeSet::new();
    let before = c.before.as_ref().map_or(&empty, |b| &b.roles);
    let after = &c.after.roles;
    (after.difference(before).cloned().collect(), before.difference(after).cloned().collect())
}

/// What else a change does, in a few words.
fn what(c: &Change) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &c.before {
        if b.email != c.after.email {
            parts.push(format!("email {} → {}", b.email, c.after.email));
        }
        if b.display_name != c.after.display_name {
            parts.push(format!(
                "name {} → {}",
                b.display_name.as_deref().unwrap_or("—"),
                c.after.display_name.as_deref().unwrap_or("—")
            ));
        }
        if b.status != c.after.status {
            parts.push(format!("status {} → {}", b.status.as_str(), c.after.status.as_str()));
        }
        if b.contact_email != c.after.contact_email {
            parts.push("contact email".into());
        }
    } else {
        parts.push(format!("new, {}", c.after.status.as_str()));
    }
    if c.drift {
        parts.push("reverts a hand edit".into());
    }
    parts.join("; ")
}

/// Whether a change grants or takes away a privileged role (or touches a user who has one).
fn privileged(c: &Change) -> bool {
    let has = |roles: &BTreeSet<String>| roles.iter().any(|r| PRIVILEGED.contains(&r.as_str()));
    has(&c.after.roles) || c.before.as_ref().is_some_and(|b| has(&b.roles))
}

/// Whether a change matches the text filter (email, name, roles; case-insensitive).
fn matches(c: &Change, q: &str) -> bool {
    let q = q.to_lowercase();
    let mut hay = c.after.email.to_lowercase();
    for r in [c.before.as_ref(), Some(&c.after)].into_iter().flatten() {
        hay.push(' ');
        hay.push_str(&r.email.to_lowercase());
        if let Some(n) = &r.display_name {
            hay.push(' ');
            hay.push_str(&n.to_lowercase());
        }
        for role in &r.roles {
            hay.push(' ');
            hay.push_str(role);
        }
    }
    hay.contains(&q)
}

/// The search text of a row, for the page's filter box (script).
fn search_text(c: &Change) -> String {
    let mut s = c.after.email.clone();
    if let Some(n) = &c.after.display_name {
        s.push(' ');
        s.push_str(n);
    }
    for r in &c.after.roles {
        s.push(' ');
        s.push_str(r);
    }
    s.to_lowercase()
}

/// The changes, grouped by kind, as compact tables (at most `MAX_ROWS` rows in all).
pub fn changes_tables(slug: &str, changes: &[&Change]) -> Markup {
    let mut left = MAX_ROWS;
    let groups: Vec<(ChangeKind, Vec<&Change>, usize)> = KINDS
        .iter()
        .filter_map(|k| {
            let of_kind: Vec<&Change> = changes.iter().copied().filter(|c| c.kind == *k).collect();
            let shown = of_kind.len().min(left);
            left -= shown;
            (!of_kind.is_empty()).then_some((*k, of_kind, shown))
        })
        .collect();
    html! {
        @for (kind, of_kind, shown) in &groups {
            section class={ "kind kind-" (kind.as_str()) } {
                h3 { (kind.as_str()) " " span.count { "(" (of_kind.len()) ")" } }
                div.scroll {
                    table.changes {
                        thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Roles" } th scope="col" { "Change" } } }
                        tbody {
                            @for c in of_kind.iter().take(*shown) {
                                @let (gained, lost) = role_delta(c);
                                tr class={ "change-" (kind.as_str()) @if privileged(c) { " privileged" } } data-search=(search_text(c)) {
                                    td {
                                        @if *kind == ChangeKind::Create { (c.after.email) }
                                        @else { a href=(tenant_url(slug, &format!("/users/{}", c.user_id))) { (c.after.email) } }
                                    }
                                    td { (c.after.display_name.as_deref().unwrap_or("")) }
                                    td {
                                        @for r in &c.after.roles {
                                            @if gained.contains(r) { ins.role title="gains" { "+" (r) } } @else { span.role { (r) } }
                                            " "
                                        }
                                        @for r in &lost { del.role title="loses" { "−" (r) } " " }
                                        @if privileged(c) { strong.flag title="a privileged role (admin, billing)" { "privileged" } }
                                    }
                                    td { (what(c)) }
                                }
                            }
                        }
                    }
                }
                @if of_kind.len() > *shown { p.muted { "… and " (of_kind.len() - shown) " more; narrow the filter to see them." } }
            }
        }
    }
}

/// The counts of a plan by kind (each a link that filters to it).
fn counts(slug: &str, p: &ComputedPlan) -> Markup {
    let s = &p.summary;
    let by = [
        (ChangeKind::Delete, s.delete),
        (ChangeKind::Purge, s.purge),
        (ChangeKind::Deactivate, s.deactivate),
        (ChangeKind::Update, s.update),
        (ChangeKind::Create, s.create),
        (ChangeKind::Reactivate, s.reactivate),
        (ChangeKind::Restore, s.restore),
        (ChangeKind::Adopt, s.adopt),
    ];
    html! {
        ul.counts aria-label="Changes by kind" {
            @for (k, n) in by {
                li class={ "kind-" (k.as_str()) } {
                    a href={ (tenant_url(slug, "/plan")) "?kind=" (k.as_str()) } { strong { (n) } " " (k.as_str()) }
                }
            }
        }
    }
}

/// The Plan page of a computed plan, with an optional alert (`stale`: the approval was refused).
fn plan_page(signed: &Signed, t: &Tenant, p: &ComputedPlan, q: &PlanQuery, alert: Option<Markup>) -> Markup {
    let kind = q.kind.as_deref().filter(|k| !k.is_empty());
    let text = q.q.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let shown: Vec<&Change> = p
        .changes
        .iter()
        .filter(|c| kind.is_none_or(|k| c.kind.as_str() == k))
        .filter(|c| text.is_none_or(|q| matches(c, q)))
        .collect();
    let destructive = p.summary.destructive();
    let body = html! {
        h1 { "Plan" }
        @if let Some(a) = alert { (a) }
        @if let Some(h) = &p.held {
            div.alert.bad role="alert" {
                p { strong { "Held. " } (h.reason) "." }
                p { "Nothing destructive is applied until an operator approves this plan or releases the hold." }
                div.actions {
                    form method="post" action=(tenant_url(&t.slug, "/plan/approve"))
                        data-confirm={ "Approve plan " (p.fingerprint.get(..12).unwrap_or(&p.fingerprint)) ": apply all "
                            (p.changes.len()) " changes, " (destructive) " of them destructive?" } {
                        (csrf(signed))
                        input type="hidden" name="fingerprint" value=(p.fingerprint);
                        button.danger type="submit" { "Approve this plan" }
                    }
                    form method="post" action=(tenant_url(&t.slug, "/plan/release"))
                        data-confirm="Release the hold: apply what the safety valve holds, once?" {
                        (csrf(signed))
                        button type="submit" { "Release the hold" }
                    }
                }
            }
        }
        @if p.waiting > 0 {
            p.alert.warn { (p.waiting) " destructive change(s) wait for the burst of pushes to settle"
                @if let Some(j) = &p.judged_by { " (judged by " (j) ")" } "." }
        }
        dl.facts {
            dt { "Computed at" } dd { (crate::domain::now()) }
            dt { "Fingerprint" } dd { code #fingerprint { (p.fingerprint) } }
            dt { "Summary" } dd { (p.summary.line()) }
        }
        (counts(&t.slug, p))
        form.filter method="get" action=(tenant_url(&t.slug, "/plan")) role="search" {
            label for="kind" { "Kind" }
            select #kind name="kind" {
                option value="" { "all" }
                @for k in KINDS {
                    @if kind == Some(k.as_str()) { option value=(k.as_str()) selected { (k.as_str()) } }
                    @else { option value=(k.as_str()) { (k.as_str()) } }
                }
            }
            label for="q" { "Filter" }
            input #q type="search" name="q" value=(text.unwrap_or("")) placeholder="email, name or role" data-filter="table.changes tbody tr";
            button type="submit" { "Filter" }
        }
        @if p.changes.is_empty() {
            p.good-text { "No changes: Moonborn matches the desired state." }
        } @else {
            p.muted { "Showing " (shown.len().min(MAX_ROWS)) " of " (p.changes.len()) " changes." }
            (changes_tables(&t.slug, &shown))
        }
        @for c in &p.conflicts {
            p.alert.warn { strong { "Conflict: " } (crate::controller::report::conflict_line(c)) }
        }
    };
    page(Some(signed), Some((t, Tab::Plan)), "Plan", body)
}

/// `GET …/plan`: the whole-tenant plan as it stands.
pub async fn page_handler(
    signed: Signed,
    t: &Tenant,
    s: &AppState,
    q: &PlanQuery,
    status: StatusCode,
    alert: Option<Markup>,
) -> Response {
    let p = match s.controller.plan(t, Target::Full).await {
        Ok(p) => p,
        Err(e) => return controller_error(&signed, &e),
    };
    let html = plan_page(&signed, t, &p, q, alert);
    drop(p);
    // A whole-tenant plan read every user: give that memory back, as after a full run.
    s.store.release_memory().await;
    (status, html).into_response()
}

/// `GET …/plan[?kind=&q=]`.
pub async fn show(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Q(q): Q<PlanQuery>,
) -> Response {
    page_handler(signed, &t, &s, &q, StatusCode::OK, None).await
}

/// A controller error as a page.
pub fn controller_error(signed: &Signed, e: &ControllerError) -> Response {
    match e {
        ControllerError::Store(s) => layout::store_error(s),
        ControllerError::Busy | ControllerError::LostLease(_) => layout::error_page(
            Some(signed),
            StatusCode::CONFLICT,
            "Busy",
            "Another process is reconciling this tenant; nothing was changed. Try again in a moment.",
        ),
        other => layout::error_page(Some(signed), StatusCode::CONFLICT, "Not applied", &other.to_string()),
    }
}

/// The page after a run an operator caused (approval or release).
fn outcome_page(signed: &Signed, t: &Tenant, title: &str, o: &RunOutcome) -> Response {
    let body = html! {
        h1 { (title) }
        p.alert.good role="status" {
            "Run " code { (o.run_id) } " " (o.status.as_str()) ": " (o.applied) " change(s) applied, "
            (o.applied_destructive) " of them destructive."
        }
        p { a href=(tenant_url(&t.slug, "/runs")) { "See the runs" } " · " a href=(tenant_url(&t.slug, "/audit")) { "See the audit trail" }
            " · " a href=(tenant_url(&t.slug, "/plan")) { "See the plan now" } }
    };
    page(Some(signed), Some((t, Tab::Plan)), title, body).into_response()
}

/// `POST …/plan/approve` form.
#[derive(Debug, Deserialize)]
pub struct ApproveForm {
    fingerprint: String,
}

/// `POST …/plan/approve` (`fingerprint`): the plan applied whole if it is still the one shown;
/// a stale fingerprint is refused (409) with the new plan.
pub async fn approve(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    CsrfForm(signed, f): CsrfForm<ApproveForm>,
) -> Response {
    let fp = f.fingerprint.trim().to_ascii_lowercase();
    if fp.is_empty() || fp.len() > 128 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return layout::error_page(
            Some(&signed),
            StatusCode::BAD_REQUEST,
            "Not a fingerprint",
            "The form did not carry a plan fingerprint.",
        );
    }
    let actor = signed.op.actor();
    match s.controller.reconcile(&t, Trigger::Operator, Target::Full, Approval::Fingerprint(&fp, &actor)).await {
        Ok(o) => {
            let res = outcome_page(&signed, &t, "Plan approved", &o);
            drop(o);
            s.store.release_memory().await;
            res
        }
        Err(ControllerError::StalePlan { shown, current }) => {
            let alert = html! {
                p.alert.bad role="alert" {
                    strong { "Not applied: the plan changed since you reviewed it. " }
                    "You approved " code { (shown.get(..12).unwrap_or(&shown)) } "; the plan is now "
                    code { (current.get(..12).unwrap_or(&current)) } ". Review the new plan below."
                }
            };
            page_handler(signed, &t, &s, &PlanQuery::default(), StatusCode::CONFLICT, Some(alert)).await
        }
        Err(ControllerError::AlreadyApplied { run_id, at, .. }) => {
            let body = html! {
                h1 { "Already applied" }
                p.alert.good role="status" { "This plan was applied by run " code { (run_id) } " at " (at) "; nothing more to approve." }
                p { a href=(tenant_url(&t.slug, "/runs")) { "See the runs" } }
            };
            page(Some(&signed), Some((&t, Tab::Plan)), "Already applied", body).into_response()
        }
        Err(e) => controller_error(&signed, &e),
    }
}

/// `POST …/plan/release`: what the safety valve holds is applied, once.
pub async fn release(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    CsrfForm(signed, _): CsrfForm<std::collections::HashMap<String, String>>,
) -> Response {
    match s.controller.release(&t, &signed.op.actor()).await {
        Ok(Some(o)) => {
            let res = outcome_page(&signed, &t, "Hold released", &o);
            drop(o);
            s.store.release_memory().await;
            res
        }
        Ok(None) => {
            let alert = html! { p.alert.warn role="status" { "The tenant holds nothing; nothing was run." } };
            page_handler(signed, &t, &s, &PlanQuery::default(), StatusCode::OK, Some(alert)).await
        }
        Err(e) => controller_error(&signed, &e),
    }
}
