//! Process metrics in the Prometheus / OpenMetrics text format, served at `GET /v1/admin/metrics`
//! (admin token), `GET /metrics` (`--metrics-token`) and on `--metrics-listen` (no auth). One
//! registry for the process: the writer, fsync and checkpoint threads record into it without a
//! handle to the router's state. What is read at scrape time (the outbox's backlog, the
//! `process_*` family from `/proc/self`) is handed to `scrape` or read by a collector then.
//!
//! Labels take only values from small fixed sets (no path or id), so the number of series stays
//! bounded whatever the traffic. The one exception is `tenant_held_changes`, labelled by tenant
//! slug: a series exists only while that tenant is held, so it is bounded by the holds at hand.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The media type of `encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds, 100 µs to 10 s: a request, a commit or an fsync of a healthy disk
/// lands in the first few, a stalled disk in the last few.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds in seconds for controller runs, 1 ms to 5 min (a full run of a large tenant
/// takes seconds).
const RUN_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0];

/// Bucket bounds for the number of writes one SQLite commit carries.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Labels of an HTTP request: which API, the method, the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// Labels of a request's duration: which API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: &'static str,
}

/// Labels of a controller run's duration: its scope (full, incremental, snapshot).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

/// Labels of a controller run: what started it and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub trigger: &'static str,
    pub scope: &'static str,
    pub status: &'static str,
}

/// Labels of a held tenant: its slug.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// Labels of a WAL checkpoint: `mode` `passive` (copies what it can, holds nobody; `outcome`
/// done or error) or `restart` (holds this process's writers until the WAL starts over;
/// `outcome` done, busy — it waited for a reader in vain — or error).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckpointLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

/// Labels of `moonborn_build_info`: the crate's version and, when the build had
/// `MOONBORN_GIT_SHA` in its environment, the commit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub git_sha: Option<&'static str>,
}

/// The outbox at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutboxStats {
    /// Events not yet delivered.
    pub backlog: i64,
    /// Age of the oldest of them in seconds (0 when there is none).
    pub oldest_age_secs: f64,
}

/// Labels of a webhook delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub outcome: &'static str,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the process.
pub struct Metrics {
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Hist<ApiLabel>,
    pub controller_runs: Family<RunLabels, Counter>,
    pub controller_duration: Hist<ScopeLabel>,
    pub controller_changes_applied: Counter,
    pub wal_fsync: Histogram,
    pub wal_checkpoint: Hist<CheckpointLabels>,
    pub sqlite_commit: Histogram,
    pub sqlite_batch_writes: Histogram,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub tenants_held: Gauge,
    pub tenant_held_changes: Family<TenantLabel, Gauge>,
    pub outbox_backlog: Gauge,
    pub outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The slugs that have a `tenant_held_changes` series (the gauge counts them).
    held: std::sync::Mutex<std::collections::BTreeSet<String>>,
    registry: Registry,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn run_latency() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

impl Metrics {
    fn new() -> Metrics {
        // The `process_*` collector's names carry no prefix; everything of ours is `moonborn_…`.
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let registry = root.sub_registry_with_prefix("moonborn");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_duration: Hist<ApiLabel> = Family::new_with_constructor(latency);
        let controller_runs = Family::<RunLabels, Counter>::default();
        let controller_duration: Hist<ScopeLabel> = Family::new_with_constructor(run_latency);
        let controller_changes_applied = Counter::default();
        let wal_fsync = latency();
        let wal_checkpoint: Hist<CheckpointLabels> = Family::new_with_constructor(latency);
        let sqlite_commit = latency();
        let sqlite_batch_writes = Histogram::new(BATCH_BUCKETS);
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        let tenants_held = Gauge::default();
        let tenant_held_changes = Family::<TenantLabel, Gauge>::default();
        let outbox_backlog = Gauge::default();
        let outbox_oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                git_sha: option_env!("MOONBORN_GIT_SHA").filter(|s| !s.is_empty()),
            })
            .set(1);
        registry.register("build_info", "The running build: 1, labelled with its version (and git commit)", build_info);
        registry.register(
            "outbox_backlog",
            "Outbox events not yet delivered (read at scrape time; they stay queued without --webhook-url)",
            outbox_backlog.clone(),
        );
        registry.register(
            "outbox_oldest_undelivered_age_seconds",
            "Age of the oldest outbox event not yet delivered (read at scrape time; 0 when there is none)",
            outbox_oldest_age.clone(),
        );
        registry.register(
            "tenants_held",
            "Tenants whose destructive changes the safety valve holds for an operator's approval",
            tenants_held.clone(),
        );
        registry.register(
            "tenant_held_changes",
            "Destructive changes (deactivations, deletions) a held tenant keeps back, by tenant slug; present only while the tenant is held",
            tenant_held_changes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by API (scim, admin, other), method and status code",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's headers, by API",
            http_duration.clone(),
        );
        registry.register(
            "controller_runs",
            "Controller runs, by trigger, scope and outcome (applied, held, failed; noop: nothing to change; busy: another replica holds the tenant; stale_plan: an approved plan no longer matched; error: stopped on an error before recording a run)",
            controller_runs.clone(),
        );
        registry.register(
            "controller_run_duration_seconds",
            "Wall time of a controller run (plan and apply) from taking the tenant's lease, by scope",
            controller_duration.clone(),
        );
        registry.register(
            "controller_changes_applied",
            "Changes the controller applied to Moonborn's users and roles",
            controller_changes_applied.clone(),
        );
        registry.register(
            "sqlite_wal_fsync_duration_seconds",
            "One fsync of the SQLite WAL (every acknowledged write waits for one): the disk's latency as the service sees it",
            wal_fsync.clone(),
        );
        registry.register(
            "sqlite_wal_checkpoint_duration_seconds",
            "One WAL checkpoint; a restart holds this process's writers for its whole duration (timed from taking their lock)",
            wal_checkpoint.clone(),
        );
        registry.register(
            "sqlite_commit_duration_seconds",
            "One COMMIT of the SQLite batch writer (before its fsync)",
            sqlite_commit.clone(),
        );
        registry.register(
            "sqlite_batch_writes",
            "Writes (requests' jobs) one committed batch of the SQLite batch writer carried",
            sqlite_batch_writes.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts of the outbox, by outcome (delivered, failed)",
            webhook_deliveries.clone(),
        );
        Metrics {
            http_requests,
            http_duration,
            controller_runs,
            controller_duration,
            controller_changes_applied,
            wal_fsync,
            wal_checkpoint,
            sqlite_commit,
            sqlite_batch_writes,
            webhook_deliveries,
            tenants_held,
            tenant_held_changes,
            outbox_backlog,
            outbox_oldest_age,
            held: std::sync::Mutex::default(),
            registry: root,
        }
    }

    /// Records an answered HTTP request.
    pub fn request(&self, api: &'static str, method: &axum::http::Method, status: u16, took: Duration) {
        let method = match *method {
            axum::http::Method::GET => "GET",
            axum::http::Method::POST => "POST",
            axum::http::Method::PUT => "PUT",
            axum::http::Method::PATCH => "PATCH",
            axum::http::Method::DELETE => "DELETE",
            axum::http::Method::HEAD => "HEAD",
            _ => "other",
        };
        self.http_requests.get_or_create(&RequestLabels { api, method, status }).inc();
        self.http_duration.get_or_create(&ApiLabel { api }).observe(took.as_secs_f64());
    }

    /// Records whether a tenant is held, and how many destructive changes it keeps back.
    pub fn held(&self, tenant: &str, changes: Option<u64>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let label = TenantLabel { tenant: tenant.to_string() };
        match changes {
            Some(n) => {
                self.tenant_held_changes.get_or_create(&label).set(n as i64);
                held.insert(label.tenant);
            }
            None => {
                self.tenant_held_changes.remove(&label);
                held.remove(&label.tenant);
            }
        }
        self.tenants_held.set(held.len() as i64);
    }

    /// Records a WAL checkpoint.
    pub fn checkpoint(&self, mode: &'static str, outcome: &'static str, took: Duration) {
        self.wal_checkpoint.get_or_create(&CheckpointLabels { mode, outcome }).observe(took.as_secs_f64());
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `encode`, after recording what is read at scrape time (`None`: the outbox could not be
    /// read; its gauges keep their last values).
    pub fn scrape(&self, outbox: Option<OutboxStats>) -> String {
        if let Some(o) = outbox {
            self.outbox_backlog.set(o.backlog);
            self.outbox_oldest_age.set(o.oldest_age_secs.max(0.0));
        }
        self.encode()
    }
}

/// The `process_*` metrics every Prometheus client library exports (names without the
/// `moonborn_` prefix, so the usual dashboards work), read from `/proc/self` at each scrape;
/// absent where `/proc` is not (not Linux).
#[derive(Debug)]
struct Process;

impl prometheus_client::collector::Collector for Process {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let Some(p) = proc_self::read() else { return Ok(()) };
        let mut plain = |name: &str, help: &str, t: MetricType, v: f64| -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor(name, help, None, t)?;
            match t {
                MetricType::Counter => m.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(&v, None),
                _ => m.encode_gauge(&v),
            }
        };
        plain(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            MetricType::Counter,
            p.cpu_secs,
        )?;
        plain("process_resident_memory_bytes", "Resident memory size in bytes", MetricType::Gauge, p.rss_bytes)?;
        plain("process_open_fds", "Number of open file descriptors", MetricType::Gauge, p.open_fds)?;
        if let Some(max) = p.max_fds {
            plain("process_max_fds", "Maximum number of open file descriptors", MetricType::Gauge, max)?;
        }
        if let Some(start) = p.start_time {
            plain(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                MetricType::Gauge,
                start,
            )?;
        }
        Ok(())
    }
}

/// Readings of `/proc/self` (Linux).
mod proc_self {
    /// One reading.
    pub struct Reading {
        pub cpu_secs: f64,
        pub rss_bytes: f64,
        pub open_fds: f64,
        pub max_fds: Option<f64>,
        pub start_time: Option<f64>,
    }

    /// `None` where there is no `/proc/self/stat`.
    pub fn read() -> Option<Reading> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (ticks, page) = sysconf();
        // Fields after the command name (which may hold spaces and parentheses): field 3 (state)
        // is [0], utime (14) [11], stime (15) [12], starttime (22) [19], rss (24) [21].
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        let cpu_secs = (num(11)? + num(12)?) / ticks;
        let rss_bytes = num(21)? * page;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
        let start_time = boot.zip(num(19)).map(|(b, s)| b + s / ticks);
        // The directory's own descriptor, open while it is read, is not counted.
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1) as f64).unwrap_or(0.0);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Max open files"))?;
            line["Max open files".len()..].split_whitespace().next()?.parse::<f64>().ok()
        });
        Some(Reading { cpu_secs, rss_bytes, open_fds, max_fds, start_time })
    }

    /// Clock ticks per second and the page size.
    #[allow(unsafe_code)]
    fn sysconf() -> (f64, f64) {
        // SAFETY: sysconf reads a configuration value; no memory is passed.
        let (t, p) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        (if t > 0 { t as f64 } else { 100.0 }, if p > 0 { p as f64 } else { 4096.0 })
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Which API a request path belongs to (a label value from a fixed set).
pub fn api_of(path: &str) -> &'static str {
    if path.starts_with(crate::scim::SCIM_BASE) {
        "scim"
    } else if path.starts_with("/v1/admin") {
        "admin"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms_with_their_labels() {
        let m = Metrics::new();
        m.request("scim", &axum::http::Method::POST, 201, Duration::from_millis(3));
        m.request("scim", &axum::http::Method::POST, 201, Duration::from_millis(30));
        m.wal_fsync.observe(0.2);
        m.checkpoint("restart", "done", Duration::from_millis(7));
        let text = m.encode();
        assert!(text.contains("moonborn_http_requests_total{api=\"scim\",method=\"POST\",status=\"201\"} 2"), "{text}");
        assert!(text.contains("moonborn_http_request_duration_seconds_count{api=\"scim\"} 2"), "{text}");
        // 3 ms and 30 ms: one at or under 5 ms, both at or under 50 ms.
        assert!(text.contains("moonborn_http_request_duration_seconds_bucket{le=\"0.005\",api=\"scim\"} 1"), "{text}");
        assert!(text.contains("moonborn_http_request_duration_seconds_bucket{le=\"0.05\",api=\"scim\"} 2"), "{text}");
        assert!(text.contains("moonborn_sqlite_wal_fsync_duration_seconds_bucket{le=\"0.1\"} 0"), "{text}");
        assert!(text.contains("moonborn_sqlite_wal_fsync_duration_seconds_bucket{le=\"0.25\"} 1"), "{text}");
        assert!(
            text.contains("moonborn_sqlite_wal_checkpoint_duration_seconds_count{mode=\"restart\",outcome=\"done\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_held_tenant_has_a_series_only_while_held() {
        let m = Metrics::new();
        assert!(m.encode().contains("moonborn_tenants_held 0"));
        m.held("acme", Some(60));
        m.held("beta", Some(3));
        m.held("acme", Some(61));
        let text = m.encode();
        assert!(text.contains("moonborn_tenants_held 2"), "{text}");
        assert!(text.contains("moonborn_tenant_held_changes{tenant=\"acme\"} 61"), "{text}");
        m.held("acme", None);
        let text = m.encode();
        assert!(text.contains("moonborn_tenants_held 1"), "{text}");
        assert!(!text.contains("tenant=\"acme\""), "{text}");
    }

    #[test]
    fn api_of_sorts_paths_into_three_values() {
        assert_eq!(api_of("/v1/auth/scim/v2/Users/x"), "scim");
        assert_eq!(api_of("/v1/admin/tenants"), "admin");
        assert_eq!(api_of("/healthz"), "other");
        assert_eq!(api_of("/anything/else"), "other");
    }
}
