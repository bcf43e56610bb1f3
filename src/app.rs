//! The composition root: the one place the whole service is wired. `App::build(config)` opens
//! the store and binds the listeners; `run_until_stopped` starts the controller, the outbox
//! worker and the servers, and on `shutdown` stops taking work, drains, releases the controller's
//! leases and closes the store. The CLI's `serve` and every test harness that serves HTTP boot
//! through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::controller::parse_schedule;
use crate::http::serve::{serve, ServeOptions};
use crate::http::{AppState, HttpOptions, SCIM_BASE};
use crate::outbox::WebhookConfig;
use crate::store::{Backend, Store};

/// Everything the service is started with (the CLI's `serve` flags, resolved).
#[derive(Clone)]
pub struct Config {
    /// `sqlite://FILE` or `postgres://…`; created and migrated when it is new or older.
    pub database_url: String,
    pub listen: SocketAddr,
    /// `GET /metrics` without auth on a listener of its own (a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's bearer token; the admin API is absent without one.
    pub admin_token: Option<String>,
    /// The read-only bearer token of `GET /metrics` on the main listener.
    pub metrics_token: Option<String>,
    pub http: HttpOptions,
    /// HTTPS with this configuration (HTTP when `None`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Reconcile workers; 0 runs no controller (pushes are journaled, nothing is applied: the
    /// SCIM API's own tests).
    pub controller_workers: usize,
    pub drift_repair_schedule: cron::Schedule,
    pub purge_schedule: cron::Schedule,
    /// Where outbox events are delivered; they stay queued without one.
    pub webhook: Option<WebhookConfig>,
    /// After the shutdown signal: this long not ready but serving, then at most `drain_timeout`
    /// for requests in flight.
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
}

impl Config {
    /// A service on `database_url`, listening on a free loopback port, with no admin API, the
    /// default limits, one controller worker and cron runs that come once a year (a test or a
    /// tool triggers runs itself).
    pub fn new(database_url: impl Into<String>) -> Config {
        let yearly = parse_schedule("0 0 1 1 *").expect("a valid schedule");
        Config {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            admin_token: None,
            metrics_token: None,
            http: HttpOptions::default(),
            tls: None,
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            controller_workers: 1,
            drift_repair_schedule: yearly.clone(),
            purge_schedule: yearly,
            webhook: None,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The service, built and bound but not running yet.
pub struct App {
    config: Config,
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl App {
    /// Opens (creating or migrating) the database and binds the listeners: a taken port or a
    /// database that cannot be opened fails here, before anything runs.
    ///
    /// # Errors
    /// The database cannot be opened or migrated, or a listener cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = Store::open(&config.database_url)
            .await
            .with_context(|| format!("opening database {}", crate::store::redact_url(&config.database_url)))?;
        App::with_store(store, config)
    }

    /// `build` over a store already open (the CLI opens it before it knows the command).
    ///
    /// # Errors
    /// A listener cannot be bound.
    pub fn with_store(store: Store, config: Config) -> anyhow::Result<App> {
        let listener = bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(a) => Some(bind(a).with_context(|| format!("binding --metrics-listen {a}"))?),
            None => None,
        };
        let nonempty = |t: &Option<String>| t.as_deref().filter(|t| !t.is_empty()).map(Arc::<str>::from);
        let state = AppState::new(store)
            .with_admin_token(nonempty(&config.admin_token))
            .with_metrics_token(nonempty(&config.metrics_token))
            .with_options(config.http.clone());
        Ok(App { config, state, listener, metrics_listener })
    }

    /// The main listener's address (the port chosen when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The `--metrics-listen` listener's address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL IdPs reach the service at: `--public-url`, else the listener's address.
    pub fn origin(&self) -> String {
        self.config.http.public_url.clone().unwrap_or_else(|| format!("{}://{}", self.scheme(), self.addr()))
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs the service until `shutdown` resolves: the controller's workers and cron triggers,
    /// PostgreSQL push notifications, the outbox worker, the SCIM/admin listener and the metrics
    /// listener. On `shutdown`: `/readyz` answers 503, serving goes on for `shutdown_delay`, then
    /// requests in flight get `drain_timeout`; then the controller's leases are released and the
    /// store is closed.
    ///
    /// # Errors
    /// The listener fails.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App { config, state, listener, metrics_listener } = self;
        let store = state.store.clone();
        let controller = state.controller.clone();
        let origin = config.http.public_url.clone().unwrap_or_else(|| {
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default())
        });
        controller.set_origin(origin);
        if config.controller_workers > 0 {
            controller.spawn(
                config.controller_workers,
                config.drift_repair_schedule.clone(),
                config.purge_schedule.clone(),
            );
            if store.backend() == Backend::Postgres {
                controller.listen_for_pushes(config.database_url.clone());
            }
        }
        match config.webhook.clone() {
            Some(cfg) => {
                tracing::info!(url = %cfg.url, secrets = cfg.secrets.len(), "delivering outbox events");
                tokio::spawn(crate::outbox::run(store.clone(), cfg));
            }
            None => tracing::info!("no --webhook-url: outbox events stay queued (see the admin API's outbox)"),
        }
        if state.admin_token.is_none() {
            tracing::info!(
                "no --admin-token: the admin API and the console (/console) take named operators only \
                 (moonborn-scim operator create NAME)"
            );
        }
        if state.metrics_token.is_some() {
            tracing::info!("GET /metrics answers the --metrics-token");
        }
        let (delay, drain) = (config.shutdown_delay, config.drain_timeout);
        let stopping = state.stopping.clone();
        let app = router(state);
        // Shutdown: not ready at once, then `delay` of serving as usual, then the drain.
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        // The metrics listener stops with the main one (it is scraped through the delay).
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        let signalled = async move {
            shutdown.await;
            stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(
                delay_secs = delay.as_secs_f64(),
                "not ready (/readyz answers 503); draining after the delay"
            );
            tokio::time::sleep(delay).await;
            let _ = stop_metrics.send(true);
            let _ = drain_tx.send(());
        };
        if let Some(listener) = metrics_listener {
            let mut stopped = metrics_stopped;
            let opts = ServeOptions { tls: None, max_connections: 64, header_timeout: config.header_timeout };
            let app = crate::http::metrics::listener_router(store.clone());
            tokio::spawn(serve(listener, app, opts, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        let opts = ServeOptions {
            tls: config.tls.clone(),
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
        };
        let mut server = std::pin::pin!(serve(listener, app, opts, signalled));
        tokio::select! {
            r = &mut server => r?,
            () = async {
                let _ = drain_rx.await;
                tokio::time::sleep(drain).await;
            } => tracing::warn!(timeout_secs = drain.as_secs_f64(), "in-flight requests did not drain in time; stopping anyway"),
        }
        controller.release_leases().await;
        // Connections still held by requests the drain gave up on must not hold the exit.
        if tokio::time::timeout(Duration::from_secs(5), store.close()).await.is_err() {
            tracing::warn!("database connections still in use after 5 s; exiting anyway");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The whole router: the SCIM API under `SCIM_BASE`, the admin API under `/v1/admin` (the admin
/// token or an operator's), `GET /metrics` (with a metrics token), `/healthz` and `/readyz`; every request
/// through the access log, metrics and request timeout.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new().nest(SCIM_BASE, crate::http::scim_router(state.clone()));
    // The admin API answers the bootstrap admin token and named operators' tokens; with
    // neither, every request to it is a 401.
    app = app.nest("/v1/admin", crate::admin::router());
    // The console: its pages ask named operators to sign in (nothing is open without one).
    app = app.nest("/console", crate::console::router());
    if state.metrics_token.is_some() {
        app = app.route("/metrics", get(crate::http::metrics::get_metrics));
    }
    // (Paths are made canonical before routing, by `http::serve`: a layer on the router would
    // run after it, and a router around this one costs every request a second dispatch.)
    app.route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(crate::http::readyz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http::observe))
        .with_state(state)
}

/// A listening socket with a backlog of 4,096 (the kernel caps it at `somaxconn`): a burst of
/// connections, or connections beyond `max_connections`, wait there instead of being dropped
/// (std's and tokio's `bind` ask for 128).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
