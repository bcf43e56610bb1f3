//! The frame of every console page (header, tenant tabs, footer), the small pieces pages share
//! (state badges, times, pagination, CSRF fields), error pages, and the embedded assets.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::session::Signed;
use crate::store::{StoreError, Tenant};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Roles that deserve a second look when granted or taken away.
pub const PRIVILEGED: &[&str] = &["admin", "billing"];

/// Rows a listing shows per page.
pub const PAGE: i64 = 100;

/// A tenant page's tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Scim,
    Plan,
    Runs,
    Audit,
    Outbox,
    Users,
}

impl Tab {
    const ALL: [Tab; 7] = [Tab::Overview, Tab::Scim, Tab::Plan, Tab::Runs, Tab::Audit, Tab::Outbox, Tab::Users];

    fn label(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Scim => "SSO → SCIM",
            Tab::Plan => "Plan",
            Tab::Runs => "Runs",
            Tab::Audit => "Audit",
            Tab::Outbox => "Outbox",
            Tab::Users => "Users",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Tab::Overview => "",
            Tab::Scim => "/scim",
            Tab::Plan => "/plan",
            Tab::Runs => "/runs",
            Tab::Audit => "/audit",
            Tab::Outbox => "/outbox",
            Tab::Users => "/users",
        }
    }
}

/// A tenant's console URL, plus `rest` (`/plan`, …).
pub fn tenant_url(slug: &str, rest: &str) -> String {
    format!("/console/tenants/{slug}{rest}")
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.session.csrf); }
}

/// A whole page: `tenant` (with `tab` marked) adds the tenant's tabs.
pub fn page(signed: Option<&Signed>, tenant: Option<(&Tenant, Tab)>, title: &str, body: Markup) -> Markup {
    let full_title = match tenant {
        Some((t, _)) => format!("{title} · {} · Moonborn SCIM", t.slug),
        None => format!("{title} · Moonborn SCIM"),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (full_title) }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Moonborn SCIM" }
                    @if let Some(s) = signed {
                        nav.who aria-label="Account" {
                            span { "Signed in as " strong { (s.name()) }
                                @if let Some(scope) = s.scope() { " · tenant " (scope) } }
                            form.inline method="post" action="/console/sign-out" {
                                (csrf(s))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                @if let Some((t, active)) = tenant {
                    nav.tabs aria-label="Tenant" {
                        span.crumb { a href="/console" { "Tenants" } " / " strong { (t.slug) } }
                        ul {
                            @for tab in Tab::ALL {
                                li {
                                    @if tab == active {
                                        a aria-current="page" href=(tenant_url(&t.slug, tab.path())) { (tab.label()) }
                                    } @else {
                                        a href=(tenant_url(&t.slug, tab.path())) { (tab.label()) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A tenant state as a coloured badge (`held`, `failing`, `waiting`, `drifted`, `in_sync`,
/// `deleted`).
pub fn state_badge(state: &str) -> Markup {
    let (class, label) = match state {
        "in_sync" => ("good", "In sync"),
        "drifted" => ("warn", "Drifted"),
        "waiting" => ("warn", "Waiting"),
        "held" => ("bad", "Held"),
        "failing" => ("bad", "Failing"),
        "deleted" => ("muted", "Deleted"),
        other => ("muted", other),
    };
    html! { span class={ "badge " (class) } data-state=(state) { (label) } }
}

/// A run status as a badge.
pub fn run_badge(status: &str) -> Markup {
    let class = match status {
        "applied" | "noop" | "dry_run" => "good",
        "held" | "failed" => "bad",
        "partial" | "running" | "waiting" => "warn",
        _ => "muted",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// A stored time, shortened for tables (the full value on hover).
pub fn time(t: Option<&str>) -> Markup {
    match t {
        Some(t) => html! { time datetime=(t) title=(t) { (t.get(..19).unwrap_or(t).replace('T', " ")) } },
        None => html! { span.muted { "—" } },
    }
}

/// A page with one message, answered with `status`.
pub fn error_page(signed: Option<&Signed>, status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p.alert.bad role="alert" { (message) }
        p { a href="/console" { "Back to the tenants" } }
    };
    (status, page(signed, None, title, body)).into_response()
}

/// A store failure as a page: 503 when the store says to try again, else 500 (logged; the
/// details stay in the log).
pub fn store_error(e: &StoreError) -> Response {
    if e.is_transient() || e.shortage().is_some() {
        tracing::warn!(error = %e, "console: a passing database failure");
        return error_page(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "The database is busy; nothing was changed. Try again in a moment.",
        );
    }
    tracing::error!(error = %e, "console request failed");
    error_page(
        None,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The request failed; the service log says why.",
    )
}

/// Unknown console paths.
pub async fn not_found() -> Response {
    error_page(None, StatusCode::NOT_FOUND, "Not found", "There is no such console page.")
}

/// `GET /console/assets/{file}`: the stylesheet and the script, from the binary.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return not_found().await,
    };
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// "Older"/"newer" links of a listing paged by `after`, keeping the other query parameters.
pub fn pager(base: &str, next_after: Option<String>) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            a href=(base) { "First page" }
            @if let Some(a) = next_after {
                " · "
                a rel="next" href={ (base) (if base.contains('?') { "&" } else { "?" }) "after=" (a) } { "Next page" }
            }
        }
    }
}

/// Percent-encodes a query value (`/` kept: console paths travel as `next`).
pub fn urlenc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
