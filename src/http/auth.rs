//! Bearer-token authentication of SCIM requests; the tenant found goes into the request's
//! extensions, with the base URL resources are located under.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, SCIM_BASE};
use crate::scim::ScimError;
use crate::store::{Tenant, Tier};

/// The absolute base URL of the SCIM API as the client reached it.
#[derive(Clone, Debug)]
pub struct BaseUrl(pub String);

/// What every SCIM handler knows about its request: the tenant the token belongs to, the base
/// URL resources are located under, and the request id.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub tenant: Tenant,
    pub base: String,
    pub request_id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let e = &parts.extensions;
        match (e.get::<Tenant>(), e.get::<BaseUrl>(), e.get::<super::RequestId>()) {
            (Some(t), Some(b), Some(r)) => Ok(Ctx { tenant: t.clone(), base: b.0.clone(), request_id: r.0.clone() }),
            _ => Err(ScimError::new(401, "a bearer token is required").into()),
        }
    }
}

fn base_url(req: &Request) -> String {
    let h = req.headers();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    let authority = req.uri().authority().map(axum::http::uri::Authority::as_str);
    let host = get("x-forwarded-host")
        .or_else(|| get(header::HOST.as_str()))
        .or(authority)
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let proto = get("x-forwarded-proto").filter(|p| *p == "https" || *p == "http").unwrap_or("http");
    format!("{proto}://{host}{SCIM_BASE}")
}

/// Authenticates a SCIM request and scopes it to the token's tenant.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The route template, for the access log line (`super::request_id`).
    let route = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    let (mut res, tenant) = authenticated(state, req, next).await;
    if let Some(r) = route {
        res.extensions_mut().insert(r);
    }
    if let Some(slug) = tenant {
        res.extensions_mut().insert(super::LogTenant(slug));
    }
    res
}

/// `authenticate`'s work: the answer, and the tenant's slug once the token named one.
async fn authenticated(state: AppState, mut req: Request, next: Next) -> (Response, Option<String>) {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .map(str::to_string);
    let Some(token) = token else {
        return (ApiError::from(ScimError::new(401, "a bearer token is required")).into_response(), None);
    };
    let tenant: Tenant = match crate::store::read_again(|| state.store.authenticate(&token)).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return (ApiError::from(ScimError::new(401, "the bearer token is not valid")).into_response(), None)
        }
        Err(e) => return (ApiError::from(e).into_response(), None),
    };
    let slug = tenant.slug.clone();
    if tenant.tier != Tier::Enterprise {
        let e = ScimError::new(
            403,
            format!(
                "SCIM provisioning is available on the Enterprise tier; tenant {} is on the {} tier",
                tenant.slug,
                tenant.tier.as_str()
            ),
        );
        return (ApiError::from(e).into_response(), Some(slug));
    }
    let base = base_url(&req);
    req.extensions_mut().insert(BaseUrl(base));
    req.extensions_mut().insert(tenant);
    (next.run(req).await, Some(slug))
}
