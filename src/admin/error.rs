//! The admin API's one error shape: `{"error": "<what is wrong>"}` with the right status. Store
//! and controller errors map onto it here; internal faults are logged and answered with a 500
//! that leaks nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::controller::ControllerError;
use crate::store::{HandError, StoreError};

/// An error an admin handler answers.
#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub message: String,
}

impl AdminError {
    /// An error with a status and a message for the operator.
    pub fn new(status: StatusCode, message: impl Into<String>) -> AdminError {
        AdminError { status, message: message.into() }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::CONFLICT, message)
    }

    /// 401: no valid admin token.
    pub fn unauthorized() -> AdminError {
        AdminError::new(StatusCode::UNAUTHORIZED, "missing or invalid admin token (Authorization: Bearer <token>)")
    }

    /// 500: logged with its cause; the answer says nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> AdminError {
        tracing::error!(error = %cause, "admin request failed");
        AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Maps a store error, naming what was not found.
    pub fn store(e: StoreError, what: impl FnOnce() -> String) -> AdminError {
        match e {
            StoreError::NotFound => AdminError::not_found(what()),
            other => other.into(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.shortage().is_some() => {
                tracing::warn!(error = %e, "admin request failed: the machine ran out of a resource");
                AdminError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the service is {e}; try again later"))
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "admin request not applied: a transient database failure");
                AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not applied because of a passing database failure (such as concurrent writes); nothing was \
                     changed; try again",
                )
            }
            StoreError::NotFound => AdminError::not_found("not found"),
            StoreError::Conflict(what) => AdminError::conflict(format!("{what} is already taken")),
            StoreError::VersionMismatch(_) => AdminError::conflict(e.to_string()),
            StoreError::Invalid(_) => AdminError::bad_request(e.to_string()),
            StoreError::Db(db) => AdminError::internal(db),
            StoreError::NotApplied(m) => AdminError::internal(m),
            e @ StoreError::Exhausted { .. } => AdminError::internal(e),
        }
    }
}

impl From<HandError> for AdminError {
    fn from(e: HandError) -> Self {
        match e {
            HandError::NotFound => AdminError::not_found("no such user in this tenant"),
            HandError::Conflict(m) => AdminError::conflict(m),
            HandError::Store(s) => s.into(),
        }
    }
}

impl From<ControllerError> for AdminError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Busy
            | ControllerError::LostLease(_)
            | ControllerError::StalePlan { .. }
            | ControllerError::AlreadyApplied { .. } => AdminError::conflict(e.to_string()),
            ControllerError::Desired(m) => {
                tracing::error!(error = %m, "an operator's run failed");
                AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the run failed: {m}"))
            }
            // A run that failed part-way reports its cause as `Invalid`; it is not the request's fault.
            ControllerError::Store(StoreError::Invalid(m)) => {
                tracing::error!(error = %m, "an operator's run failed");
                AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the run failed: {m}"))
            }
            // A run applies in batches: one that stopped on a transient failure keeps what it
            // applied before; running it again picks up the rest.
            ControllerError::Store(s) if s.is_transient() => {
                tracing::warn!(error = %s, "an operator's run stopped: a transient database failure");
                AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the run stopped on a passing database failure (such as concurrent writes); what it applied \
                     before that stays applied; try again",
                )
            }
            ControllerError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"moonborn-admin\""));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
