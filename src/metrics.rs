//! Process metrics in the Prometheus / OpenMetrics text format, served at `GET /v1/admin/metrics`
//! (admin token). One registry for the process: the writer, fsync and checkpoint threads record
//! into it without a handle to the router's state.
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
        let mut registry = Registry::with_prefix("moonborn");
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
            held: std::sync::Mutex::default(),
            registry,
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
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Which API a request path belongs to (a label value from a fixed set).
pub fn api_of(path: &str) -> &'static str {
    if path.starts_with(crate::http::SCIM_BASE) {
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
