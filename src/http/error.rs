//! The one place errors become HTTP responses: SCIM error bodies with the right status and
//! `scimType`; internal faults are logged and answered with a 500 that leaks nothing.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::scim::ScimError;
use crate::store::{Shortage, StoreError};

/// An error a SCIM handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Scim(#[from] ScimError),
    #[error("internal error")]
    Internal(#[source] StoreError),
    /// The machine ran out of something (disk, files, memory): a 503 that says which.
    #[error("{}", .0.detail)]
    Shortage(ScimError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let Some(what) = e.shortage() {
            return ApiError::Shortage(unavailable(
                what,
                matches!(e, StoreError::Exhausted { maybe_stored: true, .. }),
            ));
        }
        match e {
            // Tried a few times already (`store::retrying`); the client may try again.
            e if e.is_transient() => {
                tracing::warn!(error = %e, "request not applied: a transient database failure");
                ApiError::Scim(ScimError::new(
                    503,
                    "the request was not applied because of a passing database failure (such as concurrent \
                     writes); nothing was changed; try again",
                ))
            }
            StoreError::NotFound => ApiError::Scim(ScimError::not_found("resource not found")),
            StoreError::Conflict(what) => ApiError::Scim(ScimError::uniqueness(format!("{what} is already taken"))),
            StoreError::VersionMismatch(v) => {
                ApiError::Scim(ScimError::new(412, format!("the resource has changed (current version W/\"{v}\")")))
            }
            StoreError::Invalid(msg) => ApiError::Scim(ScimError::invalid_value(msg)),
            e @ (StoreError::Db(_) | StoreError::NotApplied(_) | StoreError::Exhausted { .. }) => ApiError::Internal(e),
        }
    }
}

/// How long a client is asked to wait after a 503 for a resource the service ran out of: the
/// operator has to free it, which takes longer than a passing failure.
const SHORTAGE_RETRY_AFTER: &str = "5";

/// The 503 for a write (or read) that failed because the machine ran out of `what`: it says
/// which, and whether the write may be stored anyway (it failed after its commit).
fn unavailable(what: Shortage, maybe_stored: bool) -> ScimError {
    let why = match what {
        Shortage::Disk => "the service's disk is full",
        Shortage::OpenFiles => "the service ran out of open files",
        Shortage::Memory => "the service ran out of memory",
    };
    tracing::warn!(shortage = %what, maybe_stored, "request failed: {why}");
    let outcome = if maybe_stored {
        "the request may or may not have been applied (read the resource before sending it again)"
    } else {
        "the request was not applied"
    };
    ScimError::new(503, format!("{why}; {outcome}; try again later"))
}

/// Runs a read's work once more when it lost its database connection (PostgreSQL terminated the
/// backend): the pool hands the second try another connection. Losing it twice is a 503 the
/// client may retry, not a 500. For reads only: a write's lost `COMMIT` has an unknown outcome.
pub(super) async fn read_again<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, ApiError>
where
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    match f().await {
        Err(ApiError::Internal(e)) if e.is_connection_lost() => {
            tracing::warn!(error = ?e, "a read lost its database connection; reading again");
            match f().await {
                Err(ApiError::Internal(e)) if e.is_connection_lost() => {
                    Err(StoreError::NotApplied(format!("the read lost its connection twice: {e:?}")).into())
                }
                r => r,
            }
        }
        r => r,
    }
}

/// A SCIM JSON response.
pub fn scim_response(status: StatusCode, body: &serde_json::Value) -> Response {
    scim_json(status, body.to_string().into_bytes())
}

/// A SCIM JSON response from JSON text.
pub fn scim_json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/scim+json")], body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let shortage = matches!(self, ApiError::Shortage(_));
        let e = match self {
            ApiError::Scim(e) | ApiError::Shortage(e) => e,
            ApiError::Internal(e) => {
                let source = match &e {
                    StoreError::Db(db) => db.to_string(),
                    other => other.to_string(),
                };
                tracing::error!(error = %source, "request failed");
                ScimError::new(500, "internal error; the request was not applied")
            }
        };
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = scim_response(status, &e.to_body());
        res.extensions_mut().insert(super::LogDetail(e.detail.clone()));
        if e.status == 503 {
            let after = if shortage { SHORTAGE_RETRY_AFTER } else { "1" };
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static(after));
        }
        if e.status == 401 {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"moonborn-scim\""));
        }
        res
    }
}

pub async fn method_not_allowed() -> ApiError {
    ScimError::new(405, "method not allowed on this endpoint").into()
}

pub async fn not_implemented() -> ApiError {
    ScimError::new(501, "not implemented by this service provider").into()
}

pub async fn not_found() -> ApiError {
    ScimError::not_found("no such endpoint").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: StoreError) -> (StatusCode, Option<String>, serde_json::Value) {
        let res = ApiError::from(e).into_response();
        let status = res.status();
        let retry = res.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    /// A write that failed transiently (and kept failing when run again) is a 503 the client
    /// may retry after a second, in SCIM's error format; a full disk is a 503 that says so,
    /// to retry after 5 s; any other database error is a 500 without `Retry-After`.
    #[tokio::test]
    async fn a_transient_failure_is_503_with_retry_after() {
        let (status, retry, body) = answer(StoreError::NotApplied("its batch did not commit".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["status"], "503");
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
        assert!(!body["detail"].as_str().unwrap().contains("batch"), "internals leaked: {body}");
        let full = StoreError::Exhausted { what: crate::store::Shortage::Disk, maybe_stored: false };
        let (status, retry, body) = answer(full).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("5"));
        assert!(body["detail"].as_str().unwrap().contains("disk is full"), "{body}");
        let (status, retry, body) = answer(StoreError::Db(sqlx::Error::PoolTimedOut)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry, None);
        assert_eq!(body["status"], "500");
    }
}
