//! The admin API (operators): JSON under `/v1/admin`, `Authorization: Bearer $MOONBORN_ADMIN_TOKEN`.

use axum::Router;

use crate::http::AppState;

/// The admin routes (mounted under `/v1/admin` when an admin token is configured).
pub fn router() -> Router<AppState> {
    Router::new()
}
