//! Request extractors that answer in SCIM when they fail: JSON bodies (413 when too large,
//! `tooMany` past `MAX_BODY_VALUES` values, `invalidSyntax` when not JSON), query strings,
//! resource ids, and conditional headers.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use futures_util::StreamExt;
use serde_json::Value;

use super::ApiError;
use crate::scim::schema::MAX_PAYLOAD;
use crate::scim::validate::{count_values, MAX_BODY_VALUES};
use crate::scim::ScimError;

/// A JSON request body (`application/scim+json` or `application/json`).
pub struct ScimJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(req.into_body()).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ScimError::invalid_syntax("the request body is empty").into());
        }
        // Counted before parsing: parsed, a body of tiny values takes some 40 times its size.
        if count_values(&bytes, MAX_BODY_VALUES).is_none() {
            return Err(
                ScimError::too_many(format!("the request body holds more than {MAX_BODY_VALUES} JSON values")).into()
            );
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))?;
        if has_nul(&v) {
            return Err(ScimError::invalid_value("NUL characters are not allowed in values").into());
        }
        Ok(ScimJson(v))
    }
}

/// Whether any string (key or value) holds a NUL character, which no database column stores.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// How much of an oversized body is read and discarded so that the client, still sending, gets
/// the 413 answer instead of a reset connection; past this the connection is simply closed.
const DRAIN_LIMIT: usize = 4 * MAX_PAYLOAD;

/// Reads a body of at most `MAX_PAYLOAD` bytes. A larger body is a 413.
async fn read_limited(body: Body) -> Result<Vec<u8>, ApiError> {
    // The announced length, when it is within the limit, is allocated once (growing by doubling
    // would hold up to twice the body).
    let hint = usize::try_from(axum::body::HttpBody::size_hint(&body).lower()).unwrap_or(0);
    let mut buf: Vec<u8> = Vec::with_capacity(if hint <= MAX_PAYLOAD { hint } else { 0 });
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ScimError::invalid_syntax("the request body could not be read"))?;
        total = total.saturating_add(chunk.len());
        if total <= MAX_PAYLOAD {
            buf.extend_from_slice(&chunk);
        } else {
            buf = Vec::new();
            if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    if total > MAX_PAYLOAD {
        return Err(ScimError::new(413, format!("the request body is larger than {MAX_PAYLOAD} bytes")).into());
    }
    Ok(buf)
}

/// The query string's parameters.
pub struct QueryMap(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let map: HashMap<String, String> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        if map.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(ScimError::invalid_value("NUL characters are not allowed in query parameters").into());
        }
        Ok(QueryMap(map))
    }
}

/// The `{id}` path segment of a resource URL.
pub struct ResourceId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ResourceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ScimError::not_found("resource not found"))?;
        if id.contains('\0') || id.len() > 256 {
            return Err(ScimError::not_found("resource not found").into());
        }
        Ok(ResourceId(id))
    }
}

/// `If-Match` and `If-None-Match`.
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let get = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Conditions { if_match: get("if-match"), if_none_match: get("if-none-match") })
    }
}

impl Conditions {
    /// Checks `If-Match` against the current version (412 on mismatch); returns the version the
    /// write must still find, when the client made it conditional.
    ///
    /// # Errors
    /// 412 when `If-Match` names another version.
    pub fn check(&self, version: i64) -> Result<Option<i64>, ApiError> {
        match &self.if_match {
            None => Ok(None),
            Some(h) if crate::scim::resource::etag_matches(h, version) => Ok(Some(version)),
            Some(_) => {
                Err(ScimError::new(412, format!("the resource has changed (current version W/\"{version}\")")).into())
            }
        }
    }
}
