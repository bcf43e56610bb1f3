//! The Tenants page (`/console`): every tenant the operator may see, its state at a glance,
//! held tenants first; and a tenant's overview (`/console/tenants/{slug}`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::auth::{ConsoleTenant, Signed};
use super::layout::{self, page, run_badge, state_badge, tenant_url, time, Tab};
use crate::http::AppState;
use crate::store::{StoreError, Tenant, TenantStatus};

/// A tenant's state word: `deleted` for an offboarded tenant, else its status's.
fn state_of(t: &Tenant, st: &TenantStatus) -> &'static str {
    if t.deleted_at.is_some() {
        "deleted"
    } else {
        st.state
    }
}

/// What a held tenant holds, as a line.
fn held_line(st: &TenantStatus) -> Option<String> {
    st.held.as_ref().map(|h| {
        format!("{} destructive change(s) held since {}", h["destructive"], h["since"].as_str().unwrap_or("?"))
    })
}

/// `GET /console`: the Tenants page.
pub async fn list(signed: Signed, State(s): State<AppState>) -> Response {
    match list_page(&signed, &s).await {
        Ok(r) => r,
        Err(e) => layout::store_error(&e),
    }
}

async fn list_page(signed: &Signed, s: &AppState) -> Result<Response, StoreError> {
    let mut rows = Vec::new();
    for t in s.store.list_tenants().await?.into_iter().filter(|t| signed.op.sees(t)) {
        let st = s.store.tenant_status(t.id).await?;
        let users = s.store.scim_user_count(t.id).await?;
        rows.push((t, st, users));
    }
    // Held first, then failing, then the rest by name: what needs a person comes first.
    let rank = |t: &Tenant, st: &TenantStatus| match state_of(t, st) {
        "held" => 0,
        "failing" => 1,
        "waiting" | "drifted" => 2,
        "deleted" => 4,
        _ => 3,
    };
    rows.sort_by(|a, b| rank(&a.0, &a.1).cmp(&rank(&b.0, &b.1)).then_with(|| a.0.slug.cmp(&b.0.slug)));
    let held = rows.iter().filter(|(t, st, _)| state_of(t, st) == "held").count();
    let body = html! {
        h1 { "Tenants" }
        @if held > 0 {
            p.alert.bad role="alert" {
                strong { (held) " tenant(s) held" } ": the safety valve holds destructive changes for an operator's review."
            }
        }
        @if rows.is_empty() {
            p { "No tenants yet. Create one with " code { "moonborn-scim tenant create SLUG" } "." }
        } @else {
            div.scroll {
                table.tenants {
                    caption.sr { "Every tenant's state" }
                    thead { tr { th scope="col" { "Tenant" } th scope="col" { "State" } th scope="col" { "Tier" }
                        th scope="col" { "SCIM users" } th scope="col" { "Last run" } } }
                    tbody {
                        @for (t, st, users) in &rows {
                            @let state = state_of(t, st);
                            tr class={ "state-" (state) } data-tenant=(t.slug) {
                                th scope="row" { a href=(tenant_url(&t.slug, "")) { (t.slug) } }
                                td {
                                    (state_badge(state))
                                    @if let Some(h) = held_line(st) { " " a href=(tenant_url(&t.slug, "/plan")) { (h) } }
                                }
                                td { (t.tier.as_str()) }
                                td.num { (users) }
                                td {
                                    @if let Some(r) = &st.last_run {
                                        (run_badge(&r.status)) " " (time(r.finished_at.as_deref().or(Some(&r.started_at))))
                                        " " span.muted { "(" (r.trigger) ")" }
                                    } @else { span.muted { "never" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(Some(signed), None, "Tenants", body).into_response())
}

/// `GET /console/tenants/{slug}`: the tenant at a glance, with links to its pages.
pub async fn overview(signed: Signed, ConsoleTenant(t): ConsoleTenant, State(s): State<AppState>) -> Response {
    match overview_page(&signed, &t, &s).await {
        Ok(r) => r,
        Err(e) => layout::store_error(&e),
    }
}

async fn overview_page(signed: &Signed, t: &Tenant, s: &AppState) -> Result<Response, StoreError> {
    let st = s.store.tenant_status(t.id).await?;
    let users = s.store.scim_user_count(t.id).await?;
    let runs = s.store.list_runs(t.id, 5).await?;
    let c = s.store.controller_state(t.id).await?;
    let state = state_of(t, &st);
    let body = html! {
        h1 { "Tenant " (t.slug) " " (state_badge(state)) }
        @if let Some(h) = held_line(&st) {
            p.alert.bad role="alert" {
                strong { "Held: " } (h) ". "
                @if let Some(r) = st.held.as_ref().and_then(|h| h["reason"].as_str()) { (r) ". " }
                a href=(tenant_url(&t.slug, "/plan")) { "Review the plan" }
            }
        }
        @if let Some(w) = &st.waiting_since {
            p.alert.warn { "Destructive pushes since " (w) " wait for the burst to settle before they are judged." }
        }
        dl.facts {
            dt { "Tier" } dd { (t.tier.as_str()) }
            dt { "SCIM users" } dd { (users) }
            dt { "Safety valve" } dd {
                @if c.safety.enabled { "holds more than " (c.safety.percent) "% of at least " (c.safety.min_users) " users" }
                @else { "off" }
            }
            dt { "Last full run" } dd { (time(st.last_full_run_at.as_deref())) }
            dt { "Created" } dd { (time(Some(&t.created_at))) }
        }
        h2 { "Recent runs" }
        (super::history::runs_table(t, &runs))
        p { a href=(tenant_url(&t.slug, "/runs")) { "All runs" } }
    };
    Ok(page(Some(signed), Some((t, Tab::Overview)), "Overview", body).into_response())
}
