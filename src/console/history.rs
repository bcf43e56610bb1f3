//! What happened to a tenant: its runs, its audit trail (who did what, before and after) and
//! its outbox (events to Moonborn's webhook receiver: pending, failing with their last error,
//! delivered; "retry now").

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{ConsoleTenant, CsrfForm, Signed, Q};
use super::layout::{self, csrf, page, pager, run_badge, tenant_url, time, urlenc, Tab, PAGE};
use crate::http::AppState;
use crate::store::{RunRow, Tenant};

/// The counts of a run's summary as a short line (`3 applied · 1 held`).
fn counts(summary: Option<&Value>) -> String {
    let Some(s) = summary else { return String::new() };
    let mut parts = Vec::new();
    for k in ["applied", "held", "waiting", "stale"] {
        if let Some(n) = s.get(k).and_then(Value::as_u64).filter(|n| *n > 0) {
            parts.push(format!("{n} {k}"));
        }
    }
    if parts.is_empty() {
        parts.push("nothing applied".into());
    }
    parts.join(" · ")
}

/// A table of runs, newest first.
pub fn runs_table(t: &Tenant, runs: &[RunRow]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.muted { "No runs recorded yet (runs with nothing to do leave no record)." }
        } @else {
            div.scroll {
                table.runs {
                    thead { tr {
                        th scope="col" { "Started" } th scope="col" { "Trigger" } th scope="col" { "Scope" }
                        th scope="col" { "Outcome" } th scope="col" { "Planned" } th scope="col" { "Counts" }
                        th scope="col" { "Plan" }
                    } }
                    tbody {
                        @for r in runs {
                            tr data-run=(r.id) {
                                td { (time(Some(&r.started_at))) }
                                td { (r.trigger) }
                                td { (r.summary.as_ref().and_then(|s| s["scope"].as_str()).unwrap_or("—")) }
                                td { (run_badge(&r.status))
                                    @if let Some(e) = &r.error { br; span.bad-text { (e) } } }
                                td { (r.summary.as_ref().and_then(|s| s["line"].as_str()).unwrap_or("")) }
                                td { (counts(r.summary.as_ref())) }
                                td { @if let Some(f) = &r.fingerprint { code title=(f) { (f.get(..12).unwrap_or(f)) } } }
                            }
                        }
                    }
                }
            }
            p.muted { "Tenant " (t.slug) "." }
        }
    }
}

/// `GET …/runs`: the last 200 runs.
pub async fn runs(signed: Signed, ConsoleTenant(t): ConsoleTenant, State(s): State<AppState>) -> Response {
    let runs = match s.store.list_runs(t.id, 200).await {
        Ok(r) => r,
        Err(e) => return layout::store_error(&e),
    };
    let body = html! {
        h1 { "Runs" }
        p { "The controller's runs, newest first: what triggered each, what it covered, what it planned and applied, and the fingerprint of the plan." }
        (runs_table(&t, &runs))
    };
    page(Some(&signed), Some((&t, Tab::Runs)), "Runs", body).into_response()
}

/// A listing's query: the page after `after`.
#[derive(Debug, Deserialize)]
pub struct AfterQuery {
    after: Option<i64>,
    user_id: Option<String>,
}

/// JSON shown compactly (or a dash).
fn json_cell(v: Option<&Value>) -> Markup {
    match v {
        None | Some(Value::Null) => html! { span.muted { "—" } },
        Some(v) => html! { code.json { (v.to_string()) } },
    }
}

/// `GET …/audit[?after=SEQ&user_id=]`: the audit trail, oldest first, a page at a time.
pub async fn audit(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Q(q): Q<AfterQuery>,
) -> Response {
    let entries = match s.store.list_audit(t.id, q.after.unwrap_or(0), PAGE, q.user_id.as_deref()).await {
        Ok(e) => e,
        Err(e) => return layout::store_error(&e),
    };
    let base = match &q.user_id {
        Some(u) => format!("{}?user_id={}", tenant_url(&t.slug, "/audit"), urlenc(u)),
        None => tenant_url(&t.slug, "/audit"),
    };
    let next = (entries.len() as i64 == PAGE).then(|| entries.last().map(|e| e.seq.to_string())).flatten();
    let body = html! {
        h1 { "Audit" }
        p { "Every change to this tenant's users, bindings, tokens and holds: who did it (the controller, or an operator by name), and what it was before and after." }
        div.scroll {
            table.audit {
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "User" } th scope="col" { "Before" } th scope="col" { "After" } } }
                tbody {
                    @for e in &entries {
                        tr data-action=(e.action) {
                            td.num { (e.seq) }
                            td { (time(Some(&e.at))) }
                            td { (e.actor) }
                            td { (e.action) }
                            td { @if let Some(u) = &e.user_id { a href=(tenant_url(&t.slug, &format!("/users/{u}"))) { code { (u.get(..8).unwrap_or(u)) } } } }
                            td { (json_cell(e.before.as_ref())) }
                            td { (json_cell(e.after.as_ref())) }
                        }
                    }
                }
            }
        }
        @if entries.is_empty() { p.muted { "Nothing (more) to show." } }
        (pager(&base, next))
    };
    page(Some(&signed), Some((&t, Tab::Audit)), "Audit", body).into_response()
}

/// `GET …/outbox[?after=SEQ]`: the tenant's events, oldest first, a page at a time.
pub async fn outbox(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Q(q): Q<AfterQuery>,
) -> Response {
    let events = match s.store.outbox_page(t.id, q.after.unwrap_or(0), PAGE, None, q.user_id.as_deref()).await {
        Ok(e) => e,
        Err(e) => return layout::store_error(&e),
    };
    let next = (events.len() as i64 == PAGE).then(|| events.last().map(|e| e.seq.to_string())).flatten();
    let body = html! {
        h1 { "Outbox" }
        p { "Events for Moonborn's webhook receiver (welcome emails, deactivations, holds), delivered in order per user and retried with backoff." }
        form.inline method="post" action=(tenant_url(&t.slug, "/outbox/retry")) {
            (csrf(&signed))
            button type="submit" { "Retry failing events now" }
        }
        div.scroll {
            table.outbox {
                thead { tr { th scope="col" { "#" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Attempts" }
                    th scope="col" { "Created" } th scope="col" { "Next attempt / delivered" } th scope="col" { "Last error" } } }
                tbody {
                    @for e in &events {
                        @let state = if e.status == "delivered" { "delivered" } else if e.last_error.is_some() { "failing" } else { "pending" };
                        tr class={ "outbox-" (state) } {
                            td.num { (e.seq) }
                            td { code { (e.event_type) } }
                            td { span class={ "badge " (match state { "delivered" => "good", "failing" => "bad", _ => "warn" }) } { (state) } }
                            td.num { (e.attempts) }
                            td { (time(Some(&e.created_at))) }
                            td { (time(e.delivered_at.as_deref().or(Some(&e.next_attempt_at)))) }
                            td { @if let Some(err) = &e.last_error { span.bad-text { (err) } } }
                        }
                    }
                }
            }
        }
        @if events.is_empty() { p.muted { "Nothing (more) to show." } }
        (pager(&match &q.user_id {
            Some(u) => format!("{}?user_id={}", tenant_url(&t.slug, "/outbox"), urlenc(u)),
            None => tenant_url(&t.slug, "/outbox"),
        }, next))
    };
    page(Some(&signed), Some((&t, Tab::Outbox)), "Outbox", body).into_response()
}

/// `POST …/outbox/retry`: the tenant's failing events are due now; back to the outbox.
pub async fn retry_outbox(
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    CsrfForm(signed, _): CsrfForm<std::collections::HashMap<String, String>>,
) -> Response {
    match s.store.retry_tenant_outbox(t.id).await {
        Ok(n) => {
            tracing::info!(tenant = %t.slug, operator = %signed.name(), events = n, "outbox retry now");
            Redirect::to(&tenant_url(&t.slug, "/outbox")).into_response()
        }
        Err(e) => layout::store_error(&e),
    }
}
