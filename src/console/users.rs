//! Users: a page of a tenant's Moonborn users in email order, found by email (an exact address,
//! or where the addresses starting with some text begin), and one user: status, roles,
//! sessions, purge date and history.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::auth::{ConsoleTenant, Signed, Q};
use super::layout::{self, page, tenant_url, time, urlenc, Tab, PAGE, PRIVILEGED};
use crate::http::AppState;

/// `GET …/users` query.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    /// An email, or the start of one.
    q: Option<String>,
    /// The position after which the page starts (the last row of the previous page).
    after_email: Option<String>,
    after_id: Option<String>,
}

/// `GET …/users[?q=&after_email=&after_id=]`.
pub async fn list(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Q(q): Q<UsersQuery>,
) -> Response {
    let text = q.q.as_deref().map(str::trim).filter(|x| !x.is_empty());
    let lc = text.map(crate::scim::validate::identity_key);
    // An address: that user. Else the listing from where addresses starting with the text begin.
    let exact = text.filter(|x| x.contains('@'));
    let after = match (&q.after_email, &q.after_id, &lc, exact) {
        (Some(e), Some(i), _, _) => Some((e.as_str(), i.as_str())),
        (_, _, Some(start), None) => Some((start.as_str(), "")),
        _ => None,
    };
    let users = match s.store.admin_list_users(t.id, exact, after, PAGE, true).await {
        Ok(u) => u,
        Err(e) => return layout::store_error(&e),
    };
    let base = match text {
        Some(x) => format!("{}?q={}", tenant_url(&t.slug, "/users"), urlenc(x)),
        None => tenant_url(&t.slug, "/users"),
    };
    let next = (users.len() as i64 == PAGE).then(|| users.last()).flatten().map(|u| {
        format!(
            "{base}{}after_email={}&after_id={}",
            if base.contains('?') { "&" } else { "?" },
            urlenc(&u.email_lc),
            urlenc(&u.id)
        )
    });
    let body = html! {
        h1 { "Users" }
        form.filter method="get" action=(tenant_url(&t.slug, "/users")) role="search" {
            label for="user-q" { "Email (or its start)" }
            input #user-q type="search" name="q" value=(text.unwrap_or("")) placeholder="ann@acme.com";
            button type="submit" { "Find" }
        }
        @if users.is_empty() { p.muted { "No users found." } } @else {
            div.scroll {
                table.users {
                    thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Roles" }
                        th scope="col" { "Managed by" } th scope="col" { "Sessions" } th scope="col" { "Purge after" } } }
                    tbody {
                        @for u in &users {
                            tr {
                                td { a href=(tenant_url(&t.slug, &format!("/users/{}", u.id))) { (u.email) } }
                                td { (u.display_name.as_deref().unwrap_or("")) }
                                td { (status_badge(u.status.as_str())) }
                                td { @for r in &u.roles { span class={ "role" @if PRIVILEGED.contains(&r.as_str()) { " privileged" } } { (r) } " " } }
                                td { (u.managed_by.as_str()) }
                                td.num { (u.active_sessions) }
                                td { (time(u.purge_after.as_deref())) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            a href=(base) { "First page" }
            @if let Some(n) = next { " · " a rel="next" href=(n) { "Next page" } }
        }
    };
    page(Some(&signed), Some((&t, Tab::Users)), "Users", body).into_response()
}

fn status_badge(status: &str) -> maud::Markup {
    let class = match status {
        "active" => "good",
        "disabled" => "warn",
        _ => "bad",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// `GET …/users/{id}`: one user.
pub async fn detail(
    signed: Signed,
    ConsoleTenant(t): ConsoleTenant,
    State(s): State<AppState>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let u = match s.store.admin_user(t.id, &id).await {
        Ok(u) => u,
        Err(crate::store::StoreError::NotFound) => {
            return layout::error_page(
                Some(&signed),
                StatusCode::NOT_FOUND,
                "No such user",
                "This tenant has no such user.",
            )
        }
        Err(e) => return layout::store_error(&e),
    };
    let sessions = match s.store.list_sessions(t.id, &id).await {
        Ok(x) => x,
        Err(e) => return layout::store_error(&e),
    };
    let history = match s.store.list_audit(t.id, 0, 200, Some(&id)).await {
        Ok(x) => x,
        Err(e) => return layout::store_error(&e),
    };
    let body = html! {
        h1 { (u.email) " " (status_badge(u.status.as_str())) }
        dl.facts {
            dt { "Name" } dd { (u.display_name.as_deref().unwrap_or("—")) }
            dt { "Contact email" } dd { (u.contact_email.as_deref().unwrap_or("—")) }
            dt { "Roles" } dd { @if u.roles.is_empty() { "none" } @for r in &u.roles { span class={ "role" @if PRIVILEGED.contains(&r.as_str()) { " privileged" } } { (r) } " " } }
            dt { "Managed by" } dd { (u.managed_by.as_str()) }
            dt { "SCIM id" } dd { code { (u.scim_id.as_deref().unwrap_or("—")) } }
            dt { "External id" } dd { (u.external_id.as_deref().unwrap_or("—")) }
            dt { "Purge after" } dd { (time(u.purge_after.as_deref())) }
            dt { "Created" } dd { (time(Some(&u.created_at))) }
            dt { "Updated" } dd { (time(Some(&u.updated_at))) }
        }
        h2 { "Sessions" }
        @if sessions.is_empty() { p.muted { "None." } } @else {
            table.sessions {
                thead { tr { th scope="col" { "Session" } th scope="col" { "Created" } th scope="col" { "Revoked" } } }
                tbody { @for x in &sessions { tr { td { code { (x.id.get(..8).unwrap_or(&x.id)) } } td { (time(Some(&x.created_at))) } td { (time(x.revoked_at.as_deref())) } } } }
            }
        }
        h2 { "History (its first 200 audit entries)" }
        @if history.is_empty() { p.muted { "Nothing recorded." } } @else {
            div.scroll {
                table.audit {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody {
                        @for e in &history {
                            tr {
                                td { (time(Some(&e.at))) }
                                td { (e.actor) }
                                td { (e.action) }
                                td { @if let Some(b) = &e.before { code.json { (b.to_string()) } } }
                                td { @if let Some(a) = &e.after { code.json { (a.to_string()) } } }
                            }
                        }
                    }
                }
            }
        }
        p { a href={ (tenant_url(&t.slug, "/audit")) "?user_id=" (urlenc(&u.id)) } { "The whole audit trail of this user" } }
    };
    page(Some(&signed), Some((&t, Tab::Users)), &u.email, body).into_response()
}
