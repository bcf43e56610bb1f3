//! Extractors of the admin API: the operator's bearer token (checked in constant time), the
//! tenant a path names, and JSON bodies, queries and paths whose rejections answer in the admin
//! error shape rather than axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::AdminError;
use crate::http::metrics::{bearer, token_matches};
use crate::http::AppState;
use crate::store::Tenant;

/// Who is acting: the bootstrap admin token (`MOONBORN_ADMIN_TOKEN`, compared in constant time)
/// or a named operator's token (`moonborn-scim operator create`), or — in the console — a named
/// operator's session. Every admin handler takes it (first, or through `TenantCtx`), so no
/// route, not even an unknown one, answers anything but 401 without a credential. Checked once
/// per request (kept in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The operator's name; `None` for the bootstrap admin token.
    pub name: Option<String>,
    /// The one tenant a tenant-scoped operator may see and change; `None`: every tenant.
    pub tenant_id: Option<i64>,
}

impl Operator {
    /// The operator of a named operator's credential.
    pub fn named(info: &crate::store::OperatorInfo) -> Operator {
        Operator { name: Some(info.name.clone()), tenant_id: info.tenant_id }
    }

    /// How the audit trail names this operator: `operator:NAME`, or `operator` for the
    /// bootstrap admin token.
    pub fn actor(&self) -> String {
        match &self.name {
            Some(n) => format!("operator:{n}"),
            None => "operator".to_string(),
        }
    }

    /// How the audit trail names this operator's hand actions on users: `operator:NAME`, or
    /// `admin` for the bootstrap admin token (as before operators had names).
    pub fn hand_actor(&self) -> String {
        match &self.name {
            Some(n) => format!("operator:{n}"),
            None => "admin".to_string(),
        }
    }

    /// Whether this operator may see and change `tenant`.
    pub fn sees(&self, tenant: &Tenant) -> bool {
        self.tenant_id.is_none_or(|id| id == tenant.id)
    }

    /// 403 unless this operator acts for every tenant (creating tenants, tiers, metrics).
    ///
    /// # Errors
    /// 403 for a tenant-scoped operator.
    pub fn require_global(&self, what: &str) -> Result<(), AdminError> {
        if self.tenant_id.is_some() {
            return Err(AdminError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("{what} needs an operator of every tenant; this one is scoped to one tenant"),
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(op) = parts.extensions.get::<Operator>() {
            return Ok(op.clone());
        }
        let Some(t) = bearer(&parts.headers) else {
            return Err(AdminError::unauthorized());
        };
        let op = match state.admin_token.as_deref() {
            Some(expected) if token_matches(t, expected) => Operator { name: None, tenant_id: None },
            _ => match state.store.authenticate_operator(t).await? {
                Some(info) => Operator::named(&info),
                None => return Err(AdminError::unauthorized()),
            },
        };
        parts.extensions.insert(op.clone());
        Ok(op)
    }
}

/// The tenant named by the `{slug}` of the path (after the credential is checked). A tenant
/// the operator may not see is answered as an unknown one (404).
#[derive(Debug, Clone)]
pub struct TenantCtx(pub Tenant);

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let op = Operator::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| AdminError::bad_request(e.body_text()))?;
        let slug = params
            .iter()
            .find(|(k, _)| *k == "slug")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| AdminError::internal("a tenant route without {slug}"))?;
        let tenant =
            state.store.tenant(&slug).await.map_err(|e| AdminError::store(e, || format!("no tenant {slug:?}")))?;
        if !op.sees(&tenant) {
            return Err(AdminError::not_found(format!("no tenant {slug:?}")));
        }
        Ok(TenantCtx(tenant))
    }
}

/// A JSON request body. Any content type is accepted (operators use `curl -d`); an empty or
/// malformed body, or one of the wrong shape, is a 400 that says what is wrong.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

/// An optional JSON body: `None` when the request has none.
#[derive(Debug, Clone)]
pub struct MaybeBody<T>(pub Option<T>);

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AdminError> {
    Bytes::from_request(req, state).await.map_err(|e| AdminError::new(e.status(), e.body_text()))
}

/// Parses a body, which must be a JSON object (serde would take an array for a struct too).
fn parse<T: DeserializeOwned>(b: &[u8]) -> Result<T, AdminError> {
    if b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AdminError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(b).map_err(|e| AdminError::bad_request(format!("invalid JSON body: {e}")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let b = bytes(req, state).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Err(AdminError::bad_request("a JSON body is required"));
        }
        parse(&b).map(Body)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MaybeBody<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let b = bytes(req, state).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeBody(None));
        }
        parse(&b).map(|v| MaybeBody(Some(v)))
    }
}

/// Query parameters; a malformed query is a 400.
#[derive(Debug, Clone)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| AdminError::bad_request(e.body_text()))
    }
}

/// Path parameters; a malformed path is a 400.
#[derive(Debug, Clone)]
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|e| AdminError::bad_request(e.body_text()))
    }
}

/// Deserialises a field that may be absent (`None`), null (`Some(None)`) or set
/// (`Some(Some(v))`); use with `#[serde(default, deserialize_with = "double_option")]`.
///
/// # Errors
/// When the value is not a `T`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Most rows a listing answers.
const MAX_LIMIT: i64 = 10_000;

/// A listing's `limit` query parameter: `default` when absent; 400 outside 1..=`MAX_LIMIT`.
pub fn limit(l: Option<i64>, default: i64) -> Result<i64, AdminError> {
    match l {
        None => Ok(default),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(AdminError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
    }
}
