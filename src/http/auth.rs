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

/// The base URL resources are located under: `--public-url` when set; else the `Host` the
/// client sent (`X-Forwarded-Host`/`-Proto` only from a `--trusted-proxy`), with `https` when the
/// connection is TLS.
fn base_url(state: &AppState, req: &Request) -> String {
    base_url_of(state, req.headers(), req.uri(), req.extensions())
}

/// `base_url` of a request's parts (the console shows it as the URL to paste into the IdP).
pub fn base_url_of(
    state: &AppState,
    h: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
    ext: &axum::http::Extensions,
) -> String {
    if let Some(public) = &state.opts.public_url {
        return format!("{public}{SCIM_BASE}");
    }
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    let trusted = !state.opts.trusted_proxies.is_empty()
        && ext
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|c| state.opts.trusted_proxies.iter().any(|n| n.contains(&c.0.ip().to_canonical())));
    // The last value: the one the nearest (trusted) proxy wrote, whatever the client sent before.
    let forwarded = |k: &str| if trusted { get(k).and_then(|v| v.rsplit(',').next()).map(str::trim) } else { None };
    let authority = uri.authority().map(axum::http::uri::Authority::as_str);
    let host = forwarded("x-forwarded-host")
        .or_else(|| get(header::HOST.as_str()))
        .or(authority)
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && !b"/@?#\\".contains(&b)))
        .unwrap_or("localhost");
    let tls = ext.get::<super::serve::Tls>().is_some();
    let proto = forwarded("x-forwarded-proto").filter(|p| *p == "https" || *p == "http").unwrap_or(if tls {
        "https"
    } else {
        "http"
    });
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
    if let Some(limiter) = &state.limiter {
        if let Err(not_until) = limiter.check_key(&tenant.id) {
            use governor::clock::{Clock as _, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let (per_sec, burst) = state.opts.rate.map_or((0, 0), |(r, b)| (r.get(), b.get()));
            let e = ScimError::new(
                429,
                format!(
                    "too many requests for tenant {}: at most {per_sec} per second (bursts of {burst}); retry after \
                     {secs} s",
                    tenant.slug
                ),
            );
            let mut res = ApiError::from(e).into_response();
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
            return (res, Some(slug));
        }
    }
    let base = base_url(&state, &req);
    req.extensions_mut().insert(BaseUrl(base));
    req.extensions_mut().insert(tenant);
    (next.run(req).await, Some(slug))
}
