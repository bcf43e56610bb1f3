//! The load generator: one keep-alive HTTP/1.1 connection per client task (hyper's low-level
//! client, no pool, no retries), per-request latency in microseconds, errors counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a request may take before it counts as failed (and its connection is dropped), so
/// a server that stops answering ends the run instead of hanging it. Generous: the drift
/// scenario's whole-tenant plan and run at a million users are single requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What one request is.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
    /// Send the admin token instead of the SCIM token.
    pub admin: bool,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Req {
        Req { method: Method::GET, path: path.into(), body: None, admin: false }
    }
    pub fn post(path: impl Into<String>, body: String) -> Req {
        Req { method: Method::POST, path: path.into(), body: Some(body), admin: false }
    }
    pub fn patch(path: impl Into<String>, body: String) -> Req {
        Req { method: Method::PATCH, path: path.into(), body: Some(body), admin: false }
    }
    pub fn admin(mut self) -> Req {
        self.admin = true;
        self
    }
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub scim_auth: String,
    pub admin_auth: String,
    /// The server's process id, to read the CPU it uses during a timed window.
    pub pid: u32,
}

/// Errors shared by every client of a run: a count and the first few messages.
#[derive(Debug, Default)]
pub struct Errors {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Errors {
    pub fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < 8 {
            s.push(what);
        }
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One client: a keep-alive connection (re-opened after a transport error).
pub struct Client {
    target: Target,
    conn: Option<http1::SendRequest<Full<Bytes>>>,
    pub errors: Arc<Errors>,
}

impl Client {
    pub fn new(target: &Target, errors: Arc<Errors>) -> Client {
        Client { target: target.clone(), conn: None, errors }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let s = TcpStream::connect(self.target.addr).await.map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let (tx, conn) = http1::handshake(TokioIo::new(s)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.conn = Some(tx);
        Ok(())
    }

    async fn try_send(&mut self, r: &Req) -> Result<(StatusCode, Bytes), String> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect().await?;
        }
        let Some(conn) = self.conn.as_mut() else { return Err("no connection".into()) };
        conn.ready().await.map_err(|e| format!("connection: {e}"))?;
        let auth = if r.admin { &self.target.admin_auth } else { &self.target.scim_auth };
        let mut b = Request::builder()
            .method(r.method.clone())
            .uri(&r.path)
            .header("host", self.target.addr.to_string())
            .header("authorization", auth.as_str());
        if r.body.is_some() {
            b = b.header("content-type", "application/scim+json");
        }
        let req = b
            .body(Full::new(r.body.clone().map(Bytes::from).unwrap_or_default()))
            .map_err(|e| format!("request: {e}"))?;
        let res = conn.send_request(req).await.map_err(|e| format!("send: {e}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request; a transport error or a non-2xx answer is counted (and `None` returned).
    pub async fn send(&mut self, r: &Req) -> Option<(StatusCode, Bytes)> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.try_send(r))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())));
        match answer {
            Ok((s, b)) if s.is_success() => Some((s, b)),
            Ok((s, b)) => {
                let text = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
                self.errors.record(format!("{} {} -> {s}: {text}", r.method, r.path));
                None
            }
            Err(e) => {
                self.conn = None;
                self.errors.record(format!("{} {} -> {e}", r.method, r.path));
                None
            }
        }
    }
}

/// Latencies (µs) and counts of a measured window.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub lat_us: Vec<u64>,
    pub secs: f64,
    /// CPU seconds the server used during the timed window (closed-loop scenarios).
    pub server_cpu_s: Option<f64>,
}

impl Sample {
    pub fn merge(mut parts: Vec<Vec<u64>>, secs: f64) -> Sample {
        let mut lat_us: Vec<u64> = parts.iter_mut().flat_map(std::mem::take).collect();
        lat_us.sort_unstable();
        Sample { lat_us, secs, server_cpu_s: None }
    }
    /// The server's CPU time per answered request of the window, in µs.
    pub fn server_cpu_us_per_op(&self) -> Option<f64> {
        let n = self.lat_us.len();
        self.server_cpu_s.filter(|_| n > 0).map(|c| 1e6 * c / n as f64)
    }
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.lat_us.len() as f64 / self.secs
        } else {
            0.0
        }
    }
    /// Percentile in milliseconds (nearest rank).
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.lat_us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.lat_us.len()) - 1;
        self.lat_us[i] as f64 / 1000.0
    }
}

/// Closed-loop load: `concurrency` clients, each sending `make(client index, n)` back to back;
/// a warm-up, then a timed window in which each request's latency is recorded.
pub async fn closed_loop<F>(
    target: &Target,
    errors: &Arc<Errors>,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    make: F,
) -> Sample
where
    F: Fn(usize, u64) -> Req + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + warmup;
    let until = from + window;
    let pid = target.pid;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let c0 = crate::server::cpu_secs(pid);
        tokio::time::sleep_until(until.into()).await;
        crate::server::cpu_secs(pid) - c0
    });
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let mut client = Client::new(target, errors.clone());
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let _ = client.connect().await;
            tokio::time::sleep_until(start.into()).await;
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let r = make(c, n);
                n += 1;
                let ok = client.send(&r).await.is_some();
                if ok && t0 >= from {
                    lat.push(t0.elapsed().as_micros() as u64);
                }
            }
            lat
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap_or_default());
    }
    Sample { server_cpu_s: cpu.await.ok(), ..Sample::merge(parts, window.as_secs_f64()) }
}

impl Client {
    /// Sends a request and records its latency (µs) in `lat` when it succeeds.
    pub async fn timed(&mut self, r: &Req, lat: &mut Vec<u64>) -> Option<(StatusCode, Bytes)> {
        let t0 = Instant::now();
        let res = self.send(r).await;
        if res.is_some() {
            lat.push(t0.elapsed().as_micros() as u64);
        }
        res
    }
}

/// A fixed number of jobs over `concurrency` clients (each job may send several requests, and
/// hands its client back); the latencies, each job's output, and the wall time.
pub async fn jobs<F, Fut, T>(
    target: &Target,
    errors: &Arc<Errors>,
    concurrency: usize,
    total: usize,
    f: F,
) -> (Sample, Vec<(usize, T)>)
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Client, Vec<u64>, Option<T>)> + Send,
    T: Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let mut client = Client::new(target, errors.clone());
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut out) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (c, l, o) = f(client, i).await;
                client = c;
                lat.extend(l);
                if let Some(o) = o {
                    out.push((i, o));
                }
            }
            (lat, out)
        }));
    }
    let (mut parts, mut outs) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((l, o)) = t.await {
            parts.push(l);
            outs.extend(o);
        }
    }
    (Sample::merge(parts, t0.elapsed().as_secs_f64()), outs)
}

/// Open-loop load, the way an IdP paces its provisioning: job `k` falls due at `start + k / rate`
/// whatever the answers before it, and `workers` keep-alive connections take the due jobs in
/// order. A job's latency runs from when it fell due, so time spent waiting for a free
/// connection counts: a server that falls behind shows as growing latency (no coordinated
/// omission), not as a slower schedule. A job returns its client, whether every request it sent
/// succeeded, and its output.
pub async fn paced<F, Fut, T>(
    target: &Target,
    errors: &Arc<Errors>,
    workers: usize,
    total: usize,
    rate: f64,
    f: F,
) -> Paced<T>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Client, bool, Option<T>)> + Send,
    T: Send + 'static,
{
    let f = Arc::new(f);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, usize)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let mut client = Client::new(target, errors.clone());
        let (f, rx) = (f.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let _ = client.connect().await;
            let (mut lat, mut out) = (Vec::new(), Vec::new());
            loop {
                let next = rx.lock().await.recv().await;
                let Some((due, k)) = next else { break };
                let (c, ok, o) = f(client, k).await;
                client = c;
                // A job that failed is counted in `errors` (by `send`), not in the latencies.
                if ok {
                    lat.push(due.elapsed().as_micros() as u64);
                }
                if let Some(o) = o {
                    out.push((k, o));
                }
            }
            (lat, out)
        }));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    for k in 0..total {
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let _ = tx.send((due, k));
    }
    // The last job went out (total - 1) intervals after the first.
    let scheduled = start.elapsed().as_secs_f64();
    drop(tx);
    let (mut parts, mut outs) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok((l, o)) => {
                parts.push(l);
                outs.extend(o);
            }
            Err(e) => errors.record(format!("a paced worker failed: {e}")),
        }
    }
    let kept = if total > 1 && scheduled > 0.0 { (total - 1) as f64 / scheduled } else { rate };
    Paced { sample: Sample::merge(parts, start.elapsed().as_secs_f64()), outs, kept, start, interval }
}

/// What `paced` measured.
pub struct Paced<T> {
    /// The latencies from due, with `secs` = from the first job falling due to the last job done.
    pub sample: Sample,
    /// Each job's output, by job number.
    pub outs: Vec<(usize, T)>,
    /// The rate the schedule kept (jobs per second).
    pub kept: f64,
    /// When job 0 fell due; job `k` fell due `k` intervals later.
    pub start: Instant,
    pub interval: Duration,
}
