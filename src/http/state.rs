//! The state every handler shares (SCIM and admin API alike).

use std::sync::Arc;

use crate::controller::{Controller, Trigger};
use crate::store::Store;

/// Shared state of every handler: one allocation, so the per-request clones axum makes (state
/// extractor, middleware) are one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What `AppState` shares.
pub struct AppInner {
    pub store: Store,
    /// Woken after every acknowledged push (and by operators through the admin API).
    pub controller: Controller,
    /// The bootstrap bearer token of the admin API (named operators' tokens work beside it).
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
    /// The key list cursors are signed with (read from the database once).
    pub cursor_key: Arc<tokio::sync::OnceCell<Vec<u8>>>,
    /// Console sign-in attempts, keyed by the client's address (`console::auth`).
    pub sign_in_limiter: Arc<SignInLimiter>,
}

/// The console's sign-in rate limiter, keyed by client address.
pub type SignInLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// Sign-in attempts a client address may make: a burst of 10, then one every 6 seconds.
fn sign_in_limiter() -> Arc<SignInLimiter> {
    let per = std::time::Duration::from_secs(6);
    let quota = governor::Quota::with_period(per)
        .expect("a non-zero period")
        .allow_burst(std::num::NonZeroU32::MIN.saturating_add(9));
    Arc::new(governor::RateLimiter::keyed(quota))
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
            cursor_key: Arc::default(),
            sign_in_limiter: sign_in_limiter(),
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
            cursor_key: self.cursor_key.clone(),
            sign_in_limiter: self.sign_in_limiter.clone(),
        }))
    }

    /// The key list cursors are signed with, shared by every process on the database.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn cursor_key(&self) -> Result<Vec<u8>, crate::store::StoreError> {
        self.cursor_key.get_or_try_init(|| self.store.service_key(super::cursor::KEY_NAME)).await.cloned()
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
