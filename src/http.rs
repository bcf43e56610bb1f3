//! The HTTP surface (axum): the SCIM push API under `/v1/auth/scim/v2`. Handlers are thin:
//! authenticate, parse, record the desired state, answer in SCIM.

mod auth;
mod body;
mod discovery;
mod error;
mod groups;
mod list;
pub mod metrics;
pub mod serve;
mod users;

use std::sync::Arc;

use axum::http::{HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use tracing::Instrument;

pub use error::ApiError;

use crate::controller::{Controller, Trigger};
use crate::store::Store;

/// Base path of the SCIM API.
pub const SCIM_BASE: &str = "/v1/auth/scim/v2";

/// Shared state of every handler: one allocation, so the per-request clones axum makes (state
/// extractor, middleware) are one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What `AppState` shares.
pub struct AppInner {
    pub store: Store,
    /// Woken after every acknowledged push (and by operators through the admin API).
    pub controller: Controller,
    /// The bearer token of the admin API; the admin API is disabled when unset.
    pub admin_token: Option<Arc<str>>,
    /// The read-only bearer token of `GET /metrics`; that route is absent when unset. It opens
    /// nothing else.
    pub metrics_token: Option<Arc<str>>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on, while requests still
    /// in flight (and those a load balancer sends before it notices) are served.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// How requests are bounded and located.
    pub opts: HttpOptions,
    /// Per-tenant request rate limiter (`opts.rate`), keyed by tenant id.
    pub limiter: Option<governor::DefaultKeyedRateLimiter<i64>>,
}

/// How requests are bounded and how the service names itself.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The URL IdPs reach the service at (`https://scim.example.com`, no path): resources are
    /// located under it, whatever the request's `Host` said. Unset: the `Host` header, or
    /// `X-Forwarded-Host`/`-Proto` from a trusted proxy.
    pub public_url: Option<String>,
    /// Peers whose `X-Forwarded-Host`/`-Proto` are believed; anyone else's are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A request that has not been answered in this time is answered 503.
    pub request_timeout: std::time::Duration,
    /// Requests per second per tenant (and the burst allowed above it); `None`: no limit.
    pub rate: Option<(std::num::NonZeroU32, std::num::NonZeroU32)>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            public_url: None,
            trusted_proxies: Vec::new(),
            request_timeout: std::time::Duration::from_secs(30),
            rate: None,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    /// State over a store, with a controller that runs only once `Controller::spawn` is called,
    /// and no admin API.
    pub fn new(store: Store) -> AppState {
        AppState(Arc::new(AppInner {
            controller: Controller::new(store.clone()),
            store,
            admin_token: None,
            metrics_token: None,
            stopping: Arc::default(),
            opts: HttpOptions::default(),
            limiter: None,
        }))
    }

    /// The same state with the admin API enabled under `token` (disabled with `None`).
    #[must_use]
    pub fn with_admin_token(self, token: Option<Arc<str>>) -> AppState {
        let (metrics, opts) = (self.metrics_token.clone(), self.opts.clone());
        self.rebuild(token, metrics, opts)
    }

    /// The same state with `GET /metrics` served to this bearer token (absent with `None`).
    #[must_use]
    pub fn with_metrics_token(self, token: Option<Arc<str>>) -> AppState {
        let (admin, opts) = (self.admin_token.clone(), self.opts.clone());
        self.rebuild(admin, token, opts)
    }

    /// The same state with these request options.
    #[must_use]
    pub fn with_options(self, opts: HttpOptions) -> AppState {
        let (admin, metrics) = (self.admin_token.clone(), self.metrics_token.clone());
        self.rebuild(admin, metrics, opts)
    }

    fn rebuild(self, admin_token: Option<Arc<str>>, metrics_token: Option<Arc<str>>, opts: HttpOptions) -> AppState {
        let limiter = opts.rate.map(|(per_sec, burst)| {
            governor::RateLimiter::keyed(governor::Quota::per_second(per_sec).allow_burst(burst))
        });
        AppState(Arc::new(AppInner {
            store: self.store.clone(),
            controller: self.controller.clone(),
            admin_token,
            metrics_token,
            stopping: self.stopping.clone(),
            opts,
            limiter,
        }))
    }

    /// Records that a tenant's desired state changed: wakes the controller for it.
    pub fn pushed(&self, tenant_id: i64) {
        self.controller.wake(tenant_id, Trigger::Push, false);
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store).finish_non_exhaustive()
    }
}

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
async fn request_id(
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

/// The whole router.
pub fn router(state: AppState) -> Router {
    let scim = Router::new()
        .route("/Users", get(users::list_users).post(users::create_user).fallback(error::method_not_allowed))
        .route("/Users/.search", post(users::search_users).fallback(error::method_not_allowed))
        .route(
            "/Users/{id}",
            get(users::get_user)
                .put(users::put_user)
                .patch(users::patch_user)
                .delete(users::delete_user)
                .fallback(error::method_not_allowed),
        )
        .route("/Groups", get(groups::list_groups).post(groups::create_group).fallback(error::method_not_allowed))
        .route("/Groups/.search", post(groups::search_groups).fallback(error::method_not_allowed))
        .route(
            "/Groups/{id}",
            get(groups::get_group)
                .put(groups::put_group)
                .patch(groups::patch_group)
                .delete(groups::delete_group)
                .fallback(error::method_not_allowed),
        )
        .route("/.search", post(list::search_all).fallback(error::method_not_allowed))
        .route("/ServiceProviderConfig", get(discovery::service_provider_config).fallback(error::method_not_allowed))
        .route("/ResourceTypes", get(discovery::resource_types).fallback(error::method_not_allowed))
        .route("/ResourceTypes/{name}", get(discovery::resource_type).fallback(error::method_not_allowed))
        .route("/Schemas", get(discovery::schemas).fallback(error::method_not_allowed))
        .route("/Schemas/{id}", get(discovery::schema).fallback(error::method_not_allowed))
        .route("/Me", any(error::not_implemented))
        .route("/Bulk", any(error::not_implemented))
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let mut app = Router::new().nest(SCIM_BASE, scim);
    if state.admin_token.is_some() {
        app = app.nest("/v1/admin", crate::admin::router());
    }
    if state.metrics_token.is_some() {
        app = app.route("/metrics", get(metrics::get_metrics));
    }
    app.route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// `GET /readyz`: 200 `ready` when the database answers (within 2 s) and the process is not
/// stopping; else 503 with the reason (a load balancer stops sending requests).
async fn readyz(axum::extract::State(s): axum::extract::State<AppState>) -> (axum::http::StatusCode, String) {
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
