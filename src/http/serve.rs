//! The accept loop: what `axum::serve` does (hyper-util's connection builder, graceful drain),
//! plus what a service facing the internet needs and `axum::serve` does not offer:
//! - a **header timeout**: a client has that long to send a request's headers, counted from the
//!   connection's start or the end of the previous response, so it is the keep-alive idle
//!   timeout too (slowloris sockets and idle connections are closed);
//! - a **connection cap** below the open-file limit: at the cap, new connections wait in the
//!   kernel's listen backlog instead of the process running out of file descriptors;
//! - **native TLS** (rustls), the handshake bounded by the header timeout;
//! - a **panic** in a handler answers a SCIM 500 and the process keeps serving;
//! - the peer address in every request (`ConnectInfo`), for `--trusted-proxy`.
//!
//! HTTP/1.1 only, over TCP and TLS (ALPN offers `http/1.1`): every IdP speaks it, and it is the
//! protocol the header timeout covers (`axum::serve`'s protocol sniffing waits for a first byte
//! with no timeout, so an idle socket was held forever; HTTP/2 has no header timeout at all).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// In the extensions of a request that came over TLS.
#[derive(Clone, Copy, Debug)]
pub struct Tls;

/// How connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve HTTPS with this configuration (HTTP when `None`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time to send a request's headers (and the keep-alive idle timeout, and the TLS
    /// handshake's limit).
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { tls: None, max_connections: 4096, header_timeout: Duration::from_secs(30) }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for the
/// connections being served to finish their requests (a caller that cannot wait bounds this
/// with a timeout of its own).
///
/// # Errors
/// None today: accept failures (a client that went away, EMFILE) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_timeout);
    let full_logged = AtomicBool::new(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !full_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max_connections = opts.max_connections,
                        "at the connection cap: new connections wait in the listen backlog (logged once)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // EMFILE/ENFILE/ENOMEM: wait for a descriptor to be freed, as axum and
                        // hyper's examples do, instead of spinning.
                        tracing::error!(error = %e, "cannot accept a connection; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = service(app.clone(), peer, tls.is_some());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = opts.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(&builder, watcher, TokioIo::new(stream), svc).await,
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_one(&builder, watcher, TokioIo::new(tls), svc).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn serve_one<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<I>,
    svc: S,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection(io, svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        // A client that went away, a header timeout: nothing to answer.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

type BoxedFuture = futures_util::future::BoxFuture<'static, Result<Response, Infallible>>;

/// The per-connection service: the router, with the peer address, a panic caught as a SCIM 500.
fn service(
    app: Router,
    peer: SocketAddr,
    tls: bool,
) -> ServiceFnClone<impl Fn(Request<Incoming>) -> BoxedFuture + Send + Sync> {
    let f = move |req: Request<Incoming>| -> BoxedFuture {
        // Paths as clients send them (`//Users`, `/users/`) routed as the canonical ones; here,
        // before routing, at the cost of a scan of the path.
        let mut req = crate::http::canonical_scim_path(req);
        req.extensions_mut().insert(ConnectInfo(peer));
        if tls {
            req.extensions_mut().insert(Tls);
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let call = app.clone().oneshot(req.map(Body::new));
        Box::pin(async move {
            match std::panic::AssertUnwindSafe(call).catch_unwind().await {
                Ok(Ok(res)) => Ok(res),
                Ok(Err(never)) => match never {},
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    tracing::error!(target: "moonborn_scim::access", %method, route = %path, status = 500, panic = %what,
                        "request panicked; answered 500, still serving");
                    Ok(panic_response())
                }
            }
        })
    };
    ServiceFnClone(Arc::new(f))
}

/// `hyper::service::service_fn` that is `Clone`.
struct ServiceFnClone<F>(Arc<F>);

impl<F> Clone for ServiceFnClone<F> {
    fn clone(&self) -> Self {
        ServiceFnClone(self.0.clone())
    }
}

impl<F, Fut> hyper::service::Service<Request<Incoming>> for ServiceFnClone<F>
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response, Infallible>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Fut;
    fn call(&self, req: Request<Incoming>) -> Fut {
        (self.0)(req)
    }
}

/// The answer to a request whose handler panicked: a SCIM 500 that leaks nothing.
fn panic_response() -> Response {
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "500",
        "detail": "internal error; it is logged; the request may not have been applied",
    });
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/scim+json")], body.to_string())
        .into_response()
}

/// Errors of one connection attempt (the client gave up), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// A TLS server configuration from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). Offers HTTP/1.1 by ALPN.
///
/// # Errors
/// A file that cannot be read or holds no certificate or key, or a key that does not match;
/// the message names the file, never its content.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key {} (PEM: PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    // ring, the provider the rest of the tree (reqwest, sqlx) uses, named explicitly so the
    // choice does not depend on which provider features cargo unified. (Deprecated upstream for
    // lacking post-quantum key exchange; aws-lc-rs would add a C/CMake build for it.)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not make a valid pair")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Raises the soft open-file limit to the hard one (Linux starts services at 1,024 while
/// allowing far more) and returns the limit now in force, or `None` where it is unknown.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the one plain struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Some(want.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}
