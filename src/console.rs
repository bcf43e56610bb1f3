//! The operator console: server-rendered HTML pages under `/console` (maud: every value is
//! escaped unless marked otherwise), for the named operators of `moonborn-scim operator create`.
//! It reads and acts through the same store and controller as the admin API; every asset is in
//! the binary (`assets/`), and the pages work without JavaScript (a little of it adds copy
//! buttons, confirmations and a filter box).
//!
//! | file | pages |
//! |---|---|
//! | `auth.rs` | `/console/sign-in`, `/console/sign-out`; the session, CSRF and scope extractors |
//! | `session.rs` | who is signed in (`Signed`) |
//! | `layout.rs` | the page frame, navigation, badges; `/console/assets/*` |
//! | `tenants.rs` | `/console` (Tenants), `/console/tenants/{slug}` (a tenant at a glance) |
//! | `scim.rs` | `…/scim`: SSO → SCIM settings, tokens, group bindings with preview |
//! | `plan.rs` | `…/plan`: the diff report, Approve and Release |
//! | `history.rs` | `…/runs`, `…/audit`, `…/outbox` (retry now) |
//! | `users.rs` | `…/users`, `…/users/{id}` |
//!
//! Security: a session cookie (HttpOnly, SameSite=Strict, Secure behind HTTPS) names a session
//! row; every state-changing form carries the session's CSRF token; pages are sent with a
//! Content-Security-Policy that allows only this origin's own script and style (no inline
//! code) and no framing; sign-in attempts are rate limited per client address.

mod auth;
mod history;
mod layout;
mod plan;
mod scim;
mod session;
mod tenants;
mod users;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::http::AppState;

/// The console's Content-Security-Policy: this origin's script, style and forms only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Sets the console's security headers on every answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The console routes (mounted under `/console`).
pub fn router() -> Router<AppState> {
    const T: &str = "/tenants/{slug}";
    Router::new()
        .route("/", get(tenants::list))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/assets/{file}", get(layout::asset))
        .route(T, get(tenants::overview))
        .route(&format!("{T}/scim"), get(scim::page_get))
        .route(&format!("{T}/scim/tokens"), post(scim::generate_token))
        .route(&format!("{T}/scim/tokens/{{id}}/revoke"), post(scim::revoke_token))
        .route(&format!("{T}/scim/bindings/preview"), post(scim::preview_bindings))
        .route(&format!("{T}/scim/bindings"), post(scim::save_bindings))
        .route(&format!("{T}/plan"), get(plan::show))
        .route(&format!("{T}/plan/approve"), post(plan::approve))
        .route(&format!("{T}/plan/release"), post(plan::release))
        .route(&format!("{T}/runs"), get(history::runs))
        .route(&format!("{T}/audit"), get(history::audit))
        .route(&format!("{T}/outbox"), get(history::outbox))
        .route(&format!("{T}/outbox/retry"), post(history::retry_outbox))
        .route(&format!("{T}/users"), get(users::list))
        .route(&format!("{T}/users/{{id}}"), get(users::detail))
        .fallback(layout::not_found)
        .layer(axum::middleware::from_fn(security_headers))
}
