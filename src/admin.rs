//! The admin API (operators): JSON under `/v1/admin`, `Authorization: Bearer` with the bootstrap
//! `$MOONBORN_ADMIN_TOKEN` (compared in constant time) or a named operator's token (`moonborn-scim
//! operator create NAME [--tenant SLUG]`; a tenant-scoped one sees only its tenant: another
//! tenant is a 404, what needs every tenant a 403). The audit trail names the operator.
//!
//! Every answer is JSON; every error is `{"error": "<what is wrong>"}` with the right status (400
//! malformed input, 401 no or a wrong token, 403 beyond a scoped operator's tenant, 404 unknown tenant, user or path, 405 wrong
//! method, 409 a conflict with the current state). Handlers are thin: check, call the store or
//! the controller, answer. One file per area:
//!
//! | file | routes |
//! |---|---|
//! | `tenants.rs` | `/tenants`, `/tenants/{slug}`, `/tenants/{slug}/scim-tokens[/{id}]` |
//! | `bindings.rs` | `/tenants/{slug}/group-bindings`, `/safety`, `/hold/release` |
//! | `users.rs` | `/tenants/{slug}/users[/{id}]`, `/users/{id}/sessions`, `/users/{id}/roles` |
//! | `extras.rs` | `/tenants/{slug}/users/{id}/api-keys`, `/preferences/{key}`, `/workspaces`, `/extras` |
//! | `plans.rs` | `/tenants/{slug}/plan`, `/reconcile`, `/plan/{fingerprint}/approve` |
//! | `history.rs` | `/tenants/{slug}/runs`, `/audit`, `/outbox` |
//! | here | `/metrics` (Prometheus text, `crate::metrics`) |

mod bindings;
mod error;
mod extract;
mod extras;
mod history;
mod plans;
mod tenants;
mod users;

use axum::routing::{get, post, put};
use axum::Router;

pub use error::AdminError;
pub use extract::Operator;

use crate::http::AppState;

/// Unknown admin paths: 404 (401 first without the admin token).
async fn not_found(_: Operator) -> AdminError {
    AdminError::not_found("no such admin endpoint")
}

/// A known path with a method it does not take: 405 (401 first without the admin token).
async fn method_not_allowed(_: Operator) -> AdminError {
    AdminError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this admin endpoint")
}

/// The process's metrics (Prometheus / OpenMetrics text); not JSON, unlike the rest of the API.
async fn metrics(
    op: Operator,
    axum::extract::State(s): axum::extract::State<AppState>,
) -> Result<axum::response::Response, AdminError> {
    op.require_global("the process's metrics")?;
    Ok(crate::http::metrics::scrape(&s.store).await)
}

/// The admin routes (mounted under `/v1/admin` when an admin token is configured).
pub fn router() -> Router<AppState> {
    const T: &str = "/tenants/{slug}";
    const U: &str = "/tenants/{slug}/users/{id}";
    Router::new()
        .route("/metrics", get(metrics))
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route(T, get(tenants::get).patch(tenants::patch).delete(tenants::delete))
        .route(&format!("{T}/scim-tokens"), get(tenants::list_tokens).post(tenants::create_token))
        .route(&format!("{T}/scim-tokens/{{id}}"), axum::routing::delete(tenants::revoke_token))
        .route(&format!("{T}/group-bindings"), get(bindings::get).put(bindings::put))
        .route(&format!("{T}/safety"), get(bindings::get_safety).put(bindings::put_safety))
        .route(&format!("{T}/hold/release"), post(plans::release))
        .route(&format!("{T}/users"), get(users::list).post(users::invite))
        .route(U, get(users::get).patch(users::patch))
        .route(&format!("{U}/sessions"), get(users::sessions).post(users::sign_in))
        .route(&format!("{U}/roles"), put(users::put_roles))
        .route(&format!("{U}/api-keys"), post(extras::create_api_key))
        .route(&format!("{U}/preferences/{{key}}"), put(extras::put_preference))
        .route(&format!("{U}/workspaces"), post(extras::add_workspace))
        .route(&format!("{U}/extras"), get(extras::get))
        .route(&format!("{T}/plan"), get(plans::plan))
        .route(&format!("{T}/reconcile"), post(plans::reconcile))
        .route(&format!("{T}/plan/{{fingerprint}}/approve"), post(plans::approve))
        .route(&format!("{T}/runs"), get(history::runs))
        .route(&format!("{T}/audit"), get(history::audit))
        .route(&format!("{T}/outbox"), get(history::outbox))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}
