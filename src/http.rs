//! The HTTP surface (axum): the SCIM push API under `/v1/auth/scim/v2`. Handlers are thin:
//! authenticate, parse, record the desired state, answer in SCIM.

mod auth;
pub use auth::base_url_of;
mod body;
mod bulk;
mod cursor;
mod discovery;
mod error;
mod groups;
mod list;
pub mod metrics;
mod resource;
pub mod serve;
mod state;
mod users;

use axum::http::{HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use tracing::Instrument;

use crate::scim::schema::Kind;

pub use error::ApiError;

pub use crate::scim::SCIM_BASE;
pub use state::{AppInner, AppState, HttpOptions};

/// The request id: from `X-Request-Id` when the client sends a sane one, else a new UUID.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The tenant a response was for (set by the SCIM authentication), for the access log.
#[derive(Clone, Debug)]
pub struct LogTenant(pub String);

/// What an error answer said (its SCIM `detail`), for the access log.
#[derive(Clone, Debug)]
pub struct LogDetail(pub String);

/// Gives every request its id, counts it in the metrics, and writes its access log line: 5xx at
/// ERROR, 4xx at INFO (with the error's detail), the rest at DEBUG (a line per successful request
/// would cost the busy paths; `RUST_LOG=moonborn_scim::access=debug` turns them on).
///
/// A request not answered within `opts.request_timeout` is answered 503 here (what it started
/// may still finish: a push already handed to the writer is applied).
pub async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let (started, api, method) =
        (std::time::Instant::now(), crate::metrics::api_of(req.uri().path()), req.method().clone());
    // (A reference count: the access line names the route, else the path.)
    let uri = req.uri().clone();
    // The admin API's long operations (a reconcile, a release, offboarding a tenant) are the
    // operator's, bounded by their own work, not cut off part-way.
    let limit = if uri.path().starts_with("/v1/admin/") {
        std::time::Duration::from_secs(24 * 3600)
    } else {
        state.opts.request_timeout
    };
    let mut res = match tokio::time::timeout(limit, next.run(req).instrument(span)).await {
        Ok(res) => res,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::from(crate::scim::ScimError::new(
            503,
            format!(
                "the request was not answered within {} s (a slow request body, or a busy service); it may \
                 still be applied; retry",
                limit.as_secs_f64()
            ),
        ))),
    };
    let took = started.elapsed();
    let status = res.status().as_u16();
    crate::metrics::METRICS.request(api, &method, status, took);
    {
        let x = res.extensions();
        let route = x.get::<axum::extract::MatchedPath>().map_or(uri.path(), |m| m.as_str());
        let route = route.strip_prefix(SCIM_BASE).filter(|r| !r.is_empty()).unwrap_or(route);
        let tenant = x.get::<LogTenant>().map_or("-", |t| t.0.as_str());
        let detail = x.get::<LogDetail>().map(|d| d.0.as_str());
        let ms = took.as_secs_f64() * 1000.0;
        macro_rules! access {
            ($level:ident) => {
                tracing::$level!(target: "moonborn_scim::access", request_id = %id, tenant, method = %method,
                    route, status, latency_ms = format_args!("{ms:.1}"), detail, "request")
            };
        }
        match status {
            500.. => access!(error),
            400..=499 => access!(info),
            _ => access!(debug),
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The routes of one resource kind (`/Users` or `/Groups`): list and create, `.search`, and one
/// resource's read, replace, patch and delete; list, search, read and delete are the same code
/// for both kinds.
fn resource_routes<C, CT, P, PT, Pa, PaT>(
    router: Router<AppState>,
    kind: Kind,
    create: C,
    put: P,
    patch: Pa,
) -> Router<AppState>
where
    C: axum::handler::Handler<CT, AppState>,
    P: axum::handler::Handler<PT, AppState>,
    Pa: axum::handler::Handler<PaT, AppState>,
    CT: 'static,
    PT: 'static,
    PaT: 'static,
{
    let base = format!("/{}", kind.endpoint());
    router
        .route(
            &base,
            get(move |s, c, q| resource::list(s, c, q, kind)).post(create).fallback(error::method_not_allowed),
        )
        .route(
            &format!("{base}/.search"),
            post(move |s, c, b| resource::search(s, c, b, kind)).fallback(error::method_not_allowed),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(move |s, c, i, q, k| resource::get(s, c, i, q, k, kind))
                .put(put)
                .patch(patch)
                .delete(move |s, c, i, k| resource::delete(s, c, i, k, kind))
                .fallback(error::method_not_allowed),
        )
}

/// The SCIM API's routes (nested under `SCIM_BASE` by `crate::app::router`), behind SCIM
/// bearer-token authentication.
pub fn scim_router(state: AppState) -> Router<AppState> {
    let router = resource_routes(Router::new(), Kind::User, users::create_user, users::put_user, users::patch_user);
    resource_routes(router, Kind::Group, groups::create_group, groups::put_group, groups::patch_group)
        .route("/.search", post(list::search_all).fallback(error::method_not_allowed))
        .route("/ServiceProviderConfig", get(discovery::service_provider_config).fallback(error::method_not_allowed))
        .route("/ResourceTypes", get(discovery::resource_types).fallback(error::method_not_allowed))
        .route("/ResourceTypes/{name}", get(discovery::resource_type).fallback(error::method_not_allowed))
        .route("/Schemas", get(discovery::schemas).fallback(error::method_not_allowed))
        .route("/Schemas/{id}", get(discovery::schema).fallback(error::method_not_allowed))
        .route("/Me", any(error::not_implemented))
        .route("/Bulk", post(bulk::bulk).fallback(error::method_not_allowed))
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(state, auth::authenticate))
}

/// `GET /readyz`: 200 `ready` when the database answers (within 2 s) and the process is not
/// stopping; else 503 with the reason (a load balancer stops sending requests).
pub async fn readyz(axum::extract::State(s): axum::extract::State<AppState>) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    if s.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
    }
    let ping = sqlx::query("SELECT 1").execute(s.store.pool());
    match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n".into())
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable (no answer within 2 s)\n".into()),
    }
}

/// The resource endpoints' names as routed; a request may spell them in any case.
const ENDPOINTS: [&str; 8] =
    ["Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", "Bulk", "Me", ".search"];

/// Routes what clients send as the same request: under `SCIM_BASE`, doubled slashes (a base URL
/// pasted with a trailing slash: `…/v2//Users`) and a trailing slash (`/Users/`,
/// `/Users/?filter=…`) are dropped, and an endpoint's name matches in any case (`/users`). A
/// path that needs none of it is left as it is (no allocation).
pub fn canonical_scim_path<B>(mut req: Request<B>) -> Request<B> {
    let uri = req.uri();
    let path = uri.path();
    let needs = path.contains("//")
        || (path.len() > SCIM_BASE.len() + 1 && path.ends_with('/'))
        || path
            .strip_prefix(SCIM_BASE)
            .and_then(|r| r.strip_prefix('/'))
            .map(|r| r.split('/').next().unwrap_or(""))
            .is_some_and(|seg| ENDPOINTS.iter().any(|e| e.eq_ignore_ascii_case(seg) && *e != seg));
    if !needs {
        return req;
    }
    let mut segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let base: Vec<&str> = SCIM_BASE.split('/').filter(|s| !s.is_empty()).collect();
    if !segs.starts_with(&base) {
        return req;
    }
    if let Some(seg) = segs.get_mut(base.len()) {
        if let Some(e) = ENDPOINTS.iter().find(|e| e.eq_ignore_ascii_case(seg)) {
            *seg = e;
        }
    }
    let mut canonical = format!("/{}", segs.join("/"));
    if let Some(q) = uri.query() {
        canonical.push('?');
        canonical.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = canonical.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(u) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
    req
}
