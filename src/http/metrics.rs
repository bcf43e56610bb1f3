//! Prometheus scrapes without the admin token: `GET /metrics` on the main listener behind the
//! read-only `--metrics-token`, and the whole of `--metrics-listen`'s router (`GET /metrics`, no
//! auth, for a private network). The admin API's `/v1/admin/metrics` answers the same text.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::metrics::{OutboxStats, CONTENT_TYPE, METRICS};
use crate::store::Store;

/// The metrics text, with what is read at scrape time (an outbox that cannot be read is logged
/// and keeps its last values: a scrape still answers while the database is away).
pub async fn scrape(store: &Store) -> Response {
    let outbox = match store.outbox_backlog().await {
        Ok((backlog, oldest)) => {
            let age = oldest
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| (chrono::Utc::now() - t.to_utc()).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0);
            Some(OutboxStats { backlog, oldest_age_secs: age })
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the outbox backlog");
            None
        }
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], METRICS.scrape(outbox)).into_response()
}

/// Whether `given` is `expected`. Both sides are hashed first, so the comparison is
/// constant-time in their contents and says nothing about the token's length either; an empty
/// `expected` matches nothing.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (g, e) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    !expected.is_empty() && bool::from(g.ct_eq(&e))
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// `GET /metrics` on the main listener: the metrics token (or the admin token) as a bearer
/// token, else 401.
pub async fn get_metrics(axum::extract::State(s): axum::extract::State<AppState>, headers: HeaderMap) -> Response {
    let given = bearer(&headers).unwrap_or_default();
    let allowed = [s.metrics_token.as_deref(), s.admin_token.as_deref()]
        .into_iter()
        .flatten()
        .any(|expected| token_matches(given, expected));
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            "a bearer token (--metrics-token) is required\n",
        )
            .into_response();
    }
    scrape(&s.store).await
}

/// The router of `--metrics-listen`: `GET /metrics` without auth, 404 for anything else.
pub fn listener_router(store: Store) -> Router {
    Router::new()
        .route("/metrics", get(move || async move { scrape(&store).await }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: this listener serves GET /metrics only\n") })
}
