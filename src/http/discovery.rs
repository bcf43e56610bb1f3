//! Discovery endpoints (RFC 7644 §4): ServiceProviderConfig, ResourceTypes, Schemas.

use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::auth::BaseUrl;
use super::body::ResourceId;
use super::error::{scim_json, scim_response};
use super::ApiError;
use crate::scim::resource::list_response;
use crate::scim::{schema, ScimError};

fn list(items: Vec<Value>) -> Response {
    let n = items.len() as i64;
    let items: Vec<Vec<u8>> = items.iter().map(|v| v.to_string().into_bytes()).collect();
    scim_json(StatusCode::OK, list_response(n, 1, &items))
}

fn find(items: Vec<Value>, id: &str, what: &str) -> Result<Response, ApiError> {
    items
        .into_iter()
        .find(|v| v["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id)))
        .map(|v| scim_response(StatusCode::OK, &v))
        .ok_or_else(|| ScimError::not_found(format!("no {what} {id:?}")).into())
}

pub async fn service_provider_config(Extension(BaseUrl(base)): Extension<BaseUrl>) -> Response {
    scim_response(StatusCode::OK, &schema::service_provider_config(&base))
}

pub async fn resource_types(Extension(BaseUrl(base)): Extension<BaseUrl>) -> Response {
    list(schema::resource_types(&base))
}

pub async fn resource_type(
    Extension(BaseUrl(base)): Extension<BaseUrl>,
    ResourceId(name): ResourceId,
) -> Result<Response, ApiError> {
    find(schema::resource_types(&base), &name, "resource type")
}

pub async fn schemas(Extension(BaseUrl(base)): Extension<BaseUrl>) -> Response {
    list(schema::schemas(&base))
}

pub async fn schema(
    Extension(BaseUrl(base)): Extension<BaseUrl>,
    ResourceId(id): ResourceId,
) -> Result<Response, ApiError> {
    find(schema::schemas(&base), &id, "schema")
}
